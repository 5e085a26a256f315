//! A partner instance's status page (`GET /status` on its metrics listener): the tenants of
//! this process, problems first, with their state, lag, last pass and problem; counts by
//! state; a filter (by state, and by text in the tenant's id or problem). One self-contained
//! page (no external assets, works offline) that refreshes itself from `GET /status.json`.
//! At thousands of tenants it lists the first [`ROWS`] that match, and says how many match.

use std::sync::Arc;

use serde::Serialize;

use super::board::{Board, TenantState, TenantView};
use crate::metrics::serve::{OwnerPage, PageReply, html_page, query_param};

/// Tenants listed per answer at most.
pub const ROWS: usize = 500;

/// The page of a running partner instance.
#[derive(Debug)]
pub struct PartnerPage {
    board: Arc<Board>,
}

impl PartnerPage {
    /// The page of `board`'s tenants.
    pub fn new(board: Arc<Board>) -> Self {
        PartnerPage { board }
    }
}

/// `/status.json`.
#[derive(Debug, Serialize)]
struct PageData {
    host: String,
    counts: Vec<(TenantState, usize)>,
    total: usize,
    matching: usize,
    tenants: Vec<TenantView>,
}

/// The query's `state=` and `q=` (`%XX` and `+` decoded).
fn filter(query: Option<&str>) -> (Option<String>, String) {
    let state = query_param(query, "state").filter(|s| !s.is_empty());
    (state, query_param(query, "q").unwrap_or_default().to_lowercase())
}

impl PartnerPage {
    fn data(&self, query: Option<&str>) -> PageData {
        let (state, text) = filter(query);
        let views = self.board.views();
        let total = views.len();
        let matching: Vec<TenantView> = views
            .into_iter()
            .filter(|v| state.as_deref().is_none_or(|s| v.state.as_str() == s))
            .filter(|v| {
                text.is_empty()
                    || v.tenant.to_lowercase().contains(&text)
                    || v.problem.as_deref().is_some_and(|p| p.to_lowercase().contains(&text))
            })
            .collect();
        PageData {
            host: self.board.host().to_owned(),
            counts: self.board.counts().into_iter().collect(),
            total,
            matching: matching.len(),
            tenants: matching.into_iter().take(ROWS).collect(),
        }
    }
}

impl OwnerPage for PartnerPage {
    fn answer(&self, method: &hyper::Method, path: &str, query: Option<&str>) -> Option<PageReply> {
        if method != hyper::Method::GET {
            return None;
        }
        match path {
            "/status" | "/" => Some(PageReply { status: 200, content_type: "text/html; charset=utf-8", body: page() }),
            "/status.json" => Some(PageReply {
                status: 200,
                content_type: "application/json",
                body: serde_json::to_string(&self.data(query)).unwrap_or_default(),
            }),
            _ => None,
        }
    }
}

/// The page.
fn page() -> String {
    html_page("dbmirror · partner instance", STYLE, BODY, SCRIPT)
}

const STYLE: &str = r#"  #counts button { margin: 0 .3em .3em 0; } #counts button[aria-pressed="true"] { font-weight: 700; }
"#;

const BODY: &str = r#"<h1>dbmirror · partner instance <span id="host" class="muted"></span></h1>
<div id="problem" class="bad" role="alert"></div>
<div id="charts"></div>
<div id="counts"></div>
<label>Filter <input id="filter" type="search" placeholder="tenant or problem"></label>
<p id="shown" class="muted"></p>
<table><thead><tr><th>tenant</th><th>state</th><th>lag</th><th>last pass</th><th>passes</th><th>records</th><th>refused</th><th>problem</th></tr></thead>
<tbody id="tenants"></tbody></table>
<p class="muted" id="updated"></p>
"#;

const SCRIPT: &str = r#"const tone = { failing: "bad", waiting: "warn", watching: "good", polled: "good", busy: "", new: "muted", held_elsewhere: "muted", withdrawn: "muted" };
let chosen = "";


function tenantRow(t) {
  const row = document.createElement("tr");
  row.dataset.tenant = t.tenant;
  cell(row, t.tenant);
  cell(row, t.state.replace("_", " "), tone[t.state]);
  cell(row, t.lag_seconds === null || t.lag_seconds === undefined ? "-" : t.lag_seconds.toFixed(1) + " s", "num");
  cell(row, ago(t.last_pass_ms));
  cell(row, String(t.passes), "num");
  cell(row, String(t.records), "num");
  cell(row, String(t.refused), t.refused > 0 ? "num bad" : "num");
  cell(row, t.problem ? t.problem + (t.since_ms ? " (since " + ago(t.since_ms) + ")" : "") : "", "bad");
  return row;
}

function countButtons(counts, total) {
  const all = [["", total]].concat(counts.filter(([, n]) => n > 0));
  return all.map(([state, n]) => {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.state = state;
    b.textContent = (state === "" ? "all" : state.replace("_", " ")) + ": " + n;
    b.className = tone[state] || "";
    b.setAttribute("aria-pressed", String(state === chosen));
    b.addEventListener("click", () => { chosen = state; refresh(); });
    return b;
  });
}

async function refresh() {
  try {
    const query = "?state=" + encodeURIComponent(chosen) + "&q=" + encodeURIComponent($("filter").value);
    const response = await fetch("/status.json" + query, { cache: "no-store" });
    if (!response.ok) throw new Error(response.status + " " + await response.text());
    const s = await response.json();
    $("host").textContent = s.host;
    $("counts").replaceChildren(...countButtons(s.counts, s.total));
    $("tenants").replaceChildren(...s.tenants.map(tenantRow));
    $("shown").textContent = s.matching + " of " + s.total + " tenants match"
      + (s.tenants.length < s.matching ? "; the first " + s.tenants.length + " are listed" : "");
    $("updated").textContent = "updated " + new Date().toLocaleTimeString() + " · refreshes every 5 s";
    $("problem").textContent = "";
  } catch (e) {
    $("problem").textContent = "could not read the status: " + e.message;
  }
}
$("filter").addEventListener("input", refresh);
refresh();
charts();
setInterval(refresh, 5000);
setInterval(charts, 30000);
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partner::board::PassReport;

    #[test]
    fn the_json_filters_by_state_and_text_and_counts_everything() {
        let board = Arc::new(Board::new("h/1"));
        for ctx in ["acme", "beta", "gamma"] {
            board.approved(ctx);
        }
        let failed = PassReport {
            state: TenantState::Failing,
            records: 0,
            refused: 0,
            lag_seconds: None,
            problem: Some("Disk full".into()),
        };
        board.pass_ended("beta", failed);
        let page = PartnerPage::new(board);
        let data = page.data(Some("state=failing"));
        assert_eq!((data.total, data.matching, data.tenants[0].tenant.as_str()), (3, 1, "beta"));
        assert_eq!(page.data(Some("q=disk+FULL")).matching, 1);
        assert_eq!(page.data(Some("q=a")).matching, 3);
        assert_eq!(page.data(None).tenants[0].tenant, "beta", "problems first");
    }
}
