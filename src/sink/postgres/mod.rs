//! The PostgreSQL target (`postgres://…` or `host=… dbname=…`).
//!
//! Per table and batch, inside the batch's one transaction: deleted keys are `COPY`ed (binary)
//! into a temp table and removed with one join `DELETE`; upserts are `COPY`ed into a temp
//! staging table and moved with one `INSERT … SELECT … ON CONFLICT (key) DO UPDATE`. While a
//! table's snapshot is loading, rows are first `COPY`ed straight into the target under a
//! savepoint, falling back to the staging path if a key already exists. `ON CONFLICT`
//! rather than `MERGE`: it is atomic against concurrent writers of the same key, where
//! PostgreSQL's `MERGE` can fail with a unique violation, and it works before PostgreSQL 15.
//!
//! Built on the `postgres` crate (tokio-postgres driven by its own small runtime): sinks run
//! on their own thread (see [`crate::sink::worker`]), so a blocking client is the simple fit.

pub mod copy;
pub mod tls;

use std::collections::HashMap;
use std::io::Write as _;

use ::postgres::{Client, NoTls, Transaction};

use self::copy::{PgKind, pg_type};
use super::plan::{SchemaPlan, SinkOptions, TableRecord, check_batch_schema, plan, read_record, remember, result};
use super::{CanonicalRow, ReplicaRead, SchemaOutcome, Sink, SinkError, shadow};
use crate::canonical::{canonical, parse_stored};
use crate::coalesce::{Batch, TableBatch};
use crate::schema::{SqlType, TableChange, TableId, TableSchema};
use crate::state::StateStore;
use crate::state::{Offsets, STATE_TABLE, Session, SessionValue, TableState, offset_rows, parse_offset_name};

/// The PostgreSQL replica.
pub struct PgSink {
    config: ::postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    client: Client,
    options: SinkOptions,
    tables: HashMap<TableId, TableRecord>,
}

impl std::fmt::Debug for PgSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config holds the password: show only where it points.
        f.debug_struct("PgSink")
            .field("hosts", &self.config.get_hosts().len())
            .field("dbname", &self.config.get_dbname())
            .field("tables", &self.tables.len())
            .finish_non_exhaustive()
    }
}

fn err(context: impl Into<String>) -> impl FnOnce(::postgres::Error) -> SinkError {
    let context = context.into();
    move |source| {
        // The driver's message for a TLS or I/O failure ("error performing TLS handshake")
        // hides the reason; name it.
        let context = match std::error::Error::source(&source).map(ToString::to_string) {
            Some(cause) if !source.to_string().contains(&cause) => format!("{context} ({cause})"),
            _ => context,
        };
        SinkError::Postgres { context, source }
    }
}

/// `"name"`, with `"` doubled.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote(schema), quote(table))
}

fn create_table_sql(target_schema: &str, table: &TableSchema) -> String {
    let mut sql = format!("CREATE TABLE {} (", qualified(target_schema, &table.id.table));
    for c in &table.columns {
        sql.push_str(&format!(
            "{} {}{}, ",
            quote(&c.name),
            pg_type(c.sql_type).0,
            if c.nullable { "" } else { " NOT NULL" }
        ));
    }
    let pk: Vec<String> = table.primary_key.iter().map(|c| quote(c)).collect();
    sql.push_str(&format!("PRIMARY KEY ({}))", pk.join(", ")));
    sql
}

/// Column types and storage kinds of the given columns, in order.
fn kinds<'a>(table: &TableSchema, names: impl Iterator<Item = &'a String>) -> Vec<(SqlType, PgKind)> {
    names.map(|n| table.column(n).map_or(SqlType::Other, |c| c.sql_type)).map(|t| (t, pg_type(t).1)).collect()
}

impl PgSink {
    /// Connects to the replica named by a connection string and creates `_ReplicationState`.
    pub fn open(connection_string: &str, options: SinkOptions) -> Result<Self, SinkError> {
        let tls::Target { config, tls } = tls::parse(connection_string)?;
        let client = Self::connect(&config, tls.as_ref())?;
        let mut sink = Self { config, tls, client, options, tables: HashMap::new() };
        sink.client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {} (
                    scope text NOT NULL CHECK (scope IN ('session', 'offset', 'table')),
                    name text NOT NULL,
                    text_value text,
                    int_value bigint,
                    blob_value bytea,
                    schema_hash text,
                    definition text,
                    state text,
                    updated_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (scope, name))",
                quote(STATE_TABLE)
            ))
            .map_err(err("creating _ReplicationState"))?;
        sink.load_tables()?;
        Ok(sink)
    }

    fn connect(
        config: &::postgres::Config,
        tls: Option<&tokio_postgres_rustls::MakeRustlsConnect>,
    ) -> Result<Client, SinkError> {
        let mut client = match tls {
            Some(tls) => config.connect(tls.clone()),
            None => config.connect(NoTls),
        }
        .map_err(err("connecting"))?;
        // Fixed output forms, whatever the server's defaults: `read_rows` parses them.
        client
            .batch_execute("SET DateStyle = ISO; SET IntervalStyle = iso_8601; SET extra_float_digits = 1")
            .map_err(err("setting session options"))?;
        Ok(client)
    }

    /// Reconnects if the server closed the connection, so a retried batch can succeed.
    fn ensure_connected(&mut self) -> Result<(), SinkError> {
        if self.client.is_closed() {
            tracing::warn!("PostgreSQL connection lost; reconnecting");
            self.client = Self::connect(&self.config, self.tls.as_ref())?;
        }
        Ok(())
    }

    fn load_tables(&mut self) -> Result<(), SinkError> {
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT name, text_value, definition, state FROM {} WHERE scope = 'table'",
                    quote(STATE_TABLE)
                ),
                &[],
            )
            .map_err(err("reading table state"))?;
        for row in rows {
            let record = read_record(row.get(0), row.get(1), row.get(2), row.get(3))?;
            self.tables.insert(record.schema.id.clone(), record);
        }
        Ok(())
    }

    /// Runs statements outside any batch (operations and tests, e.g. `verify`'s checks).
    pub fn execute_batch(&mut self, statements: &str) -> Result<(), SinkError> {
        self.ensure_connected()?;
        self.client.batch_execute(statements).map_err(err("running statements"))
    }

    fn write_table_record(tx: &mut Transaction<'_>, record: &TableRecord) -> Result<(), SinkError> {
        let schema = &record.schema;
        tx.execute(
            &format!(
                "INSERT INTO {} (scope, name, text_value, schema_hash, definition, state, updated_at)
                 VALUES ('table', $1, $2, $3, $4, $5, now())
                 ON CONFLICT (scope, name) DO UPDATE SET text_value = excluded.text_value,
                   schema_hash = excluded.schema_hash, definition = excluded.definition,
                   state = excluded.state, updated_at = excluded.updated_at",
                quote(STATE_TABLE)
            ),
            &[
                &schema.id.to_string(),
                &record.target_schema,
                &schema.fingerprint(),
                &schema.to_history_json(),
                &record.state.as_str(),
            ],
        )
        .map_err(err("recording table state"))?;
        Ok(())
    }
}

/// Streams rows in binary COPY format into `copy_sql`'s table, in chunks of about 1 MiB.
fn copy_rows<'r>(
    tx: &mut Transaction<'_>,
    copy_sql: &str,
    types: &[(SqlType, PgKind)],
    rows: impl Iterator<Item = &'r [crate::row::Cell]>,
    table: &TableId,
) -> Result<(), SinkError> {
    const CHUNK: usize = 1 << 20;
    let mut writer = tx.copy_in(copy_sql).map_err(err(format!("starting COPY for {table}")))?;
    let mut buf = Vec::with_capacity(CHUNK + 4096);
    copy::header(&mut buf);
    let io = |context: &str| {
        let context = format!("{context} {table}");
        move |source| SinkError::Io { context, source }
    };
    for row in rows {
        copy::write_row(&mut buf, row, types.iter())
            .map_err(|reason| SinkError::Table { table: table.clone(), reason })?;
        if buf.len() >= CHUNK {
            writer.write_all(&buf).map_err(io("copying rows of"))?;
            buf.clear();
        }
    }
    copy::trailer(&mut buf);
    writer.write_all(&buf).map_err(io("copying rows of"))?;
    writer.finish().map_err(err(format!("finishing COPY for {table}")))?;
    Ok(())
}

/// Applies one table's part of a batch inside the batch transaction. `snapshotting` tables
/// try the fast path first (see [`copy_or_merge`]).
fn apply_table(
    tx: &mut Transaction<'_>,
    target_schema: &str,
    table: &TableBatch,
    snapshotting: bool,
) -> Result<(), SinkError> {
    let schema = table.schema();
    let id = &schema.id;
    let target = qualified(target_schema, &id.table);
    let keys: Vec<String> = schema.primary_key.iter().map(|k| quote(k)).collect();
    let join: Vec<String> = keys.iter().map(|k| format!("t.{k} = s.{k}")).collect();
    let mut empty = false;
    if table.truncate_first() {
        tx.batch_execute(&format!("TRUNCATE {target}")).map_err(err(format!("clearing {target}")))?;
        empty = true;
    }
    let mut deletes: Vec<_> = table.deletes().collect();
    if !deletes.is_empty() && !empty {
        deletes.sort_unstable();
        tx.batch_execute(&format!(
            "CREATE TEMP TABLE dbmirror_keys ON COMMIT DROP AS SELECT {} FROM {target} WITH NO DATA",
            keys.join(", ")
        ))
        .map_err(err(format!("staging deleted keys of {target}")))?;
        let types = kinds(schema, schema.primary_key.iter());
        copy_rows(tx, "COPY dbmirror_keys FROM STDIN (FORMAT binary)", &types, deletes.iter().map(|k| &k[..]), id)?;
        tx.batch_execute(&format!(
            "DELETE FROM {target} AS t USING dbmirror_keys AS s WHERE {}; DROP TABLE dbmirror_keys",
            join.join(" AND ")
        ))
        .map_err(err(format!("deleting from {target}")))?;
    }
    let mut upserts: Vec<_> = table.upserts().collect();
    if upserts.is_empty() {
        return Ok(());
    }
    upserts.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let columns: Vec<String> = schema.columns.iter().map(|c| quote(&c.name)).collect();
    let types = kinds(schema, schema.columns.iter().map(|c| &c.name));
    let rows = upserts.iter().map(|(_, row)| &row[..]);
    if empty {
        // Cleared for a snapshot: the batch's rows are unique by key, so they go straight in.
        let copy_sql = format!("COPY {target} ({}) FROM STDIN (FORMAT binary)", columns.join(", "));
        return copy_rows(tx, &copy_sql, &types, rows, id);
    }
    if snapshotting {
        // A snapshot in progress: its rows are almost always new, so copy them straight into
        // the target under a savepoint; if any key already exists (a restarted snapshot, a
        // change racing an incremental one), undo that and take the merge path below.
        tx.batch_execute("SAVEPOINT dbmirror_copy").map_err(err("setting a savepoint"))?;
        let copy_sql = format!("COPY {target} ({}) FROM STDIN (FORMAT binary)", columns.join(", "));
        match copy_rows(tx, &copy_sql, &types, upserts.iter().map(|(_, row)| &row[..]), id) {
            Ok(()) => return tx.batch_execute("RELEASE SAVEPOINT dbmirror_copy").map_err(err("releasing a savepoint")),
            Err(SinkError::Postgres { source, .. })
                if source.code() == Some(&::postgres::error::SqlState::UNIQUE_VIOLATION) =>
            {
                tx.batch_execute("ROLLBACK TO SAVEPOINT dbmirror_copy").map_err(err("rolling back a savepoint"))?;
            }
            Err(other) => return Err(other),
        }
    }
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE dbmirror_stage ON COMMIT DROP AS SELECT {} FROM {target} WITH NO DATA",
        columns.join(", ")
    ))
    .map_err(err(format!("staging rows of {target}")))?;
    let copy_sql = format!("COPY dbmirror_stage ({}) FROM STDIN (FORMAT binary)", columns.join(", "));
    copy_rows(tx, &copy_sql, &types, rows, id)?;
    let updates: Vec<String> = schema
        .columns
        .iter()
        .filter(|c| !schema.primary_key.contains(&c.name))
        .map(|c| format!("{0} = excluded.{0}", quote(&c.name)))
        .collect();
    let action =
        if updates.is_empty() { "DO NOTHING".to_string() } else { format!("DO UPDATE SET {}", updates.join(", ")) };
    tx.batch_execute(&format!(
        "INSERT INTO {target} ({cols}) SELECT {cols} FROM dbmirror_stage ON CONFLICT ({}) {action}; DROP TABLE dbmirror_stage",
        keys.join(", "),
        cols = columns.join(", ")
    ))
    .map_err(err(format!("writing {target}")))?;
    Ok(())
}

impl Sink for PgSink {
    fn apply_schema(&mut self, change: &TableChange) -> Result<SchemaOutcome, SinkError> {
        self.ensure_connected()?;
        let new = &change.table;
        let plan = plan(&self.options, self.tables.get(&new.id), change)?;
        let (outcome, record) = result(&plan, new);
        let mut tx = self.client.transaction().map_err(err("starting schema transaction"))?;
        match &plan {
            SchemaPlan::Skip | SchemaPlan::Unchanged => return Ok(outcome),
            SchemaPlan::Drop(old) => {
                tx.batch_execute(&format!("DROP TABLE IF EXISTS {}", qualified(&old.target_schema, &new.id.table)))
                    .map_err(err("dropping table"))?;
            }
            SchemaPlan::Create(target_schema) | SchemaPlan::Recreate(TableRecord { target_schema, .. }) => {
                let target = qualified(target_schema, &new.id.table);
                tx.batch_execute(&format!(
                    "CREATE SCHEMA IF NOT EXISTS {}; DROP TABLE IF EXISTS {target}; {}",
                    quote(target_schema),
                    create_table_sql(target_schema, new)
                ))
                .map_err(err(format!("creating {target}")))?;
            }
            SchemaPlan::AddColumns(old, added) => {
                let target = qualified(&old.target_schema, &new.id.table);
                for c in added {
                    tx.batch_execute(&format!(
                        "ALTER TABLE {target} ADD COLUMN {} {}",
                        quote(&c.name),
                        pg_type(c.sql_type).0
                    ))
                    .map_err(err(format!("adding column {} to {target}", c.name)))?;
                }
            }
        }
        match &record {
            Some(record) => Self::write_table_record(&mut tx, record)?,
            None => {
                tx.execute(
                    &format!("DELETE FROM {} WHERE scope = 'table' AND name = $1", quote(STATE_TABLE)),
                    &[&new.id.to_string()],
                )
                .map_err(err("forgetting table"))?;
            }
        }
        tx.commit().map_err(err("committing schema change"))?;
        remember(&mut self.tables, &new.id, record);
        Ok(outcome)
    }

    fn apply(&mut self, batch: &Batch) -> Result<(), SinkError> {
        self.ensure_connected()?;
        let mut tx = self.client.transaction().map_err(err("starting batch transaction"))?;
        for table in batch.tables() {
            let id = &table.schema().id;
            if self.options.skips(id) {
                continue;
            }
            check_batch_schema(self.tables.get(id), table.schema())?;
            let record = &self.tables[id];
            let snapshotting = matches!(record.state, TableState::Snapshotting | TableState::ResyncPending);
            apply_table(&mut tx, &record.target_schema, table, snapshotting)?;
        }
        let statement = tx
            .prepare(&format!(
                "INSERT INTO {} (scope, name, text_value, int_value, updated_at) VALUES ('offset', $1, $2, $3, now())
                 ON CONFLICT (scope, name) DO UPDATE SET int_value = GREATEST({0}.int_value, excluded.int_value),
                   updated_at = excluded.updated_at",
                quote(STATE_TABLE)
            ))
            .map_err(err("preparing offset update"))?;
        for (name, topic, last) in offset_rows(batch.offsets(), batch.reset_epoch()) {
            tx.execute(&statement, &[&name, &topic, &last]).map_err(err("recording offsets"))?;
        }
        tx.commit().map_err(err("committing batch"))
    }

    fn tables(&self) -> Vec<TableRecord> {
        self.tables.values().cloned().collect()
    }

    fn replace_from_shadow(&mut self, id: &TableId) -> Result<(), SinkError> {
        self.ensure_connected()?;
        let swap = shadow::Swap::plan(&self.tables, id, |live, shadow| {
            let columns: Vec<String> = live.schema.columns.iter().map(|c| quote(&c.name)).collect();
            shadow::copy_back_sql(
                &qualified(&live.target_schema, &id.table),
                &qualified(&shadow.target_schema, &shadow.schema.id.table),
                &columns,
            )
        })?;
        let mut tx = self.client.transaction().map_err(err("starting the resync swap"))?;
        tx.batch_execute(&swap.sql).map_err(err(format!("replacing {id} from its shadow")))?;
        Self::write_table_record(&mut tx, &swap.ready)?;
        tx.execute(
            &format!("DELETE FROM {} WHERE scope = 'table' AND name = $1", quote(STATE_TABLE)),
            &[&swap.shadow_name],
        )
        .map_err(err("forgetting the shadow"))?;
        tx.commit().map_err(err("committing the resync swap"))?;
        swap.done(&mut self.tables);
        Ok(())
    }
}

impl StateStore for PgSink {
    fn offset_rows(&mut self) -> Result<Offsets, SinkError> {
        self.ensure_connected()?;
        let rows = self
            .client
            .query(&format!("SELECT name, int_value FROM {} WHERE scope = 'offset'", quote(STATE_TABLE)), &[])
            .map_err(err("reading offsets"))?;
        Ok(rows.iter().filter_map(|r| Some((parse_offset_name(r.get(0))?, r.get::<_, i64>(1)))).collect())
    }

    fn set_table_state(&mut self, id: &TableId, state: TableState) -> Result<(), SinkError> {
        self.ensure_connected()?;
        let Some(record) = self.tables.get_mut(id) else {
            return Err(SinkError::Table { table: id.clone(), reason: "not in the replica".into() });
        };
        self.client
            .execute(
                &format!(
                    "UPDATE {} SET state = $1, updated_at = now() WHERE scope = 'table' AND name = $2",
                    quote(STATE_TABLE)
                ),
                &[&state.as_str(), &id.to_string()],
            )
            .map_err(err("updating table state"))?;
        record.state = state;
        Ok(())
    }

    fn write_facts(&mut self, facts: &[(&str, SessionValue)]) -> Result<(), SinkError> {
        self.ensure_connected()?;
        let mut tx = self.client.transaction().map_err(err("starting session transaction"))?;
        for (name, value) in facts {
            let (text, blob) = value.columns();
            tx.execute(
                &format!(
                    "INSERT INTO {} (scope, name, text_value, blob_value, updated_at) VALUES ('session', $1, $2, $3, now())
                     ON CONFLICT (scope, name) DO UPDATE SET text_value = excluded.text_value,
                       blob_value = excluded.blob_value, updated_at = excluded.updated_at",
                    quote(STATE_TABLE)
                ),
                &[name, &text, &blob],
            )
            .map_err(err("recording session"))?;
        }
        tx.commit().map_err(err("committing session"))
    }

    fn read_facts(&mut self) -> Result<Session, SinkError> {
        self.ensure_connected()?;
        let rows = self
            .client
            .query(
                &format!("SELECT name, text_value, blob_value FROM {} WHERE scope = 'session'", quote(STATE_TABLE)),
                &[],
            )
            .map_err(err("reading session"))?;
        Ok(rows.iter().map(|r| (r.get(0), SessionValue::from_columns(r.get(1), r.get(2)))).collect())
    }
}

impl ReplicaRead for PgSink {
    fn check_writable(&mut self) -> Result<(), SinkError> {
        self.ensure_connected()?;
        let mut tx = self.client.transaction().map_err(err("starting the write check"))?;
        tx.batch_execute(&super::probe_sql(&quote("_dbmirror_probe"))).map_err(err("creating a table"))?;
        tx.rollback().map_err(err("rolling the write check back"))
    }

    fn count_rows(&mut self, id: &TableId) -> Result<u64, SinkError> {
        self.ensure_connected()?;
        let record = self.tables.get(id).ok_or_else(|| super::missing(id))?;
        let target = qualified(&record.target_schema, &id.table);
        let row = self
            .client
            .query_one(&format!("SELECT count(*) FROM {target}"), &[])
            .map_err(err(format!("counting {target}")))?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    fn read_rows(&mut self, id: &TableId) -> Result<Vec<CanonicalRow>, SinkError> {
        self.ensure_connected()?;
        let record = self
            .tables
            .get(id)
            .ok_or_else(|| SinkError::Table { table: id.clone(), reason: "not in the replica".into() })?;
        let target = qualified(&record.target_schema, &id.table);
        let columns: Vec<String> = record.schema.columns.iter().map(|c| format!("{}::text", quote(&c.name))).collect();
        let types: Vec<SqlType> = record.schema.columns.iter().map(|c| c.sql_type).collect();
        let rows = self
            .client
            .query(&format!("SELECT {} FROM {target}", columns.join(", ")), &[])
            .map_err(err(format!("reading {target}")))?;
        rows.iter()
            .map(|row| {
                types
                    .iter()
                    .enumerate()
                    .map(|(i, sql)| match row.get::<_, Option<&str>>(i) {
                        None => Ok(None),
                        Some(text) => parse_stored(text, *sql)
                            .map(|cell| canonical(&cell, *sql))
                            .map_err(|reason| SinkError::Table { table: id.clone(), reason }),
                    })
                    .collect()
            })
            .collect()
    }
}
