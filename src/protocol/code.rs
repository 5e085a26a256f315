//! The cloud's error codes (`{"error":{"code":…}}`), one enum for both sides, so neither
//! compares strings and a new code on the wire is kept as [`ErrorCode::Other`] rather than
//! lost. `docs/protocol.md` says what each means and what the client does.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $text:literal,)*) => {
        /// A machine-readable error code.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $name,)*
            /// A code this build does not know.
            Other(String),
        }

        impl ErrorCode {
            /// The wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $(ErrorCode::$name => $text,)*
                    ErrorCode::Other(text) => text,
                }
            }

            /// Reads the wire spelling.
            pub fn parse(text: &str) -> Self {
                match text {
                    $($text => ErrorCode::$name,)*
                    other => ErrorCode::Other(other.to_owned()),
                }
            }
        }
    };
}

codes! {
    /// The request is malformed.
    BadRequest = "bad_request",
    /// A table name is not `schema.table`.
    BadTable = "bad_table",
    /// No such endpoint.
    NotFound = "not_found",
    /// The operations endpoints need the admin token.
    AdminOnly = "admin_only",
    /// Partner credentials are missing or wrong.
    InvalidClient = "invalid_client",
    /// A device code or user code is unknown or used.
    InvalidGrant = "invalid_grant",
    /// The administrator has not decided yet.
    AuthorizationPending = "authorization_pending",
    /// Polling too often: wait longer between polls.
    SlowDown = "slow_down",
    /// The administrator refused.
    AccessDenied = "access_denied",
    /// The device code expired before approval.
    ExpiredToken = "expired_token",
    /// The user code is unknown.
    UnknownUserCode = "unknown_user_code",
    /// The session name is not allowed.
    InvalidSessionName = "invalid_session_name",
    /// A session of that name exists.
    SessionExists = "session_exists",
    /// The tenant has not approved the partner's application.
    TenantNotApproved = "tenant_not_approved",
    /// No bearer token was sent.
    TokenMissing = "token_missing",
    /// The bearer token is not one the cloud issued.
    TokenInvalid = "token_invalid",
    /// The access token expired: refresh it.
    TokenExpired = "token_expired",
    /// A refresh token was used twice: the session is revoked.
    TokenReused = "token_reused",
    /// The session was revoked.
    SessionRevoked = "session_revoked",
    /// No such session.
    SessionNotFound = "session_not_found",
    /// The token belongs to another tenant.
    WrongTenant = "wrong_tenant",
    /// No such tenant.
    TenantNotFound = "tenant_not_found",
    /// The tenant has no tables.
    EmptyTenant = "empty_tenant",
    /// No such table.
    TableNotFound = "table_not_found",
    /// The tenant is suspended: wait and try again.
    TenantSuspended = "tenant_suspended",
    /// The client is older than the cloud accepts.
    ClientTooOld = "client_too_old",
    /// A requested offset is older than the retention.
    OffsetPurged = "offset_purged",
    /// A requested offset is beyond the partition's end.
    OffsetOutOfRange = "offset_out_of_range",
    /// The tenant's offsets were reset: reload from the given positions.
    OffsetsReset = "offsets_reset",
    /// No such topic or partition.
    UnknownPartition = "unknown_partition",
    /// An operations action the cloud does not know.
    UnknownAction = "unknown_action",
    /// Too many requests: wait `Retry-After`.
    RateLimited = "rate_limited",
    /// The service is unavailable for now: wait `Retry-After`.
    Unavailable = "unavailable",
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for ErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(ErrorCode::parse(&String::deserialize(deserializer)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_ones_are_kept() {
        for code in [ErrorCode::OffsetPurged, ErrorCode::TenantSuspended, ErrorCode::TokenExpired] {
            assert_eq!(ErrorCode::parse(code.as_str()), code);
        }
        assert_eq!(ErrorCode::parse("brand_new"), ErrorCode::Other("brand_new".into()));
        assert_eq!(serde_json::to_string(&ErrorCode::OffsetsReset).unwrap(), "\"offsets_reset\"");
    }
}
