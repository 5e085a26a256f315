//! The embedded default target: a SQLite file (`Data Source=replica.db` or `sqlite://replica.db`).
//!
//! SQLite is in-process, so prepared per-row statements inside one large transaction are its
//! fast path. Values are stored losslessly: exact numerics and temporals as text (temporals
//! with a fixed fraction width per column, so their text sorts in time order), binary as
//! blobs. Column types are declared so SQLite's type affinity never converts a value: exact
//! numerics are declared `DECIMAL_TEXT(p,s)` rather than `DECIMAL(p,s)`, which would turn
//! `12.34` into a float. Tables are named `<schema>_<table>` (or `<TablePrefix>_<table>`).

use std::collections::HashMap;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql, params};

use super::plan::{SchemaPlan, check_batch_schema, plan, read_record, remember, result};
pub use super::plan::{SinkOptions, TableRecord};
use super::{CanonicalRow, ReplicaRead, SchemaOutcome, Sink, SinkError, shadow};
use crate::canonical::{canonical, fraction_scale, parse_stored};
use crate::coalesce::Batch;
use crate::row::Cell;
use crate::schema::{SqlType, TableChange, TableId, TableSchema};
use crate::state::StateStore;
use crate::state::{Offsets, STATE_TABLE, Session, SessionValue, TableState, offset_rows, parse_offset_name};

/// The SQLite replica.
pub struct SqliteSink {
    conn: Connection,
    options: SinkOptions,
    tables: HashMap<TableId, TableRecord>,
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
    for part in conn.split(';') {
        if let Some((key, value)) = part.split_once('=') {
            let key = key.trim().to_ascii_lowercase();
            if matches!(key.as_str(), "data source" | "datasource" | "filename") && !value.trim().is_empty() {
                return Ok(value.trim().to_owned());
            }
        }
    }
    Err(SinkError::ConnectionString("no `Data Source=<file>` for SQLite".into()))
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The declared SQLite type that stores a SQL Server type losslessly.
pub fn sqlite_type(sql: SqlType) -> String {
    match sql {
        SqlType::Bit => "BOOLEAN".into(),
        SqlType::TinyInt | SqlType::SmallInt | SqlType::Int => "INTEGER".into(),
        SqlType::BigInt => "BIGINT".into(),
        SqlType::Real => "REAL".into(),
        SqlType::Float => "FLOAT".into(),
        SqlType::Decimal { precision, scale } | SqlType::Numeric { precision, scale } => {
            format!("DECIMAL_TEXT({precision},{scale})")
        }
        SqlType::Money => "MONEY_TEXT".into(),
        SqlType::SmallMoney => "SMALLMONEY_TEXT".into(),
        SqlType::Char(n) | SqlType::VarChar(n) | SqlType::NChar(n) | SqlType::NVarChar(n) => {
            let name = sql.to_string().to_ascii_uppercase();
            let base = name.split('(').next().unwrap_or_default();
            // SQLite type arguments must be numbers: `(max)` becomes a `_MAX` suffix.
            n.map_or_else(|| format!("{base}_MAX"), |_| name.clone())
        }
        SqlType::Text | SqlType::NText => sql.to_string().to_ascii_uppercase(),
        SqlType::Xml => "XML_TEXT".into(),
        SqlType::UniqueIdentifier => "UNIQUEIDENTIFIER_TEXT".into(),
        SqlType::Binary(_) | SqlType::VarBinary(_) | SqlType::Image | SqlType::RowVersion => "BLOB".into(),
        SqlType::Date => "DATE_TEXT".into(),
        SqlType::Time { scale } => format!("TIME_TEXT({scale})"),
        SqlType::DateTime => "DATETIME_TEXT".into(),
        SqlType::SmallDateTime => "SMALLDATETIME_TEXT".into(),
        SqlType::DateTime2 { scale } => format!("DATETIME2_TEXT({scale})"),
        SqlType::DateTimeOffset { scale } => format!("DATETIMEOFFSET_TEXT({scale})"),
        // No declared type: BLOB affinity stores values exactly as received.
        SqlType::Other => String::new(),
    }
}

/// Writes the text SQLite stores for cells we format (exact numerics, temporals, integers
/// beyond `i64`); returns false for cells bound as they are.
fn render(cell: &Cell, sql: SqlType, out: &mut String) -> bool {
    use std::fmt::Write as _;
    match cell {
        Cell::UInt(v) => {
            let _ = write!(out, "{v}");
        }
        Cell::Decimal(d) => {
            let _ = write!(out, "{d}");
        }
        Cell::Date(d) => {
            let _ = write!(out, "{d}");
        }
        Cell::Time(t) => t.write_fixed(out, fraction_scale(sql)),
        Cell::DateTime(dt) => dt.write_fixed(out, fraction_scale(sql)),
        Cell::DateTimeOffset(v) => v.write_fixed(out, fraction_scale(sql)),
        _ => return false,
    }
    true
}

/// A statement parameter: a cell bound directly (borrowing text and blobs) or text rendered
/// into a per-row scratch buffer, so binding a row allocates nothing.
enum Param<'a> {
    Direct(&'a Cell),
    Rendered(&'a str),
}

impl ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Param::Rendered(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Param::Direct(Cell::Bool(b)) => ToSqlOutput::from(i64::from(*b)),
            Param::Direct(Cell::Int(v)) => ToSqlOutput::from(*v),
            Param::Direct(Cell::Float(v)) => ToSqlOutput::from(*v),
            Param::Direct(Cell::Text(s)) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Param::Direct(Cell::Binary(b)) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Param::Direct(_) => ToSqlOutput::Borrowed(ValueRef::Null),
        })
    }
}

/// Renders one row's formatted cells into `scratch` and records where each one lies.
fn render_row(
    cells: &[Cell],
    types: impl Iterator<Item = SqlType>,
    scratch: &mut String,
    spans: &mut Vec<Option<(usize, usize)>>,
) {
    scratch.clear();
    spans.clear();
    for (cell, sql) in cells.iter().zip(types) {
        let start = scratch.len();
        spans.push(render(cell, sql, scratch).then_some((start, scratch.len())));
    }
}

fn params<'a>(
    cells: &'a [Cell],
    scratch: &'a str,
    spans: &'a [Option<(usize, usize)>],
) -> impl Iterator<Item = Param<'a>> {
    cells.iter().zip(spans).map(move |(cell, span)| match span {
        Some((a, b)) => Param::Rendered(&scratch[*a..*b]),
        None => Param::Direct(cell),
    })
}

/// The value SQLite stores for a cell of a column of type `sql`, as an owned value (for
/// callers outside a batch, such as benchmarks' baselines and `verify`).
pub fn sql_value(cell: &Cell, sql: SqlType) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    let mut text = String::new();
    if render(cell, sql, &mut text) {
        return V::Text(text);
    }
    match cell {
        Cell::Bool(b) => V::Integer(i64::from(*b)),
        Cell::Int(v) => V::Integer(*v),
        Cell::Float(v) => V::Real(*v),
        Cell::Text(s) => V::Text(s.to_string()),
        Cell::Binary(b) => V::Blob(b.to_vec()),
        _ => V::Null,
    }
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
        conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(err("setting busy timeout"))?;
        conn.set_prepared_statement_cache_capacity(256);
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {} (
                scope TEXT NOT NULL CHECK (scope IN ('session', 'offset', 'table')),
                name TEXT NOT NULL,
                text_value TEXT,
                int_value INTEGER,
                blob_value BLOB,
                schema_hash TEXT,
                definition TEXT,
                state TEXT,
                updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
                PRIMARY KEY (scope, name)
            ) WITHOUT ROWID",
            quote(STATE_TABLE)
        ))
        .map_err(err("creating _ReplicationState"))?;
        let mut sink = Self { conn, options, tables: HashMap::new() };
        sink.load_tables()?;
        Ok(sink)
    }

    fn load_tables(&mut self) -> Result<(), SinkError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT name, text_value, definition, state FROM {} WHERE scope = 'table'",
                quote(STATE_TABLE)
            ))
            .map_err(err("reading table state"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
            })
            .map_err(err("reading table state"))?;
        for row in rows {
            let (name, target_schema, definition, state) = row.map_err(err("reading table state"))?;
            let record = read_record(&name, target_schema, &definition, &state)?;
            self.tables.insert(record.schema.id.clone(), record);
        }
        Ok(())
    }

    /// The open connection, for reads (status, verify, tests).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The replica table name of a source table created under `target_schema`.
    pub fn table_name(target_schema: &str, id: &TableId) -> String {
        format!("{target_schema}_{}", id.table)
    }

    fn create_table_sql(target: &str, schema: &TableSchema) -> String {
        let mut sql = format!("DROP TABLE IF EXISTS {0}; CREATE TABLE {0} (", quote(target));
        for c in &schema.columns {
            sql.push_str(&format!(
                "{} {}{}, ",
                quote(&c.name),
                sqlite_type(c.sql_type),
                if c.nullable { "" } else { " NOT NULL" }
            ));
        }
        let pk: Vec<String> = schema.primary_key.iter().map(|c| quote(c)).collect();
        sql.push_str(&format!("PRIMARY KEY ({}))", pk.join(", ")));
        sql
    }

    fn write_table_record(tx: &rusqlite::Transaction<'_>, record: &TableRecord) -> Result<(), SinkError> {
        let schema = &record.schema;
        tx.execute(
            &format!(
                "INSERT INTO {} (scope, name, text_value, schema_hash, definition, state, updated_at)
                 VALUES ('table', ?1, ?2, ?3, ?4, ?5, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                 ON CONFLICT (scope, name) DO UPDATE SET text_value = excluded.text_value,
                   schema_hash = excluded.schema_hash, definition = excluded.definition,
                   state = excluded.state, updated_at = excluded.updated_at",
                quote(STATE_TABLE)
            ),
            params![
                schema.id.to_string(),
                record.target_schema,
                schema.fingerprint(),
                schema.to_history_json(),
                record.state.as_str()
            ],
        )
        .map_err(err("recording table state"))?;
        Ok(())
    }
}

impl Sink for SqliteSink {
    fn apply_schema(&mut self, change: &TableChange) -> Result<SchemaOutcome, SinkError> {
        let new = &change.table;
        let plan = plan(&self.options, self.tables.get(&new.id), change)?;
        let (outcome, record) = result(&plan, new);
        let tx = self.conn.transaction().map_err(err("starting schema transaction"))?;
        match &plan {
            SchemaPlan::Skip | SchemaPlan::Unchanged => return Ok(outcome),
            SchemaPlan::Drop(old) => {
                let target = Self::table_name(&old.target_schema, &new.id);
                tx.execute_batch(&format!("DROP TABLE IF EXISTS {}", quote(&target))).map_err(err("dropping table"))?;
            }
            SchemaPlan::Create(target_schema) | SchemaPlan::Recreate(TableRecord { target_schema, .. }) => {
                let target = Self::table_name(target_schema, &new.id);
                tx.execute_batch(&Self::create_table_sql(&target, new)).map_err(err(format!("creating {target}")))?;
            }
            SchemaPlan::AddColumns(old, added) => {
                let target = Self::table_name(&old.target_schema, &new.id);
                for c in added {
                    tx.execute_batch(&format!(
                        "ALTER TABLE {} ADD COLUMN {} {}",
                        quote(&target),
                        quote(&c.name),
                        sqlite_type(c.sql_type)
                    ))
                    .map_err(err(format!("adding column {} to {target}", c.name)))?;
                }
            }
        }
        match &record {
            Some(record) => Self::write_table_record(&tx, record)?,
            None => {
                tx.execute(
                    &format!("DELETE FROM {} WHERE scope = 'table' AND name = ?1", quote(STATE_TABLE)),
                    [new.id.to_string()],
                )
                .map_err(err("forgetting table"))?;
            }
        }
        tx.commit().map_err(err("committing schema change"))?;
        remember(&mut self.tables, &new.id, record);
        Ok(outcome)
    }

    fn tables(&self) -> Vec<TableRecord> {
        self.tables.values().cloned().collect()
    }

    fn replace_from_shadow(&mut self, id: &TableId) -> Result<(), SinkError> {
        let swap = shadow::Swap::plan(&self.tables, id, |live, shadow| {
            let columns: Vec<String> = live.schema.columns.iter().map(|c| quote(&c.name)).collect();
            shadow::copy_back_sql(
                &quote(&Self::table_name(&live.target_schema, id)),
                &quote(&Self::table_name(&shadow.target_schema, &shadow.schema.id)),
                &columns,
            )
        })?;
        let tx = self.conn.transaction().map_err(err("starting the resync swap"))?;
        tx.execute_batch(&swap.sql).map_err(err(format!("replacing {id} from its shadow")))?;
        Self::write_table_record(&tx, &swap.ready)?;
        tx.execute(
            &format!("DELETE FROM {} WHERE scope = 'table' AND name = ?1", quote(STATE_TABLE)),
            [&swap.shadow_name],
        )
        .map_err(err("forgetting the shadow"))?;
        tx.commit().map_err(err("committing the resync swap"))?;
        swap.done(&mut self.tables);
        Ok(())
    }

    fn apply(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let tx = self.conn.transaction().map_err(err("starting batch transaction"))?;
        for table in batch.tables() {
            let schema = table.schema();
            let id = &schema.id;
            if self.options.skips(id) {
                continue;
            }
            check_batch_schema(self.tables.get(id), schema)?;
            let target = quote(&Self::table_name(&self.tables[id].target_schema, id));
            if table.truncate_first() {
                tx.execute(&format!("DELETE FROM {target}"), []).map_err(err(format!("clearing {target}")))?;
            }
            let key_types: Vec<SqlType> =
                schema.primary_key.iter().map(|k| schema.column(k).map_or(SqlType::Other, |c| c.sql_type)).collect();
            let predicate: Vec<String> =
                schema.primary_key.iter().enumerate().map(|(i, k)| format!("{} = ?{}", quote(k), i + 1)).collect();
            let mut delete = tx
                .prepare_cached(&format!("DELETE FROM {target} WHERE {}", predicate.join(" AND ")))
                .map_err(err(format!("preparing delete on {target}")))?;
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
            let columns: Vec<String> = schema.columns.iter().map(|c| quote(&c.name)).collect();
            let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
            let updates: Vec<String> = schema
                .columns
                .iter()
                .filter(|c| !schema.primary_key.contains(&c.name))
                .map(|c| format!("{0} = excluded.{0}", quote(&c.name)))
                .collect();
            let pk: Vec<String> = schema.primary_key.iter().map(|k| quote(k)).collect();
            let on_conflict = if updates.is_empty() {
                "DO NOTHING".to_string()
            } else {
                format!("DO UPDATE SET {}", updates.join(", "))
            };
            let mut upsert = tx
                .prepare_cached(&format!(
                    "INSERT INTO {target} ({}) VALUES ({}) ON CONFLICT ({}) {on_conflict}",
                    columns.join(", "),
                    placeholders.join(", "),
                    pk.join(", ")
                ))
                .map_err(err(format!("preparing upsert on {target}")))?;
            // While a snapshot loads, rows are almost always new: a plain insert is cheaper
            // than an upsert, and a row whose key exists falls back to the upsert.
            let snapshotting = matches!(self.tables[id].state, TableState::Snapshotting | TableState::ResyncPending);
            let mut insert = tx
                .prepare_cached(&format!(
                    "INSERT INTO {target} ({}) VALUES ({})",
                    columns.join(", "),
                    placeholders.join(", ")
                ))
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
        {
            let mut offset = tx
                .prepare_cached(&format!(
                    "INSERT INTO {} (scope, name, text_value, int_value, updated_at)
                     VALUES ('offset', ?1, ?2, ?3, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                     ON CONFLICT (scope, name) DO UPDATE SET int_value = max(int_value, excluded.int_value),
                       updated_at = excluded.updated_at",
                    quote(STATE_TABLE)
                ))
                .map_err(err("preparing offset update"))?;
            for (name, topic, last) in offset_rows(batch.offsets(), batch.reset_epoch()) {
                offset.execute(params![name, topic, last]).map_err(err("recording offsets"))?;
            }
        }
        tx.commit().map_err(err("committing batch"))
    }
}

impl StateStore for SqliteSink {
    fn set_table_state(&mut self, id: &TableId, state: TableState) -> Result<(), SinkError> {
        let Some(record) = self.tables.get_mut(id) else {
            return Err(SinkError::Table { table: id.clone(), reason: "not in the replica".into() });
        };
        self.conn
            .execute(
                &format!(
                    "UPDATE {} SET state = ?1, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE scope = 'table' AND name = ?2",
                    quote(STATE_TABLE)
                ),
                params![state.as_str(), id.to_string()],
            )
            .map_err(err("updating table state"))?;
        record.state = state;
        Ok(())
    }

    fn write_facts(&mut self, facts: &[(&str, SessionValue)]) -> Result<(), SinkError> {
        let tx = self.conn.transaction().map_err(err("starting session transaction"))?;
        for (name, value) in facts {
            let (text, blob) = value.columns();
            tx.execute(
                &format!(
                    "INSERT INTO {} (scope, name, text_value, blob_value, updated_at)
                     VALUES ('session', ?1, ?2, ?3, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                     ON CONFLICT (scope, name) DO UPDATE SET text_value = excluded.text_value,
                       blob_value = excluded.blob_value, updated_at = excluded.updated_at",
                    quote(STATE_TABLE)
                ),
                params![name, text, blob],
            )
            .map_err(err("recording session"))?;
        }
        tx.commit().map_err(err("committing session"))
    }

    fn read_facts(&mut self) -> Result<Session, SinkError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT name, text_value, blob_value FROM {} WHERE scope = 'session'",
                quote(STATE_TABLE)
            ))
            .map_err(err("reading session"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, SessionValue::from_columns(r.get(1)?, r.get(2)?))))
            .map_err(err("reading session"))?;
        rows.collect::<Result<_, _>>().map_err(err("reading session"))
    }

    fn offset_rows(&mut self) -> Result<Offsets, SinkError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT name, int_value FROM {} WHERE scope = 'offset'", quote(STATE_TABLE)))
            .map_err(err("reading offsets"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(err("reading offsets"))?;
        let mut offsets = Offsets::new();
        for row in rows {
            let (name, last) = row.map_err(err("reading offsets"))?;
            if let Some(key) = parse_offset_name(&name) {
                offsets.insert(key, last);
            }
        }
        Ok(offsets)
    }
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
