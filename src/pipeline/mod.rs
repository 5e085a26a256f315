//! The streaming pipeline that joins the stages: long-poll fetch → decode → coalesce → apply.
//!
//! Two threads: this one fetches (HTTP body streaming) and decodes and coalesces each chunk as
//! it arrives; the sink thread ([`crate::sink::worker::SinkWorker`]) writes batches, so the
//! next fetch and decode overlap the current database write. The bounded job queue is the
//! backpressure: when the database is slower than the network, decoding waits, and memory
//! stays bounded whatever the table size. Offsets are acknowledged to the cloud only after the
//! replica committed them. A failed write is retried with backoff; nothing after it is applied
//! meanwhile. No database call runs on an async runtime: [`Replication`] blocks on its own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::metrics::Metrics;
use crate::policy::{Action, source_action};
use crate::protocol::{DEFAULT_MAX_BYTES, DEFAULT_MAX_EVENTS, DEFAULT_MAX_WAIT_MS, Offsets, ResetDetails, to_map};
use crate::retry::Backoff;
use crate::schema::{SchemaChangeKind, SchemaRegistry, TableChange, TableId};
use crate::secrets::SecretKey;
use crate::sink::worker::Job;
use crate::sink::{Replica, SinkError};
use crate::source::client::SourceError;
use crate::source::replication::{Fetched, Replication};
use crate::state::StateStore;

mod apply;
mod cursor;
mod decode_stage;
pub mod facts;
mod incarnation;
pub mod refused;
pub mod resync;
mod snapshot_end;
mod tokens;
mod transactions;

pub use cursor::watch_request;
pub use decode_stage::RecordError;
pub use tokens::{refresh_tokens, store_tokens, stored_tokens, token_facts};

use apply::Applier;
use cursor::Cursor;
use decode_stage::DecodeStage;

/// Records per replica transaction when the configuration does not say (`DatabaseBatchSize`).
pub use crate::coalesce::DEFAULT_BATCH_RECORDS as DEFAULT_DATABASE_BATCH_SIZE;

/// How often offsets are acknowledged when the configuration does not say
/// (`CommitIntervalSeconds`).
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(60);

/// What one fetch asks the cloud for at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// Records per fetch (`MaxBatchSize`).
    pub max_events: u32,
    /// Soft bytes per fetch (`MaxBytes`).
    pub max_bytes: u64,
    /// Long-poll wait (`MaxPollTimeSeconds`).
    pub max_wait: Duration,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits {
            max_events: DEFAULT_MAX_EVENTS,
            max_bytes: DEFAULT_MAX_BYTES,
            max_wait: Duration::from_millis(DEFAULT_MAX_WAIT_MS),
        }
    }
}

impl FetchLimits {
    /// The default limits with another long-poll wait.
    pub fn waiting(max_wait: Duration) -> Self {
        FetchLimits { max_wait, ..FetchLimits::default() }
    }
}

/// A routine line of a run: Information, or Debug when `at_debug` (see
/// [`SyncOptions::routine_at_debug`]).
macro_rules! routine {
    ($at_debug:expr, $($line:tt)+) => {
        if $at_debug { tracing::debug!($($line)+) } else { tracing::info!($($line)+) }
    };
}

/// How the pipeline runs (the `appsettings.json` knobs, under the same names).
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// What one fetch asks for (`MaxBatchSize`, `MaxBytes`, `MaxPollTimeSeconds`).
    pub fetch: FetchLimits,
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
    /// Where the run's metrics go (served by [`crate::metrics::serve`] when asked for).
    pub metrics: Arc<Metrics>,
    /// `ReplicaDatabase.ErrorPolicy` is `Isolate`: changes the replica refuses for good go to
    /// `_ReplicationErrors` and the rest goes on (see [`isolate`]); otherwise replication
    /// holds at the refused batch.
    pub isolate_refused: bool,
    /// `WholeSourceTransactions` (default): replica transactions are cut only between source
    /// transactions (see [`transactions`]), so readers never see half of one.
    pub whole_transactions: bool,
    /// The owner's rules, shared with the replica that applies them: hooks run on the sink
    /// thread for this session's tenant; the column rules keep a schema change of an excluded
    /// column from being taken for a re-create; the delete modes make the tables with a
    /// history keep every change, not only final states.
    pub owner: Arc<crate::owner::OwnerRules>,
    /// A partner's pass, one of thousands a day per tenant: the run's routine lines (its
    /// start, its commit cycles) go out at Debug, so Information keeps what changed.
    pub routine_at_debug: bool,
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
            fetch: FetchLimits::default(),
            commit_interval: DEFAULT_COMMIT_INTERVAL,
            database_batch_size: DEFAULT_DATABASE_BATCH_SIZE,
            run_for: None,
            until_idle: false,
            auto_resync: false,
            history_only: false,
            progress: None,
            metrics: Arc::new(Metrics::default()),
            isolate_refused: false,
            whole_transactions: true,
            owner: Arc::default(),
            routine_at_debug: false,
        }
    }
}

/// Why the pipeline stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The cloud refused or the network failed (after retries where retrying makes sense).
    #[error("cloud: {0}")]
    Source(Box<SourceError>),
    /// The replica failed in a way retrying cannot fix (or the run was stopped meanwhile).
    #[error("replica: {0}")]
    Sink(#[from] SinkError),
    /// A record could not be decoded or applied; it names its position.
    #[error("{0}")]
    Record(#[from] RecordError),
    /// The replica holds no usable session (no tokens, or tokens sealed with another key).
    #[error("session: {0}")]
    Session(String),
    /// Rotated tokens could not be stored, and the run stopped before they could be.
    #[error("the rotated tokens could not be stored: {0}")]
    TokenStore(SinkError),
}

impl From<SourceError> for PipelineError {
    fn from(e: SourceError) -> Self {
        PipelineError::Source(Box::new(e))
    }
}

impl PipelineError {
    /// What the error means for whoever runs the pipeline ([`crate::policy`] decides).
    pub fn action(&self) -> Action {
        match self {
            PipelineError::Source(e) => source_action(e),
            PipelineError::Sink(e) | PipelineError::TokenStore(e) => crate::policy::sink_action(e),
            PipelineError::Record(_) | PipelineError::Session(_) => Action::Fatal { advice: None },
        }
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

/// Runs replication until stopped (or idle, or `run_for` passed): `data` is written by the
/// sink thread, `state` (a second connection to the same replica) keeps the session's facts.
pub fn sync(
    replication: Replication,
    data: Box<dyn Replica>,
    state: &mut (dyn StateStore + Send),
    key: &SecretKey,
    options: &SyncOptions,
    stop: Arc<AtomicBool>,
) -> Result<SyncSummary, PipelineError> {
    let info = &replication.info;
    routine!(
        options.routine_at_debug,
        tenant = %info.tenant_context_id,
        replication_id = %info.replication_id,
        cloud = %info.cloud_url,
        until_idle = options.until_idle,
        "sync starting"
    );
    let mut pipeline = Pipeline::start(replication, data, state, key, options, stop)?;
    // Unknown (the cloud unreachable now): the lag is counted at the first commit cycle, and
    // an `--until-idle` run ends at the first empty fetch instead.
    if let Ok(status) = pipeline.replication.status() {
        let behind: i64 = behind(&status, &pipeline.applier.applied).values().sum();
        options.metrics.lag(Some(behind), false);
        if options.until_idle {
            pipeline.target = Some(status.partitions.iter().map(|p| ((p.topic.clone(), p.partition), p.end)).collect());
        }
    }
    while !pipeline.should_stop() {
        let fetched = match pipeline.cycle() {
            Ok(idle) => Some(idle),
            Err(PipelineError::Source(e)) => {
                pipeline.on_fetch_error(*e)?;
                None
            }
            Err(e) => return Err(e),
        };
        pipeline.apply()?;
        pipeline.acknowledge_when_due()?;
        let idle = fetched.unwrap_or(false);
        if let Some(idle) = fetched {
            pipeline.cycle_done(idle);
        }
        if let Some(progress) = &options.progress {
            (progress.0)(&pipeline.applier.summary, idle);
        }
        if options.until_idle && (idle || pipeline.reached_target()) && pipeline.nothing_left()? {
            break;
        }
    }
    pipeline.finish()
}

/// One running pipeline: the session, the decode stage, the sink thread and the resyncs.
struct Pipeline<'a> {
    replication: Replication,
    state: &'a mut (dyn StateStore + Send),
    key: &'a SecretKey,
    options: &'a SyncOptions,
    stop: Arc<AtomicBool>,
    decode: DecodeStage,
    applier: Applier,
    resyncs: resync::Resyncs,
    fetch_backoff: Backoff,
    /// Token refreshes since the last fetch that got through.
    refreshes_in_a_row: u32,
    /// The run's records and transactions at the last commit cycle.
    cycle_base: (u64, u64),
    acknowledged: Offsets,
    clocks: Clocks,
    /// Re-created tables whose fresh snapshot is still to be asked for.
    snapshots_to_request: Vec<TableId>,
    /// For `--until-idle`: the cloud's ends when the run started. Reaching them is "caught
    /// up", so a one-shot run returns promptly, and also under a steady change rate.
    target: Option<Offsets>,
}

/// When a run started, and when it last did what it does periodically.
struct Clocks {
    started: Instant,
    /// When offsets were last acknowledged to the cloud.
    last_ack: Instant,
    /// When the tables' last-change facts were last written.
    last_touched: Instant,
    /// No cycle of this run has got through yet.
    first_cycle: bool,
}

impl Clocks {
    fn new() -> Self {
        let now = Instant::now();
        let last_touched = now.checked_sub(TOUCHED_EVERY).unwrap_or(now);
        Clocks { started: now, last_ack: now, last_touched, first_cycle: true }
    }
}

/// The long-poll wait of a `--until-idle` run: it stops at the first empty fetch, so waiting
/// the full `MaxPollTimeSeconds` for it would only delay the end.
const UNTIL_IDLE_WAIT: Duration = Duration::from_millis(500);

/// How often the tables' last-change facts are written at most.
const TOUCHED_EVERY: Duration = Duration::from_secs(5);

/// Tables whose column rules changed since they were created are dropped, created in their
/// new layout and left `resync_pending`, so the start below asks for their fresh snapshot.
fn relayout(data: &mut dyn Replica) -> Result<(), PipelineError> {
    use crate::sink::plan::Intent;
    data.prepare()?;
    for id in data.layout_changed()? {
        let Some(record) = data.table(&id) else { continue };
        tracing::warn!(
            table = %id,
            "the column rules or delete mode of this table changed since it was created: re-creating it in its new layout and \
             reloading it from a fresh snapshot (it is empty until then)"
        );
        let table = (*record.schema).clone();
        data.change_schema(&TableChange { kind: SchemaChangeKind::Drop, table: table.clone() }, &Intent::Follow)?;
        data.change_schema(&TableChange { kind: SchemaChangeKind::Create, table }, &Intent::Follow)?;
        data.set_table_state(&id, crate::state::TableState::ResyncPending)?;
    }
    Ok(())
}

impl<'a> Pipeline<'a> {
    /// Reads where the replica stands and starts the sink thread.
    fn start(
        replication: Replication,
        mut data: Box<dyn Replica>,
        state: &'a mut (dyn StateStore + Send),
        key: &'a SecretKey,
        options: &'a SyncOptions,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, PipelineError> {
        warn_on_clock_skew(&replication);
        let resyncs = resync::Resyncs::new(crate::sink::shadow::reconcile(&mut *data)?);
        relayout(&mut *data)?;
        let mut schemas = SchemaRegistry::new();
        // A table left `resync_pending` (re-created, its snapshot request lost to a crash or an
        // unreachable cloud) asks again: the request is idempotent in effect.
        let (mut snapshots_to_request, mut failed) = (Vec::new(), std::collections::BTreeSet::new());
        for record in data.tables() {
            let id = &record.schema.id;
            match record.state {
                crate::state::TableState::ResyncPending if !resyncs.is_running(id) => {
                    snapshots_to_request.push(id.clone());
                }
                crate::state::TableState::Failed => {
                    failed.insert(id.clone());
                }
                _ => {}
            }
            schemas.apply(&TableChange { kind: SchemaChangeKind::Create, table: (*record.schema).clone() });
        }
        let checkpoint = state.checkpoint()?;
        let cursor = Cursor::resume(&replication.info, &checkpoint);
        let facts = state.read_facts()?;
        let incarnations = incarnation::Incarnations::new(&facts);
        let hooks = crate::sink::hooks::HookRunner::new(options.owner.clone(), &replication.info.tenant_context_id);
        let mut decode = DecodeStage::new(schemas, cursor, incarnations, options.database_batch_size);
        decode.snapshot_end = snapshot_end::SnapshotEnd::stored(&facts);
        Ok(Pipeline {
            decode: decode
                .whole_transactions(options.whole_transactions)
                .column_rules(options.owner.clone())
                .keep_logs(options.owner.modes.log_filter()),
            applier: Applier::start(
                data,
                checkpoint.offsets.clone(),
                failed,
                (!options.until_idle, options.metrics.clone(), Arc::new(hooks), options.isolate_refused),
            ),
            acknowledged: checkpoint.offsets,
            replication,
            state,
            key,
            options,
            stop,
            resyncs,
            fetch_backoff: Backoff::cloud(),
            refreshes_in_a_row: 0,
            cycle_base: (0, 0),
            clocks: Clocks::new(),
            snapshots_to_request,
            target: None,
        })
    }

    /// After a cycle that got through: metrics and health say so, and an error recorded
    /// while waiting is cleared (its condition has passed).
    fn cycle_done(&mut self, idle: bool) {
        let metrics = &self.options.metrics;
        if idle {
            metrics.lag(None, true);
        }
        metrics.tables(self.resyncs.len(), self.applier.failed_tables());
        // Each table's last change, for `status`, a few seconds after it happened (not only
        // with the commit cycle's acknowledgement, which may be a minute apart).
        if self.clocks.last_touched.elapsed() >= TOUCHED_EVERY {
            let touched = self.applier.take_touched();
            facts::record_applied(self.state, touched.iter());
            match self.state.read_refused() {
                Ok(refused) => metrics.refused_changes(refused.len()),
                Err(e) => tracing::debug!(error = %e, "cannot count _ReplicationErrors now"),
            }
            facts::record_lag_now(self.state, metrics);
            self.clocks.last_touched = Instant::now();
        }
        // An error an earlier run left (it stopped, or its pass failed) is as past as one of
        // this run's once a cycle of this run got through.
        let first = std::mem::take(&mut self.clocks.first_cycle);
        if metrics.cycle_succeeded() || first {
            facts::clear_error(self.state);
        }
    }

    /// Rotates the tokens (stored before they are used, see [`refresh_tokens`]), counted.
    fn refresh_tokens(&mut self) -> Result<(), PipelineError> {
        refresh_tokens(&mut self.replication, self.state, self.key, &self.stop)?;
        routine!(self.options.routine_at_debug, "access token refreshed");
        self.options.metrics.tokens_refreshed();
        Ok(())
    }

    /// Whether a `--until-idle` run may end: every queued job applied, and no resync running
    /// or still to be asked for (a table re-created by the last jobs asks for its snapshot now).
    fn nothing_left(&mut self) -> Result<bool, PipelineError> {
        self.applier.settle(self.state, &self.stop)?;
        self.snapshots_to_request.extend(self.applier.take_recreated());
        self.request_snapshots()?;
        let requested = !self.options.history_only && self.resyncs.pending(self.state)?;
        Ok(self.resyncs.is_empty() && self.snapshots_to_request.is_empty() && !requested)
    }

    /// Whether everything the cloud had when the run started has been read (`--until-idle`).
    fn reached_target(&self) -> bool {
        let next = self.decode.cursor.next();
        self.target
            .as_ref()
            .is_some_and(|target| target.iter().all(|(k, end)| *end == 0 || next.get(k).is_some_and(|n| n >= end)))
    }

    fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.options.run_for.is_some_and(|d| self.clocks.started.elapsed() >= d)
    }

    /// One long-poll, decoded as it streams in; returns whether the stream was idle (the
    /// service had nothing new, not that the fetch failed). A stop request (Ctrl-C, SIGTERM)
    /// ends a long-poll at once, and so does a new resync request; what was decoded is kept.
    fn cycle(&mut self) -> Result<bool, PipelineError> {
        if self.replication.needs_refresh() {
            self.refresh_tokens()?;
        }
        if !self.options.history_only {
            let starts = self.resyncs.poll(&self.replication, self.state);
            self.start_resyncs(starts)?;
        }
        let options = self.options;
        let max_wait = options.fetch.max_wait;
        let mut wait = options.run_for.map_or(max_wait, |d| d.saturating_sub(self.clocks.started.elapsed()));
        if options.until_idle {
            wait = wait.min(UNTIL_IDLE_WAIT);
        }
        let limits = FetchLimits { max_wait: wait.min(max_wait), ..options.fetch };
        let request = self.decode.cursor.request(limits, options.history_only);
        let before = self.decode.consumed;
        let (replication, decode, stop) = (&self.replication, &mut self.decode, &self.stop);
        let fetched = self.resyncs.watch(self.state, !options.history_only, |requested| {
            replication.fetch(&request, &mut |chunk| decode.chunk(chunk), stop, requested)
        });
        // A cut connection loses nothing: the next fetch starts after the last whole record.
        self.decode.end_of_body()?;
        self.decode.incarnations.save(self.state)?;
        let idle = matches!(fetched, Ok(Fetched::Complete(_))) && self.decode.consumed == before;
        if fetched.is_ok() {
            self.fetch_backoff.reset();
            self.refreshes_in_a_row = 0;
        }
        self.take_operator_resyncs();
        self.bound_the_snapshot();
        self.decode.flush_after_fetch(idle);
        fetched?;
        Ok(idle)
    }

    /// The snapshot's last record was read: the partitions' ends now bound every snapshot
    /// record, and the snapshot is complete once they are read (see [`snapshot_end`]). When
    /// the cloud cannot say now, the next cycle asks again.
    fn bound_the_snapshot(&mut self) {
        if self.decode.snapshot_end != snapshot_end::SnapshotEnd::Seen {
            return;
        }
        let status = match self.replication.status() {
            Ok(status) => status,
            Err(e) => {
                tracing::debug!(error = %e, "the partitions' ends are asked again next cycle");
                return;
            }
        };
        let ends = status.ends(&self.replication.info.cdc_topic());
        let fact = snapshot_end::SnapshotEnd::fact(&ends);
        if let Err(e) = self.state.write_facts(&[(snapshot_end::SNAPSHOT_ENDS, crate::state::SessionValue::Text(fact))])
        {
            tracing::warn!(error = %e, "the snapshot's end is not stored; it is asked again next cycle");
            return;
        }
        tracing::info!("the snapshot's last record was read; its tables are ready once every partition is read as far");
        self.decode.snapshot_end = snapshot_end::SnapshotEnd::At(ends);
    }

    /// Handles a failed fetch as [`crate::policy`] says: waits, refreshes, reloads, or stops.
    fn on_fetch_error(&mut self, error: SourceError) -> Result<(), PipelineError> {
        let code = error.code().map_or_else(|| "network".to_owned(), ToString::to_string);
        self.options.metrics.fetch_failed(&code);
        match source_action(&error) {
            Action::RefreshTokens => {
                // A fresh token refused at once as expired (a clock far off, a cloud that
                // misjudges its tokens) would otherwise be refreshed in a tight loop.
                self.refreshes_in_a_row += 1;
                if self.refreshes_in_a_row > 1 {
                    tracing::warn!(
                        error = %error,
                        refreshes = self.refreshes_in_a_row,
                        "the cloud calls a token it just issued expired; waiting before refreshing again (check the host's clock)"
                    );
                    let problem = format!("the cloud refuses fresh tokens as expired (retrying): {error}");
                    facts::report_problem(self.state, &self.options.metrics, &problem);
                    self.fetch_backoff.wait(None, &self.stop);
                }
                self.refresh_tokens()
            }
            Action::Reset(details) => self.reload_after_reset(&details),
            Action::Purged if self.may_reload_after_purge() => self.reload_after_purge(),
            Action::Retry { after, waiting_for } => {
                tracing::warn!(error = %error, retry_after_s = after.map(|d| d.as_secs()), "waiting for {waiting_for}");
                self.options.metrics.retried("cloud");
                let problem = format!("waiting for {waiting_for} (retrying): {error}");
                facts::report_problem(self.state, &self.options.metrics, &problem);
                self.fetch_backoff.wait(after, &self.stop);
                Ok(())
            }
            Action::Purged | Action::Superseded { .. } | Action::Fatal { .. } => Err(error.into()),
        }
    }

    /// The cloud reset the offsets: every table reloads from the fresh snapshot.
    fn reload_after_reset(&mut self, reset: &ResetDetails) -> Result<(), PipelineError> {
        let starts = self.reload_all(&to_map(&reset.until));
        self.decode.reset(&to_map(&reset.positions), reset.reset_epoch, starts);
        Ok(())
    }

    /// Past the cloud's retention, the replica can only continue by reloading every table.
    /// It does so by itself when asked (`--auto-resync`, or a `resync-tables` request, the
    /// documented remedy), and when it holds no data yet (a replica provisioned after the
    /// tenant's snapshot aged out): then nothing is lost and nothing else could work.
    fn may_reload_after_purge(&self) -> bool {
        let cdc = self.replication.info.cdc_topic();
        let has_data = self.applier.applied.keys().any(|(topic, _)| *topic == cdc);
        self.options.auto_resync || !self.resyncs.is_empty() || !has_data
    }

    /// Reloads after a purge: the ends are read first, then a fresh snapshot of every table
    /// the cloud publishes is asked for (it lands after them, and covers tables created while
    /// the replica was away), and the stream continues from the ends. Tables the replica has
    /// reload through shadows; new ones are created from the schema history and filled by
    /// their snapshot.
    fn reload_after_purge(&mut self) -> Result<(), PipelineError> {
        let ends = self.replication.status()?.ends(&self.replication.info.cdc_topic());
        let published: Vec<TableId> =
            self.replication.schema()?.tables.iter().filter_map(|t| TableId::parse(&t.table)).collect();
        let reply = self.replication.resync(&published)?;
        tracing::warn!(
            tables = published.len(),
            "the cloud no longer has the changes this replica needs next (offline longer than its retention, or \
             provisioned after the initial snapshot aged out): reloading every table from a fresh snapshot"
        );
        let starts = self.reload_all(&to_map(&reply.until));
        let epoch = self.decode.cursor.reset_epoch();
        self.decode.reset(&ends, epoch, starts);
        Ok(())
    }

    /// Shadow reloads of every known table, complete at `until`.
    fn reload_all(&mut self, until: &Offsets) -> Vec<Job> {
        self.resyncs.begin(self.decode.schemas.tables().map(|t| t.id.clone()).collect(), until)
    }

    /// Queues the swaps of completed resyncs and applies everything queued; then asks for the
    /// fresh snapshot of tables that were re-created meanwhile.
    fn apply(&mut self) -> Result<(), PipelineError> {
        let swaps = self.resyncs.completed(self.decode.cursor.next());
        self.decode.jobs.extend(swaps.into_iter().map(Job::FinishResync));
        self.applier.drain(&mut self.decode.jobs, self.state, &self.stop)?;
        self.snapshots_to_request.extend(self.applier.take_recreated());
        self.request_snapshots()
    }

    /// Tables the cloud's operators asked a fresh snapshot of (announced with the fetch) are
    /// reloaded like `resync-tables`: through a shadow, asked for with the next apply.
    fn take_operator_resyncs(&mut self) {
        for name in self.replication.take_operator_resyncs() {
            let Some(id) = TableId::parse(&name) else { continue };
            if !self.resyncs.is_running(&id) && !self.snapshots_to_request.contains(&id) {
                tracing::info!(table = %id, "the cloud's operators asked for a fresh snapshot of this table: resyncing it");
                self.snapshots_to_request.push(id);
            }
        }
    }

    /// A table re-created after an incompatible change is empty until a fresh snapshot of it
    /// arrives, and the connector publishes none for an in-place `ALTER`: the client asks for
    /// one and loads it through the resync path (a shadow swapped in when complete, which also
    /// marks the table ready). A refused request is logged and asked again next cycle.
    fn request_snapshots(&mut self) -> Result<(), PipelineError> {
        if self.snapshots_to_request.is_empty() || self.options.history_only {
            return Ok(());
        }
        let tables = std::mem::take(&mut self.snapshots_to_request);
        match self.resyncs.request(&self.replication, tables.clone()) {
            Ok((starts, refused)) => {
                tracing::info!(
                    tables = starts.len(),
                    ?refused,
                    "fresh snapshots asked for (re-created tables, operator requests)"
                );
                self.start_resyncs(starts)
            }
            Err(e) => {
                tracing::warn!(error = %e, "a fresh snapshot could not be asked for yet; retrying");
                self.snapshots_to_request = tables;
                Ok(())
            }
        }
    }

    /// Queues the jobs that start resyncs and applies them. Everything decoded so far precedes
    /// the snapshots: it is flushed first, so it goes to the live tables only.
    fn start_resyncs(&mut self, starts: Vec<Job>) -> Result<(), PipelineError> {
        if starts.is_empty() {
            return Ok(());
        }
        self.decode.flush();
        self.decode.jobs.extend(starts);
        self.applier.drain(&mut self.decode.jobs, self.state, &self.stop)
    }

    fn acknowledge_when_due(&mut self) -> Result<(), PipelineError> {
        if self.clocks.last_ack.elapsed() >= self.options.commit_interval && self.applier.applied != self.acknowledged {
            self.acknowledge_or_wait()?;
        }
        Ok(())
    }

    /// Acknowledges; a condition that passes (the cloud down, the tenant suspended) is only
    /// logged: the offsets are safe in the replica, and the next cycle acknowledges them.
    fn acknowledge_or_wait(&mut self) -> Result<(), PipelineError> {
        match self.acknowledge() {
            Err(e) if matches!(e.action(), Action::Retry { .. }) => {
                tracing::warn!(error = %e, "offsets not acknowledged yet; they are kept in the replica and sent later");
                let problem = format!("acknowledging offsets (retrying): {e}");
                facts::report_problem(self.state, &self.options.metrics, &problem);
                Ok(())
            }
            other => other,
        }
    }

    /// Acknowledges applied offsets to the cloud and writes the commit-cycle log line: rows
    /// per table since the last one, and the lag behind the cloud (written there, not yet here).
    fn acknowledge(&mut self) -> Result<(), PipelineError> {
        if self.replication.needs_refresh() {
            self.refresh_tokens()?;
        }
        self.replication.commit(&self.applier.applied)?;
        self.acknowledged = self.applier.applied.clone();
        self.clocks.last_ack = Instant::now();
        let behind = self.replication.status().ok().map(|s| behind(&s, &self.applier.applied));
        let total: Option<i64> = behind.as_ref().map(|b| b.values().sum());
        self.options.metrics.lag(total, false);
        let lag = total.unwrap_or(-1);
        let lag_fact = facts::Lag {
            behind: behind.unwrap_or_default(),
            newest_source_ms: self.options.metrics.newest_source_ms(),
        };
        let summary = &mut self.applier.summary;
        facts::record_cycle(self.state, &lag_fact);
        let tables: Vec<String> =
            std::mem::take(&mut summary.rows_by_table).into_iter().map(|(t, n)| format!("{t}={n}")).collect();
        // Every count on the line is this cycle's; the run's totals are named so.
        let (records, batches) = (summary.records, summary.batches);
        let (before_records, before_batches) = std::mem::replace(&mut self.cycle_base, (records, batches));
        routine!(
            self.options.routine_at_debug,
            records = records - before_records,
            transactions = batches - before_batches,
            lag,
            rows = %tables.join(" "),
            run_records = records,
            run_transactions = batches,
            "commit cycle: offsets acknowledged to the cloud"
        );
        Ok(())
    }

    /// Applies what is left and acknowledges it.
    fn finish(mut self) -> Result<SyncSummary, PipelineError> {
        self.decode.flush();
        self.applier.drain(&mut self.decode.jobs, self.state, &self.stop)?;
        self.applier.settle(self.state, &self.stop)?;
        if self.applier.applied != self.acknowledged {
            self.acknowledge_or_wait()?;
        }
        let touched = self.applier.take_touched();
        facts::record_applied(self.state, touched.iter());
        let mut summary = std::mem::take(&mut self.applier.summary);
        summary.offsets = std::mem::take(&mut self.applier.applied);
        Ok(summary)
    }
}

/// Records the replica has not applied yet, per partition: the cloud's ends (the next offset
/// it will write) against the replica's own applied offsets, not the acknowledged ones.
fn behind(status: &crate::protocol::StatusReply, applied: &Offsets) -> Offsets {
    status
        .partitions
        .iter()
        .map(|p| {
            let key = (p.topic.clone(), p.partition);
            let next = applied.get(&key).map_or(p.start, |last| cursor::next_after(*last));
            (key, (p.end - next).max(0))
        })
        .collect()
}

/// Warns when this host's clock is off the cloud's (read from the `Date` header): token
/// lifetimes are judged by the cloud's clock, so a large skew gets valid tokens refused.
fn warn_on_clock_skew(replication: &Replication) {
    if let Ok(server) = replication.server_time() {
        let skew_s = (server - crate::clock::now_ms()) / 1000;
        if skew_s.abs() > 60 {
            tracing::warn!(
                skew_s,
                "this host's clock is off the cloud's; tokens may be refused: synchronize the time (NTP)"
            );
        }
    }
}
