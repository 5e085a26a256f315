//! The replica owner's status page (`GET /status` on the metrics listener): one self-contained
//! page (no external assets, works offline) that shows what `dbmirror status` shows — every
//! table's state, rows and last change, the lag, the session, the last error — and refreshes
//! itself from `GET /status.json`. It offers a "Resync" button per table only when the owner
//! turned actions on (`Metrics.StatusPageActions`). Data is put into the page as text, never as
//! markup.

use super::StatusReport;
use crate::metrics::serve::{OwnerPage, PageReply, html_page, query_param};

/// Why the page could not read the replica or store a request (shown on the page as is).
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// Where the page gets its report and sends resync requests: whoever knows the instance
/// (the binary opens its replica on each request, so the page always shows what is stored).
pub trait StatusSource: Send + Sync {
    /// Where the replica stands now.
    fn report(&self) -> Result<StatusReport, SourceError>;
    /// Stores a resync request for `table`, as `resync-tables` does.
    fn request_resync(&self, table: &str) -> Result<(), SourceError>;
}

/// The status page of one replica: `GET /status` (the page), `GET /status.json` (its data:
/// what `status --json` prints, plus whether actions are on) and, with actions on,
/// `POST /status/resync?table=…`.
pub struct StatusPage<S> {
    source: S,
    actions: bool,
}

impl<S: StatusSource> StatusPage<S> {
    /// The page of `source`; `actions`: `Metrics.StatusPageActions`.
    pub fn new(source: S, actions: bool) -> Self {
        StatusPage { source, actions }
    }
}

/// `/status.json`: the report and the page's one setting.
#[derive(serde::Serialize)]
struct PageData<'a> {
    #[serde(flatten)]
    report: &'a StatusReport,
    actions: bool,
}

const TEXT: &str = "text/plain; charset=utf-8";

fn reply(status: u16, content_type: &'static str, body: String) -> Option<PageReply> {
    Some(PageReply { status, content_type, body })
}

impl<S: StatusSource> OwnerPage for StatusPage<S> {
    fn answer(&self, method: &hyper::Method, path: &str, query: Option<&str>) -> Option<PageReply> {
        use hyper::Method;
        match (method, path) {
            (&Method::GET, "/status" | "/") => reply(200, "text/html; charset=utf-8", status_page()),
            (&Method::GET, "/status.json") => match self.source.report() {
                Ok(report) => {
                    let data = PageData { report: &report, actions: self.actions };
                    reply(200, "application/json", serde_json::to_string(&data).unwrap_or_default())
                }
                Err(e) => reply(503, TEXT, format!("{e}\n")),
            },
            (&Method::POST, "/status/resync") if !self.actions => {
                reply(403, TEXT, "actions are off (Metrics.StatusPageActions)\n".into())
            }
            (&Method::POST, "/status/resync") => match query_param(query, "table") {
                Some(table) => match self.source.request_resync(&table) {
                    Ok(()) => {
                        tracing::info!(table, "resync requested from the status page");
                        reply(200, TEXT, format!("resync of {table} requested\n"))
                    }
                    Err(e) => reply(400, TEXT, format!("{e}\n")),
                },
                None => reply(400, TEXT, "`table` is required\n".into()),
            },
            _ => None,
        }
    }
}

/// The page.
fn status_page() -> String {
    html_page("dbmirror · replica status", STYLE, BODY, SCRIPT)
}

const STYLE: &str = r#"  dl { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; } dt { font-weight: 600; }
"#;

const BODY: &str = r#"<h1>dbmirror · replica status</h1>
<div id="problem" class="bad" role="alert"></div>
<div id="charts"></div>
<dl>
  <dt>Tenant</dt><dd id="tenant">…</dd>
  <dt>Replication ID</dt><dd id="replication">…</dd>
  <dt>Client</dt><dd id="running">…</dd>
  <dt>Lag</dt><dd id="lag">…</dd>
  <dt>Offsets acknowledged</dt><dd id="cycle">…</dd>
  <dt>Last error</dt><dd id="error">…</dd>
  <dt>Refused changes</dt><dd id="refused">…</dd>
</dl>
<h2>Tables</h2>
<table><thead><tr><th>table</th><th>state</th><th>rows</th><th>last change</th><th>note</th><th id="actions-head" hidden></th></tr></thead>
<tbody id="tables"></tbody></table>
<p class="muted" id="updated"></p>
"#;

const SCRIPT: &str = r##"function tableRow(t, actions) {
  const row = document.createElement("tr");
  row.dataset.table = t.table;
  cell(row, t.table);
  cell(row, t.state, t.state === "failed" ? "bad" : (t.state === "ready" ? "good" : ""));
  cell(row, t.rows === null || t.rows === undefined ? "-" : String(t.rows), "num");
  cell(row, ago(t.last_change_ms));
  let note = "";
  if (t.failed_reason) note = "left out: " + t.failed_reason;
  else if (t.resync_rows_loaded !== undefined) note = t.resync_rows_loaded + " rows loaded into the shadow";
  cell(row, note);
  if (actions) {
    const td = cell(row, "");
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = "Resync";
    b.addEventListener("click", async () => {
      const r = await fetch("/status/resync?table=" + encodeURIComponent(t.table), { method: "POST" });
      $("problem").textContent = r.ok ? "" : "resync not requested: " + await r.text();
      refresh();
    });
    td.appendChild(b);
  }
  return row;
}

function lagText(lag) {
  if (!lag) return "not known yet";
  const known = (v) => v !== null && v !== undefined;
  const asOf = known(lag.as_of_ms) ? " (measured " + Math.max(0, Math.round((Date.now() - lag.as_of_ms) / 1000)) + " s ago)" : "";
  if (lag.records === 0) return "none" + asOf;
  if (known(lag.seconds)) return lag.seconds + " s behind the source" + (known(lag.records) ? ", " + lag.records + " records behind the cloud" : "") + asOf;
  if (known(lag.records)) return lag.records + " records behind the cloud" + asOf;
  return "not known yet";
}

async function refresh() {
  try {
    const response = await fetch("/status.json", { cache: "no-store" });
    if (!response.ok) throw new Error(response.status + " " + await response.text());
    const s = await response.json();
    $("tenant").textContent = s.session ? s.session.tenant : "not provisioned";
    $("replication").textContent = s.session ? s.session.replication_id : "-";
    $("running").textContent = s.running ? "running" : "not running";
    $("running").className = s.running ? "good" : "bad";
    $("lag").textContent = lagText(s.lag);
    $("cycle").textContent = ago(s.last_commit_cycle_ms);
    $("error").textContent = s.last_error ? s.last_error.message + " (" + ago(s.last_error.at_ms) + ")" : "none";
    $("error").className = s.last_error ? "bad" : "";
    const refused = s.refused_changes || 0;
    $("refused").textContent = refused === 0 ? "none"
      : refused + " in _ReplicationErrors: fix the cause, then run dbmirror retry-errors";
    $("refused").className = refused === 0 ? "" : "bad";
    $("actions-head").hidden = !s.actions;
    $("tables").replaceChildren(...s.tables.map((t) => tableRow(t, s.actions)));
    $("updated").textContent = "updated " + new Date().toLocaleTimeString() + " · refreshes every 5 s";
    $("problem").textContent = "";
  } catch (e) {
    $("problem").textContent = "could not read the status: " + e.message;
  }
}
refresh();
charts();
setInterval(refresh, 5000);
setInterval(charts, 30000);
"##;
