//! Source transactions the batch being built holds part of, so a batch is cut only where no
//! source transaction is half in it: a reader of the replica never sees an order without its
//! lines (see docs/replica-schema.md, "What a reader can rely on").
//!
//! A change event names its transaction (`transaction.id`, with the connector's
//! `provide.transaction.metadata`); the transaction's `END` record says how many change
//! events it has. A transaction is complete once that many were read, across every
//! partition. Until then the batch grows past `DatabaseBatchSize`, up to a bound (four times
//! it), where it is cut anyway: a giant transaction, or a backlog the service delivers
//! partition by partition (transactions spanning partitions stay open across a fetch). A
//! transaction whose
//! events were partly applied before a restart can never be counted complete; it is let go
//! when the stream is caught up, or after [`STALE_AFTER`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a transaction may stay incomplete before batches are cut through it anyway.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Progress {
    seen: u64,
    expected: Option<u64>,
    since: Instant,
}

/// The open source transactions (see the module docs).
#[derive(Debug, Default)]
pub(super) struct OpenTransactions {
    open: HashMap<String, Progress>,
    /// When stale transactions are looked for next (at most once a second: the check walks
    /// every open transaction, and is asked for every record once a batch is due).
    next_sweep: Option<Instant>,
    /// Batches cut through an open transaction (bound or staleness), for the log.
    pub(super) split: u64,
}

impl OpenTransactions {
    /// A change event of transaction `id` was read.
    pub(super) fn event(&mut self, id: &str, now: Instant) {
        match self.open.get_mut(id) {
            Some(p) => p.seen += 1,
            None => {
                self.open.insert(id.to_owned(), Progress { seen: 1, expected: None, since: now });
            }
        }
        self.close_if_complete(id);
    }

    /// Transaction `id` ended with `event_count` change events (`None`: not counted, so
    /// nothing to wait for).
    pub(super) fn end(&mut self, id: &str, event_count: Option<u64>, now: Instant) {
        let Some(count) = event_count else {
            self.open.remove(id);
            return;
        };
        self.open.entry(id.to_owned()).or_insert(Progress { seen: 0, expected: None, since: now }).expected =
            Some(count);
        self.close_if_complete(id);
    }

    fn close_if_complete(&mut self, id: &str) {
        if self.open.get(id).is_some_and(|p| p.expected.is_some_and(|n| p.seen >= n)) {
            self.open.remove(id);
        }
    }

    /// Whether the batch may be cut now: no transaction is half in it (one open for
    /// [`STALE_AFTER`] is let go), or the batch reached `bound` records.
    pub(super) fn may_cut(&mut self, pending: u64, bound: u64, now: Instant) -> bool {
        if self.open.is_empty() {
            return true;
        }
        if pending < bound {
            if self.next_sweep.is_none_or(|at| now >= at) {
                self.next_sweep = Some(now + Duration::from_secs(1));
                self.open.retain(|_, p| now.duration_since(p.since) < STALE_AFTER);
            }
            return self.open.is_empty();
        }
        // A giant transaction: split it, and keep counting its events, so the batches after
        // the split are again cut where it ends.
        self.split += 1;
        tracing::debug!(
            open = self.open.len(),
            pending,
            "batch bound reached: cutting through open source transactions"
        );
        true
    }

    /// The stream is caught up: whatever is still open will not get more events in this
    /// run (they were applied before a restart, or its `END` was never written).
    pub(super) fn let_go(&mut self) {
        self.open.clear();
    }

    /// Whether no transaction is open.
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_closes_when_its_end_and_all_its_events_are_read_in_any_order() {
        let now = Instant::now();
        let mut open = OpenTransactions::default();
        open.event("t1", now);
        assert!(!open.may_cut(1, 100, now));
        open.end("t1", Some(3), now);
        open.event("t1", now);
        assert!(!open.is_empty(), "two of three");
        open.event("t1", now);
        assert!(open.may_cut(3, 100, now));
        // END before the events (another partition delivered them later).
        open.end("t2", Some(1), now);
        assert!(!open.may_cut(0, 100, now));
        open.event("t2", now);
        assert!(open.may_cut(1, 100, now));
    }

    #[test]
    fn a_giant_or_stale_transaction_is_split() {
        let now = Instant::now();
        let mut open = OpenTransactions::default();
        open.event("big", now);
        assert!(!open.may_cut(99, 100, now));
        assert!(open.may_cut(100, 100, now));
        assert_eq!(open.split, 1);
        assert!(!open.may_cut(1, 100, now), "still counting the giant one after the split");
        assert!(open.may_cut(1, 100, now + STALE_AFTER), "let go once stale");
        open.event("x", now);
        open.let_go();
        assert!(open.may_cut(1, 100, now));
    }
}
