//! The integration test binary: one module per area.

/// Shared generators and models.
mod support;

/// `dbmirror inspect` and the decoder against real and hand-made Debezium events.
mod decode_fixtures;

/// Coalescing by primary key: property test against one-by-one application, flush rules, errors.
mod coalesce_props;

/// The sink contract on every available target (SQLite, PostgreSQL, SQL Server if configured).
mod sink_contract;

/// The SQLite replica: equality with the source under random histories, losslessness, schema evolution.
mod sink_sqlite;

/// The simulated tenant's Debezium stream decodes and replicates to exactly its ground truth.
mod cloud_roundtrip;

/// The client pipeline end to end against the in-process cloud, with faults, on every target.
mod client_e2e;

/// The pipeline against an in-memory replica: lifecycle, faults, retries and resets, fast.
mod pipeline_memory;

/// Adopting a legacy mirror (tables filled, no `_ReplicationState`).
mod adoption;

/// The writer fence: two runs that both think they own a replica never apply an old batch late.
mod fence;

/// Partner mode: many tenants, each in its own database, through the partner API.
mod partner;

/// The owner's delete modes: soft deletes and history tables through replays, resyncs, re-creates.
mod delete_modes;

/// The owner's hooks (SQL and commands on replica events), on SQLite and PostgreSQL.
mod hooks;

/// The owner's column rules: excluded, hashed and fixed columns.
mod columns;

/// `ErrorPolicy: Isolate`: refused rows kept in `_ReplicationErrors`, retried after the fix.
mod refused;

/// `resync-tables`: shadow tables loaded and swapped in while the source changes, on every target.
mod client_resync;

/// The `dbmirror-cloud` binary: HTTPS with a pinned certificate, CLI actions, durable restart.
mod cloud_binary;

/// `dbmirror-cloud` over HTTP: endpoints, error codes, long-poll, faults.
mod cloud_http;

/// The simulated tenant's whole lifecycle, through the event log, into a replica.
mod cloud_tenant;

/// A password planted in every connection-string form never shows in output or logs.
mod secrets_binary;

/// SQL Server statements checked offline (golden text, T-SQL parser, key widths, quoting).
mod mssql_sql;

/// SQLite and PostgreSQL statements checked offline (their dialects' parsers, pinned state layout).
mod target_sql;

/// The module graph: no import cycles, and docs/architecture.md lists the real one.
mod layering;
