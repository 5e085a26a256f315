//! `_ReplicationState`, written once for every target.
//!
//! Targets differ in statement text and in how a driver binds parameters, not in what is
//! stored: each target supplies its [`StateStatements`] (in its `sql.rs`, golden-tested) and
//! a [`StateExec`] over its connection or open transaction; the rows are read and written
//! here. Inside a batch's or a schema change's transaction the same functions run on that
//! transaction, which is what keeps data and bookkeeping committed together.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Offsets, Session, SessionValue, TableState, offset_rows, parse_offset_name};
use crate::db::SinkError;
use crate::schema::{TableId, TableSchema};

/// The state table's name in every target.
pub const STATE_TABLE: &str = "_ReplicationState";

/// A replicated table as `_ReplicationState` records it.
#[derive(Debug, Clone)]
pub struct TableRecord {
    /// The schema (SQL Server, PostgreSQL) or name prefix (SQLite) the table was created
    /// under; kept, so a later change of `TablePrefix` never orphans a table.
    pub target_schema: String,
    /// The schema the replica table was created from.
    pub schema: Arc<TableSchema>,
    /// Where it stands.
    pub state: TableState,
}

/// One target's `_ReplicationState` statements. Parameters are positional, in the order
/// each field's doc gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateStatements {
    /// Creates the table if it is missing.
    pub create_table: String,
    /// Selects `name, int_value` of every offset row.
    pub select_offsets: String,
    /// Inserts or raises one offset row: name, topic, offset (the stored value never falls).
    pub upsert_offset: String,
    /// Selects `name, text_value, blob_value` of every session fact.
    pub select_facts: String,
    /// Inserts or replaces one session fact: name, text (or NULL), sealed bytes (or NULL).
    pub upsert_fact: String,
    /// Selects `name, text_value, definition, state` of every table row.
    pub select_tables: String,
    /// Inserts or replaces one table row: name, target schema, schema hash, definition, state.
    pub upsert_table: String,
    /// Deletes one table row: name.
    pub delete_table: String,
    /// Sets one table row's state: state, name.
    pub set_table_state: String,
    /// `_ReplicationErrors` (see [`super::refused`]).
    pub errors: super::refused::ErrorStatements,
    /// The writer epoch's statements (see [`super::fence`]).
    pub writer: super::fence::WriterStatements,
    /// The epoch this handle proves in every write transaction, once its run claimed one
    /// ([`super::fence`]); `None` writes unchecked (owner commands, tests).
    pub fence: Option<super::fence::Fence>,
    /// Selects the column names of a replica table, none when it does not exist: a template
    /// with `{schema}` and `{table}` (the target schema and the source table's name, filled in
    /// as quoted literals by [`physical_columns`]).
    pub columns_of: String,
}

/// The column names of the replica table `table` under `target_schema` as the database has
/// them; empty when there is no such table.
pub fn physical_columns(
    exec: &mut dyn StateExec,
    sql: &StateStatements,
    target_schema: &str,
    table: &str,
) -> Result<Vec<String>, SinkError> {
    let literal = |s: &str| s.replace('\'', "''");
    let query = sql.columns_of.replace("{schema}", &literal(target_schema)).replace("{table}", &literal(table));
    Ok(exec
        .query(&query, &[Column::Text])?
        .into_iter()
        .filter_map(|row| match row.into_iter().next() {
            Some(Cell::Text(name)) => Some(name),
            _ => None,
        })
        .collect())
}

/// A statement parameter.
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    /// Text.
    Text(&'a str),
    /// Text or NULL.
    OptText(Option<&'a str>),
    /// An integer.
    Int(i64),
    /// Bytes or NULL.
    OptBlob(Option<&'a [u8]>),
}

/// What a selected column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// Text (possibly NULL).
    Text,
    /// A 64-bit integer (possibly NULL).
    Int,
    /// Bytes (possibly NULL).
    Blob,
}

/// A value read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// Text.
    Text(String),
    /// An integer.
    Int(i64),
    /// Bytes.
    Blob(Vec<u8>),
}

impl Cell {
    pub(super) fn text(self) -> Option<String> {
        match self {
            Cell::Text(t) => Some(t),
            _ => None,
        }
    }
}

/// Running statements on one target's connection (or open transaction).
pub trait StateExec {
    /// Runs one statement.
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<(), SinkError>;
    /// Runs statements without parameters (DDL; several may be separated by `;`).
    fn execute_batch(&mut self, sql: &str) -> Result<(), SinkError>;
    /// Runs a query whose columns hold `columns`.
    fn query(&mut self, sql: &str, columns: &[Column]) -> Result<Vec<Vec<Cell>>, SinkError>;
    /// Starts a transaction (on a connection that is not in one).
    fn begin(&mut self) -> Result<(), SinkError>;
    /// Commits it.
    fn commit(&mut self) -> Result<(), SinkError>;
    /// Rolls it back (after a failure inside it).
    fn rollback(&mut self) -> Result<(), SinkError>;
}

/// Runs `work` in a write transaction of its own, after proving the handle's fence (see
/// [`super::fence::check`]): committed if it succeeds, rolled back if not.
pub fn in_transaction<T>(
    exec: &mut dyn StateExec,
    sql: &StateStatements,
    work: impl FnOnce(&mut dyn StateExec) -> Result<T, SinkError>,
) -> Result<T, SinkError> {
    exec.begin()?;
    let fenced = super::fence::check(exec, sql).and_then(|()| work(exec));
    match fenced.and_then(|value| exec.commit().map(|()| value)) {
        Ok(value) => Ok(value),
        Err(e) => {
            let _ = exec.rollback();
            Err(e)
        }
    }
}

fn rows(exec: &mut dyn StateExec, sql: &str, columns: &[Column]) -> Result<Vec<Vec<Cell>>, SinkError> {
    exec.query(sql, columns)
}

/// The stored offset rows (see [`super::Checkpoint`]).
pub fn read_offsets(exec: &mut dyn StateExec, sql: &StateStatements) -> Result<Offsets, SinkError> {
    let mut offsets = Offsets::new();
    for row in rows(exec, &sql.select_offsets, &[Column::Text, Column::Int])? {
        let mut row = row.into_iter();
        if let (Some(Cell::Text(name)), Some(Cell::Int(last))) = (row.next(), row.next())
            && let Some(key) = parse_offset_name(&name)
        {
            offsets.insert(key, last);
        }
    }
    Ok(offsets)
}

/// Writes a batch's offset rows (and its reset epoch) inside the batch's transaction.
pub fn write_offsets(
    exec: &mut dyn StateExec,
    sql: &StateStatements,
    offsets: &Offsets,
    reset_epoch: Option<u64>,
) -> Result<(), SinkError> {
    for (name, topic, last) in offset_rows(offsets, reset_epoch) {
        exec.execute(&sql.upsert_offset, &[Param::Text(&name), Param::Text(topic), Param::Int(last)])?;
    }
    Ok(())
}

/// The session facts.
pub fn read_facts(exec: &mut dyn StateExec, sql: &StateStatements) -> Result<Session, SinkError> {
    let mut facts = Session::new();
    for row in rows(exec, &sql.select_facts, &[Column::Text, Column::Text, Column::Blob])? {
        let mut row = row.into_iter();
        let name = row.next().and_then(Cell::text).unwrap_or_default();
        let text = row.next().and_then(Cell::text);
        let blob = match row.next() {
            Some(Cell::Blob(b)) => Some(b),
            _ => None,
        };
        facts.insert(name, SessionValue::from_columns(text, blob));
    }
    Ok(facts)
}

/// Stores session facts in one transaction of their own.
pub fn write_facts(
    exec: &mut dyn StateExec,
    sql: &StateStatements,
    facts: &[(&str, SessionValue)],
) -> Result<(), SinkError> {
    in_transaction(exec, sql, |exec| put_facts(exec, sql, facts))
}

/// Stores session facts inside the caller's transaction.
pub fn put_facts(
    exec: &mut dyn StateExec,
    sql: &StateStatements,
    facts: &[(&str, SessionValue)],
) -> Result<(), SinkError> {
    for (name, value) in facts {
        let (text, blob) = value.columns();
        exec.execute(&sql.upsert_fact, &[Param::Text(name), Param::OptText(text), Param::OptBlob(blob)])?;
    }
    Ok(())
}

/// The table rows, by source table.
pub fn read_tables(
    exec: &mut dyn StateExec,
    sql: &StateStatements,
) -> Result<HashMap<TableId, TableRecord>, SinkError> {
    let mut tables = HashMap::new();
    for row in rows(exec, &sql.select_tables, &[Column::Text; 4])? {
        let mut texts = row.into_iter().map(|c| c.text().unwrap_or_default());
        let mut next = || texts.next().unwrap_or_default();
        let (name, target_schema, definition, state) = (next(), next(), next(), next());
        let record = read_record(&name, target_schema, &definition, &state)?;
        tables.insert(record.schema.id.clone(), record);
    }
    Ok(tables)
}

/// Records a table (inside the transaction of the change that made it so).
pub fn write_table(exec: &mut dyn StateExec, sql: &StateStatements, record: &TableRecord) -> Result<(), SinkError> {
    let s = &record.schema;
    let (name, hash, definition) = (s.id.to_string(), s.fingerprint(), s.to_history_json());
    exec.execute(
        &sql.upsert_table,
        &[
            Param::Text(&name),
            Param::Text(&record.target_schema),
            Param::Text(&hash),
            Param::Text(&definition),
            Param::Text(record.state.as_str()),
        ],
    )
}

/// Forgets a table row by its stored name (a dropped table, or a swapped-in shadow).
pub fn forget_table(exec: &mut dyn StateExec, sql: &StateStatements, name: &str) -> Result<(), SinkError> {
    exec.execute(&sql.delete_table, &[Param::Text(name)])
}

/// Sets a table's state, in the replica and in the target's table cache.
pub fn set_table_state(
    exec: &mut dyn StateExec,
    sql: &StateStatements,
    tables: &mut HashMap<TableId, TableRecord>,
    id: &TableId,
    state: TableState,
) -> Result<(), SinkError> {
    let Some(record) = tables.get_mut(id) else {
        return Err(SinkError::Table { table: id.clone(), reason: "not in the replica".into() });
    };
    in_transaction(exec, sql, |exec| {
        exec.execute(&sql.set_table_state, &[Param::Text(state.as_str()), Param::Text(&id.to_string())])
    })?;
    record.state = state;
    Ok(())
}

/// Reads a table definition stored in `_ReplicationState` (a schema-history record).
pub fn read_definition(name: &str, definition: &str) -> Result<TableSchema, SinkError> {
    crate::decode::read_definition(definition).map_err(|e| SinkError::Table {
        table: TableId::new("", name),
        reason: format!("unreadable definition in _ReplicationState: {e}"),
    })
}

/// Builds a record from a stored `table` row.
pub fn read_record(name: &str, target_schema: String, definition: &str, state: &str) -> Result<TableRecord, SinkError> {
    let schema = read_definition(name, definition)?;
    let state = TableState::parse(state).ok_or_else(|| SinkError::Table {
        table: schema.id.clone(),
        reason: format!("unknown table state `{state}` in _ReplicationState"),
    })?;
    Ok(TableRecord { target_schema, schema: Arc::new(schema), state })
}
