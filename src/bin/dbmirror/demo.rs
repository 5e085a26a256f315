//! `dbmirror demo`: an in-process reference cloud with a simulated tenant, provisioned
//! automatically, mirrored into a local replica (SQLite by default), streamed for a while and
//! verified. Everything a real run does, on one machine, with nothing to set up.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use dbmirror::clock::now_ms;
use dbmirror::cloud::crm::source_tables;
use dbmirror::cloud::http::{Cloud, spawn};
use dbmirror::cloud::log::EventLog;
use dbmirror::cloud::service::State;
use dbmirror::cloud::tenant::{Tenant, TenantConfig};
use dbmirror::pipeline::{SyncOptions, store_tokens, stored_tokens, sync};
use dbmirror::secrets::SecretKey;
use dbmirror::sink::SinkOptions;
use dbmirror::source::client::HttpClient;
use dbmirror::source::dispatcher::{Dispatcher, GrantState};
use dbmirror::source::replication::{Replication, SessionInfo, TokenPair};

/// What the demo runs.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Rows per table in the tenant's initial snapshot.
    #[arg(long, default_value_t = 500)]
    rows: u64,
    /// Seconds of streaming changes after the snapshot.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Source changes per second while streaming.
    #[arg(long, default_value_t = 200)]
    changes_per_sec: u32,
    /// The replica (recreated): a SQLite file, or any connection string with --connection-string.
    #[arg(long, default_value = "dbmirror-demo.db")]
    replica: PathBuf,
    /// Use this replica connection string instead (PostgreSQL, SQL Server); its tables are reused.
    #[arg(long)]
    connection_string: Option<String>,
}

/// Starts the cloud on its own runtime thread; returns its URL and handle.
fn start_cloud(rows: u64) -> Result<(String, Arc<Cloud>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new().name("dbmirror-cloud".into()).spawn(move || {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
            let url = format!("http://{}", listener.local_addr().expect("address"));
            let mut state = State::new(EventLog::in_memory(Duration::from_secs(7 * 24 * 3600)), url.clone());
            let config = TenantConfig {
                context: "demo1234".into(),
                seed: 2026,
                rows_per_table: rows,
                partitions: 3,
                with_schema: false,
            };
            state.add_tenant(Tenant::new(config, source_tables()), now_ms()).expect("tenant");
            let cloud = Cloud::new(state, dbmirror::cloud::auth::opaque_token());
            let _ = tx.send((url, cloud.clone()));
            spawn(listener, cloud, 0).await.ok();
        });
    })?;
    rx.recv().context("the in-process cloud did not start")
}

pub fn run(args: DemoArgs) -> Result<bool> {
    let started = Instant::now();
    println!("Starting an in-process reference cloud with tenant demo1234 ({} rows per table)…", args.rows);
    let (url, cloud) = start_cloud(args.rows)?;
    let dispatcher = Dispatcher::new(HttpClient::new(&url, None)?)?;

    // Provisioning, as `provision` does it, with the browser step approved in-process.
    let request = dispatcher.start(None)?;
    println!("Provisioning: approving code {} for session \"Demo\" (a browser step in real use)", request.user_code);
    cloud
        .with(|s| s.decide_provisioning(&request.user_code, "demo1234", "Demo", true, now_ms()))
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let GrantState::Granted(grant) = dispatcher.poll(&request.device_code)? else {
        bail!("the approved grant is still pending");
    };
    let info = SessionInfo::from_reply(grant.session.as_ref().context("the grant has no session")?, &url);
    let tokens = TokenPair::issued(grant.tokens, now_ms());
    println!("Provisioned: tenant {}, Replication ID {}", info.tenant_context_id, info.replication_id);

    let connection_string = match &args.connection_string {
        Some(c) => c.clone(),
        None => {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", args.replica.display()));
            }
            format!("Data Source={}", args.replica.display())
        }
    };
    let folder =
        args.replica.parent().map(PathBuf::from).filter(|p| !p.as_os_str().is_empty()).unwrap_or_else(|| ".".into());
    let key = SecretKey::load_or_create(&folder.join("dbmirror.key"))?;
    let mut state = dbmirror::sink::open(&connection_string, SinkOptions::default())?;
    state.write_facts(&info.to_facts().iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>())?;
    store_tokens(state.as_mut(), &key, &tokens)?;
    let replication = Replication::new(HttpClient::new(&url, None)?, info, tokens).unwrap();

    // The initial snapshot, while the source keeps changing, then streaming.
    println!(
        "Mirroring into {} for {} s with {} source changes per second…",
        dbmirror::redact::connection_string(&connection_string),
        args.seconds,
        args.changes_per_sec
    );
    cloud.changes_per_sec.store(args.changes_per_sec, Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let data = dbmirror::sink::open(&connection_string, SinkOptions::default())?;
    let estimates = cloud.with(|s| s.schema("demo1234")).map(|s| crate::progress::estimates(&s)).unwrap_or_default();
    let options = SyncOptions {
        fetch: dbmirror::pipeline::FetchLimits::waiting(Duration::from_secs(1)),
        commit_interval: Duration::from_secs(2),
        run_for: Some(Duration::from_secs(args.seconds)),
        progress: crate::progress::snapshot_bars(estimates),
        ..SyncOptions::default()
    };
    let synced = Instant::now();
    let mut summary = sync(replication, data, state.as_mut(), &key, &options, stop.clone())?;
    let mut elapsed = synced.elapsed();

    // Stop the source, catch up, verify.
    cloud.changes_per_sec.store(0, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(200));
    let session = state.read_facts()?;
    let info = SessionInfo::from_facts(&session).context("the replica lost its session")?;
    let tokens = stored_tokens(&session, &key)?;
    let replication = Replication::new(HttpClient::new(&url, None)?, info, tokens).unwrap();
    let data = dbmirror::sink::open(&connection_string, SinkOptions::default())?;
    let catch_up = SyncOptions {
        until_idle: true,
        run_for: None,
        fetch: dbmirror::pipeline::FetchLimits::waiting(Duration::from_millis(500)),
        progress: None,
        ..options
    };
    let caught = Instant::now();
    let more = sync(replication, data, state.as_mut(), &key, &catch_up, stop)?;
    elapsed += caught.elapsed();
    summary.records += more.records;
    summary.batches += more.batches;
    summary.schema_changes += more.schema_changes;

    let session = state.read_facts()?;
    let info = SessionInfo::from_facts(&session).context("the replica lost its session")?;
    let mut replication = Replication::new(HttpClient::new(&url, None)?, info, stored_tokens(&session, &key)?).unwrap();
    if replication.needs_refresh() {
        dbmirror::pipeline::refresh_tokens(&mut replication, state.as_mut(), &key, &AtomicBool::new(false))?;
    }
    let truth = replication.ground_truth()?;
    // A fresh connection: it reads the tables the sink thread created.
    let checks =
        dbmirror::verify::verify(dbmirror::sink::open(&connection_string, SinkOptions::default())?.as_mut(), &truth)?;
    println!();
    crate::report::print_checks(&checks, &crate::report::Notes::default());
    let rows: u64 = checks.iter().filter_map(|c| c.replica_rows).sum();
    let ok = checks.iter().all(|c| c.equal);
    println!();
    println!(
        "{} records applied in {} transactions ({} schema changes) during {:.1} s of replication; {} tables, {} rows.",
        summary.records,
        summary.batches,
        summary.schema_changes,
        elapsed.as_secs_f64(),
        checks.len(),
        rows
    );
    if ok {
        println!("verify: the replica equals the source ({:.1} s in all).", started.elapsed().as_secs_f64());
    } else {
        bail!("verify: the replica differs from the source");
    }
    Ok(ok)
}
