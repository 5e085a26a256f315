//! dbmirror keeps a customer-managed SQL replica in sync with a cloud CRM tenant.
//!
//! The cloud side publishes SQL Server CDC as Debezium change events on per-tenant Kafka
//! topics (`<ctx>-cdc`, `<ctx>-schemahistory`) and the Replication Service streams them to
//! this client over outbound HTTPS long-polls. The client decodes each record in place,
//! coalesces changes per table by primary key, and writes each batch together with its
//! offsets in one replica transaction, so a crash never loses or repeats a change.
//!
//! # Layout, in flow order
//! - [`source`]: outbound HTTPS to the cloud: the Dispatcher's device grant and a session's
//!   typed Replication Service calls (the streamed long-poll fetch, commits, status, resyncs).
//! - [`protocol`]: the wire types both sides share (record lines and positions, requests and
//!   replies with their single defaults, error codes).
//! - [`decode`]: zero-copy Debezium decoding (simd-json tape, values borrow the record).
//! - [`schema`]: table schemas from schema history, with exact SQL Server types.
//! - [`coalesce`]: per-table folding of changes by primary key into batches of owned [`row`]s.
//! - [`sink`]: the replica targets' write path (SQLite, PostgreSQL, SQL Server, in-memory):
//!   one transaction per batch, schema changes, resync swaps; [`sink::ReplicaRead`] reads back.
//! - [`state`]: `_ReplicationState` beside the data: the checkpoint (offsets and reset
//!   epoch), table records and session facts, written once for every target.
//! - [`pipeline`]: joins the stages (fetch → decode → coalesce → apply → acknowledge).
//! - [`policy`]: the one place that decides what an error means (wait, refresh, reload, stop).
//!
//! Beside the flow: [`value`] and [`canonical`] (value types and the one text form "equal" is
//! judged in), [`db`] (the replica error and its retry class), [`clock`], [`secrets`] (the
//! sealing key), [`retry`] (backoff), [`config`] (`appsettings.json`), [`verify`], [`inspect`],
//! [`telemetry`] (logs) and [`metrics`] (Prometheus `/metrics` and `/healthz`). [`cloud`] is the
//! reference cloud (`dbmirror-cloud`, `demo`), behind the default-on `refserver` feature;
//! nothing else in the library imports it.
//! `docs/architecture.md` draws the dependencies.

pub mod canonical;
pub mod clock;
#[cfg(feature = "refserver")]
pub mod cloud;
pub mod coalesce;
pub mod config;
pub mod db;
pub mod decode;
pub mod inspect;
pub mod lockfile;
pub mod metrics;
pub mod owner;
pub mod partner;
pub mod pipeline;
pub mod policy;
pub mod protocol;
pub mod retry;
pub mod row;
pub mod schema;
pub mod secrets;
pub mod settings;
pub mod sink;
pub mod source;
pub mod state;
pub mod status;
pub mod telemetry;
pub mod value;
pub mod verify;
