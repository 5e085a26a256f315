//! Stage 5: replication progress and session facts, kept in the replica's `_ReplicationState`.
//!
//! The state lives in the replica itself so that it travels with backups and restores: a
//! restored replica resumes from the offsets that match its data. Offsets are written in the
//! same transaction as the data they cover. The layout is documented in
//! `docs/replica-schema.md`.

use std::collections::BTreeMap;
use std::fmt;

mod checkpoint;
pub mod fence;
pub mod refused;
mod store;
pub mod table;

pub use checkpoint::{Checkpoint, offset_name, offset_rows, parse_offset_name};
pub use store::StateStore;
pub use table::{STATE_TABLE, StateStatements, TableRecord};

/// The last applied offset per (topic, partition); the next fetch starts one later.
pub use crate::protocol::Offsets;

/// Where a replicated table stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableState {
    /// Created; its snapshot is arriving.
    Snapshotting,
    /// Snapshot complete; streaming changes.
    Ready,
    /// Re-created after an incompatible change (or asked for): needs a fresh snapshot.
    ResyncPending,
    /// The replica cannot hold the table (its DDL was refused for a reason retrying will not
    /// fix): it is left out, its records are consumed unapplied, and every other table goes on.
    /// The reason is the session fact [`FAILED_REASON`]`<table>`. A later schema change of
    /// the table, or `resync-tables`, tries it again.
    Failed,
    /// A table a legacy mirror left behind: it exists in the replica but `_ReplicationState`
    /// did not know it. Readers keep its rows while a fresh snapshot loads into its shadow,
    /// which is then swapped in (see `sink::shadow`); batches leave it alone meanwhile.
    Adopting,
}

/// Session fact holding the partition ends the initial snapshot completes at, while it
/// completes (see `pipeline::snapshot_end`); empty otherwise.
pub const SNAPSHOT_ENDS: &str = "snapshot_ends";

/// Session fact holding why a table is [`TableState::Failed`] (`table_failed:crm7.wide`).
pub const FAILED_REASON: &str = "table_failed:";

impl TableState {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TableState::Snapshotting => "snapshotting",
            TableState::Ready => "ready",
            TableState::ResyncPending => "resync_pending",
            TableState::Failed => "failed",
            TableState::Adopting => "adopting",
        }
    }

    /// Reads the stored spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "snapshotting" => Some(TableState::Snapshotting),
            "ready" => Some(TableState::Ready),
            "resync_pending" => Some(TableState::ResyncPending),
            "failed" => Some(TableState::Failed),
            "adopting" => Some(TableState::Adopting),
            _ => None,
        }
    }
}

impl fmt::Display for TableState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fact of the provisioned session (`scope = 'session'` rows).
#[derive(Clone, PartialEq, Eq)]
pub enum SessionValue {
    /// Plain text: ids, URLs, the client version.
    Text(String),
    /// Encrypted bytes (access and refresh tokens), never shown.
    Sealed(Vec<u8>),
}

impl fmt::Debug for SessionValue {
    /// Sealed values show only their length, so a `Debug` print never leaks a token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionValue::Text(t) => f.debug_tuple("Text").field(t).finish(),
            SessionValue::Sealed(b) => write!(f, "Sealed(<{} bytes>)", b.len()),
        }
    }
}

/// The session facts by name.
pub type Session = BTreeMap<String, SessionValue>;

/// The text facts named `<prefix><rest>`, as `(rest, text)`. A fact cleared to an empty text
/// counts as absent (facts are replaced, never deleted).
pub fn prefixed_facts<'a>(session: &'a Session, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
    session.iter().filter_map(move |(name, value)| match value {
        SessionValue::Text(text) if !text.is_empty() => Some((name.strip_prefix(prefix)?, text.as_str())),
        _ => None,
    })
}

impl SessionValue {
    /// The stored columns: (`text_value`, `blob_value`).
    pub fn columns(&self) -> (Option<&str>, Option<&[u8]>) {
        match self {
            SessionValue::Text(t) => (Some(t), None),
            SessionValue::Sealed(b) => (None, Some(b)),
        }
    }

    /// Reads the stored columns back; a blob wins, as only sealed facts have one.
    pub fn from_columns(text: Option<String>, blob: Option<Vec<u8>>) -> Self {
        match (blob, text) {
            (Some(b), _) => SessionValue::Sealed(b),
            (None, t) => SessionValue::Text(t.unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_never_show_in_debug() {
        let v = SessionValue::Sealed(b"secret-token".to_vec());
        assert_eq!(format!("{v:?}"), "Sealed(<12 bytes>)");
        assert_eq!(SessionValue::from_columns(None, Some(b"x".to_vec())), SessionValue::Sealed(b"x".to_vec()));
    }

    #[test]
    fn names_round_trip() {
        for s in [
            TableState::Snapshotting,
            TableState::Ready,
            TableState::ResyncPending,
            TableState::Failed,
            TableState::Adopting,
        ] {
            assert_eq!(TableState::parse(s.as_str()), Some(s));
        }
    }
}
