//! The pipeline's side of `resync-tables`: noticing requests, asking the cloud for a fresh
//! snapshot, and telling the sink when the snapshot has been read completely. The replica's
//! side (shadow tables and the swap) is [`crate::sink::shadow`].
//!
//! Requests are session facts written by the `resync-tables` command, so a running service
//! picks them up without a restart or a second connection to the cloud (which would rotate
//! the refresh token under the service's feet).

use std::collections::{BTreeMap, HashSet};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::PipelineError;
use crate::protocol::{Offsets, to_map};
use crate::schema::TableId;
use crate::sink::shadow;
use crate::sink::worker::Job;
use crate::source::client::SourceError;
use crate::source::replication::Replication;
use crate::state::{Session, SessionValue, StateStore};

/// A resync asked for a table the replica does not replicate.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The name matches no replicated table.
    #[error("`{name}` is not a replicated table; the replica has: {known}")]
    Unknown {
        /// The name as given.
        name: String,
        /// The replicated tables, comma-separated.
        known: String,
    },
    /// The replica could not store the request.
    #[error(transparent)]
    Replica(#[from] crate::db::SinkError),
}

/// Stores resync requests for `names` (`schema.table` or `table`, any case) in the replica,
/// where a running `sync` picks them up (`resync-tables`, the status page); refuses a name
/// the replica does not replicate, storing nothing. Returns the tables, each once.
pub fn request(state: &mut dyn StateStore, names: &[String]) -> Result<Vec<TableId>, RequestError> {
    let known: Vec<TableId> = state.tables().into_iter().map(|r| r.schema.id.clone()).collect();
    let mut ids = Vec::new();
    for name in names {
        let pattern = crate::schema::TablePattern::new(name);
        match known.iter().find(|id| !pattern.is_any() && pattern.matches(id)) {
            Some(id) if ids.contains(id) => {}
            Some(id) => ids.push(id.clone()),
            None => {
                let known = known.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
                return Err(RequestError::Unknown { name: name.clone(), known });
            }
        }
    }
    let stamp = SessionValue::Text(crate::clock::now_ms().to_string());
    let facts: Vec<(String, SessionValue)> = ids.iter().map(|id| (shadow::request_fact(id), stamp.clone())).collect();
    state.write_facts(&facts.iter().map(|(n, v)| (n.as_str(), v.clone())).collect::<Vec<_>>())?;
    Ok(ids)
}

/// How often the replica is asked for new requests.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Running resyncs and the requests already acted on.
#[derive(Debug, Default)]
pub(super) struct Resyncs {
    running: BTreeMap<TableId, Offsets>,
    /// Requests acted on in this run, with the value they were written with: the fact is
    /// cleared by the sink thread a little later, and must not start a second resync.
    seen: HashSet<(TableId, String)>,
    checked: Option<Instant>,
}

impl Resyncs {
    pub(super) fn new(running: Vec<(TableId, Offsets)>) -> Self {
        Self { running: running.into_iter().collect(), ..Self::default() }
    }

    /// Whether `id` is being resynced.
    pub(super) fn is_running(&self, id: &TableId) -> bool {
        self.running.contains_key(id)
    }

    /// No resync is running.
    pub(super) fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Resyncs running.
    pub(super) fn len(&self) -> usize {
        self.running.len()
    }

    /// Whether requests are stored that no resync acted on yet (a table adopted, or asked for,
    /// during the run); the next [`Resyncs::poll`] then looks at once.
    pub(super) fn pending(&mut self, state: &mut (dyn StateStore + Send)) -> Result<bool, PipelineError> {
        let facts = state.read_facts()?;
        let pending = self.fresh(&facts).next().is_some();
        if pending {
            self.checked = None;
        }
        Ok(pending)
    }

    /// Starts the resyncs requested since the last check: the cloud appends a snapshot of the
    /// tables and says where it ends; the returned jobs create the shadows and must be queued
    /// before any record fetched after this call. Failures are logged and retried later.
    pub(super) fn poll(&mut self, replication: &Replication, state: &mut (dyn StateStore + Send)) -> Vec<Job> {
        if self.checked.is_some_and(|t| t.elapsed() < CHECK_EVERY) {
            return Vec::new();
        }
        self.checked = Some(Instant::now());
        match self.try_poll(replication, state) {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(error = %e, "resync request not started yet; trying again shortly");
                Vec::new()
            }
        }
    }

    fn try_poll(
        &mut self,
        replication: &Replication,
        state: &mut (dyn StateStore + Send),
    ) -> Result<Vec<Job>, PipelineError> {
        let facts = state.read_facts()?;
        let fresh: Vec<(TableId, String)> = self.fresh(&facts).collect();
        if fresh.is_empty() {
            return Ok(Vec::new());
        }
        let (jobs, refused) = self.request(replication, fresh.iter().map(|(id, _)| id.clone()).collect())?;
        for id in &refused {
            tracing::warn!(table = %id, "the cloud does not publish this table; resync request dropped");
            state.write_facts(&[(&shadow::request_fact(id), SessionValue::Text(String::new()))])?;
        }
        self.seen.extend(fresh);
        Ok(jobs)
    }

    /// Asks the cloud for a fresh snapshot of `tables` and starts a resync of each one it
    /// publishes; returns the jobs that create their shadows, and the tables it refused.
    pub(super) fn request(
        &mut self,
        replication: &Replication,
        tables: Vec<TableId>,
    ) -> Result<(Vec<Job>, Vec<TableId>), SourceError> {
        let reply = replication.resync(&tables)?;
        let (accepted, refused) = tables.into_iter().partition(|id| reply.tables.contains(&id.to_string()));
        Ok((self.begin(accepted, &to_map(&reply.until)), refused))
    }

    /// Runs `wait` (a long-poll) while another OS thread checks the replica every few
    /// seconds for a request not acted on yet, and signals `wait`'s [`Notify`] when one is
    /// stored: a running service's long-poll ends early, so a request starts within seconds.
    ///
    /// The check runs on its own thread because replica drivers block (the `postgres` client
    /// drives its own runtime, SQL Server's sink too): called on the fetch's async runtime they
    /// panic. With `enabled` false nothing is watched.
    pub(super) fn watch<R>(
        &self,
        state: &mut (dyn StateStore + Send),
        enabled: bool,
        wait: impl FnOnce(&Notify) -> R,
    ) -> R {
        let requested = Notify::new();
        if !enabled {
            return wait(&requested);
        }
        // The checker sleeps on this channel, so the end of `wait` (the sender dropped) ends
        // it at once: a fetch is not held up by the checker's sleep (it was up to 50 ms a
        // fetch, polled in steps, which every partner pass and every change paid).
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let signal = &requested;
        std::thread::scope(|scope| {
            scope.spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = finished.recv_timeout(CHECK_EVERY) {
                    if let Ok(facts) = state.read_facts()
                        && self.fresh(&facts).next().is_some()
                    {
                        signal.notify_one();
                        return;
                    }
                }
            });
            let result = wait(&requested);
            drop(done);
            result
        })
    }

    fn fresh<'a>(&'a self, session: &'a Session) -> impl Iterator<Item = (TableId, String)> + 'a {
        shadow::requests(session)
            .map(|(id, stamp)| (id, stamp.to_owned()))
            .filter(|r| !self.seen.contains(r) && !self.running.contains_key(&r.0))
    }

    /// Starts resyncs (replacing running ones of the same tables) whose snapshot is complete
    /// at `until`; the returned jobs create the shadows.
    pub(super) fn begin(&mut self, tables: Vec<TableId>, until: &Offsets) -> Vec<Job> {
        tables
            .into_iter()
            .map(|id| {
                self.running.insert(id.clone(), until.clone());
                Job::StartResync { table: id, until: until.clone() }
            })
            .collect()
    }

    /// Resyncs whose snapshot has been read completely (`next` has passed every `until`);
    /// they are forgotten here, and their swap must be queued after everything decoded so far.
    pub(super) fn completed(&mut self, next: &Offsets) -> Vec<TableId> {
        let done: Vec<TableId> = self
            .running
            .iter()
            .filter(|(_, until)| until.iter().all(|(k, o)| next.get(k).is_some_and(|n| n >= o)))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &done {
            self.running.remove(id);
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resync_completes_once_every_partition_passed_until() {
        let until: Offsets = [(("c".to_owned(), 0), 10), (("c".to_owned(), 1), 5)].into_iter().collect();
        let mut r = Resyncs::new(vec![(TableId::new("crm7", "person"), until)]);
        let mut next: BTreeMap<(String, i32), i64> = [(("c".to_owned(), 0), 10), (("c".to_owned(), 1), 4)].into();
        assert!(r.completed(&next).is_empty());
        next.insert(("c".to_owned(), 1), 5);
        assert_eq!(r.completed(&next), vec![TableId::new("crm7", "person")]);
        assert!(r.is_empty());
    }
}
