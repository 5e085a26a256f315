//! Idle tenants cost a long-poll in flight, not a place in a queue.
//!
//! A tenant whose pass ended caught up is handed here: one task on a shared runtime keeps a
//! long-poll open on its stream (at most one record, nothing consumed, see
//! [`crate::source::replication::peek`]) and makes the tenant due the moment anything
//! arrives. A pass, with its database, session and clients, runs only then. A refusal, a
//! failure or an access token near its end also makes the tenant due: a full pass knows what
//! each means (a refresh, a suspension, a backoff). The clients are pooled per cloud, so
//! thousands of watches share one runtime and a few TLS configurations. Over HTTP/2 a client
//! multiplexes its watches on one connection, and a server takes only so many streams at
//! once (the reference cloud 200, as hyper's default): a request beyond that waits in the
//! client unsent. So each client carries at most [`PER_CLIENT`] watches, and another client
//! (another connection) is opened when they are all full.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::now_ms;
use crate::protocol::FetchRequest;
use crate::source::client::{HttpClient, SourceError};
use crate::source::replication::{REFRESH_BEFORE_MS, SessionInfo, peek};
use crate::source::tls::Trust;

/// How long each watching long-poll waits for a record (the cloud may answer sooner).
pub const WAIT: Duration = Duration::from_secs(50);

/// Watches one client (one HTTP/2 connection) carries at most: well under the streams a
/// server commonly allows on a connection (100 is the least the HTTP/2 RFC recommends).
pub const PER_CLIENT: usize = 90;

/// An access token is handed back to a pass this long before it ends: well inside the time
/// a pass refreshes it ([`REFRESH_BEFORE_MS`]), so the pass a watch ends for does refresh it
/// (a margin beyond that would end watch after watch with passes that see nothing to do).
const TOKEN_MARGIN_MS: i64 = REFRESH_BEFORE_MS / 2;

/// One tenant's stream, as its last pass left it.
#[derive(Debug)]
pub struct Watch {
    /// Where and what the session reads.
    pub info: SessionInfo,
    /// The session's access token.
    pub access: String,
    /// When the access token ends (ms since the epoch).
    pub expires_at_ms: i64,
    /// The positions after the replica's checkpoint.
    pub request: FetchRequest,
}

/// Why a watch ended and its tenant needs a pass.
#[derive(Debug)]
pub enum Due {
    /// Records (or a resync the operators asked for) wait.
    Records,
    /// The access token ends soon.
    Token,
    /// The cloud refused or could not be reached.
    Failed(SourceError),
    /// The cloud did not answer within the wait (and half a minute).
    Silent,
}

/// A pooled client and how many watches it carries now.
struct Pooled {
    client: HttpClient,
    watches: Arc<AtomicUsize>,
}

/// The shared runtime and the pooled clients, per cloud.
pub struct Watcher {
    runtime: tokio::runtime::Runtime,
    trust: Option<Trust>,
    clients: Mutex<HashMap<String, Vec<Pooled>>>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

impl Watcher {
    /// A watcher verifying clouds with `trust` (as the partner's passes do).
    pub fn new(trust: Option<Trust>) -> Result<Self, SourceError> {
        Ok(Watcher { runtime: super::net::runtime(1, "partner-watch")?, trust, clients: Mutex::default() })
    }

    /// A client for `cloud_url` with room for one more watch, and its count (taken).
    fn client(&self, cloud_url: &str) -> Result<(HttpClient, Arc<AtomicUsize>), SourceError> {
        let mut clients = self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let pool = clients.entry(cloud_url.to_owned()).or_default();
        let free = pool.iter().find(|p| p.watches.load(Ordering::Relaxed) < PER_CLIENT);
        let pooled = match free {
            Some(p) => p,
            None => {
                // Built inside the runtime: the connector's resolver belongs to it.
                let _entered = self.runtime.enter();
                let client = HttpClient::new(cloud_url, self.trust.as_ref())?;
                pool.push(Pooled { client, watches: Arc::default() });
                &pool[pool.len() - 1]
            }
        };
        pooled.watches.fetch_add(1, Ordering::Relaxed);
        Ok((pooled.client.clone(), pooled.watches.clone()))
    }

    /// Watches `watch` until something is due, then calls `due` once (on the watcher's
    /// thread: it must be quick). The returned handle ends the watch early.
    pub fn watch(
        &self,
        mut watch: Watch,
        due: impl FnOnce(Due) + Send + 'static,
    ) -> Result<tokio::task::AbortHandle, SourceError> {
        let (http, carried) = self.client(&watch.info.cloud_url)?;
        // The client's count drops when the task ends, finished or aborted.
        let seat = Seat(carried);
        let task = self.runtime.spawn(async move {
            let _seat = seat;
            let why = loop {
                let left = watch.expires_at_ms - TOKEN_MARGIN_MS - now_ms();
                let Ok(left) = u64::try_from(left) else { break Due::Token };
                let wait = WAIT.min(Duration::from_millis(left));
                watch.request.max_wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                // A cloud that never answers is a failure like any other.
                let answer = tokio::time::timeout(wait + Duration::from_secs(30), async {
                    peek(&http, &watch.info, &watch.access, &watch.request).await
                });
                match answer.await {
                    Ok(Ok(true)) => break Due::Records,
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => break Due::Failed(e),
                    Err(_) => break Due::Silent,
                }
            };
            due(why);
        });
        Ok(task.abort_handle())
    }
}

/// A watch's place on its client, given back when dropped.
struct Seat(Arc<AtomicUsize>);

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(cloud_url: &str, expires_at_ms: i64) -> Watch {
        let info = SessionInfo {
            session_id: "s".into(),
            tenant_context_id: "t1".into(),
            replication_id: "r".into(),
            cloud_url: cloud_url.into(),
            cdc_partitions: 1,
        };
        let checkpoint = crate::state::Checkpoint { offsets: Default::default(), reset_epoch: 0 };
        let request = crate::pipeline::watch_request(&info, &checkpoint, WAIT);
        Watch { info, access: "a".into(), expires_at_ms, request }
    }

    fn ended(watcher: &Watcher, w: Watch) -> Due {
        let (tx, rx) = std::sync::mpsc::channel();
        watcher.watch(w, move |why| tx.send(why).unwrap()).unwrap();
        rx.recv_timeout(Duration::from_secs(20)).expect("the watch ended")
    }

    #[test]
    fn a_token_near_its_end_and_an_unreachable_cloud_end_the_watch() {
        let watcher = Watcher::new(None).unwrap();
        // Within the margin: handed back at once, before any request.
        let soon = now_ms() + TOKEN_MARGIN_MS - 1_000;
        assert!(matches!(ended(&watcher, watch("http://127.0.0.1:1", soon)), Due::Token));
        // Nothing listens there: a pass is due to find out why.
        let later = now_ms() + 3_600_000;
        assert!(matches!(ended(&watcher, watch("http://127.0.0.1:1", later)), Due::Failed(_)));
    }

    #[test]
    fn watches_spread_over_clients_and_give_their_seats_back() {
        let watcher = Watcher::new(None).unwrap();
        let mut handles = Vec::new();
        // A cloud that never answers: every watch stays in flight.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        for _ in 0..PER_CLIENT + 1 {
            handles.push(watcher.watch(watch(&url, now_ms() + 3_600_000), |_| {}).unwrap());
        }
        let carried = |w: &Watcher| -> Vec<usize> {
            let clients = w.clients.lock().unwrap();
            clients[&url].iter().map(|p| p.watches.load(Ordering::Relaxed)).collect()
        };
        assert_eq!(carried(&watcher), [PER_CLIENT, 1]);
        for handle in handles {
            handle.abort();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while carried(&watcher) != [0, 0] {
            assert!(std::time::Instant::now() < deadline, "seats given back: {:?}", carried(&watcher));
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
