//! Stage 3: per-table coalescing of changes by primary key.
//!
//! Within a batch only each row's final state matters: the last image wins, a delete removes
//! earlier upserts, an insert after a delete is an upsert, and an update that changes the
//! primary key deletes the old key and upserts the new one. Tables are independent. The batch
//! also records the highest offset consumed per topic/partition, so the sink can commit the
//! data and the progress together.
//!
//! Schema changes are applied between batches: the caller takes the batch before applying a
//! schema-history record, and [`Coalescer::push`] refuses rows laid out under a schema other
//! than the one the table's pending rows use.

mod table_batch;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use table_batch::{Change, Logged, TableBatch};

use crate::decode::{ChangeEvent, Decoded, Event, Field, Op, ValueError};
use crate::protocol::OwnedPosition;
use crate::schema::{SchemaRegistry, TableId, TableSchema};

/// When a batch is handed to the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushPolicy {
    /// Records consumed (`DatabaseBatchSize`); counts hot-key updates that coalesce away, so
    /// progress keeps moving under a stream of updates to a few rows.
    pub max_records: u64,
    /// Approximate bytes of pending rows.
    pub max_bytes: usize,
    /// Age of the oldest record in the batch.
    pub max_age: Duration,
}

/// Records per replica transaction when the configuration does not say (`DatabaseBatchSize`,
/// the original client's default).
pub const DEFAULT_BATCH_RECORDS: u32 = 10_000;

impl Default for FlushPolicy {
    fn default() -> Self {
        Self { max_records: u64::from(DEFAULT_BATCH_RECORDS), max_bytes: 64 << 20, max_age: Duration::from_secs(1) }
    }
}

/// Why a record could not join a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoalesceErrorKind {
    /// No schema is known for the table, so its key and columns are unknown.
    #[error("no schema is known for table {0}")]
    UnknownTable(String),
    /// The table has no primary key; rows cannot be identified.
    #[error("table {0} has no primary key")]
    NoPrimaryKey(String),
    /// A row has a column the table schema does not have.
    #[error("table {table} has no column `{column}` (the schema is older than the event)")]
    UnknownColumn {
        /// `schema.table`.
        table: String,
        /// The column.
        column: String,
    },
    /// The event does not carry its row's key.
    #[error("{op} event for {table} lacks key column `{column}`")]
    MissingKey {
        /// `schema.table`.
        table: String,
        /// The operation code.
        op: &'static str,
        /// The missing key column.
        column: String,
    },
    /// The table's schema changed while rows under the previous schema were pending.
    #[error("schema of {0} changed within a batch; flush before applying schema changes")]
    SchemaChangedWithinBatch(String),
    /// A value could not be copied (binary text that does not decode).
    #[error("column `{column}` of {table}: {source}")]
    Value {
        /// `schema.table`.
        table: String,
        /// The column.
        column: String,
        /// The cause.
        source: ValueError,
    },
}

/// A record that could not be coalesced, with its position when known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {}: {kind}", position.as_ref().map_or_else(|| "?".to_string(), ToString::to_string))]
pub struct CoalesceError {
    /// Where the record sits in the log.
    pub position: Option<OwnedPosition>,
    /// What is wrong (boxed: errors are rare, results are many).
    pub kind: Box<CoalesceErrorKind>,
}

/// Changes ready for one sink transaction.
#[derive(Debug, Default)]
pub struct Batch {
    tables: BTreeMap<TableId, TableBatch>,
    offsets: BTreeMap<(String, i32), i64>,
    reset_epoch: Option<u64>,
    records: u64,
    bytes: usize,
    started: Option<Instant>,
    /// Source commit times (ms) of the oldest and newest change: for lag and latency.
    source_ms: Option<(i64, i64)>,
    /// See [`Batch::superseded`].
    superseded: Vec<i64>,
}

/// One change of a batch on its own: a key's final state, or (`None`) a table's truncate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The table, as the batch lays its rows out.
    pub schema: Arc<TableSchema>,
    /// The key's final state; `None` for the table's truncate.
    pub change: Option<Change>,
    /// The key's change events, in order, when its table keeps a history (see [`Logged`]).
    pub log: Vec<Logged>,
}

impl Unit {
    /// A key's final state (or a truncate) with no history.
    pub fn new(schema: Arc<TableSchema>, change: Option<Change>) -> Self {
        Unit { schema, change, log: Vec::new() }
    }
}

/// Which tables keep a log of every change (their owner wants a history, see `owner::modes`).
#[derive(Clone)]
pub struct LogFilter(pub Arc<dyn Fn(&TableId) -> bool + Send + Sync>);

impl std::fmt::Debug for LogFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogFilter")
    }
}

impl Batch {
    /// Source commit times (ms since the epoch) of the batch's oldest and newest change.
    pub fn source_ms(&self) -> Option<(i64, i64)> {
        self.source_ms
    }

    /// The per-table changes, in table order.
    pub fn tables(&self) -> impl Iterator<Item = &TableBatch> {
        self.tables.values()
    }

    /// Writes the changes of table `from` to `schema.id` as well, in the same transaction (a
    /// resync's shadow table follows its live table until it is swapped in). Repeating it
    /// (a retried batch) replaces the copy.
    pub fn copy_table(&mut self, from: &TableId, schema: Arc<TableSchema>) {
        if let Some(copy) = self.tables.get(from).map(|t| t.copy_for(schema.clone())) {
            self.tables.insert(schema.id.clone(), copy);
        }
    }

    /// The highest offset consumed per (topic, partition); the next fetch starts one later.
    pub fn offsets(&self) -> &BTreeMap<(String, i32), i64> {
        &self.offsets
    }

    /// The offset reset this batch completes, if any: stored with its offsets.
    pub fn reset_epoch(&self) -> Option<u64> {
        self.reset_epoch
    }

    /// Records consumed, including those that coalesced away.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// True when nothing was consumed.
    pub fn is_empty(&self) -> bool {
        self.records == 0 && self.offsets.is_empty() && self.reset_epoch.is_none()
    }

    /// The batch's changes one by one: every key's final state, and each table's truncate
    /// (see [`Unit`]), for finding the rows a replica refuses.
    pub fn units(&self) -> Vec<Unit> {
        let mut units = Vec::new();
        for table in self.tables.values() {
            let schema = table.schema();
            let mut logs: std::collections::HashMap<&crate::row::PrimaryKey, Vec<Logged>> = Default::default();
            for logged in table.log().unwrap_or_default() {
                logs.entry(&logged.key).or_default().push(logged.clone());
            }
            let first = units.len();
            for change in table.changes() {
                let key = match &change {
                    Change::Upsert(key, _) | Change::Delete(key) => key,
                };
                let log = logs.remove(key).unwrap_or_default();
                units.push(Unit { schema: schema.clone(), change: Some(change), log });
            }
            // What is left are changes of keys the truncate then cleared: they happened, so
            // they go with the truncate (every key change's log is in its key's unit above).
            let log: Vec<Logged> = logs.into_values().flatten().collect();
            if table.truncate_first() {
                units.insert(first, Unit { schema: schema.clone(), change: None, log });
            }
        }
        units
    }

    /// A batch of just these changes, consuming no records and carrying no offsets: applying
    /// it moves no progress.
    pub fn of_units<'u>(units: impl IntoIterator<Item = &'u Unit>) -> Batch {
        let mut batch = Batch::default();
        for unit in units {
            let table = batch
                .tables
                .entry(unit.schema.id.clone())
                .or_insert_with(|| TableBatch::new(Arc::clone(&unit.schema), false));
            match &unit.change {
                None => table.truncate(),
                Some(change) => table.record(change.clone()),
            }
            unit.log.iter().for_each(|logged| table.log_change(logged.clone()));
        }
        batch
    }

    /// The same progress (offsets, records, reset, superseded refusals) with these changes
    /// instead (the owner's column rules applied, see `owner::columns`).
    pub fn with_changes<'u>(&self, units: impl IntoIterator<Item = &'u Unit>) -> Batch {
        Batch {
            offsets: self.offsets.clone(),
            reset_epoch: self.reset_epoch,
            records: self.records,
            source_ms: self.source_ms,
            superseded: self.superseded.clone(),
            started: self.started,
            ..Batch::of_units(units)
        }
    }

    /// Rows of `_ReplicationErrors` this batch makes obsolete (a later version of a refused
    /// row that the replica accepted): deleted in the batch's transaction.
    pub fn superseded(&self) -> &[i64] {
        &self.superseded
    }

    /// Sets [`Batch::superseded`].
    pub fn set_superseded(&mut self, ids: Vec<i64>) {
        self.superseded = ids;
    }

    fn note(&mut self, position: Option<&OwnedPosition>, now: Instant) {
        self.records += 1;
        self.started.get_or_insert(now);
        if let Some(p) = position {
            self.consume(&p.topic, p.partition, p.offset);
        }
    }

    fn consume(&mut self, topic: &str, partition: i32, offset: i64) {
        match self.offsets.get_mut(&(topic.to_owned(), partition)) {
            Some(slot) => *slot = (*slot).max(offset),
            None => {
                self.offsets.insert((topic.to_owned(), partition), offset);
            }
        }
    }
}

/// Accumulates decoded records into a [`Batch`].
#[derive(Debug, Default)]
pub struct Coalescer {
    policy: FlushPolicy,
    batch: Batch,
    /// Tables that keep every change besides the final states (see [`Logged`]).
    keep_log: Option<LogFilter>,
}

impl Coalescer {
    /// A coalescer flushing by `policy`.
    pub fn new(policy: FlushPolicy) -> Self {
        Self { policy, batch: Batch::default(), keep_log: None }
    }

    /// Keeps every change of the tables `filter` names, besides their final states.
    pub fn keep_logs(mut self, filter: Option<LogFilter>) -> Self {
        self.keep_log = filter;
        self
    }

    /// Adds one record. Tombstones and schema changes only advance the offsets; the caller
    /// applies schema changes between batches. On error the batch is unchanged.
    pub fn push(&mut self, decoded: &Decoded<'_>, schemas: &SchemaRegistry, now: Instant) -> Result<(), CoalesceError> {
        let position = decoded.position.map(|p| p.to_owned());
        if let Event::Change(change) = &decoded.event {
            self.push_change(change, schemas, position.as_ref())
                .map_err(|kind| CoalesceError { position: position.clone(), kind: Box::new(kind) })?;
        }
        self.batch.note(position.as_ref(), now);
        Ok(())
    }

    fn push_change(
        &mut self,
        change: &ChangeEvent<'_>,
        schemas: &SchemaRegistry,
        position: Option<&OwnedPosition>,
    ) -> Result<(), CoalesceErrorKind> {
        let (schema_name, table_name) = (change.source.schema, change.source.table);
        let qualified = || format!("{schema_name}.{table_name}");
        let schema =
            schemas.get(schema_name, table_name).ok_or_else(|| CoalesceErrorKind::UnknownTable(qualified()))?;
        if schema.primary_key.is_empty() {
            return Err(CoalesceErrorKind::NoPrimaryKey(qualified()));
        }
        let id = &schema.id;
        if let Some(ms) = change.source.ts_ms {
            let (oldest, newest) = self.batch.source_ms.unwrap_or((ms, ms));
            self.batch.source_ms = Some((oldest.min(ms), newest.max(ms)));
        }
        if let Some(existing) = self.batch.tables.get(id)
            && !Arc::ptr_eq(existing.schema(), schema)
        {
            return Err(CoalesceErrorKind::SchemaChangedWithinBatch(qualified()));
        }
        // Build everything first so a bad event leaves the batch untouched.
        let prepared = prepare(schema, change)?;
        let keep_log = &self.keep_log;
        let table = self
            .batch
            .tables
            .entry(id.clone())
            .or_insert_with(|| TableBatch::new(Arc::clone(schema), keep_log.as_ref().is_some_and(|f| (f.0)(id))));
        let logged = match table.log() {
            Some(_) => logged(schema, change, &prepared, position)?,
            None => None,
        };
        let before = table.approx_bytes();
        table.apply(prepared);
        if let Some(logged) = logged {
            table.log_change(logged);
        }
        self.batch.bytes = self.batch.bytes + table.approx_bytes() - before;
        Ok(())
    }

    /// Marks a record consumed without applying anything (a record skipped on purpose, or the
    /// positions an offset reset continues after): its offset is stored with the batch.
    pub fn advance(&mut self, topic: &str, partition: i32, offset: i64) {
        self.batch.consume(topic, partition, offset);
    }

    /// Stores the offset reset this batch completes with its offsets.
    pub fn complete_reset(&mut self, epoch: u64) {
        self.batch.reset_epoch = Some(epoch);
    }

    /// True when the batch should go to the sink now.
    pub fn should_flush(&self, now: Instant) -> bool {
        let b = &self.batch;
        b.records >= self.policy.max_records
            || b.bytes >= self.policy.max_bytes
            || b.started.is_some_and(|t| now.duration_since(t) >= self.policy.max_age)
    }

    /// When the batch will be due by age, if it has started.
    pub fn deadline(&self) -> Option<Instant> {
        self.batch.started.map(|t| t + self.policy.max_age)
    }

    /// Takes the batch, leaving an empty one.
    pub fn take(&mut self) -> Batch {
        std::mem::take(&mut self.batch)
    }

    /// Records in the current batch.
    pub fn pending_records(&self) -> u64 {
        self.batch.records
    }
}

/// What one event does to its table, with owned rows and keys.
// Lives on the stack for one call; inline storage avoids a heap allocation per event.
#[allow(clippy::large_enum_variant)]
enum Prepared {
    Truncate,
    Ops(smallvec::SmallVec<[Change; 2]>),
}

fn prepare(schema: &TableSchema, change: &ChangeEvent<'_>) -> Result<Prepared, CoalesceErrorKind> {
    let mut ops = smallvec::SmallVec::new();
    let image_key = |fields: &[Field<'_>]| table_batch::key_from_fields(schema, fields, change.op);
    match change.op {
        Op::Truncate => return Ok(Prepared::Truncate),
        Op::Create | Op::Read | Op::Update => {
            let after = change.after.as_deref().ok_or_else(|| missing_image(schema, change.op))?;
            let row = table_batch::owned_row(schema, after)?;
            let key = table_batch::key_from_row(schema, &row, change.op)?;
            if let (Op::Update, Some(before)) = (change.op, change.before.as_deref()) {
                let old = image_key(before)?;
                if old != key {
                    ops.push(Change::Delete(old));
                }
            }
            ops.push(Change::Upsert(key, row));
        }
        Op::Delete => {
            let key = match (change.before.as_deref(), change.key.as_deref()) {
                (Some(before), _) => image_key(before)?,
                (None, Some(key)) => image_key(key)?,
                (None, None) => return Err(missing_image(schema, change.op)),
            };
            ops.push(Change::Delete(key));
        }
    }
    Ok(Prepared::Ops(ops))
}

/// The change as the history keeps it; `None` for a truncate (no row). An insert's or an
/// update's row is the one [`prepare`] already laid out; only a delete's image is laid out
/// here (its final state is just a key).
fn logged(
    schema: &TableSchema,
    change: &ChangeEvent<'_>,
    prepared: &Prepared,
    position: Option<&OwnedPosition>,
) -> Result<Option<Logged>, CoalesceErrorKind> {
    let (key, row) = match (change.op, prepared) {
        (Op::Truncate, _) | (_, Prepared::Truncate) => return Ok(None),
        (Op::Delete, _) => {
            let image = change.before.as_deref().or(change.key.as_deref());
            let row = table_batch::owned_row(schema, image.ok_or_else(|| missing_image(schema, change.op))?)?;
            (table_batch::key_from_row(schema, &row, change.op)?, row)
        }
        (_, Prepared::Ops(ops)) => match ops.last() {
            Some(Change::Upsert(key, row)) => (key.clone(), row.clone()),
            _ => return Err(missing_image(schema, change.op)),
        },
    };
    let text = |t: Option<&str>| t.map(Box::<str>::from);
    Ok(Some(Logged {
        op: change.op,
        key,
        row,
        source_ms: change.source.ts_ms,
        commit_lsn: text(change.source.commit_lsn),
        change_lsn: text(change.source.change_lsn),
        serial: change.source.event_serial_no,
        position: position.map(|p| (p.partition, p.offset)),
    }))
}

fn missing_image(schema: &TableSchema, op: Op) -> CoalesceErrorKind {
    CoalesceErrorKind::MissingKey {
        table: schema.id.to_string(),
        op: op.code(),
        column: schema.primary_key.first().cloned().unwrap_or_default(),
    }
}

impl TableBatch {
    fn apply(&mut self, prepared: Prepared) {
        match prepared {
            Prepared::Truncate => self.truncate(),
            Prepared::Ops(ops) => ops.into_iter().for_each(|op| self.record(op)),
        }
    }
}
