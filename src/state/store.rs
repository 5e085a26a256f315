//! The bookkeeping half of a replica: where replication stands, kept apart from the data
//! path ([`crate::sink::Sink`]) so that code which only moves progress or reads session facts
//! (tokens, resync requests, what `status` shows) never holds the data writer.
//!
//! Offsets are *read* here; they are *written* only by [`crate::sink::Sink::apply`], inside the
//! batch's own transaction, which is what makes data and progress commit together.

use super::fence::Fence;
use super::{Checkpoint, Offsets, Session, SessionValue, TableRecord, TableState};
use crate::db::SinkError;
use crate::schema::TableId;

/// `_ReplicationState` of one replica.
pub trait StateStore {
    /// Every table record, resync shadows included (see `sink::shadow`, which reads them
    /// through [`crate::sink::shadow::shadows`]); callers want [`StateStore::tables`] or
    /// [`StateStore::table`].
    fn all_records(&self) -> Vec<TableRecord>;

    /// The replicated tables as `_ReplicationState` records them: live tables only.
    fn tables(&self) -> Vec<TableRecord> {
        self.all_records().into_iter().filter(|r| !r.schema.id.is_shadow()).collect()
    }

    /// One table's record (a live table or a shadow), if the replica has it.
    fn table(&self, id: &TableId) -> Option<TableRecord> {
        self.all_records().into_iter().find(|r| &r.schema.id == id)
    }

    /// The stored offset rows as they are (see [`super::checkpoint`]); callers want
    /// [`StateStore::checkpoint`] or [`StateStore::offsets`].
    fn offset_rows(&mut self) -> Result<Offsets, SinkError>;

    /// The committed progress.
    fn checkpoint(&mut self) -> Result<Checkpoint, SinkError> {
        Ok(Checkpoint::from_rows(self.offset_rows()?))
    }

    /// The committed offsets (the last applied record per topic and partition).
    fn offsets(&mut self) -> Result<Offsets, SinkError> {
        Ok(self.checkpoint()?.offsets)
    }

    /// Records where a table stands (e.g. `Ready` once its snapshot completed).
    fn set_table_state(&mut self, id: &TableId, state: TableState) -> Result<(), SinkError>;

    /// Stores session facts (insert or replace by name) in one transaction, so a rotated
    /// refresh token and its expiry are never half written.
    fn write_facts(&mut self, facts: &[(&str, SessionValue)]) -> Result<(), SinkError>;

    /// The stored session facts.
    fn read_facts(&mut self) -> Result<Session, SinkError>;

    /// Makes this run the replica's writer: raises the writer epoch in a transaction of its
    /// own, re-reads the table records, and from then on proves the epoch in every write
    /// (see [`super::fence`]). A run claims before it reads where to resume.
    fn claim_writer(&mut self, holder: &str) -> Result<Fence, SinkError>;

    /// Proves `fence` (claimed through another handle of the same run) in every write.
    fn hold_fence(&mut self, fence: Fence);

    /// Stores refused changes in `_ReplicationErrors` with a batch's progress, in one
    /// transaction (see [`super::refused`]).
    fn write_refused(
        &mut self,
        refused: &[super::refused::Refusal],
        progress: (&Offsets, Option<u64>),
    ) -> Result<(), SinkError>;

    /// The refused changes stored, oldest first.
    fn read_refused(&mut self) -> Result<Vec<super::refused::RefusedRow>, SinkError>;

    /// Forgets refused changes (applied by a retry), in one transaction.
    fn delete_refused(&mut self, ids: &[i64]) -> Result<(), SinkError>;
}

impl<T: StateStore + ?Sized> StateStore for Box<T> {
    fn all_records(&self) -> Vec<TableRecord> {
        (**self).all_records()
    }
    fn table(&self, id: &TableId) -> Option<TableRecord> {
        (**self).table(id)
    }
    fn offset_rows(&mut self) -> Result<Offsets, SinkError> {
        (**self).offset_rows()
    }
    fn set_table_state(&mut self, id: &TableId, state: TableState) -> Result<(), SinkError> {
        (**self).set_table_state(id, state)
    }
    fn write_facts(&mut self, facts: &[(&str, SessionValue)]) -> Result<(), SinkError> {
        (**self).write_facts(facts)
    }
    fn read_facts(&mut self) -> Result<Session, SinkError> {
        (**self).read_facts()
    }
    fn claim_writer(&mut self, holder: &str) -> Result<Fence, SinkError> {
        (**self).claim_writer(holder)
    }
    fn hold_fence(&mut self, fence: Fence) {
        (**self).hold_fence(fence)
    }
    fn write_refused(
        &mut self,
        refused: &[super::refused::Refusal],
        progress: (&Offsets, Option<u64>),
    ) -> Result<(), SinkError> {
        (**self).write_refused(refused, progress)
    }
    fn read_refused(&mut self) -> Result<Vec<super::refused::RefusedRow>, SinkError> {
        (**self).read_refused()
    }
    fn delete_refused(&mut self, ids: &[i64]) -> Result<(), SinkError> {
        (**self).delete_refused(ids)
    }
}
