//! `ErrorPolicy: Isolate`: when the replica refuses a batch for a reason retrying will not fix
//! (a constraint or trigger the owner added, a value the owner's column cannot hold), find the
//! changes it refuses by bisecting the batch, apply every other change, and store the refused
//! ones in `_ReplicationErrors` together with the batch's offsets (see [`crate::state::errors`]).
//!
//! Bisection applies halves for real, each in its own transaction without offsets: the
//! changes of one batch are one final state per key, so applying them in any grouping, once
//! or again after a crash, leaves the same rows. Only the last transaction moves progress, and
//! it records the refusals with it: a crash before it replays the whole batch, which is
//! bisected again to the same answer. A truncate stays ahead of its table's changes because
//! halves are applied in order. `k` refused changes in a batch of `n` cost about
//! `2k·log2(n)` extra transactions.

use crate::canonical::canonical;
use crate::coalesce::{Batch, Change, Unit};
use crate::db::{Retry, SinkError};
use crate::row::Cell;
use crate::schema::TableSchema;
use crate::sink::{Replica, shadow};
use crate::state::errors::{Refusal, key_text};

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
    let table = shadow::live_id(&schema.id).unwrap_or_else(|| schema.id.clone()).to_string();
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
