//! The metrics listener: `GET /metrics` (Prometheus text format), `GET /healthz` (200, or 503
//! with the reason) and whatever page its caller adds (the owner's status page, see
//! `status::page`), on a local address of the operator's choosing (`Metrics.Listen`).
//!
//! It runs on a thread of its own with a small runtime, apart from the pipeline, so a scrape
//! never waits for a database write and a slow scraper never holds back replication.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming};

use super::{Exposition, Health};

/// The listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("metrics listener on {address}: {source}")]
pub struct ListenError {
    /// The address asked for.
    pub address: String,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// A page served beside `/metrics` and `/healthz` (the owner's status page): the listener
/// knows nothing of what it shows.
pub trait OwnerPage: Send + Sync {
    /// The reply to `method path?query`; `None` when the path is not the page's.
    fn answer(&self, method: &hyper::Method, path: &str, query: Option<&str>) -> Option<PageReply>;
}

/// A page's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageReply {
    /// The HTTP status.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

/// What the listener serves.
#[derive(Clone)]
pub struct Pages {
    /// The run's metrics (one pipeline's, or a partner instance's tenants).
    pub metrics: Arc<dyn Exposition>,
    /// How long without a successful cycle `/healthz` tolerates.
    pub window: Duration,
    /// The owner's status page, if the caller has one.
    pub owner: Option<Arc<dyn OwnerPage>>,
}

/// Binds `address` and serves until the process ends; returns the bound address (a port of
/// 0 picks a free one).
pub fn start(address: &str, pages: Pages) -> Result<SocketAddr, ListenError> {
    let failed = |source| ListenError { address: address.to_owned(), source };
    let listener = std::net::TcpListener::bind(address).map_err(failed)?;
    listener.set_nonblocking(true).map_err(failed)?;
    let bound = listener.local_addr().map_err(failed)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(failed)?;
    std::thread::Builder::new()
        .name("dbmirror-metrics".into())
        .spawn(move || runtime.block_on(serve(listener, pages)))
        .map_err(failed)?;
    tracing::info!(address = %bound, "serving /metrics and /healthz");
    Ok(bound)
}

async fn serve(listener: std::net::TcpListener, pages: Pages) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let pages = pages.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let pages = pages.clone();
                // The owner page reads the replica: off the listener's runtime.
                async move {
                    let reply = tokio::task::spawn_blocking(move || answer(&req, &pages)).await;
                    Ok::<_, Infallible>(reply.unwrap_or_else(|_| {
                        plain(StatusCode::INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8", "failed\n".into())
                    }))
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
        });
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

fn plain(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

fn answer(req: &Request<Incoming>, pages: &Pages) -> Response<Full<Bytes>> {
    let (method, path) = (req.method(), req.uri().path());
    match (method, path) {
        (&hyper::Method::GET, "/metrics") => {
            plain(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", pages.metrics.render())
        }
        (&hyper::Method::GET, "/healthz") => match pages.metrics.health(pages.window) {
            Health::Healthy => plain(StatusCode::OK, TEXT, "ok\n".into()),
            Health::Unhealthy(reason) => plain(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("{reason}\n")),
        },
        _ => match pages.owner.as_deref().and_then(|owner| owner.answer(method, path, req.uri().query())) {
            Some(reply) => {
                let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                plain(status, reply.content_type, reply.body)
            }
            None => plain(StatusCode::NOT_FOUND, TEXT, "try /status, /metrics or /healthz\n".into()),
        },
    }
}

/// The value of the query parameter `name`, decoded ([`percent_decode`]).
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let mut pairs = query?.split('&').filter_map(|pair| pair.split_once('='));
    pairs.find(|(key, _)| *key == name).map(|(_, value)| percent_decode(value))
}

/// A query value with its `%XX` escapes and `+` decoded (for the pages' parameters).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3)) {
            (b'%', Some(hex)) => match std::str::from_utf8(hex).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                None => out.push(b'%'),
            },
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A self-contained page (no external assets, works offline) in the pages' common frame: the
/// head, the shared style and the script helpers (`$`, `ago`, `cell`) before `script`.
pub fn html_page(title: &str, style: &str, body: &str, script: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <link rel=\"icon\" href=\"data:,\">\n<title>{title}</title>\n<style>\n{STYLE}{style}</style>\n</head>\n\
         <body>\n{body}<script>\n{HELPERS}{script}</script>\n</body>\n</html>\n"
    )
}

/// The style every page shares.
const STYLE: &str = r#"  body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #1d2330; }
  h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.4em; }
  table { border-collapse: collapse; margin-top: .5em; }
  th, td { border-bottom: 1px solid #d8dce4; padding: .35em .7em; text-align: left; vertical-align: top; }
  th { background: #f2f4f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .bad { color: #b00020; } .warn { color: #8a5a00; } .good { color: #1b6e2d; } .muted { color: #6b7280; }
"#;

/// The script helpers every page shares: data goes into the page as text, never as markup.
const HELPERS: &str = r#""use strict";
const $ = (id) => document.getElementById(id);
const ago = (ms) => (ms === null || ms === undefined) ? "never" : Math.max(0, Math.round((Date.now() - ms) / 1000)) + " s ago";

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}
"#;
