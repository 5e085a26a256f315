//! A target's server-level work, for partner mode (see `crate::partner`): where every
//! tenant's database lives on the partner's server, creating it, listing what exists,
//! checking the login's rights, and the claim that lets one process at a time mirror a
//! tenant. Each target implements [`Server`] in its own folder; partner mode matches on none.

use crate::db::SinkError;

/// A held claim on a tenant: released when dropped, and by the server (or the operating
/// system) when the holder's connection or process ends, however it ends.
pub trait Held: Send {}

/// The server every tenant's database is on.
pub trait Server: Send + Sync {
    /// The connection string of database `name` on this server.
    fn connection_string(&self, name: &str) -> Result<String, SinkError>;

    /// Creates database `name` when it does not exist; returns whether it did that.
    fn ensure_database(&self, name: &str) -> Result<bool, SinkError>;

    /// The names of the databases on the server.
    fn databases(&self) -> Result<Vec<String>, SinkError>;

    /// Checks, changing nothing, that the login may create databases; says what it checked.
    fn check_rights(&self) -> Result<String, SinkError>;

    /// Takes the claim `name` when no other process holds it (`None` then).
    fn try_claim(&self, name: &str) -> Result<Option<Box<dyn Held>>, SinkError>;
}

/// The server a server-level connection string names (`Data Source=<folder>` for one SQLite
/// file per database).
pub fn open(connection_string: &str) -> Result<Box<dyn Server>, SinkError> {
    Ok(match super::TargetKind::detect(connection_string)? {
        super::TargetKind::Sqlite => Box::new(super::sqlite::server::Folder::new(connection_string)?),
        super::TargetKind::Postgres => Box::new(super::postgres::server::PgServer::new(connection_string)),
        super::TargetKind::SqlServer => Box::new(super::mssql::server::MssqlServer::new(connection_string)?),
    })
}
