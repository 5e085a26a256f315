//! What a monitoring system scrapes from a running `sync`: counters, gauges and histograms
//! the pipeline updates as it goes, rendered in the Prometheus text format, and the health
//! verdict behind `/healthz` (see [`serve`]).
//!
//! Updates happen per batch, fetch or cycle, never per record, so one mutex is cheap enough
//! and keeps every scrape consistent. Names follow the Prometheus conventions: a `dbmirror_`
//! prefix, the unit in the name (`_seconds`, `_bytes`), `_total` on counters.

pub mod history;
pub mod serve;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use self::history::{Chart, History};
use crate::clock::now_ms;

/// Upper bounds (seconds) of the batch apply-time buckets.
const APPLY_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Upper bounds (seconds) of the change-latency buckets.
const LATENCY_BUCKETS: &[f64] =
    &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

/// A cumulative histogram with fixed buckets.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram { bounds, counts: vec![0; bounds.len()], sum: 0.0, count: 0 }
    }

    fn observe(&mut self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.counts[i] += 1;
        }
        self.sum += value;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str, labels: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, n) in self.bounds.iter().zip(&self.counts) {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {}", self.count);
        let braces = if labels.is_empty() { String::new() } else { format!("{{{}}}", labels.trim_end_matches(',')) };
        let _ = writeln!(out, "{name}_sum{braces} {}\n{name}_count{braces} {}", self.sum, self.count);
    }
}

#[derive(Debug)]
struct Inner {
    rows: BTreeMap<(String, &'static str), u64>,
    records: u64,
    batches: u64,
    apply_seconds: Histogram,
    change_latency: Histogram,
    fetch_errors: BTreeMap<String, u64>,
    retries: BTreeMap<&'static str, u64>,
    token_refreshes: u64,
    resyncs_running: u64,
    failed_tables: u64,
    refused_changes: u64,
    last_commit_ms: Option<i64>,
    lag_records: Option<i64>,
    newest_source_ms: Option<i64>,
    caught_up: bool,
    healthy_ms: Option<i64>,
    problem: Option<String>,
}

/// The metrics of one running pipeline (one tenant).
#[derive(Debug)]
pub struct Metrics {
    inner: Mutex<Inner>,
    /// A `tenant="…"` label on every series (partner mode runs many pipelines in one process).
    tenant: String,
    started_ms: i64,
    /// The last hour for the pages' charts; a partner instance's tenants share one.
    history: Arc<History>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new("")
    }
}

/// Whether the service is healthy, and if not why (what `/healthz` answers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The last cycle succeeded within the window.
    Healthy,
    /// It did not; the reason says what happened instead.
    Unhealthy(String),
}

/// What a metrics listener serves as `/metrics` and `/healthz`: one pipeline's
/// [`Metrics`], or a partner instance's tenants (`partner::board`).
pub trait Exposition: Send + Sync {
    /// The Prometheus text exposition.
    fn render(&self) -> String;
    /// Healthy, or why not, given how long a problem may last (`Metrics.HealthWindowSeconds`).
    fn health(&self, window: Duration) -> Health;
    /// Records applied and the lag per minute over the last hour (`/history.json`).
    fn history(&self) -> Chart;
}

impl Exposition for Metrics {
    fn render(&self) -> String {
        Metrics::render(self)
    }

    fn health(&self, window: Duration) -> Health {
        Metrics::health(self, window)
    }

    fn history(&self) -> Chart {
        self.history.last_hour(now_ms())
    }
}

impl Metrics {
    /// Metrics for `tenant`.
    pub fn new(tenant: &str) -> Self {
        Metrics::sharing(tenant, Arc::default())
    }

    /// Metrics for `tenant` whose batches and lag also go to `history` (a partner instance's
    /// one chart for all its tenants).
    pub fn sharing(tenant: &str, history: Arc<History>) -> Self {
        Metrics {
            inner: Mutex::new(Inner {
                rows: BTreeMap::new(),
                records: 0,
                batches: 0,
                apply_seconds: Histogram::new(APPLY_BUCKETS),
                change_latency: Histogram::new(LATENCY_BUCKETS),
                fetch_errors: BTreeMap::new(),
                retries: BTreeMap::new(),
                token_refreshes: 0,
                resyncs_running: 0,
                failed_tables: 0,
                refused_changes: 0,
                last_commit_ms: None,
                lag_records: None,
                newest_source_ms: None,
                caught_up: false,
                healthy_ms: None,
                problem: None,
            }),
            tenant: tenant.to_owned(),
            started_ms: now_ms(),
            history,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A committed batch: its rows per table and operation, its records, how long the replica
    /// took, and the source commit time of its oldest and newest change.
    pub fn batch_committed(&self, batch: &BatchReport<'_>) {
        let mut m = self.lock();
        for (table, upserts, deletes) in batch.tables {
            *m.rows.entry((table.clone(), "upsert")).or_default() += upserts;
            *m.rows.entry((table.clone(), "delete")).or_default() += deletes;
        }
        m.records += batch.records;
        m.batches += u64::from(batch.records > 0);
        m.apply_seconds.observe(batch.apply.as_secs_f64());
        let committed = batch.committed_ms;
        m.last_commit_ms = Some(m.last_commit_ms.map_or(committed, |t| t.max(committed)));
        self.history.records(batch.records, committed);
        if batch.records > 0
            && let Some((oldest, newest)) = batch.source_ms
        {
            let latency_ms = (committed - oldest).max(0);
            m.change_latency.observe(latency_ms as f64 / 1000.0);
            // The chart's lag: how far behind the source the replica was this minute, at worst.
            self.history.lag(latency_ms as f64 / 1000.0, committed);
            // Per batch, for exact percentiles (perf/steady.sh reads these with
            // `RUST_LOG=info,dbmirror::latency=debug`); the histogram only bounds them.
            tracing::debug!(target: "dbmirror::latency", tenant = %self.tenant, records = batch.records, latency_ms, "batch committed");
            m.newest_source_ms = Some(m.newest_source_ms.map_or(newest, |n| n.max(newest)));
        }
    }

    /// A fetch failed with `code` (the cloud's error code, or `network`).
    pub fn fetch_failed(&self, code: &str) {
        *self.lock().fetch_errors.entry(code.to_owned()).or_default() += 1;
    }

    /// Something is retried after a wait: `cloud`, `replica` or `token_store`.
    pub fn retried(&self, what: &'static str) {
        *self.lock().retries.entry(what).or_default() += 1;
    }

    /// The tokens were rotated and stored.
    pub fn tokens_refreshed(&self) {
        self.lock().token_refreshes += 1;
    }

    /// Resyncs under way and tables left out as failed, after a cycle.
    pub fn tables(&self, resyncs_running: usize, failed: usize) {
        let mut m = self.lock();
        m.resyncs_running = resyncs_running as u64;
        m.failed_tables = failed as u64;
    }

    /// Changes the replica refused, kept in `_ReplicationErrors`.
    pub fn refused_changes(&self, count: usize) {
        self.lock().refused_changes = count as u64;
    }

    /// Records between what the replica applied and the cloud's ends (`caught_up`: a fetch
    /// just found nothing newer, so the replica is current whatever the last count said).
    pub fn lag(&self, records: Option<i64>, caught_up: bool) {
        let mut m = self.lock();
        if caught_up {
            m.lag_records = Some(0);
        } else if records.is_some() {
            m.lag_records = records;
        }
        m.caught_up = caught_up || records == Some(0);
        if m.caught_up {
            self.history.lag(0.0, now_ms());
        }
    }

    /// A cycle (fetch and apply) completed: the service is healthy. Returns whether a problem
    /// was reported since the last such cycle (it has passed now).
    pub fn cycle_succeeded(&self) -> bool {
        let mut m = self.lock();
        m.healthy_ms = Some(now_ms());
        m.problem.take().is_some()
    }

    /// Source commit time (ms) of the newest change applied in this run.
    pub fn newest_source_ms(&self) -> Option<i64> {
        self.lock().newest_source_ms
    }

    /// What the service is waiting on (shown by `/healthz` once the window has passed).
    pub fn problem(&self, reason: &str) {
        self.lock().problem = Some(reason.to_owned());
    }

    /// Records applied and changes refused so far (what a partner's pass reports).
    pub fn applied_and_refused(&self) -> (u64, u64) {
        let m = self.lock();
        (m.records, m.refused_changes)
    }

    /// The lag now: records behind (as last counted) and seconds (see [`Metrics::lag_seconds`]).
    pub fn lag_now(&self) -> (Option<i64>, Option<f64>) {
        let records = self.lock().lag_records;
        (records, self.lag_seconds())
    }

    /// Lag in seconds: zero when current, else the age of the newest applied change.
    pub fn lag_seconds(&self) -> Option<f64> {
        let m = self.lock();
        if m.caught_up {
            return Some(0.0);
        }
        m.newest_source_ms.map(|t| ((now_ms() - t).max(0) as f64) / 1000.0)
    }

    /// Healthy when the last cycle succeeded within `window` (a new run has `window` to
    /// complete its first one).
    pub fn health(&self, window: Duration) -> Health {
        let m = self.lock();
        if m.refused_changes > 0 {
            // Replication goes on, but the replica is missing changes until the owner acts.
            return Health::Unhealthy(format!(
                "{} change(s) refused by the replica wait in _ReplicationErrors: `dbmirror errors` lists them; \
                 fix the cause, then `dbmirror retry-errors`",
                m.refused_changes
            ));
        }
        let since = m.healthy_ms.unwrap_or(self.started_ms);
        let age_ms = now_ms() - since;
        if age_ms < window.as_millis() as i64 {
            return Health::Healthy;
        }
        let what = m.problem.clone().unwrap_or_else(|| "no cycle completed".to_owned());
        Health::Unhealthy(format!("no successful cycle for {} s: {what}", age_ms / 1000))
    }

    /// The Prometheus text exposition of everything above.
    pub fn render(&self) -> String {
        let lag_seconds = self.lag_seconds();
        let m = self.lock();
        let t = if self.tenant.is_empty() { String::new() } else { format!("tenant=\"{}\",", escape(&self.tenant)) };
        let braces = if t.is_empty() { String::new() } else { format!("{{{}}}", t.trim_end_matches(',')) };
        let mut out = String::with_capacity(4096);
        let mut one = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{braces} {value}");
        };
        one(
            "dbmirror_records_applied_total",
            "counter",
            "Change records applied to the replica.",
            m.records.to_string(),
        );
        one("dbmirror_batches_total", "counter", "Replica transactions committed with data.", m.batches.to_string());
        one(
            "dbmirror_token_refreshes_total",
            "counter",
            "Token pairs rotated and stored.",
            m.token_refreshes.to_string(),
        );
        one(
            "dbmirror_resyncs_running",
            "gauge",
            "Tables being reloaded through a shadow table.",
            m.resyncs_running.to_string(),
        );
        one(
            "dbmirror_tables_failed",
            "gauge",
            "Tables the replica cannot hold, left out.",
            m.failed_tables.to_string(),
        );
        one(
            "dbmirror_refused_changes",
            "gauge",
            "Changes the replica refused, kept in _ReplicationErrors.",
            m.refused_changes.to_string(),
        );
        let opt = |v: Option<String>| v.unwrap_or_else(|| "NaN".to_owned());
        one(
            "dbmirror_last_commit_timestamp_seconds",
            "gauge",
            "When the replica last committed a batch (Unix time).",
            opt(m.last_commit_ms.map(|ms| format!("{:.3}", ms as f64 / 1000.0))),
        );
        one(
            "dbmirror_lag_records",
            "gauge",
            "Records the cloud has that the replica has not applied.",
            opt(m.lag_records.map(|n| n.to_string())),
        );
        one(
            "dbmirror_lag_seconds",
            "gauge",
            "0 when current, else the age of the newest applied change.",
            opt(lag_seconds.map(|s| format!("{s:.3}"))),
        );
        one(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory of the process.",
            opt(resident_bytes().map(|b| b.to_string())),
        );
        let _ = writeln!(
            out,
            "# HELP dbmirror_rows_written_total Rows written to replica tables after coalescing, by operation.\n# TYPE dbmirror_rows_written_total counter"
        );
        for ((table, op), n) in &m.rows {
            let _ =
                writeln!(out, "dbmirror_rows_written_total{{{t}table=\"{}\",operation=\"{op}\"}} {n}", escape(table));
        }
        let _ = writeln!(
            out,
            "# HELP dbmirror_fetch_errors_total Failed fetches by the cloud's error code.\n# TYPE dbmirror_fetch_errors_total counter"
        );
        for (code, n) in &m.fetch_errors {
            let _ = writeln!(out, "dbmirror_fetch_errors_total{{{t}code=\"{}\"}} {n}", escape(code));
        }
        let _ = writeln!(
            out,
            "# HELP dbmirror_retries_total Waits before retrying, by what was waited for.\n# TYPE dbmirror_retries_total counter"
        );
        for (what, n) in &m.retries {
            let _ = writeln!(out, "dbmirror_retries_total{{{t}waiting_for=\"{what}\"}} {n}");
        }
        m.apply_seconds.render(
            &mut out,
            "dbmirror_batch_apply_seconds",
            "Time the replica took to commit a batch.",
            &t,
        );
        m.change_latency.render(
            &mut out,
            "dbmirror_change_latency_seconds",
            "Source commit to replica commit, for the oldest change of each batch (an upper bound for the batch).",
            &t,
        );
        out
    }
}

/// What [`Metrics::batch_committed`] records.
#[derive(Debug)]
pub struct BatchReport<'a> {
    /// Rows per table: (`schema.table`, upserts, deletes).
    pub tables: &'a [(String, u64, u64)],
    /// Records the batch covered.
    pub records: u64,
    /// The replica's time for it.
    pub apply: Duration,
    /// Source commit times (ms) of its oldest and newest change.
    pub source_ms: Option<(i64, i64)>,
    /// When the replica committed it (ms since the epoch).
    pub committed_ms: i64,
}

/// Label values escaped as the text format requires.
pub(crate) fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Resident memory from `/proc/self/statm` (Linux); `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_health_has_a_window() {
        let m = Metrics::new("t1");
        let tables = [("crm7.person".to_owned(), 3, 1)];
        let now = now_ms();
        m.batch_committed(&BatchReport {
            tables: &tables,
            records: 5,
            apply: Duration::from_millis(30),
            source_ms: Some((now - 2_000, now - 1_000)),
            committed_ms: now,
        });
        let text = m.render();
        assert!(
            text.contains(r#"dbmirror_rows_written_total{tenant="t1",table="crm7.person",operation="upsert"} 3"#),
            "{text}"
        );
        assert!(text.contains(r#"dbmirror_batch_apply_seconds_bucket{tenant="t1",le="0.05"} 1"#), "{text}");
        assert!(text.contains(r#"dbmirror_change_latency_seconds_bucket{tenant="t1",le="1"} 0"#), "{text}");
        assert!(text.contains(r#"dbmirror_change_latency_seconds_bucket{tenant="t1",le="2.5"} 1"#), "{text}");
        assert_eq!(m.health(Duration::from_secs(60)), Health::Healthy);
        m.problem("waiting for the cloud");
        assert!(matches!(m.health(Duration::ZERO), Health::Unhealthy(r) if r.contains("waiting for the cloud")));
        m.lag(Some(0), true);
        assert_eq!(m.lag_seconds(), Some(0.0));
    }
}
