//! The one place that decides what an error means for a running client: wait and try again,
//! refresh the tokens, reload from an offset reset, reload after a purge, or stop because a
//! person must act (and then what they should do). The pipeline and the binary both ask here,
//! so a condition is never retried in one place and fatal in another.

use std::time::Duration;

use crate::db::{Retry, SinkError};
use crate::protocol::{ErrorCode, ResetDetails};
use crate::source::client::SourceError;

/// What to do about an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A condition that passes (network, overload, suspension, a locked replica): back off,
    /// at least `after` when the cloud said so, and try again.
    Retry {
        /// The cloud's `Retry-After`, if any.
        after: Option<Duration>,
        /// What is being waited out, for the log and `status`.
        waiting_for: &'static str,
    },
    /// The access token expired: rotate it, then try again.
    RefreshTokens,
    /// The tenant's offsets were reset: reload every table from the fresh snapshot.
    Reset(ResetDetails),
    /// The replica was offline longer than the cloud keeps changes: only a reload of every
    /// table can continue (`--auto-resync`, or the advice says how).
    Purged,
    /// Another run became the replica's writer, or the database was restored to before this
    /// run's claim (`restored`): this run ends having written nothing more (see
    /// [`crate::state::fence`]). A partner leaves the tenant to its new writer; a single
    /// instance claims a restored replica again, and stops when another process writes it.
    Superseded {
        /// The replica holds an older epoch than this run's (or none): it was restored.
        restored: bool,
    },
    /// Trying again gives the same answer; a person must act.
    Fatal {
        /// What to do, when there is something specific to say.
        advice: Option<&'static str>,
    },
}

/// The advice given when the replica is past the cloud's retention and may not reload alone.
pub const PURGED_ADVICE: &str = "The replica was offline longer than the cloud keeps changes, so it can no longer catch up change by change. Run `dbmirror sync --auto-resync` to reload every table from a fresh snapshot.";

/// What an error from the cloud means.
pub fn source_action(error: &SourceError) -> Action {
    let retry = |waiting_for| Action::Retry { after: error.retry_after(), waiting_for };
    match error {
        SourceError::Request { .. } | SourceError::Body { .. } => retry("the cloud to be reachable"),
        SourceError::BadReply { .. } => retry("a readable reply from the cloud"),
        SourceError::Trust(_) | SourceError::Url(_) | SourceError::Runtime(_) => Action::Fatal { advice: None },
        SourceError::Service { status, code, details, .. } => match code {
            ErrorCode::TokenExpired => Action::RefreshTokens,
            ErrorCode::OffsetsReset => match serde_json::from_value(details.clone()) {
                Ok(reset) => Action::Reset(reset),
                Err(_) => retry("an offset reset the cloud describes completely"),
            },
            ErrorCode::OffsetPurged => Action::Purged,
            ErrorCode::TenantSuspended => retry("the tenant to be resumed"),
            ErrorCode::RateLimited => retry("the cloud's rate limit"),
            ErrorCode::Unavailable => retry("the cloud to be available"),
            ErrorCode::ClientTooOld => Action::Fatal {
                advice: Some(
                    "This client is too old for the cloud: install a newer dbmirror; configuration and state are kept.",
                ),
            },
            ErrorCode::SessionRevoked | ErrorCode::TokenReused | ErrorCode::SessionNotFound => Action::Fatal {
                advice: Some(
                    "The session was revoked: run `dbmirror reconnect`, and if that fails, `dbmirror provision`.",
                ),
            },
            ErrorCode::OffsetOutOfRange => Action::Fatal {
                advice: Some(
                    "The replica's offsets are ahead of the cloud's log: the replica was restored from another tenant's or session's data, or the cloud's log was replaced. Run `dbmirror resync-tables` for every table, or provision a new replica.",
                ),
            },
            _ if *status == 429 || *status >= 500 => retry("the cloud to be available"),
            _ => Action::Fatal { advice: None },
        },
    }
}

/// Whether the cloud says the session is over (revoked, a refresh token reused, or gone): a
/// person must reconnect a single instance; a partner makes a new session by itself.
pub fn session_ended(error: &SourceError) -> bool {
    matches!(error.code(), Some(ErrorCode::SessionRevoked | ErrorCode::TokenReused | ErrorCode::SessionNotFound))
}

/// The advice when another process took over a single instance's replica.
pub const TWO_WRITERS_ADVICE: &str = "Another dbmirror process now writes this replica (the error names it): one replica takes one `sync`. Stop the other one, or give each its own replica database, then start this one again.";

/// What an error from the replica means.
pub fn sink_action(error: &SinkError) -> Action {
    if let SinkError::Superseded { ours, stored, .. } = error {
        return Action::Superseded { restored: stored.is_none_or(|stored| stored < *ours) };
    }
    if let SinkError::Hook { .. } = error {
        let advice = "fix what the hook reports (its output is in the log), or set its OnFailure to \"Log\" in \
                      appsettings.json; the data it followed is committed (BatchCommitted hooks also run when sync starts)";
        return Action::Fatal { advice: Some(advice) };
    }
    match error.retry() {
        Retry::Transient => Action::Retry { after: None, waiting_for: "the replica database" },
        Retry::Fatal => Action::Fatal { advice: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(status: u16, code: &str, details: serde_json::Value) -> SourceError {
        SourceError::Service { status, code: ErrorCode::parse(code), message: String::new(), details }
    }

    #[test]
    fn cloud_errors_map_to_actions() {
        assert_eq!(source_action(&service(401, "token_expired", serde_json::Value::Null)), Action::RefreshTokens);
        assert_eq!(source_action(&service(410, "offset_purged", serde_json::Value::Null)), Action::Purged);
        let suspended = service(423, "tenant_suspended", serde_json::json!({"retry_after_s": 7}));
        assert_eq!(
            source_action(&suspended),
            Action::Retry { after: Some(Duration::from_secs(7)), waiting_for: "the tenant to be resumed" }
        );
        assert!(matches!(source_action(&service(503, "brand_new", serde_json::Value::Null)), Action::Retry { .. }));
        assert!(matches!(
            source_action(&service(403, "token_reused", serde_json::Value::Null)),
            Action::Fatal { advice: Some(_) }
        ));
        let reset = serde_json::json!({"code": "offsets_reset", "positions": [{"topic": "t", "partition": 0, "offset": 5}], "until": [], "reset_epoch": 2});
        match source_action(&service(409, "offsets_reset", reset)) {
            Action::Reset(details) => assert_eq!((details.reset_epoch, details.positions.len()), (2, 1)),
            other => panic!("{other:?}"),
        }
    }
}
