//! Stage 4: writing batches and schema changes into the replica.
//!
//! # The sink contract
//!
//! - [`Sink::apply`] writes one [`Batch`] in **one transaction**: for each table, clear it if
//!   the batch truncated it, then every delete, then every upsert (deletes first, so two keys
//!   that differ to the coalescer but are equal under the target's collation still end right),
//!   and the batch's offsets in `_ReplicationState`. Either all of it commits or none of it.
//! - Replaying a batch changes nothing: upserts and deletes are by primary key, and offsets are
//!   stored as the maximum of the stored and the new value, so progress only moves forward.
//! - On error nothing is committed; the caller retries the same batch ([`SinkError::retry`]
//!   says whether waiting can help) and never advances its own position past it.
//! - [`Sink::apply_schema`] brings one table in line with a schema-history change, in its own
//!   transaction, before any batch that uses the new schema.

pub mod mssql;
pub mod sqlite;
pub mod worker;

use crate::coalesce::Batch;
use crate::error::Retry;
use crate::schema::{TableChange, TableId};
use crate::state::Offsets;

/// What a schema change did to the replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaOutcome {
    /// A new table was created; its snapshot is expected.
    Created,
    /// Nullable columns were added in place.
    Altered {
        /// The added columns.
        added: Vec<String>,
    },
    /// Incompatible change: dropped and re-created, marked for a fresh snapshot.
    Recreated,
    /// The source table is gone, and so is the replica table.
    Dropped,
    /// Nothing the replica depends on changed.
    Unchanged,
    /// Blocked or on the user's skip list: not replicated.
    Skipped,
}

/// A failed sink operation.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The embedded SQLite database reported an error.
    #[error("sqlite: {context}")]
    Sqlite {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The connection string is not usable.
    #[error("connection string: {0}")]
    ConnectionString(String),
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
            _ => Retry::Fatal,
        }
    }
}

/// A replica database.
pub trait Sink {
    /// Applies one table's schema change (see the module docs).
    fn apply_schema(&mut self, change: &TableChange) -> Result<SchemaOutcome, SinkError>;

    /// Writes a batch and its offsets in one transaction (see the module docs).
    fn apply(&mut self, batch: &Batch) -> Result<(), SinkError>;

    /// The committed offsets.
    fn offsets(&mut self) -> Result<Offsets, SinkError>;
}
