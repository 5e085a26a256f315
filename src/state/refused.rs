//! `_ReplicationErrors`: rows the replica refused for a reason retrying will not fix, kept
//! for the owner under `ErrorPolicy: Isolate` (see `pipeline::isolate`) instead of stopping.
//!
//! One row per refused change: the source table, its key and final image in canonical text
//! (the form `verify` compares), the operation, the database's error and when. A DBA can
//! query it; `dbmirror errors` lists it and `dbmirror retry-errors` re-applies it. A later
//! version of a refused row that the replica accepts deletes the entry in that batch's
//! transaction (see `sink::refused`), so a retry never writes an image older than what the
//! replica holds.

use super::table::{Cell, Column, Param, StateExec, StateStatements, in_transaction, write_offsets};
use crate::db::SinkError;
use crate::protocol::Offsets;

/// The table's name.
pub const ERRORS_TABLE: &str = "_ReplicationErrors";

/// `_ReplicationErrors` statements of one target. Every target creates the table when it
/// opens the replica, next to `_ReplicationState`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorStatements {
    /// Creates the table if it is missing.
    pub create: String,
    /// Inserts one row: table, key, operation, image (or NULL), error; the time is the
    /// database's.
    pub insert: String,
    /// Selects `id, table_name, row_key, operation, row_image, error, refused_at` by id.
    pub select: String,
    /// Deletes one row: id.
    pub delete: String,
}

/// A change the replica refused, to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The source table, `schema.table`.
    pub table: String,
    /// The key's canonical values, as a JSON array of strings.
    pub key: String,
    /// `upsert`, `delete` or `truncate`.
    pub operation: &'static str,
    /// The row's canonical values by column, as a JSON object (upserts).
    pub image: Option<String>,
    /// The database's error.
    pub error: String,
}

/// A stored refusal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RefusedRow {
    /// Its id in `_ReplicationErrors`.
    pub id: i64,
    /// The source table, `schema.table`.
    pub table: String,
    /// The key's canonical values, as a JSON array of strings.
    pub key: String,
    /// `upsert`, `delete` or `truncate`.
    pub operation: String,
    /// The row's canonical values by column, as a JSON object (upserts).
    pub image: Option<String>,
    /// The database's error.
    pub error: String,
    /// When it was refused (the database's clock, as it prints it).
    pub refused_at: String,
}

/// Stores refusals and the batch's progress in one transaction: the batch is done, and
/// nothing of it is lost.
pub fn write_refused(
    exec: &mut dyn StateExec,
    sql: &StateStatements,
    refused: &[Refusal],
    (offsets, reset_epoch): (&Offsets, Option<u64>),
) -> Result<(), SinkError> {
    in_transaction(exec, sql, |exec| {
        for r in refused {
            let params = [
                Param::Text(&r.table),
                Param::Text(&r.key),
                Param::Text(r.operation),
                Param::OptText(r.image.as_deref()),
                Param::Text(&r.error),
            ];
            exec.execute(&sql.errors.insert, &params)?;
        }
        write_offsets(exec, sql, offsets, reset_epoch)
    })
}

/// Every stored refusal, oldest first.
pub fn read_refused(exec: &mut dyn StateExec, sql: &StateStatements) -> Result<Vec<RefusedRow>, SinkError> {
    let columns = [Column::Int, Column::Text, Column::Text, Column::Text, Column::Text, Column::Text, Column::Text];
    let rows = exec.query(&sql.errors.select, &columns)?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let mut cells = row.into_iter();
            let id = match cells.next() {
                Some(Cell::Int(id)) => id,
                _ => 0,
            };
            let mut text = || cells.next().and_then(Cell::text);
            RefusedRow {
                id,
                table: text().unwrap_or_default(),
                key: text().unwrap_or_default(),
                operation: text().unwrap_or_default(),
                image: text(),
                error: text().unwrap_or_default(),
                refused_at: text().unwrap_or_default(),
            }
        })
        .collect())
}

/// Deletes refusals inside the caller's transaction (a batch that superseded them, or a
/// retry that applied them).
pub fn delete_refused(exec: &mut dyn StateExec, sql: &StateStatements, ids: &[i64]) -> Result<(), SinkError> {
    for id in ids {
        exec.execute(&sql.errors.delete, &[Param::Int(*id)])?;
    }
    Ok(())
}
