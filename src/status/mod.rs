//! What `status` reports, typed: built once from a replica's `_ReplicationState` (and, when
//! asked, the cloud's own view) and rendered by every reader — `status`, `status --json`, the
//! owner's status page and its `/status.json` ([`page`]), and a partner instance's line per
//! tenant ([`TenantLine`]). One builder, so no reader can say something another does not.

pub mod page;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::clock::now_ms;
use crate::db::SinkError;
use crate::pipeline::facts;
use crate::protocol::StatusReply;
use crate::sink::{ReplicaRead, shadow};
use crate::source::replication::SessionInfo;
use crate::state::{FAILED_REASON, Session, StateStore, TableState, prefixed_facts};

/// Where one replica stands.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// Whether a `sync` holds the instance now.
    pub running: bool,
    /// The stored session; `None` before `provision`.
    pub session: Option<SessionSummary>,
    /// Every replicated table, by name.
    pub tables: Vec<TableStatus>,
    /// The committed offsets.
    pub offsets: Vec<OffsetStatus>,
    /// The cloud's own view, when it was asked for.
    pub cloud: Option<CloudView>,
    /// When offsets were last acknowledged to the cloud (ms since the epoch).
    pub last_commit_cycle_ms: Option<i64>,
    /// The last error a run recorded and has not cleared since.
    pub last_error: Option<LastError>,
    /// How far behind the cloud the replica was at the last commit cycle.
    pub lag: Lag,
    /// Changes kept aside in `_ReplicationErrors`.
    pub refused_changes: usize,
}

/// The session, without anything secret.
#[derive(Debug, Clone, Serialize)]
pub struct SessionSummary {
    /// The tenant's context id.
    pub tenant: String,
    /// The Replication ID.
    pub replication_id: String,
    /// The cloud's URL.
    pub cloud_url: String,
}

/// One table.
#[derive(Debug, Clone, Serialize)]
pub struct TableStatus {
    /// `schema.table`.
    pub table: String,
    /// `ready`, `snapshotting`, …, or `resyncing` / `resync_requested` while a resync is.
    pub state: String,
    /// Rows in the replica; `None` for a table the replica cannot hold.
    pub rows: Option<u64>,
    /// When the table last received changes (ms since the epoch).
    pub last_change_ms: Option<i64>,
    /// Why the replica cannot hold the table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_reason: Option<String>,
    /// Rows loaded into the resync's shadow so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resync_rows_loaded: Option<u64>,
}

/// One committed offset.
#[derive(Debug, Clone, Serialize)]
pub struct OffsetStatus {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The last applied offset.
    pub last_applied: i64,
}

/// The cloud's view of the session, or why it is not available (unreachable, revoked): a
/// status is shown from the replica's own facts either way.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum CloudView {
    /// The cloud's `GET status`.
    Reply(Box<StatusReply>),
    /// Why there is none.
    Error {
        /// The reason.
        error: String,
    },
}

/// The last error recorded.
#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    /// When (ms since the epoch).
    pub at_ms: i64,
    /// What.
    pub message: String,
}

/// The lag the last commit cycle recorded.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Lag {
    /// Records behind the cloud in total; `None` before the first commit cycle.
    pub records: Option<i64>,
    /// 0 when current, else the age of the newest applied change (s), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<i64>,
    /// Records behind per partition.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<PartitionLag>,
    /// When the cycle that recorded it ran (ms since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of_ms: Option<i64>,
}

/// Records behind on one partition.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Records behind.
    pub records: i64,
}

impl StatusReport {
    /// Reads where `replica` stands; `running` says whether a `sync` holds it (the caller
    /// knows its lock). The cloud's view is left out (see [`StatusReport::cloud`]).
    pub fn read<R: StateStore + ReplicaRead + ?Sized>(replica: &mut R, running: bool) -> Result<Self, SinkError> {
        let session = replica.read_facts()?;
        let offsets = replica
            .offsets()?
            .into_iter()
            .map(|((topic, partition), last_applied)| OffsetStatus { topic, partition, last_applied })
            .collect();
        Ok(StatusReport {
            running,
            session: SessionInfo::from_facts(&session).map(|i| SessionSummary {
                tenant: i.tenant_context_id,
                replication_id: i.replication_id,
                cloud_url: i.cloud_url,
            }),
            tables: tables(replica, &session)?,
            offsets,
            cloud: None,
            last_commit_cycle_ms: facts::last_cycle(&session),
            last_error: facts::last_error(&session).map(|(at_ms, message)| LastError { at_ms, message }),
            lag: lag(&session),
            refused_changes: replica.read_refused()?.len(),
        })
    }

    /// Rows in the replica's tables, in total.
    pub fn rows(&self) -> u64 {
        self.tables.iter().filter_map(|t| t.rows).sum()
    }

    /// `status`'s text form.
    pub fn text(&self) -> String {
        let mut out = Vec::new();
        out.push(format!("client running: {}", if self.running { "yes" } else { "no" }));
        out.push(format!("{:<32} {:<16} {:>10}  last change", "table", "state", "rows"));
        for t in &self.tables {
            let loaded = t.resync_rows_loaded.map(|n| format!("  ({n} rows loaded into the shadow)"));
            let rows = t.rows.map_or("-".to_owned(), |n| n.to_string());
            out.push(format!(
                "{:<32} {:<16} {:>10}  {}{}",
                t.table,
                t.state,
                rows,
                ago(t.last_change_ms),
                loaded.unwrap_or_default()
            ));
            if let Some(reason) = &t.failed_reason {
                out.push(format!(
                    "  left out, the replica cannot hold it: {reason}\n  fix the cause, then `dbmirror resync-tables {}`",
                    t.table
                ));
            }
        }
        for o in &self.offsets {
            out.push(format!("offset {}/{}: {}", o.topic, o.partition, o.last_applied));
        }
        out.push(format!("offsets last acknowledged: {}", ago(self.last_commit_cycle_ms)));
        out.push(match &self.last_error {
            Some(e) => format!("last error ({}): {}", ago(Some(e.at_ms)), e.message),
            None => "last error: none".to_owned(),
        });
        let as_of = ago(self.lag.as_of_ms);
        out.push(match (self.lag.records, self.lag.seconds) {
            (Some(0), _) => format!("lag: none, the replica was current {as_of}"),
            (records, Some(seconds)) => format!(
                "lag: {seconds} s behind the source{} (measured {as_of})",
                records.map(|r| format!(", {r} records behind the cloud")).unwrap_or_default()
            ),
            (Some(records), None) => format!("lag: {records} records behind the cloud (counted {as_of})"),
            (None, None) => "lag: not known yet".to_owned(),
        });
        match &self.cloud {
            Some(CloudView::Error { error }) => out.push(format!("cloud: {error}")),
            Some(CloudView::Reply(cloud)) => {
                let applied = self.offsets.iter().map(|o| ((o.topic.clone(), o.partition), o.last_applied)).collect();
                let gone = past_retention(&applied, cloud);
                if !gone.is_empty() {
                    let lag = out.iter().position(|l| l.starts_with("lag: "));
                    let line = format!(
                        "lag: past the cloud's retention: changes this replica still needs are gone from {}. {}",
                        gone.iter().map(|(t, p)| format!("{t}/{p}")).collect::<Vec<_>>().join(", "),
                        crate::policy::PURGED_ADVICE
                    );
                    match lag {
                        Some(i) => out[i] = line,
                        None => out.push(line),
                    }
                }
            }
            None => {}
        }
        if self.refused_changes > 0 {
            out.push(format!(
                "refused changes: {} in _ReplicationErrors (`dbmirror errors` lists them; fix the cause, then \
                 `dbmirror retry-errors`)",
                self.refused_changes
            ));
        }
        out.join("\n")
    }
}

/// "12 s ago", or "never".
fn ago(ms: Option<i64>) -> String {
    ms.map_or("never".to_owned(), |ms| format!("{} s ago", (now_ms() - ms).max(0) / 1000))
}

fn tables<R: StateStore + ReplicaRead + ?Sized>(
    replica: &mut R,
    session: &Session,
) -> Result<Vec<TableStatus>, SinkError> {
    let mut records = replica.tables();
    records.sort_by_key(|r| r.schema.id.to_string());
    let (requested, running) = (shadow::requested(session), shadow::running(session));
    let last_applied = facts::last_applied(session);
    let shadows = shadow::shadows(replica);
    let mut tables = Vec::with_capacity(records.len());
    for record in &records {
        let id = &record.schema.id;
        let name = id.to_string();
        let failed = record.state == TableState::Failed;
        let mut status = TableStatus {
            state: record.state.as_str().to_owned(),
            // A failed table is not in the replica: nothing to count.
            rows: if failed { None } else { Some(replica.count_rows(id)?) },
            last_change_ms: last_applied.get(&name).copied(),
            failed_reason: failed.then(|| {
                let reason = prefixed_facts(session, FAILED_REASON).find(|(t, _)| *t == name).map(|(_, r)| r);
                reason.unwrap_or("(not recorded; see the log)").to_owned()
            }),
            resync_rows_loaded: None,
            table: name,
        };
        if shadows.iter().any(|s| s.schema.id == id.shadow()) && running.iter().any(|(t, _)| t == id) {
            status.state = "resyncing".to_owned();
            status.resync_rows_loaded = Some(replica.count_rows(&id.shadow())?);
        } else if requested.contains(id) {
            status.state = "resync_requested".to_owned();
        }
        tables.push(status);
    }
    Ok(tables)
}

/// The partitions whose next change the cloud no longer keeps: the replica was offline longer
/// than the retention, and only a reload of every table can continue (see
/// [`crate::policy::PURGED_ADVICE`]). Schema history is kept whole, so only change topics count.
pub fn past_retention(applied: &crate::protocol::Offsets, cloud: &StatusReply) -> Vec<(String, i32)> {
    cloud
        .partitions
        .iter()
        .filter(|p| !p.topic.ends_with(crate::protocol::SCHEMA_HISTORY_TOPIC_SUFFIX))
        .filter(|p| {
            let next = applied.get(&(p.topic.clone(), p.partition)).map_or(0, |last| last + 1);
            p.start > next && p.end > next
        })
        .map(|p| (p.topic.clone(), p.partition))
        .collect()
}

/// How long a running client's lag measurement counts as current: it writes one every few
/// seconds; an older one means the client stopped or stalled, and the replica has aged since.
const LAG_NOW_FRESH_MS: i64 = 15_000;

/// The lag: records behind the cloud's ends (per partition as the last commit cycle counted
/// them, in total as last known) and seconds behind the source. A running client's own
/// measurement (the one `/metrics` shows) is used while it is fresh; once it is not, the
/// replica has aged since it was taken, and the seconds grow with the clock. Without one,
/// the last commit cycle's figures.
fn lag(session: &Session) -> Lag {
    let cycle = facts::last_lag(session);
    let now = facts::lag_now(session).filter(|n| facts::last_cycle(session).is_none_or(|c| n.at_ms >= c));
    if cycle.is_none() && now.is_none() {
        return Lag::default();
    }
    let partitions = cycle
        .as_ref()
        .map(|c| {
            c.behind
                .iter()
                .map(|((topic, partition), records)| PartitionLag {
                    topic: topic.clone(),
                    partition: *partition,
                    records: *records,
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(n) = now {
        let aged = (now_ms() - n.at_ms).max(0);
        let seconds = n.behind_ms.map(|ms| (if aged <= LAG_NOW_FRESH_MS { ms } else { ms + aged }) / 1000);
        return Lag { records: n.records, seconds, partitions, as_of_ms: Some(n.at_ms) };
    }
    let cycle = cycle.unwrap_or_default();
    let records: i64 = cycle.behind.values().sum();
    let seconds = match (records, cycle.newest_source_ms) {
        (0, _) => Some(0),
        (_, Some(ms)) => Some((now_ms() - ms).max(0) / 1000),
        (_, None) => None,
    };
    Lag { records: Some(records), seconds, partitions, as_of_ms: facts::last_cycle(session) }
}

/// Tenants a partner's `status` lists one per line; more are summarised.
pub const TABLE_AT_MOST: usize = 40;

/// Lagging tenants a summary names.
const WORST: usize = 10;

/// A partner instance's line for one tenant: its database, the state and host of its last
/// pass, and the headline of its [`StatusReport`] (or why it could not be read).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TenantLine {
    /// The tenant's context id.
    pub tenant: String,
    /// Its database on the partner's server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The last pass's state (`idle`, `failing`, `withdrawn`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The host that ran the last pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Replicated tables.
    pub tables: usize,
    /// Rows in them.
    pub rows: u64,
    /// The tenant's lag.
    pub lag: Lag,
    /// The tenant's last error.
    pub last_error: Option<LastError>,
    /// Why the tenant's status could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TenantLine {
    /// The line of a tenant whose replica was read.
    pub fn of(
        tenant: &str,
        database: Option<String>,
        report: &StatusReport,
        pass: (Option<String>, Option<String>),
    ) -> Self {
        TenantLine {
            tenant: tenant.to_owned(),
            database,
            state: pass.0,
            host: pass.1,
            tables: report.tables.len(),
            rows: report.rows(),
            lag: report.lag.clone(),
            last_error: report.last_error.clone(),
            error: None,
        }
    }

    /// The line of a tenant whose replica could not be read, and why.
    pub fn unreadable(tenant: &str, error: String) -> Self {
        TenantLine { tenant: tenant.to_owned(), error: Some(error), ..TenantLine::default() }
    }

    /// A partner instance's `status`: a table of every tenant when they fit on a screen
    /// ([`TABLE_AT_MOST`]), else [`TenantLine::summary`].
    pub fn text(lines: &[TenantLine]) -> String {
        if lines.len() > TABLE_AT_MOST { TenantLine::summary(lines) } else { TenantLine::table(lines) }
    }

    /// The first line of its last error, or of why it could not be read.
    fn problem(&self) -> Option<&str> {
        let error = self.last_error.as_ref().map(|e| e.message.as_str()).or(self.error.as_deref())?;
        error.lines().next()
    }

    /// Counts by state, the largest lags and every tenant with a problem: what an operator
    /// of thousands of tenants reads first.
    pub fn summary(lines: &[TenantLine]) -> String {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for l in lines {
            let state = if l.error.is_some() { "unreadable" } else { l.state.as_deref().unwrap_or("not mirrored yet") };
            *counts.entry(state).or_default() += 1;
        }
        let counts: Vec<String> = counts.iter().map(|(state, n)| format!("{n} {state}")).collect();
        let mut out = vec![format!("{} tenants: {}", lines.len(), counts.join(", "))];
        let mut lagging: Vec<&TenantLine> = lines.iter().filter(|l| l.lag.records.unwrap_or(0) > 0).collect();
        lagging.sort_by_key(|l| std::cmp::Reverse(l.lag.records));
        if lagging.is_empty() {
            out.push("every tenant is caught up (as its last pass left it)".to_owned());
        } else {
            out.push(format!("{} tenant(s) behind; the largest lags:", lagging.len()));
            for l in lagging.iter().take(WORST) {
                out.push(format!("  {:<14} {} records", l.tenant, l.lag.records.unwrap_or(0)));
            }
        }
        let troubled: Vec<&TenantLine> = lines.iter().filter(|l| l.problem().is_some()).collect();
        if !troubled.is_empty() {
            out.push(format!("{} tenant(s) with a problem:", troubled.len()));
            for l in troubled {
                out.push(format!("  {:<14} {}", l.tenant, l.problem().unwrap_or("")));
            }
        }
        out.push("`status --tenant <ctx>` shows one tenant in full; `status --json` lists every tenant".to_owned());
        out.join("\n")
    }

    /// One line per tenant.
    fn table(lines: &[TenantLine]) -> String {
        let mut out = vec![format!(
            "{:<14} {:<10} {:>6} {:>9} {:>8}  {:<24} last error",
            "tenant", "state", "tables", "rows", "lag", "host"
        )];
        for l in lines {
            out.push(format!(
                "{:<14} {:<10} {:>6} {:>9} {:>8}  {:<24} {}",
                l.tenant,
                l.state.as_deref().unwrap_or("-"),
                l.tables,
                l.rows,
                l.lag.records.map_or("-".to_owned(), |n| n.to_string()),
                l.host.as_deref().unwrap_or("-"),
                l.problem().unwrap_or("")
            ));
        }
        out.push(format!("{} tenant(s); `status --tenant <ctx>` shows one in full", lines.len()));
        out.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_tenants_are_summarised_with_every_problem_named() {
        let mut lines: Vec<TenantLine> = (0..60)
            .map(|i| TenantLine {
                tenant: format!("t{i:04}"),
                state: Some("mirroring".into()),
                lag: Lag { records: Some(i % 7), ..Lag::default() },
                ..TenantLine::default()
            })
            .collect();
        lines[3].last_error = Some(LastError { message: "disk full\nmore".into(), at_ms: 1 });
        lines.push(TenantLine::unreadable("t9999", "cannot open".into()));
        let text = TenantLine::text(&lines);
        assert!(text.starts_with("61 tenants: 60 mirroring, 1 unreadable"), "{text}");
        assert!(text.contains(&format!("  {:<14} 6 records", "t0006")), "{text}");
        let problems =
            format!("2 tenant(s) with a problem:\n  {:<14} disk full\n  {:<14} cannot open", "t0003", "t9999");
        assert!(text.contains(&problems), "{text}");
        assert!(!text.contains("t0001"), "not every tenant: {text}");
        assert!(TenantLine::text(&lines[..5]).contains("t0001"), "a few are listed one per line");
    }
}
