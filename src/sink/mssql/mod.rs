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
pub mod sql;

use std::collections::HashMap;

use tiberius::{Client, ColumnData, Config, SqlBulkCopyOption, SqlBulkCopyOptions, TokenRow};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use super::plan::{SchemaPlan, SinkOptions, TableRecord, check_batch_schema, plan, read_record, remember, result};
use super::{CanonicalRow, ReplicaRead, SchemaOutcome, Sink, SinkError, shadow};
use crate::canonical::canonical;
use crate::coalesce::{Batch, TableBatch};
use crate::row::Cell;
use crate::schema::{SqlType, TableChange, TableId, TableSchema};
use crate::state::StateStore;
use crate::state::{Offsets, Session, SessionValue, TableState, offset_rows, parse_offset_name};

type Conn = Client<Compat<TcpStream>>;

/// The SQL Server replica.
pub struct MssqlSink {
    runtime: tokio::runtime::Runtime,
    config: Config,
    client: Option<Conn>,
    options: SinkOptions,
    tables: HashMap<TableId, TableRecord>,
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
async fn apply_table(client: &mut Conn, target_schema: &str, table: &TableBatch) -> Result<(), SinkError> {
    const STAGE: &str = "#dbmirror_stage";
    const KEYS: &str = "#dbmirror_keys";
    let schema = table.schema();
    let id = &schema.id;
    let target = sql::qualified(target_schema, &id.table);
    let mut empty = false;
    if table.truncate_first() {
        exec(client, &format!("DELETE FROM {target}"), "clearing a table for its snapshot").await?;
        empty = true;
    }
    let mut deletes: Vec<_> = table.deletes().collect();
    if !deletes.is_empty() && !empty {
        deletes.sort_unstable();
        exec(client, &sql::create_key_staging(schema, KEYS), "staging deleted keys").await?;
        let key_types: Vec<SqlType> =
            schema.primary_key.iter().map(|k| schema.column(k).map_or(SqlType::Other, |c| c.sql_type)).collect();
        bulk_load(client, &sql::quote(KEYS), &key_types, deletes.iter().map(|k| &k[..]), id, false).await?;
        let statement = format!("{}; DROP TABLE {}", sql::delete_join(schema, target_schema, KEYS), sql::quote(KEYS));
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
        let mut sink = Self { runtime, config, client: None, options, tables: HashMap::new() };
        let (rt, client) = sink.conn()?;
        let result = rt.block_on(exec(client, &sql::create_state_table(), "creating _ReplicationState"));
        sink.settle(result)?;
        sink.load_tables()?;
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

    /// Runs a T-SQL batch outside any replication batch (operations and tests).
    pub fn execute_batch(&mut self, statements: &str) -> Result<(), SinkError> {
        let (rt, client) = self.conn()?;
        let result = rt.block_on(exec(client, statements, "running statements"));
        self.settle(result)
    }

    fn load_tables(&mut self) -> Result<(), SinkError> {
        let (rt, client) = self.conn()?;
        let result = rt.block_on(async {
            let statement = format!(
                "SELECT [name], [text_value], [definition], [state] FROM [dbo].{} WHERE [scope] = N'table'",
                sql::quote(crate::state::STATE_TABLE)
            );
            let rows = client
                .simple_query(statement)
                .await
                .map_err(err("reading table state"))?
                .into_first_result()
                .await
                .map_err(err("reading table state"))?;
            Ok(rows
                .iter()
                .map(|r| {
                    let text = |i: usize| r.get::<&str, _>(i).unwrap_or_default().to_owned();
                    (text(0), text(1), text(2), text(3))
                })
                .collect::<Vec<_>>())
        });
        let rows = self.settle(result)?;
        for (name, target_schema, definition, state) in rows {
            let record = read_record(&name, target_schema, &definition, &state)?;
            self.tables.insert(record.schema.id.clone(), record);
        }
        Ok(())
    }
}

async fn write_record(client: &mut Conn, record: &TableRecord) -> Result<(), SinkError> {
    let s = &record.schema;
    client
        .execute(
            sql::upsert_table_record(),
            &[&s.id.to_string(), &record.target_schema, &s.fingerprint(), &s.to_history_json(), &record.state.as_str()],
        )
        .await
        .map_err(err("recording table state"))?;
    Ok(())
}

async fn schema_change(
    client: &mut Conn,
    plan: &SchemaPlan,
    new: &TableSchema,
    record: Option<&TableRecord>,
) -> Result<(), SinkError> {
    client.begin_transaction().await.map_err(err("starting schema transaction"))?;
    match plan {
        SchemaPlan::Drop(old) => {
            exec(client, &sql::drop_table(new, &old.target_schema), "dropping a table").await?;
            client
                .execute(sql::delete_table_record(), &[&new.id.to_string()])
                .await
                .map_err(err("forgetting table"))?;
        }
        SchemaPlan::Create(target_schema) | SchemaPlan::Recreate(TableRecord { target_schema, .. }) => {
            exec(client, &sql::ensure_schema(target_schema), "creating the schema").await?;
            let create = sql::create_table(new, target_schema)
                .map_err(|reason| SinkError::Table { table: new.id.clone(), reason })?;
            let statement = format!("{}; {create}", sql::drop_table(new, target_schema));
            exec(client, &statement, "creating a table").await?;
        }
        SchemaPlan::AddColumns(old, added) => {
            for c in added {
                exec(client, &sql::add_column(new, &old.target_schema, c), "adding a column").await?;
            }
        }
        SchemaPlan::Skip | SchemaPlan::Unchanged => {}
    }
    match record {
        Some(record) => write_record(client, record).await?,
        None => {
            client
                .execute(sql::delete_table_record(), &[&new.id.to_string()])
                .await
                .map_err(err("forgetting table"))?;
        }
    }
    client.commit_transaction().await.map_err(err("committing schema change"))
}

/// The resync swap (see [`shadow`]) in one transaction.
async fn swap_in(client: &mut Conn, statement: &str, ready: &TableRecord, shadow_name: &str) -> Result<(), SinkError> {
    client.begin_transaction().await.map_err(err("starting the resync swap"))?;
    exec(client, statement, "replacing a table from its shadow").await?;
    write_record(client, ready).await?;
    client.execute(sql::delete_table_record(), &[&shadow_name]).await.map_err(err("forgetting the shadow"))?;
    client.commit_transaction().await.map_err(err("committing the resync swap"))
}

impl Sink for MssqlSink {
    fn apply_schema(&mut self, change: &TableChange) -> Result<SchemaOutcome, SinkError> {
        let new = &change.table;
        let plan = plan(&self.options, self.tables.get(&new.id), change)?;
        let (outcome, record) = result(&plan, new);
        if matches!(plan, SchemaPlan::Skip | SchemaPlan::Unchanged) {
            return Ok(outcome);
        }
        let (rt, client) = self.conn()?;
        let done = rt.block_on(schema_change(client, &plan, new, record.as_ref()));
        self.settle(done)?;
        remember(&mut self.tables, &new.id, record);
        Ok(outcome)
    }

    fn apply(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let mut work = Vec::new();
        for table in batch.tables() {
            let id = &table.schema().id;
            if self.options.skips(id) {
                continue;
            }
            check_batch_schema(self.tables.get(id), table.schema())?;
            work.push((self.tables[id].target_schema.clone(), table));
        }
        let (rt, client) = self.conn()?;
        let result = rt.block_on(async {
            client.begin_transaction().await.map_err(err("starting batch transaction"))?;
            for (target_schema, table) in &work {
                apply_table(client, target_schema, table).await?;
            }
            for (name, topic, last) in offset_rows(batch.offsets(), batch.reset_epoch()) {
                client
                    .execute(sql::upsert_offset(), &[&name, &topic, &last])
                    .await
                    .map_err(err("recording offsets"))?;
            }
            client.commit_transaction().await.map_err(err("committing batch"))
        });
        self.settle(result)
    }

    fn tables(&self) -> Vec<TableRecord> {
        self.tables.values().cloned().collect()
    }

    fn replace_from_shadow(&mut self, id: &TableId) -> Result<(), SinkError> {
        let swap = shadow::Swap::plan(&self.tables, id, |live, shadow| {
            sql::replace_from_shadow(&live.schema, &live.target_schema, &shadow.schema, &shadow.target_schema)
        })?;
        let (rt, client) = self.conn()?;
        let done = rt.block_on(swap_in(client, &swap.sql, &swap.ready, &swap.shadow_name));
        self.settle(done)?;
        swap.done(&mut self.tables);
        Ok(())
    }
}

impl StateStore for MssqlSink {
    fn offset_rows(&mut self) -> Result<Offsets, SinkError> {
        let (rt, client) = self.conn()?;
        let result = rt.block_on(async {
            let statement = format!(
                "SELECT [name], [int_value] FROM [dbo].{} WHERE [scope] = N'offset'",
                sql::quote(crate::state::STATE_TABLE)
            );
            let rows = client
                .simple_query(statement)
                .await
                .map_err(err("reading offsets"))?
                .into_first_result()
                .await
                .map_err(err("reading offsets"))?;
            Ok(rows
                .iter()
                .filter_map(|r| Some((parse_offset_name(r.get::<&str, _>(0)?)?, r.get::<i64, _>(1)?)))
                .collect())
        });
        self.settle(result)
    }

    fn set_table_state(&mut self, id: &TableId, state: TableState) -> Result<(), SinkError> {
        if !self.tables.contains_key(id) {
            return Err(SinkError::Table { table: id.clone(), reason: "not in the replica".into() });
        }
        let name = id.to_string();
        let (rt, client) = self.conn()?;
        let result = rt.block_on(client.execute(sql::set_table_state(), &[&state.as_str(), &name]));
        self.settle(result.map_err(err("updating table state")))?;
        if let Some(record) = self.tables.get_mut(id) {
            record.state = state;
        }
        Ok(())
    }

    fn write_facts(&mut self, facts: &[(&str, SessionValue)]) -> Result<(), SinkError> {
        let (rt, client) = self.conn()?;
        let result = rt.block_on(async {
            client.begin_transaction().await.map_err(err("starting session transaction"))?;
            for (name, value) in facts {
                let (text, blob) = value.columns();
                client.execute(sql::upsert_session(), &[name, &text, &blob]).await.map_err(err("recording session"))?;
            }
            client.commit_transaction().await.map_err(err("committing session"))
        });
        self.settle(result)
    }

    fn read_facts(&mut self) -> Result<Session, SinkError> {
        let (rt, client) = self.conn()?;
        let result = rt.block_on(async {
            let statement = format!(
                "SELECT [name], [text_value], [blob_value] FROM [dbo].{} WHERE [scope] = N'session'",
                sql::quote(crate::state::STATE_TABLE)
            );
            let rows = client
                .simple_query(statement)
                .await
                .map_err(err("reading session"))?
                .into_first_result()
                .await
                .map_err(err("reading session"))?;
            Ok(rows
                .iter()
                .map(|r| {
                    let name = r.get::<&str, _>(0).unwrap_or_default().to_owned();
                    let text = r.get::<&str, _>(1).map(str::to_owned);
                    let blob = r.get::<&[u8], _>(2).map(<[u8]>::to_vec);
                    (name, SessionValue::from_columns(text, blob))
                })
                .collect())
        });
        self.settle(result)
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
