//! The replica owner's status page (`GET /status` on the metrics listener): one self-contained
//! page (no external assets, works offline) that shows what `dbmirror status` shows — every
//! table's state, rows and last change, the lag, the session, the last error — and refreshes
//! itself from `GET /status.json`. It offers a "Resync" button per table only when the owner
//! turned actions on (`Metrics.StatusPageActions`). Data is put into the page as text, never as
//! markup.

/// The page.
pub const STATUS_PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>dbmirror · replica status</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #1d2330; }
  h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.4em; }
  table { border-collapse: collapse; margin-top: .5em; }
  th, td { border-bottom: 1px solid #d8dce4; padding: .35em .7em; text-align: left; vertical-align: top; }
  th { background: #f2f4f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .bad { color: #b00020; } .good { color: #1b6e2d; } .muted { color: #6b7280; }
  dl { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; } dt { font-weight: 600; }
</style>
</head>
<body>
<h1>dbmirror · replica status</h1>
<div id="problem" class="bad" role="alert"></div>
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
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const ago = (ms) => (ms === null || ms === undefined) ? "never" : Math.max(0, Math.round((Date.now() - ms) / 1000)) + " s ago";

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function tableRow(t, actions) {
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
  if (!lag || lag.records === null || lag.records === undefined) return "not known yet";
  if (lag.records === 0) return "none: current at the last commit cycle";
  return lag.records + " records behind" + (lag.seconds === null ? "" : ", newest applied change " + lag.seconds + " s old");
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
setInterval(refresh, 5000);
</script>
</body>
</html>
"##;
