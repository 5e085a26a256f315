//! The metrics listener: `GET /metrics` (Prometheus text format) and `GET /healthz` (200, or
//! 503 with the reason), on a local address of the operator's choosing (`Metrics.Listen`).
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

use super::{Health, Metrics};

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

/// Binds `address` and serves until the process ends; returns the bound address (a port of
/// 0 picks a free one). `window`: how long without a successful cycle `/healthz` tolerates.
pub fn start(address: &str, metrics: Arc<Metrics>, window: Duration) -> Result<SocketAddr, ListenError> {
    let failed = |source| ListenError { address: address.to_owned(), source };
    let listener = std::net::TcpListener::bind(address).map_err(failed)?;
    listener.set_nonblocking(true).map_err(failed)?;
    let bound = listener.local_addr().map_err(failed)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(failed)?;
    std::thread::Builder::new()
        .name("dbmirror-metrics".into())
        .spawn(move || runtime.block_on(serve(listener, metrics, window)))
        .map_err(failed)?;
    tracing::info!(address = %bound, "serving /metrics and /healthz");
    Ok(bound)
}

async fn serve(listener: std::net::TcpListener, metrics: Arc<Metrics>, window: Duration) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let reply = answer(&req, &metrics, window);
                async move { Ok::<_, Infallible>(reply) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
        });
    }
}

fn answer(req: &Request<Incoming>, metrics: &Metrics, window: Duration) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = content_type.parse() {
            response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
        }
        response
    };
    match (req.method(), req.uri().path()) {
        (&hyper::Method::GET, "/metrics") => {
            reply(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", metrics.render())
        }
        (&hyper::Method::GET, "/healthz") => match metrics.health(window) {
            Health::Healthy => reply(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into()),
            Health::Unhealthy(reason) => {
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", format!("{reason}\n"))
            }
        },
        _ => reply(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "try /metrics or /healthz\n".into()),
    }
}
