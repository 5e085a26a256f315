//! `verify`: does the replica equal the source? Row counts and order-independent checksums
//! of canonical rows, per table, on both sides (the cloud computes its side the same way).

use std::collections::BTreeMap;

use crate::canonical::checksum;
use crate::protocol::GroundTruth;
use crate::sink::{Replica, SinkError};
use crate::state::TableState;

/// One table's comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCheck {
    /// `schema.table`.
    pub table: String,
    /// Rows at the source (`None`: not published, or gone).
    pub source_rows: Option<u64>,
    /// Rows in the replica (`None`: not replicated).
    pub replica_rows: Option<u64>,
    /// Same rows, same contents.
    pub equal: bool,
    /// The replica cannot hold the table (see [`crate::state::TableState::Failed`]): it was
    /// left out, so it cannot be equal.
    pub failed: bool,
}

/// Compares the replica with the cloud's ground truth (`GET …/ground-truth`).
pub fn verify(replica: &mut dyn Replica, truth: &GroundTruth) -> Result<Vec<TableCheck>, SinkError> {
    let source: BTreeMap<String, (u64, String)> =
        truth.tables.iter().map(|t| (t.table.clone(), (t.rows, t.checksum.clone()))).collect();
    let mut local: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut failed = std::collections::BTreeSet::new();
    // A shadow table (a resync in progress) is not a source table.
    for record in replica.tables().into_iter().filter(|r| crate::sink::shadow::live_id(&r.schema.id).is_none()) {
        if record.state == TableState::Failed {
            failed.insert(record.schema.id.to_string());
            continue;
        }
        let rows = replica.read_rows(&record.schema.id)?;
        let (count, sum) = checksum(rows.iter().map(Vec::as_slice));
        local.insert(record.schema.id.to_string(), (count, format!("{sum:016x}")));
    }
    let names: std::collections::BTreeSet<&String> = source.keys().chain(local.keys()).chain(&failed).collect();
    Ok(names
        .into_iter()
        .map(|name| {
            let (s, l) = (source.get(name), local.get(name));
            TableCheck {
                table: name.clone(),
                source_rows: s.map(|x| x.0),
                replica_rows: l.map(|x| x.0),
                equal: s.is_some() && s == l,
                failed: failed.contains(name),
            }
        })
        .collect())
}
