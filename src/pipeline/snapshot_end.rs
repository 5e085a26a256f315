//! When the initial snapshot is complete, and only then, its tables become `ready`.
//!
//! Debezium marks the snapshot's last record (`snapshot: last`), but the snapshot is spread
//! over the topic's partitions, and the client may read the partition holding that record
//! before the others: marking tables ready on seeing it showed them `ready` with a third of
//! their rows. Every snapshot record was published before the last one, so the ends of the
//! partitions *after* it was seen bound them all: the tables become ready once the cursor
//! reaches those ends in every partition. The ends are kept as a session fact
//! ([`SNAPSHOT_ENDS`], as JSON) until then, so a restart in between still finishes the job.

use crate::protocol::Offsets;
use crate::state::{Session, SessionValue};

pub use crate::state::SNAPSHOT_ENDS;

/// Where the completion of a snapshot stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) enum SnapshotEnd {
    /// No snapshot is completing.
    #[default]
    Open,
    /// Its last record was read; the partitions' ends are still to be asked.
    Seen,
    /// Complete once every partition is read up to these ends (next offsets).
    At(Offsets),
}

impl SnapshotEnd {
    /// From the stored fact (a restart while a snapshot was completing).
    pub(super) fn stored(session: &Session) -> Self {
        let text = match session.get(SNAPSHOT_ENDS) {
            Some(SessionValue::Text(text)) if !text.is_empty() => text,
            _ => return SnapshotEnd::Open,
        };
        serde_json::from_str::<Vec<(String, i32, i64)>>(text)
            .ok()
            .map_or(SnapshotEnd::Open, |ends| SnapshotEnd::At(ends.into_iter().map(|(t, p, e)| ((t, p), e)).collect()))
    }

    /// The fact's text for `ends`.
    pub(super) fn fact(ends: &Offsets) -> String {
        let ends: Vec<(&str, i32, i64)> = ends.iter().map(|((t, p), e)| (t.as_str(), *p, *e)).collect();
        serde_json::to_string(&ends).unwrap_or_default()
    }

    /// Whether `next` (the cursor) has read up to the ends.
    pub(super) fn reached(&self, next: &Offsets) -> bool {
        match self {
            SnapshotEnd::At(ends) => ends.iter().all(|(k, end)| next.get(k).is_some_and(|n| n >= end)),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_once_every_partition_reached_its_end() {
        let ends: Offsets = [(("t-cdc".to_string(), 0), 10), (("t-cdc".to_string(), 1), 7)].into_iter().collect();
        let fact = |text: String| Session::from([(SNAPSHOT_ENDS.to_owned(), SessionValue::Text(text))]);
        let end = SnapshotEnd::stored(&fact(SnapshotEnd::fact(&ends)));
        assert_eq!(end, SnapshotEnd::At(ends.clone()));
        let mut next = ends.clone();
        next.insert(("t-cdc".into(), 1), 6);
        assert!(!end.reached(&next));
        next.insert(("t-cdc".into(), 1), 7);
        assert!(end.reached(&next));
        assert_eq!(SnapshotEnd::stored(&fact(String::new())), SnapshotEnd::Open);
        assert_eq!(SnapshotEnd::stored(&Session::new()), SnapshotEnd::Open);
    }
}
