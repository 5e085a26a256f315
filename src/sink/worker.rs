//! A sink on its own thread, so decoding the next batch overlaps writing the current one.
//!
//! Jobs (batches and schema changes) are applied strictly in submission order. The queue is
//! bounded, so a slow database holds back the producer instead of letting batches pile up in
//! memory. On the first failure the worker stops applying: it reports the failed job, keeps
//! every job submitted after it unapplied, and [`SinkWorker::finish`] hands the sink and those
//! jobs back in order, so the caller can wait, retry them and carry on with nothing skipped
//! and nothing applied out of order.

use crate::state::StateStore;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;

use super::hooks::{HookRunner, run_hooks};
use super::shadow;
use super::{SchemaOutcome, Sink, SinkError};
use crate::coalesce::Batch;
use crate::owner::hooks::{HookEvent, Occurrence};
use crate::schema::{TableChange, TableId};
use crate::state::Offsets;

/// Work for the sink.
#[derive(Debug)]
pub enum Job {
    /// Marks every table still `snapshotting` as `ready` (the initial snapshot is complete).
    /// A `resync_pending` table is made ready by its own resync's swap instead.
    MarkSnapshotsReady,
    /// Write a batch and its offsets in one transaction.
    Apply(Batch),
    /// Bring one table in line with a schema change.
    Schema(TableChange),
    /// Start resyncing a table into a shadow table; the cloud's snapshot of it is complete
    /// once every record before `until` is applied (see [`super::shadow`]).
    StartResync {
        /// The live table.
        table: TableId,
        /// The next offset per partition after the snapshot.
        until: Offsets,
    },
    /// Swap a resynced table's shadow in.
    FinishResync(TableId),
    /// Leave out a table the replica refused for good (see [`crate::state::TableState::Failed`]):
    /// its resync, if any, is cancelled, and it is recorded failed with the reason.
    FailTable {
        /// The table as the source has it.
        change: Box<TableChange>,
        /// Why the replica refused it.
        reason: String,
    },
    /// Run the owner's hooks for these occurrences: queued when `sync` starts, and left
    /// unapplied in place of a committed job whose `OnFailure: Stop` hook failed, so retrying
    /// runs the hooks again and never the job.
    Hooks(Vec<Occurrence>),
}

/// What happened to a job.
#[derive(Debug)]
pub enum Report {
    /// A batch committed; its offsets are durable in the replica.
    Applied {
        /// Rows written per table after coalescing: (`schema.table`, upserts, deletes).
        tables: Vec<(String, u64, u64)>,
        /// Records the batch covered.
        records: u64,
        /// The offsets now committed.
        offsets: Offsets,
        /// How long the replica took.
        apply: std::time::Duration,
        /// Source commit times of the batch's oldest and newest change.
        source_ms: Option<(i64, i64)>,
        /// When the replica committed it (ms since the epoch), taken on the sink thread: the
        /// report may be read a long-poll later.
        committed_ms: i64,
    },
    /// A schema change was applied.
    Schema(TableChange, SchemaOutcome),
    /// A job failed; nothing of it was committed and the worker applies nothing more.
    Failed(SinkError),
}

/// Handle to the sink thread.
pub struct SinkWorker<S> {
    jobs: Option<SyncSender<Job>>,
    reports: Receiver<Report>,
    thread: Option<JoinHandle<(S, Vec<Job>)>>,
}

impl<S> std::fmt::Debug for SinkWorker<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkWorker").finish_non_exhaustive()
    }
}

impl Report {
    /// A committed batch's report: `tables` from [`live_rows`] (taken before the batch ran),
    /// the rest read from the batch now.
    pub fn applied(batch: &Batch, tables: Vec<(String, u64, u64)>, started: std::time::Instant) -> Self {
        Report::Applied {
            tables,
            records: batch.records(),
            offsets: batch.offsets().clone(),
            apply: started.elapsed(),
            source_ms: batch.source_ms(),
            committed_ms: crate::clock::now_ms(),
        }
    }
}

/// Rows a batch writes per live table (`schema.table`, upserts, deletes); a resync's shadow
/// copies are not counted.
pub fn live_rows(batch: &Batch) -> Vec<(String, u64, u64)> {
    batch
        .tables()
        .filter(|t| !t.schema().id.is_shadow())
        .map(|t| (t.schema().id.to_string(), t.upserts().count() as u64, t.deletes().count() as u64))
        .collect()
}

/// Marks the tables still snapshotting ready; returns them.
fn mark_ready<S: Sink + StateStore>(sink: &mut S) -> Result<Vec<TableId>, SinkError> {
    let mut ready = Vec::new();
    for record in sink.all_records() {
        if record.state == crate::state::TableState::Snapshotting {
            sink.set_table_state(&record.schema.id, crate::state::TableState::Ready)?;
            ready.push(record.schema.id.clone());
        }
    }
    // The snapshot is complete: its end is no longer waited for (see `pipeline::snapshot_end`).
    sink.write_facts(&[(crate::state::SNAPSHOT_ENDS, crate::state::SessionValue::Text(String::new()))])?;
    Ok(ready)
}

/// The hook events a job that committed raised (see [`crate::owner::hooks`]).
fn occurrences(job: &Job, report: &Report, loaded: Vec<TableId>) -> Vec<Occurrence> {
    match (job, report) {
        (Job::Apply(batch), Report::Applied { records, tables: counted, .. }) if *records > 0 => {
            // The live tables the batch wrote to (a truncate counts), with the report's counts.
            let tables: Vec<TableId> = batch
                .tables()
                .filter(|t| !t.schema().id.is_shadow())
                .filter(|t| t.truncate_first() || !t.is_empty())
                .map(|t| t.schema().id.clone())
                .collect();
            if tables.is_empty() {
                return Vec::new();
            }
            let rows = counted.iter().map(|(_, upserts, deletes)| upserts + deletes).sum();
            vec![Occurrence { event: HookEvent::BatchCommitted, tables, rows, reason: None }]
        }
        (Job::Schema(change), Report::Schema(_, outcome)) => {
            let id = &change.table.id;
            match outcome {
                SchemaOutcome::Created => vec![Occurrence::table(HookEvent::TableCreated, id, None)],
                SchemaOutcome::Recreated => vec![
                    Occurrence::table(HookEvent::TableCreated, id, Some("recreated")),
                    Occurrence::table(HookEvent::SchemaChanged, id, Some("recreated")),
                ],
                SchemaOutcome::Altered { .. } => vec![Occurrence::table(HookEvent::SchemaChanged, id, Some("altered"))],
                _ => Vec::new(),
            }
        }
        (Job::MarkSnapshotsReady, _) => {
            loaded.iter().map(|id| Occurrence::table(HookEvent::TableLoaded, id, Some("snapshot"))).collect()
        }
        (Job::FinishResync(id), _) => vec![Occurrence::table(HookEvent::TableLoaded, id, Some("resync"))],
        _ => Vec::new(),
    }
}

fn run<S: Sink + StateStore>(
    mut sink: S,
    jobs: Receiver<Job>,
    reports: Sender<Report>,
    hooks: Arc<HookRunner>,
) -> (S, Vec<Job>) {
    let mut unapplied = Vec::new();
    let nothing = || Report::Applied {
        tables: Vec::new(),
        records: 0,
        offsets: Offsets::new(),
        apply: std::time::Duration::ZERO,
        source_ms: None,
        committed_ms: crate::clock::now_ms(),
    };
    // Refusals a batch can make obsolete (see `state::refused`): read once per worker.
    let mut refused = match sink.read_refused() {
        Ok(rows) => super::refused::RefusedIndex::new(&rows),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read _ReplicationErrors; refusals are not checked against new rows");
            super::refused::RefusedIndex::default()
        }
    };
    for mut job in jobs.iter() {
        if !unapplied.is_empty() {
            unapplied.push(job);
            continue;
        }
        let mut loaded = Vec::new();
        let result = match &mut job {
            Job::Apply(batch) => {
                let tables = live_rows(batch);
                shadow::copy_to_shadows(&sink, batch);
                batch.set_superseded(refused.take_superseded(batch));
                let started = std::time::Instant::now();
                sink.apply(batch).map(|()| Report::applied(batch, tables, started))
            }
            Job::Schema(change) => sink
                .apply_schema(change)
                .and_then(|outcome| shadow::follow_schema(&mut sink, change).map(|()| outcome))
                .map(|outcome| Report::Schema(change.clone(), outcome)),
            Job::MarkSnapshotsReady => mark_ready(&mut sink).map(|ready| {
                loaded = ready;
                nothing()
            }),
            Job::StartResync { table, until } => shadow::start(&mut sink, table, until).map(|()| nothing()),
            Job::FinishResync(table) => shadow::finish(&mut sink, table).map(|()| nothing()),
            Job::FailTable { change, reason } => shadow::cancel(&mut sink, &change.table.id)
                .and_then(|()| sink.mark_failed(change, reason.clone()))
                .map(|()| Report::Schema((**change).clone(), SchemaOutcome::Failed)),
            Job::Hooks(due) => run_hooks(&hooks, &mut sink, due).map(|()| nothing()),
        };
        match result {
            Ok(report) => {
                let due = if hooks.is_empty() { Vec::new() } else { occurrences(&job, &report, loaded) };
                let _ = reports.send(report);
                if !due.is_empty()
                    && let Err(error) = run_hooks(&hooks, &mut sink, &due)
                {
                    let _ = reports.send(Report::Failed(error));
                    unapplied.push(Job::Hooks(due));
                }
            }
            Err(error) => {
                let _ = reports.send(Report::Failed(error));
                unapplied.push(job);
            }
        }
    }
    (sink, unapplied)
}

impl<S: Sink + StateStore + Send + 'static> SinkWorker<S> {
    /// Starts the thread; at most `depth` jobs wait in the queue.
    pub fn spawn(sink: S, depth: usize) -> Self {
        Self::spawn_with_hooks(sink, depth, Arc::default())
    }

    /// Starts the thread, running the owner's `hooks` after the jobs that raise their events.
    pub fn spawn_with_hooks(sink: S, depth: usize, hooks: Arc<HookRunner>) -> Self {
        let (jobs, job_rx) = sync_channel(depth);
        let (report_tx, reports) = channel();
        let thread = std::thread::Builder::new()
            .name("dbmirror-sink".into())
            .spawn(move || run(sink, job_rx, report_tx, hooks))
            .expect("spawning the sink thread");
        Self { jobs: Some(jobs), reports, thread: Some(thread) }
    }

    /// Queues a job, waiting while the queue is full. Returns the job if the worker is gone.
    // The job comes back only when the worker is gone (rare), so the caller can keep it;
    // boxing every job to shrink that path would cost an allocation per batch.
    #[allow(clippy::result_large_err)]
    pub fn submit(&self, job: Job) -> Result<(), Job> {
        match &self.jobs {
            Some(jobs) => jobs.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }

    /// A report, if one is ready.
    pub fn try_report(&self) -> Option<Report> {
        self.reports.try_recv().ok()
    }

    /// Waits for the next report; `None` once the worker has stopped and reported everything.
    pub fn next_report(&self) -> Option<Report> {
        self.reports.recv().ok()
    }

    /// Closes the queue, waits for the queued jobs, and returns the sink, the reports not yet
    /// taken, and the jobs left unapplied after a failure (in order; empty on success).
    pub fn finish(mut self) -> (S, Vec<Report>, Vec<Job>) {
        self.jobs = None;
        let (sink, unapplied) = self.thread.take().expect("joined once").join().expect("the sink thread panicked");
        let reports = self.reports.try_iter().collect();
        (sink, reports, unapplied)
    }
}
