//! The pipeline's side of the sink thread: queued jobs go to the [`SinkWorker`], reports are
//! counted, and a failed write is retried with backoff until it commits (or is fatal), with
//! nothing after it applied meanwhile.

use crate::state::StateStore;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::db::Retry;
use crate::sink::worker::{Job, Report, SinkWorker};
use crate::sink::{Sink, SinkError};
use crate::state::Offsets;

use super::{PipelineError, SyncSummary, facts};

/// Applies queued jobs through the worker, retrying transient failures with backoff
/// ([`crate::retry`]). Returns the worker.
pub(super) fn drain<S: Sink + StateStore + Send + 'static>(
    state: &mut (dyn StateStore + Send),
    mut worker: SinkWorker<S>,
    jobs: &mut Vec<Job>,
    summary: &mut SyncSummary,
    applied: &mut Offsets,
    stop: &AtomicBool,
) -> Result<SinkWorker<S>, PipelineError> {
    for job in jobs.drain(..) {
        if let Err(job) = worker.submit(job) {
            // The worker stopped at a failure: collect it below and resubmit.
            let (sink, reports, mut unapplied) = worker.finish();
            unapplied.push(job);
            worker = retry(state, sink, reports, unapplied, summary, applied, stop)?;
        }
        while let Some(report) = worker.try_report() {
            if let Some(failed) = account(report, summary, applied) {
                let (sink, mut reports, unapplied) = worker.finish();
                reports.insert(0, Report::Failed(failed));
                worker = retry(state, sink, reports, unapplied, summary, applied, stop)?;
            }
        }
    }
    Ok(worker)
}

/// Counts a report; returns the error of a failed one.
pub(super) fn account(report: Report, summary: &mut SyncSummary, applied: &mut Offsets) -> Option<SinkError> {
    match report {
        Report::Applied { tables, records, offsets } => {
            for (id, rows) in tables {
                *summary.rows_by_table.entry(id.to_string()).or_default() += rows;
                *summary.rows_total.entry(id.to_string()).or_default() += rows;
            }
            summary.records += records;
            summary.batches += u64::from(records > 0);
            for (k, v) in offsets {
                let slot = applied.entry(k).or_insert(v);
                *slot = (*slot).max(v);
            }
            None
        }
        Report::Schema(change, outcome) => {
            summary.schema_changes += 1;
            tracing::debug!(table = %change.table.id, ?outcome, "schema change applied");
            None
        }
        Report::Failed(error) => Some(error),
    }
}

pub(super) fn retry<S: Sink + StateStore + Send + 'static>(
    state: &mut (dyn StateStore + Send),
    sink: S,
    reports: Vec<Report>,
    unapplied: Vec<Job>,
    summary: &mut SyncSummary,
    applied: &mut Offsets,
    stop: &AtomicBool,
) -> Result<SinkWorker<S>, PipelineError> {
    let mut failure = None;
    for report in reports {
        if let Some(e) = account(report, summary, applied) {
            failure = Some(e);
        }
    }
    let mut backoff = crate::retry::Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
    let mut sink = sink;
    let mut pending = unapplied;
    loop {
        if let Some(e) = failure.take() {
            if e.retry() == Retry::Fatal {
                return Err(PipelineError::Sink(e));
            }
            tracing::warn!(error = %e, "replica write failed; retrying the same batch");
            facts::record_error(state, &format!("replica write failed (retrying): {e}"));
            if stop.load(Ordering::Relaxed) {
                return Err(PipelineError::Sink(e));
            }
            backoff.wait(None, stop);
        }
        let worker = SinkWorker::spawn(sink, 2);
        let mut rest = Vec::new();
        for job in pending.drain(..) {
            if let Err(job) = worker.submit(job) {
                rest.push(job);
            }
        }
        let (s, reports, mut unapplied) = worker.finish();
        unapplied.extend(rest);
        for report in reports {
            if let Some(e) = account(report, summary, applied) {
                failure = Some(e);
            }
        }
        if failure.is_none() && unapplied.is_empty() {
            return Ok(SinkWorker::spawn(s, 2));
        }
        sink = s;
        pending = unapplied;
    }
}
