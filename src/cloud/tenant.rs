//! A simulated CRM tenant: the authoritative table contents, and every change to them
//! published to the tenant's topics exactly as the Debezium SQL Server connector would.
//!
//! The tenant is the source of truth for tests and `verify`: [`Tenant::checksums`] reports
//! row counts and order-independent checksums computed from the same canonical text the
//! replica side uses, so "the replica equals the source" means one thing everywhere.

use std::collections::BTreeMap;

use super::encode::{RecordMeta, change_record, history_record, tombstone_record};
use super::generate::{Rng, TableRows, rows, value};
use super::log::{EventLog, LogError};
use crate::canonical::{canonical, checksum};
use crate::protocol::{CDC_TOPIC_SUFFIX, SCHEMA_HISTORY_TOPIC_SUFFIX};
use crate::row::{Cell, OwnedRow, PrimaryKey};
use crate::schema::{ColumnSchema, SqlType, TableId, TableSchema, is_blocked};

/// How a tenant is generated.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    /// The tenant context id, e.g. `cust1234` (topics are `<ctx>-cdc`, `<ctx>-schemahistory`).
    pub context: String,
    /// Seed of the deterministic generator.
    pub seed: u64,
    /// Rows per table in the initial snapshot.
    pub rows_per_table: u64,
    /// Partitions of the `-cdc` topic.
    pub partitions: i32,
    /// JsonConverter `schemas.enable`.
    pub with_schema: bool,
}

/// The mix of a change workload, in percent (the rest of 100 are updates).
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Inserts.
    pub insert_percent: u64,
    /// Deletes.
    pub delete_percent: u64,
    /// Updates that change the primary key (a delete, a tombstone and a create).
    pub key_update_percent: u64,
    /// Changes that hit one of a few hot rows (exercises coalescing).
    pub hot_percent: u64,
}

impl Default for Workload {
    fn default() -> Self {
        Workload { insert_percent: 25, delete_percent: 10, key_update_percent: 2, hot_percent: 40 }
    }
}

/// Per table: row count and checksum of the canonical rows.
pub type Checksums = BTreeMap<TableId, (u64, u64)>;

/// One simulated tenant.
#[derive(Debug)]
pub struct Tenant {
    config: TenantConfig,
    tables: BTreeMap<TableId, (TableSchema, TableRows)>,
    rng: Rng,
    /// Sequence number of the last streamed change (its `change_lsn`).
    sequence: std::cell::Cell<u64>,
    /// Number of the current source transaction (its `commit_lsn`).
    transaction: std::cell::Cell<u64>,
    /// Offset of each table's last published change, per partition (for `ground-truth`).
    last_change: std::cell::RefCell<BTreeMap<TableId, BTreeMap<i32, i64>>>,
    /// The change events of the open source transaction, by data collection
    /// (`CRM.crm7.person`), while [`Tenant::change`] runs: their `transaction` blocks count
    /// them, and its `END` record gives the totals.
    open_transaction: std::cell::RefCell<Option<Vec<String>>>,
}

/// Partition of a row: table and key hashed, so every change of one row lands in one
/// partition and keeps its order.
fn partition_of(table: &TableId, key: &PrimaryKey, partitions: i32) -> i32 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    table.hash(&mut h);
    key.hash(&mut h);
    (h.finish() % partitions.max(1) as u64) as i32
}

fn key_of(schema: &TableSchema, row: &[Cell]) -> PrimaryKey {
    schema
        .primary_key
        .iter()
        .filter_map(|k| schema.columns.iter().position(|c| &c.name == k))
        .map(|i| row[i].clone())
        .collect()
}

impl Tenant {
    /// A tenant over `tables` (blocked tables are kept at the source but never published).
    pub fn new(config: TenantConfig, tables: Vec<TableSchema>) -> Self {
        let mut rng = Rng::new(config.seed);
        let tables = tables
            .into_iter()
            .map(|t| {
                let data = rows(&mut rng, &t, config.rows_per_table);
                (t.id.clone(), (t, data))
            })
            .collect();
        Tenant {
            config,
            tables,
            rng,
            sequence: std::cell::Cell::new(0),
            transaction: std::cell::Cell::new(0),
            last_change: Default::default(),
            open_transaction: Default::default(),
        }
    }

    /// The tenant context id.
    pub fn context(&self) -> &str {
        &self.config.context
    }

    /// `<ctx>-cdc`.
    pub fn cdc_topic(&self) -> String {
        format!("{}{CDC_TOPIC_SUFFIX}", self.config.context)
    }

    /// `<ctx>-schemahistory`.
    pub fn history_topic(&self) -> String {
        format!("{}{SCHEMA_HISTORY_TOPIC_SUFFIX}", self.config.context)
    }

    /// The published tables' current schemas.
    pub fn schemas(&self) -> Vec<&TableSchema> {
        self.tables.values().map(|(s, _)| s).filter(|s| !is_blocked(&s.id.table)).collect()
    }

    /// The current rows of a table.
    pub fn rows(&self, id: &TableId) -> Option<&TableRows> {
        self.tables.get(id).map(|(_, r)| r)
    }

    /// Row count and checksum of every published table, from canonical rows.
    pub fn checksums(&self) -> Checksums {
        self.tables
            .iter()
            .filter(|(id, _)| !is_blocked(&id.table))
            .map(|(id, (schema, rows))| {
                let canon: Vec<Vec<Option<String>>> = rows
                    .values()
                    .map(|r| r.iter().zip(&schema.columns).map(|(c, col)| canonical(c, col.sql_type)).collect())
                    .collect();
                (id.clone(), checksum(canon.iter().map(Vec::as_slice)))
            })
            .collect()
    }

    /// After a restart the journal rebuilds the rows but not where each change was published:
    /// every table is assumed changed at the last offset of every partition (`ends` are the
    /// next offsets), which only makes `verify` wait until a replica has applied everything.
    pub fn assume_changed_up_to(&self, ends: &BTreeMap<i32, i64>) {
        let last: BTreeMap<i32, i64> = ends.iter().filter(|(_, e)| **e > 0).map(|(p, e)| (*p, e - 1)).collect();
        let mut map = self.last_change.borrow_mut();
        map.clear();
        for id in self.tables.keys() {
            map.insert(id.clone(), last.clone());
        }
    }

    /// Where each table's last change was published: partition → offset.
    pub fn last_changes(&self, id: &TableId) -> BTreeMap<i32, i64> {
        self.last_change.borrow().get(id).cloned().unwrap_or_default()
    }

    /// Creates the tenant's topics.
    pub fn create_topics(&self, log: &mut EventLog) -> Result<(), LogError> {
        log.create_topic(&self.cdc_topic(), self.config.partitions)?;
        log.create_topic(&self.history_topic(), 1)
    }

    fn database(&self) -> String {
        self.config.context.to_ascii_uppercase()
    }

    fn publish_history(
        &self,
        log: &mut EventLog,
        now_ms: i64,
        schema: &TableSchema,
        kind: &str,
    ) -> Result<(), LogError> {
        let topic = self.history_topic();
        // A DDL is its own transaction: changes before it have lower LSNs, the table's
        // snapshot and changes after it the same or higher.
        self.transaction.set(self.transaction.get() + 1);
        let value = history_record(schema, kind, &self.database(), self.transaction.get());
        log.append(&topic, 0, now_ms, |offset| {
            let mut line = String::from("{\"topic\":");
            crate::value::write_json_string(&mut line, &topic);
            line.push_str(&format!(",\"partition\":0,\"offset\":{offset},\"key\":null,\"value\":{value}}}"));
            line
        })?;
        Ok(())
    }

    /// Publishes one change; `kind` is (`op`, `source.snapshot`).
    fn publish_change(
        &self,
        log: &mut EventLog,
        now_ms: i64,
        schema: &TableSchema,
        (op, snapshot): (&str, &str),
        before: Option<&[Cell]>,
        after: Option<&[Cell]>,
    ) -> Result<(), LogError> {
        let topic = self.cdc_topic();
        // Streamed changes carry their own change LSN; snapshot reads only the commit LSN
        // at which the snapshot was taken (change sequence 0 = none).
        let lsn = if snapshot == "false" {
            self.sequence.set(self.sequence.get() + 1);
            Some((self.sequence.get(), self.transaction.get()))
        } else {
            Some((0, self.transaction.get()))
        };
        let key = key_of(schema, after.or(before).unwrap_or_default());
        let partition = partition_of(&schema.id, &key, self.config.partitions);
        let database = self.database();
        let transaction = self.open_transaction.borrow_mut().as_mut().filter(|_| snapshot == "false").map(|events| {
            let collection = format!("{database}.{}", schema.id);
            events.push(collection.clone());
            (events.len() as u64, events.iter().filter(|e| **e == collection).count() as u64)
        });
        let meta = |offset| RecordMeta {
            topic: &topic,
            partition,
            offset,
            snapshot,
            op,
            database: &database,
            with_schema: self.config.with_schema,
            ts_ms: now_ms,
            lsn,
            transaction,
        };
        let offset =
            log.append(&topic, partition, now_ms, |offset| change_record(schema, before, after, &meta(offset)))?;
        self.last_change.borrow_mut().entry(schema.id.clone()).or_default().insert(partition, offset);
        if op == "d" {
            // Debezium follows a delete with a tombstone for log compaction.
            log.append(&topic, partition, now_ms, |offset| {
                tombstone_record(schema, before.unwrap_or_default(), &meta(offset))
            })?;
        }
        Ok(())
    }

    /// Publishes the schema of every published table, then a snapshot (`op` `r`) of all of
    /// them; `snapshot` is `true` for every record but the very last, which is `last`.
    pub fn publish_initial(&self, log: &mut EventLog, now_ms: i64) -> Result<(), LogError> {
        self.create_topics(log)?;
        let ids: Vec<TableId> = self.schemas().iter().map(|s| s.id.clone()).collect();
        for id in &ids {
            self.publish_history(log, now_ms, &self.tables[id].0, "CREATE")?;
        }
        self.publish_snapshot(log, now_ms, &ids, "true", "last")
    }

    /// Snapshot records of `ids`, marking the final one with `last_mark`.
    fn publish_snapshot(
        &self,
        log: &mut EventLog,
        now_ms: i64,
        ids: &[TableId],
        mark: &str,
        last_mark: &str,
    ) -> Result<(), LogError> {
        let total: usize = ids.iter().map(|id| self.tables[id].1.len()).sum();
        let mut n = 0;
        for id in ids {
            let (schema, rows) = &self.tables[id];
            for row in rows.values() {
                n += 1;
                let snapshot = if n == total { last_mark } else { mark };
                self.publish_change(log, now_ms, schema, ("r", snapshot), None, Some(row))?;
            }
        }
        Ok(())
    }

    /// A fresh snapshot of just these tables (a resync request: Debezium's signal-based
    /// incremental snapshot, `snapshot` = `incremental`). Unknown or blocked tables are ignored
    /// and the rest returned.
    pub fn resnapshot(&self, log: &mut EventLog, now_ms: i64, tables: &[TableId]) -> Result<Vec<TableId>, LogError> {
        let ids: Vec<TableId> =
            tables.iter().filter(|id| self.tables.contains_key(id) && !is_blocked(&id.table)).cloned().collect();
        self.publish_snapshot(log, now_ms, &ids, "incremental", "incremental")?;
        Ok(ids)
    }

    /// One of `ids` (the published tables, listed once per [`Tenant::change`] call: checking
    /// the blocked list for every table on every change was a tenth of the change rate).
    fn pick_table(&mut self, ids: &[TableId]) -> Option<TableId> {
        (!ids.is_empty()).then(|| ids[self.rng.below(ids.len() as u64) as usize].clone())
    }

    /// An existing row's key, chosen at random (`hot`: among the first three), in O(log rows)
    /// for the integer keys every table has: a random value between the smallest and the
    /// largest key, then the first key at or above it. (Collecting every key per change made
    /// a change O(rows): ~700 changes/s at 50,000 rows per table.)
    fn pick_row(&mut self, rows: &TableRows, hot: bool) -> Option<PrimaryKey> {
        let (first, last) = (rows.keys().next()?, rows.keys().next_back()?);
        if hot {
            let n = rows.len().min(3) as u64;
            return rows.keys().nth(self.rng.below(n) as usize).cloned();
        }
        match (first.first(), last.first()) {
            (Some(Cell::Int(lo)), Some(Cell::Int(hi))) => {
                let bound: PrimaryKey = smallvec::smallvec![Cell::Int(self.rng.range(*lo, *hi))];
                rows.range(bound..).next().map(|(k, _)| k.clone())
            }
            _ => rows.keys().nth(self.rng.below(rows.len() as u64) as usize).cloned(),
        }
    }

    fn new_row(&mut self, schema: &TableSchema, rows: &TableRows) -> OwnedRow {
        // Keys are ordered by their first column: the last key holds the largest integer.
        let index = match rows.keys().next_back().and_then(|k| k.first()) {
            Some(Cell::Int(v)) => *v,
            _ => 0,
        };
        let mut row: OwnedRow = (0..schema.columns.len()).map(|_| Cell::Null).collect();
        for (i, c) in schema.columns.iter().enumerate() {
            let key = schema.primary_key.iter().position(|k| *k == c.name);
            row[i] = match (key, &c.sql_type) {
                (Some(_), SqlType::Int | SqlType::BigInt | SqlType::SmallInt | SqlType::TinyInt) => {
                    Cell::Int(index + 1)
                }
                (Some(_), _) => Cell::Text(format!("key-{}", index + 1).into()),
                _ => value(&mut self.rng, c, index as u64, None),
            };
        }
        row
    }

    /// Applies `count` random changes to the source and publishes them (`op` c / u / d).
    /// Every source transaction ends with a transaction-metadata `END` record (see
    /// [`crate::cloud::encode::transaction_end_record`]).
    pub fn change(&mut self, log: &mut EventLog, now_ms: i64, count: usize, mix: Workload) -> Result<(), LogError> {
        let result = self.change_in_transactions(log, now_ms, count, mix);
        let ended = self.end_transaction(log, now_ms);
        result.and(ended)
    }

    /// Publishes the open transaction's `END` record, if it has events.
    fn end_transaction(&self, log: &mut EventLog, now_ms: i64) -> Result<(), LogError> {
        let Some(events) = self.open_transaction.borrow_mut().take().filter(|e| !e.is_empty()) else {
            return Ok(());
        };
        let mut tables: Vec<(String, u64)> = Vec::new();
        for event in events {
            match tables.iter_mut().find(|(t, _)| *t == event) {
                Some((_, n)) => *n += 1,
                None => tables.push((event, 1)),
            }
        }
        let (topic, txn, with_schema) = (self.cdc_topic(), self.transaction.get(), self.config.with_schema);
        log.append(&topic, 0, now_ms, |offset| {
            crate::cloud::encode::transaction_end_record(&topic, offset, txn, &tables, (now_ms, with_schema))
        })?;
        Ok(())
    }

    fn change_in_transactions(
        &mut self,
        log: &mut EventLog,
        now_ms: i64,
        count: usize,
        mix: Workload,
    ) -> Result<(), LogError> {
        let published: Vec<TableId> = self.schemas().iter().map(|s| s.id.clone()).collect();
        for i in 0..count {
            // Multi-row transactions: about half the changes join the previous one's.
            if i == 0 || self.rng.chance(50) {
                self.end_transaction(log, now_ms)?;
                self.transaction.set(self.transaction.get() + 1);
                *self.open_transaction.borrow_mut() = Some(Vec::new());
            }
            let Some(id) = self.pick_table(&published) else { return Ok(()) };
            let (schema, mut rows) = self.tables.remove(&id).expect("picked from the map");
            let roll = self.rng.below(100);
            let hot = self.rng.below(100) < mix.hot_percent;
            let victim = self.pick_row(&rows, hot);
            let single_int_key = schema.primary_key.len() == 1
                && matches!(
                    schema.column(&schema.primary_key[0]).map(|c| c.sql_type),
                    Some(SqlType::Int | SqlType::BigInt)
                );
            let result = match victim {
                Some(key) if roll < mix.delete_percent => {
                    let old = rows.remove(&key).expect("existing key");
                    self.publish_change(log, now_ms, &schema, ("d", "false"), Some(&old), None)
                }
                Some(key) if roll < mix.delete_percent + mix.key_update_percent && single_int_key => {
                    // A primary-key update: Debezium emits a delete (and tombstone) of the old
                    // key, then a create of the new one.
                    let old = rows.remove(&key).expect("existing key");
                    let mut new = old.clone();
                    let fresh = self.new_row(&schema, &rows);
                    let k = schema.columns.iter().position(|c| c.name == schema.primary_key[0]).expect("key column");
                    new[k] = fresh[k].clone();
                    self.publish_change(log, now_ms, &schema, ("d", "false"), Some(&old), None)
                        .and_then(|()| self.publish_change(log, now_ms, &schema, ("c", "false"), None, Some(&new)))
                        .map(|()| {
                            rows.insert(key_of(&schema, &new), new);
                        })
                }
                Some(key) if roll >= mix.delete_percent + mix.key_update_percent + mix.insert_percent => {
                    let old = rows[&key].clone();
                    let mut new = old.clone();
                    for (i, c) in schema.columns.iter().enumerate() {
                        if !schema.primary_key.contains(&c.name) && self.rng.chance(40) {
                            new[i] = value(&mut self.rng, c, 0, None);
                        }
                    }
                    rows.insert(key, new.clone());
                    self.publish_change(log, now_ms, &schema, ("u", "false"), Some(&old), Some(&new))
                }
                _ => {
                    let new = self.new_row(&schema, &rows);
                    let key = key_of(&schema, &new);
                    match rows.entry(key) {
                        std::collections::btree_map::Entry::Occupied(_) => Ok(()),
                        std::collections::btree_map::Entry::Vacant(slot) => {
                            slot.insert(new.clone());
                            self.publish_change(log, now_ms, &schema, ("c", "false"), None, Some(&new))
                        }
                    }
                }
            };
            self.tables.insert(id, (schema, rows));
            result?;
        }
        Ok(())
    }

    /// A new table appears: its schema, then a snapshot of its rows.
    pub fn add_table(
        &mut self,
        log: &mut EventLog,
        now_ms: i64,
        schema: TableSchema,
        row_count: u64,
    ) -> Result<(), LogError> {
        let data = rows(&mut self.rng, &schema, row_count);
        let id = schema.id.clone();
        self.tables.insert(id.clone(), (schema, data));
        if is_blocked(&id.table) {
            return Ok(());
        }
        self.publish_history(log, now_ms, &self.tables[&id].0, "CREATE")?;
        self.publish_snapshot(log, now_ms, &[id], "true", "last")
    }

    /// A compatible change: a nullable column appended (existing rows hold `NULL`).
    pub fn add_nullable_column(
        &mut self,
        log: &mut EventLog,
        now_ms: i64,
        id: &TableId,
        column: ColumnSchema,
    ) -> Result<bool, LogError> {
        let Some((schema, rows)) = self.tables.get_mut(id) else { return Ok(false) };
        let column = ColumnSchema { nullable: true, position: schema.columns.len() as u32 + 1, ..column };
        schema.columns.push(column);
        for row in rows.values_mut() {
            let mut wider = row.to_vec();
            wider.push(Cell::Null);
            *row = wider.into_boxed_slice();
        }
        let schema = schema.clone();
        self.publish_history(log, now_ms, &schema, "ALTER")?;
        Ok(true)
    }

    /// An incompatible change: the table dropped and re-created with one column's type
    /// changed, its rows regenerated and snapshotted.
    pub fn recreate_incompatible(&mut self, log: &mut EventLog, now_ms: i64, id: &TableId) -> Result<bool, LogError> {
        let Some((mut schema, _)) = self.tables.remove(id) else { return Ok(false) };
        self.publish_history(log, now_ms, &schema, "DROP")?;
        change_a_column_type(&mut schema);
        let count = self.config.rows_per_table;
        self.add_table(log, now_ms, schema, count)?;
        Ok(true)
    }

    /// An incompatible `ALTER` in place (`ALTER TABLE … ALTER COLUMN` to another type): the
    /// connector publishes only the schema change, no rows, so the values after it reach a
    /// client only through a fresh snapshot it asks for. The rows are regenerated for the new
    /// type (the ground truth changes with the migration).
    pub fn alter_incompatible(&mut self, log: &mut EventLog, now_ms: i64, id: &TableId) -> Result<bool, LogError> {
        let Some((mut schema, _)) = self.tables.remove(id) else { return Ok(false) };
        change_a_column_type(&mut schema);
        let data = rows(&mut self.rng, &schema, self.config.rows_per_table);
        self.tables.insert(id.clone(), (schema, data));
        self.publish_history(log, now_ms, &self.tables[id].0, "ALTER")?;
        Ok(true)
    }

    /// The source table is dropped.
    pub fn drop_table(&mut self, log: &mut EventLog, now_ms: i64, id: &TableId) -> Result<bool, LogError> {
        let Some((schema, _)) = self.tables.remove(id) else { return Ok(false) };
        self.publish_history(log, now_ms, &schema, "DROP")?;
        Ok(true)
    }

    /// The source database restored from a backup (or moved): its contents change under the
    /// connector, which re-snapshots every table. Returns, per partition, the offset where the
    /// new snapshot starts; consumers must continue from there.
    pub fn restore(&mut self, log: &mut EventLog, now_ms: i64) -> Result<BTreeMap<i32, i64>, LogError> {
        // The backup is older: some rows the tenant has now did not exist, some changed back.
        let mut unpublished = EventLog::in_memory(std::time::Duration::MAX);
        self.create_topics(&mut unpublished)?;
        self.change(&mut unpublished, now_ms, 50, Workload::default())?;
        let topic = self.cdc_topic();
        let starts = log.ends(&topic);
        let ids: Vec<TableId> = self.schemas().iter().map(|s| s.id.clone()).collect();
        self.publish_snapshot(log, now_ms, &ids, "true", "last")?;
        Ok(starts)
    }
}

/// Changes the first non-key column to a type its values cannot be converted from in place.
fn change_a_column_type(schema: &mut TableSchema) {
    if let Some(c) = schema.columns.iter_mut().find(|c| !schema.primary_key.contains(&c.name)) {
        let (sql, name) = match c.sql_type {
            SqlType::NVarChar(_) => (SqlType::DateTime2 { scale: 7 }, "datetime2"),
            _ => (SqlType::NVarChar(Some(200)), "nvarchar"),
        };
        c.sql_type = sql;
        c.type_name = name.into();
        c.default_expression = None;
    }
}
