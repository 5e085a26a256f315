//! Where the next fetch reads from. The replica stores the *last applied* offset of each
//! partition; a fetch asks for the *next* one. This is the only place that converts between
//! the two, and it carries the reset epoch the fetch reports back to the cloud.

use crate::protocol::{FetchRequest, Offsets, OwnedPosition, Position};
use crate::source::replication::SessionInfo;
use crate::state::Checkpoint;

/// The offset after `last`, the last applied one: what a fetch asks for next, and what the
/// lag is counted from.
pub(super) fn next_after(last: i64) -> i64 {
    last + 1
}

/// The next offset to read per partition, and the handled reset epoch.
#[derive(Debug, Clone)]
pub(super) struct Cursor {
    history_topic: String,
    next: Offsets,
    reset_epoch: u64,
}

impl Cursor {
    /// Continues after a replica's checkpoint; partitions it never read start at 0.
    pub(super) fn resume(info: &SessionInfo, checkpoint: &Checkpoint) -> Self {
        let history_topic = info.history_topic();
        let partitions =
            std::iter::once((history_topic.clone(), 0)).chain((0..info.cdc_partitions).map(|p| (info.cdc_topic(), p)));
        let next = partitions.map(|key| {
            let next = checkpoint.offsets.get(&key).map_or(0, |last| next_after(*last));
            (key, next)
        });
        Cursor { history_topic, next: next.collect(), reset_epoch: checkpoint.reset_epoch }
    }

    /// The next offsets.
    pub(super) fn next(&self) -> &Offsets {
        &self.next
    }

    /// The reset epoch the replica has handled.
    pub(super) fn reset_epoch(&self) -> u64 {
        self.reset_epoch
    }

    /// A record was consumed (applied or skipped): read after it from now on.
    pub(super) fn consumed(&mut self, position: &Position<'_>) {
        self.next.insert((position.topic.to_owned(), position.partition), next_after(position.offset));
    }

    /// The stream continues at `next` (an offset reset's positions), and `epoch` is handled.
    /// Returns the last offsets before them, which the replica stores as consumed.
    pub(super) fn jump(&mut self, next: &Offsets, epoch: u64) -> Vec<OwnedPosition> {
        self.next.extend(next.iter().map(|(k, o)| (k.clone(), *o)));
        self.reset_epoch = epoch;
        next.iter()
            .filter(|(_, o)| **o > 0)
            .map(|((topic, partition), o)| OwnedPosition { topic: topic.clone(), partition: *partition, offset: o - 1 })
            .collect()
    }

    /// The fetch request from here: schema history first, so table changes precede the rows
    /// that need them; only the history with `history_only`.
    pub(super) fn request(&self, limits: super::FetchLimits, history_only: bool) -> FetchRequest {
        let history = self.next.iter().filter(|((t, _), _)| *t == self.history_topic);
        let cdc = self.next.iter().filter(|((t, _), _)| *t != self.history_topic && !history_only);
        FetchRequest {
            positions: history
                .chain(cdc)
                .map(|((topic, partition), offset)| OwnedPosition {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: *offset,
                })
                .collect(),
            max_events: limits.max_events,
            max_bytes: limits.max_bytes,
            max_wait_ms: u64::try_from(limits.max_wait.as_millis()).unwrap_or(u64::MAX),
            reset_epoch: self.reset_epoch,
        }
    }
}

/// A fetch that only asks whether anything waits after `checkpoint`: one record at most,
/// waiting up to `wait` (a partner's idle tenants are watched with it; see
/// `partner::watch`).
pub fn watch_request(info: &SessionInfo, checkpoint: &Checkpoint, wait: std::time::Duration) -> FetchRequest {
    let limits = super::FetchLimits { max_events: 1, max_bytes: 64 << 10, max_wait: wait };
    Cursor::resume(info, checkpoint).request(limits, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> SessionInfo {
        SessionInfo {
            session_id: "s".into(),
            tenant_context_id: "c".into(),
            replication_id: "r".into(),
            cloud_url: "http://x".into(),
            cdc_partitions: 2,
        }
    }

    #[test]
    fn next_is_last_plus_one_and_history_comes_first() {
        let checkpoint = Checkpoint { offsets: [(("c-cdc".to_owned(), 1), 9)].into(), reset_epoch: 2 };
        let mut cursor = Cursor::resume(&info(), &checkpoint);
        let limits =
            super::super::FetchLimits { max_events: 5, max_bytes: 6, max_wait: std::time::Duration::from_millis(7) };
        let request = cursor.request(limits, false);
        let positions: Vec<(&str, i32, i64)> =
            request.positions.iter().map(|p| (p.topic.as_str(), p.partition, p.offset)).collect();
        assert_eq!(positions, [("c-schemahistory", 0, 0), ("c-cdc", 0, 0), ("c-cdc", 1, 10)]);
        assert_eq!((request.reset_epoch, request.max_wait_ms), (2, 7));
        assert_eq!(cursor.request(limits, true).positions.len(), 1);
        let consumed = cursor.jump(&[(("c-cdc".to_owned(), 0), 30), (("c-cdc".to_owned(), 1), 0)].into(), 3);
        assert_eq!(consumed, [OwnedPosition { topic: "c-cdc".into(), partition: 0, offset: 29 }]);
        assert_eq!((cursor.next()[&("c-cdc".to_owned(), 0)], cursor.reset_epoch()), (30, 3));
    }
}
