//! Server-level work for partner mode (see `crate::partner` and [`crate::sink::server`]):
//! creating a tenant's database, listing them, the login's rights, and the session advisory
//! lock that makes one process at a time mirror a tenant.

use ::postgres::Client;

use super::{PgSink, err};
use crate::db::SinkError;
use crate::sink::server::{Held, Server};

/// A PostgreSQL server, by a connection string to any database on it.
#[derive(Debug, Clone)]
pub struct PgServer(String);

impl PgServer {
    /// The server `connection_string` reaches.
    pub fn new(connection_string: &str) -> Self {
        PgServer(connection_string.to_owned())
    }
}

impl Server for PgServer {
    fn connection_string(&self, name: &str) -> Result<String, SinkError> {
        Ok(with_database(&self.0, name))
    }

    fn ensure_database(&self, name: &str) -> Result<bool, SinkError> {
        create_database(&self.0, name)
    }

    fn databases(&self) -> Result<Vec<String>, SinkError> {
        databases(&self.0)
    }

    fn check_rights(&self) -> Result<String, SinkError> {
        if may_create_databases(&self.0)? {
            Ok("the login may create databases".into())
        } else {
            Err(SinkError::ConnectionString(
                "the login may not create databases: grant it CREATEDB (ALTER ROLE … CREATEDB)".into(),
            ))
        }
    }

    fn try_claim(&self, name: &str) -> Result<Option<Box<dyn Held>>, SinkError> {
        Ok(try_claim(&self.0, name)?.map(|c| Box::new(c) as Box<dyn Held>))
    }
}

impl Held for Claim {}

/// A PostgreSQL connection string naming database `name`: a URL's path, or a key-value
/// string's `dbname` (replaced or added).
pub fn with_database(server: &str, name: &str) -> String {
    if let Some(rest) = server.split_once("://") {
        let (scheme, rest) = rest;
        let (before_query, query) = rest.split_once('?').map_or((rest, None), |(a, q)| (a, Some(q)));
        let authority = before_query.split('/').next().unwrap_or_default();
        let query = query.map(|q| format!("?{q}")).unwrap_or_default();
        return format!("{scheme}://{authority}/{name}{query}");
    }
    let mut parts: Vec<String> = server
        .split_whitespace()
        .filter(|p| !p.to_ascii_lowercase().starts_with("dbname="))
        .map(str::to_owned)
        .collect();
    parts.push(format!("dbname={name}"));
    parts.join(" ")
}

/// A connection to the server (the database the connection string names), without a replica.
pub fn connect(server: &str) -> Result<Client, SinkError> {
    let super::tls::Target { config, tls } = super::tls::parse(server)?;
    PgSink::connect(&config, tls.as_ref())
}

/// Creates database `name` when missing; returns whether it did. Two processes creating it at
/// once are fine: the loser sees it exist.
fn create_database(server: &str, name: &str) -> Result<bool, SinkError> {
    let mut client = connect(server)?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .map_err(err(format!("looking for database {name}")))?
        .is_some();
    if exists {
        return Ok(false);
    }
    match client.batch_execute(&format!("CREATE DATABASE {}", super::sql::quote(name))) {
        Ok(()) => Ok(true),
        Err(e) if e.code() == Some(&::postgres::error::SqlState::DUPLICATE_DATABASE) => Ok(false),
        Err(e) => Err(err(format!("creating database {name}"))(e)),
    }
}

/// Whether the login may create databases (`CREATEDB`, or a superuser).
fn may_create_databases(server: &str) -> Result<bool, SinkError> {
    let mut client = connect(server)?;
    let row = client
        .query_one("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user", &[])
        .map_err(err("reading the login's rights"))?;
    Ok(row.get(0))
}

/// The server's databases (templates left out).
fn databases(server: &str) -> Result<Vec<String>, SinkError> {
    let mut client = connect(server)?;
    let rows = client
        .query("SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY datname", &[])
        .map_err(err("listing databases"))?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// A session advisory lock: held while this value lives (its own connection), released by
/// the server the moment that connection ends — a process that dies, however, loses it at
/// once; a host that vanishes from the network within about 25 s (TCP keepalives).
pub struct Claim(#[allow(dead_code)] Client);

/// The advisory lock key of `name`: a stable 64-bit hash (FNV-1a).
pub fn lock_key(name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "dbmirror-partner:".bytes().chain(name.bytes()) {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// Takes the lock of `name` if no other session holds it.
fn try_claim(server: &str, name: &str) -> Result<Option<Claim>, SinkError> {
    let mut client = connect(server)?;
    client
        .batch_execute("SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3")
        .map_err(err("setting keepalives"))?;
    let held: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&lock_key(name)])
        .map_err(err(format!("claiming {name}")))?
        .get(0);
    Ok(held.then_some(Claim(client)))
}
