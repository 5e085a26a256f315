//! The customer commands that run against a real cloud: `provision`, `sync`, `info`,
//! `status` and `verify`. Each works on an instance folder holding `appsettings.json` and the
//! token sealing key; everything else lives in the replica's `_ReplicationState`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use dbmirror::cloud::http::now_ms;
use dbmirror::config::{Config, redact_connection_string};
use dbmirror::pipeline::{PipelineError, SyncOptions, facts, refresh_tokens, stored_tokens, sync, token_store};
use dbmirror::schema::TableId;
use dbmirror::secrets::SecretKey;
use dbmirror::sink::{Sink, SinkOptions, shadow};
use dbmirror::source::client::{HttpClient, SourceError};
use dbmirror::source::replication::{Replication, SessionInfo, TokenPair};
use dbmirror::source::tls::{Trust, parse_fingerprint};
use dbmirror::state::SessionValue;

use crate::service::InstanceLock;
use hyper::Method;
use serde_json::json;

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
    config: Config,
    key: SecretKey,
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

    fn options(&self) -> SinkOptions {
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

    pub(crate) fn open(&self) -> Result<Box<dyn Sink + Send>> {
        dbmirror::sink::open(&self.config.replica.connection_string, self.options()).with_context(|| {
            format!("opening the replica {}", redact_connection_string(&self.config.replica.connection_string))
        })
    }

    /// The stored session, its trust setting and its tokens.
    fn replication(&self, state: &mut dyn Sink) -> Result<Replication> {
        let session = state.read_session()?;
        let info = SessionInfo::from_facts(&session)
            .context("the replica holds no session: run `dbmirror provision` first")?;
        let trust = match (session.get("trust_fingerprint"), session.get("trust_ca_file")) {
            (Some(SessionValue::Text(fp)), _) => Some(Trust::Fingerprint(parse_fingerprint(fp)?)),
            (_, Some(SessionValue::Text(ca))) => Some(Trust::CaFile(ca.into())),
            _ => None,
        };
        let http = HttpClient::new(&info.cloud_url, trust.as_ref())?;
        Ok(Replication::new(http, info, stored_tokens(&session, &self.key)?))
    }
}

/// `provision`: the device grant, then the session and sealed tokens stored in the replica.
pub fn provision(instance: &Instance, cloud: &str, fingerprint: Option<&str>, ca_file: Option<&Path>) -> Result<()> {
    let trust = match (fingerprint, ca_file) {
        (Some(fp), _) => Some(Trust::Fingerprint(parse_fingerprint(fp)?)),
        (None, Some(ca)) => Some(Trust::CaFile(ca.to_owned())),
        (None, None) if cloud.starts_with("https://") => bail!("an https cloud needs --fingerprint or --ca-file"),
        (None, None) => None,
    };
    let http = HttpClient::new(cloud, trust.as_ref())?;
    let grant = device_grant(&http, None)?;
    let info = SessionInfo::from_json(&grant["session"], cloud).context("the cloud returned an incomplete session")?;
    let tokens = TokenPair::from_json(&grant["tokens"], now_ms()).context("the cloud returned no tokens")?;
    let mut state = instance.open()?;
    if let Some(existing) = SessionInfo::from_facts(&state.read_session()?)
        && existing.tenant_context_id != info.tenant_context_id
    {
        bail!(
            "this replica already holds tenant {}'s session ({}); use an empty database for tenant {}",
            existing.tenant_context_id,
            existing.replication_id,
            info.tenant_context_id
        );
    }
    let mut facts = info.to_facts();
    match &trust {
        Some(Trust::Fingerprint(fp)) => {
            facts.push(("trust_fingerprint", SessionValue::Text(fp.iter().map(|b| format!("{b:02X}")).collect())))
        }
        Some(Trust::CaFile(ca)) => facts.push(("trust_ca_file", SessionValue::Text(ca.display().to_string()))),
        None => {}
    }
    state.write_session(&facts)?;
    token_store(state.as_mut(), &instance.key)(&tokens).map_err(|e| anyhow::anyhow!(e))?;
    println!("Provisioning completed successfully!");
    println!("Tenant ID:      {}", info.tenant_context_id);
    println!("Replication ID: {}", info.replication_id);
    println!("Service URL:    {}/api/v1/replication/{}", info.cloud_url, info.tenant_context_id);
    Ok(())
}

/// Opens the approval page when this host has a desktop; on a server the printed URL is
/// opened on any other machine.
fn open_browser(uri: &str) {
    let command = if cfg!(windows) {
        Some(("cmd", vec!["/C", "start", "", uri]))
    } else if cfg!(target_os = "macos") {
        Some(("open", vec![uri]))
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some() {
        Some(("xdg-open", vec![uri]))
    } else {
        None
    };
    if let Some((program, args)) = command {
        let _ = std::process::Command::new(program)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
}

/// The device grant: start a request, show where to approve it, poll until decided.
fn device_grant(http: &HttpClient, body: Option<&serde_json::Value>) -> Result<serde_json::Value> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let request = runtime.block_on(http.json(Method::POST, "/api/v1/provisioning", None, body))?;
    let uri = request["verification_uri_complete"].as_str().unwrap_or_default();
    println!(
        "Open {uri} in a browser, sign in as an administrator and approve code {}.",
        request["user_code"].as_str().unwrap_or_default()
    );
    open_browser(uri);
    let interval = Duration::from_secs(request["interval"].as_u64().unwrap_or(2).max(1));
    let poll = json!({"device_code": request["device_code"]});
    loop {
        std::thread::sleep(interval);
        match runtime.block_on(http.json(Method::POST, "/api/v1/provisioning/token", None, Some(&poll))) {
            Ok(grant) => return Ok(grant),
            Err(SourceError::Service { code, .. }) if code == "authorization_pending" || code == "slow_down" => {}
            Err(e) => return Err(e).context("the administrator's approval did not complete"),
        }
    }
}

/// `reconnect`: re-authorizes the stored session (after revocation or lost tokens) through
/// the browser, without a new session or a new snapshot.
pub fn reconnect(instance: &Instance) -> Result<()> {
    // Only the session and its trust setting are needed: the stored tokens may be revoked or
    // unreadable (another host's key).
    let mut state = instance.open()?;
    let session = state.read_session()?;
    let info = SessionInfo::from_facts(&session).context("the replica holds no session: run `dbmirror provision`")?;
    let http = HttpClient::new(&info.cloud_url, trust_of(&session)?.as_ref())?;
    let grant = device_grant(&http, Some(&json!({"session_id": info.session_id})))?;
    let tokens = TokenPair::from_json(&grant["tokens"], now_ms()).context("the cloud returned no tokens")?;
    token_store(state.as_mut(), &instance.key)(&tokens).map_err(|e| anyhow::anyhow!(e))?;
    println!("Reconnected: session {} of tenant {} has new tokens.", info.replication_id, info.tenant_context_id);
    Ok(())
}

fn trust_of(session: &dbmirror::state::Session) -> Result<Option<Trust>> {
    Ok(match (session.get("trust_fingerprint"), session.get("trust_ca_file")) {
        (Some(SessionValue::Text(fp)), _) => Some(Trust::Fingerprint(parse_fingerprint(fp)?)),
        (_, Some(SessionValue::Text(ca))) => Some(Trust::CaFile(ca.into())),
        _ => None,
    })
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
            Err(PipelineError::Source(e)) => match *e {
                SourceError::Service { ref code, .. } if code == "offset_purged" => anyhow::anyhow!(
                    "{e}\nThe replica was offline longer than the cloud keeps changes, so it can no longer catch up change by change. Run `dbmirror sync --auto-resync` to reload every table from a fresh snapshot."
                ),
                SourceError::Service { ref code, ref details, .. } if code == "client_too_old" => anyhow::anyhow!(
                    "CRITICAL: this client is too old for the cloud (minimum {}). Install a newer dbmirror; configuration and state are kept.",
                    details["minimum_version"].as_str().unwrap_or("unknown")
                ),
                SourceError::Service { ref code, .. } if code == "session_revoked" || code == "token_reused" => {
                    anyhow::anyhow!(
                        "{e}\nThe session was revoked: run `dbmirror reconnect`, and if that fails, `dbmirror provision`."
                    )
                }
                SourceError::Service { status: 400..=499, .. } => anyhow::Error::from(*e),
                other => {
                    tracing::warn!(error = %other, "cloud unreachable; retrying");
                    facts::record_error(state.as_mut(), &format!("cloud unreachable (retrying): {other}"));
                    backoff.wait(other.retry_after(), &stop);
                    if stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    continue;
                }
            },
            Err(e) => e.into(),
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
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    let schema = if replication.needs_refresh() {
        serde_json::Value::Null
    } else {
        runtime.block_on(replication.call(Method::GET, "schema", None)).unwrap_or_default()
    };
    crate::progress::snapshot_bars(crate::progress::estimates(&schema))
}

/// `info`: the session, token expiry, URLs and client version (never the tokens).
pub fn info(instance: &Instance) -> Result<()> {
    let mut state = instance.open()?;
    let session = state.read_session()?;
    let info =
        SessionInfo::from_facts(&session).context("the replica holds no session: run `dbmirror provision` first")?;
    let expires = match session.get("access_expires_at_ms") {
        Some(SessionValue::Text(t)) => t.parse::<i64>().unwrap_or(0),
        _ => 0,
    };
    println!("Tenant ID:        {}", info.tenant_context_id);
    println!("Replication ID:   {}", info.replication_id);
    println!("Session ID:       {}", info.session_id);
    println!("Cloud URL:        {}", info.cloud_url);
    println!("Service URL:      {}/api/v1/replication/{}", info.cloud_url, info.tenant_context_id);
    println!(
        "Access token:     {}",
        if expires > now_ms() {
            format!("valid for {} s", (expires - now_ms()) / 1000)
        } else {
            "expired (refreshed on the next request)".into()
        }
    );
    println!("Client version:   {}", env!("CARGO_PKG_VERSION"));
    println!("Replica:          {}", redact_connection_string(&instance.config.replica.connection_string));
    Ok(())
}

/// `status`: tables, rows and state; offsets; the cloud's view of lag.
pub fn status(instance: &Instance, as_json: bool) -> Result<()> {
    let mut state = instance.open()?;
    let mut tables = Vec::new();
    let mut records = state.tables();
    records.sort_by_key(|r| r.schema.id.to_string());
    let session = state.read_session()?;
    let (requested, running) = (shadow::requested(&session), shadow::running(&session));
    let last_applied = facts::last_applied(&session);
    for r in records.iter().filter(|r| shadow::live_id(&r.schema.id).is_none()) {
        let id = &r.schema.id;
        let rows = state.count_rows(id)?;
        let mut entry = json!({"table": id.to_string(), "state": r.state.as_str(), "rows": rows,
            "last_change_ms": last_applied.get(&id.to_string())});
        if records.iter().any(|s| s.schema.id == shadow::shadow_id(id)) && running.iter().any(|(t, _)| t == id) {
            entry["state"] = json!("resyncing");
            entry["resync_rows_loaded"] = json!(state.count_rows(&shadow::shadow_id(id))?);
        } else if requested.contains(id) {
            entry["state"] = json!("resync_requested");
        }
        tables.push(entry);
    }
    let offsets: Vec<_> =
        state.offsets()?.iter().map(|((t, p), o)| json!({"topic": t, "partition": p, "last_applied": o})).collect();
    let cloud = match instance.replication(state.as_mut()) {
        Ok(mut replication) => {
            // The cloud's view is optional: local facts are shown even when it is unreachable
            // or the session was revoked.
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let refreshed = if replication.needs_refresh() {
                refresh_tokens(&runtime, &mut replication, state.as_mut(), &instance.key).map_err(|e| e.to_string())
            } else {
                Ok(())
            };
            match refreshed {
                Ok(()) => runtime
                    .block_on(replication.call(Method::GET, "status", None))
                    .unwrap_or_else(|e| json!({"error": e.to_string()})),
                Err(e) => json!({"error": e}),
            }
        }
        Err(e) => json!({"error": e.to_string()}),
    };
    let running = InstanceLock::holder(&instance.lock_path()).is_some();
    let last_error = facts::last_error(&session).map(|(at, message)| json!({"at_ms": at, "message": message}));
    let report = json!({"running": running, "tables": tables, "offsets": offsets, "cloud": cloud,
        "last_commit_cycle_ms": facts::last_cycle(&session), "last_error": last_error});
    if as_json {
        println!("{report:#}");
        return Ok(());
    }
    let ago = |ms: Option<i64>| ms.map_or("never".to_owned(), |ms| format!("{} s ago", (now_ms() - ms).max(0) / 1000));
    println!("client running: {}", if running { "yes" } else { "no" });
    println!("{:<32} {:<16} {:>10}  last change", "table", "state", "rows");
    for t in &tables {
        let loaded = t["resync_rows_loaded"].as_u64().map(|n| format!("  ({n} rows loaded into the shadow)"));
        println!(
            "{:<32} {:<16} {:>10}  {}{}",
            t["table"].as_str().unwrap_or(""),
            t["state"].as_str().unwrap_or(""),
            t["rows"],
            ago(t["last_change_ms"].as_i64()),
            loaded.unwrap_or_default()
        );
    }
    for o in &offsets {
        println!("offset {}/{}: {}", o["topic"].as_str().unwrap_or(""), o["partition"], o["last_applied"]);
    }
    println!("offsets last acknowledged: {}", ago(facts::last_cycle(&session)));
    match facts::last_error(&session) {
        Some((at, message)) => println!("last error ({}): {message}", ago(Some(at))),
        None => println!("last error: none"),
    }
    if let Some(parts) = cloud["partitions"].as_array() {
        let lag: i64 = parts.iter().filter_map(|p| p["lag"].as_i64()).sum();
        println!("lag behind the cloud: {lag} records (as last acknowledged)");
    } else if let Some(e) = cloud["error"].as_str() {
        println!("cloud: {e}");
    }
    Ok(())
}

/// `verify`: every table against the cloud's ground truth; false if any differs.
pub fn verify(instance: &Instance) -> Result<bool> {
    let mut state = instance.open()?;
    let mut replication = instance.replication(state.as_mut())?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    if replication.needs_refresh() {
        refresh_tokens(&runtime, &mut replication, state.as_mut(), &instance.key)?;
    }
    let truth = runtime.block_on(replication.call(Method::GET, "ground-truth", None))?;
    let checks = dbmirror::verify::verify(instance.open()?.as_mut(), &truth)?;
    crate::demo::print_checks(&checks);
    Ok(checks.iter().all(|c| c.equal))
}

/// `validate`: checks configuration, the replica connection, the stored session, the cloud
/// (reachable, session valid with the stored tokens) and the clock. It changes nothing, except
/// refreshing an expired access token as `sync` would. Returns whether everything passed.
pub fn validate(dir: &Path) -> Result<bool> {
    let mut ok = true;
    let mut check = |name: &str, result: Result<String>| match result {
        Ok(detail) => println!("ok    {name}: {detail}"),
        Err(e) => {
            ok = false;
            println!("FAIL  {name}: {}", crate::describe(&e));
        }
    };
    let instance = match Instance::load(dir) {
        Ok(i) => i,
        Err(e) => {
            check("configuration", Err(e));
            return Ok(false);
        }
    };
    check(
        "configuration",
        Ok(format!(
            "{} (replica {})",
            dir.join("appsettings.json").display(),
            redact_connection_string(&instance.config.replica.connection_string)
        )),
    );
    let mut state = match instance.open() {
        Ok(s) => s,
        Err(e) => {
            check("replica connection", Err(e));
            return Ok(false);
        }
    };
    check("replica connection", Ok(format!("{} replicated tables", state.tables().len())));
    check(
        "replica permissions",
        state
            .check_writable()
            .map(|()| "may create, fill and drop tables (checked, rolled back)".into())
            .map_err(Into::into),
    );
    let mut replication = match instance.replication(state.as_mut()) {
        Ok(r) => r,
        Err(e) => {
            check("session", Err(e));
            return Ok(false);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let started = now_ms();
    if replication.needs_refresh() {
        // An expired access token is normal between runs; refreshing is what `sync` would do.
        let refreshed = refresh_tokens(&runtime, &mut replication, state.as_mut(), &instance.key);
        check("token refresh", refreshed.map(|()| "new tokens issued and stored".to_owned()).map_err(Into::into));
    }
    let session = runtime.block_on(replication.call(Method::GET, "session", None));
    check(
        "cloud session",
        session
            .map(|s| {
                format!(
                    "tenant {} as {}",
                    s["tenant_context_id"].as_str().unwrap_or("?"),
                    s["replication_id"].as_str().unwrap_or("?")
                )
            })
            .map_err(Into::into),
    );
    let skew = runtime.block_on(replication.server_time()).map(|server_ms| {
        let local = (started + now_ms()) / 2;
        (server_ms - local) / 1000
    });
    check(
        "clock",
        skew.map_err(anyhow::Error::from).and_then(|s| {
            if s.abs() > 120 {
                bail!("this host's clock is {s} s off the cloud's; tokens will be refused: synchronize the time")
            }
            Ok(format!("within {} s of the cloud", s.abs().max(1)))
        }),
    );
    Ok(ok)
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
    state.write_session(&facts.iter().map(|(n, v)| (n.as_str(), v.clone())).collect::<Vec<_>>())?;
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
    let left: Vec<TableId> = shadow::requested(&state.read_session()?)
        .into_iter()
        .chain(shadow::running(&state.read_session()?).into_iter().map(|(id, _)| id))
        .filter(|id| ids.contains(id))
        .collect();
    if !left.is_empty() {
        bail!("the resync of {left:?} did not complete; it continues with the next `dbmirror sync`");
    }
    println!("Resync complete: {list}");
    Ok(())
}
