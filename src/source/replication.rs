//! The Replication Service from the client's side: the session, its tokens (refreshed before
//! they expire, rotated refresh tokens handed to the caller to persist *before* they are used),
//! the streamed long-poll fetch, and offset acknowledgements. `docs/protocol.md` is the contract.

use http_body_util::BodyExt;
use hyper::Method;
use serde_json::{Value as Json, json};

use super::client::{HttpClient, SourceError};
use crate::state::{Offsets, Session as Facts, SessionValue};

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
    pub fn from_json(json: &Json, cloud_url: &str) -> Option<Self> {
        Some(SessionInfo {
            session_id: json["session_id"].as_str()?.to_owned(),
            tenant_context_id: json["tenant_context_id"].as_str()?.to_owned(),
            replication_id: json["replication_id"].as_str()?.to_owned(),
            cloud_url: cloud_url.trim_end_matches('/').to_owned(),
            cdc_partitions: i32::try_from(json["topics"]["cdc_partitions"].as_i64()?).ok()?,
        })
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
    /// From the service's `tokens` object.
    pub fn from_json(json: &Json, now_ms: i64) -> Option<Self> {
        Some(TokenPair {
            access: json["access_token"].as_str()?.to_owned(),
            refresh: json["refresh_token"].as_str()?.to_owned(),
            expires_at_ms: now_ms + json["expires_in"].as_i64()? * 1000,
        })
    }
}

/// A connected session.
#[derive(Debug)]
pub struct Replication {
    http: HttpClient,
    /// The session.
    pub info: SessionInfo,
    tokens: TokenPair,
}

fn now_ms() -> i64 {
    crate::clock::now_ms()
}

impl Replication {
    /// A session with its current tokens.
    pub fn new(http: HttpClient, info: SessionInfo, tokens: TokenPair) -> Self {
        Replication { http, info, tokens }
    }

    /// The current tokens.
    pub fn tokens(&self) -> &TokenPair {
        &self.tokens
    }

    /// Whether the access token has less than two minutes left.
    pub fn needs_refresh(&self) -> bool {
        self.tokens.expires_at_ms - now_ms() < 120_000
    }

    /// Asks for new tokens. The caller stores the new pair durably and only then calls
    /// [`Replication::adopt`]: after the service rotated, the old refresh token is dead, so a
    /// crash before the new one is stored must not lose it. (Storing is a database write,
    /// which is why it happens outside this async call.)
    pub async fn rotate(&self) -> Result<TokenPair, SourceError> {
        let body = json!({"refresh_token": self.tokens.refresh});
        let reply = self.http.json(Method::POST, "/api/v1/token", None, Some(&body)).await?;
        TokenPair::from_json(&reply["tokens"], now_ms()).ok_or_else(|| SourceError::Service {
            status: 200,
            code: "bad_reply".into(),
            message: "the token endpoint returned no tokens".into(),
            details: Json::Null,
        })
    }

    /// Uses a stored token pair from now on.
    pub fn adopt(&mut self, tokens: TokenPair) {
        tracing::info!("access token refreshed");
        self.tokens = tokens;
    }

    /// The cloud's clock (ms since the epoch), from the `Date` header of the session's own
    /// endpoint (any status: an error reply is dated too).
    pub async fn server_time(&self) -> Result<i64, SourceError> {
        let response = self.http.send(Method::GET, &self.info.path("session"), Some(&self.tokens.access), None).await?;
        let date = response.headers().get(hyper::header::DATE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        crate::clock::parse_http_date(date).ok_or_else(|| SourceError::Service {
            status: 200,
            code: "no_date".into(),
            message: format!("the cloud sent no usable Date header (`{date}`)"),
            details: Json::Null,
        })
    }

    /// A JSON call to a Replication Service endpoint with the current access token.
    pub async fn call(&self, method: Method, endpoint: &str, body: Option<&Json>) -> Result<Json, SourceError> {
        self.http.json(method, &self.info.path(endpoint), Some(&self.tokens.access), body).await
    }

    /// One long-poll: records from `positions` (next offsets) are handed to `on_chunk` as the
    /// body streams in (chunks, not lines: the caller frames them). Returns the byte count.
    /// `reset_epoch` is how many offset resets the replica has already reloaded from.
    pub async fn fetch(
        &self,
        positions: &[(String, i32, i64)],
        limits: (u32, u64, u64),
        reset_epoch: u64,
        on_chunk: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<u64, SourceError> {
        let positions: Vec<Json> =
            positions.iter().map(|(t, p, o)| json!({"topic": t, "partition": p, "offset": o})).collect();
        let body = json!({
            "positions": positions, "max_events": limits.0, "max_bytes": limits.1, "max_wait_ms": limits.2,
            "reset_epoch": reset_epoch,
        });
        let path = self.info.path("fetch");
        let response = self.http.send(Method::POST, &path, Some(&self.tokens.access), Some(&body)).await?;
        let mut incoming = response.into_body();
        let mut total = 0u64;
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|source| SourceError::Body { url: path.clone(), source })?;
            if let Some(data) = frame.data_ref() {
                total += data.len() as u64;
                on_chunk(data);
            }
        }
        Ok(total)
    }

    /// Acknowledges offsets already committed in the replica.
    pub async fn commit(&self, offsets: &Offsets) -> Result<(), SourceError> {
        // Only the cloud's topics; the replica also keeps local markers (`_reset`).
        let list: Vec<Json> = offsets
            .iter()
            .filter(|((t, _), _)| !t.starts_with('_'))
            .map(|((t, p), o)| json!({"topic": t, "partition": p, "offset": o}))
            .collect();
        self.call(Method::POST, "commit", Some(&json!({ "offsets": list }))).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_parse_and_match_what_the_cloud_writes() {
        let debug =
            format!("{:?}", TokenPair { access: "a-secret".into(), refresh: "r-secret".into(), expires_at_ms: 1 });
        assert!(!debug.contains("secret"), "{debug}");
    }
}
