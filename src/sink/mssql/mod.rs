//! The SQL Server target: the product's replica database.
//!
//! Per table and batch the plan is: TDS bulk load of the upserts into a session temp table
//! typed exactly like the target, one set-based `MERGE … WITH (UPDLOCK, HOLDLOCK)`, a bulk load
//! of deleted keys and one join `DELETE`, and the offsets `MERGE` into `_ReplicationState`,
//! all in one transaction: no per-row statements and no statement parameters beyond the few
//! the offsets need, so the 2,100-parameter limit never applies.
//!
//! Status: the statement text ([`sql`]) is written and checked offline (golden tests and a
//! T-SQL parser). The connection (tiberius 0.13), the bulk-load encoding and the `Sink`
//! implementation are not written yet; nothing here has run against a real SQL Server.

pub mod sql;
