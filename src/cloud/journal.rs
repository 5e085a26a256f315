//! Everything that changes a simulated tenant's data, as replayable operations.
//!
//! The generator is deterministic, so a tenant's ground truth is its seed plus the sequence of
//! operations applied to it. With a data directory each operation is appended to
//! `journal.jsonl` before it runs; after a restart the tenant is rebuilt by replaying the
//! journal (against a scratch log: the durable log already holds what was published), so the
//! ground truth `verify` compares against stays right across restarts.

use crate::protocol::ErrorCode;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use super::error::ApiError;
use super::log::EventLog;
use super::tenant::{Tenant, Workload};
use crate::schema::{ColumnSchema, SqlType, TableId, TableSchema};

/// One change to a tenant's data or schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum TenantOp {
    /// `count` random inserts, updates and deletes.
    Change {
        /// How many.
        count: usize,
    },
    /// A new table (a copy of the first table's shape) with `rows` rows.
    NewTable {
        /// `schema.table`.
        table: String,
        /// Rows in its snapshot.
        rows: u64,
        /// Nullable `nvarchar(200)` columns appended to the copied shape: a table wider than
        /// a replica can hold (SQLite: 2,000 columns; PostgreSQL: 1,600).
        #[serde(default, skip_serializing_if = "is_zero")]
        extra_columns: usize,
    },
    /// A nullable `nvarchar(200)` column appended.
    AddColumn {
        /// `schema.table`.
        table: String,
        /// The new column.
        column: String,
    },
    /// The table dropped and re-created with a changed column type.
    IncompatibleChange {
        /// `schema.table`.
        table: String,
    },
    /// A column changed in place to an incompatible type (`ALTER`, no snapshot published).
    IncompatibleAlter {
        /// `schema.table`.
        table: String,
    },
    /// The table dropped at the source.
    DropTable {
        /// `schema.table`.
        table: String,
    },
    /// The source database restored from an older backup; everything re-snapshotted.
    Restore,
}

/// Parses `schema.table`.
pub fn table_id(text: &str) -> Result<TableId, ApiError> {
    TableId::parse(text)
        .ok_or_else(|| ApiError::new(400, ErrorCode::BadTable, format!("`{text}` is not `schema.table`")))
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A nullable `nvarchar(200)` column (positioned by whoever adds it).
fn note_column(name: String) -> ColumnSchema {
    ColumnSchema {
        name,
        sql_type: SqlType::NVarChar(Some(200)),
        type_name: "nvarchar".into(),
        position: 0,
        nullable: true,
        identity: false,
        default_expression: None,
    }
}

fn not_found(id: &TableId) -> ApiError {
    ApiError::new(404, ErrorCode::TableNotFound, format!("no table {id}"))
}

impl TenantOp {
    /// Runs the operation, publishing to `log`; the JSON says what happened.
    pub fn apply(&self, tenant: &mut Tenant, log: &mut EventLog, now_ms: i64) -> Result<Json, ApiError> {
        Ok(match self {
            TenantOp::Change { count } => {
                tenant.change(log, now_ms, *count, Workload::default())?;
                json!({"changes": count})
            }
            TenantOp::NewTable { table, rows, extra_columns } => {
                let id = table_id(table)?;
                let mut template = tenant
                    .schemas()
                    .first()
                    .map(|t| (*t).clone())
                    .ok_or_else(|| ApiError::new(409, ErrorCode::EmptyTenant, "no table to copy"))?;
                for i in 0..*extra_columns {
                    let position = template.columns.len() as u32 + 1;
                    template.columns.push(ColumnSchema { position, ..note_column(format!("extra_{i}")) });
                }
                tenant.add_table(log, now_ms, TableSchema { id: id.clone(), ..template }, *rows)?;
                json!({"created": id.to_string()})
            }
            TenantOp::AddColumn { table, column } => {
                let id = table_id(table)?;
                if !tenant.add_nullable_column(log, now_ms, &id, note_column(column.clone()))? {
                    return Err(not_found(&id));
                }
                json!({"altered": id.to_string(), "column": column})
            }
            TenantOp::IncompatibleChange { table } => {
                let id = table_id(table)?;
                if !tenant.recreate_incompatible(log, now_ms, &id)? {
                    return Err(not_found(&id));
                }
                json!({"recreated": id.to_string()})
            }
            TenantOp::IncompatibleAlter { table } => {
                let id = table_id(table)?;
                if !tenant.alter_incompatible(log, now_ms, &id)? {
                    return Err(not_found(&id));
                }
                json!({"altered": id.to_string()})
            }
            TenantOp::DropTable { table } => {
                let id = table_id(table)?;
                if !tenant.drop_table(log, now_ms, &id)? {
                    return Err(not_found(&id));
                }
                json!({"dropped": id.to_string()})
            }
            TenantOp::Restore => {
                let starts = tenant.restore(log, now_ms)?;
                json!({ "snapshot_starts": starts })
            }
        })
    }
}

/// The append-only journal of tenant operations.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    ctx: String,
    now_ms: i64,
    #[serde(flatten)]
    op: TenantOp,
}

impl Journal {
    fn io(path: &Path, e: std::io::Error) -> ApiError {
        ApiError::new(503, ErrorCode::Unavailable, format!("journal {}: {e}", path.display()))
    }

    /// Opens (creating) the journal in `dir`.
    pub fn open(dir: &Path) -> Result<Self, ApiError> {
        let path = dir.join("journal.jsonl");
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Self::io(&path, e))?;
        Ok(Journal { path, file })
    }

    /// Records an operation before it runs.
    pub fn record(&mut self, ctx: &str, now_ms: i64, op: &TenantOp) -> Result<(), ApiError> {
        let line = serde_json::to_string(&Entry { ctx: ctx.to_owned(), now_ms, op: op.clone() }).expect("serializable");
        writeln!(self.file, "{line}").map_err(|e| Self::io(&self.path, e))
    }

    /// Rebuilds a tenant's ground truth by replaying its recorded operations against a
    /// scratch log. Returns how many were replayed; a torn last line is ignored.
    pub fn replay(&self, tenant: &mut Tenant) -> Result<usize, ApiError> {
        let file = File::open(&self.path).map_err(|e| Self::io(&self.path, e))?;
        let mut scratch = EventLog::in_memory(Duration::MAX);
        tenant.create_topics(&mut scratch)?;
        let mut replayed = 0;
        for line in BufReader::new(file).lines() {
            let line = line.map_err(|e| Self::io(&self.path, e))?;
            let Ok(entry) = serde_json::from_str::<Entry>(&line) else { continue };
            if entry.ctx == tenant.context() {
                // An operation that failed when it first ran fails the same way now.
                let _ = entry.op.apply(tenant, &mut scratch, entry.now_ms);
                replayed += 1;
            }
        }
        Ok(replayed)
    }
}
