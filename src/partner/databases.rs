//! Where each tenant's mirror lives: one database per tenant on the partner's server, named
//! by a pattern (`Mirror_{contextId}` by default, as the original service names them), or one
//! SQLite file per tenant in a folder. Databases are created when missing.

use std::path::PathBuf;

use crate::db::SinkError;
use crate::sink::TargetKind;

/// The placeholder of the tenant's context id in `Partner.DatabaseName`.
pub const CONTEXT_ID: &str = "{contextId}";

/// The default database name pattern: the original service's.
pub const DEFAULT_PATTERN: &str = "Mirror_{contextId}";

/// The partner's server and how its tenants' databases are named.
#[derive(Clone)]
pub struct Databases {
    server: String,
    kind: TargetKind,
    pattern: String,
}

impl std::fmt::Debug for Databases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Databases").field("kind", &self.kind).field("pattern", &self.pattern).finish_non_exhaustive()
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
        Ok(Databases { server: server.to_owned(), kind: TargetKind::detect(server)?, pattern: pattern.to_owned() })
    }

    /// The target kind of every tenant's database.
    pub fn kind(&self) -> TargetKind {
        self.kind
    }

    /// The server-level connection string.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// A tenant's database name. Context ids are letters, digits, `-` and `_`; anything else
    /// is refused rather than quoted into a name.
    pub fn name(&self, ctx: &str) -> Result<String, SinkError> {
        if ctx.is_empty() || !ctx.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(bad(format!("`{ctx}` is not a tenant context id")));
        }
        Ok(self.pattern.replace(CONTEXT_ID, ctx))
    }

    /// The SQLite folder (SQLite partners only).
    pub fn folder(&self) -> Option<PathBuf> {
        match self.kind {
            TargetKind::Sqlite => crate::sink::sqlite::parse_connection_string(&self.server).ok().map(PathBuf::from),
            _ => None,
        }
    }

    /// The connection string of a tenant's database.
    pub fn connection_string(&self, ctx: &str) -> Result<String, SinkError> {
        let name = self.name(ctx)?;
        Ok(match self.kind {
            TargetKind::Sqlite => {
                let folder = self.folder().ok_or_else(|| bad("Partner.ServerConnectionString: no SQLite folder"))?;
                format!("Data Source={}", folder.join(format!("{name}.db")).display())
            }
            TargetKind::Postgres => with_postgres_database(&self.server, &name),
            TargetKind::SqlServer => with_ado_key(&self.server, "Database", &name),
        })
    }

    /// Checks that the login may create the tenants' databases (`validate`), changing
    /// nothing; says what it checked.
    pub fn check_rights(&self) -> Result<String, SinkError> {
        match self.kind {
            TargetKind::Sqlite => {
                let folder = self.folder().ok_or_else(|| bad("Partner.ServerConnectionString: no SQLite folder"))?;
                let io = |source| SinkError::Io { context: format!("writing in {}", folder.display()), source };
                std::fs::create_dir_all(&folder).map_err(io)?;
                let probe = folder.join(".dbmirror-probe");
                std::fs::write(&probe, b"probe").map_err(io)?;
                std::fs::remove_file(&probe).map_err(io)?;
                Ok(format!("may create tenants' files in {}", folder.display()))
            }
            TargetKind::Postgres => {
                if crate::sink::postgres::server::may_create_databases(&self.server)? {
                    Ok("the login may create databases".into())
                } else {
                    Err(bad("the login may not create databases: grant it CREATEDB (ALTER ROLE … CREATEDB)"))
                }
            }
            TargetKind::SqlServer => {
                let mut server = crate::sink::mssql::MssqlSink::open(&self.server, Default::default())?;
                server.execute_batch(&crate::sink::mssql::sql::check_create_database())?;
                Ok("the login may create databases (CREATE ANY DATABASE)".into())
            }
        }
    }

    /// Creates a tenant's database when it does not exist; returns whether it did that.
    pub fn ensure(&self, ctx: &str) -> Result<bool, SinkError> {
        let name = self.name(ctx)?;
        match self.kind {
            TargetKind::Sqlite => {
                let folder = self.folder().ok_or_else(|| bad("Partner.ServerConnectionString: no SQLite folder"))?;
                std::fs::create_dir_all(&folder)
                    .map_err(|source| SinkError::Io { context: format!("creating {}", folder.display()), source })?;
                Ok(!folder.join(format!("{name}.db")).exists())
            }
            TargetKind::Postgres => crate::sink::postgres::server::create_database(&self.server, &name),
            TargetKind::SqlServer => {
                let mut server = crate::sink::mssql::MssqlSink::open(&self.server, Default::default())?;
                server.execute_batch(&crate::sink::mssql::sql::create_database(&name))?;
                Ok(false)
            }
        }
    }
}

impl Databases {
    /// The tenants whose databases exist on the server (found by the name pattern), sorted.
    pub fn existing(&self) -> Result<Vec<String>, SinkError> {
        let (prefix, suffix) = self.pattern.split_once(CONTEXT_ID).unwrap_or((&self.pattern, ""));
        let names: Vec<String> = match self.kind {
            TargetKind::Sqlite => {
                let folder = self.folder().unwrap_or_default();
                match std::fs::read_dir(&folder) {
                    Ok(entries) => entries
                        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".db").map(str::to_owned))
                        .collect(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                    Err(source) => {
                        return Err(SinkError::Io { context: format!("listing {}", folder.display()), source });
                    }
                }
            }
            TargetKind::Postgres => crate::sink::postgres::server::databases(&self.server)?,
            TargetKind::SqlServer => {
                return Err(bad("listing the tenants' databases is not built for SQL Server: use `--tenant <ctx>`"));
            }
        };
        let mut tenants: Vec<String> = names
            .iter()
            .filter_map(|n| n.strip_prefix(prefix)?.strip_suffix(suffix))
            .filter(|ctx| self.name(ctx).is_ok())
            .map(str::to_owned)
            .collect();
        tenants.sort();
        Ok(tenants)
    }
}

/// A PostgreSQL connection string naming database `name`: a URL's path, or a key-value
/// string's `dbname` (replaced or added).
pub fn with_postgres_database(server: &str, name: &str) -> String {
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

/// An ADO-style connection string with `key` set to `value` (replaced or added).
pub fn with_ado_key(server: &str, key: &str, value: &str) -> String {
    let mut parts: Vec<String> = server
        .split(';')
        .filter(|p| !p.trim().is_empty())
        .filter(|p| {
            let k = p.split_once('=').map_or("", |(k, _)| k).trim().to_ascii_lowercase();
            k != key.to_ascii_lowercase() && !(key.eq_ignore_ascii_case("database") && k == "initial catalog")
        })
        .map(str::to_owned)
        .collect();
    parts.push(format!("{key}={value}"));
    parts.join(";")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_get_their_own_database_on_the_partners_server() {
        let pg = Databases::new("host=127.0.0.1 user=dbm dbname=postgres", DEFAULT_PATTERN).unwrap();
        assert_eq!(pg.connection_string("cust1").unwrap(), "host=127.0.0.1 user=dbm dbname=Mirror_cust1");
        assert_eq!(
            with_postgres_database("postgres://u:p@h:5432/postgres?sslmode=require", "Mirror_x"),
            "postgres://u:p@h:5432/Mirror_x?sslmode=require"
        );
        let ms =
            Databases::new("Server=tcp:db,1433;Initial Catalog=master;User Id=sa;Password=x", DEFAULT_PATTERN).unwrap();
        assert_eq!(ms.connection_string("c9").unwrap(), "Server=tcp:db,1433;User Id=sa;Password=x;Database=Mirror_c9");
        let lite = Databases::new("Data Source=mirrors", "M_{contextId}").unwrap();
        assert_eq!(
            lite.connection_string("a-b").unwrap(),
            format!("Data Source={}", PathBuf::from("mirrors").join("M_a-b.db").display())
        );
        assert!(lite.name("x;DROP").is_err());
        assert!(Databases::new("Data Source=mirrors", "Mirror").is_err());
    }
}
