//! Where each tenant's mirror lives: one database per tenant on the partner's server, named
//! by a pattern (`Mirror_{contextId}` by default, as the original service names them), or one
//! SQLite file per tenant in a folder. Databases are created when missing.

use std::sync::Arc;

use crate::db::SinkError;
use crate::sink::server::{Held, Server};

/// The placeholder of the tenant's context id in `Partner.DatabaseName`.
pub const CONTEXT_ID: &str = "{contextId}";

/// The longest database name made (PostgreSQL's identifier limit; SQL Server allows 128, and
/// a SQLite file name more).
pub const MAX_NAME: usize = 63;

/// The longest pattern: the name must have room for a hashed context id (see
/// [`Databases::name`]).
const MAX_PATTERN: usize = MAX_NAME - 16;

/// FNV-1a, 64 bits: stable across hosts and versions, unlike the standard library's hasher.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The default database name pattern: the original service's.
pub const DEFAULT_PATTERN: &str = "Mirror_{contextId}";

/// The partner's server and how its tenants' databases are named.
#[derive(Clone)]
pub struct Databases {
    server: Arc<dyn Server>,
    pattern: String,
}

impl std::fmt::Debug for Databases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Databases").field("pattern", &self.pattern).finish_non_exhaustive()
    }
}

fn bad(reason: impl Into<String>) -> SinkError {
    SinkError::ConnectionString(reason.into())
}

impl Databases {
    /// `server`: a server-level connection string (PostgreSQL, SQL Server), or
    /// `Data Source=<folder>` for one SQLite file per tenant; `pattern` names each database.
    pub fn new(server: &str, pattern: &str) -> Result<Self, SinkError> {
        if !pattern.contains(CONTEXT_ID) {
            return Err(bad(format!("Partner.DatabaseName must contain {CONTEXT_ID}")));
        }
        if pattern.len() - CONTEXT_ID.len() > MAX_PATTERN {
            return Err(bad(format!(
                "Partner.DatabaseName is too long: at most {MAX_PATTERN} characters besides {CONTEXT_ID}"
            )));
        }
        Ok(Databases { server: Arc::from(crate::sink::server::open(server)?), pattern: pattern.to_owned() })
    }

    /// A tenant's database name: the pattern with `{contextId}` replaced by the context id.
    /// An id that is not only letters, digits, `-` and `_`, or that makes the name longer
    /// than [`MAX_NAME`] bytes (PostgreSQL's limit, the smallest of the targets'), is replaced
    /// by its safe part — other characters as `_`, cut to fit — and a hash of the whole id, so
    /// every id gets a valid name of its own, and the same one on every host.
    pub fn name(&self, ctx: &str) -> Result<String, SinkError> {
        if ctx.is_empty() {
            return Err(bad("an empty tenant context id has no database"));
        }
        let plain = self.pattern.replace(CONTEXT_ID, ctx);
        if ctx.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') && plain.len() <= MAX_NAME {
            return Ok(plain);
        }
        let hash = format!("{:010x}", fnv1a(ctx) >> 24);
        let room = MAX_NAME.saturating_sub(self.pattern.len() - CONTEXT_ID.len() + 1 + hash.len());
        let safe: String = ctx
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
            .take(room)
            .collect();
        Ok(self.pattern.replace(CONTEXT_ID, &format!("{safe}_{hash}")))
    }

    /// The connection string of a tenant's database.
    pub fn connection_string(&self, ctx: &str) -> Result<String, SinkError> {
        self.server.connection_string(&self.name(ctx)?)
    }

    /// Checks that the login may create the tenants' databases (`validate`), changing
    /// nothing; says what it checked.
    pub fn check_rights(&self) -> Result<String, SinkError> {
        self.server.check_rights()
    }

    /// Creates a tenant's database when it does not exist; returns whether it did that.
    pub fn ensure(&self, ctx: &str) -> Result<bool, SinkError> {
        self.server.ensure_database(&self.name(ctx)?)
    }

    /// Takes tenant `ctx`'s claim if no other process holds it (`None` then); dropping it
    /// releases the tenant. One process at a time mirrors a tenant, across processes and
    /// hosts, with the database server as the only coordinator: a worker takes the claim
    /// before a pass and holds it to the end. Each target's server decides what a claim is
    /// ([`Server::try_claim`]): on PostgreSQL a session advisory lock, on SQL Server a session
    /// `sp_getapplock`, both released by the server as soon as the holder's connection ends;
    /// on SQLite an OS file lock beside the tenant's file (one host, or hosts sharing a local
    /// file system).
    pub fn try_claim(&self, ctx: &str) -> Result<Option<Box<dyn Held>>, SinkError> {
        self.server.try_claim(&self.name(ctx)?)
    }

    /// The tenants whose databases exist on the server (found by the name pattern), sorted; a
    /// tenant whose id was hashed into its name (see [`Databases::name`]) is listed by that
    /// part of the name.
    pub fn existing(&self) -> Result<Vec<String>, SinkError> {
        let (prefix, suffix) = self.pattern.split_once(CONTEXT_ID).unwrap_or((&self.pattern, ""));
        let mut tenants: Vec<String> = self
            .server
            .databases()?
            .iter()
            .filter_map(|n| n.strip_prefix(prefix)?.strip_suffix(suffix))
            .filter(|ctx| !ctx.is_empty())
            .map(str::to_owned)
            .collect();
        tenants.sort();
        Ok(tenants)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_get_their_own_database_on_the_partners_server() {
        let pg = Databases::new("host=127.0.0.1 user=dbm dbname=postgres", DEFAULT_PATTERN).unwrap();
        assert_eq!(pg.connection_string("cust1").unwrap(), "host=127.0.0.1 user=dbm dbname=Mirror_cust1");
        assert_eq!(
            crate::sink::postgres::server::with_database("postgres://u:p@h:5432/postgres?sslmode=require", "Mirror_x"),
            "postgres://u:p@h:5432/Mirror_x?sslmode=require"
        );
        let ms =
            Databases::new("Server=tcp:db,1433;Initial Catalog=master;User Id=sa;Password=x", DEFAULT_PATTERN).unwrap();
        assert_eq!(ms.connection_string("c9").unwrap(), "Server=tcp:db,1433;User Id=sa;Password=x;Database=Mirror_c9");
        let lite = Databases::new("Data Source=mirrors", "M_{contextId}").unwrap();
        assert_eq!(
            lite.connection_string("a-b").unwrap(),
            format!("Data Source={}", std::path::PathBuf::from("mirrors").join("M_a-b.db").display())
        );
        // Any id gets a valid, bounded name of its own, the same on every host.
        let odd = lite.name("x;DROP").unwrap();
        assert!(odd.starts_with("M_x_DROP_") && odd.len() == "M_x_DROP_".len() + 10, "{odd}");
        assert_ne!(lite.name("x;DROP").unwrap(), lite.name("x:DROP").unwrap());
        let long = "c".repeat(80);
        let named = pg.name(&long).unwrap();
        assert!(named.len() <= MAX_NAME && named.starts_with("Mirror_ccc"), "{named}");
        assert_eq!(pg.name(&long).unwrap(), named);
        assert_ne!(pg.name(&"c".repeat(81)).unwrap(), named);
        assert!(lite.name("").is_err());
        assert!(Databases::new("Data Source=mirrors", &format!("{}{{contextId}}", "p".repeat(60))).is_err());
        assert!(Databases::new("Data Source=mirrors", "Mirror").is_err());
    }
}
