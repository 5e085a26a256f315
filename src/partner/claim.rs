//! One process at a time mirrors a tenant, across processes and hosts, with the database
//! server as the only coordinator: a worker takes a tenant's claim before a pass and holds it
//! to the end. Each target's server decides what a claim is (see
//! [`crate::sink::server::Server::try_claim`]): on PostgreSQL a session advisory lock, on SQL
//! Server a session `sp_getapplock`, both released by the server as soon as the holder's
//! connection ends; on SQLite an OS file lock beside the tenant's file (one host, or hosts
//! sharing a local file system).

use super::databases::Databases;
use crate::db::SinkError;

/// A held claim; dropping it releases the tenant.
pub struct Claim(#[allow(dead_code)] Box<dyn crate::sink::server::Held>);

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Claim")
    }
}

/// Takes tenant `ctx`'s claim if no other process holds it (`None` then).
pub fn try_claim(databases: &Databases, ctx: &str) -> Result<Option<Claim>, SinkError> {
    Ok(databases.try_claim(ctx)?.map(Claim))
}
