//! The Replication Service from the client's side: the session, its tokens (refreshed before
//! they expire, rotated refresh tokens handed to the caller to persist *before* they are used),
//! the streamed long-poll fetch, and offset acknowledgements. `docs/protocol.md` is the contract.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::Method;
use tokio::sync::Notify;

use super::client::{HttpClient, SourceError};
use crate::clock::now_ms;
use crate::protocol::{
    CommitRequest, FetchRequest, GroundTruth, Offsets, ResyncReply, ResyncRequest, SchemaReply, SessionReply,
    StatusReply, TokenRequest, Tokens, to_list,
};
use crate::schema::TableId;
use crate::state::{Session as Facts, SessionValue};

/// An access token with less than this left (ms) is refreshed before the next request.
pub const REFRESH_BEFORE_MS: i64 = 120_000;

/// Where the session lives and what it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Session id.
    pub session_id: String,
    /// Tenant context id (`cust1234`).
    pub tenant_context_id: String,
    /// Replication ID (the session name, lower-cased).
    pub replication_id: String,
    /// The cloud's base URL.
    pub cloud_url: String,
    /// Partitions of `<ctx>-cdc`.
    pub cdc_partitions: i32,
}

impl SessionInfo {
    /// From the service's session object.
    pub fn from_reply(reply: &SessionReply, cloud_url: &str) -> Self {
        SessionInfo {
            session_id: reply.session_id.clone(),
            tenant_context_id: reply.tenant_context_id.clone(),
            replication_id: reply.replication_id.clone(),
            cloud_url: cloud_url.trim_end_matches('/').to_owned(),
            cdc_partitions: reply.topics.cdc_partitions,
        }
    }

    /// `<ctx>-cdc`.
    pub fn cdc_topic(&self) -> String {
        format!("{}-cdc", self.tenant_context_id)
    }

    /// `<ctx>-schemahistory`.
    pub fn history_topic(&self) -> String {
        format!("{}-schemahistory", self.tenant_context_id)
    }

    /// The service path prefix.
    fn path(&self, endpoint: &str) -> String {
        format!("/api/v1/replication/{}/{endpoint}", self.tenant_context_id)
    }

    /// As `_ReplicationState` session facts.
    pub fn to_facts(&self) -> Vec<(&'static str, SessionValue)> {
        let text = |s: &str| SessionValue::Text(s.to_owned());
        vec![
            ("session_id", text(&self.session_id)),
            ("tenant_context_id", text(&self.tenant_context_id)),
            ("replication_id", text(&self.replication_id)),
            ("cloud_url", text(&self.cloud_url)),
            ("service_url", text(&format!("{}/api/v1/replication/{}", self.cloud_url, self.tenant_context_id))),
            ("cdc_partitions", text(&self.cdc_partitions.to_string())),
            ("client_version", text(env!("CARGO_PKG_VERSION"))),
        ]
    }

    /// Back from `_ReplicationState`; `None` if the replica holds no session.
    pub fn from_facts(facts: &Facts) -> Option<Self> {
        let text = |name: &str| match facts.get(name) {
            Some(SessionValue::Text(t)) => Some(t.clone()),
            _ => None,
        };
        Some(SessionInfo {
            session_id: text("session_id")?,
            tenant_context_id: text("tenant_context_id")?,
            replication_id: text("replication_id")?,
            cloud_url: text("cloud_url")?,
            cdc_partitions: text("cdc_partitions")?.parse().ok()?,
        })
    }
}

/// An access token, its refresh token and when the access token expires.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenPair {
    /// JWT access token.
    pub access: String,
    /// Opaque refresh token.
    pub refresh: String,
    /// Expiry of the access token (ms since the epoch, by the local clock).
    pub expires_at_ms: i64,
}

impl std::fmt::Debug for TokenPair {
    /// Tokens never appear in logs or `Debug` output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPair").field("expires_at_ms", &self.expires_at_ms).finish_non_exhaustive()
    }
}

impl TokenPair {
    /// From the service's tokens, issued at `now_ms` by the local clock.
    pub fn issued(tokens: Tokens, now_ms: i64) -> Self {
        TokenPair {
            access: tokens.access_token,
            refresh: tokens.refresh_token,
            expires_at_ms: now_ms + tokens.expires_in * 1000,
        }
    }
}

/// How a long-poll ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// The body was read to its end; this many bytes.
    Complete(u64),
    /// `stop` was set (Ctrl-C, SIGTERM): the rest of the body is not read.
    Stopped,
    /// `wake` was signalled (a resync request): the rest of the body is not read.
    Woken,
}

/// A connected session: typed calls to the Replication Service, each blocking on the
/// session's runtime (its own, or one a partner instance shares between its passes), so
/// callers are plain threads that never hold an async runtime (replica drivers block, and
/// must not run on one).
pub struct Replication {
    http: HttpClient,
    /// The session.
    pub info: SessionInfo,
    tokens: TokenPair,
    runtime: Arc<tokio::runtime::Runtime>,
    /// Tables the cloud's operators asked a fresh snapshot of, as the last fetch announced
    /// them ([`crate::protocol::RESYNC_REQUESTED_HEADER`]).
    operator_resyncs: std::sync::Mutex<Vec<String>>,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication").field("info", &self.info).field("tokens", &self.tokens).finish_non_exhaustive()
    }
}

/// Whether the stream holds anything after `request`'s positions, or the cloud's operators
/// asked for a resync: one long-poll of at most one record, nothing consumed (a fetch reads
/// from the positions it is given). A refusal or a failure is returned as it is, for the
/// caller to hand to a full pass.
pub async fn peek(
    http: &HttpClient,
    info: &SessionInfo,
    access: &str,
    request: &FetchRequest,
) -> Result<bool, SourceError> {
    let (path, body) = fetch_body(info, request)?;
    let response = http.send(Method::POST, &path, Some(access), Some(&body)).await?;
    let asked = response.headers().contains_key(crate::protocol::RESYNC_REQUESTED_HEADER);
    let bytes = super::client::read_all(response, &path).await?;
    Ok(asked || bytes.iter().any(|b| !b.is_ascii_whitespace()))
}

/// The path and JSON body of `POST fetch` (a full fetch and a [`peek`] alike).
fn fetch_body(info: &SessionInfo, request: &FetchRequest) -> Result<(String, serde_json::Value), SourceError> {
    let path = info.path("fetch");
    match serde_json::to_value(request) {
        Ok(body) => Ok((path, body)),
        Err(e) => Err(SourceError::BadReply { url: path, reason: format!("unencodable request: {e}") }),
    }
}

/// Resolves once `stop` is set (checked every 200 ms).
async fn stopped(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Replication {
    /// A session with its current tokens.
    pub fn new(http: HttpClient, info: SessionInfo, tokens: TokenPair) -> Result<Self, SourceError> {
        let runtime = Arc::new(super::client::blocking_runtime(&http)?);
        Ok(Replication::sharing(http, info, tokens, runtime))
    }

    /// A session on a runtime shared with other sessions: `http`'s connections (and their
    /// TLS sessions) live on `runtime` and outlast this session, so the next session to the
    /// same cloud reuses them instead of connecting anew. `runtime` must be multi-threaded
    /// when several threads use it at once (each blocks on it).
    pub fn sharing(
        http: HttpClient,
        info: SessionInfo,
        tokens: TokenPair,
        runtime: Arc<tokio::runtime::Runtime>,
    ) -> Self {
        Replication { http, info, tokens, runtime, operator_resyncs: Default::default() }
    }

    /// The current tokens.
    pub fn tokens(&self) -> &TokenPair {
        &self.tokens
    }

    /// Whether the access token has less than two minutes left.
    pub fn needs_refresh(&self) -> bool {
        self.tokens.expires_at_ms - now_ms() < REFRESH_BEFORE_MS
    }

    /// Asks for new tokens. The caller stores the new pair durably and only then calls
    /// [`Replication::adopt`]: after the service rotated, the old refresh token is dead, so a
    /// crash before the new one is stored must not lose it.
    pub fn rotate(&self) -> Result<TokenPair, SourceError> {
        let request = TokenRequest { refresh_token: self.tokens.refresh.clone() };
        let grant: crate::protocol::Grant =
            self.runtime.block_on(self.http.typed(Method::POST, "/api/v1/token", None, Some(&request)))?;
        Ok(TokenPair::issued(grant.tokens, now_ms()))
    }

    /// Uses a stored token pair from now on.
    pub fn adopt(&mut self, tokens: TokenPair) {
        self.tokens = tokens;
    }

    /// The cloud's clock (ms since the epoch), from the `Date` header of the session's own
    /// endpoint (any status: an error reply is dated too).
    pub fn server_time(&self) -> Result<i64, SourceError> {
        let path = self.info.path("session");
        // Any answer carries the cloud's time, a refusal of the session too: a session problem
        // is reported as such by whoever asks for the session, never as a clock problem.
        let sent = self.runtime.block_on(self.http.exchange(Method::GET, &path, Some(&self.tokens.access), None))?;
        let date = sent.headers().get(hyper::header::DATE).and_then(|v| v.to_str().ok());
        let date = date.unwrap_or_default().to_owned();
        crate::clock::parse_http_date(&date)
            .ok_or_else(|| SourceError::BadReply { url: path, reason: format!("no usable Date header (`{date}`)") })
    }

    fn get<T: serde::de::DeserializeOwned>(&self, endpoint: &str) -> Result<T, SourceError> {
        let path = self.info.path(endpoint);
        self.runtime.block_on(self.http.typed(Method::GET, &path, Some(&self.tokens.access), None::<&()>))
    }

    fn post<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, SourceError> {
        let path = self.info.path(endpoint);
        self.runtime.block_on(self.http.typed(Method::POST, &path, Some(&self.tokens.access), Some(body)))
    }

    /// `GET session`: the session as the cloud knows it.
    pub fn session(&self) -> Result<SessionReply, SourceError> {
        self.get("session")
    }

    /// `DELETE session`: ends this session in the cloud (its tokens stop working), for a
    /// replica that is provisioned anew with `provision --replace`.
    pub fn end_session(&self) -> Result<(), SourceError> {
        let path = self.info.path("session");
        let answer =
            self.http.typed::<serde_json::Value>(Method::DELETE, &path, Some(&self.tokens.access), None::<&()>);
        self.runtime.block_on(answer).map(|_| ())
    }

    /// The tables the cloud's operators asked a fresh snapshot of, announced by the last
    /// fetches (each is announced until this client's `POST resync` covers it).
    pub fn take_operator_resyncs(&self) -> Vec<String> {
        std::mem::take(&mut *self.operator_resyncs.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// `GET status`: ends, acknowledged offsets and lag per partition.
    pub fn status(&self) -> Result<StatusReply, SourceError> {
        self.get("status")
    }

    /// `GET schema`: the published tables.
    pub fn schema(&self) -> Result<SchemaReply, SourceError> {
        self.get("schema")
    }

    /// `GET ground-truth` (the reference cloud only): what `verify` compares with.
    pub fn ground_truth(&self) -> Result<GroundTruth, SourceError> {
        self.get("ground-truth")
    }

    /// `POST resync`: a fresh snapshot of `tables` is appended to the stream.
    pub fn resync(&self, tables: &[TableId]) -> Result<ResyncReply, SourceError> {
        self.post("resync", &ResyncRequest { tables: tables.iter().map(ToString::to_string).collect() })
    }

    /// Acknowledges offsets (the last applied per partition) already committed in the replica.
    pub fn commit(&self, offsets: &Offsets) -> Result<(), SourceError> {
        let _: serde_json::Value = self.post("commit", &CommitRequest { offsets: to_list(offsets) })?;
        Ok(())
    }

    /// One long-poll: the body is handed to `on_chunk` as it streams in (chunks, not lines:
    /// the caller frames them). Ends early, keeping what was handed over, when `stop` is set
    /// or `wake` is signalled.
    pub fn fetch(
        &self,
        request: &FetchRequest,
        on_chunk: &mut (dyn FnMut(&[u8]) + Send),
        stop: &AtomicBool,
        wake: &Notify,
    ) -> Result<Fetched, SourceError> {
        let stream = async {
            let (path, body) = fetch_body(&self.info, request)?;
            let response = self.http.send(Method::POST, &path, Some(&self.tokens.access), Some(&body)).await?;
            let asked = response.headers().get(crate::protocol::RESYNC_REQUESTED_HEADER).and_then(|v| v.to_str().ok());
            if let Some(asked) = asked {
                let tables = asked.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned);
                *self.operator_resyncs.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = tables.collect();
            }
            let mut incoming = response.into_body();
            let mut total = 0u64;
            while let Some(frame) = incoming.frame().await {
                let frame = frame.map_err(|source| SourceError::Body { url: path.clone(), source })?;
                if let Some(data) = frame.data_ref() {
                    total += data.len() as u64;
                    on_chunk(data);
                }
            }
            Ok(Fetched::Complete(total))
        };
        self.runtime.block_on(async {
            tokio::select! {
                r = stream => r,
                () = stopped(stop) => Ok(Fetched::Stopped),
                () = wake.notified() => Ok(Fetched::Woken),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_pairs_never_show_in_debug() {
        let debug =
            format!("{:?}", TokenPair { access: "a-secret".into(), refresh: "r-secret".into(), expires_at_ms: 1 });
        assert!(!debug.contains("secret"), "{debug}");
    }
}
