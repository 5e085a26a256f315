//! The Replication Service's requests and replies, as both the client and the reference cloud
//! read and write them. Each knob's default lives here once (the cloud applies it to a request
//! that leaves the field out; the configuration starts from the same value).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::code::ErrorCode;
use super::position::OwnedPosition;

/// Records per fetch when the request does not say (`MaxBatchSize`).
pub const DEFAULT_MAX_EVENTS: u32 = 10_000;
/// Soft bytes per fetch when the request does not say (`MaxBytes`).
pub const DEFAULT_MAX_BYTES: u64 = 16 << 20;
/// Longest long-poll wait when the request does not say (`MaxPollTimeSeconds`).
pub const DEFAULT_MAX_WAIT_MS: u64 = 30_000;

fn default_max_events() -> u32 {
    DEFAULT_MAX_EVENTS
}
fn default_max_bytes() -> u64 {
    DEFAULT_MAX_BYTES
}
fn default_max_wait_ms() -> u64 {
    DEFAULT_MAX_WAIT_MS
}

/// `POST fetch`: where to read from, and how much.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRequest {
    /// The next offset to read per topic/partition, schema history first.
    pub positions: Vec<OwnedPosition>,
    /// Most records (`MaxBatchSize`).
    #[serde(default = "default_max_events")]
    pub max_events: u32,
    /// Soft byte limit (`MaxBytes`).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Longest wait for the first record, in milliseconds (`MaxPollTimeSeconds`).
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
    /// How many offset resets the client has already reloaded from (0 for a new replica).
    #[serde(default)]
    pub reset_epoch: u64,
}

/// `POST commit`: the last applied offset per partition, already committed in the replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRequest {
    /// Last applied offsets.
    pub offsets: Vec<OwnedPosition>,
}

/// `POST resync`: tables (`schema.table`) to snapshot again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResyncRequest {
    /// The tables.
    pub tables: Vec<String>,
}

/// The answer to [`ResyncRequest`]: the tables the cloud publishes (others are dropped), and
/// where their fresh snapshot is complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResyncReply {
    /// Accepted tables.
    pub tables: Vec<String>,
    /// Per partition, the first offset after the snapshot.
    pub until: Vec<OwnedPosition>,
}

/// The details of a `409 offsets_reset`: a fresh snapshot of every table starts at
/// `positions` and is complete at `until`; `reset_epoch` is the reset's number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetDetails {
    /// Where the stream continues.
    pub positions: Vec<OwnedPosition>,
    /// Where the snapshot is complete.
    pub until: Vec<OwnedPosition>,
    /// The reset's number, sent back with later fetches once it is handled.
    pub reset_epoch: u64,
}

/// The topics a session reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topics {
    /// `<ctx>-cdc`.
    pub cdc: String,
    /// `<ctx>-schemahistory`.
    pub schema_history: String,
    /// Partitions of `<ctx>-cdc`.
    pub cdc_partitions: i32,
}

/// `GET session`, and the session in grants and status replies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionReply {
    /// Session id.
    pub session_id: String,
    /// Tenant context id (`cust1234`).
    pub tenant_context_id: String,
    /// Replication ID (the session name, lower-cased).
    pub replication_id: String,
    /// The Dispatcher's base URL.
    pub dispatcher_url: String,
    /// The Replication Service's base URL for this tenant.
    pub service_url: String,
    /// The topics.
    pub topics: Topics,
}

/// One partition in a [`StatusReply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStatus {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The oldest offset still kept.
    pub start: i64,
    /// The next offset to be written.
    pub end: i64,
    /// The last offset the session acknowledged.
    pub committed: Option<i64>,
    /// Records after the acknowledged offset.
    pub lag: i64,
}

/// `GET status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    /// The session.
    pub session: SessionReply,
    /// Whether the tenant is suspended.
    pub tenant_suspended: bool,
    /// The oldest client version the cloud accepts.
    pub minimum_client_version: String,
    /// Every partition of both topics.
    pub partitions: Vec<PartitionStatus>,
}

impl StatusReply {
    /// The ends (next offset to be written) of one topic's partitions.
    pub fn ends(&self, topic: &str) -> super::Offsets {
        self.partitions.iter().filter(|p| p.topic == topic).map(|p| ((p.topic.clone(), p.partition), p.end)).collect()
    }

    /// Records behind the acknowledged offsets, over every partition.
    pub fn lag(&self) -> i64 {
        self.partitions.iter().map(|p| p.lag).sum()
    }
}

/// A token pair as the cloud issues it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    /// JWT access token.
    pub access_token: String,
    /// Opaque refresh token.
    pub refresh_token: String,
    /// Seconds the access token is valid.
    pub expires_in: i64,
}

impl fmt::Debug for Tokens {
    /// Tokens never appear in logs or `Debug` output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens").field("expires_in", &self.expires_in).finish_non_exhaustive()
    }
}

/// `POST /api/v1/token`: rotate the refresh token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRequest {
    /// The current refresh token.
    pub refresh_token: String,
}

impl fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenRequest { .. }")
    }
}

/// A grant: the session and its first tokens (provisioning), or new tokens (rotation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The session (provisioning only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionReply>,
    /// The tokens.
    pub tokens: Tokens,
}

/// `POST /api/v1/provisioning`: start a device grant; with a session id, re-authorize that
/// session (`reconnect`) instead of creating one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRequest {
    /// The session to re-authorize.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// The answer to [`GrantRequest`]: where the administrator approves, and what to poll with.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceAuthorization {
    /// Secret: the client polls with it.
    pub device_code: String,
    /// Shown to the administrator.
    pub user_code: String,
    /// The approval page.
    pub verification_uri: String,
    /// The approval page with the user code filled in.
    pub verification_uri_complete: String,
    /// Seconds the codes stay valid.
    pub expires_in: u64,
    /// Seconds between polls.
    pub interval: u64,
}

impl fmt::Debug for DeviceAuthorization {
    /// The device code is a bearer secret until the grant completes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceAuthorization").field("user_code", &self.user_code).finish_non_exhaustive()
    }
}

/// `POST /api/v1/provisioning/token`: poll a device grant.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantPoll {
    /// The device code from [`DeviceAuthorization`].
    pub device_code: String,
}

impl fmt::Debug for GrantPoll {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GrantPoll { .. }")
    }
}

/// One table of [`GroundTruth`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableTruth {
    /// `schema.table`.
    pub table: String,
    /// Row count.
    pub rows: u64,
    /// Order-independent checksum of the canonical rows, 16 hex digits.
    pub checksum: String,
    /// Where the table's last change was published, per partition: the rows above are the
    /// state after these offsets. A replica that has applied them and has no later change of
    /// the table to apply can be compared exactly while the tenant keeps changing.
    #[serde(default)]
    pub last_change: Vec<OwnedPosition>,
}

/// `GET ground-truth` (the reference cloud only): what `verify` compares the replica with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroundTruth {
    /// Every published table.
    pub tables: Vec<TableTruth>,
}

/// One column of a [`PublishedTable`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedColumn {
    /// Column name.
    pub name: String,
    /// SQL Server type text, e.g. `nvarchar(200)`.
    #[serde(rename = "type")]
    pub sql_type: String,
    /// Whether NULL is allowed.
    pub nullable: bool,
    /// Default expression, if any.
    pub default: Option<String>,
}

/// One table of [`SchemaReply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedTable {
    /// `schema.table`.
    pub table: String,
    /// Primary key columns in key order.
    pub primary_key: Vec<String>,
    /// Columns in order.
    pub columns: Vec<PublishedColumn>,
    /// The table's schema fingerprint.
    pub schema_hash: String,
    /// About how many rows it has (for progress estimates).
    pub approx_rows: u64,
}

/// `GET schema`: the published tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaReply {
    /// Tables.
    pub tables: Vec<PublishedTable>,
}

/// An error reply's body: `{"error":{"code","message",…details}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// The error.
    pub error: ErrorObject,
}

/// The `error` object; details (positions, minimum version, …) sit beside code and message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
    /// Structured details.
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_defaults_apply_to_missing_fields() {
        let req: FetchRequest = serde_json::from_str(r#"{"positions":[]}"#).unwrap();
        assert_eq!(
            (req.max_events, req.max_bytes, req.max_wait_ms, req.reset_epoch),
            (DEFAULT_MAX_EVENTS, DEFAULT_MAX_BYTES, DEFAULT_MAX_WAIT_MS, 0)
        );
    }

    #[test]
    fn error_details_sit_beside_code_and_message() {
        let text = r#"{"error":{"code":"offsets_reset","message":"m","reset_epoch":2,"positions":[]}}"#;
        let reply: ErrorReply = serde_json::from_str(text).unwrap();
        assert_eq!(reply.error.code, ErrorCode::OffsetsReset);
        assert_eq!(reply.error.details["reset_epoch"], 2);
        let tokens = Tokens { access_token: "a-secret".into(), refresh_token: "r-secret".into(), expires_in: 1 };
        assert!(!format!("{tokens:?}{:?}", TokenRequest { refresh_token: "r-secret".into() }).contains("secret"));
    }
}

/// `GET /api/v1/partner/tenants`: the tenants that approved the partner's application.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerTenants {
    /// Tenant context ids.
    pub tenants: Vec<String>,
}

/// `POST /api/v1/partner/sessions`: a session for one approving tenant, without a browser.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerSessionRequest {
    /// The tenant's context id.
    pub tenant: String,
    /// The session name (its Replication ID, lower-cased).
    pub session_name: String,
}
