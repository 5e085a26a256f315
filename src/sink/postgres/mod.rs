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

pub mod encode;
pub mod server;
pub mod sql;
pub mod tls;

use std::collections::HashMap;
use std::io::Write as _;

use ::postgres::{Client, NoTls, Transaction};

use ::postgres::GenericClient;
use ::postgres::types::ToSql;

use self::encode::{PgKind, pg_type};
pub use self::sql::quote;
use super::ddl;
use super::plan::{Intent, SchemaPlan, SinkOptions, check_batch_schema, writes_to};
use super::{CanonicalRow, ReplicaRead, SchemaOutcome, Sink, SinkError};
use crate::canonical::{canonical, parse_stored};
use crate::coalesce::{Batch, TableBatch};
use crate::schema::{SqlType, TableChange, TableId, TableSchema};
use crate::state::fence;
use crate::state::table::{self, Cell as StateCell, Column, Param as StateParam, StateExec};
use crate::state::{Offsets, Session, SessionValue, StateStatements, StateStore, TableRecord, TableState};
use sql::qualified;

/// The PostgreSQL replica.
pub struct PgSink {
    config: ::postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    client: Client,
    options: SinkOptions,
    tables: HashMap<TableId, TableRecord>,
    state: StateStatements,
    /// Staging tables this connection has created and committed (see [`sql::stage_names`]).
    stages: std::collections::HashSet<String>,
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

pub(crate) fn err(context: impl Into<String>) -> impl FnOnce(::postgres::Error) -> SinkError {
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

/// Column types and storage kinds of the given columns, in order.
fn kinds<'a>(table: &TableSchema, names: impl Iterator<Item = &'a String>) -> Vec<(SqlType, PgKind)> {
    names.map(|n| table.column(n).map_or(SqlType::Other, |c| c.sql_type)).map(|t| (t, pg_type(t).1)).collect()
}

impl PgSink {
    /// Connects to the replica named by a connection string and creates `_ReplicationState`.
    pub fn open(connection_string: &str, options: SinkOptions) -> Result<Self, SinkError> {
        let tls::Target { config, tls } = tls::parse(connection_string)?;
        let client = Self::connect(&config, tls.as_ref())?;
        let state = sql::state_statements();
        let stages = Default::default();
        let mut sink = Self { config, tls, client, options, tables: HashMap::new(), state, stages };
        sink.client.batch_execute(&sink.state.create_table).map_err(err("creating _ReplicationState"))?;
        sink.client.batch_execute(&sink.state.errors.create).map_err(err("creating _ReplicationErrors"))?;
        sink.tables = table::read_tables(&mut Exec(&mut sink.client), &sink.state)?;
        Ok(sink)
    }

    pub(crate) fn connect(
        config: &::postgres::Config,
        tls: Option<&tokio_postgres_rustls::MakeRustlsConnect>,
    ) -> Result<Client, SinkError> {
        let mut client = match tls {
            Some(tls) => config.connect(tls.clone()),
            None => config.connect(NoTls),
        }
        .map_err(err(crate::db::CONNECTING))?;
        // Fixed output forms, whatever the server's defaults: `read_rows` parses them. And the
        // batch's staged keys join the table through its primary key, row by row: the staging
        // tables have no statistics, so the planner otherwise hashes or sorts and scans the whole
        // table for every batch (a 100-row batch took a quarter of a second at 20,000 rows per
        // table). This connection runs only dbmirror's own statements. Notices (`relation …
        // already exists, skipping` from every `IF NOT EXISTS`) are not news: warnings and
        // errors still come through.
        client
            .batch_execute(
                "SET DateStyle = ISO; SET IntervalStyle = iso_8601; SET extra_float_digits = 1; \
                 SET enable_hashjoin = off; SET enable_mergejoin = off; SET client_min_messages = warning",
            )
            .map_err(err("setting session options"))?;
        Ok(client)
    }

    /// Reconnects if the server closed the connection, so a retried batch can succeed.
    fn ensure_connected(&mut self) -> Result<(), SinkError> {
        if self.client.is_closed() {
            tracing::warn!("PostgreSQL connection lost; reconnecting");
            self.client = Self::connect(&self.config, self.tls.as_ref())?;
            // Temp tables live and die with their session.
            self.stages.clear();
        }
        Ok(())
    }

    /// Runs statements outside any batch (operations and tests, e.g. `verify`'s checks).
    pub fn execute_batch(&mut self, statements: &str) -> Result<(), SinkError> {
        self.ensure_connected()?;
        self.client.batch_execute(statements).map_err(err("running statements"))
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
    encode::header(&mut buf);
    let io = |context: &str| {
        let context = format!("{context} {table}");
        move |source| SinkError::Io { context, source }
    };
    for row in rows {
        encode::write_row(&mut buf, row, types.iter())
            .map_err(|reason| SinkError::Table { table: table.clone(), reason })?;
        if buf.len() >= CHUNK {
            writer.write_all(&buf).map_err(io("copying rows of"))?;
            buf.clear();
        }
    }
    encode::trailer(&mut buf);
    writer.write_all(&buf).map_err(io("copying rows of"))?;
    writer.finish().map_err(err(format!("finishing COPY for {table}")))?;
    Ok(())
}

/// Applies one table's part of a batch inside the batch transaction. `snapshotting` tables
/// try the fast path first (see [`copy_or_merge`]).
/// Staging tables of this connection: those committed earlier, and those the open batch created
/// (kept only if it commits: a rolled-back batch takes its `CREATE`s with it).
struct Stages<'a> {
    committed: &'a std::collections::HashSet<String>,
    created: Vec<String>,
}

impl Stages<'_> {
    fn ensure(
        &mut self,
        tx: &mut Transaction<'_>,
        name: &str,
        create: impl FnOnce() -> String,
    ) -> Result<(), SinkError> {
        if self.committed.contains(name) || self.created.iter().any(|c| c == name) {
            return Ok(());
        }
        tx.batch_execute(&create()).map_err(err(format!("creating the staging table {name}")))?;
        self.created.push(name.to_owned());
        Ok(())
    }
}

fn apply_table(
    tx: &mut Transaction<'_>,
    target_schema: &str,
    table: &TableBatch,
    snapshotting: bool,
    stages: &mut Stages<'_>,
    soft_at: Option<&str>,
) -> Result<(), SinkError> {
    let schema = table.schema();
    let id = &schema.id;
    let target = qualified(target_schema, &id.table);
    let (key_stage, row_stage) = sql::stage_names(&target, schema);
    let mut empty = false;
    if table.truncate_first() {
        // A soft table flags its rows instead (see `owner::modes`): it is not empty after.
        let clear = soft_at.map_or_else(|| sql::truncate(&target), |at| sql::SOFT.flag_all(&target, at));
        tx.batch_execute(&clear).map_err(err(format!("clearing {target}")))?;
        empty = soft_at.is_none();
    }
    let mut deletes: Vec<_> = table.deletes().collect();
    if !deletes.is_empty() && !empty {
        deletes.sort_unstable();
        stages.ensure(tx, &key_stage, || sql::create_key_stage(&key_stage, &target, schema))?;
        let types = kinds(schema, schema.primary_key.iter());
        copy_rows(tx, &sql::copy_keys(&key_stage), &types, deletes.iter().map(|k| &k[..]), id)?;
        let delete = match soft_at {
            Some(at) => sql::soft_delete_staged_keys(&target, schema, &key_stage, at),
            None => sql::delete_staged_keys(&target, schema, &key_stage),
        };
        tx.batch_execute(&delete).map_err(err(format!("deleting from {target}")))?;
    }
    let mut upserts: Vec<_> = table.upserts().collect();
    if upserts.is_empty() {
        return Ok(());
    }
    upserts.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let types = kinds(schema, schema.columns.iter().map(|c| &c.name));
    let rows = upserts.iter().map(|(_, row)| &row[..]);
    let copy_sql = sql::copy_into(&target, schema);
    if empty {
        // Cleared for a snapshot: the batch's rows are unique by key, so they go straight in.
        return copy_rows(tx, &copy_sql, &types, rows, id);
    }
    if snapshotting {
        // A snapshot in progress: its rows are almost always new, so copy them straight into
        // the target under a savepoint; if any key already exists (a restarted snapshot, a
        // change racing an incremental one), undo that and take the merge path below.
        tx.batch_execute("SAVEPOINT dbmirror_copy").map_err(err("setting a savepoint"))?;
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
    stages.ensure(tx, &row_stage, || sql::create_row_stage(&row_stage, &target, schema))?;
    copy_rows(tx, &sql::copy_into(&row_stage, schema), &types, rows, id)?;
    tx.batch_execute(&sql::merge_staged_rows(&target, schema, &row_stage)).map_err(err(format!("writing {target}")))?;
    Ok(())
}

impl Sink for PgSink {
    fn change_schema(&mut self, change: &TableChange, intent: &Intent) -> Result<SchemaOutcome, SinkError> {
        self.ensure_connected()?;
        let new = &change.table;
        let ddl = |exec: &mut dyn StateExec, plan: &SchemaPlan| match plan {
            SchemaPlan::Skip | SchemaPlan::Unchanged => Ok(()),
            SchemaPlan::Drop(old) | SchemaPlan::Fail(old) => {
                exec.execute_batch(&sql::drop_table(&old.target_schema, &new.id.table))
            }
            SchemaPlan::Create(target_schema) | SchemaPlan::Recreate(TableRecord { target_schema, .. }) => {
                exec.execute_batch(&sql::create_table(target_schema, new))
            }
            SchemaPlan::AddColumns(old, added) => added
                .iter()
                .try_for_each(|c| exec.execute_batch(&sql::add_column(&old.target_schema, &new.id.table, c))),
        };
        let exec = &mut Exec(&mut self.client);
        ddl::apply_schema(exec, &self.state, &self.options, &mut self.tables, (change, intent), ddl)
    }

    fn apply(&mut self, batch: &Batch) -> Result<(), SinkError> {
        self.ensure_connected()?;
        let mut tx = self.client.transaction().map_err(err("starting batch transaction"))?;
        fence::check(&mut Exec(&mut tx), &self.state)?;
        let mut stages = Stages { committed: &self.stages, created: Vec::new() };
        for table in batch.tables() {
            let id = &table.schema().id;
            if !writes_to(&self.options, self.tables.get(id), id) {
                continue;
            }
            check_batch_schema(self.tables.get(id), table.schema())?;
            let record = &self.tables[id];
            let snapshotting = matches!(record.state, TableState::Snapshotting | TableState::ResyncPending);
            let soft_at = sql::SOFT.delete_time(table.schema(), batch);
            apply_table(&mut tx, &record.target_schema, table, snapshotting, &mut stages, soft_at.as_deref())?;
        }
        table::write_offsets(&mut Exec(&mut tx), &self.state, batch.offsets(), batch.reset_epoch())?;
        crate::state::refused::delete_refused(&mut Exec(&mut tx), &self.state, batch.superseded())?;
        let created = stages.created;
        tx.commit().map_err(err("committing batch"))?;
        self.stages.extend(created);
        Ok(())
    }

    fn run_script(&mut self, sql: &str) -> Result<(), SinkError> {
        self.ensure_connected()?;
        let mut tx = self.client.transaction().map_err(err("starting a hook's transaction"))?;
        fence::check(&mut Exec(&mut tx), &self.state)?;
        tx.batch_execute(sql).map_err(err("running a hook's SQL"))?;
        tx.commit().map_err(err("committing a hook's SQL"))
    }

    fn target_name(&self, id: &TableId) -> Option<String> {
        self.tables.get(id).map(|r| qualified(&r.target_schema, &id.table))
    }

    fn replace_from_shadow(&mut self, id: &TableId) -> Result<(), SinkError> {
        self.ensure_connected()?;
        ddl::swap_in(&mut Exec(&mut self.client), &self.state, &mut self.tables, id, |live, shadow| {
            sql::SOFT.swap(
                &qualified(&live.target_schema, &id.table),
                &qualified(&shadow.target_schema, &shadow.schema.id.table),
                &live.schema,
            )
        })
    }

    fn retire_table(&mut self, id: &TableId, new_name: &str) -> Result<(), SinkError> {
        self.ensure_connected()?;
        ddl::retire(&mut Exec(&mut self.client), &self.state, &mut self.tables, id, |record| {
            sql::rename_table(&record.target_schema, &id.table, new_name)
        })
    }
}

impl StateStore for PgSink {
    fn all_records(&self) -> Vec<TableRecord> {
        self.tables.values().cloned().collect()
    }

    fn table(&self, id: &TableId) -> Option<TableRecord> {
        self.tables.get(id).cloned()
    }

    fn offset_rows(&mut self) -> Result<Offsets, SinkError> {
        self.ensure_connected()?;
        table::read_offsets(&mut Exec(&mut self.client), &self.state)
    }

    fn set_table_state(&mut self, id: &TableId, state: TableState) -> Result<(), SinkError> {
        self.ensure_connected()?;
        table::set_table_state(&mut Exec(&mut self.client), &self.state, &mut self.tables, id, state)
    }

    fn write_facts(&mut self, facts: &[(&str, SessionValue)]) -> Result<(), SinkError> {
        self.ensure_connected()?;
        table::write_facts(&mut Exec(&mut self.client), &self.state, facts)
    }

    fn read_facts(&mut self) -> Result<Session, SinkError> {
        self.ensure_connected()?;
        table::read_facts(&mut Exec(&mut self.client), &self.state)
    }

    fn claim_writer(&mut self, holder: &str) -> Result<fence::Fence, SinkError> {
        self.ensure_connected()?;
        let (fence, tables) = fence::claim(&mut Exec(&mut self.client), &self.state, holder)?;
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
        self.ensure_connected()?;
        crate::state::refused::write_refused(&mut Exec(&mut self.client), &self.state, refused, progress)
    }

    fn read_refused(&mut self) -> Result<Vec<crate::state::refused::RefusedRow>, SinkError> {
        self.ensure_connected()?;
        crate::state::refused::read_refused(&mut Exec(&mut self.client), &self.state)
    }

    fn delete_refused(&mut self, ids: &[i64]) -> Result<(), SinkError> {
        self.ensure_connected()?;
        let state = &self.state;
        table::in_transaction(&mut Exec(&mut self.client), state, |exec| {
            crate::state::refused::delete_refused(exec, state, ids)
        })
    }
}

/// `_ReplicationState` statements on a client or an open transaction.
struct Exec<'c, C: GenericClient>(&'c mut C);

fn bind<'p>(params: &'p [StateParam<'p>]) -> Vec<&'p (dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| match p {
            StateParam::Text(t) => t as &(dyn ToSql + Sync),
            StateParam::OptText(t) => t as &(dyn ToSql + Sync),
            StateParam::Int(v) => v as &(dyn ToSql + Sync),
            StateParam::OptBlob(b) => b as &(dyn ToSql + Sync),
        })
        .collect()
}

impl<C: GenericClient> StateExec for Exec<'_, C> {
    fn execute(&mut self, sql: &str, params: &[StateParam<'_>]) -> Result<(), SinkError> {
        self.0.execute(sql, &bind(params)).map_err(err("writing _ReplicationState"))?;
        Ok(())
    }

    fn execute_batch(&mut self, sql: &str) -> Result<(), SinkError> {
        let first = sql.lines().next().unwrap_or_default().trim();
        self.0.batch_execute(sql).map_err(err(format!("running `{first}`")))
    }

    fn query(&mut self, sql: &str, columns: &[Column]) -> Result<Vec<Vec<StateCell>>, SinkError> {
        let rows = self.0.query(sql, &[]).map_err(err("reading _ReplicationState"))?;
        let cell = |row: &::postgres::Row, i: usize, column: &Column| -> Result<StateCell, ::postgres::Error> {
            Ok(match column {
                Column::Text => row.try_get::<_, Option<String>>(i)?.map_or(StateCell::Null, StateCell::Text),
                Column::Int => row.try_get::<_, Option<i64>>(i)?.map_or(StateCell::Null, StateCell::Int),
                Column::Blob => row.try_get::<_, Option<Vec<u8>>>(i)?.map_or(StateCell::Null, StateCell::Blob),
            })
        };
        rows.iter()
            .map(|row| columns.iter().enumerate().map(|(i, c)| cell(row, i, c)).collect::<Result<Vec<_>, _>>())
            .collect::<Result<_, _>>()
            .map_err(err("reading _ReplicationState"))
    }

    fn begin(&mut self) -> Result<(), SinkError> {
        self.0.batch_execute("BEGIN").map_err(err("starting a transaction"))
    }

    fn commit(&mut self) -> Result<(), SinkError> {
        self.0.batch_execute("COMMIT").map_err(err("committing"))
    }

    fn rollback(&mut self) -> Result<(), SinkError> {
        self.0.batch_execute("ROLLBACK").map_err(err("rolling back"))
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
