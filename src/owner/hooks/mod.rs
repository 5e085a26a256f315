//! The replica owner's hooks: SQL scripts run in the replica and commands run on the host when
//! something happens to the replica, so owners can keep what they build on it (indexes,
//! views, summary tables, exports) in step without polling.
//!
//! Events, raised on the sink thread right after the work they follow has committed (see
//! `sink::hooks`, which runs them):
//!
//! - `TableCreated`: a table was created, or dropped and re-created after an incompatible
//!   change (its rows arrive with its snapshot; the owner's indexes and views on the old
//!   table are gone and can be put back here);
//! - `TableLoaded`: a table's initial snapshot, or a resync after its swap, is complete;
//! - `SchemaChanged`: columns were added in place, or the table was re-created;
//! - `BatchCommitted`: a replica transaction with rows committed (also once when `sync`
//!   starts, so a run stopped between a commit and its hooks is caught up: hooks on this event
//!   should be idempotent, like refreshing a summary table).
//!
//! Each hook runs its SQL (in its own transaction on SQLite and PostgreSQL; on SQL Server as
//! written) and then its command, with a cleared environment that names the event (see
//! `sink::hooks`): the process's own variables, which may hold the
//! replica's connection string, are not passed on. A failing hook is logged with its output;
//! with `OnFailure: Stop` replication waits (and retries the hook with backoff) until it
//! passes, without losing or repeating the data it followed.

mod config;

use std::time::Duration;

pub use config::parse;

use crate::schema::{TableId, TablePattern};

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookEvent {
    /// A table was created or re-created.
    TableCreated,
    /// A table's snapshot or resync completed.
    TableLoaded,
    /// A table's schema changed (columns added, or re-created).
    SchemaChanged,
    /// A replica transaction with rows committed.
    BatchCommitted,
}

impl HookEvent {
    /// Every event, in the order of the configuration's keys.
    pub const ALL: [HookEvent; 4] =
        [HookEvent::TableCreated, HookEvent::TableLoaded, HookEvent::SchemaChanged, HookEvent::BatchCommitted];

    /// The configuration key and the spelling in a hook's environment.
    pub fn name(self) -> &'static str {
        match self {
            HookEvent::TableCreated => "TableCreated",
            HookEvent::TableLoaded => "TableLoaded",
            HookEvent::SchemaChanged => "SchemaChanged",
            HookEvent::BatchCommitted => "BatchCommitted",
        }
    }
}

/// What a failed hook does to replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Log it (with its output) and go on: the default.
    #[default]
    Log,
    /// Replication waits until the hook passes.
    Stop,
}

/// One configured hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// When it runs.
    pub event: HookEvent,
    /// Source tables it runs for; empty: every table.
    pub tables: Vec<TablePattern>,
    /// SQL run in the replica. `{table}` is replaced by the replica's quoted name of the
    /// event's table, `{source_table}` by `schema.table`, `{event}` and `{tenant}` likewise.
    pub sql: Option<String>,
    /// A program and its arguments, run after the SQL.
    pub command: Vec<String>,
    /// How long the command may run before it is killed and counted as failed.
    pub timeout: Duration,
    /// What a failure does.
    pub on_failure: OnFailure,
}

impl Hook {
    /// Whether the hook runs for an event on `tables` (a batch may touch several).
    pub fn applies_to<'t>(&self, mut tables: impl Iterator<Item = &'t TableId>) -> bool {
        self.tables.is_empty() || tables.any(|id| self.tables.iter().any(|t| t.matches(id)))
    }
}

/// The owner's hooks (`Hooks` in `appsettings.json`); the tenant they run for is added by
/// `sink::hooks::HookRunner` when the session is known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    /// Every hook, in the order configured.
    pub hooks: Vec<Hook>,
}

/// One occurrence of an event: what happened, to which tables, with how many rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    /// The event.
    pub event: HookEvent,
    /// The table (`TableCreated`, `TableLoaded`, `SchemaChanged`) or the tables the batch
    /// wrote (`BatchCommitted`).
    pub tables: Vec<TableId>,
    /// Rows written (upserts and deletes after coalescing) for `BatchCommitted`.
    pub rows: u64,
    /// Why it happened, when not obvious (`startup`, `recreated`).
    pub reason: Option<&'static str>,
}

impl Occurrence {
    /// An event on one table.
    pub fn table(event: HookEvent, id: &TableId, reason: Option<&'static str>) -> Self {
        Occurrence { event, tables: vec![id.clone()], rows: 0, reason }
    }
}

impl Hooks {
    /// Whether any hook listens to `event`.
    pub fn wants(&self, event: HookEvent) -> bool {
        self.hooks.iter().any(|h| h.event == event)
    }

    /// Whether no hook is configured.
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }
}
