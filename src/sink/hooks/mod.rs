//! The replica owner's hooks: SQL scripts run in the replica and commands run on the host when
//! something happens to the replica, so owners can keep what they build on it (indexes,
//! views, summary tables, exports) in step without polling.
//!
//! Events, raised on the sink thread right after the work they follow has committed:
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
//! [`Invocation::environment`]): the process's own variables, which may hold the
//! replica's connection string, are not passed on. A failing hook is logged with its output;
//! with `OnFailure: Stop` replication waits (and retries the hook with backoff) until it
//! passes, without losing or repeating the data it followed.

mod config;
mod run;

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
    fn applies_to<'t>(&self, mut tables: impl Iterator<Item = &'t TableId>) -> bool {
        self.tables.is_empty() || tables.any(|id| self.tables.iter().any(|t| t.matches(id)))
    }
}

/// The owner's hooks (`Hooks` in `appsettings.json`), and the tenant they run for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    /// Every hook, in the order configured.
    pub hooks: Vec<Hook>,
    /// The tenant (`DBMIRROR_TENANT`, `{tenant}`), known once the session is.
    pub tenant: String,
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

pub use run::run_hooks;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::schema::{ColumnSchema, SchemaChangeKind, SqlType, TableChange, TableSchema};
    use crate::sink::Sink as _;
    use crate::sink::memory::MemoryReplica;
    use crate::sink::worker::{Job, Report, SinkWorker};

    fn create(table: &str) -> Job {
        let column = |name: &str| ColumnSchema {
            name: name.into(),
            sql_type: SqlType::Int,
            type_name: "int".into(),
            position: 0,
            nullable: false,
            identity: false,
            default_expression: None,
        };
        let table = TableSchema {
            id: TableId::new("crm7", table),
            columns: vec![column("id")],
            primary_key: vec!["id".into()],
        };
        Job::Schema(TableChange { kind: SchemaChangeKind::Create, table })
    }

    fn hooks(sql: &str, on_failure: &str) -> Arc<Hooks> {
        let section =
            serde_json::json!({ "OnFailure": on_failure, "TableCreated": [{ "Tables": ["t1"], "Sql": sql }] });
        Arc::new(Hooks { tenant: "cust1".into(), ..parse(Some(&section), std::path::Path::new(".")).unwrap() })
    }

    /// Runs the jobs on a worker; returns the replica, the reports and the unapplied jobs.
    fn run(hooks: Arc<Hooks>, jobs: Vec<Job>) -> (MemoryReplica, Vec<Report>, Vec<Job>) {
        let replica = MemoryReplica::default();
        let worker = SinkWorker::spawn_with_hooks(replica.clone(), 4, hooks);
        jobs.into_iter().for_each(|job| worker.submit(job).unwrap());
        let (_, reports, unapplied) = worker.finish();
        (replica, reports, unapplied)
    }

    #[test]
    fn a_hook_runs_after_its_event_for_its_tables_only_with_placeholders_filled() {
        let (replica, reports, unapplied) = run(
            hooks("CREATE INDEX ix ON {table} (id); -- {event} {source_table} {tenant}", "Log"),
            vec![create("t1"), create("t2")],
        );
        assert!(unapplied.is_empty());
        assert!(reports.iter().all(|r| !matches!(r, Report::Failed(_))), "{reports:?}");
        assert_eq!(replica.scripts(), ["CREATE INDEX ix ON crm7.t1 (id); -- TableCreated crm7.t1 cust1"]);
    }

    #[test]
    fn a_failing_stop_hook_keeps_its_job_committed_and_is_retried_alone() {
        let (replica, reports, unapplied) = run(hooks("FAIL", "Stop"), vec![create("t1"), create("t2")]);
        // The table was created (its report came first), then the hook failed ...
        assert!(matches!(&reports[0], Report::Schema(_, crate::sink::SchemaOutcome::Created)), "{reports:?}");
        assert!(matches!(&reports[1], Report::Failed(crate::db::SinkError::Hook { .. })), "{reports:?}");
        assert!(replica.tables().iter().any(|r| r.schema.id.table == "t1"));
        // ... and what is left to do is the hook, then the job queued after it, in order.
        assert!(
            matches!(&unapplied[..], [Job::Hooks(due), Job::Schema(next)]
            if due[0].event == HookEvent::TableCreated && next.table.id.table == "t2"),
            "{unapplied:?}"
        );
        // Logged only: nothing is held.
        let (_, reports, unapplied) = run(hooks("FAIL", "Log"), vec![create("t1"), create("t2")]);
        assert!(unapplied.is_empty() && reports.iter().all(|r| !matches!(r, Report::Failed(_))));
    }
}
