//! The commands that replicate: `sync`, `update-schema` and `resync-tables` (the instance
//! folder is `instance.rs`; the other commands are in `session.rs`, `report.rs` and
//! `service.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use dbmirror::pipeline::{SyncOptions, SyncSummary, facts, sync};
use dbmirror::policy::{Action, PURGED_ADVICE, TWO_WRITERS_ADVICE};
use dbmirror::schema::TableId;
use dbmirror::sink::shadow;
use dbmirror::source::replication::SessionInfo;
use dbmirror::state::StateStore;

use crate::instance::{Instance, InstanceLock};

/// Stops on Ctrl-C or SIGTERM.
pub(crate) fn stop_on_signals() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        runtime.block_on(async {
            #[cfg(unix)]
            {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = async { if let Some(t) = term.as_mut() { t.recv().await; } else { std::future::pending::<()>().await } } => {}
                }
            }
            #[cfg(windows)]
            windows_stop().await;
        });
        tracing::info!("stopping: finishing the current batch");
        flag.store(true, Ordering::Relaxed);
    });
    stop
}

/// On Windows: Ctrl-C, Ctrl-Break, the console closed, the user logging off or the machine
/// shutting down. Each finishes the current batch (a service's stop comes from the Service
/// Control Manager instead, see `windows.rs`).
#[cfg(windows)]
async fn windows_stop() {
    use std::future::Future;
    use tokio::signal::windows as console;
    async fn or_never(event: Option<impl Future<Output = Option<()>>>) {
        match event {
            Some(event) => {
                event.await;
            }
            None => std::future::pending().await,
        }
    }
    let (mut brk, mut close) = (console::ctrl_break().ok(), console::ctrl_close().ok());
    let (mut logoff, mut shutdown) = (console::ctrl_logoff().ok(), console::ctrl_shutdown().ok());
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = or_never(brk.as_mut().map(|s| s.recv())) => {}
        _ = or_never(close.as_mut().map(|s| s.recv())) => {}
        _ = or_never(logoff.as_mut().map(|s| s.recv())) => {}
        _ = or_never(shutdown.as_mut().map(|s| s.recv())) => {}
    }
}

/// `sync`: replicate in the foreground until stopped (or, with `until_idle`, until caught up).
pub fn run_sync(instance: &Instance, until_idle: bool, auto_resync: bool) -> Result<()> {
    let summary = run_sync_with(instance, until_idle, auto_resync, stop_on_signals())?;
    if let Some(s) = summary {
        let how = if until_idle { "caught up" } else { "stopped" };
        println!("{how}: {} records applied in {} transactions", s.records, s.batches);
    }
    Ok(())
}

/// `sync` until `stop` is set (Ctrl-C, SIGTERM, or the Windows service being stopped).
/// Returns what the run did, or `None` when it was stopped while waiting to retry.
pub fn run_sync_with(
    instance: &Instance,
    until_idle: bool,
    auto_resync: bool,
    stop: Arc<AtomicBool>,
) -> Result<Option<SyncSummary>> {
    let _guard = InstanceLock::take(&instance.lock_path())?;
    // The metrics carry the tenant, as a partner's many pipelines will.
    let tenant =
        instance.open()?.read_facts().ok().and_then(|f| SessionInfo::from_facts(&f)).map(|i| i.tenant_context_id);
    let options = SyncOptions {
        until_idle,
        auto_resync,
        progress: snapshot_progress(instance),
        metrics: Arc::new(dbmirror::metrics::Metrics::new(&tenant.unwrap_or_default())),
        ..instance.config.sync_options()
    };
    if let Some(address) = &instance.config.metrics.listen {
        let pages = dbmirror::metrics::serve::Pages {
            metrics: options.metrics.clone(),
            window: instance.config.metrics.health_window,
            owner: Some(Arc::new(crate::owner_page::page(instance))),
        };
        let bound = dbmirror::metrics::serve::start(address, pages)?;
        tracing::info!("the replica's status page: http://{bound}/status");
    }
    let mut backoff = dbmirror::retry::Backoff::run();
    loop {
        let (mut state, data) = match instance.open_writer() {
            Ok(handles) => handles,
            Err(e) => match e.downcast_ref::<dbmirror::db::SinkError>().map(dbmirror::policy::sink_action) {
                // Locked by an owner's job, restarting, unreachable: waited out like a failed batch.
                Some(Action::Retry { waiting_for, .. }) => {
                    tracing::warn!(error = %crate::instance::describe(&e), "waiting for {waiting_for}; sync starts then");
                    backoff.wait(None, &stop);
                    if stop.load(Ordering::Relaxed) {
                        return Ok(None);
                    }
                    continue;
                }
                _ => return Err(e),
            },
        };
        let replication = instance.replication(state.as_mut())?;
        let error = match sync(replication, data, state.as_mut(), &instance.key, &options, stop.clone()) {
            Ok(summary) => return Ok(Some(summary)),
            Err(e) => match e.action() {
                Action::Superseded { restored: true } => {
                    tracing::warn!(error = %e, "the replica was restored to before this run began; sync claims it again and resumes from what it holds");
                    backoff.wait(None, &stop);
                    continue;
                }
                Action::Superseded { restored: false } => {
                    // The other process writes the replica and its status now: nothing is recorded here.
                    return Err(anyhow::anyhow!("{e}\n{TWO_WRITERS_ADVICE}"));
                }
                Action::Retry { after, waiting_for } => {
                    tracing::warn!(error = %e, "waiting for {waiting_for}; sync restarts then");
                    facts::record_error(state.as_mut(), &format!("waiting for {waiting_for} (retrying): {e}"));
                    backoff.wait(after, &stop);
                    if stop.load(Ordering::Relaxed) {
                        return Ok(None);
                    }
                    continue;
                }
                Action::Purged => anyhow::anyhow!("{e}\n{PURGED_ADVICE}"),
                Action::Fatal { advice: Some(advice) } => anyhow::anyhow!("{e}\n{advice}"),
                _ => e.into(),
            },
        };
        // Stopped: `status` shows why until the next error replaces it.
        facts::record_error(state.as_mut(), &format!("sync stopped: {}", crate::instance::describe(&error)));
        return Err(error);
    }
}

/// Progress bars when a snapshot is due (a new replica, or tables not `ready`) and stderr is
/// a terminal; sized by the cloud's row estimates when it has them.
fn snapshot_progress(instance: &Instance) -> Option<dbmirror::pipeline::ProgressHook> {
    let mut state = instance.open().ok()?;
    let tables = state.tables();
    if !tables.is_empty() && tables.iter().all(|t| t.state == dbmirror::state::TableState::Ready) {
        return None;
    }
    let replication = instance.replication(state.as_mut()).ok()?;
    let estimates = if replication.needs_refresh() {
        Default::default()
    } else {
        replication.schema().map(|s| crate::progress::estimates(&s)).unwrap_or_default()
    };
    crate::progress::snapshot_bars(estimates)
}

/// `update-schema`: reads the schema history now instead of with the next fetch cycle; new
/// tables are created (their snapshot rows follow with `sync`), changed ones altered or
/// re-created, dropped ones dropped.
pub fn update_schema(instance: &Instance) -> Result<()> {
    // A running service reads the schema history with every fetch already; a second reader
    // beside it would only race it.
    if let Some(pid) = InstanceLock::holder(&instance.lock_path()) {
        println!("dbmirror (process {pid}) is running here and applies schema changes as they arrive: nothing to do");
        return Ok(());
    }
    let _guard = InstanceLock::take(&instance.lock_path())?;
    let (mut state, data) = instance.open_writer()?;
    let replication = instance.replication(state.as_mut())?;
    let options = SyncOptions {
        fetch: dbmirror::pipeline::FetchLimits::waiting(Duration::from_millis(200)),
        until_idle: true,
        history_only: true,
        ..SyncOptions::default()
    };
    let before: std::collections::BTreeSet<String> = state.tables().iter().map(|r| r.schema.id.to_string()).collect();
    let summary = sync(replication, data, state.as_mut(), &instance.key, &options, Arc::new(AtomicBool::new(false)))?;
    let after: std::collections::BTreeSet<String> =
        instance.open()?.tables().iter().map(|r| r.schema.id.to_string()).collect();
    println!("{} schema changes applied", summary.schema_changes);
    for t in after.difference(&before) {
        println!("new table: {t} (its rows arrive with the next sync)");
    }
    for t in before.difference(&after) {
        println!("dropped table: {t}");
    }
    Ok(())
}

/// `resync-tables`: a fresh snapshot of just these tables, loaded into shadow tables and
/// swapped in when complete, so readers never see an empty table. The request is stored in
/// the replica: a running service picks it up within seconds; otherwise this command runs the
/// resync itself and returns when it is done.
pub fn resync_tables(instance: &Instance, names: &[String]) -> Result<()> {
    let mut state = instance.open()?;
    let ids = dbmirror::pipeline::resync::request(state.as_mut(), names)?;
    let list = ids.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    if let Some(pid) = InstanceLock::holder(&instance.lock_path()) {
        println!(
            "Resync of {list} requested. The running dbmirror (process {pid}) starts it within a few seconds; \
             `dbmirror status` shows its progress. Readers keep the current rows until the fresh copy is swapped in."
        );
        return Ok(());
    }
    println!("Resyncing {list}: loading shadow tables, then swapping them in");
    let summary = run_sync_with(instance, true, false, stop_on_signals())?;
    let session = state.read_facts()?;
    let left: Vec<TableId> = shadow::requested(&session)
        .into_iter()
        .chain(shadow::running(&session).into_iter().map(|(id, _)| id))
        .filter(|id| ids.contains(id))
        .collect();
    if !left.is_empty() {
        bail!("the resync of {left:?} did not complete; it continues with the next `dbmirror sync`");
    }
    let rows: u64 = ids.iter().filter_map(|id| summary.as_ref()?.rows_total.get(&id.to_string())).sum();
    println!("Resync complete: {list} ({rows} rows written)");
    Ok(())
}
