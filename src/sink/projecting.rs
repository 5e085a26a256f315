//! [`Projecting`]: a replica seen through the owner's column rules.
//!
//! The wrapped replica holds each ruled table in its projected layout (and records that
//! layout); everything above it — the pipeline, coalescing, shadows, `_ReplicationErrors` —
//! works with the source's layout, which its table records report. The source layout of
//! a ruled table is kept as the session fact `source_schema:<table>`, written before the
//! table's DDL, so a restart decodes payload-only events with the source's columns whatever
//! happened in between.

use std::collections::HashMap;
use std::sync::Arc;

use crate::coalesce::{Batch, Change, Logged, Unit};
use crate::db::SinkError;
use crate::owner::OwnerRules;
use crate::owner::columns::Projection;
use crate::schema::{TableChange, TableId, TableSchema};
use crate::sink::plan::Intent;
use crate::sink::{CanonicalRow, Replica, ReplicaRead, SchemaOutcome, Sink};
use crate::state::{SessionValue, StateStore, TableRecord};

/// The session fact holding a ruled table's source layout (`source_schema:crm7.person`).
pub const SOURCE_SCHEMA: &str = "source_schema:";

/// A replica written through column rules (see the module docs).
pub struct Projecting {
    inner: Box<dyn Replica>,
    owner: Arc<OwnerRules>,
    /// Source layouts of the ruled tables.
    sources: HashMap<TableId, Arc<TableSchema>>,
    /// Projections by table (`None`: the rules touch none of its columns), with the
    /// fingerprint of the source layout they were built for.
    cache: HashMap<TableId, (String, Option<Arc<Projection>>)>,
}

impl std::fmt::Debug for Projecting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projecting").field("tables", &self.sources.len()).finish_non_exhaustive()
    }
}

impl Projecting {
    /// One record as seen from above: a ruled table in its source layout.
    fn record_above(&self, mut record: TableRecord) -> Option<TableRecord> {
        if let Some(source) = self.sources.get(&record.schema.id) {
            record.schema = source.clone();
        }
        Some(record)
    }

    /// `inner` through the owner's column rules; reads the source layouts stored in its facts.
    pub fn new(mut inner: Box<dyn Replica>, owner: Arc<OwnerRules>) -> Result<Self, SinkError> {
        let mut sources = HashMap::new();
        for (name, value) in inner.read_facts()? {
            if let (Some(table), SessionValue::Text(definition)) = (name.strip_prefix(SOURCE_SCHEMA), value) {
                let schema = crate::state::table::read_definition(table, &definition)?;
                sources.insert(schema.id.clone(), Arc::new(schema));
            }
        }
        Ok(Projecting { inner, owner, sources, cache: HashMap::new() })
    }

    /// The projection of `source` under its table's rules; `None` when they change nothing.
    fn projection(&mut self, source: &TableSchema) -> Result<Option<Arc<Projection>>, SinkError> {
        let Some(rules) = self.owner.columns.for_table(&source.id) else { return Ok(None) };
        let fingerprint = source.fingerprint();
        if let Some((built_for, projection)) = self.cache.get(&source.id)
            && *built_for == fingerprint
        {
            return Ok(projection.clone());
        }
        let projection = Projection::new(source, &rules)
            .map_err(|conflict| SinkError::Table { table: source.id.clone(), reason: conflict.to_string() })?;
        let projection = (!projection.is_identity()).then(|| Arc::new(projection));
        self.cache.insert(source.id.clone(), (fingerprint, projection.clone()));
        Ok(projection)
    }

    /// Tables whose stored layout is not what their rules make of their source layout now:
    /// the rules changed since they were created. Each needs re-creating and a fresh snapshot.
    fn changed_rules(&mut self) -> Result<Vec<TableId>, SinkError> {
        let mut changed = Vec::new();
        for record in self.inner.all_records() {
            let source = self.sources.get(&record.schema.id).cloned().unwrap_or_else(|| record.schema.clone());
            let expected = match self.projection(&source)? {
                Some(projection) => projection.schema.fingerprint(),
                None => source.fingerprint(),
            };
            if expected != record.schema.fingerprint() {
                changed.push(record.schema.id.clone());
            }
        }
        Ok(changed)
    }

    fn project_unit(&mut self, unit: &Unit) -> Result<Unit, SinkError> {
        let Some(projection) = self.projection(&unit.schema)? else { return Ok(unit.clone()) };
        let rules = &self.owner.columns;
        let change = unit.change.as_ref().map(|change| match change {
            Change::Upsert(key, row) => Change::Upsert(projection.key(rules, key), projection.row(rules, row)),
            Change::Delete(key) => Change::Delete(projection.key(rules, key)),
        });
        let log = unit
            .log
            .iter()
            .map(|l| Logged { key: projection.key(rules, &l.key), row: projection.row(rules, &l.row), ..l.clone() })
            .collect();
        Ok(Unit { schema: projection.schema.clone(), change, log })
    }
}

impl Sink for Projecting {
    fn change_schema(&mut self, change: &TableChange, intent: &Intent) -> Result<SchemaOutcome, SinkError> {
        let Some(projection) = self.projection(&change.table)? else { return self.inner.change_schema(change, intent) };
        let id = &change.table.id;
        // The source layout first: a restart must decode with it, whatever the DDL does.
        let fact = format!("{SOURCE_SCHEMA}{id}");
        self.inner.write_facts(&[(&fact, SessionValue::Text(change.table.to_history_json()))])?;
        self.sources.insert(id.clone(), Arc::new(change.table.clone()));
        let projected = TableChange { kind: change.kind, table: (*projection.schema).clone() };
        self.inner.change_schema(&projected, intent)
    }

    fn apply(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let mut ruled = false;
        for table in batch.tables() {
            ruled |= self.projection(table.schema())?.is_some();
        }
        if !ruled {
            return self.inner.apply(batch);
        }
        let units = batch.units().iter().map(|u| self.project_unit(u)).collect::<Result<Vec<_>, _>>()?;
        self.inner.apply(&batch.with_changes(&units))
    }

    fn prepare(&mut self) -> Result<(), SinkError> {
        self.inner.prepare()
    }

    fn layout_changed(&mut self) -> Result<Vec<TableId>, SinkError> {
        let mut changed = self.changed_rules()?;
        changed.extend(self.inner.layout_changed()?.into_iter().filter(|id| !changed.contains(id)).collect::<Vec<_>>());
        Ok(changed)
    }

    crate::sink::sink_via_inner!();
}

crate::sink::state_store_via_inner!(Projecting);

impl ReplicaRead for Projecting {
    fn read_rows(&mut self, id: &TableId) -> Result<Vec<CanonicalRow>, SinkError> {
        self.inner.read_rows(id)
    }

    fn count_rows(&mut self, id: &TableId) -> Result<u64, SinkError> {
        self.inner.count_rows(id)
    }

    fn check_writable(&mut self) -> Result<(), SinkError> {
        self.inner.check_writable()
    }
}
