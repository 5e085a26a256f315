//! What every replica database shares, below both the data sink and the state store: the
//! error a database operation reports and whether waiting can help ([`Retry`]). Driver
//! error codes are classified here, once, so every caller retries the same conditions.

use crate::schema::TableId;

/// Whether an operation that failed with an error may succeed if tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A passing condition: back off and try again.
    Transient,
    /// Trying again gives the same result; a person must act.
    Fatal,
}

/// A failed sink operation.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The embedded SQLite database reported an error.
    #[error("sqlite: {context}: {source}")]
    Sqlite {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The PostgreSQL replica reported an error.
    #[error("postgres: {context}: {source}")]
    Postgres {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: ::postgres::Error,
    },
    /// The SQL Server replica reported an error.
    #[error("sql server: {context}: {source}")]
    Mssql {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: tiberius::error::Error,
    },
    /// Reading or writing the stream to the database failed (network, COPY data).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The connection string is not usable.
    #[error("connection string: {0}")]
    ConnectionString(String),
    /// An owner's hook failed and is configured to hold replication (`OnFailure: Stop`).
    #[error("{hook} failed: {reason}")]
    Hook {
        /// Which hook (event and table).
        hook: String,
        /// Its error and output.
        reason: String,
    },
    /// Another run took the replica's writer epoch after this one (or the database was
    /// restored to before it): nothing was written, and this run must end (see
    /// [`crate::state::fence`]).
    #[error("{}", superseded(*ours, *stored, holder))]
    Superseded {
        /// The epoch this run took.
        ours: i64,
        /// The epoch the replica holds now (`None`: no writer row, e.g. a restored backup).
        stored: Option<i64>,
        /// Who took the stored epoch.
        holder: String,
    },
    /// A batch refers to a table the replica does not have, or with another schema.
    #[error("table {table}: {reason}")]
    Table {
        /// The source table.
        table: TableId,
        /// Why.
        reason: String,
    },
}

impl SinkError {
    /// Whether retrying the same operation later may succeed.
    pub fn retry(&self) -> Retry {
        match self {
            SinkError::Sqlite { source: rusqlite::Error::SqliteFailure(e, _), .. }
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::SystemIoFailure
                        | rusqlite::ErrorCode::DiskFull
                ) =>
            {
                Retry::Transient
            }
            SinkError::Postgres { context, source } if context.starts_with(CONNECTING) => {
                postgres_connect_retry(source)
            }
            SinkError::Postgres { source, .. } => postgres_retry(source),
            SinkError::Mssql { source, .. } => mssql_retry(source),
            SinkError::Io { .. } => Retry::Transient,
            _ => Retry::Fatal,
        }
    }
}

fn superseded(ours: i64, stored: Option<i64>, holder: &str) -> String {
    let now = match stored {
        Some(epoch) if holder.is_empty() => format!("writer epoch {epoch}"),
        Some(epoch) => format!("writer epoch {epoch}, taken by {holder}"),
        None => "no writer epoch".to_owned(),
    };
    format!(
        "this process no longer writes the replica: it holds {now}, this run took {ours} \
         (another process took the replica over, or the database was restored); nothing was written"
    )
}

/// The context of a failed connection attempt (the PostgreSQL target names it so).
pub const CONNECTING: &str = "connecting";

/// Whether a failed connection attempt is worth repeating: yes, unless the server refused who
/// we are or what we asked for (a wrong password, a missing database or right), which needs a
/// person. A server starting, stopping, full, or closed for maintenance (`ALLOW_CONNECTIONS
/// false`) lets us in later.
fn postgres_connect_retry(error: &::postgres::Error) -> Retry {
    use ::postgres::error::SqlState;
    match error.code() {
        Some(code) if code.code().starts_with("28") => Retry::Fatal,
        Some(code) if [SqlState::INVALID_CATALOG_NAME, SqlState::INSUFFICIENT_PRIVILEGE].contains(code) => Retry::Fatal,
        _ => Retry::Transient,
    }
}

/// Whether waiting and retrying can help: lost connections, lock conflicts, server restarts.
fn postgres_retry(error: &::postgres::Error) -> Retry {
    use ::postgres::error::SqlState;
    let transient = [
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::LOCK_NOT_AVAILABLE,
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::DISK_FULL,
        SqlState::QUERY_CANCELED,
    ];
    match error.code() {
        None if error.is_closed() || error.as_db_error().is_none() => Retry::Transient,
        Some(code) if transient.contains(code) => Retry::Transient,
        _ => Retry::Fatal,
    }
}

/// Whether waiting and retrying can help: lost connections, deadlocks, lock timeouts,
/// failovers and Azure SQL's throttling codes.
fn mssql_retry(error: &tiberius::error::Error) -> Retry {
    use tiberius::error::Error as E;
    const TRANSIENT: &[u32] = &[1205, 1222, 4060, 40197, 40501, 40613, 49918, 49919, 49920, 10928, 10929, 233, 64];
    match error {
        E::Io { .. } | E::Routing { .. } | E::Tls(_) => Retry::Transient,
        E::Server(token) if TRANSIENT.contains(&token.code()) => Retry::Transient,
        _ => Retry::Fatal,
    }
}
