//! Resyncing a table without leaving readers an empty one (`dbmirror resync-tables`).
//!
//! The original client truncates a table and reloads it, so reports run meanwhile see a
//! half-empty table. Here a resync loads a **shadow table** (`<table>__resync`) instead:
//!
//! 1. `start`: the shadow is created empty and the resync recorded in `_ReplicationState`
//!    with `until`, the log positions after which the cloud's fresh snapshot is complete.
//! 2. Every batch that touches the table is written to the live table *and* the shadow in the
//!    same transaction, so the live table stays current and the shadow gets the snapshot
//!    rows plus every later change.
//! 3. `finish` (once every record before `until` is applied): in one transaction the live
//!    table's rows are replaced by the shadow's and the shadow dropped. The live table object
//!    is kept, so readers' views, grants and extra indexes survive, and readers see the old
//!    rows until the commit and the new ones after it — never an empty table.
//!
//! Crash safety comes from the order of steps: the shadow exists before its fact is written,
//! and is gone before its fact is cleared. A fact without a shadow therefore means the swap
//! (or a cancellation) completed, and a shadow without a fact an interrupted start, which is
//! repeated because the request is only cleared together with the fact.

use crate::state::StateStore;
use std::sync::Arc;

use super::{Sink, SinkError, TableRecord};
use crate::coalesce::Batch;
use crate::schema::{SchemaChangeKind, SchemaDiff, TableChange, TableId, TableSchema};
use crate::state::{Offsets, Session, SessionValue, TableState, prefixed_facts};

/// Session fact naming a requested resync (`resync_request:crm7.person`); written by
/// `resync-tables`, cleared when the resync starts.
pub const REQUEST: &str = "resync_request:";
/// Session fact of a running resync (`resync:crm7.person`) holding its `until` positions.
pub const RUNNING: &str = "resync:";

fn shadow_schema(live: &TableSchema) -> Arc<TableSchema> {
    Arc::new(TableSchema { id: live.id.shadow(), ..live.clone() })
}

/// The statements of the swap, for names and columns quoted by the target: the live table's
/// rows are replaced by the shadow's (the table object itself is kept) and the shadow dropped.
pub fn copy_back_sql(live: &str, shadow: &str, columns: &[String]) -> String {
    let columns = columns.join(", ");
    format!("DELETE FROM {live}; INSERT INTO {live} ({columns}) SELECT {columns} FROM {shadow}; DROP TABLE {shadow}")
}

/// What a target does in its swap transaction: run `sql`, store `ready` as the live table's
/// record and forget the record named `shadow_name`; then [`Swap::done`] updates its cache.
#[derive(Debug)]
pub struct Swap {
    /// The statements, quoted for the target.
    pub sql: String,
    /// The live table's record afterwards (`ready`).
    pub ready: TableRecord,
    /// The shadow's record name in `_ReplicationState`.
    pub shadow_name: String,
}

type Tables = std::collections::HashMap<TableId, TableRecord>;

impl Swap {
    /// Plans the swap of `id` from the sink's records; `statements(live, shadow)` quotes the
    /// target's names (usually through [`copy_back_sql`]).
    pub fn plan(
        tables: &Tables,
        id: &TableId,
        statements: impl FnOnce(&TableRecord, &TableRecord) -> String,
    ) -> Result<Self, SinkError> {
        let missing =
            |what: &str| SinkError::Table { table: id.clone(), reason: format!("{what} is not in the replica") };
        let live = tables.get(id).ok_or_else(|| missing("the table"))?;
        let shadow = tables.get(&id.shadow()).ok_or_else(|| missing("its shadow"))?;
        Ok(Swap {
            sql: statements(live, shadow),
            ready: TableRecord { state: TableState::Ready, ..live.clone() },
            shadow_name: shadow.schema.id.to_string(),
        })
    }

    /// After the commit: the sink's cache forgets the shadow and keeps the ready record.
    pub fn done(self, tables: &mut Tables) {
        let id = self.ready.schema.id.clone();
        tables.remove(&id.shadow());
        tables.insert(id, self.ready);
    }
}

/// Positions as stored in a fact: `topic/partition=offset` joined by spaces.
pub fn encode_until(until: &Offsets) -> String {
    until.iter().map(|((t, p), o)| format!("{t}/{p}={o}")).collect::<Vec<_>>().join(" ")
}

/// Reads [`encode_until`]'s text.
pub fn parse_until(text: &str) -> Option<Offsets> {
    text.split_whitespace()
        .map(|part| {
            let (tp, o) = part.split_once('=')?;
            let (t, p) = tp.rsplit_once('/')?;
            Some(((t.to_owned(), p.parse().ok()?), o.parse().ok()?))
        })
        .collect()
}

fn fact_tables<'a>(session: &'a Session, prefix: &'a str) -> impl Iterator<Item = (TableId, &'a str)> + 'a {
    prefixed_facts(session, prefix).filter_map(|(table, text)| Some((TableId::parse(table)?, text)))
}

/// Pending resync requests with the value each was written with (a time stamp).
pub fn requests(session: &Session) -> impl Iterator<Item = (TableId, &str)> {
    fact_tables(session, REQUEST)
}

/// Tables whose resync was requested and has not started.
pub fn requested(session: &Session) -> Vec<TableId> {
    requests(session).map(|(id, _)| id).collect()
}

/// Running resyncs and their `until` positions.
pub fn running(session: &Session) -> Vec<(TableId, Offsets)> {
    fact_tables(session, RUNNING).filter_map(|(id, text)| Some((id, parse_until(text)?))).collect()
}

/// The fact a request is stored under.
pub fn request_fact(id: &TableId) -> String {
    format!("{REQUEST}{id}")
}

fn running_fact(id: &TableId) -> String {
    format!("{RUNNING}{id}")
}

fn cleared() -> SessionValue {
    SessionValue::Text(String::new())
}

fn record<S: Sink + StateStore + ?Sized>(sink: &S, id: &TableId) -> Option<TableRecord> {
    sink.table(id)
}

/// The resync shadows the replica holds (see the module docs): the one reader of them, as
/// [`StateStore::tables`] lists live tables only.
pub fn shadows<S: StateStore + ?Sized>(store: &S) -> Vec<TableRecord> {
    store.all_records().into_iter().filter(|r| r.schema.id.is_shadow()).collect()
}

fn has_shadow<S: Sink + StateStore + ?Sized>(sink: &S, id: &TableId) -> bool {
    record(sink, &id.shadow()).is_some()
}

fn drop_shadow<S: Sink + StateStore + ?Sized>(sink: &mut S, id: &TableId) -> Result<(), SinkError> {
    let Some(record) = record(sink, &id.shadow()) else { return Ok(()) };
    sink.apply_schema(&TableChange { kind: SchemaChangeKind::Drop, table: (*record.schema).clone() })?;
    Ok(())
}

/// Step 1: an empty shadow (a leftover of an interrupted start is dropped first), then the
/// fact with `until`, clearing the request in the same transaction.
///
/// A failed table (see [`TableState::Failed`]) is created again first, as a schema change of
/// it would: if the replica still refuses it, the start fails and the table stays failed.
pub fn start<S: Sink + StateStore + ?Sized>(sink: &mut S, id: &TableId, until: &Offsets) -> Result<(), SinkError> {
    let Some(mut live) = record(sink, id) else {
        tracing::debug!(table = %id, "resync of a table the replica does not have (skipped): nothing to do");
        return sink.write_facts(&[(&request_fact(id), cleared())]);
    };
    if live.state == TableState::Failed {
        sink.apply_schema(&TableChange { kind: SchemaChangeKind::Create, table: (*live.schema).clone() })?;
        tracing::info!(table = %id, "the failed table was created again for its resync");
        live = record(sink, id).unwrap_or(live);
    }
    drop_shadow(sink, id)?;
    sink.apply_schema(&TableChange { kind: SchemaChangeKind::Create, table: (*shadow_schema(&live.schema)).clone() })?;
    sink.write_facts(&[(&running_fact(id), SessionValue::Text(encode_until(until))), (&request_fact(id), cleared())])?;
    tracing::info!(table = %id, until = %encode_until(until), "resync started: loading a shadow table");
    Ok(())
}

/// Step 3: the shadow's rows replace the live table's, then the fact is cleared. Without a
/// shadow (already swapped, or cancelled by a schema change) only the fact is cleared.
pub fn finish<S: Sink + StateStore + ?Sized>(sink: &mut S, id: &TableId) -> Result<(), SinkError> {
    if has_shadow(sink, id) {
        sink.replace_from_shadow(id)?;
        tracing::info!(table = %id, "resync complete: the shadow table's rows replaced the live table's");
    }
    sink.write_facts(&[(&running_fact(id), cleared())])
}

/// Step 2: adds a shadow copy of every table in `batch` that is being resynced.
pub fn copy_to_shadows<S: Sink + StateStore + ?Sized>(sink: &S, batch: &mut Batch) {
    let shadows: Vec<_> = shadows(sink)
        .into_iter()
        .filter_map(|r| r.schema.id.live().map(|live| (live, r.schema)))
        .filter(|(live, _)| batch.tables().any(|t| &t.schema().id == live))
        .collect();
    for (live, schema) in shadows {
        batch.copy_table(&live, schema);
    }
}

/// After a schema change of a table being resynced: an added column is added to the shadow
/// too; a drop or an incompatible change cancels the resync (the re-created table gets its
/// own snapshot), dropping the shadow.
pub fn follow_schema<S: Sink + StateStore + ?Sized>(sink: &mut S, change: &TableChange) -> Result<(), SinkError> {
    let id = &change.table.id;
    if id.is_shadow() {
        return Ok(());
    }
    let Some(shadow) = record(sink, &id.shadow()) else { return Ok(()) };
    match record(sink, id) {
        Some(live)
            if live.state != TableState::ResyncPending
                && !matches!(shadow.schema.diff(&shadow_schema(&live.schema)), SchemaDiff::Incompatible) =>
        {
            sink.apply_schema(&TableChange {
                kind: SchemaChangeKind::Alter,
                table: (*shadow_schema(&live.schema)).clone(),
            })?;
        }
        _ => {
            tracing::warn!(table = %id, "the table's schema changed incompatibly during its resync: resync cancelled");
            cancel(sink, id)?;
        }
    }
    Ok(())
}

/// Ends a resync of `id` that cannot go on, whatever step it reached: the shadow is dropped
/// and the running fact and the request cleared.
pub fn cancel<S: Sink + StateStore + ?Sized>(sink: &mut S, id: &TableId) -> Result<(), SinkError> {
    drop_shadow(sink, id)?;
    sink.write_facts(&[(&running_fact(id), cleared()), (&request_fact(id), cleared())])
}

/// Brings shadows in line with the facts when a replica is opened: a shadow without a running
/// fact is an interrupted start (dropped; its request is still pending), a fact without a
/// shadow a completed swap (cleared). Returns the resyncs still running.
pub fn reconcile<S: Sink + StateStore + ?Sized>(sink: &mut S) -> Result<Vec<(TableId, Offsets)>, SinkError> {
    let session = sink.read_facts()?;
    let running = running(&session);
    let shadows: Vec<TableId> = shadows(sink).iter().filter_map(|r| r.schema.id.live()).collect();
    for live in &shadows {
        if !running.iter().any(|(id, _)| id == live) {
            drop_shadow(sink, live)?;
        }
    }
    let mut still = Vec::new();
    for (id, until) in running {
        if shadows.contains(&id) {
            still.push((id, until));
        } else {
            sink.write_facts(&[(&running_fact(&id), cleared())])?;
        }
    }
    Ok(still)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_positions_round_trip() {
        let id = TableId::new("crm7", "person");
        assert_eq!(id.shadow().live(), Some(id.clone()));
        assert_eq!(id.live(), None);
        let until: Offsets = [(("t-cdc".to_owned(), 0), 12), (("t-cdc".to_owned(), 3), 0)].into_iter().collect();
        assert_eq!(parse_until(&encode_until(&until)), Some(until));
        assert_eq!(parse_until("t-cdc/x=1"), None);
    }
}
