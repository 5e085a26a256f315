//! The skeleton of every change to a replica's tables, run once for every target: a schema
//! change (plan → transaction → the target's DDL → the table's record → commit → the sink's
//! cache) and a resync's swap (transaction → copy back → records → commit → cache). Targets
//! supply only their statements.

use std::collections::HashMap;

use super::plan::{Intent, SchemaPlan, SinkOptions, plan, remember, result};
use super::shadow::Swap;
use super::{SchemaOutcome, SinkError};
use crate::schema::{TableChange, TableId};
use crate::state::table::{StateExec, StateStatements, forget_table, in_transaction, put_facts, write_table};
use crate::state::{FAILED_REASON, SessionValue, TableRecord, TableState};

/// Applies one schema change: `ddl` runs the plan's statements inside the transaction that
/// also records the table (and why it failed, or that it no longer does), so a crash leaves
/// either all or none of it.
pub fn apply_schema(
    exec: &mut dyn StateExec,
    sql: &StateStatements,
    options: &SinkOptions,
    tables: &mut HashMap<TableId, TableRecord>,
    (change, intent): (&TableChange, &Intent),
    ddl: impl FnOnce(&mut dyn StateExec, &SchemaPlan) -> Result<(), SinkError>,
) -> Result<SchemaOutcome, SinkError> {
    let new = &change.table;
    let plan = plan(options, tables.get(&new.id), change, intent)?;
    if let SchemaPlan::Create(target_schema) = &plan
        && let Some(outcome) = adopt(exec, sql, tables, new, target_schema)?
    {
        return Ok(outcome);
    }
    let existing = tables.get(&new.id);
    let (outcome, record) = result(&plan, new);
    if matches!(plan, SchemaPlan::Skip | SchemaPlan::Unchanged) {
        return Ok(outcome);
    }
    let reason = match intent {
        Intent::Fail(reason) => Some(reason.clone()),
        Intent::Follow if existing.is_some_and(|r| r.state == TableState::Failed) => Some(String::new()),
        Intent::Follow => None,
    };
    in_transaction(exec, sql, |exec| {
        ddl(exec, &plan)?;
        match &record {
            Some(record) => write_table(exec, sql, record)?,
            None => forget_table(exec, sql, &new.id.to_string())?,
        }
        match reason {
            Some(reason) => put_facts(exec, sql, &[(&failed_fact(&new.id), SessionValue::Text(reason))]),
            None => Ok(()),
        }
    })?;
    remember(tables, &new.id, record);
    Ok(outcome)
}

/// A table about to be created that already exists with the source's columns (a legacy
/// mirror's, or one left when `_ReplicationState` was lost) is adopted instead of dropped:
/// recorded [`TableState::Adopting`] with a resync request, in one transaction, so readers
/// keep its rows — and the owner's indexes, views and grants stay — until a fresh snapshot is
/// swapped in. One whose columns differ is re-created as usual.
fn adopt(
    exec: &mut dyn StateExec,
    sql: &StateStatements,
    tables: &mut HashMap<TableId, TableRecord>,
    new: &crate::schema::TableSchema,
    target_schema: &str,
) -> Result<Option<SchemaOutcome>, SinkError> {
    if new.id.is_shadow() {
        return Ok(None);
    }
    let found = crate::state::table::physical_columns(exec, sql, target_schema, &new.id.table)?;
    if found.is_empty() {
        return Ok(None);
    }
    let same = found.len() == new.columns.len() && new.columns.iter().all(|c| found.iter().any(|f| f == &c.name));
    if !same {
        tracing::warn!(table = %new.id, "a table of this name exists with other columns: it is replaced");
        return Ok(None);
    }
    let record = TableRecord {
        target_schema: target_schema.to_owned(),
        schema: std::sync::Arc::new(new.clone()),
        state: TableState::Adopting,
    };
    let request = super::shadow::request_fact(&new.id);
    let stamp = SessionValue::Text(crate::clock::now_ms().to_string());
    in_transaction(exec, sql, |exec| {
        write_table(exec, sql, &record)?;
        put_facts(exec, sql, &[(&request, stamp)])
    })?;
    tracing::info!(table = %new.id, "an existing table is adopted: its rows stay until a fresh snapshot replaces them");
    remember(tables, &new.id, Some(record));
    Ok(Some(SchemaOutcome::Adopted))
}

/// Ends a resync: `statements(live, shadow)` (the target's copy-back, usually through
/// [`super::shadow::copy_back_sql`]) runs in one transaction with the records' update.
pub fn swap_in(
    exec: &mut dyn StateExec,
    sql: &StateStatements,
    tables: &mut HashMap<TableId, TableRecord>,
    id: &TableId,
    statements: impl FnOnce(&TableRecord, &TableRecord) -> String,
) -> Result<(), SinkError> {
    let swap = Swap::plan(tables, id, statements)?;
    in_transaction(exec, sql, |exec| {
        exec.execute_batch(&swap.sql)?;
        write_table(exec, sql, &swap.ready)?;
        forget_table(exec, sql, &swap.shadow_name)
    })?;
    swap.done(tables);
    Ok(())
}

/// Keeps a table under another name and forgets it (see [`super::Sink::retire_table`]):
/// `rename(record)` is the target's rename, run in one transaction with the record's removal.
pub fn retire(
    exec: &mut dyn StateExec,
    sql: &StateStatements,
    tables: &mut HashMap<TableId, TableRecord>,
    id: &TableId,
    rename: impl FnOnce(&TableRecord) -> String,
) -> Result<(), SinkError> {
    let record = tables.get(id).ok_or_else(|| super::missing(id))?;
    let statement = rename(record);
    in_transaction(exec, sql, |exec| {
        exec.execute_batch(&statement)?;
        forget_table(exec, sql, &id.to_string())
    })?;
    tables.remove(id);
    Ok(())
}

/// The session fact naming why `id` failed (cleared to empty text when it no longer does).
pub fn failed_fact(id: &TableId) -> String {
    format!("{FAILED_REASON}{id}")
}
