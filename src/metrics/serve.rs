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
        (&hyper::Method::GET, "/history.json") => plain(
            StatusCode::OK,
            "application/json",
            serde_json::to_string(&pages.metrics.history()).unwrap_or_default(),
        ),
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
  #charts { display: flex; flex-wrap: wrap; gap: 1.5em; margin: .8em 0; } #charts figure { margin: 0; }
  #charts figcaption { font-size: .9em; color: #4b5563; } #charts svg { display: block; background: #f7f8fb; }
  #charts rect { fill: #3b6fd8; } #charts rect.lag { fill: #c26a00; }
"#;

/// The script helpers every page shares: data goes into the page as text, never as markup;
/// `charts()` draws the last hour (`/history.json`) into an element `#charts` as inline SVG,
/// so the page needs nothing from outside and works offline.
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

// The last hour, a bar per minute, drawn into the page's `#charts` from `/history.json`.
const SVG = "http://www.w3.org/2000/svg";
function chart(title, values, unit, cls) {
  const known = values.filter((v) => v !== null && v !== undefined);
  const top = Math.max(1e-9, ...known);
  const last = known.length ? values[values.length - 1] : null;
  const shown = (v) => v === null || v === undefined ? "-" : (Number.isInteger(v) ? String(v) : v.toFixed(1)) + unit;
  const figure = document.createElement("figure");
  const caption = document.createElement("figcaption");
  caption.textContent = title + " · now " + shown(last) + " · highest " + (known.length ? shown(Math.max(...known)) : "-");
  const svg = document.createElementNS(SVG, "svg");
  const [width, height] = [240, 48];
  svg.setAttribute("viewBox", "0 0 " + width + " " + height);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", caption.textContent);
  const step = width / values.length;
  values.forEach((v, i) => {
    if (v === null || v === undefined || v <= 0) return;
    const bar = document.createElementNS(SVG, "rect");
    const h = Math.max(1, Math.round(v / top * height));
    bar.setAttribute("x", (i * step).toFixed(1));
    bar.setAttribute("y", height - h);
    bar.setAttribute("width", Math.max(1, step - 1).toFixed(1));
    bar.setAttribute("height", h);
    if (cls) bar.setAttribute("class", cls);
    svg.appendChild(bar);
  });
  figure.append(caption, svg);
  return figure;
}

async function charts() {
  try {
    const response = await fetch("/history.json", { cache: "no-store" });
    if (!response.ok) return;
    const h = await response.json();
    $("charts").replaceChildren(
      chart("records applied per minute, last hour", h.records, "", ""),
      chart("lag per minute (worst), last hour", h.lag_seconds, " s", "lag"));
  } catch (e) {
    // The charts are a glance; the page's own problem line reports an unreachable listener.
  }
}
"#;
