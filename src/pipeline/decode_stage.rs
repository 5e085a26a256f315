//! The pipeline's first stage, on the fetch thread: frames the streamed body into record
//! lines, decodes them in place, coalesces rows per table, and turns the result into jobs
//! for the sink thread (batches, schema changes, markers).

use std::collections::BTreeMap;
use std::time::Instant;

use crate::coalesce::Coalescer;
use crate::decode::{Decoder, Event, Snapshot};
use crate::protocol::LineFramer;
use crate::schema::{SchemaChangeKind, SchemaRegistry};
use crate::sink::worker::Job;
use crate::state::Offsets;

use super::{RESET_MARKER, incarnation};

/// Everything the decode stage owns.
pub(super) struct Decode {
    pub(super) framer: LineFramer,
    pub(super) decoder: Decoder,
    pub(super) schemas: SchemaRegistry,
    pub(super) coalescer: Coalescer,
    pub(super) next: BTreeMap<(String, i32), i64>,
    pub(super) jobs: Vec<Job>,
    pub(super) error: Option<String>,
    pub(super) records: u64,
    /// Tables dropped or re-created: their older records, still in flight in other
    /// partitions, are skipped (see [`incarnation`]).
    pub(super) incarnations: incarnation::Incarnations,
    pub(super) skipped: u64,
}

impl Decode {
    /// Frames and decodes a chunk; completed batches and schema changes go to `jobs`.
    pub(super) fn chunk(&mut self, data: &[u8]) {
        self.framer.push(data);
        while self.error.is_none() {
            let mut line = match self.framer.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(e) => {
                    self.error = Some(format!("a record line is too long: {e}"));
                    break;
                }
            };
            self.line(&mut line);
        }
    }

    /// Advances past a record that is skipped on purpose.
    pub(super) fn skip(&mut self, position: Option<&crate::protocol::OwnedPosition>, why: &str) {
        let Some(p) = position else {
            self.error = Some(format!("a record without a position cannot be skipped: {why}"));
            return;
        };
        tracing::debug!(position = %p, "skipping a record of a reshaped table: {why}");
        let marker = crate::decode::Decoded {
            position: Some(crate::protocol::Position { topic: &p.topic, partition: p.partition, offset: p.offset }),
            event: Event::Tombstone,
        };
        let _ = self.coalescer.push(&marker, &self.schemas, Instant::now());
        self.next.insert((p.topic.clone(), p.partition), p.offset + 1);
        self.skipped += 1;
    }

    pub(super) fn line(&mut self, line: &mut [u8]) {
        let ddl_lsn = self.incarnations.ddl_lsn(line);
        let hint = if self.incarnations.is_empty() { None } else { incarnation::raw_source_table(line) };
        let reshaped = hint.as_ref().is_some_and(|t| self.incarnations.contains(t));
        let decoded = match self.decoder.decode(line, &self.schemas) {
            Ok(d) => d,
            Err(e) if reshaped => return self.skip(e.position(), &e.to_string()),
            Err(e) => {
                self.error = Some(e.to_string());
                return;
            }
        };
        let now = Instant::now();
        if let Event::SchemaChange(changes) = &decoded.event {
            self.flush();
            for change in changes {
                let id = (change.table.id.schema.clone(), change.table.id.table.clone());
                // Reshaped: dropped, or changed so that the replica re-creates it. A CREATE
                // that re-announces an unchanged table (connectors do) reshapes nothing.
                let incompatible = self
                    .schemas
                    .get(&id.0, &id.1)
                    .is_some_and(|old| matches!(old.diff(&change.table), crate::schema::SchemaDiff::Incompatible));
                let recreated = change.kind == SchemaChangeKind::Create && self.incarnations.contains(&id);
                if change.kind == SchemaChangeKind::Drop || incompatible || recreated {
                    self.incarnations.reshaped(id, ddl_lsn.clone());
                }
                self.schemas.apply(change);
                self.jobs.push(Job::Schema(change.clone()));
            }
        }
        if reshaped
            && let (Event::Change(c), Some(table), Some(p)) = (&decoded.event, &hint, &decoded.position)
            && self.incarnations.is_stale(table, c.source.commit_lsn)
        {
            let position = p.to_owned();
            return self.skip(Some(&position), "older than the table's re-creation");
        }
        let last_snapshot = matches!(&decoded.event, Event::Change(c) if c.source.snapshot == Snapshot::Last);
        if let Err(e) = self.coalescer.push(&decoded, &self.schemas, now) {
            if reshaped {
                let position = e.position.clone();
                return self.skip(position.as_ref(), &e.to_string());
            }
            self.error = Some(e.to_string());
            return;
        }
        if let Some(p) = decoded.position {
            self.next.insert((p.topic.to_owned(), p.partition), p.offset + 1);
        }
        self.records += 1;
        if last_snapshot {
            self.flush();
            self.jobs.push(Job::MarkSnapshotsReady);
        } else if self.coalescer.should_flush(now) {
            self.flush();
        }
    }

    /// The cloud reset the tenant's offsets (source restored, tenant resumed, operator reset,
    /// or `--auto-resync` after a purge): a fresh snapshot of every table starts at
    /// `positions`. Every table is reloaded through a shadow (`starts`, queued first), so
    /// readers keep complete tables until each reload is swapped in, and rows the source no
    /// longer has disappear then. The handled reset (`epoch`) is stored with the positions
    /// the stream continues from, in one transaction after the starts: a crash before it
    /// repeats the reset; after it, nothing older than `positions` is read again.
    pub(super) fn reset(&mut self, positions: &Offsets, epoch: u64, starts: Vec<Job>) -> Result<(), String> {
        self.flush();
        let tables = starts.len();
        self.jobs.extend(starts);
        let epoch = i64::try_from(epoch).map_err(|_| "the reset epoch is out of range")?;
        let mut consumed = vec![(RESET_MARKER.to_owned(), 0, epoch)];
        for ((topic, partition), offset) in positions {
            if *offset > 0 {
                consumed.push((topic.clone(), *partition, offset - 1));
            }
        }
        for (topic, partition, offset) in &consumed {
            let marker = crate::decode::Decoded {
                position: Some(crate::protocol::Position { topic, partition: *partition, offset: *offset }),
                event: Event::Tombstone,
            };
            self.coalescer.push(&marker, &self.schemas, Instant::now()).map_err(|e| e.to_string())?;
        }
        self.flush();
        self.next.extend(positions.iter().map(|(k, o)| (k.clone(), *o)));
        tracing::warn!(
            tables,
            "the cloud reset the offsets: reloading every table from a fresh snapshot, through shadow tables"
        );
        Ok(())
    }

    pub(super) fn flush(&mut self) {
        let batch = self.coalescer.take();
        if !batch.is_empty() || !batch.offsets().is_empty() {
            self.jobs.push(Job::Apply(batch));
        }
    }
}
