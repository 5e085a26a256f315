//! The reference cloud over HTTP (hyper, HTTP/1.1 and HTTP/2): the Dispatcher's provisioning
//! and token endpoints, the partner API, the Replication Service with its streamed long-poll
//! fetch, and the operations endpoints. The contract is `docs/protocol.md`; the rules live in
//! [`super::service`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::clock::{http_date, now_ms};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

use super::error::ApiError;
use super::journal::{TenantOp, table_id};
use super::service::{Faults, State};
use crate::protocol::{
    CommitRequest, ErrorCode, FetchRequest, GrantPoll, GrantRequest, OwnedPosition as Position, ResyncReply,
    ResyncRequest,
};

/// The shared cloud: state behind a lock (held briefly, never across an await) and a
/// notification that wakes long-polls when records are appended.
#[derive(Debug)]
pub struct Cloud {
    /// Everything the cloud knows.
    pub state: Mutex<State>,
    /// Woken after every append.
    pub appended: Notify,
    /// Bearer token of the operations endpoints (`/admin/…`).
    pub admin_token: String,
    /// Random source changes per second per tenant (changeable while running).
    pub changes_per_sec: std::sync::atomic::AtomicU32,
    /// An outage (tests): while set, new connections are dropped at once and requests on open
    /// ones are cut without an answer, as a cloud that is down looks to a client.
    pub down: std::sync::atomic::AtomicBool,
}

impl Cloud {
    /// Wraps a state.
    pub fn new(state: State, admin_token: String) -> Arc<Self> {
        Arc::new(Cloud {
            state: Mutex::new(state),
            appended: Notify::new(),
            admin_token,
            changes_per_sec: std::sync::atomic::AtomicU32::new(0),
            down: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Runs `f` on the state, then wakes waiting fetches.
    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let out = self.quietly(f);
        self.appended.notify_waiters();
        out
    }

    /// Runs `f` on the state without waking anyone: for what appends nothing (every waiting
    /// long-poll locks the state again when woken, and thousands of tenants' long-polls wait).
    pub fn quietly<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A response body: a whole buffer or a stream of chunks from a channel.
pub enum ResponseBody {
    /// A complete body.
    Full(Full<Bytes>),
    /// Streamed chunks; an `Err` aborts the connection mid-body.
    Stream(mpsc::Receiver<Result<Bytes, std::io::Error>>),
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ResponseBody::Full(full) => Pin::new(full).poll_frame(cx).map_err(|never: Infallible| match never {}),
            ResponseBody::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }
}

type Reply = Response<ResponseBody>;

fn json_reply(status: u16, body: &impl serde::Serialize) -> Reply {
    let text = serde_json::to_vec(body).unwrap_or_default();
    let mut r = Response::new(ResponseBody::Full(Full::new(Bytes::from(text))));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error_reply(e: &ApiError) -> Reply {
    let mut r = json_reply(e.status, &e.body());
    if let Some(secs) = e.retry_after {
        r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

fn html_reply(status: u16, html: String) -> Reply {
    let mut r = Response::new(ResponseBody::Full(Full::new(Bytes::from(html))));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r
}

/// Decodes `application/x-www-form-urlencoded` text and query strings.
pub fn form_decode(text: &str) -> Vec<(String, String)> {
    fn unescape(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (unescape(k), unescape(v))
        })
        .collect()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    Limited::new(req.into_body(), 1 << 20)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|_| ApiError::new(400, ErrorCode::BadRequest, "the request body is unreadable or over 1 MiB"))
}

async fn read_json<T: for<'de> Deserialize<'de>>(req: Request<Incoming>) -> Result<T, ApiError> {
    let body = read_body(req).await?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(400, ErrorCode::BadRequest, format!("invalid JSON body: {e}")))
}

fn bearer(req: &Request<Incoming>) -> Option<String> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(str::to_owned)
}

fn basic(req: &Request<Incoming>) -> Option<(String, String)> {
    use base64::Engine as _;
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?.strip_prefix("Basic ")?;
    let text = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(value).ok()?).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// Serves `cloud` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, cloud: Arc<Cloud>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else { continue };
        if cloud.down.load(std::sync::atomic::Ordering::Relaxed) {
            continue;
        }
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_stream(stream, peer, cloud.clone()));
    }
}

/// Serves on an already-accepted TLS or plain stream (used by the binary for HTTPS).
pub async fn serve_stream<S>(stream: S, peer: SocketAddr, cloud: Arc<Cloud>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let cloud = cloud.clone();
        async move {
            if cloud.down.load(std::sync::atomic::Ordering::Relaxed) {
                // An error from the service makes hyper cut the connection without an answer.
                return Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "the cloud is down"));
            }
            Ok(handle(cloud, req, peer).await)
        }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
}

async fn handle(cloud: Arc<Cloud>, req: Request<Incoming>, peer: SocketAddr) -> Reply {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let (reply, skew) = match route(&cloud, req).await {
        Ok((reply, skew)) => (reply, skew),
        Err(e) => {
            tracing::info!(%method, %path, %peer, status = e.status, code = %e.code, "refused");
            (error_reply(&e), 0)
        }
    };
    let mut reply = reply;
    if let Ok(date) = HeaderValue::from_str(&http_date(now_ms() / 1000 + skew)) {
        reply.headers_mut().insert(hyper::header::DATE, date);
    }
    reply
}

/// The session a bearer-authorized request belongs to, after injected 5xx faults.
fn authorize(cloud: &Cloud, req: &Request<Incoming>, ctx: &str) -> Result<(String, Faults), ApiError> {
    let token = bearer(req);
    let version = req.headers().get("x-client-version").and_then(|v| v.to_str().ok()).map(str::to_owned);
    cloud.quietly(|s| {
        let claims = s.authorize(token.as_deref(), ctx, version.as_deref(), now_ms())?;
        if let Some(e) = s.take_failure(&claims.sub) {
            return Err(e);
        }
        let faults = s.session(&claims.sub).map(|x| x.faults.clone()).unwrap_or_default();
        Ok((claims.sub, faults))
    })
}

fn admin(cloud: &Cloud, req: &Request<Incoming>) -> Result<(), ApiError> {
    match bearer(req) {
        Some(t)
            if !cloud.admin_token.is_empty()
                && super::auth::token_hash(&t) == super::auth::token_hash(&cloud.admin_token) =>
        {
            Ok(())
        }
        _ => Err(ApiError::new(401, ErrorCode::AdminOnly, "operations endpoints need the admin token")),
    }
}

#[derive(Deserialize)]
struct RefreshToken {
    refresh_token: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Action {
    table: Option<String>,
    column: Option<String>,
    count: Option<usize>,
    columns: Option<usize>,
    version: Option<String>,
    session_id: Option<String>,
    partner: Option<String>,
}

async fn route(cloud: &Arc<Cloud>, req: Request<Incoming>) -> Result<(Reply, i64), ApiError> {
    let path: Vec<String> = req.uri().path().trim_matches('/').split('/').map(str::to_owned).collect();
    let parts: Vec<&str> = path.iter().map(String::as_str).collect();
    let query = form_decode(req.uri().query().unwrap_or(""));
    fn ok(body: impl serde::Serialize) -> Result<(Reply, i64), ApiError> {
        Ok((json_reply(200, &body), 0))
    }
    match (req.method().clone(), parts.as_slice()) {
        (Method::GET, ["healthz"]) => ok(json!({"status": "ok"})),
        (Method::POST, ["api", "v1", "provisioning"]) => {
            let body = read_body(req).await?;
            let request: GrantRequest = if body.is_empty() {
                GrantRequest::default()
            } else {
                serde_json::from_slice(&body)
                    .map_err(|e| ApiError::new(400, ErrorCode::BadRequest, format!("invalid JSON body: {e}")))?
            };
            match request.session_id {
                Some(id) => ok(cloud.with(|s| s.start_reconnect(&id, now_ms()))?),
                None => ok(cloud.with(|s| s.start_provisioning(now_ms()))),
            }
        }
        (Method::POST, ["api", "v1", "provisioning", "token"]) => {
            let body: GrantPoll = read_json(req).await?;
            ok(cloud.with(|s| s.poll_provisioning(&body.device_code, now_ms()))?)
        }
        (Method::GET, ["provision"]) => Ok((provision_page(cloud, &query), 0)),
        (Method::POST, ["provision"]) => {
            let form = form_decode(&String::from_utf8_lossy(&read_body(req).await?));
            let get = |k: &str| form.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap_or_default();
            let approve = get("action") == "approve";
            match cloud.with(|s| {
                s.decide_provisioning(&get("user_code"), &get("tenant"), &get("session_name"), approve, now_ms())
            }) {
                Ok(Some(info)) if approve => Ok((
                    html_reply(
                        200,
                        format!(
                            "<!doctype html><title>Provisioning complete</title><h1>Provisioning complete</h1><p>Tenant {} — Replication ID <b>{}</b>. You can close this window; the client continues.</p>",
                            html_escape(&info.tenant_context_id),
                            html_escape(&info.replication_id)
                        ),
                    ),
                    0,
                )),
                Ok(_) => Ok((html_reply(200, "<!doctype html><title>Denied</title><h1>Request denied</h1>".into()), 0)),
                Err(e) => Ok((
                    html_reply(
                        e.status,
                        format!(
                            "<!doctype html><title>Error</title><h1>{}</h1><p>{}</p>",
                            e.code,
                            html_escape(&e.message)
                        ),
                    ),
                    0,
                )),
            }
        }
        (Method::POST, ["api", "v1", "token"]) => {
            let body: RefreshToken = read_json(req).await?;
            ok(cloud.quietly(|s| s.refresh(&body.refresh_token, now_ms()))?)
        }
        (Method::GET, ["api", "v1", "partner", "tenants"]) => {
            let (id, secret) = basic(&req).ok_or_else(|| {
                ApiError::new(401, ErrorCode::InvalidClient, "send partner credentials with Basic auth")
            })?;
            let tenants = cloud.quietly(|s| s.partner(&id, &secret).map(|p| p.tenants.clone()))?;
            ok(json!({ "tenants": tenants }))
        }
        (Method::GET, ["api", "v1", "partner", "sessions"]) => {
            let (id, secret) = basic(&req).ok_or_else(|| {
                ApiError::new(401, ErrorCode::InvalidClient, "send partner credentials with Basic auth")
            })?;
            ok(cloud.quietly(|s| s.partner_sessions(&id, &secret))?)
        }
        (Method::POST, ["api", "v1", "partner", "sessions"]) => {
            let (id, secret) = basic(&req).ok_or_else(|| {
                ApiError::new(401, ErrorCode::InvalidClient, "send partner credentials with Basic auth")
            })?;
            let body: crate::protocol::PartnerSessionRequest = read_json(req).await?;
            ok(cloud.quietly(|s| s.partner_session(&id, &secret, &body.tenant, &body.session_name, now_ms()))?)
        }
        (method, ["api", "v1", "replication", ctx, rest @ ..]) => {
            let ctx = ctx.to_string();
            let (session, faults) = authorize(cloud, &req, &ctx)?;
            let skew = faults.clock_skew_secs;
            let reply = match (method, rest) {
                (Method::GET, ["session"]) => json_reply(200, &cloud.quietly(|s| s.session_info(&session))),
                (Method::DELETE, ["session"]) => {
                    cloud.with(|s| s.revoke(&session))?;
                    json_reply(200, &json!({"ended": session}))
                }
                (Method::GET, ["schema"]) => json_reply(200, &cloud.quietly(|s| s.schema(&ctx))?),
                (Method::GET, ["status"]) => json_reply(200, &cloud.quietly(|s| s.status(&session))?),
                (Method::GET, ["ground-truth"]) => json_reply(200, &cloud.quietly(|s| s.ground_truth(&ctx))?),
                (Method::POST, ["commit"]) => {
                    let body: CommitRequest = read_json(req).await?;
                    cloud.quietly(|s| s.commit(&session, &body.offsets))?;
                    json_reply(200, &json!({"committed": body.offsets.len()}))
                }
                (Method::POST, ["resync"]) => {
                    let body: ResyncRequest = read_json(req).await?;
                    let ids = body.tables.iter().map(|t| table_id(t)).collect::<Result<Vec<_>, _>>()?;
                    let (accepted, until) = cloud.with(|s| {
                        s.resync_taken_up(&session, &body.tables);
                        let (tenant, log) = s.tenant_mut(&ctx)?;
                        let accepted = tenant.resnapshot(log, now_ms(), &ids)?;
                        // Where the snapshot is complete: the ends of the topic after it.
                        let topic = tenant.cdc_topic();
                        let until = log
                            .ends(&topic)
                            .into_iter()
                            .map(|(partition, offset)| Position { topic: topic.clone(), partition, offset })
                            .collect();
                        Ok::<_, ApiError>((accepted, until))
                    })?;
                    let tables = accepted.iter().map(ToString::to_string).collect();
                    json_reply(202, &ResyncReply { tables, until })
                }
                (Method::POST, ["fetch"]) => {
                    let body: FetchRequest = read_json(req).await?;
                    fetch(cloud.clone(), session, faults, body).await?
                }
                _ => return Err(ApiError::new(404, ErrorCode::NotFound, "no such endpoint")),
            };
            Ok((reply, skew))
        }
        (Method::GET, ["admin", "overview"]) => {
            admin(cloud, &req)?;
            let changes_per_sec = cloud.changes_per_sec.load(std::sync::atomic::Ordering::Relaxed);
            let page = overview_page(&query);
            let overview = cloud.quietly(|s| s.overview_page(&page));
            ok(json!({"changes_per_sec": changes_per_sec, "overview": overview}))
        }
        (Method::GET, ["ops"]) => Ok((html_reply(200, super::ops_page::PAGE.to_owned()), 0)),
        (Method::POST, ["admin", ..]) => {
            admin(cloud, &req)?;
            admin_route(cloud, req, &parts[1..].iter().map(|s| s.to_string()).collect::<Vec<_>>()).await.map(|r| (r, 0))
        }
        _ => Err(ApiError::new(404, ErrorCode::NotFound, "no such endpoint")),
    }
}

async fn admin_route(cloud: &Arc<Cloud>, req: Request<Incoming>, parts: &[String]) -> Result<Reply, ApiError> {
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let now = now_ms();
    let body = read_body(req).await?;
    let reply = |j: Json| Ok(json_reply(200, &j));
    match parts.as_slice() {
        ["sessions", id, "faults"] => {
            let faults: Faults =
                serde_json::from_slice(&body).map_err(|e| ApiError::new(400, ErrorCode::BadRequest, e.to_string()))?;
            cloud.with(|s| s.set_faults(id, faults))?;
            reply(json!({"ok": true}))
        }
        ["workload"] => {
            let rate = serde_json::from_slice::<Json>(&body).ok().and_then(|j| j["changes_per_sec"].as_u64());
            let rate =
                rate.ok_or_else(|| ApiError::new(400, ErrorCode::BadRequest, "`changes_per_sec` is required"))?;
            cloud.changes_per_sec.store(rate.min(u64::from(u32::MAX)) as u32, std::sync::atomic::Ordering::Relaxed);
            reply(json!({"changes_per_sec": rate}))
        }
        ["sessions", id, "revoke"] => {
            cloud.with(|s| s.revoke(id))?;
            reply(json!({"revoked": id}))
        }
        ["min-client-version"] | [_, "min-client-version"] => {
            let action: Action = serde_json::from_slice(&body).unwrap_or_default();
            let version =
                action.version.ok_or_else(|| ApiError::new(400, ErrorCode::BadRequest, "`version` is required"))?;
            cloud.with(|s| s.set_min_client_version(&version));
            reply(json!({"minimum_version": version}))
        }
        [ctx, "reset-offsets"] => reply(cloud.with(|s| s.reset_offsets(ctx, now, false))?),
        [ctx, "actions", action] => {
            let a: Action = if body.is_empty() {
                Action::default()
            } else {
                serde_json::from_slice(&body).map_err(|e| ApiError::new(400, ErrorCode::BadRequest, e.to_string()))?
            };
            reply(cloud.with(|s| lifecycle(s, ctx, action, a, now))?)
        }
        _ => Err(ApiError::new(404, ErrorCode::NotFound, "no such operations endpoint")),
    }
}

/// Runs one lifecycle action on a tenant (also used by the CLI and tests).
fn lifecycle(s: &mut State, ctx: &str, action: &str, a: Action, now: i64) -> Result<Json, ApiError> {
    let table = || a.table.clone().ok_or_else(|| ApiError::new(400, ErrorCode::BadRequest, "`table` is required"));
    let op = match action {
        "changes" => TenantOp::Change { count: a.count.unwrap_or(100) },
        "new-table" => TenantOp::NewTable {
            table: table()?,
            rows: a.count.unwrap_or(20) as u64,
            extra_columns: a.columns.unwrap_or(0),
        },
        "add-column" => {
            TenantOp::AddColumn { table: table()?, column: a.column.clone().unwrap_or_else(|| "added_note".into()) }
        }
        "incompatible-change" => TenantOp::IncompatibleChange { table: table()? },
        "incompatible-alter" => TenantOp::IncompatibleAlter { table: table()? },
        "drop-table" => TenantOp::DropTable { table: table()? },
        "resync" => return s.request_resync(ctx, &[table()?], a.session_id.as_deref()),
        _ => return other_action(s, ctx, action, a, now),
    };
    s.run(ctx, &op, now)
}

fn other_action(s: &mut State, ctx: &str, action: &str, a: Action, now: i64) -> Result<Json, ApiError> {
    match action {
        "restore" => s.reset_offsets(ctx, now, true),
        "suspend" => s.suspend(ctx, true, now),
        "resume" => s.suspend(ctx, false, now),
        "purge" => {
            let dropped = s.log.enforce_retention(now)?;
            Ok(json!({"purged_records": dropped}))
        }
        "approve" | "withdraw" => {
            let partner =
                a.partner.ok_or_else(|| ApiError::new(400, ErrorCode::BadRequest, "`partner` is required"))?;
            s.set_approval(&partner, ctx, action == "approve")
        }
        "revoke-session" => {
            let id =
                a.session_id.ok_or_else(|| ApiError::new(400, ErrorCode::BadRequest, "`session_id` is required"))?;
            s.revoke(&id)?;
            Ok(json!({"revoked": id}))
        }
        _ => Err(ApiError::new(404, ErrorCode::UnknownAction, format!("no lifecycle action `{action}`"))),
    }
}

/// `?offset=…&limit=…&q=…` of `GET /admin/overview`: without them, every tenant.
fn overview_page(query: &[(String, String)]) -> crate::cloud::service::OverviewPage {
    let value = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let number = |name: &str| value(name).and_then(|v| v.parse::<usize>().ok());
    let all = crate::cloud::service::OverviewPage::default();
    crate::cloud::service::OverviewPage {
        offset: number("offset").unwrap_or(all.offset),
        limit: number("limit").unwrap_or(all.limit),
        text: value("q").unwrap_or_default().to_owned(),
    }
}

fn provision_page(cloud: &Cloud, query: &[(String, String)]) -> Reply {
    let code = query.iter().find(|(k, _)| k == "user_code").map(|(_, v)| v.as_str()).unwrap_or("");
    let tenants = cloud.quietly(|s| s.tenant_ids());
    let reconnect = cloud.quietly(|s| s.reconnect_target(code).map(|x| (x.ctx.clone(), x.replication_id.clone())));
    if let Some((ctx, rid)) = reconnect {
        return html_reply(
            200,
            format!(
                "<!doctype html><title>Reconnect Replication Session</title><h1>Reconnect Replication Session</h1>\
                 <p>Re-authorize session <b>{rid}</b> of tenant {ctx}.</p>\
                 <form method=post action=/provision><input type=hidden name=user_code value=\"{code}\">\
                 <input type=hidden name=tenant value=\"{ctx}\"><input type=hidden name=session_name value=\"{rid}\">\
                 <button name=action value=approve>Approve</button> <button name=action value=deny>Deny</button></form>",
                rid = html_escape(&rid),
                ctx = html_escape(&ctx),
                code = html_escape(code)
            ),
        );
    }
    let options: String =
        tenants.iter().map(|t| format!("<option value=\"{0}\">{0}</option>", html_escape(t))).collect();
    html_reply(
        200,
        format!(
            "<!doctype html><title>Provision Replication Session</title><h1>Provision Replication Session</h1>\
             <p>The Database Mirroring Service app asks to replicate your CRM data.</p>\
             <form method=post action=/provision>\
             <label>Code <input name=user_code value=\"{}\"></label><br>\
             <label>Tenant <select name=tenant>{options}</select></label><br>\
             <label>Session Name <input name=session_name required></label><br>\
             <button name=action value=approve>Approve</button> <button name=action value=deny>Deny</button></form>",
            html_escape(code)
        ),
    )
}

/// The long-poll: waits until records exist (or `max_wait_ms` passes), then streams them as
/// newline-delimited record lines, applying the session's injected faults.
async fn fetch(cloud: Arc<Cloud>, session: String, faults: Faults, req: FetchRequest) -> Result<Reply, ApiError> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(req.max_wait_ms.min(120_000));
    let lines = loop {
        let notified = cloud.appended.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let lines = {
            let mut state = cloud.state.lock().unwrap_or_else(|p| p.into_inner());
            state.fetching(&session, now_ms());
            // A suspension while the long-poll waits ends it at once (the suspend wakes it).
            if let Some(ctx) = state.session(&session).map(|s| s.ctx.clone()) {
                state.refuse_if_suspended(&ctx)?;
            }
            state.fetch_now(&session, &req)?
        };
        if !lines.is_empty() || tokio::time::Instant::now() >= deadline {
            break lines;
        }
        let _ = tokio::time::timeout_at(deadline, notified).await;
    };
    let (drop_mid, truncate, resync_requested) = cloud.quietly(|s| {
        let resync_requested = s.session(&session).map(|x| x.resync_requested.clone()).unwrap_or_default();
        let mut f = s.session(&session).map(|x| x.faults.clone()).unwrap_or_default();
        let drop_mid = f.drop_mid_body_next > 0;
        let truncate = !drop_mid && f.truncate_next > 0;
        f.drop_mid_body_next = f.drop_mid_body_next.saturating_sub(u32::from(drop_mid));
        f.truncate_next = f.truncate_next.saturating_sub(u32::from(truncate));
        let _ = s.set_faults(&session, f);
        (drop_mid, truncate, resync_requested)
    });
    let count = lines.len();
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let cut = if drop_mid || truncate { count / 2 } else { count };
        let mut chunk = Vec::with_capacity(64 << 10);
        for (i, line) in lines.iter().enumerate() {
            if i == cut {
                if truncate {
                    chunk.extend_from_slice(&line[..line.len() / 2]);
                    let _ = tx.send(Ok(Bytes::from(std::mem::take(&mut chunk)))).await;
                } else {
                    let _ = tx.send(Ok(Bytes::from(std::mem::take(&mut chunk)))).await;
                    let _ = tx.send(Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "injected"))).await;
                }
                return;
            }
            chunk.extend_from_slice(line);
            chunk.push(b'\n');
            if faults.slow_ms > 0 {
                let _ = tx.send(Ok(Bytes::from(std::mem::take(&mut chunk)))).await;
                tokio::time::sleep(Duration::from_millis(faults.slow_ms)).await;
            } else if chunk.len() >= 64 << 10 && tx.send(Ok(Bytes::from(std::mem::take(&mut chunk)))).await.is_err() {
                return;
            }
        }
        if !chunk.is_empty() {
            let _ = tx.send(Ok(Bytes::from(chunk))).await;
        }
    });
    let mut reply = Response::new(ResponseBody::Stream(rx));
    reply.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    reply.headers_mut().insert("x-record-count", HeaderValue::from(count));
    if !resync_requested.is_empty() {
        let list = resync_requested.into_iter().collect::<Vec<_>>().join(",");
        if let Ok(value) = HeaderValue::from_str(&list) {
            reply.headers_mut().insert(crate::protocol::RESYNC_REQUESTED_HEADER, value);
        }
    }
    Ok(reply)
}

/// Starts the cloud on `listener` in the background: the server plus [`spawn_background`].
pub fn spawn(listener: TcpListener, cloud: Arc<Cloud>, changes_per_sec: u32) -> tokio::task::JoinHandle<()> {
    cloud.changes_per_sec.store(changes_per_sec, std::sync::atomic::Ordering::Relaxed);
    spawn_background(cloud.clone());
    tokio::spawn(serve(listener, cloud))
}

/// A retention sweep every second and, while [`Cloud::changes_per_sec`] > 0, a change
/// workload on every tenant.
pub fn spawn_background(background: Arc<Cloud>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut elapsed = 0u64;
        let mut owed = 0f64;
        loop {
            tick.tick().await;
            elapsed += 100;
            owed += f64::from(background.changes_per_sec.load(std::sync::atomic::Ordering::Relaxed)) / 10.0;
            let count = owed.floor() as usize;
            owed -= count as f64;
            if count > 0 {
                background.with(|s| {
                    if let Err(e) = s.tick(count, now_ms()) {
                        tracing::warn!(code = %e.code, "workload tick failed: {}", e.message);
                    }
                });
            }
            if elapsed.is_multiple_of(1000) {
                // Retention only removes: a waiting long-poll needs waking only if it reads there.
                if background.quietly(|s| s.log.enforce_retention(now_ms()).unwrap_or(0)) > 0 {
                    background.appended.notify_waiters();
                }
            }
        }
    })
}
