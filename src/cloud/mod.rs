//! The reference cloud's simulated CRM tenant (the source of truth).
//!
//! So far: the `crm7` schema ([`crm`]), a deterministic data generator that keeps the ground
//! truth ([`generate`]) and the Debezium encoder that turns rows into exactly what the SQL
//! Server connector emits ([`encode`]). The HTTP services (Dispatcher, Replication Service)
//! and the `dbmirror-cloud` binary build on these in the reference-cloud issue.
//!
//! Boundary: this module never uses the client's decoder or sinks, only shared domain types
//! (schemas, rows, temporal and decimal values), so a round-trip test checks one side
//! against the other.

pub mod auth;
pub mod crm;
pub mod encode;
pub mod error;
pub mod generate;
pub mod http;
pub mod journal;
pub mod log;
pub mod persist;
pub mod service;
pub mod tenant;
