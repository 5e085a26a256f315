//! The reference cloud (`dbmirror-cloud`, and in-process for `demo` and the tests): simulated
//! CRM tenants ([`crm`], [`generate`], [`tenant`]) whose changes the Debezium encoder
//! ([`encode`]) appends to a durable event log ([`log`], [`journal`], [`persist`]), and the
//! Dispatcher and Replication Service over HTTP ([`http`] onto [`service`]), with tokens
//! ([`auth`]) and errors ([`error`]).
//!
//! Boundary: it speaks to the client only through [`crate::protocol`] and imports nothing of
//! the client's pipeline, decoder or sinks, only shared value and schema types, so a
//! round-trip test checks one side against the other. It is compiled only with the
//! `refserver` feature (on by default).

pub mod auth;
pub mod crm;
pub mod encode;
pub mod error;
pub mod generate;
pub mod http;
pub mod journal;
pub mod log;
mod ops_page;
pub mod persist;
pub mod service;
pub mod tenant;
