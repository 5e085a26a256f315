//! The instance folder and the commands that replicate: `sync`, `update-schema` and
//! `resync-tables` (the others are in `session.rs`, `report.rs` and `service.rs`). An instance
//! folder holds `appsettings.json` and the token sealing key; everything else lives in the
//! replica's `_ReplicationState`.

use dbmirror::sink::Replica;
use dbmirror::state::StateStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use dbmirror::clock::now_ms;
use dbmirror::config::{Config, redact_connection_string};
use dbmirror::pipeline::{SyncOptions, facts, stored_tokens, sync};
use dbmirror::policy::{Action, PURGED_ADVICE};
use dbmirror::schema::TableId;
use dbmirror::secrets::SecretKey;
use dbmirror::sink::{Sink, SinkOptions, shadow};
use dbmirror::source::client::HttpClient;
use dbmirror::source::replication::{Replication, SessionInfo};
use dbmirror::state::SessionValue;

use crate::service::InstanceLock;

/// Where the sealing key is: a systemd credential (`LoadCredential=dbmirror.key:…` or
/// `LoadCredentialEncrypted=`, handed over in `$CREDENTIALS_DIRECTORY`) when the service has
/// one, else `dbmirror.key` in the instance folder.
fn key_path(dir: &Path) -> PathBuf {
    std::env::var_os("CREDENTIALS_DIRECTORY")
        .map(|d| PathBuf::from(d).join("dbmirror.key"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| dir.join("dbmirror.key"))
}

/// An instance folder: its configuration and its sealing key.
pub struct Instance {
    dir: PathBuf,
    pub(crate) config: Config,
    pub(crate) key: SecretKey,
}

impl Instance {
    /// Loads `appsettings.json` (naming the key of any problem) and the key file.
    pub fn load(dir: &Path) -> Result<Self> {
        let (config, warnings) = Config::load(&dir.join("appsettings.json"))?;
        for w in warnings {
            tracing::warn!("appsettings.json: {w}");
        }
        let key = SecretKey::load_or_create(&key_path(dir))?;
        Ok(Instance { dir: dir.to_owned(), config, key })
    }

    pub(crate) fn options(&self) -> SinkOptions {
        SinkOptions {
            table_prefix: self.config.replica.table_prefix.clone(),
            skip_tables: self.config.replica.skip_tables.clone(),
        }
    }

    /// The instance folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn lock_path(&self) -> PathBuf {
        self.dir.join("dbmirror.lock")
    }

    pub(crate) fn open(&self) -> Result<Box<dyn Replica>> {
        dbmirror::sink::open(&self.config.replica.connection_string, self.options()).with_context(|| {
            format!("opening the replica {}", redact_connection_string(&self.config.replica.connection_string))
        })
    }

    /// The stored session, its trust setting and its tokens.
    pub(crate) fn replication(&self, state: &mut dyn StateStore) -> Result<Replication> {
        let session = state.read_facts()?;
        let info = SessionInfo::from_facts(&session)
            .context("the replica holds no session: run `dbmirror provision` first")?;
        let http = HttpClient::new(&info.cloud_url, crate::session::trust_of(&session)?.as_ref())?;
        Ok(Replication::new(http, info, stored_tokens(&session, &self.key)?)?)
    }
}

/// Stops on Ctrl-C or SIGTERM.
fn stop_on_signals() -> Arc<AtomicBool> {
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
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
        });
        tracing::info!("stopping: finishing the current batch");
        flag.store(true, Ordering::Relaxed);
    });
    stop
}

/// `sync`: replicate in the foreground until stopped (or, with `until_idle`, until caught up).
pub fn run_sync(instance: &Instance, until_idle: bool, auto_resync: bool) -> Result<()> {
    run_sync_with(instance, until_idle, auto_resync, stop_on_signals())
}

/// `sync` until `stop` is set (Ctrl-C, SIGTERM, or the Windows service being stopped).
pub fn run_sync_with(instance: &Instance, until_idle: bool, auto_resync: bool, stop: Arc<AtomicBool>) -> Result<()> {
    let _guard = InstanceLock::take(&instance.lock_path())?;
    let c = &instance.config;
    let options = SyncOptions {
        max_batch_size: c.max_batch_size,
        max_bytes: c.max_bytes,
        max_poll: c.max_poll_time,
        commit_interval: c.commit_interval,
        database_batch_size: c.database_batch_size,
        run_for: None,
        until_idle,
        auto_resync,
        history_only: false,
        progress: snapshot_progress(instance),
    };
    let mut backoff = dbmirror::retry::Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
    loop {
        let mut state = instance.open()?;
        let replication = instance.replication(state.as_mut())?;
        let error = match sync(replication, instance.open()?, state.as_mut(), &instance.key, &options, stop.clone()) {
            Ok(summary) => {
                println!("stopped after applying {} records in {} transactions", summary.records, summary.batches);
                return Ok(());
            }
            Err(e) => match e.action() {
                Action::Retry { after, waiting_for } => {
                    tracing::warn!(error = %e, "waiting for {waiting_for}; sync restarts then");
                    facts::record_error(state.as_mut(), &format!("waiting for {waiting_for} (retrying): {e}"));
                    backoff.wait(after, &stop);
                    if stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    continue;
                }
                Action::Purged => anyhow::anyhow!("{e}\n{PURGED_ADVICE}"),
                Action::Fatal { advice: Some(advice) } => anyhow::anyhow!("{e}\n{advice}"),
                _ => e.into(),
            },
        };
        // Stopped: `status` shows why until the next error replaces it.
        facts::record_error(state.as_mut(), &format!("sync stopped: {}", crate::describe(&error)));
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
    let mut state = instance.open()?;
    let replication = instance.replication(state.as_mut())?;
    let options = SyncOptions {
        max_poll: Duration::from_millis(200),
        until_idle: true,
        history_only: true,
        ..SyncOptions::default()
    };
    let before: std::collections::BTreeSet<String> = state.tables().iter().map(|r| r.schema.id.to_string()).collect();
    let summary =
        sync(replication, instance.open()?, state.as_mut(), &instance.key, &options, Arc::new(AtomicBool::new(false)))?;
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
    let known: Vec<TableId> =
        state.tables().into_iter().map(|r| r.schema.id.clone()).filter(|id| shadow::live_id(id).is_none()).collect();
    let mut ids = Vec::new();
    for name in names {
        let found = known.iter().find(|id| {
            name.eq_ignore_ascii_case(&id.to_string()) || (!name.contains('.') && name.eq_ignore_ascii_case(&id.table))
        });
        match found {
            Some(id) => ids.push(id.clone()),
            None => bail!(
                "`{name}` is not a replicated table; the replica has: {}",
                known.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ),
        }
    }
    let stamp = now_ms().to_string();
    let facts: Vec<(String, SessionValue)> =
        ids.iter().map(|id| (shadow::request_fact(id), SessionValue::Text(stamp.clone()))).collect();
    state.write_facts(&facts.iter().map(|(n, v)| (n.as_str(), v.clone())).collect::<Vec<_>>())?;
    let list = ids.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    if let Some(pid) = InstanceLock::holder(&instance.lock_path()) {
        println!(
            "Resync of {list} requested. The running dbmirror (process {pid}) starts it within a few seconds; \
             `dbmirror status` shows its progress. Readers keep the current rows until the fresh copy is swapped in."
        );
        return Ok(());
    }
    println!("Resyncing {list}: loading shadow tables, then swapping them in");
    run_sync(instance, true, false)?;
    let session = state.read_facts()?;
    let left: Vec<TableId> = shadow::requested(&session)
        .into_iter()
        .chain(shadow::running(&session).into_iter().map(|(id, _)| id))
        .filter(|id| ids.contains(id))
        .collect();
    if !left.is_empty() {
        bail!("the resync of {left:?} did not complete; it continues with the next `dbmirror sync`");
    }
    println!("Resync complete: {list}");
    Ok(())
}
