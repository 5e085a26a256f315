//! One process at a time mirrors a tenant, across processes and hosts, with the database
//! server as the only coordinator: a worker takes a tenant's claim before a pass and holds it
//! to the end. PostgreSQL: a session advisory lock; SQL Server: a session `sp_getapplock`;
//! both released by the server as soon as the holder's connection ends. SQLite: an OS file
//! lock beside the tenant's file (one host, or hosts sharing a local file system).

use super::databases::Databases;
use crate::db::SinkError;
use crate::sink::TargetKind;

/// A held claim; dropping it releases the tenant.
pub enum Claim {
    /// The lock file's handle.
    File(#[allow(dead_code)] std::fs::File),
    /// The advisory lock's connection.
    Postgres(#[allow(dead_code)] Box<crate::sink::postgres::server::Claim>),
    /// The application lock's connection.
    SqlServer(#[allow(dead_code)] Box<crate::sink::mssql::MssqlSink>),
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Claim")
    }
}

/// Takes tenant `ctx`'s claim if no other process holds it (`None` then).
pub fn try_claim(databases: &Databases, ctx: &str) -> Result<Option<Claim>, SinkError> {
    let name = databases.name(ctx)?;
    match databases.kind() {
        TargetKind::Sqlite => {
            let folder = databases.folder().unwrap_or_default();
            std::fs::create_dir_all(&folder)
                .map_err(|source| SinkError::Io { context: format!("creating {}", folder.display()), source })?;
            let path = folder.join(format!("{name}.lock"));
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|source| SinkError::Io { context: format!("opening {}", path.display()), source })?;
            match file.try_lock() {
                Ok(()) => Ok(Some(Claim::File(file))),
                Err(std::fs::TryLockError::WouldBlock) => Ok(None),
                Err(std::fs::TryLockError::Error(source)) => {
                    Err(SinkError::Io { context: format!("locking {}", path.display()), source })
                }
            }
        }
        TargetKind::Postgres => {
            Ok(crate::sink::postgres::server::try_claim(databases.server(), &name)?
                .map(|c| Claim::Postgres(Box::new(c))))
        }
        TargetKind::SqlServer => {
            let mut server = crate::sink::mssql::MssqlSink::open(databases.server(), Default::default())?;
            // A refusal and a lost connection look alike here; either way this process does
            // not hold the tenant, and the next round tries again.
            match server.execute_batch(&crate::sink::mssql::sql::claim(&format!("dbmirror-partner:{name}"))) {
                Ok(()) => Ok(Some(Claim::SqlServer(Box::new(server)))),
                Err(e) => {
                    tracing::debug!(tenant = ctx, error = %e, "not claimed");
                    Ok(None)
                }
            }
        }
    }
}
