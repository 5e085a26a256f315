//! The Replication Service's wire protocol, shared by the client and the reference cloud:
//! record lines and their positions, request and reply types, and error codes. Neither side
//! builds or reads protocol JSON by hand, so the two cannot drift apart silently.
//!
//! The service streams newline-delimited records, one JSON object per line:
//! `{"topic":"<ctx>-cdc","partition":0,"offset":42,"key":{…},"value":{…}}`, where `value` is
//! the Debezium envelope exactly as Kafka Connect's JsonConverter wrote it (or `null` for a
//! tombstone). The full HTTP contract is written down in `docs/protocol.md`.

mod code;
mod framer;
mod position;
mod wire;

pub use code::ErrorCode;
pub use framer::{LineFramer, LineTooLong};
pub use position::{Offsets, OwnedPosition, Position, to_list, to_map};
pub use wire::*;

/// Suffix of a tenant's change-event topic (`<ctx>-cdc`).
pub const CDC_TOPIC_SUFFIX: &str = "-cdc";

/// Suffix of a tenant's schema-history topic (`<ctx>-schemahistory`).
pub const SCHEMA_HISTORY_TOPIC_SUFFIX: &str = "-schemahistory";

/// Fetch-response header listing (comma-separated `schema.table`) the tables an operator asked
/// this session's client to reload from a fresh snapshot; sent until the client's `POST resync`
/// covers them.
pub const RESYNC_REQUESTED_HEADER: &str = "x-resync-requested";
