//! A small JSON-over-HTTPS client for the Dispatcher, the Replication Service and the
//! reference cloud's operations endpoints.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value as Json;

use super::tls::{Trust, TrustError, client_config};
use crate::protocol::ErrorCode;

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The trust setting is unusable.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// The URL is not `http(s)://host[:port]`.
    #[error("`{0}` is not an http:// or https:// URL")]
    Url(String),
    /// Connecting or sending failed (DNS, refused, TLS, reset).
    #[error("request to {url} failed: {source}")]
    Request {
        /// Where.
        url: String,
        /// Why.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The response body broke off.
    #[error("reading the response from {url} failed: {source}")]
    Body {
        /// Where.
        url: String,
        /// Why.
        #[source]
        source: hyper::Error,
    },
    /// The service answered with an error (`docs/protocol.md` lists the codes).
    #[error("{status} {code}: {message}")]
    Service {
        /// HTTP status.
        status: u16,
        /// Machine-readable code.
        code: ErrorCode,
        /// Human-readable text.
        message: String,
        /// The whole error object (details such as `positions` or `minimum_version`).
        details: Json,
    },
    /// The service answered 2xx with a body this client cannot read.
    #[error("the cloud's reply to {url} is not what the protocol says: {reason}")]
    BadReply {
        /// Where.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The local async runtime could not be started.
    #[error("starting the network runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Where a `Retry-After` header's seconds are kept in an error's `details`.
const RETRY_AFTER_KEY: &str = "retry_after_s";

impl SourceError {
    /// The service's error code, if the service answered with one.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            SourceError::Service { code, .. } => Some(code),
            _ => None,
        }
    }

    /// How long the service asked to wait (`Retry-After`), if it did.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            SourceError::Service { details, .. } => {
                details[RETRY_AFTER_KEY].as_u64().map(std::time::Duration::from_secs)
            }
            _ => None,
        }
    }
}

/// A whole response body (for answers that are not streamed).
pub(crate) async fn read_all(
    response: hyper::Response<hyper::body::Incoming>,
    url: &str,
) -> Result<Bytes, SourceError> {
    let collected = response.into_body().collect().await;
    Ok(collected.map_err(|source| SourceError::Body { url: url.to_owned(), source })?.to_bytes())
}

/// The runtime a blocking client ([`super::replication::Replication`],
/// [`super::dispatcher::Dispatcher`]) drives `http`'s requests on. The caller's thread runs the
/// request itself (`block_on`; a fetch decodes each chunk there). Over TLS one worker thread
/// runs the connection (socket, decryption, HTTP/2 framing), so the next bytes arrive and are
/// decrypted while the last ones are decoded: on a single thread the two took turns, and an
/// HTTPS snapshot ran at half the speed of plain HTTP. Plain HTTP (tests, demos) gains
/// nothing from the hand-over and stays on the caller's thread (see perf/RESULTS.md).
pub(crate) fn blocking_runtime(http: &HttpClient) -> Result<tokio::runtime::Runtime, SourceError> {
    let mut builder = if http.is_tls() {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(1).thread_name("dbmirror-net");
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build().map_err(SourceError::Runtime)
}

/// HTTP/2 receive window (stream and connection) and largest frame the client accepts: a
/// fetch streams tens of megabytes, and the defaults (a few hundred kilobytes in flight,
/// 16 KB frames) made an HTTPS snapshot latency-bound (see perf/RESULTS.md).
const H2_WINDOW: u32 = 16 << 20;
const H2_FRAME: u32 = 1 << 20;

/// A client for one base URL.
#[derive(Clone)]
pub struct HttpClient {
    base: String,
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").field("base", &self.base).finish_non_exhaustive()
    }
}

/// How a request authenticates.
#[derive(Clone, Copy)]
pub enum Credentials<'a> {
    /// A session's access token (the Replication Service).
    Bearer(&'a str),
    /// A partner's id and secret (the partner API).
    Basic {
        /// The partner id.
        user: &'a str,
        /// The partner secret.
        secret: &'a str,
    },
}

impl std::fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::Bearer(_) => "Bearer(…)",
            Credentials::Basic { .. } => "Basic(…)",
        })
    }
}

impl Credentials<'_> {
    fn header(&self) -> String {
        use base64::Engine as _;
        match self {
            Credentials::Bearer(token) => format!("Bearer {token}"),
            Credentials::Basic { user, secret } => {
                format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}")))
            }
        }
    }
}

impl HttpClient {
    /// A client for `base`; `https://…` is verified by `trust`, or by the operating system's
    /// roots when `trust` is `None` (`http://…` is for tests and demos).
    pub fn new(base: &str, trust: Option<&Trust>) -> Result<Self, SourceError> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(SourceError::Url(base));
        }
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let connector = match trust {
            Some(trust) => builder.with_tls_config(client_config(trust)?),
            None if base.starts_with("https://") => builder.with_tls_config(client_config(&Trust::SystemRoots)?),
            // Plain HTTP: TLS is never used, so no roots are loaded.
            None => builder.with_tls_config(client_config(&Trust::Fingerprint([0; 32]))?),
        }
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
        let inner = Client::builder(TokioExecutor::new())
            .http2_initial_stream_window_size(H2_WINDOW)
            .http2_initial_connection_window_size(H2_WINDOW)
            .http2_max_frame_size(H2_FRAME)
            .build(connector);
        Ok(HttpClient { base, inner })
    }

    /// Sends a request with an optional bearer token and JSON body and returns the response
    /// with its body unread (for streamed answers); a non-2xx answer becomes
    /// [`SourceError::Service`].
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Json>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, SourceError> {
        self.send_as(method, path, bearer.map(Credentials::Bearer), body).await
    }

    /// [`HttpClient::send`] with any [`Credentials`] (the partner API's Basic ones).
    pub async fn send_as(
        &self,
        method: Method,
        path: &str,
        credentials: Option<Credentials<'_>>,
        body: Option<&Json>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, SourceError> {
        let url = format!("{}{path}", self.base);
        let response = self.exchange_as(method, path, credentials, body).await?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
        let bytes = read_all(response, &url).await?;
        // A reply that is not the protocol's error (a proxy's page) still has its status.
        let error =
            serde_json::from_slice::<crate::protocol::ErrorReply>(&bytes).map(|r| r.error).unwrap_or_else(|_| {
                crate::protocol::ErrorObject {
                    code: ErrorCode::parse("unknown"),
                    message: "the service gave no reason".into(),
                    details: Default::default(),
                }
            });
        let mut details = error.details;
        if let Some(secs) = retry_after {
            details.insert(RETRY_AFTER_KEY.into(), Json::from(secs));
        }
        Err(SourceError::Service { status, code: error.code, message: error.message, details: Json::Object(details) })
    }

    /// What [`HttpClient::send`] does, returning the answer whatever its status: for what every
    /// answer carries (the `Date` header), whether the session is valid or not.
    pub async fn exchange(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Json>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, SourceError> {
        self.exchange_as(method, path, bearer.map(Credentials::Bearer), body).await
    }

    /// [`HttpClient::exchange`] with any [`Credentials`].
    pub async fn exchange_as(
        &self,
        method: Method,
        path: &str,
        credentials: Option<Credentials<'_>>,
        body: Option<&Json>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, SourceError> {
        let url = format!("{}{path}", self.base);
        let mut req = Request::builder().method(method).uri(&url).header("x-client-version", env!("CARGO_PKG_VERSION"));
        if let Some(credentials) = credentials {
            req = req.header(AUTHORIZATION, credentials.header());
        }
        let payload = match body {
            Some(json) => {
                req = req.header(CONTENT_TYPE, "application/json");
                Bytes::from(json.to_string())
            }
            None => Bytes::new(),
        };
        let request = req.body(Full::new(payload)).map_err(|_| SourceError::Url(url.clone()))?;
        self.inner.request(request).await.map_err(|source| SourceError::Request { url, source })
    }

    /// Like [`HttpClient::send`], reading the whole answer as `T`.
    pub async fn typed<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&impl serde::Serialize>,
    ) -> Result<T, SourceError> {
        let body = body.map(serde_json::to_value).transpose().map_err(|e| SourceError::BadReply {
            url: format!("{}{path}", self.base),
            reason: format!("unencodable request: {e}"),
        })?;
        self.typed_with(method, path, bearer.map(Credentials::Bearer), body.as_ref()).await
    }

    /// Like [`HttpClient::send_as`], reading the whole answer as `T`.
    pub async fn typed_as<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        credentials: Credentials<'_>,
        body: Option<&Json>,
    ) -> Result<T, SourceError> {
        self.typed_with(method, path, Some(credentials), body).await
    }

    async fn typed_with<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        credentials: Option<Credentials<'_>>,
        body: Option<&Json>,
    ) -> Result<T, SourceError> {
        let url = format!("{}{path}", self.base);
        let bytes = read_all(self.send_as(method, path, credentials, body).await?, &url).await?;
        serde_json::from_slice(&bytes).map_err(|e| SourceError::BadReply { url, reason: e.to_string() })
    }

    /// Like [`HttpClient::send`], reading the whole JSON answer.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Json>,
    ) -> Result<Json, SourceError> {
        let url = format!("{}{path}", self.base);
        let bytes = read_all(self.send(method, path, bearer, body).await?, &url).await?;
        Ok(serde_json::from_slice(&bytes).unwrap_or(Json::Null))
    }

    /// Whether requests go over TLS (`https://`).
    pub fn is_tls(&self) -> bool {
        self.base.starts_with("https://")
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }
}
