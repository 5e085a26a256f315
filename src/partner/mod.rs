//! Partner mode: every tenant that approves the partner's application is mirrored into its own
//! database (`Mirror_<contextId>` on the partner's server, or a SQLite file per tenant), by one
//! process or by several on different hosts.
//!
//! - The tenant list comes from the Dispatcher's partner API ([`crate::source::partner`]),
//!   read every `PollSeconds`: a tenant that approves gets its database (created when
//!   missing) and a session (no browser) at the next read; one that withdraws stops being
//!   mirrored, its database kept.
//! - A fixed pool of `Workers` threads runs **passes**: one tenant, one claim
//!   ([`claim`]), one `sync` until that tenant is idle or `SliceSeconds` passed. A tenant
//!   with more to do goes to the back of the queue, so a hot tenant cannot starve the rest,
//!   and memory is bounded by the workers, not the tenants. An idle tenant is fetched again
//!   after `IdleSeconds`; a failing one is retried with backoff, alone.
//! - Each tenant's state (offsets, session, tables) lives in its own database, exactly as a
//!   single-tenant instance's; the pass also records which host ran it ([`passes`]).

pub mod claim;
pub mod databases;
pub mod passes;
mod run;

use std::time::Duration;

pub use run::{Partner, PartnerError};

use crate::source::tls::Trust;

/// A secret that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// The `Partner` section of `appsettings.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerConfig {
    /// The partner id (`Partner.Id`).
    pub id: String,
    /// The partner secret (`Partner.Secret`: `env:NAME`, `file:PATH` or the value).
    pub secret: Secret,
    /// The Dispatcher's base URL (`Partner.Cloud`).
    pub cloud_url: String,
    /// How the cloud's certificate is trusted (`Partner.Fingerprint`, `Partner.CaFile`;
    /// the system's roots otherwise).
    pub trust: Option<Trust>,
    /// The server every tenant's database is on (`Partner.ServerConnectionString`).
    pub server: String,
    /// The tenants' database names (`Partner.DatabaseName`, `Mirror_{contextId}`).
    pub database_name: String,
    /// The session name new sessions get (`Partner.SessionName`, `dbmirror`).
    pub session_name: String,
    /// Passes at once in this process (`Partner.Workers`, 4).
    pub workers: usize,
    /// How often the tenant list is read (`Partner.PollSeconds`, 30).
    pub poll: Duration,
    /// How long an idle tenant waits before its next pass (`Partner.IdleSeconds`, 2).
    pub idle: Duration,
    /// The longest a pass holds a worker (`Partner.SliceSeconds`, 10).
    pub slice: Duration,
    /// Reload a tenant past the cloud's retention without asking (`Partner.AutoResync`, true).
    pub auto_resync: bool,
}

impl PartnerConfig {
    /// Defaults for everything but the partner, its secret, the cloud and the server.
    pub fn new(id: &str, secret: Secret, cloud_url: &str, server: &str) -> Self {
        PartnerConfig {
            id: id.to_owned(),
            secret,
            cloud_url: cloud_url.to_owned(),
            trust: None,
            server: server.to_owned(),
            database_name: databases::DEFAULT_PATTERN.to_owned(),
            session_name: "dbmirror".to_owned(),
            workers: 4,
            poll: Duration::from_secs(30),
            idle: Duration::from_secs(2),
            slice: Duration::from_secs(10),
            auto_resync: true,
        }
    }
}
