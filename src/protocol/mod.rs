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

/// The longest tenant context id the service accepts.
pub const MAX_CONTEXT_ID: usize = 100;

/// Checks a tenant context id: letters, digits, `.`, `-` and `_`, not starting with `.`, at
/// most [`MAX_CONTEXT_ID`] characters. The cloud names topics and files after it, so an id
/// that could climb out of a folder (`../x`) or name nothing is refused.
pub fn check_context_id(ctx: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if ctx.is_empty() || ctx.len() > MAX_CONTEXT_ID || ctx.starts_with('.') || !ctx.chars().all(allowed) {
        return Err(format!(
            "`{ctx}` is not a tenant context id: 1 to {MAX_CONTEXT_ID} letters, digits, `.`, `-` or `_`, not starting with `.`"
        ));
    }
    Ok(())
}

/// Suffix of a tenant's change-event topic (`<ctx>-cdc`).
pub const CDC_TOPIC_SUFFIX: &str = "-cdc";

/// Suffix of a tenant's schema-history topic (`<ctx>-schemahistory`).
pub const SCHEMA_HISTORY_TOPIC_SUFFIX: &str = "-schemahistory";

/// Fetch-response header listing (comma-separated `schema.table`) the tables an operator asked
/// this session's client to reload from a fresh snapshot; sent until the client's `POST resync`
/// covers them.
pub const RESYNC_REQUESTED_HEADER: &str = "x-resync-requested";

#[cfg(test)]
mod tests {
    #[test]
    fn context_ids_name_no_path() {
        for ok in ["cust1234", "Cust-12_3", "a.b", &"c".repeat(100)] {
            assert!(super::check_context_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "../x", ".hidden", "a/b", "a\\b", "a b", &"c".repeat(101)] {
            assert!(super::check_context_id(bad).is_err(), "{bad}");
        }
    }
}
