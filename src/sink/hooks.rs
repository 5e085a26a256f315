//! Running the owner's hooks (see [`crate::owner::hooks`]) for an event: the SQL in the
//! replica, then the command on the host. Raised on the sink thread right after the work they
//! follow has committed, on the same connection.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::Arc;

use crate::db::SinkError;
use crate::owner::OwnerRules;
use crate::owner::hooks::{Hook, HookEvent, Occurrence, OnFailure};
use crate::sink::Sink;

/// The owner's hooks as one run of `sync` raises them: the shared rules, and the tenant they
/// run for (`DBMIRROR_TENANT`, `{tenant}`), known once the session is.
#[derive(Debug, Clone, Default)]
pub struct HookRunner {
    rules: Arc<OwnerRules>,
    tenant: String,
}

impl HookRunner {
    /// The hooks of `rules`, for `tenant`.
    pub fn new(rules: Arc<OwnerRules>, tenant: &str) -> Self {
        HookRunner { rules, tenant: tenant.to_owned() }
    }

    /// Whether any hook listens to `event`.
    pub fn wants(&self, event: HookEvent) -> bool {
        self.rules.hooks.wants(event)
    }

    /// Whether no hook is configured.
    pub fn is_empty(&self) -> bool {
        self.rules.hooks.is_empty()
    }
}

/// Most output of a failed command kept for the log.
const OUTPUT_LIMIT: usize = 4096;

/// One hook for one occurrence: what it is told.
struct Invocation<'a> {
    hook: &'a Hook,
    occurrence: &'a Occurrence,
    tenant: &'a str,
    /// The replica's name of the event's table (one-table events).
    target: Option<String>,
}

impl Invocation<'_> {
    /// `DBMIRROR_TENANT`, `DBMIRROR_EVENT`, `DBMIRROR_TABLE` (`schema.table`, one-table
    /// events), `DBMIRROR_TARGET` (the replica's name of it), `DBMIRROR_TABLES` (every table,
    /// comma-separated), `DBMIRROR_ROWS`, `DBMIRROR_REASON`; plus `PATH`, `LANG` and `HOME`
    /// from this process so a script finds its tools.
    fn environment(&self) -> Vec<(String, String)> {
        let o = self.occurrence;
        let tables: Vec<String> = o.tables.iter().map(ToString::to_string).collect();
        let mut env = vec![
            ("DBMIRROR_TENANT".to_owned(), self.tenant.to_owned()),
            ("DBMIRROR_EVENT".to_owned(), o.event.name().to_owned()),
            ("DBMIRROR_TABLES".to_owned(), tables.join(",")),
            ("DBMIRROR_ROWS".to_owned(), o.rows.to_string()),
            ("DBMIRROR_REASON".to_owned(), o.reason.unwrap_or_default().to_owned()),
        ];
        if let [one] = &tables[..] {
            env.push(("DBMIRROR_TABLE".to_owned(), one.clone()));
        }
        if let Some(target) = &self.target {
            env.push(("DBMIRROR_TARGET".to_owned(), target.clone()));
        }
        for name in ["PATH", "LANG", "HOME", "SYSTEMROOT"] {
            if let Ok(value) = std::env::var(name) {
                env.push((name.to_owned(), value));
            }
        }
        env
    }

    /// The hook's SQL with its placeholders filled in.
    fn sql(&self, sql: &str) -> String {
        let o = self.occurrence;
        let mut text = sql.replace("{event}", o.event.name()).replace("{tenant}", self.tenant);
        if let [one] = &o.tables[..] {
            text = text.replace("{source_table}", &one.to_string());
        }
        if let Some(target) = &self.target {
            text = text.replace("{table}", target);
        }
        text
    }

    fn describe(&self) -> String {
        let o = self.occurrence;
        let on: Vec<String> = o.tables.iter().map(ToString::to_string).collect();
        match &on[..] {
            [] => format!("{} hook", o.event.name()),
            [one] => format!("{} hook for {one}", o.event.name()),
            _ => format!("{} hook ({} tables)", o.event.name(), on.len()),
        }
    }
}

/// Runs every hook configured for each occurrence, in order. A failure is logged with its
/// output; the first failure of an `OnFailure: Stop` hook is returned (after the occurrence's
/// other hooks ran), so the caller holds replication until it passes.
pub fn run_hooks(hooks: &HookRunner, sink: &mut dyn Sink, occurrences: &[Occurrence]) -> Result<(), SinkError> {
    let mut stop = None;
    for occurrence in occurrences {
        for hook in hooks.rules.hooks.hooks.iter().filter(|h| h.event == occurrence.event) {
            if !hook.applies_to(occurrence.tables.iter()) {
                continue;
            }
            let target = match &occurrence.tables[..] {
                [one] => sink.target_name(one),
                _ => None,
            };
            let call = Invocation { hook, occurrence, tenant: &hooks.tenant, target };
            let _span = tracing::info_span!("hook", event = occurrence.event.name()).entered();
            let started = Instant::now();
            match run_one(&call, sink) {
                Ok(()) => tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "{} ran", call.describe()),
                Err(failure) => {
                    let (what, reason) = (call.describe(), failure.to_string());
                    match hook.on_failure {
                        OnFailure::Log => {
                            tracing::error!("{what} failed (Hooks.OnFailure is Log: replication goes on): {reason}")
                        }
                        OnFailure::Stop => {
                            tracing::error!(
                                "{what} failed (OnFailure is Stop: replication waits and runs it again; the data it \
                                 followed is committed): {reason}"
                            );
                            stop.get_or_insert(SinkError::Hook { hook: what, reason });
                        }
                    }
                }
            }
        }
    }
    stop.map_or(Ok(()), Err)
}

/// Why a hook failed.
#[derive(Debug, thiserror::Error)]
enum HookFailure {
    #[error("its SQL failed: {0}")]
    Sql(SinkError),
    #[error("cannot start `{program}`: {source}")]
    Start { program: String, source: std::io::Error },
    #[error("waiting for `{program}`: {source}")]
    Wait { program: String, source: std::io::Error },
    #[error("`{program}` did not finish within {} s and was stopped", .timeout.as_secs())]
    Timeout { program: String, timeout: Duration },
    #[error("`{program}` exited with {status}; its output: {}", if .output.is_empty() { "(none)" } else { .output.as_str() })]
    Exit { program: String, status: std::process::ExitStatus, output: String },
}

fn run_one(call: &Invocation<'_>, sink: &mut dyn Sink) -> Result<(), HookFailure> {
    if let Some(sql) = &call.hook.sql {
        sink.run_script(&call.sql(sql)).map_err(HookFailure::Sql)?;
    }
    if let Some((program, args)) = call.hook.command.split_first() {
        run_command(program, args, &call.environment(), call.hook.timeout)?;
    }
    Ok(())
}

/// Runs a command with exactly `env`, killing it after `timeout`; its output is returned in
/// the error when it fails.
fn run_command(program: &str, args: &[String], env: &[(String, String)], timeout: Duration) -> Result<(), HookFailure> {
    let program_name = || program.to_owned();
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| HookFailure::Start { program: program_name(), source })?;
    // Read both pipes on their own threads, so a chatty command cannot block on a full pipe.
    let readers: Vec<_> = [
        child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child.stderr.take().map(|p| Box::new(p) as _),
    ]
    .into_iter()
    .flatten()
    .map(|mut pipe| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = pipe.read_to_end(&mut out);
            out
        })
    })
    .collect();
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(HookFailure::Timeout { program: program_name(), timeout });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(source) => break Err(HookFailure::Wait { program: program_name(), source }),
        }
    };
    let output: Vec<u8> = readers.into_iter().flat_map(|r| r.join().unwrap_or_default()).collect();
    let output = String::from_utf8_lossy(&output[..output.len().min(OUTPUT_LIMIT)]).trim().to_owned();
    match status? {
        s if s.success() => Ok(()),
        status => Err(HookFailure::Exit { program: program_name(), status, output }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::owner::hooks::parse;
    use crate::schema::{ColumnSchema, SchemaChangeKind, SqlType, TableChange, TableId, TableSchema};
    use crate::sink::memory::MemoryReplica;
    use crate::sink::worker::{Job, Report, SinkWorker};
    use crate::state::StateStore as _;

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

    fn hooks(sql: &str, on_failure: &str) -> Arc<HookRunner> {
        let section =
            serde_json::json!({ "OnFailure": on_failure, "TableCreated": [{ "Tables": ["t1"], "Sql": sql }] });
        let hooks = parse(Some(&section), std::path::Path::new(".")).unwrap();
        Arc::new(HookRunner::new(Arc::new(OwnerRules { hooks, ..OwnerRules::default() }), "cust1"))
    }

    /// Runs the jobs on a worker; returns the replica, the reports and the unapplied jobs.
    fn run(hooks: Arc<HookRunner>, jobs: Vec<Job>) -> (MemoryReplica, Vec<Report>, Vec<Job>) {
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
