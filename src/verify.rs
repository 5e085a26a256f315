//! `verify`: does the replica equal the source? Row counts and order-independent checksums
//! of canonical rows, per table, on both sides (the cloud computes its side the same way).
//!
//! A tenant that keeps changing is compared exactly, table by table, without stopping anything:
//! the replica is read first (its applied offsets, then each table's rows), the cloud's ground
//! truth after. The truth says where each table's last change was published; when the replica
//! had applied those offsets before its rows were read, the table did not change between the
//! two reads, so equal checksums mean equal tables and different ones a real difference. A
//! table changed since is *behind*, not different, and is read again until it can be judged
//! ([`verify_live`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::canonical::checksum;
use crate::owner::columns::Projection;
use crate::protocol::{GroundTruth, Offsets, TableTruth};
use crate::schema::TableId;
use crate::sink::{ReplicaRead, SinkError, SinkOptions};
use crate::state::StateStore;
use crate::state::TableState;

/// What `verify` concluded about one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Same rows, same contents.
    Equal,
    /// The replica holds other rows than the source had at the same point.
    Different,
    /// The table changed at the source after what the replica had applied: it could not be
    /// compared at one point (yet).
    Behind,
    /// The replica cannot hold the table (see [`TableState::Failed`]).
    Failed,
    /// Not replicated on purpose (`SkipTables`).
    Skipped,
    /// The owner's column rules exclude or mask columns of the table, so its contents differ
    /// from the source's on purpose: the row counts are equal, the contents not compared.
    Masked,
}

/// One table's comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCheck {
    /// `schema.table`.
    pub table: String,
    /// Rows at the source (`None`: not published, or gone).
    pub source_rows: Option<u64>,
    /// Rows in the replica (`None`: not replicated).
    pub replica_rows: Option<u64>,
    /// The conclusion.
    pub verdict: Verdict,
    /// Whether the table is as it should be: equal, or skipped on purpose.
    pub equal: bool,
}

/// Why a verification could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Reading the replica failed.
    #[error("replica: {0}")]
    Replica(#[from] SinkError),
    /// The cloud's ground truth could not be read.
    #[error("cloud: {0}")]
    Cloud(String),
}

/// One table as read from the replica.
#[derive(Debug, Clone)]
enum Local {
    Rows(u64, String),
    Failed,
}

/// The replica's side: its applied offsets, read before any table's rows.
#[derive(Debug, Clone, Default)]
struct ReplicaSide {
    applied: Offsets,
    tables: BTreeMap<String, Local>,
    /// Tables whose columns the owner's rules exclude or mask (see `owner::columns`).
    masked: BTreeSet<String>,
}

/// Reads the applied offsets, then the tables (all, or those in `only`).
fn read_replica<R: StateStore + ReplicaRead + ?Sized>(
    replica: &mut R,
    only: Option<&BTreeSet<String>>,
    options: &SinkOptions,
) -> Result<ReplicaSide, SinkError> {
    let applied = replica.offsets()?;
    let (mut tables, mut masked) = (BTreeMap::new(), BTreeSet::new());
    // A shadow table (a resync in progress) is not a source table.
    for record in replica.tables() {
        let name = record.schema.id.to_string();
        if only.is_some_and(|only| !only.contains(&name)) {
            continue;
        }
        let local = if record.state == TableState::Failed {
            Local::Failed
        } else {
            let rows = replica.read_rows(&record.schema.id)?;
            let (count, sum) = checksum(rows.iter().map(Vec::as_slice));
            Local::Rows(count, format!("{sum:016x}"))
        };
        let projection =
            options.owner.columns.for_table(&record.schema.id).map(|rules| Projection::new(&record.schema, &rules));
        if projection.is_some_and(|p| p.is_ok_and(|p| !p.is_identity())) {
            masked.insert(name.clone());
        }
        tables.insert(name, local);
    }
    Ok(ReplicaSide { applied, tables, masked })
}

/// Whether the replica had applied every change of the table the truth reflects.
fn has_applied(truth: &TableTruth, applied: &Offsets) -> bool {
    truth.last_change.iter().all(|p| applied.get(&(p.topic.clone(), p.partition)).is_some_and(|a| *a >= p.offset))
}

fn judge_one(
    name: &str,
    truth: Option<&TableTruth>,
    local: Option<&Local>,
    side: &ReplicaSide,
    options: &SinkOptions,
) -> TableCheck {
    let replica_rows = match local {
        Some(Local::Rows(n, _)) => Some(*n),
        _ => None,
    };
    let skipped = TableId::parse(name).is_some_and(|id| options.skips(&id));
    let ruled = side.masked.contains(name);
    let verdict = match (truth, local) {
        (_, Some(Local::Failed)) => Verdict::Failed,
        (Some(_), None) if skipped => Verdict::Skipped,
        (Some(t), Some(Local::Rows(n, _))) if ruled && t.rows == *n => Verdict::Masked,
        (Some(t), Some(Local::Rows(n, sum))) if t.rows == *n && t.checksum == *sum => Verdict::Equal,
        (Some(t), _) if !has_applied(t, &side.applied) => Verdict::Behind,
        _ => Verdict::Different,
    };
    TableCheck {
        table: name.to_owned(),
        source_rows: truth.map(|t| t.rows),
        replica_rows,
        verdict,
        equal: matches!(verdict, Verdict::Equal | Verdict::Skipped | Verdict::Masked),
    }
}

/// Judges every table of `side` and of `truth` (read after `side`).
fn judge(
    side: &ReplicaSide,
    truth: &GroundTruth,
    options: &SinkOptions,
    only: Option<&BTreeSet<String>>,
) -> Vec<TableCheck> {
    let source: BTreeMap<&str, &TableTruth> = truth.tables.iter().map(|t| (t.table.as_str(), t)).collect();
    let names: BTreeSet<&str> = source.keys().copied().chain(side.tables.keys().map(String::as_str)).collect();
    names
        .into_iter()
        .filter(|n| only.is_none_or(|only| only.contains(*n)))
        .map(|name| judge_one(name, source.get(name).copied(), side.tables.get(name), side, options))
        .collect()
}

/// Compares the replica with `truth` once. For a replica that is not being written (tests
/// after a run); a running one is compared with [`verify_live`].
pub fn verify<R: StateStore + ReplicaRead + ?Sized>(
    replica: &mut R,
    truth: &GroundTruth,
) -> Result<Vec<TableCheck>, SinkError> {
    let side = read_replica(replica, None, &SinkOptions::default())?;
    Ok(judge(&side, truth, &SinkOptions::default(), None))
}

/// Compares the replica with the cloud while both may be changing: the replica is read first,
/// the ground truth (`fetch_truth`) after. Tables that are behind are read again, every
/// quarter second, until each can be judged or `patience` has passed (then they stay
/// `Behind`). `options` names the tables left out on purpose.
pub fn verify_live<R: StateStore + ReplicaRead + ?Sized>(
    replica: &mut R,
    mut fetch_truth: impl FnMut() -> Result<GroundTruth, String>,
    options: &SinkOptions,
    patience: Duration,
) -> Result<Vec<TableCheck>, VerifyError> {
    let deadline = Instant::now() + patience;
    let mut checks: BTreeMap<String, TableCheck> = BTreeMap::new();
    let mut only: Option<BTreeSet<String>> = None;
    loop {
        let side = read_replica(replica, only.as_ref(), options)?;
        let truth = fetch_truth().map_err(VerifyError::Cloud)?;
        for check in judge(&side, &truth, options, only.as_ref()) {
            checks.insert(check.table.clone(), check);
        }
        let behind: BTreeSet<String> =
            checks.values().filter(|c| c.verdict == Verdict::Behind).map(|c| c.table.clone()).collect();
        if behind.is_empty() || Instant::now() >= deadline {
            return Ok(checks.into_values().collect());
        }
        only = Some(behind);
        std::thread::sleep(Duration::from_millis(250));
    }
}
