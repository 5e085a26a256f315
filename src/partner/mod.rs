//! Partner mode: every tenant that approves the partner's application is mirrored into its own
//! database (`Mirror_<contextId>` on the partner's server, or a SQLite file per tenant), by one
//! process or by several on different hosts.
//!
//! - The tenant list comes from the Dispatcher's partner API ([`crate::source::partner`]),
//!   read every `PollSeconds`: a tenant that approves gets its database (created when
//!   missing) and a session (no browser) at the next read; one that withdraws stops being
//!   mirrored, its database kept.
//! - A fixed pool of `Workers` threads runs **passes**: one tenant, one claim
//!   ([`databases::Databases::try_claim`]), one `sync` until that tenant is idle or `SliceSeconds` passed. A tenant
//!   with more to do goes to the back of the queue, so a hot tenant cannot starve the rest,
//!   and memory is bounded by the workers, not the tenants. A caught-up tenant is then
//!   *watched* ([`watch`]): a long-poll in flight on a shared runtime, and a pass again only
//!   when records arrive (not sooner than `IdleSeconds` after its last); a failing one is
//!   retried with backoff, alone. Passes share one runtime and one cloud client per cloud
//!   ([`net`]), so a pass reuses the connections (and TLS sessions) of the ones before it.
//! - What the process knows of its tenants is on its [`board`]: `/metrics`, `/healthz` and
//!   the status page ([`page`]) read it, and it logs changes of state, not passes.
//! - Each tenant's state (offsets, session, tables) lives in its own database, exactly as a
//!   single-tenant instance's; the pass also records which host ran it ([`passes`]).

pub mod board;
pub mod config;
pub mod databases;
pub mod net;
pub mod page;
pub mod passes;
mod run;
pub mod watch;

pub use config::{PartnerConfig, Secret};
pub use run::{Partner, PartnerError};
