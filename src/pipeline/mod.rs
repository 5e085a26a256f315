//! The streaming pipeline that joins the stages: long-poll fetch → decode → coalesce → apply.
//!
//! Two threads: this one fetches (HTTP body streaming) and decodes and coalesces each chunk as
//! it arrives; the sink thread ([`SinkWorker`]) writes batches, so the next fetch and decode
//! overlap the current database write. The bounded job queue is the backpressure: when the
//! database is slower than the network, decoding waits, and memory stays bounded whatever the
//! table size. Offsets are acknowledged to the cloud only after the replica committed them.
//! A failed write is retried with backoff; nothing after it is applied meanwhile.

use crate::sink::Replica;
use crate::state::StateStore;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::coalesce::{Coalescer, FlushPolicy};
use crate::decode::Decoder;
use crate::protocol::LineFramer;
use crate::schema::{SchemaChangeKind, SchemaRegistry, TableChange};
use crate::secrets::SecretKey;
use crate::sink::worker::{Job, SinkWorker};
use crate::sink::{Sink, SinkError};
use crate::source::client::SourceError;
use crate::source::replication::Replication;
use crate::state::Offsets;

mod apply;
mod decode_stage;
pub mod facts;
mod incarnation;
mod resync;
mod tokens;

pub use tokens::{refresh_tokens, stored_tokens, token_store};

use apply::{account, drain, retry};
use decode_stage::Decode;

/// How the pipeline runs (the `appsettings.json` knobs).
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Records per fetch (`MaxBatchSize`).
    pub max_batch_size: u32,
    /// Soft bytes per fetch (`MaxBytes`).
    pub max_bytes: u64,
    /// Long-poll wait (`MaxPollTimeSeconds`).
    pub max_poll: Duration,
    /// How often offsets are acknowledged (`CommitIntervalSeconds`).
    pub commit_interval: Duration,
    /// Records per replica transaction (`DatabaseBatchSize`).
    pub database_batch_size: u32,
    /// Stop after this long (the demo); `None` runs until stopped.
    pub run_for: Option<Duration>,
    /// Stop once a fetch returns nothing (catch up, then return).
    pub until_idle: bool,
    /// When the replica was offline longer than the cloud's retention (`offset_purged`),
    /// reload every table from a fresh snapshot instead of stopping.
    pub auto_resync: bool,
    /// Read only the schema history (`update-schema`): new and changed tables are applied
    /// now; their rows follow with the next `sync`.
    pub history_only: bool,
    /// Called after every fetch cycle with the run so far and whether the stream was idle
    /// (the `sync` command draws per-table progress bars from it).
    pub progress: Option<ProgressHook>,
}

/// A progress callback: the run so far, and whether the last fetch found nothing new.
pub type ProgressFn = dyn Fn(&SyncSummary, bool) + Send + Sync;

/// A shareable [`ProgressFn`].
#[derive(Clone)]
pub struct ProgressHook(pub Arc<ProgressFn>);

impl std::fmt::Debug for ProgressHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressHook")
    }
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            max_batch_size: 10_000,
            max_bytes: 16 << 20,
            max_poll: Duration::from_secs(30),
            commit_interval: Duration::from_secs(60),
            database_batch_size: 5_000,
            run_for: None,
            until_idle: false,
            auto_resync: false,
            history_only: false,
            progress: None,
        }
    }
}

/// Why the pipeline stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The cloud refused or the network failed (after retries where retrying makes sense).
    #[error("cloud: {0}")]
    Source(Box<SourceError>),
    /// The replica failed in a way retrying cannot fix.
    #[error("replica: {0}")]
    Sink(#[from] SinkError),
    /// A record could not be decoded or applied; it names its position.
    #[error("{0}")]
    Record(String),
}

impl From<SourceError> for PipelineError {
    fn from(e: SourceError) -> Self {
        PipelineError::Source(Box::new(e))
    }
}

/// What a run did.
#[derive(Debug, Default, Clone)]
pub struct SyncSummary {
    /// Records applied to the replica.
    pub records: u64,
    /// Replica transactions.
    pub batches: u64,
    /// Schema changes applied.
    pub schema_changes: u64,
    /// The last applied offsets.
    pub offsets: Offsets,
    /// Rows written per table since the last commit-cycle log line.
    pub rows_by_table: BTreeMap<String, u64>,
    /// Rows written per table during the whole run.
    pub rows_total: BTreeMap<String, u64>,
}

/// The `_ReplicationState` offset row that records how many offset resets were reloaded.
pub const RESET_MARKER: &str = "_reset";

/// A list of `{"topic","partition","offset"}` from the cloud (reset positions, a snapshot's
/// `until`); `None` if any entry is incomplete.
fn positions(value: &serde_json::Value) -> Option<Offsets> {
    value
        .as_array()?
        .iter()
        .map(|p| {
            Some((
                (p["topic"].as_str()?.to_owned(), i32::try_from(p["partition"].as_i64()?).ok()?),
                p["offset"].as_i64()?,
            ))
        })
        .collect()
}

/// Reads a position list the cloud sent, naming it in the error.
fn required_positions(value: &serde_json::Value, what: &str) -> Result<Offsets, PipelineError> {
    positions(value).ok_or_else(|| PipelineError::Record(format!("the cloud's {what} are missing or incomplete")))
}

/// Shadow reloads of every known table for an offset reset, complete at `until`.
fn reload_all(
    resyncs: &mut resync::Resyncs,
    schemas: &SchemaRegistry,
    until: &serde_json::Value,
) -> Result<Vec<Job>, PipelineError> {
    let until = required_positions(until, "reset `until` positions")?;
    Ok(resyncs.begin(schemas.tables().map(|t| t.id.clone()).collect(), &until))
}

/// Warns when this host's clock is off the cloud's (read from the `Date` header): token
/// lifetimes are judged by the cloud's clock, so a large skew gets valid tokens refused.
fn warn_on_clock_skew(runtime: &tokio::runtime::Runtime, replication: &Replication) {
    let local = crate::clock::now_ms();
    if let Ok(server) = runtime.block_on(replication.server_time()) {
        let skew_s = (server - local) / 1000;
        if skew_s.abs() > 60 {
            tracing::warn!(
                skew_s,
                "this host's clock is off the cloud's; tokens may be refused: synchronize the time (NTP)"
            );
        }
    }
}

async fn wait_for(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn expired(e: &SourceError) -> bool {
    matches!(e, SourceError::Service { status: 401, code, .. } if code == "token_expired")
}

/// Acknowledges applied offsets to the cloud and writes the commit-cycle log line: rows per
/// table since the last one, and the lag behind the cloud (written there, not yet here).
fn acknowledge(
    runtime: &tokio::runtime::Runtime,
    replication: &mut Replication,
    state: &mut (dyn StateStore + Send),
    key: &SecretKey,
    applied: &Offsets,
    summary: &mut SyncSummary,
) -> Result<(), PipelineError> {
    if replication.needs_refresh() {
        refresh_tokens(runtime, replication, state, key)?;
    }
    runtime.block_on(replication.commit(applied))?;
    let lag: i64 = runtime
        .block_on(replication.call(hyper::Method::GET, "status", None))
        .ok()
        .and_then(|s| s["partitions"].as_array().map(|p| p.iter().filter_map(|p| p["lag"].as_i64()).sum()))
        .unwrap_or(-1);
    facts::record_cycle(state, summary.rows_by_table.keys());
    let tables: Vec<String> =
        std::mem::take(&mut summary.rows_by_table).into_iter().map(|(t, n)| format!("{t}={n}")).collect();
    tracing::info!(
        records = summary.records,
        transactions = summary.batches,
        lag,
        rows = %tables.join(" "),
        "commit cycle: offsets acknowledged to the cloud"
    );
    Ok(())
}

/// Runs replication: `data` is written by the sink thread, `state` (a second connection to
/// the same replica) keeps the session's tokens.
pub fn sync(
    mut replication: Replication,
    mut data: Box<dyn Replica>,
    state: &mut (dyn StateStore + Send),
    key: &SecretKey,
    options: &SyncOptions,
    stop: Arc<AtomicBool>,
) -> Result<SyncSummary, PipelineError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| PipelineError::Record(format!("starting the network runtime: {e}")))?;
    warn_on_clock_skew(&runtime, &replication);
    let mut resyncs = resync::Resyncs::new(crate::sink::shadow::reconcile(&mut *data)?);
    let mut schemas = SchemaRegistry::new();
    for record in data.tables().into_iter().filter(|r| crate::sink::shadow::live_id(&r.schema.id).is_none()) {
        schemas.apply(&TableChange { kind: SchemaChangeKind::Create, table: (*record.schema).clone() });
    }
    let stored = state.offsets()?;
    let info = replication.info.clone();
    let mut decode = Decode {
        framer: LineFramer::new(64 << 20),
        decoder: Decoder::default(),
        schemas,
        coalescer: Coalescer::new(FlushPolicy {
            max_records: u64::from(options.database_batch_size),
            ..FlushPolicy::default()
        }),
        next: BTreeMap::new(),
        jobs: Vec::new(),
        error: None,
        records: 0,
        incarnations: incarnation::Incarnations::new(&info.history_topic(), &state.read_facts()?),
        skipped: 0,
    };
    decode.next.insert((info.history_topic(), 0), stored.get(&(info.history_topic(), 0)).map_or(0, |o| o + 1));
    for p in 0..info.cdc_partitions {
        decode.next.insert((info.cdc_topic(), p), stored.get(&(info.cdc_topic(), p)).map_or(0, |o| o + 1));
    }
    let mut reset_epoch = stored.get(&(RESET_MARKER.to_owned(), 0)).map_or(0, |e| u64::try_from(*e).unwrap_or(0));
    let mut summary = SyncSummary::default();
    let mut applied = stored.clone();
    let mut acknowledged = stored;
    let mut worker = SinkWorker::spawn(data, 2);
    let started = Instant::now();
    let mut last_ack = Instant::now();
    let mut fetch_backoff = crate::retry::Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
    loop {
        if stop.load(Ordering::Relaxed) || options.run_for.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        // Schema history first, so table changes precede the rows that need them.
        let history = info.history_topic();
        let mut positions: Vec<(String, i32, i64)> =
            decode.next.iter().filter(|((t, _), _)| *t == history).map(|((t, p), o)| (t.clone(), *p, *o)).collect();
        if !options.history_only {
            positions
                .extend(decode.next.iter().filter(|((t, _), _)| *t != history).map(|((t, p), o)| (t.clone(), *p, *o)));
        }
        let wait =
            options.run_for.map_or(options.max_poll, |d| d.saturating_sub(started.elapsed()).min(options.max_poll));
        let limits = (options.max_batch_size, options.max_bytes, wait.as_millis() as u64);
        let before = decode.records;
        if replication.needs_refresh() {
            refresh_tokens(&runtime, &mut replication, state, key)?;
        }
        if !options.history_only {
            let starts = resyncs.poll(&runtime, &replication, state);
            if !starts.is_empty() {
                // Everything decoded so far precedes the snapshot: it goes to the live tables only.
                decode.flush();
                decode.jobs.extend(starts);
                worker = drain(state, worker, &mut decode.jobs, &mut summary, &mut applied, &stop)?;
            }
        }
        // A stop request (Ctrl-C, SIGTERM) ends a long-poll at once, and so does a new
        // resync request (it starts with the next fetch); what was decoded is kept.
        let mut on_chunk = |chunk: &[u8]| decode.chunk(chunk);
        let fetched = resyncs.watch(state, !options.history_only, |requested| {
            runtime.block_on(async {
                tokio::select! {
                    r = replication.fetch(&positions, limits, reset_epoch, &mut on_chunk) => Some(Some(r)),
                    () = wait_for(&stop) => None,
                    () = requested.notified() => Some(None),
                }
            })
        });
        let Some(fetched) = fetched else { break };
        let interrupted = fetched.is_none();
        let fetched = fetched.unwrap_or(Ok(0));
        let failed = fetched.is_err() || interrupted;
        if fetched.is_ok() {
            fetch_backoff.reset();
        }
        if let Err(e) = fetched {
            // A cut connection loses nothing: the next fetch starts after the last whole record.
            match &e {
                e if expired(e) => refresh_tokens(&runtime, &mut replication, state, key)?,
                SourceError::Service { code, .. } if code == "offset_purged" && options.auto_resync => {
                    // Read the ends first, then ask for the snapshot: it lands after them.
                    let status = runtime.block_on(replication.call(hyper::Method::GET, "status", None))?;
                    let cdc = info.cdc_topic();
                    let ends = status["partitions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|p| p["topic"].as_str() == Some(cdc.as_str()))
                        .map(|p| {
                            Some(((cdc.clone(), i32::try_from(p["partition"].as_i64()?).ok()?), p["end"].as_i64()?))
                        })
                        .collect::<Option<Offsets>>()
                        .ok_or_else(|| PipelineError::Record("the cloud's status has incomplete partitions".into()))?;
                    let tables: Vec<String> = decode.schemas.tables().map(|t| t.id.to_string()).collect();
                    let reply = runtime.block_on(replication.call(
                        hyper::Method::POST,
                        "resync",
                        Some(&serde_json::json!({ "tables": tables })),
                    ))?;
                    tracing::warn!("offline longer than the cloud's retention: reloading every table (--auto-resync)");
                    let starts = reload_all(&mut resyncs, &decode.schemas, &reply["until"])?;
                    decode.reset(&ends, reset_epoch, starts).map_err(PipelineError::Record)?;
                }
                SourceError::Service { code, details, .. } if code == "offsets_reset" => {
                    let epoch = details["reset_epoch"].as_u64().unwrap_or(reset_epoch + 1);
                    let starts = reload_all(&mut resyncs, &decode.schemas, &details["until"])?;
                    let positions = required_positions(&details["positions"], "reset positions")?;
                    decode.reset(&positions, epoch, starts).map_err(PipelineError::Record)?;
                    reset_epoch = epoch;
                }
                SourceError::Body { .. } | SourceError::Request { .. } => {
                    tracing::warn!(error = %e, "fetch interrupted; retrying");
                    facts::record_error(state, &format!("fetch interrupted (retrying): {e}"));
                    fetch_backoff.wait(None, &stop);
                }
                SourceError::Service { status: 429 | 503, .. } => {
                    tracing::warn!(error = %e, retry_after_s = e.retry_after().map(|d| d.as_secs()), "the service asked to retry later");
                    facts::record_error(state, &format!("the cloud asked to retry later: {e}"));
                    fetch_backoff.wait(e.retry_after(), &stop);
                }
                _ => return Err(e.into()),
            }
        }
        // A partial last line (a truncated body) is dropped; it is fetched again.
        let _ = decode.framer.finish();
        decode.incarnations.save(state)?;
        if let Some(error) = decode.error.take() {
            return Err(PipelineError::Record(error));
        }
        // Idle means the service had nothing new, not that a fetch failed.
        let idle = !failed && decode.records == before;
        if idle || decode.coalescer.pending_records() > 0 {
            decode.flush();
        }
        decode.jobs.extend(resyncs.completed(&decode.next).into_iter().map(Job::FinishResync));
        worker = drain(state, worker, &mut decode.jobs, &mut summary, &mut applied, &stop)?;
        if last_ack.elapsed() >= options.commit_interval && applied != acknowledged {
            acknowledge(&runtime, &mut replication, state, key, &applied, &mut summary)?;
            acknowledged = applied.clone();
            last_ack = Instant::now();
        }
        if let Some(progress) = &options.progress {
            (progress.0)(&summary, idle);
        }
        if idle && options.until_idle && resyncs.is_empty() {
            break;
        }
    }
    decode.flush();
    worker = drain(state, worker, &mut decode.jobs, &mut summary, &mut applied, &stop)?;
    let (sink, reports, unapplied) = worker.finish();
    let mut failure = None;
    for report in reports {
        failure = account(report, &mut summary, &mut applied).or(failure);
    }
    if failure.is_some() || !unapplied.is_empty() {
        let mut jobs = unapplied;
        let worker = retry(state, sink, Vec::new(), std::mem::take(&mut jobs), &mut summary, &mut applied, &stop)?;
        let _ = worker.finish();
    }
    if applied != acknowledged {
        acknowledge(&runtime, &mut replication, state, key, &applied, &mut summary)?;
    }
    summary.offsets = applied;
    Ok(summary)
}
