//! The SQL Server target: the product's replica database (tiberius 0.13, TLS by rustls).
//!
//! Per table and batch the plan is: TDS bulk load of the upserts into a session temp table
//! typed exactly like the target, one set-based `MERGE … WITH (UPDLOCK, HOLDLOCK)`, a bulk load
//! of deleted keys and one join `DELETE`, and the offsets `MERGE` into `_ReplicationState`,
//! all in one transaction: no per-row statements and no statement parameters beyond the few
//! the offsets need, so the 2,100-parameter limit never applies. Into an empty table (an
//! initial snapshot) rows are bulk-loaded straight into the target with `TABLOCK`. Bulk loads
//! use `KEEP_NULLS`, so a `NULL` from the source never turns into a column default.
//!
//! Status: the statement text ([`sql`]) is checked offline (golden tests and a T-SQL parser),
//! the value encoding ([`encode`]) is unit-tested per type, and the whole sink test suite runs
//! against a real server when `DBMIRROR_MSSQL_URL` is set. SQL Server could not be installed
//! where this was written, so that suite has not run here.

pub mod encode;
pub mod server;
pub mod sql;

use std::collections::HashMap;

use tiberius::{Client, ColumnData, Config, SqlBulkCopyOption, SqlBulkCopyOptions, TokenRow};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use super::ddl;
use super::plan::{Intent, SchemaPlan, SinkOptions, check_batch_schema, writes_to};
use super::{CanonicalRow, ReplicaRead, SchemaOutcome, Sink, SinkError};
use crate::canonical::canonical;
use crate::coalesce::{Batch, TableBatch};
use crate::row::Cell;
use crate::schema::{SqlType, TableChange, TableId};
use crate::state::fence;
use crate::state::table::{self, Cell as StateCell, Column, Param as StateParam, StateExec};
use crate::state::{Offsets, Session, SessionValue, StateStatements, StateStore, TableRecord, TableState, offset_rows};

type Conn = Client<Compat<TcpStream>>;

/// The SQL Server replica.
pub struct MssqlSink {
    runtime: tokio::runtime::Runtime,
    config: Config,
    client: Option<Conn>,
    options: SinkOptions,
    tables: HashMap<TableId, TableRecord>,
    state: StateStatements,
}

impl std::fmt::Debug for MssqlSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MssqlSink")
            .field("server", &self.config.get_addr())
            .field("tables", &self.tables.len())
            .finish_non_exhaustive()
    }
}

fn err(context: impl Into<String>) -> impl FnOnce(tiberius::error::Error) -> SinkError {
    let context = context.into();
    move |source| SinkError::Mssql { context, source }
}

async fn connect(config: &Config) -> Result<Conn, SinkError> {
    let mut config = config.clone();
    // Azure SQL may redirect once to the node that holds the database.
    for _ in 0..2 {
        let tcp = TcpStream::connect(config.get_addr())
            .await
            .map_err(|source| SinkError::Io { context: format!("connecting to {}", config.get_addr()), source })?;
        let _ = tcp.set_nodelay(true);
        match Box::pin(Client::connect(config.clone(), tcp.compat_write())).await {
            Ok(client) => return Ok(client),
            Err(tiberius::error::Error::Routing { host, port }) => {
                config.host(host);
                config.port(port);
            }
            Err(e) => return Err(err("logging in")(e)),
        }
    }
    Err(SinkError::ConnectionString("SQL Server redirected the connection more than once".into()))
}

/// Bulk-loads rows into `table` (a quoted name) with `KEEP_NULLS` (and `TABLOCK` if asked).
async fn bulk_load<'r>(
    client: &mut Conn,
    table: &str,
    types: &[SqlType],
    rows: impl Iterator<Item = &'r [Cell]>,
    id: &TableId,
    lock_table: bool,
) -> Result<(), SinkError> {
    let mut options: SqlBulkCopyOptions = SqlBulkCopyOption::KeepNulls.into();
    if lock_table {
        options |= SqlBulkCopyOption::TableLock;
    }
    let mut request = client
        .bulk_insert_with_options(table, &["*"], options, &[])
        .await
        .map_err(err(format!("starting bulk load into {table}")))?;
    for row in rows {
        let mut token = TokenRow::with_capacity(types.len());
        for (cell, sql) in row.iter().zip(types) {
            let data: ColumnData<'_> =
                encode::to_column_data(cell, *sql).map_err(|reason| SinkError::Table { table: id.clone(), reason })?;
            token.push(data);
        }
        request.send(token).await.map_err(err(format!("bulk loading {table}")))?;
    }
    request.finalize().await.map_err(err(format!("finishing bulk load into {table}")))?;
    Ok(())
}

async fn exec(client: &mut Conn, statement: &str, context: &str) -> Result<(), SinkError> {
    client.simple_query(statement).await.map_err(err(context))?.into_results().await.map_err(err(context))?;
    Ok(())
}

/// Applies one table's part of a batch inside the batch transaction.
/// A soft table (`soft_at`: when its deletes happened) flags rows instead of deleting them.
async fn apply_table(
    client: &mut Conn,
    target_schema: &str,
    table: &TableBatch,
    soft_at: Option<&str>,
) -> Result<(), SinkError> {
    const STAGE: &str = "#dbmirror_stage";
    const KEYS: &str = "#dbmirror_keys";
    let schema = table.schema();
    let id = &schema.id;
    let target = sql::qualified(target_schema, &id.table);
    let mut empty = false;
    if table.truncate_first() {
        let clear = soft_at.map_or_else(|| format!("DELETE FROM {target}"), |at| sql::SOFT.flag_all(&target, at));
        exec(client, &clear, "clearing a table for its snapshot").await?;
        empty = soft_at.is_none();
    }
    let mut deletes: Vec<_> = table.deletes().collect();
    if !deletes.is_empty() && !empty {
        deletes.sort_unstable();
        exec(client, &sql::create_key_staging(schema, KEYS), "staging deleted keys").await?;
        let key_types: Vec<SqlType> =
            schema.primary_key.iter().map(|k| schema.column(k).map_or(SqlType::Other, |c| c.sql_type)).collect();
        bulk_load(client, &sql::quote(KEYS), &key_types, deletes.iter().map(|k| &k[..]), id, false).await?;
        let delete = match soft_at {
            Some(at) => sql::soft_delete_join(schema, target_schema, KEYS, at),
            None => sql::delete_join(schema, target_schema, KEYS),
        };
        let statement = format!("{delete}; DROP TABLE {}", sql::quote(KEYS));
        exec(client, &statement, "deleting rows").await?;
    }
    let mut upserts: Vec<_> = table.upserts().collect();
    if upserts.is_empty() {
        return Ok(());
    }
    upserts.sort_unstable_by(|a, b| a.0.cmp(b.0));
    if !empty {
        let row = client
            .simple_query(format!("SELECT CASE WHEN EXISTS (SELECT 1 FROM {target}) THEN 0 ELSE 1 END"))
            .await
            .map_err(err("checking for an empty table"))?
            .into_row()
            .await
            .map_err(err("checking for an empty table"))?;
        empty = row.and_then(|r| r.get::<i32, _>(0)) == Some(1);
    }
    let types: Vec<SqlType> = schema.columns.iter().map(|c| c.sql_type).collect();
    let rows = upserts.iter().map(|(_, row)| &row[..]);
    if empty {
        // An initial snapshot: the batch's rows are unique by key, so they go straight in.
        return bulk_load(client, &target, &types, rows, id, true).await;
    }
    exec(client, &sql::create_staging(schema, STAGE), "creating the staging table").await?;
    bulk_load(client, &sql::quote(STAGE), &types, rows, id, false).await?;
    let statement = format!("{} DROP TABLE {}", sql::merge(schema, target_schema, STAGE), sql::quote(STAGE));
    exec(client, &statement, "merging staged rows").await
}

impl MssqlSink {
    /// Connects to the replica named by an ADO-style connection string
    /// (`Server=tcp:host,1433;Database=…;User Id=…;Password=…;Encrypt=true`).
    pub fn open(connection_string: &str, options: SinkOptions) -> Result<Self, SinkError> {
        let mut config = Config::from_ado_string(connection_string)
            .map_err(|e| SinkError::ConnectionString(format!("SQL Server: {e}")))?;
        // Large packets make bulk loads fewer round trips.
        config.packet_size(32_767);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| SinkError::Io { context: "starting the SQL Server driver".into(), source })?;
        let state = sql::state_statements();
        let mut sink = Self { runtime, config, client: None, options, tables: HashMap::new(), state };
        sink.tables = sink.with_exec(|exec, state| {
            exec.execute_batch(&state.create_table)?;
            exec.execute_batch(&state.errors.create)?;
            table::read_tables(exec, state)
        })?;
        Ok(sink)
    }

    /// A live connection (reconnecting if the last one failed) and the runtime to drive it.
    fn conn(&mut self) -> Result<(&tokio::runtime::Runtime, &mut Conn), SinkError> {
        if self.client.is_none() {
            self.client = Some(self.runtime.block_on(connect(&self.config))?);
        }
        Ok((&self.runtime, self.client.as_mut().expect("connected above")))
    }

    /// Keeps the connection after success; drops it after a failure, so the server rolls
    /// back an open transaction and the retry starts on a fresh connection.
    fn settle<T>(&mut self, result: Result<T, SinkError>) -> Result<T, SinkError> {
        if result.is_err() {
            self.client = None;
        }
        result
    }

    /// Runs `work` on the connection with this target's `_ReplicationState` statements;
    /// a failure drops the connection (see [`MssqlSink::settle`]).
    fn with_exec<T>(
        &mut self,
        work: impl FnOnce(&mut dyn StateExec, &StateStatements) -> Result<T, SinkError>,
    ) -> Result<T, SinkError> {
        if self.client.is_none() {
            self.client = Some(self.runtime.block_on(connect(&self.config))?);
        }
        let client = self.client.as_mut().expect("connected above");
        let result = work(&mut Exec { runtime: &self.runtime, client }, &self.state);
        self.settle(result)
    }

    /// Runs a T-SQL batch outside any replication batch (operations and tests).
    pub fn execute_batch(&mut self, statements: &str) -> Result<(), SinkError> {
        let (rt, client) = self.conn()?;
        let result = rt.block_on(exec(client, statements, "running statements"));
        self.settle(result)
    }
}

impl Sink for MssqlSink {
    fn change_schema(&mut self, change: &TableChange, intent: &Intent) -> Result<SchemaOutcome, SinkError> {
        let new = &change.table;
        let ddl = |exec: &mut dyn StateExec, plan: &SchemaPlan| match plan {
            SchemaPlan::Skip | SchemaPlan::Unchanged => Ok(()),
            SchemaPlan::Drop(old) | SchemaPlan::Fail(old) => {
                exec.execute_batch(&sql::drop_table(new, &old.target_schema))
            }
            SchemaPlan::Create(target_schema) | SchemaPlan::Recreate(TableRecord { target_schema, .. }) => {
                exec.execute_batch(&sql::ensure_schema(target_schema))?;
                let create = sql::create_table(new, target_schema)
                    .map_err(|reason| SinkError::Table { table: new.id.clone(), reason })?;
                exec.execute_batch(&format!("{}; {create}", sql::drop_table(new, target_schema)))
            }
            SchemaPlan::AddColumns(old, added) => {
                added.iter().try_for_each(|c| exec.execute_batch(&sql::add_column(new, &old.target_schema, c)))
            }
        };
        let (options, mut tables) = (self.options.clone(), std::mem::take(&mut self.tables));
        let outcome =
            self.with_exec(|exec, state| ddl::apply_schema(exec, state, &options, &mut tables, (change, intent), ddl));
        self.tables = tables;
        outcome
    }

    fn apply(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let mut work = Vec::new();
        for table in batch.tables() {
            let id = &table.schema().id;
            if !writes_to(&self.options, self.tables.get(id), id) {
                continue;
            }
            check_batch_schema(self.tables.get(id), table.schema())?;
            let soft_at = sql::SOFT.delete_time(table.schema(), batch);
            work.push((self.tables[id].target_schema.clone(), table, soft_at));
        }
        let upsert_offset = self.state.upsert_offset.clone();
        let delete_refused = self.state.errors.delete.clone();
        self.conn()?;
        let (rt, client) = (&self.runtime, self.client.as_mut().expect("connected above"));
        let begun = rt.block_on(client.begin_transaction()).map_err(err("starting batch transaction"));
        let proven = begun.and_then(|()| fence::check(&mut Exec { runtime: rt, client }, &self.state));
        let result = proven.and_then(|()| {
            rt.block_on(async {
                for (target_schema, table, soft_at) in &work {
                    apply_table(client, target_schema, table, soft_at.as_deref()).await?;
                }
                for (name, topic, last) in offset_rows(batch.offsets(), batch.reset_epoch()) {
                    client
                        .execute(upsert_offset.as_str(), &[&name, &topic, &last])
                        .await
                        .map_err(err("recording offsets"))?;
                }
                for id in batch.superseded() {
                    client
                        .execute(delete_refused.as_str(), &[id])
                        .await
                        .map_err(err("forgetting superseded refusals"))?;
                }
                client.commit_transaction().await.map_err(err("committing batch"))
            })
        });
        self.settle(result)
    }

    fn replace_from_shadow(&mut self, id: &TableId) -> Result<(), SinkError> {
        let mut tables = std::mem::take(&mut self.tables);
        let done = self.with_exec(|exec, state| {
            ddl::swap_in(exec, state, &mut tables, id, |live, shadow| {
                sql::replace_from_shadow(&live.schema, &live.target_schema, &shadow.schema, &shadow.target_schema)
            })
        });
        self.tables = tables;
        done
    }

    fn retire_table(&mut self, id: &TableId, new_name: &str) -> Result<(), SinkError> {
        let mut tables = std::mem::take(&mut self.tables);
        let done = self.with_exec(|exec, state| {
            ddl::retire(exec, state, &mut tables, id, |record| {
                sql::rename_table(&record.target_schema, &id.table, new_name)
            })
        });
        self.tables = tables;
        done
    }

    /// As written: T-SQL scripts manage their own batches and transactions (`CREATE VIEW`
    /// must start a batch), so it is not wrapped in one.
    /// An owner's T-SQL runs as a script of its own (it may manage its own transactions);
    /// the fence is proven just before it.
    fn run_script(&mut self, sql: &str) -> Result<(), SinkError> {
        self.with_exec(fence::check)?;
        self.execute_batch(sql)
    }

    fn target_name(&self, id: &TableId) -> Option<String> {
        self.tables.get(id).map(|r| sql::qualified(&r.target_schema, &id.table))
    }
}

impl StateStore for MssqlSink {
    fn all_records(&self) -> Vec<TableRecord> {
        self.tables.values().cloned().collect()
    }

    fn table(&self, id: &TableId) -> Option<TableRecord> {
        self.tables.get(id).cloned()
    }

    fn offset_rows(&mut self) -> Result<Offsets, SinkError> {
        self.with_exec(table::read_offsets)
    }

    fn set_table_state(&mut self, id: &TableId, state: TableState) -> Result<(), SinkError> {
        let mut tables = std::mem::take(&mut self.tables);
        let done = self.with_exec(|exec, sql| table::set_table_state(exec, sql, &mut tables, id, state));
        self.tables = tables;
        done
    }

    fn write_facts(&mut self, facts: &[(&str, SessionValue)]) -> Result<(), SinkError> {
        self.with_exec(|exec, sql| table::write_facts(exec, sql, facts))
    }

    fn read_facts(&mut self) -> Result<Session, SinkError> {
        self.with_exec(table::read_facts)
    }

    fn claim_writer(&mut self, holder: &str) -> Result<fence::Fence, SinkError> {
        let (fence, tables) = self.with_exec(|exec, sql| fence::claim(exec, sql, holder))?;
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
        self.with_exec(|exec, sql| crate::state::refused::write_refused(exec, sql, refused, progress))
    }

    fn read_refused(&mut self) -> Result<Vec<crate::state::refused::RefusedRow>, SinkError> {
        self.with_exec(crate::state::refused::read_refused)
    }

    fn delete_refused(&mut self, ids: &[i64]) -> Result<(), SinkError> {
        self.with_exec(|exec, sql| {
            table::in_transaction(exec, sql, |exec| crate::state::refused::delete_refused(exec, sql, ids))
        })
    }
}

/// `_ReplicationState` statements on the connection, each driven to completion on the
/// sink's runtime.
struct Exec<'a> {
    runtime: &'a tokio::runtime::Runtime,
    client: &'a mut Conn,
}

impl StateExec for Exec<'_> {
    fn execute(&mut self, statement: &str, params: &[StateParam<'_>]) -> Result<(), SinkError> {
        let bound: Vec<&dyn tiberius::ToSql> = params
            .iter()
            .map(|p| match p {
                StateParam::Text(t) => t as &dyn tiberius::ToSql,
                StateParam::OptText(t) => t as &dyn tiberius::ToSql,
                StateParam::Int(v) => v as &dyn tiberius::ToSql,
                StateParam::OptBlob(b) => b as &dyn tiberius::ToSql,
            })
            .collect();
        self.runtime.block_on(self.client.execute(statement, &bound)).map_err(err("writing _ReplicationState"))?;
        Ok(())
    }

    fn execute_batch(&mut self, statements: &str) -> Result<(), SinkError> {
        self.runtime.block_on(exec(self.client, statements, "running statements"))
    }

    fn query(&mut self, statement: &str, columns: &[Column]) -> Result<Vec<Vec<StateCell>>, SinkError> {
        let rows = self.runtime.block_on(async {
            let stream = self.client.simple_query(statement).await.map_err(err("reading _ReplicationState"))?;
            stream.into_first_result().await.map_err(err("reading _ReplicationState"))
        })?;
        let cell = |row: &tiberius::Row, i: usize, column: &Column| match column {
            Column::Text => row.get::<&str, _>(i).map_or(StateCell::Null, |t| StateCell::Text(t.to_owned())),
            Column::Int => row.get::<i64, _>(i).map_or(StateCell::Null, StateCell::Int),
            Column::Blob => row.get::<&[u8], _>(i).map_or(StateCell::Null, |b| StateCell::Blob(b.to_vec())),
        };
        Ok(rows.iter().map(|row| columns.iter().enumerate().map(|(i, c)| cell(row, i, c)).collect()).collect())
    }

    fn begin(&mut self) -> Result<(), SinkError> {
        self.runtime.block_on(self.client.begin_transaction()).map_err(err("starting a transaction"))
    }

    fn commit(&mut self) -> Result<(), SinkError> {
        self.runtime.block_on(self.client.commit_transaction()).map_err(err("committing"))
    }

    fn rollback(&mut self) -> Result<(), SinkError> {
        self.runtime.block_on(self.client.rollback_transaction()).map_err(err("rolling back"))
    }
}

impl ReplicaRead for MssqlSink {
    fn check_writable(&mut self) -> Result<(), SinkError> {
        // A failure leaves the transaction open; `settle` drops the connection, which rolls it back.
        self.execute_batch(&sql::write_check())
    }

    fn count_rows(&mut self, id: &TableId) -> Result<u64, SinkError> {
        let record = self.tables.get(id).ok_or_else(|| super::missing(id))?;
        let statement = sql::count_rows(&record.schema, &record.target_schema);
        let (rt, client) = self.conn()?;
        let result = rt.block_on(async {
            let row = client
                .simple_query(statement)
                .await
                .map_err(err("counting rows"))?
                .into_row()
                .await
                .map_err(err("counting rows"))?;
            Ok(row.and_then(|r| r.get::<i64, _>(0)).unwrap_or(0) as u64)
        });
        self.settle(result)
    }

    fn read_rows(&mut self, id: &TableId) -> Result<Vec<CanonicalRow>, SinkError> {
        let record = self
            .tables
            .get(id)
            .cloned()
            .ok_or_else(|| SinkError::Table { table: id.clone(), reason: "not in the replica".into() })?;
        let statement = sql::select_all(&record.schema, &record.target_schema);
        let types: Vec<SqlType> = record.schema.columns.iter().map(|c| c.sql_type).collect();
        let (rt, client) = self.conn()?;
        let result = rt.block_on(async {
            let rows = client
                .simple_query(statement)
                .await
                .map_err(err("reading a table"))?
                .into_first_result()
                .await
                .map_err(err("reading a table"))?;
            rows.into_iter()
                .map(|row| {
                    row.into_iter()
                        .zip(&types)
                        .map(|(data, sql)| {
                            let cell = encode::from_column_data(&data)
                                .map_err(|reason| SinkError::Table { table: id.clone(), reason })?;
                            Ok(canonical(&cell, *sql))
                        })
                        .collect()
                })
                .collect()
        });
        self.settle(result)
    }
}
