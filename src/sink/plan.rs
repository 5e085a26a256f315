//! What a schema change means for the replica, decided once for every target.
//!
//! Targets differ in DDL, not in policy: which tables are replicated, when a change is an
//! `ALTER` and when a re-create, and what state a table is left in are decided here, and
//! each target only executes the resulting [`SchemaPlan`].

use std::collections::HashMap;
use std::sync::Arc;

use super::{SchemaOutcome, SinkError};
use crate::schema::{
    ColumnSchema, SchemaChangeKind, SchemaDiff, TableChange, TableId, TablePattern, TableSchema, is_blocked,
};
use crate::state::{TableRecord, TableState};

/// Choices that shape the replica.
#[derive(Debug, Clone, Default)]
pub struct SinkOptions {
    /// Replaces the source schema (`ReplicaDatabase.TablePrefix`): the SQL Server and
    /// PostgreSQL schema the tables are created in, or the SQLite table-name prefix.
    pub table_prefix: Option<String>,
    /// Source tables never created (`ReplicaDatabase.SkipTables`).
    pub skip_tables: Vec<TablePattern>,
    /// The owner's rules: the column rules and delete modes are applied by
    /// [`crate::sink::open`]'s wrappers ([`crate::sink::projecting::Projecting`],
    /// [`crate::sink::retaining::Retaining`]).
    pub owner: Arc<crate::owner::OwnerRules>,
}

impl SinkOptions {
    /// Blocked tables and the user's skip list are never replicated.
    pub fn skips(&self, id: &TableId) -> bool {
        is_blocked(&id.table) || self.skip_tables.iter().any(|s| s.matches(id))
    }

    /// The schema (or prefix) a new table is created under.
    pub fn target_schema(&self, id: &TableId) -> String {
        self.table_prefix.clone().unwrap_or_else(|| id.schema.clone())
    }
}

/// What to do for one schema change.
#[derive(Debug, Clone)]
pub enum SchemaPlan {
    /// Blocked or skipped: nothing.
    Skip,
    /// Nothing the replica depends on changed.
    Unchanged,
    /// Drop the replica table and forget it.
    Drop(TableRecord),
    /// Create the table (dropping a leftover of the same name) under this schema.
    Create(String),
    /// Add these nullable columns to the existing table.
    AddColumns(TableRecord, Vec<ColumnSchema>),
    /// Drop and re-create the existing table; it needs a fresh snapshot.
    Recreate(TableRecord),
    /// The replica cannot hold the table: drop what exists of it under this record's schema
    /// and record it failed (see [`TableState::Failed`]).
    Fail(TableRecord),
}

/// Why a schema change is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Bring the table in line with the source.
    Follow,
    /// The replica refused the table for this reason, which retrying will not fix: leave it
    /// out (see [`TableState::Failed`]).
    Fail(String),
}

/// Decides what a change means given what the replica has.
pub fn plan(
    options: &SinkOptions,
    existing: Option<&TableRecord>,
    change: &TableChange,
    intent: &Intent,
) -> Result<SchemaPlan, SinkError> {
    let new = &change.table;
    if options.skips(&new.id) {
        return Ok(SchemaPlan::Skip);
    }
    if let Intent::Fail(_) = intent {
        let target_schema = existing.map_or_else(|| options.target_schema(&new.id), |r| r.target_schema.clone());
        return Ok(SchemaPlan::Fail(TableRecord {
            target_schema,
            schema: Arc::new(new.clone()),
            state: TableState::Failed,
        }));
    }
    let needs_key = || {
        if new.primary_key.is_empty() {
            Err(SinkError::Table { table: new.id.clone(), reason: "has no primary key".into() })
        } else {
            Ok(())
        }
    };
    Ok(match (change.kind, existing) {
        (SchemaChangeKind::Drop, None) => SchemaPlan::Unchanged,
        (SchemaChangeKind::Drop, Some(old)) => SchemaPlan::Drop(old.clone()),
        (_, None) => {
            needs_key()?;
            SchemaPlan::Create(options.target_schema(&new.id))
        }
        // A failed table is tried again from scratch: created, then filled by a fresh snapshot.
        (_, Some(old)) if old.state == TableState::Failed => {
            needs_key()?;
            SchemaPlan::Recreate(old.clone())
        }
        (_, Some(old)) => match old.schema.diff(new) {
            SchemaDiff::Same => SchemaPlan::Unchanged,
            SchemaDiff::AddColumns(added) => SchemaPlan::AddColumns(old.clone(), added),
            SchemaDiff::Incompatible => {
                needs_key()?;
                SchemaPlan::Recreate(old.clone())
            }
        },
    })
}

/// What carrying out a plan leaves behind: the outcome to report and the table's new record
/// (`None`: the table is forgotten, or was never replicated).
pub fn result(plan: &SchemaPlan, new: &TableSchema) -> (SchemaOutcome, Option<TableRecord>) {
    let record = |target_schema: &str, state| TableRecord {
        target_schema: target_schema.to_owned(),
        schema: Arc::new(new.clone()),
        state,
    };
    match plan {
        SchemaPlan::Skip => (SchemaOutcome::Skipped, None),
        SchemaPlan::Unchanged => (SchemaOutcome::Unchanged, None),
        SchemaPlan::Drop(_) => (SchemaOutcome::Dropped, None),
        SchemaPlan::Create(target_schema) => {
            (SchemaOutcome::Created, Some(record(target_schema, TableState::Snapshotting)))
        }
        SchemaPlan::Recreate(old) => {
            (SchemaOutcome::Recreated, Some(record(&old.target_schema, TableState::ResyncPending)))
        }
        SchemaPlan::Fail(failed) => (SchemaOutcome::Failed, Some(failed.clone())),
        SchemaPlan::AddColumns(old, added) => (
            SchemaOutcome::Altered { added: added.iter().map(|c| c.name.clone()).collect() },
            Some(record(&old.target_schema, old.state)),
        ),
    }
}

/// Whether a batch's rows of `id` are written: not for skipped tables, nor for failed ones
/// (their records are consumed unapplied, see [`TableState::Failed`]), nor for a legacy table
/// being adopted (its shadow gets them, see [`TableState::Adopting`]).
pub fn writes_to(options: &SinkOptions, record: Option<&TableRecord>, id: &TableId) -> bool {
    !options.skips(id) && !record.is_some_and(|r| matches!(r.state, TableState::Failed | TableState::Adopting))
}

/// Checks that a batch's rows were decoded with the schema the replica table has.
pub fn check_batch_schema(record: Option<&TableRecord>, schema: &TableSchema) -> Result<(), SinkError> {
    let record =
        record.ok_or_else(|| SinkError::Table { table: schema.id.clone(), reason: "not in the replica".into() })?;
    if record.schema.fingerprint() != schema.fingerprint() {
        return Err(SinkError::Table {
            table: schema.id.clone(),
            reason: "batch rows use a schema the replica table was not created with".into(),
        });
    }
    Ok(())
}

/// Updates a sink's table cache after a committed schema change.
pub fn remember(tables: &mut HashMap<TableId, TableRecord>, id: &TableId, record: Option<TableRecord>) {
    match record {
        Some(record) => tables.insert(id.clone(), record),
        None => tables.remove(id),
    };
}
