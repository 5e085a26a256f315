//! `ErrorPolicy: Isolate`: when the replica refuses a batch for a reason retrying will not fix
//! (a constraint or trigger the owner added, a value the owner's column cannot hold), find the
//! changes it refuses by bisecting the batch, apply every other change, and store the refused
//! ones in `_ReplicationErrors` together with the batch's offsets (see [`crate::state::refused`]).
//!
//! Bisection applies halves for real, each in its own transaction without offsets: the
//! changes of one batch are one final state per key, so applying them in any grouping, once
//! or again after a crash, leaves the same rows. Only the last transaction moves progress, and
//! it records the refusals with it: a crash before it replays the whole batch, which is
//! bisected again to the same answer. A truncate stays ahead of its table's changes because
//! halves are applied in order. `k` refused changes in a batch of `n` cost about
//! `2k·log2(n)` extra transactions.

use crate::canonical::{canonical, parse_stored};
use crate::coalesce::{Batch, Change, Unit};
use crate::db::{Retry, SinkError};
use crate::row::Cell;
use crate::schema::TableSchema;
use crate::sink::Replica;
use crate::sink::refused::key_text;
use crate::state::refused::{Refusal, RefusedRow};

/// Whether the replica itself refused the write for good (as opposed to a lost connection,
/// a lock, or a batch that does not fit the table dbmirror created).
pub(super) fn refused_by_replica(error: &SinkError) -> bool {
    matches!(error, SinkError::Sqlite { .. } | SinkError::Postgres { .. } | SinkError::Mssql { .. })
        && error.retry() == Retry::Fatal
}

/// Applies what `batch` can, stores what the replica refuses with the batch's progress, and
/// returns the refusals. An error that is not a refusal (the connection lost midway) is
/// returned as is: the batch is then retried whole, and nothing of it is lost.
pub(super) fn isolate(sink: &mut dyn Replica, batch: &Batch) -> Result<Vec<Refusal>, SinkError> {
    let units = batch.units();
    let mut refused = Vec::new();
    bisect(sink, &units, &mut refused)?;
    let refusals: Vec<Refusal> = refused.iter().map(|(unit, error)| refusal(unit, error)).collect();
    sink.write_refused(&refusals, (batch.offsets(), batch.reset_epoch()))?;
    Ok(refusals)
}

fn bisect(sink: &mut dyn Replica, units: &[Unit], out: &mut Vec<(Unit, SinkError)>) -> Result<(), SinkError> {
    if units.is_empty() {
        return Ok(());
    }
    match sink.apply(&Batch::of_units(units)) {
        Ok(()) => Ok(()),
        Err(e) if !refused_by_replica(&e) => Err(e),
        Err(e) if units.len() == 1 => {
            out.push((units[0].clone(), e));
            Ok(())
        }
        Err(_) => {
            let (first, second) = units.split_at(units.len() / 2);
            bisect(sink, first, out)?;
            bisect(sink, second, out)
        }
    }
}

fn image_text(schema: &TableSchema, row: &[Cell]) -> String {
    let image: serde_json::Map<String, serde_json::Value> = schema
        .columns
        .iter()
        .zip(row)
        .map(|(column, cell)| (column.name.clone(), canonical(cell, column.sql_type).into()))
        .collect();
    serde_json::Value::Object(image).to_string()
}

fn refusal(unit: &Unit, error: &SinkError) -> Refusal {
    let schema = &unit.schema;
    // A resync's shadow copy is recorded under its live table.
    let table = schema.id.live_or_self().to_string();
    let error = error.to_string();
    match &unit.change {
        Some(Change::Upsert(key, row)) => Refusal {
            table,
            key: key_text(schema, key),
            operation: "upsert",
            image: Some(image_text(schema, row)),
            error,
        },
        Some(Change::Delete(key)) => {
            Refusal { table, key: key_text(schema, key), operation: "delete", image: None, error }
        }
        None => Refusal { table, key: "[]".into(), operation: "truncate", image: None, error },
    }
}

/// What `retry-errors` did.
#[derive(Debug, Default)]
pub struct RetryOutcome {
    /// Refusals applied now (and forgotten).
    pub applied: usize,
    /// Refusals the replica still refuses, with its error now (kept).
    pub still_refused: Vec<(RefusedRow, String)>,
    /// Refusals of tables the replica no longer has, or older versions of a key with a
    /// newer refusal (forgotten: nothing to apply them to, or superseded).
    pub forgotten: Vec<RefusedRow>,
}

/// Applies the stored refusals again, newest version of each key only, one transaction per
/// change (one still refused does not hold the others); each applied one is deleted in its
/// own transaction. Run it after fixing the cause; a running `sync` may go on meanwhile (a
/// newer version it writes deletes the refusal first, see [`crate::state::refused`]).
pub fn retry(sink: &mut dyn Replica) -> Result<RetryOutcome, SinkError> {
    sink.prepare()?;
    let rows = sink.read_refused()?;
    let tables: std::collections::HashMap<String, std::sync::Arc<TableSchema>> =
        sink.tables().into_iter().map(|r| (r.schema.id.to_string(), r.schema.clone())).collect();
    let mut newest: std::collections::HashMap<(String, String), &RefusedRow> = std::collections::HashMap::new();
    let mut outcome = RetryOutcome::default();
    for row in &rows {
        if let Some(older) = newest.insert((row.table.clone(), row.key.clone()), row) {
            outcome.forgotten.push(older.clone());
        }
    }
    let mut latest: Vec<&RefusedRow> = newest.into_values().collect();
    latest.sort_by_key(|r| r.id);
    for row in latest {
        let Some(schema) = tables.get(&row.table) else {
            outcome.forgotten.push(row.clone());
            continue;
        };
        let unit = match unit_of(schema, row) {
            Ok(unit) => unit,
            Err(unreadable) => {
                outcome.still_refused.push((row.clone(), unreadable.to_string()));
                continue;
            }
        };
        let mut batch = Batch::of_units([&unit]);
        batch.set_superseded(vec![row.id]);
        match sink.apply(&batch) {
            Ok(()) => outcome.applied += 1,
            Err(e) if refused_by_replica(&e) => outcome.still_refused.push((row.clone(), e.to_string())),
            Err(e) => return Err(e),
        }
    }
    let forgotten: Vec<i64> = outcome.forgotten.iter().map(|r| r.id).collect();
    if !forgotten.is_empty() {
        sink.delete_refused(&forgotten)?;
    }
    Ok(outcome)
}

/// Why a stored refusal cannot be turned back into a change.
#[derive(Debug, thiserror::Error)]
enum Unreadable {
    #[error("the stored key `{key}` is unreadable: {source}")]
    Key { key: String, source: serde_json::Error },
    #[error("the stored row is unreadable: {0}")]
    Row(serde_json::Error),
    #[error("the stored value of `{column}` is unreadable: {reason}")]
    Value { column: String, reason: String },
    #[error("unknown stored operation `{0}`")]
    Operation(String),
}

/// A stored refusal as a change of the table's current layout (columns by name; a column
/// added since is NULL, one dropped since is left out).
fn unit_of(schema: &std::sync::Arc<TableSchema>, row: &RefusedRow) -> Result<Unit, Unreadable> {
    let parse = |text: Option<&str>, column: &str| -> Result<Cell, Unreadable> {
        let sql = schema.column(column).map_or(crate::schema::SqlType::Other, |c| c.sql_type);
        text.map_or(Ok(Cell::Null), |t| parse_stored(t, sql))
            .map_err(|reason| Unreadable::Value { column: column.to_owned(), reason })
    };
    let key_values: Vec<Option<String>> =
        serde_json::from_str(&row.key).map_err(|source| Unreadable::Key { key: row.key.clone(), source })?;
    let key = schema
        .primary_key
        .iter()
        .zip(&key_values)
        .map(|(name, value)| parse(value.as_deref(), name))
        .collect::<Result<crate::row::PrimaryKey, _>>()?;
    let change = match (row.operation.as_str(), &row.image) {
        ("delete", _) => Some(Change::Delete(key)),
        ("upsert", Some(image)) => {
            let image: std::collections::HashMap<String, Option<String>> =
                serde_json::from_str(image).map_err(Unreadable::Row)?;
            let cells = schema
                .columns
                .iter()
                .map(|c| parse(image.get(&c.name).and_then(Option::as_deref), &c.name))
                .collect::<Result<Vec<_>, _>>()?;
            Some(Change::Upsert(key, cells.into_boxed_slice()))
        }
        ("truncate", _) => None,
        (other, _) => return Err(Unreadable::Operation(other.to_owned())),
    };
    Ok(Unit::new(schema.clone(), change))
}
