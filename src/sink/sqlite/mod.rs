//! The embedded default target: a SQLite file (`Data Source=replica.db` or `sqlite://replica.db`).
//!
//! SQLite is in-process, so prepared per-row statements inside one large transaction are its
//! fast path. Values are stored losslessly: exact numerics and temporals as text (temporals
//! with a fixed fraction width per column, so their text sorts in time order), binary as
//! blobs. Column types are declared so SQLite's type affinity never converts a value: exact
//! numerics are declared `DECIMAL_TEXT(p,s)` rather than `DECIMAL(p,s)`, which would turn
//! `12.34` into a float. Tables are named `<schema>_<table>` (or `<TablePrefix>_<table>`).

mod encode;
pub mod server;
pub mod sql;

use std::collections::HashMap;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql};

use super::ddl;
pub use super::plan::SinkOptions;
use super::plan::{Intent, SchemaPlan, check_batch_schema, writes_to};
use super::{CanonicalRow, ReplicaRead, SchemaOutcome, Sink, SinkError};
use crate::canonical::{canonical, parse_stored};
use crate::coalesce::Batch;
use crate::row::Cell;
use crate::schema::{SqlType, TableChange, TableId};
use crate::state::fence;
use crate::state::table::{self, Cell as StateCell, Column, Param as StateParam, StateExec};
use crate::state::{Offsets, Session, SessionValue, StateStatements, StateStore, TableRecord, TableState};
pub use encode::sql_value;
use encode::{params, render_row};
use sql::quote;
pub use sql::sqlite_type;

/// How long a statement waits for another connection's lock before it fails as busy: long
/// enough for another writer's transaction, short enough that a replica held by an owner's
/// long job or a backup is logged (and retried with backoff) within seconds, not in silence.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The SQLite replica.
pub struct SqliteSink {
    conn: Connection,
    options: SinkOptions,
    tables: HashMap<TableId, TableRecord>,
    state: StateStatements,
}

impl std::fmt::Debug for SqliteSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteSink").field("tables", &self.tables.len()).finish_non_exhaustive()
    }
}

fn err(context: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> SinkError {
    let context = context.into();
    move |source| SinkError::Sqlite { context, source }
}

/// Reads the database path from `Data Source=…` (ADO style; other keys ignored) or
/// `sqlite://…`; `:memory:` opens a private in-memory database.
pub fn parse_connection_string(conn: &str) -> Result<String, SinkError> {
    let conn = conn.trim();
    if let Some(path) = conn.strip_prefix("sqlite://") {
        return (!path.is_empty()).then(|| path.to_owned()).ok_or_else(|| {
            SinkError::ConnectionString("`sqlite://` needs a file path, e.g. sqlite://replica.db".into())
        });
    }
    let keys = conn.split(';').filter_map(|part| part.split_once('=')).map(|(k, _)| k.trim().to_ascii_lowercase());
    if keys.into_iter().any(|k| matches!(k.as_str(), "password" | "pwd")) {
        return Err(SinkError::ConnectionString(
            "a SQLite replica has no password (dbmirror's SQLite files are not encrypted): remove `Password` \
             and protect the file with the folder's permissions"
                .into(),
        ));
    }
    data_source(conn)
        .map(str::to_owned)
        .ok_or_else(|| SinkError::ConnectionString("no `Data Source=<file>` for SQLite".into()))
}

/// The non-empty value of `Data Source` (or `DataSource`, `Filename`) in an ADO-style string.
pub fn data_source(conn: &str) -> Option<&str> {
    conn.split(';').filter_map(|part| part.split_once('=')).find_map(|(key, value)| {
        let key = key.trim().to_ascii_lowercase();
        (matches!(key.as_str(), "data source" | "datasource" | "filename") && !value.trim().is_empty())
            .then(|| value.trim())
    })
}

impl SqliteSink {
    /// Opens (creating if needed) the replica named by a connection string.
    pub fn open(connection_string: &str, options: SinkOptions) -> Result<Self, SinkError> {
        let path = parse_connection_string(connection_string)?;
        let conn = Connection::open(&path).map_err(err(format!("opening {path}")))?;
        Self::from_connection(conn, options)
    }

    /// Uses an open connection (tests use in-memory databases).
    pub fn from_connection(conn: Connection, options: SinkOptions) -> Result<Self, SinkError> {
        // WAL lets readers query while a batch commits; NORMAL sync is durable across process
        // crashes, and after a power loss data and offsets roll back together.
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err("enabling WAL"))?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err("setting synchronous"))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err("setting busy timeout"))?;
        conn.set_prepared_statement_cache_capacity(256);
        let state = sql::state_statements();
        conn.execute_batch(&state.create_table).map_err(err("creating _ReplicationState"))?;
        conn.execute_batch(&state.errors.create).map_err(err("creating _ReplicationErrors"))?;
        let tables = table::read_tables(&mut Exec(&conn), &state)?;
        Ok(Self { conn, options, tables, state })
    }
    /// The open connection, for reads (status, verify, tests).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The replica table name of a source table created under `target_schema`.
    pub fn table_name(target_schema: &str, id: &TableId) -> String {
        format!("{target_schema}_{}", id.table)
    }
}

impl Sink for SqliteSink {
    fn change_schema(&mut self, change: &TableChange, intent: &Intent) -> Result<SchemaOutcome, SinkError> {
        let id = &change.table.id;
        let ddl = |exec: &mut dyn StateExec, plan: &SchemaPlan| match plan {
            SchemaPlan::Skip | SchemaPlan::Unchanged => Ok(()),
            SchemaPlan::Drop(old) | SchemaPlan::Fail(old) => {
                exec.execute_batch(&sql::drop_table(&Self::table_name(&old.target_schema, id)))
            }
            SchemaPlan::Create(target_schema) | SchemaPlan::Recreate(TableRecord { target_schema, .. }) => {
                exec.execute_batch(&sql::create_table(&Self::table_name(target_schema, id), &change.table))
            }
            SchemaPlan::AddColumns(old, added) => added
                .iter()
                .try_for_each(|c| exec.execute_batch(&sql::add_column(&Self::table_name(&old.target_schema, id), c))),
        };
        ddl::apply_schema(&mut Exec(&self.conn), &self.state, &self.options, &mut self.tables, (change, intent), ddl)
    }

    fn replace_from_shadow(&mut self, id: &TableId) -> Result<(), SinkError> {
        ddl::swap_in(&mut Exec(&self.conn), &self.state, &mut self.tables, id, |live, shadow| {
            sql::SOFT.swap(
                &quote(&Self::table_name(&live.target_schema, id)),
                &quote(&Self::table_name(&shadow.target_schema, &shadow.schema.id)),
                &live.schema,
            )
        })
    }

    fn retire_table(&mut self, id: &TableId, new_name: &str) -> Result<(), SinkError> {
        let prefix = |r: &TableRecord| Self::table_name(&r.target_schema, &TableId::new("", new_name));
        ddl::retire(&mut Exec(&self.conn), &self.state, &mut self.tables, id, |record| {
            sql::rename_table(&Self::table_name(&record.target_schema, id), &prefix(record))
        })
    }

    fn run_script(&mut self, sql: &str) -> Result<(), SinkError> {
        let tx = self.conn.transaction().map_err(err("starting a hook's transaction"))?;
        fence::check(&mut Exec(&tx), &self.state)?;
        tx.execute_batch(sql).map_err(err("running a hook's SQL"))?;
        tx.commit().map_err(err("committing a hook's SQL"))
    }

    fn target_name(&self, id: &TableId) -> Option<String> {
        self.tables.get(id).map(|r| quote(&Self::table_name(&r.target_schema, id)))
    }

    fn apply(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let tx = self.conn.transaction().map_err(err("starting batch transaction"))?;
        fence::check(&mut Exec(&tx), &self.state)?;
        for table in batch.tables() {
            let schema = table.schema();
            let id = &schema.id;
            if !writes_to(&self.options, self.tables.get(id), id) {
                continue;
            }
            check_batch_schema(self.tables.get(id), schema)?;
            let target = quote(&Self::table_name(&self.tables[id].target_schema, id));
            // A soft table flags rows instead of deleting them (see `owner::modes`).
            let soft_at = sql::SOFT.delete_time(schema, batch);
            if table.truncate_first() {
                let clear = soft_at
                    .as_ref()
                    .map_or_else(|| format!("DELETE FROM {target}"), |at| sql::SOFT.flag_all(&target, at));
                tx.execute(&clear, []).map_err(err(format!("clearing {target}")))?;
            }
            let key_types: Vec<SqlType> =
                schema.primary_key.iter().map(|k| schema.column(k).map_or(SqlType::Other, |c| c.sql_type)).collect();
            let delete_sql = match &soft_at {
                Some(at) => sql::soft_delete_row(&target, schema, at),
                None => sql::delete_row(&target, schema),
            };
            let mut delete = tx.prepare_cached(&delete_sql).map_err(err(format!("preparing delete on {target}")))?;
            // Keys in order: rows reach the B-tree sequentially, not scattered.
            let mut deletes: Vec<_> = table.deletes().collect();
            deletes.sort_unstable();
            let (mut scratch, mut spans) = (String::new(), Vec::new());
            for key in deletes {
                render_row(key, key_types.iter().copied(), &mut scratch, &mut spans);
                delete
                    .execute(rusqlite::params_from_iter(params(key, &scratch, &spans)))
                    .map_err(err(format!("deleting from {target}")))?;
            }
            let mut upsert = tx
                .prepare_cached(&sql::upsert_row(&target, schema))
                .map_err(err(format!("preparing upsert on {target}")))?;
            // While a snapshot loads, rows are almost always new: a plain insert is cheaper
            // than an upsert, and a row whose key exists falls back to the upsert.
            let snapshotting = matches!(self.tables[id].state, TableState::Snapshotting | TableState::ResyncPending);
            let mut insert = tx
                .prepare_cached(&sql::insert_row(&target, schema))
                .map_err(err(format!("preparing insert on {target}")))?;
            let mut upserts: Vec<_> = table.upserts().collect();
            upserts.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (_, row) in upserts {
                render_row(row, schema.columns.iter().map(|c| c.sql_type), &mut scratch, &mut spans);
                let values = || rusqlite::params_from_iter(params(row, &scratch, &spans));
                if snapshotting {
                    match insert.execute(values()) {
                        Ok(_) => continue,
                        Err(rusqlite::Error::SqliteFailure(e, _))
                            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {}
                        Err(e) => return Err(err(format!("writing {target}"))(e)),
                    }
                }
                upsert.execute(values()).map_err(err(format!("writing {target}")))?;
            }
        }
        table::write_offsets(&mut Exec(&tx), &self.state, batch.offsets(), batch.reset_epoch())?;
        crate::state::refused::delete_refused(&mut Exec(&tx), &self.state, batch.superseded())?;
        tx.commit().map_err(err("committing batch"))
    }
}

impl StateStore for SqliteSink {
    fn all_records(&self) -> Vec<TableRecord> {
        self.tables.values().cloned().collect()
    }

    fn table(&self, id: &TableId) -> Option<TableRecord> {
        self.tables.get(id).cloned()
    }

    fn offset_rows(&mut self) -> Result<Offsets, SinkError> {
        table::read_offsets(&mut Exec(&self.conn), &self.state)
    }

    fn set_table_state(&mut self, id: &TableId, state: TableState) -> Result<(), SinkError> {
        table::set_table_state(&mut Exec(&self.conn), &self.state, &mut self.tables, id, state)
    }

    fn write_facts(&mut self, facts: &[(&str, SessionValue)]) -> Result<(), SinkError> {
        table::write_facts(&mut Exec(&self.conn), &self.state, facts)
    }

    fn read_facts(&mut self) -> Result<Session, SinkError> {
        table::read_facts(&mut Exec(&self.conn), &self.state)
    }

    fn claim_writer(&mut self, holder: &str) -> Result<fence::Fence, SinkError> {
        let (fence, tables) = fence::claim(&mut Exec(&self.conn), &self.state, holder)?;
        self.tables = tables;
        self.state.fence = Some(fence);
        Ok(fence)
    }

    fn hold_fence(&mut self, fence: fence::Fence) {
        self.state.fence = Some(fence);
    }

    fn write_refused(
        &mut self,
        refused: &[crate::state::refused::Refusal],
        progress: (&Offsets, Option<u64>),
    ) -> Result<(), SinkError> {
        crate::state::refused::write_refused(&mut Exec(&self.conn), &self.state, refused, progress)
    }

    fn read_refused(&mut self) -> Result<Vec<crate::state::refused::RefusedRow>, SinkError> {
        crate::state::refused::read_refused(&mut Exec(&self.conn), &self.state)
    }

    fn delete_refused(&mut self, ids: &[i64]) -> Result<(), SinkError> {
        let state = &self.state;
        table::in_transaction(&mut Exec(&self.conn), state, |exec| {
            crate::state::refused::delete_refused(exec, state, ids)
        })
    }
}

/// `_ReplicationState` statements on a connection or an open transaction (which derefs to
/// one); transactions of its own are plain `BEGIN`/`COMMIT`.
struct Exec<'c>(&'c Connection);

impl ToSql for StateParam<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            StateParam::Text(t) | StateParam::OptText(Some(t)) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
            StateParam::Int(v) => ToSqlOutput::from(v),
            StateParam::OptBlob(Some(b)) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            StateParam::OptText(None) | StateParam::OptBlob(None) => ToSqlOutput::Borrowed(ValueRef::Null),
        })
    }
}

impl StateExec for Exec<'_> {
    fn execute(&mut self, sql: &str, params: &[StateParam<'_>]) -> Result<(), SinkError> {
        let mut statement = self.0.prepare_cached(sql).map_err(err("preparing a _ReplicationState statement"))?;
        statement.execute(rusqlite::params_from_iter(params)).map_err(err("writing _ReplicationState"))?;
        Ok(())
    }

    fn execute_batch(&mut self, sql: &str) -> Result<(), SinkError> {
        self.0.execute_batch(sql).map_err(err(format!("running `{}`", first_line(sql))))
    }

    fn query(&mut self, sql: &str, columns: &[Column]) -> Result<Vec<Vec<StateCell>>, SinkError> {
        let mut statement = self.0.prepare_cached(sql).map_err(err("reading _ReplicationState"))?;
        let rows = statement
            .query_map([], |row| {
                columns
                    .iter()
                    .enumerate()
                    .map(|(i, column)| {
                        Ok(match (column, row.get_ref(i)?) {
                            (_, ValueRef::Null) => StateCell::Null,
                            (Column::Int, ValueRef::Integer(v)) => StateCell::Int(v),
                            (Column::Blob, ValueRef::Blob(b)) => StateCell::Blob(b.to_vec()),
                            (_, value) => StateCell::Text(String::from_utf8_lossy(value.as_bytes()?).into_owned()),
                        })
                    })
                    .collect()
            })
            .map_err(err("reading _ReplicationState"))?;
        rows.collect::<Result<_, _>>().map_err(err("reading _ReplicationState"))
    }

    fn begin(&mut self) -> Result<(), SinkError> {
        self.0.execute_batch("BEGIN").map_err(err("starting a transaction"))
    }

    fn commit(&mut self) -> Result<(), SinkError> {
        self.0.execute_batch("COMMIT").map_err(err("committing"))
    }

    fn rollback(&mut self) -> Result<(), SinkError> {
        self.0.execute_batch("ROLLBACK").map_err(err("rolling back"))
    }
}

/// The first line of a statement, for error messages.
fn first_line(sql: &str) -> &str {
    sql.lines().next().unwrap_or_default().trim()
}

impl ReplicaRead for SqliteSink {
    fn check_writable(&mut self) -> Result<(), SinkError> {
        let tx = self.conn.transaction().map_err(err("starting the write check"))?;
        tx.execute_batch(&super::probe_sql(&quote("_dbmirror_probe"))).map_err(err("creating a table"))?;
        tx.rollback().map_err(err("rolling the write check back"))
    }

    fn count_rows(&mut self, id: &TableId) -> Result<u64, SinkError> {
        let record = self.tables.get(id).ok_or_else(|| super::missing(id))?;
        let target = quote(&Self::table_name(&record.target_schema, id));
        self.conn
            .query_row(&format!("SELECT count(*) FROM {target}"), [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(err(format!("counting {target}")))
    }

    fn read_rows(&mut self, id: &TableId) -> Result<Vec<CanonicalRow>, SinkError> {
        let record = self
            .tables
            .get(id)
            .ok_or_else(|| SinkError::Table { table: id.clone(), reason: "not in the replica".into() })?;
        let target = Self::table_name(&record.target_schema, id);
        let columns: Vec<String> = record.schema.columns.iter().map(|c| quote(&c.name)).collect();
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {} FROM {}", columns.join(", "), quote(&target)))
            .map_err(err(format!("reading {target}")))?;
        let types: Vec<SqlType> = record.schema.columns.iter().map(|c| c.sql_type).collect();
        let mut rows = stmt.query([]).map_err(err(format!("reading {target}")))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(err(format!("reading {target}")))? {
            let mut cells = Vec::with_capacity(types.len());
            for (i, sql) in types.iter().enumerate() {
                let value = row.get_ref(i).map_err(err(format!("reading {target}")))?;
                let cell = match value {
                    ValueRef::Null => Cell::Null,
                    ValueRef::Integer(v) if *sql == SqlType::Bit => Cell::Bool(v != 0),
                    ValueRef::Integer(v) => Cell::Int(v),
                    ValueRef::Real(v) => Cell::Float(v),
                    ValueRef::Blob(b) => Cell::Binary(b.into()),
                    ValueRef::Text(t) => parse_stored(&String::from_utf8_lossy(t), *sql)
                        .map_err(|reason| SinkError::Table { table: id.clone(), reason })?,
                };
                cells.push(canonical(&cell, *sql));
            }
            out.push(cells);
        }
        Ok(out)
    }
}
