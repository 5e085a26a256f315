//! [`Retaining`]: a replica written through the owner's delete modes.
//!
//! Below it, the target holds soft tables in their soft layout (and soft-deletes natively:
//! it recognises a soft table by its `_deleted` column) and history tables as ordinary
//! tables keyed by change. Above it, everything sees the source's layout and no history
//! tables, exactly as without modes.

use std::collections::HashMap;
use std::sync::Arc;

use crate::coalesce::{Batch, Change, Unit};
use crate::db::SinkError;
use crate::owner::OwnerRules;
use crate::owner::modes::{DeleteMode, layout};
use crate::schema::{SchemaChangeKind, TableChange, TableId, TableSchema};
use crate::sink::plan::Intent;
use crate::sink::{CanonicalRow, Replica, ReplicaRead, SchemaOutcome, Sink};
use crate::state::{StateStore, TableRecord, TableState};

/// A replica written through delete modes (see the module docs).
pub struct Retaining {
    inner: Box<dyn Replica>,
    owner: Arc<OwnerRules>,
}

impl std::fmt::Debug for Retaining {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retaining").field("modes", &self.owner.modes).finish_non_exhaustive()
    }
}

impl Retaining {
    /// One record as seen from above: history tables hidden, soft tables without their flags.
    fn record_above(&self, mut record: TableRecord) -> Option<TableRecord> {
        if layout::is_history(&record.schema) {
            return None;
        }
        if layout::is_soft(&record.schema) {
            record.schema = Arc::new(layout::strip_soft(&record.schema));
        }
        Some(record)
    }

    /// `inner` through the owner's delete modes.
    pub fn new(inner: Box<dyn Replica>, owner: Arc<OwnerRules>) -> Self {
        Retaining { inner, owner }
    }

    /// Creates, grows or (retiring the old one) re-creates `source`'s history table.
    fn follow_history(&mut self, source: &TableSchema) -> Result<(), SinkError> {
        let id = layout::history_id(&source.id);
        let existing = self.inner.table(&id).filter(|r| layout::is_history(&r.schema));
        let (history, retire) = layout::history_layout(source, existing.as_ref().map(|r| &*r.schema));
        if retire {
            let stamp = utc_stamp();
            let name = format!("{}_{stamp}", id.table);
            tracing::warn!(table = %source.id, kept_as = %name, "a column's type changed: the history table is kept under a new name and a new one started");
            self.inner.retire_table(&id, &name)?;
        }
        let kind = if existing.is_some() && !retire { SchemaChangeKind::Alter } else { SchemaChangeKind::Create };
        self.inner.change_schema(&TableChange { kind, table: history }, &Intent::Follow)?;
        if self.inner.table(&id).is_some_and(|r| r.state != TableState::Ready) {
            self.inner.set_table_state(&id, TableState::Ready)?;
        }
        Ok(())
    }

    /// The units of `batch` as the target lays them out: soft rows with their flags, history
    /// rows added.
    fn lay_out(&mut self, batch: &Batch) -> Result<Vec<Unit>, SinkError> {
        let mut layouts: HashMap<TableId, (Arc<TableSchema>, Vec<Option<usize>>)> = HashMap::new();
        let mut out = Vec::new();
        for unit in batch.units() {
            let id = &unit.schema.id;
            match self.owner.modes.for_table(id) {
                DeleteMode::Hard => out.push(Unit::new(unit.schema.clone(), unit.change)),
                DeleteMode::Soft => {
                    let (schema, slots) = match layouts.get(id) {
                        Some(found) => found.clone(),
                        None => {
                            let record = self.inner.table(id).ok_or_else(|| crate::sink::missing(id))?;
                            let found = (record.schema.clone(), layout::slots(&record.schema.columns, &unit.schema));
                            layouts.insert(id.clone(), found.clone());
                            found
                        }
                    };
                    let change = unit.change.map(|change| match change {
                        Change::Upsert(key, row) => Change::Upsert(key, layout::soft_row(&schema, &slots, &row)),
                        delete => delete,
                    });
                    out.push(Unit::new(schema, change));
                }
                // A resync's shadow gets a copy of its live table's changes: their history is
                // the live table's.
                DeleteMode::History if id.is_shadow() => {
                    out.push(Unit::new(unit.schema.clone(), unit.change));
                }
                DeleteMode::History => {
                    let history_id = layout::history_id(id);
                    if !unit.log.is_empty() && !layouts.contains_key(&history_id) {
                        // Created with its table, or by `prepare` when the mode was switched on.
                        let record = self
                            .inner
                            .table(&history_id)
                            .filter(|r| layout::is_history(&r.schema))
                            .ok_or_else(|| crate::sink::missing(&history_id))?;
                        let slots = layout::slots(&record.schema.columns, &unit.schema);
                        layouts.insert(history_id.clone(), (record.schema.clone(), slots));
                    }
                    for logged in &unit.log {
                        let (schema, slots) = &layouts[&history_id];
                        let (key, row) = layout::history_row(schema, slots, logged);
                        out.push(Unit::new(schema.clone(), Some(Change::Upsert(key, row))));
                    }
                    out.push(Unit::new(unit.schema.clone(), unit.change));
                }
            }
        }
        Ok(out)
    }

    /// A soft table's column positions of `_deleted` and `_deleted_at` in the target.
    fn soft_columns(&self, id: &TableId) -> Option<(usize, usize)> {
        layout::soft_positions(&self.inner.table(id)?.schema)
    }
}

/// `yyyymmdd_hhmmss` in UTC, for a retired history table's name.
fn utc_stamp() -> String {
    let mut text = String::new();
    if let Ok(time) = crate::value::DateTime::from_epoch_units(crate::clock::now_ms(), 1_000_000) {
        time.write_fixed(&mut text, 0);
    }
    let stamp = text.replace(['-', ':'], "").replace(' ', "_");
    stamp.split('.').next().unwrap_or_default().to_owned()
}

impl Sink for Retaining {
    fn change_schema(&mut self, change: &TableChange, intent: &Intent) -> Result<SchemaOutcome, SinkError> {
        let id = &change.table.id;
        let mode = self.owner.modes.for_table(id);
        if mode != DeleteMode::Soft {
            let outcome = self.inner.change_schema(change, intent)?;
            let follows = matches!(
                outcome,
                SchemaOutcome::Created
                    | SchemaOutcome::Altered { .. }
                    | SchemaOutcome::Recreated
                    | SchemaOutcome::Adopted
            );
            if mode == DeleteMode::History && follows && !id.is_shadow() {
                self.follow_history(&change.table)?;
            }
            return Ok(outcome);
        }
        let existing = self.inner.table(id);
        let table = layout::soft_layout(&change.table, existing.as_ref().map(|r| &*r.schema))
            .map_err(|conflict| SinkError::Table { table: id.clone(), reason: conflict.to_string() })?;
        self.inner.change_schema(&TableChange { kind: change.kind, table }, intent)
    }

    fn apply(&mut self, batch: &Batch) -> Result<(), SinkError> {
        if batch.tables().all(|t| self.owner.modes.for_table(&t.schema().id) == DeleteMode::Hard) {
            return self.inner.apply(batch);
        }
        let units = self.lay_out(batch)?;
        self.inner.apply(&batch.with_changes(&units))
    }

    fn prepare(&mut self) -> Result<(), SinkError> {
        self.inner.prepare()?;
        for record in self.inner.tables() {
            let id = &record.schema.id;
            if self.owner.modes.for_table(id) != DeleteMode::History || layout::is_history(&record.schema) {
                continue;
            }
            if !self.inner.table(&layout::history_id(id)).is_some_and(|r| layout::is_history(&r.schema)) {
                tracing::info!(table = %id, "the table keeps a history from now on: its history table is created");
                self.follow_history(&record.schema)?;
            }
        }
        Ok(())
    }

    fn layout_changed(&mut self) -> Result<Vec<TableId>, SinkError> {
        let mut changed = self.inner.layout_changed()?;
        for record in self.inner.all_records() {
            let id = &record.schema.id;
            let soft_now = self.owner.modes.for_table(id) == DeleteMode::Soft;
            let live = !id.is_shadow() && !layout::is_history(&record.schema);
            if live && soft_now != layout::is_soft(&record.schema) && !changed.contains(id) {
                changed.push(id.clone());
            }
        }
        Ok(changed)
    }

    crate::sink::sink_via_inner!();
}

crate::sink::state_store_via_inner!(Retaining);

impl ReplicaRead for Retaining {
    /// A soft table's rows as the source has them: deleted rows left out, flags dropped.
    fn read_rows(&mut self, id: &TableId) -> Result<Vec<CanonicalRow>, SinkError> {
        let rows = self.inner.read_rows(id)?;
        let Some((deleted, at)) = self.soft_columns(id) else { return Ok(rows) };
        Ok(rows
            .into_iter()
            .filter(|row| row.get(deleted).and_then(Option::as_deref) != Some("1"))
            .map(|row| row.into_iter().enumerate().filter(|(i, _)| *i != deleted && *i != at).map(|(_, c)| c).collect())
            .collect())
    }

    fn count_rows(&mut self, id: &TableId) -> Result<u64, SinkError> {
        match self.soft_columns(id) {
            Some(_) => Ok(self.read_rows(id)?.len() as u64),
            None => self.inner.count_rows(id),
        }
    }

    fn check_writable(&mut self) -> Result<(), SinkError> {
        self.inner.check_writable()
    }
}
