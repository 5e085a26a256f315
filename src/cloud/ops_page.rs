//! The Operation Center: one self-contained page (`GET /ops`, no external assets) from which
//! the cloud's staff watch tenants and sessions (offsets, lag, last fetch) and fire the
//! lifecycle actions the CLI has. The page holds no data and no secret: it asks for the admin
//! token, keeps it in the tab's session storage only, and sends it with every call to the
//! `/admin/…` endpoints, which refuse anything without it. Data is put into the page as text,
//! never as markup.

/// The page.
pub const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>dbmirror-cloud · Operation Center</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #1d2330; }
  h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
  table { border-collapse: collapse; margin-top: .5em; }
  th, td { border-bottom: 1px solid #d8dce4; padding: .35em .7em; text-align: left; vertical-align: top; }
  th { background: #f2f4f8; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  button { margin: 0 .2em .2em 0; }
  #message { margin-top: 1em; min-height: 1.4em; }
  .error { color: #b00020; } .ok { color: #1b6e2d; } .muted { color: #6b7280; }
</style>
</head>
<body>
<h1>dbmirror-cloud · Operation Center</h1>
<form id="login">
  <label>Admin token <input id="token" type="password" autocomplete="off" size="32"></label>
  <button type="submit">Open</button>
  <span class="muted" id="updated"></span>
</form>
<div id="message" role="status"></div>
<section id="main" hidden>
  <h2>Workload and clients</h2>
  <p>Random source changes per second per tenant: <b id="rate"></b>
    <input id="rate-input" type="number" min="0" step="1" size="6">
    <button id="rate-set" type="button">Set change rate</button>
    · Minimum client version: <b id="minver"></b>
    <input id="minver-input" size="8" placeholder="0.2.0">
    <button id="minver-set" type="button">Set</button></p>
  <h2>Tenants</h2>
  <div id="paging"><label>Tenant <input id="tenant-filter" type="search" placeholder="id contains"></label>
    <button id="previous" type="button">Previous</button> <button id="next" type="button">Next</button>
    <span id="shown" class="muted"></span></div>
  <table><thead><tr><th>tenant</th><th>state</th><th>tables</th><th>log ends</th><th>actions</th></tr></thead>
  <tbody id="tenants"></tbody></table>
  <h2>Sessions <span class="muted">(of the tenants above)</span></h2>
  <table><thead><tr><th>session</th><th>tenant</th><th>replication id</th><th>state</th><th>acknowledged</th>
  <th>lag</th><th>last fetch</th><th>resync asked</th><th></th></tr></thead>
  <tbody id="sessions"></tbody></table>
</section>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("dbmirror-admin-token") || "";

function say(text, ok) {
  const m = $("message");
  m.textContent = text;
  m.className = ok ? "ok" : "error";
}

async function call(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: Object.assign({ "Authorization": "Bearer " + token },
      body === undefined ? {} : { "Content-Type": "application/json" }),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let json = null;
  try { json = JSON.parse(text); } catch (e) { /* not JSON */ }
  if (!response.ok) {
    const reason = json && json.error ? json.error.message || json.error.code : text;
    throw new Error(response.status + ": " + reason);
  }
  return json;
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function button(parent, label, action) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.addEventListener("click", async () => {
    try { const r = await action(); say(label + ": " + JSON.stringify(r), true); await refresh(); }
    catch (e) { say(label + " failed: " + e.message, false); }
  });
  parent.appendChild(b);
  return b;
}

function ago(ms) {
  if (ms === null || ms === undefined) return "never";
  return Math.max(0, Math.round((Date.now() - ms) / 1000)) + " s ago";
}

const act = (ctx, action, body) => call("POST", "/admin/" + encodeURIComponent(ctx) + "/actions/" + action, body || {});

function tenantRow(t) {
  const row = document.createElement("tr");
  row.dataset.tenant = t.tenant;
  cell(row, t.tenant);
  cell(row, t.suspended ? "suspended" : "running");
  cell(row, String(t.tables.length), "num");
  cell(row, t.ends.join(" / "), "num");
  const actions = cell(row, "");
  const select = document.createElement("select");
  select.className = "table-choice";
  for (const name of t.tables) {
    const o = document.createElement("option");
    o.value = name; o.textContent = name; select.appendChild(o);
  }
  actions.appendChild(select);
  button(actions, "Resync table", () => act(t.tenant, "resync", { table: select.value }));
  button(actions, "Add 100 changes", () => act(t.tenant, "changes", { count: 100 }));
  button(actions, t.suspended ? "Resume" : "Suspend", () => act(t.tenant, t.suspended ? "resume" : "suspend"));
  button(actions, "Reset offsets", () => call("POST", "/admin/" + encodeURIComponent(t.tenant) + "/reset-offsets", {}));
  button(actions, "Restore", () => act(t.tenant, "restore"));
  return row;
}

function sessionRow(s) {
  const row = document.createElement("tr");
  row.dataset.session = s.session_id;
  cell(row, s.session_id);
  cell(row, s.tenant);
  cell(row, s.replication_id);
  cell(row, s.revoked ? "revoked" : "live");
  cell(row, s.committed.join(" / "), "num");
  cell(row, String(s.lag), "num");
  cell(row, ago(s.last_fetch_ms));
  cell(row, s.resync_requested.join(", "));
  const actions = cell(row, "");
  if (!s.revoked) button(actions, "Revoke", () => call("POST", "/admin/sessions/" + encodeURIComponent(s.session_id) + "/revoke"));
  return row;
}

// A page of tenants at a time: at thousands the list is paged and filtered by the cloud.
const PAGE = 50;
let offset = 0;

async function refresh() {
  if (!token) return;
  try {
    const query = "?offset=" + offset + "&limit=" + PAGE + "&q=" + encodeURIComponent($("tenant-filter").value);
    const data = await call("GET", "/admin/overview" + query);
    const o = data.overview;
    if (offset > 0 && offset >= o.matching_tenants) { offset = Math.max(0, o.matching_tenants - PAGE); return refresh(); }
    const last = Math.min(offset + PAGE, o.matching_tenants);
    $("shown").textContent = (o.matching_tenants === 0 ? "no tenant" : "tenants " + (offset + 1) + "–" + last)
      + " of " + o.matching_tenants + (o.matching_tenants === o.total_tenants ? "" : " matching (" + o.total_tenants + " in all)");
    $("previous").disabled = offset === 0;
    $("next").disabled = last >= o.matching_tenants;
    $("rate").textContent = String(data.changes_per_sec);
    $("minver").textContent = o.minimum_client_version;
    $("tenants").replaceChildren(...o.tenants.map(tenantRow));
    $("sessions").replaceChildren(...o.sessions.map(sessionRow));
    $("main").hidden = false;
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    say("could not load: " + e.message, false);
  }
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token").value;
  sessionStorage.setItem("dbmirror-admin-token", token);
  refresh();
});
$("rate-set").addEventListener("click", async () => {
  try {
    const r = await call("POST", "/admin/workload", { changes_per_sec: Number($("rate-input").value) });
    say("change rate: " + JSON.stringify(r), true); refresh();
  } catch (e) { say("setting the change rate failed: " + e.message, false); }
});
$("minver-set").addEventListener("click", async () => {
  try {
    const r = await call("POST", "/admin/min-client-version", { version: $("minver-input").value });
    say("minimum client version: " + JSON.stringify(r), true); refresh();
  } catch (e) { say("setting the minimum version failed: " + e.message, false); }
});
$("previous").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); refresh(); });
$("next").addEventListener("click", () => { offset += PAGE; refresh(); });
$("tenant-filter").addEventListener("input", () => { offset = 0; refresh(); });
if (token) { $("token").value = token; refresh(); }
setInterval(refresh, 3000);
</script>
</body>
</html>
"##;
