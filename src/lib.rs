//! dbmirror keeps a customer-managed SQL replica in sync with a cloud CRM tenant.
//!
//! The cloud side publishes SQL Server CDC as Debezium change events on per-tenant Kafka
//! topics (`<ctx>-cdc`, `<ctx>-schemahistory`) and the Replication Service streams them to
//! this client over outbound HTTPS long-polls. The client decodes each record in place,
//! coalesces changes per table by primary key, and writes each batch together with its
//! offsets in one replica transaction, so a crash never loses or repeats a change.
//!
//! # Layout, in flow order
//! - [`source`]: outbound HTTPS to the cloud (certificate pinning, JSON requests, typed errors).
//! - [`protocol`]: the record line and wire types shared with the reference cloud.
//! - [`decode`]: zero-copy Debezium decoding (simd-json tape, values borrow the record).
//! - [`schema`]: table schemas from schema history, with exact SQL Server types.
//! - [`coalesce`]: per-table folding of changes by primary key into batches of owned [`row`]s.
//! - [`sink`]: the replica targets (SQLite, PostgreSQL, SQL Server) and their
//!   one-transaction-per-batch contract.
//! - [`state`]: `_ReplicationState`: offsets and table states stored with the data.
//! - [`inspect`]: canonical JSON rendering of decoded records (`dbmirror inspect`).
//! - [`cloud`]: the reference cloud (`dbmirror-cloud`): simulated tenants, the event log,
//!   tokens, the Dispatcher and Replication Service over HTTP.
//! - [`config`]: `appsettings.json` with the original client's keys; secrets redacted.
//! - [`error`]: the top-level error and its retry classification.
//! - [`telemetry`]: logging setup for the binaries.
//!
//! The streamed fetch loop and the pipeline that joins the stages arrive with the client
//! issue (see the README's status section).

pub mod canonical;
pub mod clock;
#[cfg(feature = "refserver")]
pub mod cloud;
pub mod coalesce;
pub mod config;
pub mod db;
pub mod decode;
pub mod inspect;
pub mod pipeline;
pub mod policy;
pub mod protocol;
pub mod retry;
pub mod row;
pub mod schema;
pub mod secrets;
pub mod sink;
pub mod source;
pub mod state;
pub mod telemetry;
pub mod value;
pub mod verify;
