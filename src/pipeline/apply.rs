//! The pipeline's side of the sink thread: queued jobs go to the [`SinkWorker`], reports are
//! counted, and a failed write is retried with backoff until it commits, with nothing after it
//! applied meanwhile and progress never moved past it.
//!
//! A write the replica refuses for a reason retrying alone cannot fix (a constraint or trigger
//! the owner added, a value the owner's column cannot hold) is waited on too when the client
//! runs as a service: the owner fixes the table and replication resumes by itself; nothing is
//! skipped. A one-shot run (`--until-idle`) stops with the error instead.
//!
//! One exception, because one table must not hold back all others: when the replica refuses
//! to *create or change a table* for such a reason (too many columns for SQLite, a name or
//! type it cannot hold), that table is marked failed and left out, its records are consumed
//! unapplied, and every other table goes on (see [`crate::state::TableState::Failed`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use std::sync::Arc;

use crate::metrics::{BatchReport, Metrics};
use crate::policy::{Action, sink_action};
use crate::protocol::Offsets;
use crate::retry::Backoff;
use crate::schema::{SchemaChangeKind, TableChange};
use crate::sink::worker::{Job, Report, SinkWorker};
use crate::sink::{Replica, SchemaOutcome, SinkError};
use crate::state::{StateStore, TableState};

use super::{PipelineError, SyncSummary, facts};

/// Jobs queued at once on the sink thread.
const QUEUE_DEPTH: usize = 2;

/// How long a refused write waits at most between attempts (a person is fixing the table).
const REFUSED_MAX_WAIT: Duration = Duration::from_secs(300);

/// The sink thread, what it has applied, and the run's counts.
pub(super) struct Applier {
    worker: Option<SinkWorker<Box<dyn Replica>>>,
    /// What the run did so far.
    pub(super) summary: SyncSummary,
    /// The last applied offset per partition, committed in the replica.
    pub(super) applied: Offsets,
    /// Whether a refused write is waited on (a service) or stops the run (a one-shot run).
    wait_on_refusal: bool,
    /// Tables re-created after an incompatible change since the last call of
    /// [`Applier::take_recreated`]: they need a fresh snapshot.
    recreated: Vec<crate::schema::TableId>,
    /// Tables that received rows since [`Applier::take_touched`] was last called.
    touched: std::collections::BTreeSet<String>,
    /// Tables the replica cannot hold (see [`TableState::Failed`]).
    failed: std::collections::BTreeSet<crate::schema::TableId>,
    metrics: Arc<Metrics>,
    /// The owner's hooks, for every worker this applier starts.
    hooks: Arc<crate::sink::hooks::HookRunner>,
    /// `ErrorPolicy: Isolate`: a refused batch is bisected and its refused changes stored
    /// (see [`super::isolate`]) instead of holding replication.
    isolate: bool,
}

impl Applier {
    /// Starts the sink thread on `sink`, whose committed offsets are `applied` and whose
    /// `failed` tables are left out.
    pub(super) fn start(
        sink: Box<dyn Replica>,
        applied: Offsets,
        failed: std::collections::BTreeSet<crate::schema::TableId>,
        (wait_on_refusal, metrics, hooks, isolate): (bool, Arc<Metrics>, Arc<crate::sink::hooks::HookRunner>, bool),
    ) -> Self {
        use crate::owner::hooks::{HookEvent, Occurrence};
        // A run stopped between a commit and its `BatchCommitted` hooks is caught up now.
        let startup = hooks.wants(HookEvent::BatchCommitted).then(|| {
            let tables = sink.tables().into_iter().map(|r| r.schema.id.clone()).collect();
            Job::Hooks(vec![Occurrence { event: HookEvent::BatchCommitted, tables, rows: 0, reason: Some("startup") }])
        });
        let worker = SinkWorker::spawn_with_hooks(sink, QUEUE_DEPTH, hooks.clone());
        if let Some(job) = startup {
            // The queue is empty and the worker just started: this cannot be refused.
            let _ = worker.submit(job);
        }
        let summary = SyncSummary::default();
        let touched = Default::default();
        let recreated = Vec::new();
        Applier {
            worker: Some(worker),
            summary,
            applied,
            wait_on_refusal,
            recreated,
            touched,
            failed,
            metrics,
            hooks,
            isolate,
        }
    }

    /// The tables that received rows since the last call.
    pub(super) fn take_touched(&mut self) -> std::collections::BTreeSet<String> {
        std::mem::take(&mut self.touched)
    }

    /// Tables left out as failed.
    pub(super) fn failed_tables(&self) -> usize {
        self.failed.len()
    }

    /// The tables re-created since the last call (see [`Applier::recreated`]).
    pub(super) fn take_recreated(&mut self) -> Vec<crate::schema::TableId> {
        std::mem::take(&mut self.recreated)
    }

    fn worker(&mut self) -> &SinkWorker<Box<dyn Replica>> {
        self.worker.as_ref().expect("the applier always holds a worker between calls")
    }

    /// Applies queued jobs in order, retrying failed writes (see the module docs).
    pub(super) fn drain(
        &mut self,
        jobs: &mut Vec<Job>,
        state: &mut (dyn StateStore + Send),
        stop: &AtomicBool,
    ) -> Result<(), PipelineError> {
        for job in jobs.drain(..) {
            if let Err(job) = self.worker().submit(job) {
                // The worker stopped at a failure: collect it and resubmit from there.
                let (sink, reports, mut unapplied) = self.take_worker().finish();
                unapplied.push(job);
                self.recover(sink, reports, unapplied, state, stop)?;
            }
            self.collect(state, stop)?;
        }
        // Also with nothing new to apply: a failure reported since is handled now, not when
        // the next change arrives (an idle stream would otherwise hide it).
        self.collect(state, stop)
    }

    /// Counts the reports that arrived; a failed job is recovered from at once.
    fn collect(&mut self, state: &mut (dyn StateStore + Send), stop: &AtomicBool) -> Result<(), PipelineError> {
        while let Some(report) = self.worker().try_report() {
            if let Some(failed) = self.account(report) {
                let (sink, mut reports, unapplied) = self.take_worker().finish();
                reports.insert(0, Report::Failed(failed));
                self.recover(sink, reports, unapplied, state, stop)?;
            }
        }
        Ok(())
    }

    /// Waits for every queued job, retrying as [`Applier::drain`] does.
    pub(super) fn settle(
        &mut self,
        state: &mut (dyn StateStore + Send),
        stop: &AtomicBool,
    ) -> Result<(), PipelineError> {
        let (sink, reports, unapplied) = self.take_worker().finish();
        self.recover(sink, reports, unapplied, state, stop)
    }

    fn take_worker(&mut self) -> SinkWorker<Box<dyn Replica>> {
        self.worker.take().expect("the applier always holds a worker between calls")
    }

    /// Counts a report; returns the error of a failed one.
    fn account(&mut self, report: Report) -> Option<SinkError> {
        let summary = &mut self.summary;
        match report {
            Report::Applied { tables, records, offsets, apply, source_ms, committed_ms } => {
                let report = BatchReport { tables: &tables, records, apply, source_ms, committed_ms };
                self.metrics.batch_committed(&report);
                for (id, upserts, deletes) in tables {
                    *summary.rows_by_table.entry(id.clone()).or_default() += upserts + deletes;
                    self.touched.insert(id.clone());
                    *summary.rows_total.entry(id).or_default() += upserts + deletes;
                }
                summary.records += records;
                summary.batches += u64::from(records > 0);
                for (k, v) in offsets {
                    let slot = self.applied.entry(k).or_insert(v);
                    *slot = (*slot).max(v);
                }
                None
            }
            Report::Schema(change, outcome) => {
                summary.schema_changes += 1;
                match outcome {
                    SchemaOutcome::Failed => self.failed.insert(change.table.id.clone()),
                    SchemaOutcome::Skipped | SchemaOutcome::Unchanged => false,
                    _ => self.failed.remove(&change.table.id),
                };
                if outcome == SchemaOutcome::Recreated {
                    self.recreated.push(change.table.id.clone());
                    tracing::warn!(
                        table = %change.table.id,
                        "the table changed incompatibly at the source: re-created empty in the replica; its fresh \
                         snapshot refills it (status shows resync_pending until then)"
                    );
                } else if matches!(outcome, SchemaOutcome::Unchanged | SchemaOutcome::Skipped | SchemaOutcome::Failed) {
                    tracing::debug!(table = %change.table.id, ?outcome, "schema change applied");
                } else {
                    tracing::info!(table = %change.table.id, ?outcome, "schema change applied to the replica");
                }
                None
            }
            Report::Failed(error) => Some(error),
        }
    }

    /// Under `ErrorPolicy: Isolate`, a batch the replica refuses for good is applied without
    /// its refused changes, which go to `_ReplicationErrors` with its offsets (see
    /// [`super::isolate`]); returns `None` then. Any other error, or one met while isolating,
    /// is returned for the usual handling.
    fn try_isolate(&mut self, error: SinkError, pending: &mut Vec<Job>, sink: &mut dyn Replica) -> Option<SinkError> {
        let Some(Job::Apply(batch)) = pending.first() else { return Some(error) };
        if !self.isolate || !super::refused::refused_by_replica(&error) {
            return Some(error);
        }
        let started = std::time::Instant::now();
        let refusals = match super::refused::isolate(sink, batch) {
            Ok(refusals) => refusals,
            Err(e) => return Some(e),
        };
        for r in &refusals {
            tracing::error!(
                table = %r.table, key = %r.key, operation = r.operation, error = %r.error,
                "the replica refused a change; it is kept in _ReplicationErrors (ErrorPolicy is Isolate): fix the \
                 cause, then run `dbmirror retry-errors`"
            );
        }
        let Job::Apply(batch) = pending.remove(0) else { unreachable!("checked above") };
        self.account(Report::applied(&batch, crate::sink::worker::live_rows(&batch), started));
        None
    }

    /// A wait the run is in: counted, shown by `/healthz` and by `status`'s last error.
    fn problem(&self, state: &mut (dyn StateStore + Send), message: &str) {
        self.metrics.retried("replica");
        facts::report_problem(state, &self.metrics, message);
    }

    /// Counts the reports of a stopped worker, then applies the unapplied jobs again on a
    /// fresh worker until they all commit; leaves a running worker behind.
    fn recover(
        &mut self,
        sink: Box<dyn Replica>,
        reports: Vec<Report>,
        unapplied: Vec<Job>,
        state: &mut (dyn StateStore + Send),
        stop: &AtomicBool,
    ) -> Result<(), PipelineError> {
        let mut failure = reports.into_iter().filter_map(|r| self.account(r)).last();
        let mut transient = Backoff::replica();
        let mut refused = Backoff::new(Duration::from_secs(1), REFUSED_MAX_WAIT);
        let (mut sink, mut pending) = (sink, unapplied);
        loop {
            if failure.as_ref().is_some_and(|e| matches!(sink_action(e), Action::Superseded { .. }))
                && let Some(e) = failure.take()
            {
                // Another run writes the replica now: nothing here may be retried or set aside.
                return Err(PipelineError::Sink(e));
            }
            if let Some(e) = failure.take()
                && !set_table_aside(&e, &mut pending, &*sink, state)
                && let Some(e) = self.try_isolate(e, &mut pending, &mut *sink)
            {
                let backoff = match sink_action(&e) {
                    Action::Retry { waiting_for, .. } => {
                        tracing::warn!(error = %e, "replica write failed; waiting for {waiting_for}, then retrying the same batch");
                        self.problem(state, &format!("replica write failed (retrying): {e}"));
                        &mut transient
                    }
                    _ if !self.wait_on_refusal => return Err(PipelineError::Sink(e)),
                    _ if matches!(e, SinkError::Hook { .. }) => {
                        // Logged with its output where it ran; the data it followed is committed.
                        self.problem(state, &format!("a hook failed; replication waits until it passes: {e}"));
                        &mut refused
                    }
                    _ => {
                        tracing::error!(
                            error = %e,
                            "the replica refuses a batch; nothing after it is applied or acknowledged. Fix the table \
                             (a constraint, trigger, permission or column added in the replica); replication resumes by itself"
                        );
                        self.problem(state, &format!("the replica refuses a batch (waiting for a fix): {e}"));
                        &mut refused
                    }
                };
                if stop.load(Ordering::Relaxed) {
                    return Err(PipelineError::Sink(e));
                }
                backoff.wait(None, stop);
            }
            let worker = SinkWorker::spawn_with_hooks(sink, QUEUE_DEPTH, self.hooks.clone());
            let rejected: Vec<Job> = pending.drain(..).filter_map(|job| worker.submit(job).err()).collect();
            let (s, reports, mut unapplied) = worker.finish();
            unapplied.extend(rejected);
            failure = reports.into_iter().filter_map(|r| self.account(r)).last();
            if failure.is_none() && unapplied.is_empty() {
                self.worker = Some(SinkWorker::spawn_with_hooks(s, QUEUE_DEPTH, self.hooks.clone()));
                return Ok(());
            }
            sink = s;
            pending = unapplied;
        }
    }
}

/// When the job that failed creates or changes a table and the replica refuses it for good,
/// replaces it by the job that marks the table failed (see the module docs); returns whether
/// it did. A table that is not failed already is never set aside for a resync's failure:
/// only its own schema change can fail it.
fn set_table_aside(
    error: &SinkError,
    pending: &mut [Job],
    sink: &dyn Replica,
    state: &mut (dyn StateStore + Send),
) -> bool {
    if matches!(sink_action(error), Action::Retry { .. }) {
        return false;
    }
    let change = match pending.first() {
        Some(Job::Schema(change)) if change.kind != SchemaChangeKind::Drop && !change.table.id.is_shadow() => {
            change.clone()
        }
        Some(Job::StartResync { table, .. }) => match sink.table(table) {
            Some(record) if record.state == TableState::Failed => {
                TableChange { kind: SchemaChangeKind::Create, table: (*record.schema).clone() }
            }
            _ => return false,
        },
        _ => return false,
    };
    let id = change.table.id.clone();
    tracing::error!(
        table = %id,
        error = %error,
        "the replica cannot hold this table: it is left out (status shows it failed) and every other table goes on. \
         Fix the cause, then run `dbmirror resync-tables {id}`; a schema change of the table at the source also \
         tries it again"
    );
    facts::record_error(state, &format!("table {id} left out, the replica cannot hold it: {error}"));
    pending[0] = Job::FailTable { change: Box::new(change), reason: error.to_string() };
    true
}
