//! The partner's scheduler: the tenant list, the worker pool and one tenant's pass.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::PartnerConfig;
use super::board::{Board, PassReport, TenantState};
use super::databases::Databases;
use super::net::PassNet;
use super::passes;
use super::watch::{Due, Watch, Watcher};
use crate::clock::now_ms;
use crate::db::SinkError;
use crate::pipeline::{PipelineError, SyncOptions, facts, stored_tokens, sync, token_facts};
use crate::policy::Action;
use crate::protocol::ErrorCode;
use crate::secrets::SecretKey;
use crate::sink::{Replica, SinkOptions};
use crate::source::client::{HttpClient, SourceError};
use crate::source::partner::PartnerApi;
use crate::source::replication::{SessionInfo, TokenPair};

/// Why partner mode stopped: only what a person must fix.
#[derive(Debug, thiserror::Error)]
pub enum PartnerError {
    /// The partner's server, or its naming, is unusable.
    #[error("the partner's server: {0}")]
    Server(#[from] SinkError),
    /// The Dispatcher refused the partner (wrong id or secret), or cannot be reached at all.
    #[error("the partner API: {0}")]
    Api(Box<SourceError>),
}

impl From<SourceError> for PartnerError {
    fn from(e: SourceError) -> Self {
        PartnerError::Api(Box::new(e))
    }
}

/// A tenant that has not seen a change is still given a pass this often: what a watch could
/// miss (it never should) is caught up with then.
const IDLE_FALLBACK: Duration = Duration::from_secs(1800);

/// How a pass ended, and so when the tenant's next one is due.
#[derive(Debug)]
enum Outcome {
    /// Caught up: watched from here (see [`super::watch`]); again once records arrive, but
    /// not sooner than `IdleSeconds` after this pass (so a busy tenant's changes are
    /// gathered into passes). Without a watch, again after `IdleSeconds`.
    Idle(Option<Watch>),
    /// The slice ended with more to do: again as soon as the others had their turn.
    Busy,
    /// Another process holds the tenant: look again after `PollSeconds`.
    HeldElsewhere,
    /// A condition that passes (the cloud down, a suspension): again after this.
    Retry(Duration, String),
    /// Failed (why); retried with backoff, the others go on.
    Failed(String),
    /// No longer approved: recorded in its database, not mirrored any more.
    Withdrawn,
    /// The session ended (revoked, or the tenant withdrew): a new one with the next pass.
    Revoked,
}

/// One tenant in the schedule.
#[derive(Debug)]
struct Slot {
    due: Instant,
    running: bool,
    approved: bool,
    noted_withdrawn: bool,
    /// How long a failing tenant waits before its next pass.
    backoff: crate::retry::Backoff,
    ensured: bool,
    new_session: bool,
    /// The watch of an idle tenant (its number, to tell a finished watch from a newer one).
    watch: Option<(u64, tokio::task::AbortHandle)>,
    /// Watches started so far.
    watches: u64,
    /// A watch that sees records makes the tenant due at this time at the earliest.
    rest_until: Instant,
}

impl Slot {
    fn new(now: Instant) -> Self {
        Slot {
            due: now,
            running: false,
            approved: true,
            noted_withdrawn: false,
            backoff: crate::retry::Backoff::run(),
            ensured: false,
            new_session: false,
            watch: None,
            watches: 0,
            rest_until: now,
        }
    }

    fn wanted(&self) -> bool {
        self.approved || !self.noted_withdrawn
    }
}

/// One tenant's pass, as the schedule hands it to a worker.
#[derive(Debug)]
struct Turn {
    ctx: String,
    /// Still approving the app (else the pass records the withdrawal).
    approved: bool,
    /// Its database is known to exist.
    ensured: bool,
    /// Its session ended: the pass makes a new one.
    new_session: bool,
}

#[derive(Debug, Default)]
struct Schedule {
    slots: BTreeMap<String, Slot>,
}

impl Schedule {
    /// The tenant waiting longest whose pass is due, if any.
    fn next(&mut self, now: Instant) -> Option<Turn> {
        let (ctx, slot) = self
            .slots
            .iter_mut()
            .filter(|(_, s)| !s.running && s.wanted() && s.due <= now)
            .min_by_key(|(_, s)| s.due)?;
        slot.running = true;
        if let Some((_, watch)) = slot.watch.take() {
            watch.abort();
        }
        Some(Turn { ctx: ctx.clone(), approved: slot.approved, ensured: slot.ensured, new_session: slot.new_session })
    }

    fn earliest(&self) -> Option<Instant> {
        self.slots.values().filter(|s| !s.running && s.wanted()).map(|s| s.due).min()
    }

    /// Takes in the partner API's list: new tenants are due now, missing ones withdrawn.
    /// Returns the tenants that approve from now on.
    fn update(&mut self, approving: &[String], now: Instant) -> Vec<String> {
        let mut new = Vec::new();
        for ctx in approving {
            let slot = self.slots.entry(ctx.clone()).or_insert_with(|| {
                tracing::info!(tenant = %ctx, "a tenant approves the app: mirroring it");
                new.push(ctx.clone());
                Slot::new(now)
            });
            if !slot.approved {
                tracing::info!(tenant = %ctx, "the tenant approves the app again: mirroring it");
                new.push(ctx.clone());
                *slot = Slot { ensured: slot.ensured, new_session: true, ..Slot::new(now) };
            }
        }
        for (ctx, slot) in self.slots.iter_mut().filter(|(ctx, s)| s.approved && !approving.contains(ctx)) {
            tracing::warn!(tenant = %ctx, "the tenant withdrew its approval: no longer mirrored; its database is kept");
            slot.approved = false;
            slot.due = now;
        }
        new
    }

    /// A watch ended: the tenant is due (unless a newer pass or watch replaced that one).
    fn watched(&mut self, ctx: &str, number: u64, why: &Due) -> bool {
        let Some(slot) = self.slots.get_mut(ctx) else { return false };
        if slot.watch.as_ref().is_none_or(|(n, _)| *n != number) {
            return false;
        }
        slot.watch = None;
        slot.due = slot.rest_until.max(Instant::now());
        match why {
            Due::Records => tracing::debug!(tenant = %ctx, "records arrived: a pass is due"),
            Due::Token => tracing::debug!(tenant = %ctx, "the access token ends soon: a pass refreshes it"),
            Due::Failed(e) => tracing::debug!(tenant = %ctx, error = %e, "the watch failed: a pass looks why"),
            Due::Silent => tracing::debug!(tenant = %ctx, "the cloud did not answer the watch: a pass looks why"),
        }
        true
    }
}

/// The schedule and the condition its workers wait on, shared with the watches.
type Shared = Arc<(Mutex<Schedule>, Condvar)>;

/// A partner instance (see the module docs).
pub struct Partner {
    config: PartnerConfig,
    databases: Databases,
    api: PartnerApi,
    key: SecretKey,
    options: SyncOptions,
    sink: SinkOptions,
    host: String,
    watcher: Watcher,
    net: PassNet,
    board: Arc<Board>,
}

impl std::fmt::Debug for Partner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partner").field("config", &self.config).field("host", &self.host).finish_non_exhaustive()
    }
}

impl Partner {
    /// A partner instance: `options` and `sink` shape every tenant's `sync` and replica (the
    /// owner's controls apply to every tenant), `key` seals every tenant's tokens.
    pub fn new(
        config: PartnerConfig,
        key: SecretKey,
        options: SyncOptions,
        sink: SinkOptions,
    ) -> Result<Self, PartnerError> {
        let databases = Databases::new(&config.server, &config.database_name)?;
        let http = HttpClient::new(&config.cloud_url, config.trust.as_ref())?;
        let api = PartnerApi::new(http, &config.id, config.secret.expose())?;
        let watcher = Watcher::new(config.trust.clone())?;
        let net = PassNet::new(config.trust.clone())?;
        let host = crate::state::fence::this_process();
        let board = Arc::new(Board::new(&host));
        Ok(Partner { config, databases, api, key, options, sink, host, watcher, net, board })
    }

    /// This process's name in the tenants' pass records (`host/pid`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// What this process knows of its tenants while it runs (for `/metrics`, `/healthz`
    /// and the status page).
    pub fn board(&self) -> Arc<Board> {
        self.board.clone()
    }

    /// The tenants' databases.
    pub fn databases(&self) -> &Databases {
        &self.databases
    }

    /// Mirrors every approving tenant until `stop` is set; returns early only when the
    /// partner itself is refused (wrong credentials), which a person must fix.
    pub fn run(&self, stop: Arc<AtomicBool>) -> Result<(), PartnerError> {
        let shared: Shared = Arc::new((Mutex::new(Schedule::default()), Condvar::new()));
        let fatal = std::thread::scope(|scope| {
            for worker in 0..self.config.workers.max(1) {
                let (shared, stop) = (shared.clone(), stop.clone());
                std::thread::Builder::new()
                    .name(format!("partner-{worker}"))
                    .spawn_scoped(scope, move || self.work(&shared, &stop))
                    .expect("spawning a worker thread");
            }
            let fatal = self.list_tenants(&shared, &stop);
            stop.store(true, Ordering::Relaxed);
            shared.1.notify_all();
            fatal
        });
        match fatal {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Reads the tenant list every `PollSeconds` until stopped; a refusal of the partner
    /// itself ends the run.
    fn list_tenants(&self, (schedule, wake): &(Mutex<Schedule>, Condvar), stop: &AtomicBool) -> Option<PartnerError> {
        let mut backoff = crate::retry::Backoff::run();
        while !stop.load(Ordering::Relaxed) {
            let wait = match self.api.tenants() {
                Ok(tenants) => {
                    for ctx in lock(schedule).update(&tenants, Instant::now()) {
                        self.board.approved(&ctx);
                    }
                    wake.notify_all();
                    backoff.reset();
                    self.config.poll
                }
                Err(e) if matches!(e.code(), Some(ErrorCode::InvalidClient)) => {
                    tracing::error!(error = %e, "the Dispatcher refuses the partner: check Partner.Id and Partner.Secret");
                    return Some(PartnerError::Api(Box::new(e)));
                }
                Err(e) => {
                    let wait = backoff.delay(e.retry_after());
                    tracing::warn!(error = %e, "cannot read the partner's tenants; the known ones go on, the list is read again in {wait:?}");
                    wait
                }
            };
            crate::retry::sleep(wait, stop);
        }
        None
    }

    /// A worker: runs the due passes until stopped.
    fn work(&self, shared: &Shared, stop: &Arc<AtomicBool>) {
        let (schedule, wake) = &**shared;
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let mut guard = lock(schedule);
            let Some(turn) = guard.next(now) else {
                let until =
                    guard.earliest().map_or(Duration::from_millis(500), |due| due.saturating_duration_since(now));
                let _ = wake.wait_timeout(guard, until.min(Duration::from_millis(500)));
                continue;
            };
            drop(guard);
            let span = tracing::info_span!("tenant", tenant = %turn.ctx);
            let metrics = Arc::new(crate::metrics::Metrics::sharing(&turn.ctx, self.board.history_feed()));
            let started = Instant::now();
            let outcome = span.in_scope(|| self.pass(&turn, &metrics, stop));
            let took = started.elapsed();
            let mut report = report(&outcome, &metrics);
            let mut guard = lock(schedule);
            let idle = self.config.idle;
            if let Some(slot) = guard.slots.get_mut(&turn.ctx) {
                slot.running = false;
                slot.ensured |= !matches!(outcome, Outcome::HeldElsewhere | Outcome::Failed(_));
                slot.new_session = matches!(outcome, Outcome::Revoked);
                if !matches!(outcome, Outcome::Failed(_)) {
                    slot.backoff.reset();
                }
                let delay = match outcome {
                    Outcome::Idle(Some(watch)) => match self.start_watch(shared, &turn.ctx, slot, watch) {
                        Ok(()) => IDLE_FALLBACK,
                        Err(e) => {
                            tracing::warn!(tenant = %turn.ctx, error = %e, "cannot watch the tenant; it is polled instead");
                            report.state = TenantState::Polled;
                            idle
                        }
                    },
                    Outcome::Idle(None) => idle,
                    Outcome::Busy => Duration::ZERO,
                    Outcome::HeldElsewhere => self.config.poll.min(Duration::from_secs(5)),
                    Outcome::Retry(after, _) => after,
                    Outcome::Revoked => Duration::from_secs(1),
                    Outcome::Failed(_) => slot.backoff.delay(None),
                    Outcome::Withdrawn => {
                        slot.noted_withdrawn = true;
                        Duration::ZERO
                    }
                };
                slot.due = Instant::now() + delay;
            }
            drop(guard);
            // The one line per pass, at Debug, with the state the board records (a watch that
            // could not start makes it `polled`): Information has only what changed.
            tracing::debug!(
                tenant = %turn.ctx,
                state = report.state.as_str(),
                records = report.records,
                ms = took.as_millis() as u64,
                "pass ended"
            );
            self.board.pass_ended(&turn.ctx, report);
            wake.notify_all();
        }
    }

    /// Watches an idle tenant: when records arrive, it is due (after `IdleSeconds` from now
    /// at the earliest).
    fn start_watch(&self, shared: &Shared, ctx: &str, slot: &mut Slot, watch: Watch) -> Result<(), SourceError> {
        slot.watches += 1;
        slot.rest_until = Instant::now() + self.config.idle;
        let (number, owner, tenant) = (slot.watches, shared.clone(), ctx.to_owned());
        let handle = self.watcher.watch(watch, move |why| {
            if lock(&owner.0).watched(&tenant, number, &why) {
                owner.1.notify_all();
            }
        })?;
        slot.watch = Some((number, handle));
        Ok(())
    }

    /// One tenant's turn: claim, database, session, `sync` for at most a slice.
    fn pass(&self, turn: &Turn, metrics: &Arc<crate::metrics::Metrics>, stop: &Arc<AtomicBool>) -> Outcome {
        let claim = match self.databases.try_claim(&turn.ctx) {
            Ok(Some(claim)) => claim,
            Ok(None) => return Outcome::HeldElsewhere,
            Err(e) => return Outcome::Failed(format!("cannot claim the tenant: {e}")),
        };
        let result = self.claimed_pass(turn, metrics, stop);
        drop(claim);
        match result {
            Ok(outcome) => outcome,
            Err(PartnerError::Server(e @ SinkError::Superseded { .. })) => {
                tracing::debug!(error = %e, "another process took the tenant over; this pass ended");
                Outcome::HeldElsewhere
            }
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }

    fn claimed_pass(
        &self,
        turn: &Turn,
        metrics: &Arc<crate::metrics::Metrics>,
        stop: &Arc<AtomicBool>,
    ) -> Result<Outcome, PartnerError> {
        let Turn { ctx, approved, ensured, new_session } = turn;
        let ctx = ctx.as_str();
        if !ensured && self.databases.ensure(ctx)? {
            tracing::info!(database = %self.databases.name(ctx)?, "created the tenant's database");
        }
        let connection = self.databases.connection_string(ctx)?;
        let mut state = crate::sink::open(&connection, self.sink.clone())?;
        // The claim above can be lost unnoticed (a database restart ends its session): every
        // write of this pass proves this epoch instead, in its own transaction.
        let fence = state.claim_writer(&self.host)?;
        if !*approved {
            passes::withdrawn(state.as_mut())?;
            return Ok(Outcome::Withdrawn);
        }
        let session = state.read_facts()?;
        // A session whose tokens cannot be opened is of no use: a new one replaces it.
        let stored = SessionInfo::from_facts(&session)
            .filter(|_| !*new_session)
            .and_then(|info| Some((info, stored_tokens(&session, &self.key).ok()?)));
        let (info, tokens) = match stored {
            Some(stored) => stored,
            None => self.new_session(ctx, state.as_mut())?,
        };
        passes::start(state.as_mut(), &self.host, now_ms())?;
        let replication = self.net.session(info, tokens)?;
        let options = SyncOptions {
            until_idle: true,
            run_for: Some(self.config.slice),
            fetch: crate::pipeline::FetchLimits { max_wait: Duration::from_millis(100), ..self.options.fetch },
            auto_resync: self.config.auto_resync,
            metrics: metrics.clone(),
            routine_at_debug: true,
            ..self.options.clone()
        };
        let started = Instant::now();
        let mut data = crate::sink::open(&connection, self.sink.clone())?;
        data.hold_fence(fence);
        let result = sync(replication, data, state.as_mut(), &self.key, &options, stop.clone());
        passes::end(state.as_mut(), &self.host, now_ms())?;
        Ok(match result {
            Ok(_) => {
                if started.elapsed() >= self.config.slice {
                    Outcome::Busy
                } else {
                    Outcome::Idle(self.watch_of(state.as_mut()))
                }
            }
            Err(e) => self.judge(ctx, e, state.as_mut()),
        })
    }

    /// What a watch of the tenant needs, as its pass left the replica (tokens rotated by
    /// the pass included); `None` when something is missing (a pass then polls).
    fn watch_of(&self, state: &mut dyn Replica) -> Option<Watch> {
        let facts = state.read_facts().ok()?;
        let info = SessionInfo::from_facts(&facts)?;
        let tokens = stored_tokens(&facts, &self.key).ok()?;
        let checkpoint = state.checkpoint().ok()?;
        let request = crate::pipeline::watch_request(&info, &checkpoint, super::watch::WAIT);
        Some(Watch { info, access: tokens.access, expires_at_ms: tokens.expires_at_ms, request })
    }

    /// What a failed pass means for the tenant (and only for it).
    fn judge(&self, ctx: &str, e: PipelineError, state: &mut dyn Replica) -> Outcome {
        if let Action::Superseded { .. } = e.action() {
            tracing::debug!(tenant = ctx, error = %e, "another process took the tenant over; this pass ended");
            return Outcome::HeldElsewhere;
        }
        let revoked = matches!(&e, PipelineError::Source(s) if crate::policy::session_ended(s));
        if revoked {
            tracing::warn!(tenant = ctx, error = %e, "the tenant's session ended; a new one is made if the tenant still approves");
            return Outcome::Revoked;
        }
        facts::record_error(state, &e.to_string());
        match e.action() {
            Action::Retry { after, waiting_for } => Outcome::Retry(
                after.unwrap_or(Duration::from_secs(5)).min(Duration::from_secs(300)),
                format!("waiting for {waiting_for}: {e}"),
            ),
            _ => Outcome::Failed(e.to_string()),
        }
    }

    /// A session for `ctx` through the partner API, stored in its database like `provision`
    /// stores one (facts, trust, sealed tokens), all in one transaction.
    fn new_session(&self, ctx: &str, state: &mut dyn Replica) -> Result<(SessionInfo, TokenPair), PartnerError> {
        let grant = match self.api.create_session(ctx, &self.config.session_name) {
            Err(e) if matches!(e.code(), Some(ErrorCode::SessionExists)) => {
                // A live session of that name exists (its database was lost or replaced):
                // this replica gets its own.
                let suffix: [u8; 3] = crate::secrets::random_bytes();
                let name: String = format!(
                    "{}-{}",
                    self.config.session_name,
                    suffix.iter().map(|b| format!("{b:02x}")).collect::<String>()
                );
                self.api.create_session(ctx, &name)?
            }
            other => other?,
        };
        let reply = grant.session.as_ref().ok_or_else(|| SourceError::BadReply {
            url: self.api.base().to_owned(),
            reason: "the partner session has no session".into(),
        })?;
        let info = SessionInfo::from_reply(reply, self.api.base());
        let mut facts = info.to_facts();
        facts.extend(self.config.trust.as_ref().and_then(crate::source::tls::Trust::fact));
        // One transaction: a crash never leaves a session without its tokens.
        let tokens = TokenPair::issued(grant.tokens, now_ms());
        facts.extend(token_facts(&self.key, &tokens));
        state.write_facts(&facts)?;
        tracing::info!(replication_id = %info.replication_id, "created the tenant's session");
        Ok((info, tokens))
    }
}

/// What the board records of a pass that ended with `outcome`.
fn report(outcome: &Outcome, metrics: &crate::metrics::Metrics) -> PassReport {
    let (records, refused) = metrics.applied_and_refused();
    let (state, problem) = match outcome {
        Outcome::Idle(Some(_)) => (TenantState::Watching, None),
        Outcome::Idle(None) => (TenantState::Polled, None),
        Outcome::Busy => (TenantState::Busy, None),
        Outcome::HeldElsewhere => (TenantState::HeldElsewhere, None),
        Outcome::Retry(_, why) => (TenantState::Waiting, Some(why.clone())),
        Outcome::Failed(why) => (TenantState::Failing, Some(why.clone())),
        Outcome::Withdrawn => (TenantState::Withdrawn, None),
        Outcome::Revoked => (TenantState::Waiting, Some("the session ended; a new one is made".to_owned())),
    };
    let lag_seconds = if matches!(outcome, Outcome::Idle(_)) { Some(0.0) } else { metrics.lag_seconds() };
    PassReport { state, records, refused, lag_seconds, problem }
}

fn lock(schedule: &Mutex<Schedule>) -> MutexGuard<'_, Schedule> {
    schedule.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
