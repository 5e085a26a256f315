//! What a partner instance knows about its tenants while it runs: the state of each, its
//! last pass, lag and problem. `/metrics`, `/healthz` and the status page read it, and it
//! logs what *changed* (a tenant failing, recovered, taken over), so a service with
//! thousands of tenants writes a line per event, not per pass.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;

use crate::clock::now_ms;
use crate::metrics::{Chart, Exposition, Health, History, escape};

/// A tenant's state, problems first (the order the page and `/healthz` list them in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantState {
    /// Its passes fail; retried with backoff.
    Failing,
    /// Waiting for something that passes (a suspension, the cloud down, a new session).
    Waiting,
    /// Approved, not mirrored by this process yet.
    New,
    /// More to do than one slice: passes follow each other.
    Busy,
    /// Another process mirrors it.
    HeldElsewhere,
    /// Caught up; a long-poll watches for its next change.
    Watching,
    /// Caught up; passes look again every `IdleSeconds` (no watch could be set up).
    Polled,
    /// Withdrew its approval; its database is kept.
    Withdrawn,
}

impl TenantState {
    /// Every state, in order.
    pub const ALL: [TenantState; 8] = [
        TenantState::Failing,
        TenantState::Waiting,
        TenantState::New,
        TenantState::Busy,
        TenantState::HeldElsewhere,
        TenantState::Watching,
        TenantState::Polled,
        TenantState::Withdrawn,
    ];

    /// The name in metrics, JSON and the page.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantState::Failing => "failing",
            TenantState::Waiting => "waiting",
            TenantState::New => "new",
            TenantState::Busy => "busy",
            TenantState::HeldElsewhere => "held_elsewhere",
            TenantState::Watching => "watching",
            TenantState::Polled => "polled",
            TenantState::Withdrawn => "withdrawn",
        }
    }
}

/// One tenant as this process sees it.
#[derive(Debug, Clone, Serialize)]
pub struct TenantView {
    /// The tenant's context id.
    pub tenant: String,
    /// Its state.
    pub state: TenantState,
    /// Seconds its replica is behind the source after the last pass (0 when caught up).
    pub lag_seconds: Option<f64>,
    /// When this process's last pass of it ended (ms since the epoch).
    pub last_pass_ms: Option<i64>,
    /// Passes by this process.
    pub passes: u64,
    /// Change records this process applied to its replica.
    pub records: u64,
    /// Changes its replica refused (kept in its `_ReplicationErrors`).
    pub refused: u64,
    /// Since when it has been failing or waiting (ms since the epoch).
    pub since_ms: Option<i64>,
    /// What is wrong, while it is.
    pub problem: Option<String>,
}

/// How a pass ended, as the board records it.
#[derive(Debug, Clone)]
pub struct PassReport {
    /// The tenant's state after it.
    pub state: TenantState,
    /// Records it applied.
    pub records: u64,
    /// Changes the replica refused, as the pass left them.
    pub refused: u64,
    /// The lag it left.
    pub lag_seconds: Option<f64>,
    /// What went wrong, if anything.
    pub problem: Option<String>,
}

/// The tenants of this process (see the module docs).
#[derive(Debug)]
pub struct Board {
    host: String,
    started_ms: i64,
    tenants: Mutex<BTreeMap<String, TenantView>>,
    /// Records applied and the worst lag per minute, over every tenant's passes.
    history: Arc<History>,
}

impl Board {
    /// An empty board for the process `host`.
    pub fn new(host: &str) -> Self {
        Board { host: host.to_owned(), started_ms: now_ms(), tenants: Mutex::default(), history: Arc::default() }
    }

    /// The instance's last hour, for each pass's metrics to feed
    /// ([`crate::metrics::Metrics::sharing`]); [`Exposition::history`] reads it.
    pub fn history_feed(&self) -> Arc<History> {
        self.history.clone()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, TenantView>> {
        self.tenants.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// This process (`host/pid`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// A tenant approves the app (again).
    pub fn approved(&self, ctx: &str) {
        self.lock().insert(
            ctx.to_owned(),
            TenantView {
                tenant: ctx.to_owned(),
                state: TenantState::New,
                lag_seconds: None,
                last_pass_ms: None,
                passes: 0,
                records: 0,
                refused: 0,
                since_ms: None,
                problem: None,
            },
        );
    }

    /// A pass of `ctx` ended; logs the change of state, if it is one.
    pub fn pass_ended(&self, ctx: &str, report: PassReport) {
        let mut tenants = self.lock();
        let Some(view) = tenants.get_mut(ctx) else { return };
        let before = view.state;
        let troubled = |s: TenantState| matches!(s, TenantState::Failing | TenantState::Waiting);
        log_change(ctx, before, &report);
        if !troubled(report.state) || !troubled(before) {
            view.since_ms = troubled(report.state).then(now_ms);
        }
        view.state = report.state;
        view.records += report.records;
        view.refused = report.refused;
        view.lag_seconds = report.lag_seconds.or(view.lag_seconds);
        view.problem = report.problem;
        view.passes += 1;
        view.last_pass_ms = Some(now_ms());
    }

    /// Every tenant, problems first, then the largest lag.
    pub fn views(&self) -> Vec<TenantView> {
        let mut views: Vec<TenantView> = self.lock().values().cloned().collect();
        views.sort_by(|a, b| {
            let lag = |v: &TenantView| v.lag_seconds.unwrap_or(0.0);
            a.state.cmp(&b.state).then(lag(b).total_cmp(&lag(a))).then(a.tenant.cmp(&b.tenant))
        });
        views
    }

    /// How many tenants are in each state.
    pub fn counts(&self) -> BTreeMap<TenantState, usize> {
        let mut counts: BTreeMap<TenantState, usize> = TenantState::ALL.iter().map(|s| (*s, 0)).collect();
        for view in self.lock().values() {
            *counts.entry(view.state).or_default() += 1;
        }
        counts
    }
}

fn log_change(ctx: &str, before: TenantState, report: &PassReport) {
    let problem = report.problem.as_deref().unwrap_or("");
    match (before, report.state) {
        (a, b) if a == b => tracing::debug!(tenant = %ctx, state = b.as_str(), records = report.records, "pass ended"),
        // Found held at the start: nothing changed hands.
        (TenantState::New, TenantState::HeldElsewhere) => {
            tracing::debug!(tenant = %ctx, "another process mirrors the tenant")
        }
        (_, TenantState::Failing) => {
            tracing::error!(tenant = %ctx, "the tenant's replication fails: {problem}; retried with backoff while the others go on")
        }
        (_, TenantState::Waiting) => tracing::warn!(tenant = %ctx, "the tenant waits: {problem}"),
        (TenantState::Failing | TenantState::Waiting, _) => {
            tracing::info!(tenant = %ctx, state = report.state.as_str(), "the tenant recovered")
        }
        (_, TenantState::HeldElsewhere) => {
            tracing::info!(tenant = %ctx, "another process mirrors the tenant now")
        }
        (TenantState::HeldElsewhere, _) => tracing::info!(tenant = %ctx, "this process mirrors the tenant now"),
        (_, b) => tracing::debug!(tenant = %ctx, state = b.as_str(), "the tenant's state changed"),
    }
}

impl Exposition for Board {
    /// Instance totals, tenants per state, and two bounded per-tenant series (lag and
    /// refused changes): one series per tenant, never one per pass or per error.
    fn render(&self) -> String {
        let views = self.views();
        let mut out = String::with_capacity(256 + views.len() * 160);
        let mut head = |name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head("dbmirror_partner_tenants", "gauge", "Tenants of this process by state.");
        for (state, n) in self.counts() {
            let _ = writeln!(out, "dbmirror_partner_tenants{{state=\"{}\"}} {n}", state.as_str());
        }
        let (passes, records) = views.iter().fold((0, 0), |(p, r), v| (p + v.passes, r + v.records));
        let mut total = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        total("dbmirror_partner_passes_total", "counter", "Tenant passes run by this process.", passes.to_string());
        total(
            "dbmirror_records_applied_total",
            "counter",
            "Change records applied to the tenants' replicas.",
            records.to_string(),
        );
        total(
            "dbmirror_process_start_time_seconds",
            "gauge",
            "When this process started (Unix time).",
            format!("{:.3}", self.started_ms as f64 / 1000.0),
        );
        let _ = writeln!(
            out,
            "# HELP dbmirror_lag_seconds Seconds a tenant's replica was behind the source after its last pass.\n\
             # TYPE dbmirror_lag_seconds gauge"
        );
        for v in views.iter().filter(|v| v.lag_seconds.is_some()) {
            let lag = v.lag_seconds.unwrap_or(0.0);
            let _ = writeln!(out, "dbmirror_lag_seconds{{tenant=\"{}\"}} {lag:.3}", escape(&v.tenant));
        }
        let _ = writeln!(
            out,
            "# HELP dbmirror_refused_changes Changes a tenant's replica refused, kept in its _ReplicationErrors.\n\
             # TYPE dbmirror_refused_changes gauge"
        );
        for v in views.iter().filter(|v| v.refused > 0) {
            let _ = writeln!(out, "dbmirror_refused_changes{{tenant=\"{}\"}} {}", escape(&v.tenant), v.refused);
        }
        out
    }

    /// Unhealthy when a tenant has been failing for longer than `window`: says how many,
    /// and names the first (longest failing) with its problem.
    fn health(&self, window: Duration) -> Health {
        let cutoff = now_ms() - i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let mut failing: Vec<TenantView> = self
            .views()
            .into_iter()
            .filter(|v| v.state == TenantState::Failing && v.since_ms.is_some_and(|s| s <= cutoff))
            .collect();
        failing.sort_by_key(|v| v.since_ms);
        let Some(first) = failing.first() else { return Health::Healthy };
        Health::Unhealthy(format!(
            "{} tenant(s) failing for more than {} s; the first, {}, for {} s: {}",
            failing.len(),
            window.as_secs(),
            first.tenant,
            (now_ms() - first.since_ms.unwrap_or_default()) / 1000,
            first.problem.as_deref().unwrap_or("no reason recorded"),
        ))
    }

    fn history(&self) -> Chart {
        self.history.last_hour(now_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(state: TenantState, problem: Option<&str>) -> PassReport {
        PassReport { state, records: 3, refused: 0, lag_seconds: Some(0.5), problem: problem.map(str::to_owned) }
    }

    #[test]
    fn problems_come_first_and_health_names_the_longest_failing() {
        let board = Board::new("h/1");
        for ctx in ["a", "b", "c"] {
            board.approved(ctx);
        }
        board.pass_ended("a", report(TenantState::Watching, None));
        board.pass_ended("c", report(TenantState::Failing, Some("the replica is full")));
        std::thread::sleep(Duration::from_millis(3));
        board.pass_ended("b", report(TenantState::Failing, Some("later")));
        let order: Vec<String> = board.views().into_iter().map(|v| v.tenant).collect();
        assert_eq!(order, ["b", "c", "a"]);
        assert_eq!(board.health(Duration::from_secs(60)), Health::Healthy);
        let Health::Unhealthy(reason) = board.health(Duration::ZERO) else { panic!("failing tenants are unhealthy") };
        assert!(reason.starts_with("2 tenant(s) failing"), "{reason}");
        assert!(reason.contains(", c, ") && reason.contains("the replica is full"), "{reason}");
        board.pass_ended("c", report(TenantState::Watching, None));
        board.pass_ended("b", report(TenantState::Watching, None));
        assert_eq!(board.health(Duration::ZERO), Health::Healthy);
        let text = board.render();
        assert!(text.contains("dbmirror_partner_tenants{state=\"watching\"} 3"), "{text}");
        assert!(text.contains("dbmirror_records_applied_total 15"), "{text}");
        assert!(text.contains("dbmirror_lag_seconds{tenant=\"a\"} 0.500"), "{text}");
    }

    #[test]
    fn a_tenant_failing_again_keeps_its_first_failure_time() {
        let board = Board::new("h/1");
        board.approved("a");
        board.pass_ended("a", report(TenantState::Failing, Some("x")));
        let since = board.views()[0].since_ms;
        std::thread::sleep(Duration::from_millis(5));
        board.pass_ended("a", report(TenantState::Failing, Some("y")));
        assert_eq!(board.views()[0].since_ms, since);
        assert_eq!(board.views()[0].problem.as_deref(), Some("y"));
    }
}
