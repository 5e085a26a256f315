//! The pipeline's first stage, on the fetch thread: frames the streamed body into record
//! lines, decodes them in place, coalesces rows per table, and turns the result into jobs
//! for the sink thread (batches, schema changes, markers). It owns the [`Cursor`]: a record
//! is consumed here, whether it is applied or skipped on purpose.

use std::time::Instant;

use crate::coalesce::{CoalesceError, Coalescer, FlushPolicy};
use crate::decode::{DecodeError, Decoded, Decoder, Event, SchemaChanges, Snapshot};
use crate::protocol::{LineFramer, LineTooLong, Offsets, OwnedPosition};
use crate::schema::{SchemaChangeKind, SchemaDiff, SchemaRegistry};
use crate::sink::worker::Job;

use super::cursor::Cursor;
use super::incarnation::{Incarnations, Table};
use super::transactions::OpenTransactions;

/// Longest record line accepted; a longer one is a broken stream, not a record.
const MAX_LINE: usize = 64 << 20;

/// A record the client cannot apply; it names the record's position.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The stream has a line longer than any record can be.
    #[error("a record line is too long: {0}")]
    TooLong(#[from] LineTooLong),
    /// The record is not a Debezium event this client reads.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The record does not fit the table it names.
    #[error(transparent)]
    Coalesce(#[from] CoalesceError),
    /// A line of the body that is not a record at all (it names no position of its own).
    #[error("a record line the cloud sent {after} is unreadable: {source}")]
    Unreadable {
        /// Where it sat: after the last record read from this body, or at its start.
        after: String,
        /// The decoder's reason.
        source: DecodeError,
    },
    /// A record of a reshaped table must be skipped, but it carries no position.
    #[error("a record without a position cannot be skipped: {0}")]
    Unpositioned(String),
}

/// Everything the decode stage owns.
pub(super) struct DecodeStage {
    framer: LineFramer,
    decoder: Decoder,
    pub(super) schemas: SchemaRegistry,
    coalescer: Coalescer,
    pub(super) cursor: Cursor,
    pub(super) jobs: Vec<Job>,
    error: Option<RecordError>,
    /// Records consumed (applied or skipped): progress, whatever became of them.
    pub(super) consumed: u64,
    /// The last record read from the current body, to place a line that names no position.
    last_read: Option<OwnedPosition>,
    /// Tables dropped or re-created: their older records, still in flight in other
    /// partitions, are skipped (see [`super::incarnation`]).
    pub(super) incarnations: Incarnations,
    /// Source transactions half in the pending batch (see [`super::transactions`]); `None`
    /// when batches may be cut anywhere (`WholeSourceTransactions: false`).
    transactions: Option<OpenTransactions>,
    /// Records a batch may reach before a giant source transaction is split.
    split_bound: u64,
    /// The owner's column rules: a change only they hide reshapes nothing.
    owner: std::sync::Arc<crate::owner::OwnerRules>,
    /// Whether a snapshot is completing (see [`super::snapshot_end`]).
    pub(super) snapshot_end: super::snapshot_end::SnapshotEnd,
}

impl DecodeStage {
    pub(super) fn new(schemas: SchemaRegistry, cursor: Cursor, incarnations: Incarnations, batch_records: u32) -> Self {
        DecodeStage {
            framer: LineFramer::new(MAX_LINE),
            decoder: Decoder::default(),
            schemas,
            coalescer: Coalescer::new(FlushPolicy { max_records: u64::from(batch_records), ..FlushPolicy::default() }),
            cursor,
            jobs: Vec::new(),
            error: None,
            consumed: 0,
            last_read: None,
            incarnations,
            transactions: Some(OpenTransactions::default()),
            split_bound: 4 * u64::from(batch_records),
            owner: Default::default(),
            snapshot_end: Default::default(),
        }
    }

    /// Judges schema changes as the replica will see them, through the owner's column rules.
    pub(super) fn column_rules(mut self, owner: std::sync::Arc<crate::owner::OwnerRules>) -> Self {
        self.owner = owner;
        self
    }

    /// Whether `new` is incompatible with `old` in the replica's layout.
    fn incompatible(&self, old: &crate::schema::TableSchema, new: &crate::schema::TableSchema) -> bool {
        use crate::owner::columns::Projection;
        let diff = match self.owner.columns.for_table(&new.id) {
            Some(rules) => match (Projection::new(old, &rules), Projection::new(new, &rules)) {
                (Ok(old), Ok(new)) => old.schema.diff(&new.schema),
                _ => old.diff(new),
            },
            None => old.diff(new),
        };
        matches!(diff, SchemaDiff::Incompatible)
    }

    /// Keeps every change of the tables with a history (see [`crate::coalesce::Logged`]).
    pub(super) fn keep_logs(mut self, filter: Option<crate::coalesce::LogFilter>) -> Self {
        self.coalescer = std::mem::take(&mut self.coalescer).keep_logs(filter);
        self
    }

    /// Cuts batches anywhere (`false`), not only between source transactions.
    pub(super) fn whole_transactions(mut self, whole: bool) -> Self {
        self.transactions = whole.then(OpenTransactions::default);
        self
    }

    /// Whether the pending batch may be cut now (see [`super::transactions`]).
    fn may_cut(&mut self, now: Instant) -> bool {
        let pending = self.coalescer.pending_records();
        self.transactions.as_mut().is_none_or(|open| open.may_cut(pending, self.split_bound, now))
    }

    /// After a fetch: queues the pending batch unless a source transaction is half in it and
    /// more of it may still come. `idle` (nothing new) lets every open transaction go.
    pub(super) fn flush_after_fetch(&mut self, idle: bool) {
        if self.snapshot_end.reached(self.cursor.next()) {
            self.flush();
            self.jobs.push(Job::MarkSnapshotsReady);
            self.snapshot_end = super::snapshot_end::SnapshotEnd::Open;
            return;
        }
        if idle {
            if let Some(open) = &mut self.transactions {
                open.let_go();
            }
            self.flush();
        } else if self.pending() && self.may_cut(Instant::now()) {
            self.flush();
        }
    }

    /// Frames and decodes a chunk; completed batches and schema changes go to `jobs`.
    pub(super) fn chunk(&mut self, data: &[u8]) {
        self.framer.push(data);
        while self.error.is_none() {
            match self.framer.next_line() {
                Ok(Some(mut line)) => self.line(&mut line),
                Ok(None) => break,
                Err(e) => self.error = Some(e.into()),
            }
        }
    }

    /// After a fetch: drops a partial last line (a truncated body; it is fetched again) and
    /// reports the first record that could not be applied.
    pub(super) fn end_of_body(&mut self) -> Result<(), RecordError> {
        let _ = self.framer.finish();
        self.last_read = None;
        self.error.take().map_or(Ok(()), Err)
    }

    /// Whether records are waiting in the coalescer.
    pub(super) fn pending(&self) -> bool {
        self.coalescer.pending_records() > 0
    }

    fn line(&mut self, line: &mut [u8]) {
        let decoded = match self.decoder.decode(line, &self.schemas) {
            Ok(decoded) => decoded,
            Err(e) if e.position().is_none() => {
                let after = match &self.last_read {
                    Some(p) => format!("after {p}"),
                    None => "at the start of a fetch".to_owned(),
                };
                self.error = Some(RecordError::Unreadable { after, source: e });
                return;
            }
            Err(e) => {
                let table = e.table().map(|(s, t)| (s.to_owned(), t.to_owned()));
                return self.skip_or_fail(table, e.position().cloned(), e.into());
            }
        };
        self.last_read = decoded.position.map(|p| p.to_owned());
        let now = Instant::now();
        if let Event::SchemaChange(changes) = &decoded.event {
            self.schema_changes(changes);
        }
        let table = self.reshaped_table(&decoded);
        if let (Some(table), Event::Change(c), Some(p)) = (&table, &decoded.event, &decoded.position)
            && self.incarnations.is_stale(table, c.source.commit_lsn)
        {
            return self.skip(Some(p.to_owned()), "older than the table's re-creation");
        }
        let last_snapshot = matches!(&decoded.event, Event::Change(c) if c.source.snapshot == Snapshot::Last);
        if let Err(e) = self.coalescer.push(&decoded, &self.schemas, now) {
            let position = e.position.clone();
            return self.skip_or_fail(table, position, e.into());
        }
        if let Some(p) = &decoded.position {
            self.cursor.consumed(p);
        }
        self.consumed += 1;
        if let Some(open) = &mut self.transactions {
            match &decoded.event {
                Event::Change(c) => {
                    if let Some(t) = &c.transaction {
                        open.event(t.id, now);
                    }
                }
                Event::TransactionMarker(m) if m.end => open.end(m.id, m.event_count, now),
                _ => {}
            }
        }
        if last_snapshot {
            // Complete only once the other partitions are read as far (see `snapshot_end`).
            self.flush();
            self.snapshot_end = super::snapshot_end::SnapshotEnd::Seen;
        } else if self.coalescer.should_flush(now) && self.may_cut(now) {
            self.flush();
        }
    }

    /// The table of a change record, when that table was reshaped (the common case, no
    /// reshaped table at all, costs nothing).
    fn reshaped_table(&self, decoded: &Decoded<'_>) -> Option<Table> {
        match &decoded.event {
            Event::Change(c) if !self.incarnations.is_empty() => {
                let table = (c.source.schema.to_owned(), c.source.table.to_owned());
                self.incarnations.contains(&table).then_some(table)
            }
            _ => None,
        }
    }

    /// A record that failed: skipped if it belongs to a reshaped table (an old incarnation's
    /// record may no longer decode or fit), else the stage stops at it.
    fn skip_or_fail(&mut self, table: Option<Table>, position: Option<OwnedPosition>, error: RecordError) {
        if table.is_some_and(|t| self.incarnations.contains(&t)) {
            self.skip(position, &error.to_string());
        } else {
            self.error = Some(error);
        }
    }

    /// Consumes a record that is skipped on purpose: its offset is stored with the next batch.
    fn skip(&mut self, position: Option<OwnedPosition>, why: &str) {
        let Some(p) = position else {
            self.error = Some(RecordError::Unpositioned(why.to_owned()));
            return;
        };
        tracing::debug!(position = %p, "skipping a record of a reshaped table: {why}");
        self.coalescer.advance(&p.topic, p.partition, p.offset);
        self.cursor.consumed(&crate::protocol::Position { topic: &p.topic, partition: p.partition, offset: p.offset });
        self.consumed += 1;
    }

    /// Queues a schema-history record's changes, after everything decoded before it.
    fn schema_changes(&mut self, changes: &SchemaChanges) {
        self.flush();
        for change in changes {
            let table = (change.table.id.schema.clone(), change.table.id.table.clone());
            // Reshaped: dropped, or changed so that the replica re-creates it. A CREATE that
            // re-announces an unchanged table (connectors do) reshapes nothing.
            let incompatible =
                self.schemas.get(&table.0, &table.1).is_some_and(|old| self.incompatible(old, &change.table));
            let recreated = change.kind == SchemaChangeKind::Create && self.incarnations.contains(&table);
            if change.kind == SchemaChangeKind::Drop || incompatible || recreated {
                self.incarnations.reshaped(table, changes.ddl_lsn.clone());
            }
            self.schemas.apply(change);
            self.jobs.push(Job::Schema(change.clone()));
        }
    }

    /// The cloud reset the tenant's offsets (source restored, tenant resumed, operator reset,
    /// or `--auto-resync` after a purge): a fresh snapshot of every table starts at `next`.
    /// Every table is reloaded through a shadow (`starts`, queued first), so readers keep
    /// complete tables until each reload is swapped in, and rows the source no longer has
    /// disappear then. The handled reset (`epoch`) is stored with the positions the stream
    /// continues from, in one transaction after the starts: a crash before it repeats the
    /// reset; after it, nothing older than `next` is read again.
    pub(super) fn reset(&mut self, next: &Offsets, epoch: u64, starts: Vec<Job>) {
        self.flush();
        let tables = starts.len();
        self.jobs.extend(starts);
        for p in self.cursor.jump(next, epoch) {
            self.coalescer.advance(&p.topic, p.partition, p.offset);
        }
        self.coalescer.complete_reset(epoch);
        self.flush();
        tracing::warn!(
            tables,
            "the cloud reset the offsets: reloading every table from a fresh snapshot, through shadow tables"
        );
    }

    /// Queues what the coalescer holds as one batch.
    pub(super) fn flush(&mut self) {
        let batch = self.coalescer.take();
        if !batch.is_empty() {
            self.jobs.push(Job::Apply(batch));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::replication::SessionInfo;
    use crate::state::{Checkpoint, Session};

    #[test]
    fn an_unreadable_line_names_where_it_sat() {
        let info = SessionInfo {
            session_id: "s".into(),
            tenant_context_id: "t".into(),
            replication_id: "r".into(),
            cloud_url: "http://x".into(),
            cdc_partitions: 1,
        };
        let cursor = Cursor::resume(&info, &Checkpoint::default());
        let mut stage = DecodeStage::new(SchemaRegistry::new(), cursor, Incarnations::new(&Session::new()), 100);
        stage.chunk(b"<html>502 Bad Gateway</html>\n");
        let error = stage.end_of_body().unwrap_err().to_string();
        assert!(error.contains("at the start of a fetch") && error.contains("unreadable"), "{error}");
        let tombstone = br#"{"topic":"t-cdc","partition":0,"offset":4,"key":null,"value":null}"#;
        stage.chunk(&[&tombstone[..], b"\nnot json\n"].concat());
        let error = stage.end_of_body().unwrap_err().to_string();
        assert!(error.contains("after t-cdc/0@4"), "{error}");
    }

    /// Three source transactions over two partitions, `END` records in partition 0, and a
    /// `DatabaseBatchSize` of 1: every batch holds whole transactions, wherever their events
    /// and their `END` fall, unless batches may be cut anywhere.
    #[cfg(feature = "refserver")]
    #[test]
    fn batches_are_cut_only_between_source_transactions() {
        use crate::cloud::encode::{RecordMeta, change_record, history_record, transaction_end_record};
        use crate::row::Cell;
        let table = crate::cloud::crm::published_tables().into_iter().find(|t| t.id.table == "contact").unwrap();
        let row = |key: i64| -> Vec<Cell> {
            table.columns.iter().map(|c| if c.name == "contact_id" { Cell::Int(key) } else { Cell::Null }).collect()
        };
        let mut offsets = [0i64; 2];
        let mut line = |partition: i32, key: i64, txn: u64, order: (u64, u64)| {
            offsets[partition as usize] += 1;
            let meta = RecordMeta {
                topic: "t-cdc",
                partition,
                offset: offsets[partition as usize],
                snapshot: "false",
                op: "c",
                database: "CRM",
                with_schema: false,
                ts_ms: 1_734_382_927_000,
                lsn: Some((key as u64, txn)),
                transaction: Some(order),
            };
            change_record(&table, None, Some(&row(key)), &meta)
        };
        let end = |offset: i64, txn: u64, count: u64| {
            let tables = [("CRM.crm7.contact".to_owned(), count)];
            transaction_end_record("t-cdc", offset, txn, &tables, (0, false))
        };
        // T1: keys 1 (p0), 2 (p1), 3 (p0); T2: key 4 (p1); T3: keys 5, 6 (p1), END before the
        // second event is read (it sits later in partition 1).
        let body = [
            line(0, 1, 1, (1, 1)),
            line(0, 3, 1, (3, 3)),
            end(3, 1, 3),
            line(1, 2, 1, (2, 2)),
            line(1, 4, 2, (1, 1)),
            end(4, 2, 1),
            line(1, 5, 3, (1, 1)),
            end(5, 3, 2),
            line(1, 6, 3, (2, 2)),
        ]
        .join("\n");
        let history = format!(
            "{{\"topic\":\"t-schemahistory\",\"partition\":0,\"offset\":0,\"key\":null,\"value\":{}}}",
            history_record(&table, "CREATE", "CRM", 0)
        );
        let batches = |whole: bool| -> Vec<Vec<i64>> {
            let info = SessionInfo {
                session_id: "s".into(),
                tenant_context_id: "t".into(),
                replication_id: "r".into(),
                cloud_url: "http://x".into(),
                cdc_partitions: 2,
            };
            let cursor = Cursor::resume(&info, &Checkpoint::default());
            let mut stage = DecodeStage::new(SchemaRegistry::new(), cursor, Incarnations::new(&Session::new()), 1)
                .whole_transactions(whole);
            stage.chunk(format!("{history}\n{body}\n").as_bytes());
            stage.end_of_body().unwrap();
            stage.flush_after_fetch(true);
            stage
                .jobs
                .iter()
                .filter_map(|job| match job {
                    Job::Apply(batch) => {
                        let mut keys: Vec<i64> = batch
                            .tables()
                            .flat_map(|t| t.upserts().map(|(k, _)| k[0].clone()))
                            .map(|c| match c {
                                Cell::Int(k) => k,
                                other => panic!("{other:?}"),
                            })
                            .collect();
                        keys.sort_unstable();
                        (!keys.is_empty()).then_some(keys)
                    }
                    _ => None,
                })
                .collect()
        };
        assert_eq!(batches(true), [vec![1, 2, 3], vec![4], vec![5, 6]]);
        assert_eq!(batches(false), [vec![1], vec![3], vec![2], vec![4], vec![5], vec![6]]);
    }
}
