//! One table's pending changes: the final state of every key touched in the batch.

use std::collections::HashMap;
use std::sync::Arc;

use super::CoalesceErrorKind;
use crate::decode::{Field, Op};
use crate::row::{Cell, OwnedRow, PrimaryKey};
use crate::schema::TableSchema;

/// The final state of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The row exists with these values (insert or update).
    Upsert(PrimaryKey, OwnedRow),
    /// The row is gone.
    Delete(PrimaryKey),
}

/// One change event of a table as the source made it, kept (besides the key's final state)
/// for tables whose owner keeps a history of every change (see `owner::modes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// The operation.
    pub op: Op,
    /// The row's primary key.
    pub key: PrimaryKey,
    /// The row after the change; for a delete the row before it (only its key when the event
    /// carried no before image).
    pub row: OwnedRow,
    /// Source commit time (ms since the epoch).
    pub source_ms: Option<i64>,
    /// The source transaction's commit LSN.
    pub commit_lsn: Option<Box<str>>,
    /// The change's own LSN (none for snapshot reads).
    pub change_lsn: Option<Box<str>>,
    /// The connector's serial number of the event within its change LSN.
    pub serial: Option<i64>,
    /// Where the record sits in the log (partition, offset).
    pub position: Option<(i32, i64)>,
}

/// Pending changes of one table, at most one per primary key.
///
/// Sinks apply `truncate_first`, then every delete, then every upsert. Deletes go first because
/// two keys that differ here (`abc`, `ABC`) may be one key under the target's collation; the
/// final state is then still right.
#[derive(Debug, Clone)]
pub struct TableBatch {
    schema: Arc<TableSchema>,
    truncate_first: bool,
    changes: HashMap<PrimaryKey, Option<OwnedRow>>,
    bytes: usize,
    /// Every change in order, for a table with a history; `None` otherwise.
    log: Option<Vec<Logged>>,
}

impl TableBatch {
    pub(super) fn new(schema: Arc<TableSchema>, keep_log: bool) -> Self {
        Self { schema, truncate_first: false, changes: HashMap::new(), bytes: 0, log: keep_log.then(Vec::new) }
    }

    /// Every change event in order, when the table keeps a history (see [`Logged`]).
    pub fn log(&self) -> Option<&[Logged]> {
        self.log.as_deref()
    }

    /// Appends to the log (the table keeps one from now on).
    pub(super) fn log_change(&mut self, logged: Logged) {
        self.bytes += row_bytes(&logged.row);
        self.log.get_or_insert_with(Vec::new).push(logged);
    }

    /// The same changes for another table with the same columns (a resync's shadow table).
    pub fn copy_for(&self, schema: Arc<TableSchema>) -> Self {
        Self { schema, ..self.clone() }
    }

    /// The schema the rows are laid out by (column order).
    pub fn schema(&self) -> &Arc<TableSchema> {
        &self.schema
    }

    /// The table was truncated in this batch: clear it before applying the changes.
    pub fn truncate_first(&self) -> bool {
        self.truncate_first
    }

    /// Keys whose final state is "absent".
    pub fn deletes(&self) -> impl Iterator<Item = &PrimaryKey> {
        self.changes.iter().filter(|(_, row)| row.is_none()).map(|(k, _)| k)
    }

    /// Rows whose final state is "present", in column order.
    pub fn upserts(&self) -> impl Iterator<Item = (&PrimaryKey, &OwnedRow)> {
        self.changes.iter().filter_map(|(k, row)| row.as_ref().map(|r| (k, r)))
    }

    /// Every key's final state.
    pub fn changes(&self) -> impl Iterator<Item = Change> + '_ {
        self.changes.iter().map(|(key, row)| match row {
            Some(row) => Change::Upsert(key.clone(), row.clone()),
            None => Change::Delete(key.clone()),
        })
    }

    /// Number of distinct keys touched.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// True when no key is pending (a truncate may still be).
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    pub(super) fn approx_bytes(&self) -> usize {
        self.bytes
    }

    /// Clears the pending changes; the log keeps what happened before the truncate.
    pub(super) fn truncate(&mut self) {
        self.truncate_first = true;
        self.changes.clear();
        self.bytes = self.log.iter().flatten().map(|l| row_bytes(&l.row)).sum();
    }

    /// Records a key's new final state; the last one wins.
    pub(super) fn record(&mut self, change: Change) {
        let (key, row) = match change {
            Change::Upsert(key, row) => (key, Some(row)),
            Change::Delete(key) => (key, None),
        };
        let key_size = key.iter().map(Cell::approx_bytes).sum::<usize>();
        self.bytes += row.as_deref().map_or(0, row_bytes);
        match self.changes.insert(key, row) {
            Some(old) => self.bytes -= old.as_deref().map_or(0, row_bytes),
            None => self.bytes += key_size,
        }
    }
}

fn row_bytes(row: &[Cell]) -> usize {
    row.iter().map(Cell::approx_bytes).sum()
}

/// Lays out a row image in the table's column order; absent columns are NULL.
pub(super) fn owned_row(schema: &TableSchema, fields: &[Field<'_>]) -> Result<OwnedRow, CoalesceErrorKind> {
    let mut cells: Vec<Cell> = std::iter::repeat_with(|| Cell::Null).take(schema.columns.len()).collect();
    for (i, field) in fields.iter().enumerate() {
        let index = match schema.columns.get(i) {
            Some(c) if c.name == field.name => i,
            _ => schema.columns.iter().position(|c| c.name == field.name).ok_or_else(|| {
                CoalesceErrorKind::UnknownColumn { table: schema.id.to_string(), column: field.name.to_owned() }
            })?,
        };
        cells[index] = cell(schema, field)?;
    }
    Ok(cells.into_boxed_slice())
}

fn cell(schema: &TableSchema, field: &Field<'_>) -> Result<Cell, CoalesceErrorKind> {
    Cell::from_value(&field.value).map_err(|source| CoalesceErrorKind::Value {
        table: schema.id.to_string(),
        column: field.name.to_owned(),
        source,
    })
}

/// The primary key of a row laid out by [`owned_row`].
pub(super) fn key_from_row(schema: &TableSchema, row: &[Cell], op: Op) -> Result<PrimaryKey, CoalesceErrorKind> {
    schema
        .primary_key
        .iter()
        .map(|name| {
            schema
                .columns
                .iter()
                .position(|c| &c.name == name)
                .and_then(|i| row.get(i))
                .filter(|cell| !matches!(cell, Cell::Null))
                .cloned()
                .ok_or_else(|| missing(schema, op, name))
        })
        .collect()
}

/// The primary key read from any image or record key that contains the key columns.
pub(super) fn key_from_fields(
    schema: &TableSchema,
    fields: &[Field<'_>],
    op: Op,
) -> Result<PrimaryKey, CoalesceErrorKind> {
    schema
        .primary_key
        .iter()
        .map(|name| match fields.iter().find(|f| f.name == name.as_str()) {
            Some(field) if field.value != crate::decode::Value::Null => cell(schema, field),
            _ => Err(missing(schema, op, name)),
        })
        .collect()
}

fn missing(schema: &TableSchema, op: Op, column: &str) -> CoalesceErrorKind {
    CoalesceErrorKind::MissingKey { table: schema.id.to_string(), op: op.code(), column: column.to_owned() }
}
