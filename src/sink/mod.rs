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

pub mod ddl;
pub mod hooks;
#[cfg(any(test, feature = "testkit"))]
pub mod memory;
pub mod mssql;
pub mod plan;
pub mod postgres;
pub mod projecting;
pub mod refused;
pub mod retaining;
pub mod server;
pub mod shadow;
pub mod soft;
pub mod sqlite;
pub mod worker;

use crate::coalesce::Batch;
pub use crate::db::{Retry, SinkError};
use crate::schema::{TableChange, TableId};
use crate::state::StateStore;
pub use crate::state::TableRecord;
pub use plan::{Intent, SinkOptions};

/// A row read back from a replica in [`canonical`] text form (`None` is SQL `NULL`).
pub type CanonicalRow = Vec<Option<String>>;

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
    /// The replica cannot hold the table: it is left out (see [`crate::state::TableState::Failed`]).
    Failed,
    /// A table of the same name and columns was already there (a legacy mirror's): it is
    /// kept for readers and reloaded through a shadow (see [`crate::state::TableState::Adopting`]).
    Adopted,
}

/// The data path of a replica: schema changes, batches and the resync swap.
pub trait Sink {
    /// Carries out one table's schema change for `intent`: what [`Sink::apply_schema`] and
    /// [`Sink::mark_failed`] do. Targets implement this through [`ddl::apply_schema`].
    fn change_schema(&mut self, change: &TableChange, intent: &Intent) -> Result<SchemaOutcome, SinkError>;

    /// Applies one table's schema change (see the module docs).
    fn apply_schema(&mut self, change: &TableChange) -> Result<SchemaOutcome, SinkError> {
        self.change_schema(change, &Intent::Follow)
    }

    /// Leaves out a table the replica cannot hold, for `reason`: what exists of it is dropped
    /// and it is recorded failed with the reason, in one transaction.
    fn mark_failed(&mut self, change: &TableChange, reason: String) -> Result<(), SinkError> {
        self.change_schema(change, &Intent::Fail(reason)).map(|_| ())
    }

    /// Writes a batch and its offsets in one transaction (see the module docs).
    fn apply(&mut self, batch: &Batch) -> Result<(), SinkError>;

    /// Ends a resync in one transaction: the live table's rows are replaced by its shadow's,
    /// the shadow is dropped and forgotten, and the table is `ready` (see [`shadow`]).
    fn replace_from_shadow(&mut self, id: &TableId) -> Result<(), SinkError>;

    /// Runs an owner's SQL (a hook, see [`crate::owner::hooks`]) in the replica: in a transaction of its
    /// own where the target allows a script in one.
    fn run_script(&mut self, sql: &str) -> Result<(), SinkError>;

    /// The replica's name of a replicated table as its SQL spells it (quoted, qualified),
    /// for hooks' `{table}`; `None` when the replica does not have the table.
    fn target_name(&self, id: &TableId) -> Option<String>;

    /// Brings the tables of the owner's own in line before the first batch (a history table
    /// for a table switched to `History`), so no batch ever waits for DDL.
    fn prepare(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Tables whose layout in the replica no longer follows the owner's column rules (they
    /// changed since the table was created): `sync` re-creates and reloads them.
    fn layout_changed(&mut self) -> Result<Vec<TableId>, SinkError> {
        Ok(Vec::new())
    }

    /// Keeps a replicated table under `new_name` (same schema) and forgets it, in one
    /// transaction: it is never written or dropped again (a history table whose layout can no
    /// longer follow its source, see [`crate::owner::modes::layout`]).
    fn retire_table(&mut self, id: &TableId, new_name: &str) -> Result<(), SinkError>;
}

/// Reading a replica back, for `verify`, `status` and `validate` (never on the data path).
pub trait ReplicaRead {
    /// Every row of a replicated table in canonical form, in no particular order: what
    /// `verify` and the cross-target tests compare with the source.
    fn read_rows(&mut self, id: &TableId) -> Result<Vec<CanonicalRow>, SinkError>;

    /// The number of rows of a replicated table (`status`); targets count in the database.
    fn count_rows(&mut self, id: &TableId) -> Result<u64, SinkError> {
        Ok(self.read_rows(id)?.len() as u64)
    }

    /// Proves the login may create, fill and drop tables (what `sync` needs), in a transaction
    /// that is rolled back: `validate` changes nothing.
    fn check_writable(&mut self) -> Result<(), SinkError>;
}

/// A whole replica database: its data path, its bookkeeping and its read-back. Every target
/// implements the three; callers hold the narrowest one they need.
pub trait Replica: Sink + StateStore + ReplicaRead + Send {}

impl<T: Sink + StateStore + ReplicaRead + Send + ?Sized> Replica for T {}

impl<T: Sink + ?Sized> Sink for Box<T> {
    fn change_schema(&mut self, change: &TableChange, intent: &Intent) -> Result<SchemaOutcome, SinkError> {
        (**self).change_schema(change, intent)
    }
    fn apply(&mut self, batch: &Batch) -> Result<(), SinkError> {
        (**self).apply(batch)
    }
    fn replace_from_shadow(&mut self, id: &TableId) -> Result<(), SinkError> {
        (**self).replace_from_shadow(id)
    }
    fn run_script(&mut self, sql: &str) -> Result<(), SinkError> {
        (**self).run_script(sql)
    }
    fn target_name(&self, id: &TableId) -> Option<String> {
        (**self).target_name(id)
    }
    fn prepare(&mut self) -> Result<(), SinkError> {
        (**self).prepare()
    }
    fn layout_changed(&mut self) -> Result<Vec<TableId>, SinkError> {
        (**self).layout_changed()
    }
    fn retire_table(&mut self, id: &TableId, new_name: &str) -> Result<(), SinkError> {
        (**self).retire_table(id, new_name)
    }
}

impl<T: ReplicaRead + ?Sized> ReplicaRead for Box<T> {
    fn read_rows(&mut self, id: &TableId) -> Result<Vec<CanonicalRow>, SinkError> {
        (**self).read_rows(id)
    }
    fn count_rows(&mut self, id: &TableId) -> Result<u64, SinkError> {
        (**self).count_rows(id)
    }
    fn check_writable(&mut self) -> Result<(), SinkError> {
        (**self).check_writable()
    }
}

pub(crate) fn missing(id: &TableId) -> SinkError {
    SinkError::Table { table: id.clone(), reason: "not in the replica".into() }
}

/// The statements of [`Sink::check_writable`] (to run inside a transaction that is rolled
/// back), for a table name quoted by the target.
pub fn probe_sql(table: &str) -> String {
    format!("CREATE TABLE {table} (x int PRIMARY KEY); INSERT INTO {table} (x) VALUES (1); DROP TABLE {table}")
}

/// Implements `StateStore` for one of the owner's wrappers (`Projecting`, `Retaining`) by
/// handing every call to its `inner` replica: they change the data path, never the
/// bookkeeping — except how a table's record looks from above, which the wrapper's own
/// `record_above` says (`None`: a table of the owner's own, hidden from above).
macro_rules! state_store_via_inner {
    ($wrapper:ty) => {
        impl $crate::state::StateStore for $wrapper {
            fn all_records(&self) -> Vec<$crate::state::TableRecord> {
                self.inner.all_records().into_iter().filter_map(|r| self.record_above(r)).collect()
            }
            fn table(&self, id: &$crate::schema::TableId) -> Option<$crate::state::TableRecord> {
                self.inner.table(id).and_then(|record| self.record_above(record))
            }
            fn offset_rows(&mut self) -> Result<$crate::state::Offsets, $crate::db::SinkError> {
                self.inner.offset_rows()
            }
            fn set_table_state(
                &mut self,
                id: &$crate::schema::TableId,
                state: $crate::state::TableState,
            ) -> Result<(), $crate::db::SinkError> {
                self.inner.set_table_state(id, state)
            }
            fn write_facts(
                &mut self,
                facts: &[(&str, $crate::state::SessionValue)],
            ) -> Result<(), $crate::db::SinkError> {
                self.inner.write_facts(facts)
            }
            fn read_facts(&mut self) -> Result<$crate::state::Session, $crate::db::SinkError> {
                self.inner.read_facts()
            }
            fn claim_writer(&mut self, holder: &str) -> Result<$crate::state::fence::Fence, $crate::db::SinkError> {
                self.inner.claim_writer(holder)
            }
            fn hold_fence(&mut self, fence: $crate::state::fence::Fence) {
                self.inner.hold_fence(fence)
            }
            fn write_refused(
                &mut self,
                refused: &[$crate::state::refused::Refusal],
                progress: (&$crate::state::Offsets, Option<u64>),
            ) -> Result<(), $crate::db::SinkError> {
                self.inner.write_refused(refused, progress)
            }
            fn read_refused(&mut self) -> Result<Vec<$crate::state::refused::RefusedRow>, $crate::db::SinkError> {
                self.inner.read_refused()
            }
            fn delete_refused(&mut self, ids: &[i64]) -> Result<(), $crate::db::SinkError> {
                self.inner.delete_refused(ids)
            }
        }
    };
}
pub(crate) use state_store_via_inner;

/// Inside `impl Sink for` one of the owner's wrappers: the methods it hands to its `inner`
/// replica unchanged (the swap, the owner's SQL, names, retiring a table).
macro_rules! sink_via_inner {
    () => {
        fn replace_from_shadow(&mut self, id: &$crate::schema::TableId) -> Result<(), $crate::db::SinkError> {
            self.inner.replace_from_shadow(id)
        }
        fn run_script(&mut self, sql: &str) -> Result<(), $crate::db::SinkError> {
            self.inner.run_script(sql)
        }
        fn target_name(&self, id: &$crate::schema::TableId) -> Option<String> {
            self.inner.target_name(id)
        }
        fn retire_table(&mut self, id: &$crate::schema::TableId, new_name: &str) -> Result<(), $crate::db::SinkError> {
            self.inner.retire_table(id, new_name)
        }
    };
}
pub(crate) use sink_via_inner;

/// Which target a connection string names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// The embedded default.
    Sqlite,
    /// PostgreSQL.
    Postgres,
    /// SQL Server, the product's target.
    SqlServer,
}

/// Keys only SQL Server connection strings use; with any of them, `Data Source` is a server.
const SQL_SERVER_KEYS: &[&str] = &[
    "server",
    "address",
    "addr",
    "network address",
    "initial catalog",
    "database",
    "user id",
    "uid",
    "user",
    "password",
    "pwd",
    "integrated security",
    "trusted_connection",
    "encrypt",
    "trustservercertificate",
    "application name",
];

/// File name endings that make a `Data Source` a SQLite file.
const SQLITE_FILES: &[&str] = &[".db", ".sqlite", ".sqlite3", ".db3"];

impl TargetKind {
    /// Decides from the connection string: `postgres://`, `postgresql://` or `host=…` is
    /// PostgreSQL; `sqlite://…`, a `Data Source` file ending `.db`, `.sqlite`, `.sqlite3` or
    /// `.db3`, or a `Data Source=…` with no SQL Server keys is SQLite; any other ADO-style
    /// string is SQL Server.
    pub fn detect(connection_string: &str) -> Result<Self, SinkError> {
        let conn = connection_string.trim();
        let lower = conn.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") || lower.starts_with("host=") {
            return Ok(TargetKind::Postgres);
        }
        if lower.starts_with("sqlite://") {
            return Ok(TargetKind::Sqlite);
        }
        let keys: Vec<String> =
            lower.split(';').filter_map(|part| part.split_once('=')).map(|(k, _)| k.trim().to_owned()).collect();
        if keys.is_empty() {
            return Err(SinkError::ConnectionString(
                "expected `Data Source=replica.db` (SQLite), `Server=…;Database=…` (SQL Server) or `postgres://…`"
                    .into(),
            ));
        }
        // A file named as SQLite names it is SQLite, whatever else the string holds.
        if sqlite::data_source(&lower).is_some_and(|file| SQLITE_FILES.iter().any(|ext| file.ends_with(ext))) {
            return Ok(TargetKind::Sqlite);
        }
        if keys.iter().any(|k| SQL_SERVER_KEYS.contains(&k.as_str())) {
            Ok(TargetKind::SqlServer)
        } else {
            Ok(TargetKind::Sqlite)
        }
    }
}

/// Opens the replica a connection string names (`ReplicaDatabase.ConnectionString`).
pub fn open(connection_string: &str, options: SinkOptions) -> Result<Box<dyn Replica>, SinkError> {
    let owner = options.owner.clone();
    let replica: Box<dyn Replica> = match TargetKind::detect(connection_string)? {
        TargetKind::Sqlite => Box::new(sqlite::SqliteSink::open(connection_string, options)?),
        TargetKind::Postgres => Box::new(postgres::PgSink::open(connection_string, options)?),
        TargetKind::SqlServer => Box::new(mssql::MssqlSink::open(connection_string, options)?),
    };
    wrap(replica, owner)
}

/// A target seen through the owner's delete modes and column rules (each wrapper only when
/// it has something to do, so with no rules a batch reaches the target untouched): the column
/// rules project rows first, the modes then lay the projected rows out, so a history never
/// holds a column the rules keep out.
pub fn wrap(
    replica: Box<dyn Replica>,
    owner: std::sync::Arc<crate::owner::OwnerRules>,
) -> Result<Box<dyn Replica>, SinkError> {
    let replica: Box<dyn Replica> =
        if owner.modes.all_hard() { replica } else { Box::new(retaining::Retaining::new(replica, owner.clone())) };
    Ok(if owner.columns.is_empty() { replica } else { Box::new(projecting::Projecting::new(replica, owner)?) })
}

#[cfg(test)]
mod tests {
    use super::TargetKind::*;
    use super::*;

    #[test]
    fn connection_strings_choose_the_target() {
        assert_eq!(TargetKind::detect("Data Source=replica.db").unwrap(), Sqlite);
        assert_eq!(TargetKind::detect("sqlite://replica.db").unwrap(), Sqlite);
        assert_eq!(TargetKind::detect("postgres://u:p@127.0.0.1/db").unwrap(), Postgres);
        assert_eq!(TargetKind::detect("host=127.0.0.1 dbname=x").unwrap(), Postgres);
        assert_eq!(TargetKind::detect("Server=tcp:db,1433;Database=crm;User Id=sa;Password=x").unwrap(), SqlServer);
        assert_eq!(
            TargetKind::detect("Data Source=db01;Initial Catalog=crm;Integrated Security=true").unwrap(),
            SqlServer
        );
        assert!(TargetKind::detect("replica.db").is_err());
        assert_eq!(TargetKind::detect("Data Source=x.db;Password=p").unwrap(), Sqlite);
        assert_eq!(TargetKind::detect("Data Source=db01\\sql;User Id=sa;Password=p").unwrap(), SqlServer);
    }
}
