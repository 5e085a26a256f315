//! A replica kept in memory: the data path, `_ReplicationState` and the read-back of a real
//! target with none of its I/O, for fast pipeline tests (every lifecycle scenario in
//! milliseconds) and for checking the sink contract's model. Clones share one database, as
//! two connections to one replica do (the pipeline's data and state connections).
//!
//! Failures can be injected: [`MemoryReplica::fail_next_applies`] makes the next batches fail
//! with a transient error and commit nothing, as a lost connection would, and
//! [`MemoryReplica::fail_next_fact_writes`] does the same to session-fact writes (the replica
//! unreachable when rotated tokens must be stored), and [`MemoryReplica::refuse_tables_wider_than`]
//! refuses tables with too many columns for good, as SQLite refuses more than 2,000.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use super::ddl::failed_fact;
use super::plan::{Intent, SchemaPlan, SinkOptions, check_batch_schema, plan, remember, result, writes_to};
use super::{CanonicalRow, ReplicaRead, SchemaOutcome, Sink, SinkError, shadow};
use crate::canonical::canonical;
use crate::coalesce::Batch;
use crate::row::Cell;
use crate::schema::{SqlType, TableChange, TableId};
use crate::state::fence::Fence;
use crate::state::{
    Offsets, Session, SessionValue, StateStore, TableRecord, TableState, offset_rows, parse_offset_name,
};

/// Rows by primary key, in canonical text form.
type Rows = BTreeMap<Vec<Option<String>>, CanonicalRow>;

#[derive(Debug, Default)]
struct Database {
    tables: HashMap<TableId, TableRecord>,
    rows: HashMap<TableId, Rows>,
    offset_rows: Offsets,
    facts: Session,
    failing_applies: u32,
    failing_fact_writes: u32,
    max_columns: Option<usize>,
    scripts: Vec<String>,
    writer_epoch: Option<(i64, String)>,
    refused: Vec<crate::state::refused::RefusedRow>,
}

impl Database {
    fn raise_offsets(&mut self, offsets: &Offsets, reset_epoch: Option<u64>) {
        for (name, _, last) in offset_rows(offsets, reset_epoch) {
            if let Some(key) = parse_offset_name(&name) {
                let slot = self.offset_rows.entry(key).or_insert(last);
                *slot = (*slot).max(last);
            }
        }
    }
}

/// The in-memory replica (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct MemoryReplica {
    db: Arc<Mutex<Database>>,
    options: SinkOptions,
    fence: Option<Fence>,
}

/// An injected transient failure.
fn lost(what: &str) -> SinkError {
    SinkError::Io {
        context: format!("{what} (injected)"),
        source: std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection lost"),
    }
}

fn canonical_cells(cells: &[Cell], types: impl Iterator<Item = SqlType>) -> CanonicalRow {
    cells.iter().zip(types).map(|(cell, sql)| canonical(cell, sql)).collect()
}

impl MemoryReplica {
    /// An empty replica shaped by `options` (skip list, prefix).
    pub fn new(options: SinkOptions) -> Self {
        MemoryReplica { db: Arc::default(), options, fence: None }
    }

    /// Makes the next `count` batches fail (transiently) and commit nothing.
    pub fn fail_next_applies(&self, count: u32) {
        self.lock().failing_applies = count;
    }

    /// Makes the next `count` session-fact writes fail (transiently) and store nothing.
    pub fn fail_next_fact_writes(&self, count: u32) {
        self.lock().failing_fact_writes = count;
    }

    /// The hook scripts run so far, in order (the memory replica runs no SQL; a script
    /// containing `FAIL` fails, for tests of hook failures).
    pub fn scripts(&self) -> Vec<String> {
        self.lock().scripts.clone()
    }

    /// Refuses, for good, to create tables with more than `columns` columns.
    pub fn refuse_tables_wider_than(&self, columns: usize) {
        self.lock().max_columns = Some(columns);
    }

    fn lock(&self) -> MutexGuard<'_, Database> {
        self.db.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The database for a write, once this handle's fence is proven (see `state::fence`).
    fn writer(&self) -> Result<MutexGuard<'_, Database>, SinkError> {
        let db = self.lock();
        match (self.fence, &db.writer_epoch) {
            (Some(fence), Some((epoch, _))) if *epoch == fence.epoch => Ok(db),
            (None, _) => Ok(db),
            (Some(fence), stored) => Err(SinkError::Superseded {
                ours: fence.epoch,
                stored: stored.as_ref().map(|(epoch, _)| *epoch),
                holder: stored.as_ref().map(|(_, holder)| holder.clone()).unwrap_or_default(),
            }),
        }
    }
}

impl Sink for MemoryReplica {
    fn change_schema(&mut self, change: &TableChange, intent: &Intent) -> Result<SchemaOutcome, SinkError> {
        let mut db = self.writer()?;
        let new = &change.table;
        let existing = db.tables.get(&new.id);
        let was_failed = existing.is_some_and(|r| r.state == TableState::Failed);
        let plan = plan(&self.options, existing, change, intent)?;
        let (outcome, record) = result(&plan, new);
        match &plan {
            SchemaPlan::Skip | SchemaPlan::Unchanged => return Ok(outcome),
            SchemaPlan::Drop(_) | SchemaPlan::Fail(_) => {
                db.rows.remove(&new.id);
            }
            SchemaPlan::Create(_) | SchemaPlan::Recreate(_) => {
                if db.max_columns.is_some_and(|max| new.columns.len() > max) {
                    return Err(SinkError::Table {
                        table: new.id.clone(),
                        reason: format!("too many columns ({}; injected limit)", new.columns.len()),
                    });
                }
                db.rows.insert(new.id.clone(), Rows::new());
            }
            SchemaPlan::AddColumns(_, added) => {
                for row in db.rows.entry(new.id.clone()).or_default().values_mut() {
                    row.extend(added.iter().map(|_| None));
                }
            }
        }
        match intent {
            Intent::Fail(reason) => {
                db.facts.insert(failed_fact(&new.id), SessionValue::Text(reason.clone()));
            }
            Intent::Follow if was_failed => {
                db.facts.insert(failed_fact(&new.id), SessionValue::Text(String::new()));
            }
            Intent::Follow => {}
        }
        remember(&mut db.tables, &new.id, record);
        Ok(outcome)
    }

    fn apply(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let mut db = self.writer()?;
        if db.failing_applies > 0 {
            db.failing_applies -= 1;
            return Err(lost("writing a batch"));
        }
        // Checked first, so a refused batch changes nothing.
        let written: Vec<_> = batch
            .tables()
            .filter(|t| writes_to(&self.options, db.tables.get(&t.schema().id), &t.schema().id))
            .collect();
        for table in &written {
            check_batch_schema(db.tables.get(&table.schema().id), table.schema())?;
        }
        for table in written {
            let schema = table.schema();
            let key_types: Vec<SqlType> =
                schema.primary_key.iter().map(|k| schema.column(k).map_or(SqlType::Other, |c| c.sql_type)).collect();
            let soft = soft_columns(schema);
            let at = batch_time(batch);
            let rows = db.rows.entry(schema.id.clone()).or_default();
            match soft {
                Some(soft) => {
                    if table.truncate_first() {
                        rows.values_mut().for_each(|row| soft.mark(row, &at));
                    }
                    for key in table.deletes() {
                        if let Some(row) = rows.get_mut(&canonical_cells(key, key_types.iter().copied())) {
                            soft.mark(row, &at);
                        }
                    }
                }
                None => {
                    if table.truncate_first() {
                        rows.clear();
                    }
                    for key in table.deletes() {
                        rows.remove(&canonical_cells(key, key_types.iter().copied()));
                    }
                }
            }
            for (key, row) in table.upserts() {
                let row = canonical_cells(row, schema.columns.iter().map(|c| c.sql_type));
                rows.insert(canonical_cells(key, key_types.iter().copied()), row);
            }
        }
        db.raise_offsets(batch.offsets(), batch.reset_epoch());
        db.refused.retain(|r| !batch.superseded().contains(&r.id));
        Ok(())
    }

    fn replace_from_shadow(&mut self, id: &TableId) -> Result<(), SinkError> {
        let mut db = self.writer()?;
        let swap = shadow::Swap::plan(&db.tables, id, |_, _| String::new())?;
        let mut rows = db.rows.remove(&id.shadow()).unwrap_or_default();
        // A soft table keeps the rows the fresh snapshot no longer has, as deleted.
        if let Some(soft) = soft_columns(&swap.ready.schema) {
            let now = batch_time(&Batch::default());
            for (key, mut row) in db.rows.remove(id).unwrap_or_default() {
                if let std::collections::btree_map::Entry::Vacant(slot) = rows.entry(key) {
                    soft.mark(&mut row, &now);
                    slot.insert(row);
                }
            }
        }
        db.rows.insert(id.clone(), rows);
        swap.done(&mut db.tables);
        Ok(())
    }

    fn run_script(&mut self, sql: &str) -> Result<(), SinkError> {
        if sql.contains("FAIL") {
            return Err(SinkError::Table {
                table: TableId::new("memory", "script"),
                reason: "the script failed".into(),
            });
        }
        self.writer()?.scripts.push(sql.to_owned());
        Ok(())
    }

    fn target_name(&self, id: &TableId) -> Option<String> {
        self.lock().tables.contains_key(id).then(|| id.to_string())
    }

    fn retire_table(&mut self, id: &TableId, new_name: &str) -> Result<(), SinkError> {
        let mut db = self.writer()?;
        let rows = db.rows.remove(id).unwrap_or_default();
        db.rows.insert(TableId::new(id.schema.clone(), new_name), rows);
        db.tables.remove(id);
        Ok(())
    }
}

/// Where a soft table keeps its flags (see `owner::modes`), in canonical rows.
#[derive(Debug, Clone, Copy)]
struct SoftColumns {
    deleted: usize,
    at: usize,
}

impl SoftColumns {
    /// Flags a live row deleted at `at`; a row already deleted keeps its time.
    fn mark(self, row: &mut CanonicalRow, at: &Option<String>) {
        if row[self.deleted].as_deref() != Some("1") {
            row[self.deleted] = Some("1".into());
            row[self.at] = at.clone();
        }
    }
}

fn soft_columns(schema: &crate::schema::TableSchema) -> Option<SoftColumns> {
    crate::owner::modes::layout::soft_positions(schema).map(|(deleted, at)| SoftColumns { deleted, at })
}

/// `_deleted_at` of a batch's soft deletes, canonical (see [`crate::owner::modes::deleted_at`]).
fn batch_time(batch: &Batch) -> Option<String> {
    canonical(&Cell::DateTime(crate::owner::modes::deleted_at(batch)), crate::owner::modes::layout::TIME_TYPE)
}

impl StateStore for MemoryReplica {
    fn all_records(&self) -> Vec<TableRecord> {
        self.lock().tables.values().cloned().collect()
    }

    fn table(&self, id: &TableId) -> Option<TableRecord> {
        self.lock().tables.get(id).cloned()
    }

    fn offset_rows(&mut self) -> Result<Offsets, SinkError> {
        Ok(self.lock().offset_rows.clone())
    }

    fn set_table_state(&mut self, id: &TableId, state: TableState) -> Result<(), SinkError> {
        let mut db = self.writer()?;
        let record = db
            .tables
            .get_mut(id)
            .ok_or_else(|| SinkError::Table { table: id.clone(), reason: "not in the replica".into() })?;
        record.state = state;
        Ok(())
    }

    fn write_facts(&mut self, facts: &[(&str, SessionValue)]) -> Result<(), SinkError> {
        let mut db = self.writer()?;
        if db.failing_fact_writes > 0 {
            db.failing_fact_writes -= 1;
            return Err(lost("writing session facts"));
        }
        for (name, value) in facts {
            db.facts.insert((*name).to_owned(), value.clone());
        }
        Ok(())
    }

    fn claim_writer(&mut self, holder: &str) -> Result<Fence, SinkError> {
        let epoch = {
            let mut db = self.lock();
            let epoch = db.writer_epoch.as_ref().map_or(1, |(epoch, _)| epoch + 1);
            db.writer_epoch = Some((epoch, holder.to_owned()));
            epoch
        };
        self.fence = Some(Fence { epoch });
        Ok(Fence { epoch })
    }

    fn hold_fence(&mut self, fence: Fence) {
        self.fence = Some(fence);
    }

    fn read_facts(&mut self) -> Result<Session, SinkError> {
        Ok(self.lock().facts.clone())
    }

    fn write_refused(
        &mut self,
        refused: &[crate::state::refused::Refusal],
        (offsets, reset_epoch): (&Offsets, Option<u64>),
    ) -> Result<(), SinkError> {
        let mut db = self.writer()?;
        for r in refused {
            let id = db.refused.last().map_or(1, |last| last.id + 1);
            db.refused.push(crate::state::refused::RefusedRow {
                id,
                table: r.table.clone(),
                key: r.key.clone(),
                operation: r.operation.to_owned(),
                image: r.image.clone(),
                error: r.error.clone(),
                refused_at: crate::clock::now_ms().to_string(),
            });
        }
        db.raise_offsets(offsets, reset_epoch);
        Ok(())
    }

    fn read_refused(&mut self) -> Result<Vec<crate::state::refused::RefusedRow>, SinkError> {
        Ok(self.lock().refused.clone())
    }

    fn delete_refused(&mut self, ids: &[i64]) -> Result<(), SinkError> {
        self.writer()?.refused.retain(|r| !ids.contains(&r.id));
        Ok(())
    }
}

impl ReplicaRead for MemoryReplica {
    fn read_rows(&mut self, id: &TableId) -> Result<Vec<CanonicalRow>, SinkError> {
        let db = self.lock();
        if !db.tables.contains_key(id) {
            return Err(super::missing(id));
        }
        Ok(db.rows.get(id).map(|rows| rows.values().cloned().collect()).unwrap_or_default())
    }

    fn check_writable(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}
