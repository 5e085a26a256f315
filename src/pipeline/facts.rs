//! What `status` reports about a running or stopped client, kept as session facts in the
//! replica (so `status` works from another process, and after a restart): when each table
//! last received changes, when offsets were last acknowledged, how far behind the cloud the
//! replica was then, and the last error (cleared once a cycle succeeds again).
//!
//! Written on the state connection; a failure to write them is ignored, because they must
//! never stop replication (the log has the same information).

use crate::state::StateStore;
use std::collections::BTreeMap;

use crate::state::{Session, SessionValue, prefixed_facts};

const LAST_APPLIED: &str = "last_applied:";
const LAST_CYCLE: &str = "last_commit_cycle_ms";
/// The last error `sync` met (time and message), for `status`.
pub const LAST_ERROR: &str = "last_error";
const LAG_RECORDS: &str = "lag_records";
const NEWEST_SOURCE: &str = "newest_source_ms";
const LAG_NOW: &str = "lag_now";

fn now_ms() -> i64 {
    crate::clock::now_ms()
}

/// Records an error (time and message); replaces the previous one.
pub fn record_error(state: &mut (dyn StateStore + Send), message: &str) {
    let value = SessionValue::Text(format!("{} {message}", now_ms()));
    if let Err(e) = state.write_facts(&[(LAST_ERROR, value)]) {
        tracing::debug!(error = %e, "could not record the last error in the replica");
    }
}

/// Records that `tables` received changes now (what `status` shows as each table's last
/// change).
pub fn record_applied<'a>(state: &mut (dyn StateStore + Send), tables: impl Iterator<Item = &'a String>) {
    let now = SessionValue::Text(now_ms().to_string());
    let names: Vec<String> = tables.map(|t| format!("{LAST_APPLIED}{t}")).collect();
    let facts: Vec<(&str, SessionValue)> = names.iter().map(|n| (n.as_str(), now.clone())).collect();
    if !facts.is_empty()
        && let Err(e) = state.write_facts(&facts)
    {
        tracing::debug!(error = %e, "could not record the tables' last change in the replica");
    }
}

/// A condition the run waits on: shown by `/healthz` (until a cycle succeeds again) and as
/// `status`'s last error.
pub fn report_problem(state: &mut (dyn StateStore + Send), metrics: &crate::metrics::Metrics, message: &str) {
    metrics.problem(message);
    record_error(state, message);
}

/// Clears the last error: the condition it described has passed (a cycle succeeded since).
pub fn clear_error(state: &mut (dyn StateStore + Send)) {
    if let Err(e) = state.write_facts(&[(LAST_ERROR, SessionValue::Text(String::new()))]) {
        tracing::debug!(error = %e, "could not clear the last error in the replica");
    }
}

/// Where a commit cycle left the replica: records behind the cloud's ends per partition, and
/// the source commit time of the newest change applied so far.
#[derive(Debug, Clone, Default)]
pub struct Lag {
    /// Records behind, per topic and partition.
    pub behind: crate::protocol::Offsets,
    /// Source commit time (ms) of the newest applied change.
    pub newest_source_ms: Option<i64>,
}

/// Records a commit cycle and the lag then.
pub fn record_cycle(state: &mut (dyn StateStore + Send), lag: &Lag) {
    let now = SessionValue::Text(now_ms().to_string());
    let mut facts: Vec<(&str, SessionValue)> = vec![(LAST_CYCLE, now)];
    facts.push((LAG_RECORDS, SessionValue::Text(crate::sink::shadow::encode_until(&lag.behind))));
    if let Some(ms) = lag.newest_source_ms {
        facts.push((NEWEST_SOURCE, SessionValue::Text(ms.to_string())));
    }
    if let Err(e) = state.write_facts(&facts) {
        tracing::debug!(error = %e, "could not record the commit cycle in the replica");
    }
}

/// The lag as the running client measures it (what `/metrics` shows), written every few
/// seconds so `status` in another process is as current as the metrics are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LagNow {
    /// When it was measured (ms since the epoch).
    pub at_ms: i64,
    /// Records behind the cloud (0 once a fetch found nothing newer), if known.
    pub records: Option<i64>,
    /// How far behind the source the replica was then (ms), if known.
    pub behind_ms: Option<i64>,
}

/// Records the lag the running client measures now.
pub fn record_lag_now(state: &mut (dyn StateStore + Send), metrics: &crate::metrics::Metrics) {
    let (records, seconds) = metrics.lag_now();
    let show = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let behind_ms = seconds.map(|s| (s * 1000.0) as i64);
    let value = format!("{} {} {}", now_ms(), show(records), show(behind_ms));
    if let Err(e) = state.write_facts(&[(LAG_NOW, SessionValue::Text(value))]) {
        tracing::debug!(error = %e, "could not record the lag in the replica");
    }
}

/// The lag last measured by a running client.
pub fn lag_now(session: &Session) -> Option<LagNow> {
    let mut parts = text(session, LAG_NOW)?.split(' ');
    let at_ms = parts.next()?.parse().ok()?;
    let mut next = || parts.next().and_then(|v| v.parse().ok());
    Some(LagNow { at_ms, records: next(), behind_ms: next() })
}

fn text<'a>(session: &'a Session, name: &str) -> Option<&'a str> {
    match session.get(name) {
        Some(SessionValue::Text(t)) if !t.is_empty() => Some(t),
        _ => None,
    }
}

/// When each table last received changes (ms since the epoch).
pub fn last_applied(session: &Session) -> BTreeMap<String, i64> {
    prefixed_facts(session, LAST_APPLIED).filter_map(|(table, ms)| Some((table.to_owned(), ms.parse().ok()?))).collect()
}

/// When offsets were last acknowledged to the cloud (ms since the epoch).
pub fn last_cycle(session: &Session) -> Option<i64> {
    text(session, LAST_CYCLE)?.parse().ok()
}

/// The lag the last commit cycle recorded.
pub fn last_lag(session: &Session) -> Option<Lag> {
    let behind = crate::sink::shadow::parse_until(text(session, LAG_RECORDS)?)?;
    Some(Lag { behind, newest_source_ms: text(session, NEWEST_SOURCE).and_then(|t| t.parse().ok()) })
}

/// The last error: when (ms since the epoch) and what.
pub fn last_error(session: &Session) -> Option<(i64, String)> {
    let (at, message) = text(session, LAST_ERROR)?.split_once(' ')?;
    Some((at.parse().ok()?, message.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_read_back() {
        let mut s = Session::new();
        s.insert("last_applied:crm7.person".into(), SessionValue::Text("1700".into()));
        s.insert(LAST_ERROR.into(), SessionValue::Text("1800 replica: disk full".into()));
        s.insert(LAST_CYCLE.into(), SessionValue::Text(String::new()));
        assert_eq!(last_applied(&s)["crm7.person"], 1700);
        assert_eq!(last_error(&s), Some((1800, "replica: disk full".into())));
        assert_eq!(last_cycle(&s), None);
    }
}
