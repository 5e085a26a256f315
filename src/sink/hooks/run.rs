//! Running hooks for an event: the SQL in the replica, then the command on the host.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Hook, Hooks, Occurrence, OnFailure};
use crate::db::SinkError;
use crate::sink::Sink;

/// Most output of a failed command kept for the log.
const OUTPUT_LIMIT: usize = 4096;

/// One hook for one occurrence: what it is told.
pub(super) struct Invocation<'a> {
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
pub fn run_hooks(hooks: &Hooks, sink: &mut dyn Sink, occurrences: &[Occurrence]) -> Result<(), SinkError> {
    let mut stop = None;
    for occurrence in occurrences {
        for hook in hooks.hooks.iter().filter(|h| h.event == occurrence.event) {
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
                Err(reason) => {
                    let what = call.describe();
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

fn run_one(call: &Invocation<'_>, sink: &mut dyn Sink) -> Result<(), String> {
    if let Some(sql) = &call.hook.sql {
        sink.run_script(&call.sql(sql)).map_err(|e| format!("its SQL failed: {e}"))?;
    }
    if let Some((program, args)) = call.hook.command.split_first() {
        run_command(program, args, &call.environment(), call.hook.timeout)?;
    }
    Ok(())
}

/// Runs a command with exactly `env`, killing it after `timeout`; its output is returned in
/// the error when it fails.
fn run_command(program: &str, args: &[String], env: &[(String, String)], timeout: Duration) -> Result<(), String> {
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start `{program}`: {e}"))?;
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
                break Err(format!("`{program}` did not finish within {} s and was stopped", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => break Err(format!("waiting for `{program}`: {e}")),
        }
    };
    let output: Vec<u8> = readers.into_iter().flat_map(|r| r.join().unwrap_or_default()).collect();
    let output = String::from_utf8_lossy(&output[..output.len().min(OUTPUT_LIMIT)]).trim().to_owned();
    match status? {
        s if s.success() => Ok(()),
        s => Err(format!(
            "`{program}` exited with {s}; its output: {}",
            if output.is_empty() { "(none)" } else { &output }
        )),
    }
}
