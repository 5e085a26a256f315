//! Server-level work on SQL Server for partner mode (see [`crate::sink::server`]): creating a
//! tenant's database, listing them, the login's rights, and a session `sp_getapplock` that
//! makes one process at a time mirror a tenant. Every statement runs on a connection of its
//! own to the database the server's connection string names (often `master`), which is never
//! treated as a replica: nothing is created in it.

use tiberius::Config;

use super::{Conn, connect, err, exec, sql};
use crate::db::SinkError;
use crate::sink::server::{Held, Server};

/// A SQL Server, by an ADO connection string.
pub struct MssqlServer {
    connection_string: String,
    config: Config,
}

impl std::fmt::Debug for MssqlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MssqlServer").field("server", &self.config.get_addr()).finish_non_exhaustive()
    }
}

/// A connection holding an application lock, with the runtime that drives it.
struct AppLock {
    _runtime: tokio::runtime::Runtime,
    _client: Conn,
}

impl Held for AppLock {}

impl MssqlServer {
    /// The server `connection_string` reaches.
    pub fn new(connection_string: &str) -> Result<Self, SinkError> {
        let config = Config::from_ado_string(connection_string)
            .map_err(|e| SinkError::ConnectionString(format!("SQL Server: {e}")))?;
        Ok(MssqlServer { connection_string: connection_string.to_owned(), config })
    }

    /// A fresh connection and the runtime to drive it.
    fn connect(&self) -> Result<(tokio::runtime::Runtime, Conn), SinkError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| SinkError::Io { context: "starting the SQL Server driver".into(), source })?;
        let client = runtime.block_on(connect(&self.config))?;
        Ok((runtime, client))
    }

    fn run(&self, statements: &str, context: &str) -> Result<(), SinkError> {
        let (runtime, mut client) = self.connect()?;
        runtime.block_on(exec(&mut client, statements, context))
    }
}

impl Server for MssqlServer {
    fn connection_string(&self, name: &str) -> Result<String, SinkError> {
        Ok(with_ado_key(&self.connection_string, "Database", name))
    }

    fn ensure_database(&self, name: &str) -> Result<bool, SinkError> {
        let (runtime, mut client) = self.connect()?;
        let existed = runtime.block_on(async {
            let rows = client
                .query(sql::DATABASE_EXISTS, &[&name])
                .await
                .map_err(err("looking for the database"))?
                .into_first_result()
                .await
                .map_err(err("looking for the database"))?;
            Ok::<_, SinkError>(!rows.is_empty())
        })?;
        if existed {
            return Ok(false);
        }
        runtime.block_on(exec(&mut client, &sql::create_database(name), "creating the database"))?;
        Ok(true)
    }

    fn databases(&self) -> Result<Vec<String>, SinkError> {
        let (runtime, mut client) = self.connect()?;
        runtime.block_on(async {
            let rows = client
                .simple_query(sql::LIST_DATABASES)
                .await
                .map_err(err("listing databases"))?
                .into_first_result()
                .await
                .map_err(err("listing databases"))?;
            Ok(rows.iter().filter_map(|r| r.get::<&str, _>(0).map(str::to_owned)).collect())
        })
    }

    fn check_rights(&self) -> Result<String, SinkError> {
        self.run(&sql::check_create_database(), "checking the login's rights")?;
        Ok("the login may create databases (CREATE ANY DATABASE)".into())
    }

    fn try_claim(&self, name: &str) -> Result<Option<Box<dyn Held>>, SinkError> {
        let (runtime, mut client) = self.connect()?;
        // A refusal ends the batch with an error: this process does not hold the tenant, and
        // the next round tries again.
        match runtime.block_on(exec(&mut client, &sql::claim(&format!("dbmirror-partner:{name}")), "claiming")) {
            Ok(()) => Ok(Some(Box::new(AppLock { _runtime: runtime, _client: client }))),
            Err(e) => {
                tracing::debug!(claim = name, error = %e, "not claimed");
                Ok(None)
            }
        }
    }
}

/// An ADO-style connection string with `key` set to `value` (replaced or added; `Database`
/// also replaces `Initial Catalog`).
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
