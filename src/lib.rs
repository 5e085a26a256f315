//! dbmirror keeps a customer-managed SQL replica in sync with a cloud CRM tenant.
//!
//! The cloud side publishes SQL Server CDC as Debezium change events on per-tenant Kafka
//! topics (`<ctx>-cdc`, `<ctx>-schemahistory`) and the Replication Service streams them to
//! this client over outbound HTTPS long-polls. The client decodes each record in place,
//! coalesces changes per table by primary key, and writes each batch together with its
//! offsets in one replica transaction, so a crash never loses or repeats a change.
//!
//! # Layout, in flow order
//! - [`source`]: outbound HTTPS to the cloud: the Dispatcher's device grant, the partner API,
//!   and a session's typed Replication Service calls (the streamed long-poll fetch, commits,
//!   status, resyncs).
//! - [`protocol`]: the wire types both sides share (record lines and positions, requests and
//!   replies with their single defaults, error codes and error replies).
//! - [`decode`]: zero-copy Debezium decoding (simd-json tape, values borrow the record).
//! - [`schema`]: table schemas from schema history, with exact SQL Server types; table ids,
//!   their resync shadows, and [`schema::TablePattern`] (how a configured name means a table).
//! - [`coalesce`]: per-table folding of changes by primary key into batches of owned [`row`]s.
//! - [`sink`]: the replica targets (SQLite, PostgreSQL, SQL Server; an in-memory one for tests):
//!   one transaction per batch, schema changes, resync swaps ([`sink::shadow`]), the owner's
//!   rules applied where rows enter the replica ([`sink::projecting`], [`sink::retaining`],
//!   [`sink::hooks`]), and each target's server-level work ([`sink::server`]).
//! - [`state`]: `_ReplicationState` beside the data: the checkpoint (offsets and reset
//!   epoch), table records, session facts and refused changes, written once for every target.
//! - [`pipeline`]: joins the stages (fetch → decode → coalesce → apply → acknowledge), with
//!   resyncs ([`pipeline::resync`]) and refused changes ([`pipeline::refused`]).
//! - [`policy`]: the one place that decides what an error means (wait, refresh, reload, stop).
//!
//! Around the flow:
//! - [`owner`]: the replica owner's controls — hooks, excluded/hashed/fixed columns, soft and
//!   history deletes — parsed once into [`owner::OwnerRules`].
//! - [`partner`]: partner mode — every approving tenant mirrored into its own database by a
//!   pool of passes, claims on the partner's server across hosts.
//! - [`status`]: what `status`, the status page and a partner's tenant lines report, typed.
//! - [`metrics`]: Prometheus `/metrics` and `/healthz` (and the listener the status page rides on).
//! - [`verify`]: the replica against the cloud's ground truth; [`inspect`]: decoding a file.
//! - [`config`] (`appsettings.json`, read through [`settings`]), [`secrets`] (the sealing
//!   key), [`telemetry`] (logs), [`retry`] (backoff), [`lockfile`], [`clock`], [`db`] (the
//!   replica error and its retry class), [`value`] and [`canonical`] (value types and the one
//!   text form "equal" is judged in).
//!
//! [`cloud`] is the reference cloud (`dbmirror-cloud`, `demo`), behind the default-on
//! `refserver` feature; nothing else in the library imports it. `docs/architecture.md` draws
//! the dependencies (and `tests/layering.rs` checks them).

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
pub mod redact;
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
