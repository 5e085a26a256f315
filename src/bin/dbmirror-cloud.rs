//! `dbmirror-cloud`: the reference cloud (Dispatcher, Replication Service, simulated tenants)
//! that the client is built, tested, demonstrated and benchmarked against.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use dbmirror::clock::now_ms;
use dbmirror::cloud::crm::source_tables;
use dbmirror::cloud::http::{Cloud, serve_stream, spawn, spawn_background};
use dbmirror::cloud::log::EventLog;
use dbmirror::cloud::service::State;
use dbmirror::cloud::tenant::{Tenant, TenantConfig};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "dbmirror-cloud", version, about = "The reference cloud for dbmirror")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serves the Dispatcher and Replication Service for simulated tenants.
    Serve(ServeArgs),
    /// Runs a lifecycle action on a running cloud (operations endpoints).
    Action(ActionArgs),
}

#[derive(Parser)]
struct ActionArgs {
    /// The cloud's base URL, as `serve` printed it.
    #[arg(long)]
    url: String,
    /// SHA-256 fingerprint of the cloud's certificate, as `serve` printed it.
    #[arg(long)]
    fingerprint: Option<String>,
    /// A CA file (PEM) to trust instead of a fingerprint.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// The admin token.
    #[arg(long)]
    admin_token: String,
    /// The tenant context id.
    #[arg(long, default_value = "cust1234", value_parser = context_id)]
    tenant: String,
    /// sessions | workload | changes | new-table | add-column | incompatible-change | incompatible-alter |
    /// drop-table | resync | restore | suspend | resume | purge | revoke-session | reset-offsets | min-client-version |
    /// approve | withdraw (the tenant approves a partner's app, or withdraws its approval)
    action: String,
    /// The partner, for `approve` and `withdraw`.
    #[arg(long)]
    partner: Option<String>,
    /// `schema.table` for table actions.
    #[arg(long)]
    table: Option<String>,
    /// Column name for `add-column`.
    #[arg(long)]
    column: Option<String>,
    /// How many changes (or rows of a new table).
    #[arg(long)]
    count: Option<usize>,
    /// Extra nullable columns of a `new-table` (a table wider than a replica can hold).
    #[arg(long)]
    columns: Option<usize>,
    /// Session id for `revoke-session`.
    #[arg(long)]
    session_id: Option<String>,
    /// Version for `min-client-version`.
    #[arg(long)]
    version: Option<String>,
    /// Random changes per second per tenant, for `workload` (0 stops them).
    #[arg(long)]
    changes_per_sec: Option<u32>,
    /// Print the cloud's JSON answer instead of readable lines.
    #[arg(long)]
    json: bool,
}

async fn action(args: ActionArgs) -> Result<()> {
    use dbmirror::source::client::HttpClient;
    use dbmirror::source::tls::Trust;
    let trust = Trust::from_settings(args.fingerprint.as_deref(), args.ca_file.as_deref())?;
    let client = HttpClient::new(&args.url, trust.as_ref())?;
    let token = Some(args.admin_token.as_str());
    if args.action == "sessions" {
        let reply = client.json(hyper::Method::GET, "/admin/overview", token, None).await?;
        print_sessions(&reply, args.json);
        return Ok(());
    }
    let (path, body) = match args.action.as_str() {
        "reset-offsets" => (format!("/admin/{}/reset-offsets", args.tenant), serde_json::json!({})),
        "min-client-version" => ("/admin/min-client-version".to_owned(), serde_json::json!({"version": args.version})),
        "workload" => {
            let rate = args.changes_per_sec.context("`workload` needs --changes-per-sec N (0 stops the changes)")?;
            ("/admin/workload".to_owned(), serde_json::json!({"changes_per_sec": rate}))
        }
        other => (
            format!("/admin/{}/actions/{other}", args.tenant),
            serde_json::json!({
                "table": args.table, "column": args.column, "count": args.count, "columns": args.columns,
                "session_id": args.session_id, "partner": args.partner,
            }),
        ),
    };
    let reply = client.json(hyper::Method::POST, &path, token, Some(&body)).await?;
    if args.json {
        println!("{reply}");
    } else {
        print_readable(&reply, "");
    }
    Ok(())
}

/// An answer as `key: value` lines (nested objects indented), for people.
fn print_readable(value: &serde_json::Value, indent: &str) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match v {
                    serde_json::Value::Object(_) => {
                        println!("{indent}{key}:");
                        print_readable(v, &format!("{indent}  "));
                    }
                    serde_json::Value::Array(items) => {
                        let items: Vec<String> = items
                            .iter()
                            .map(|i| match i {
                                serde_json::Value::String(s) => s.clone(),
                                other => other.to_string(),
                            })
                            .collect();
                        println!("{indent}{key}: {}", items.join(", "));
                    }
                    serde_json::Value::String(s) => println!("{indent}{key}: {s}"),
                    other => println!("{indent}{key}: {other}"),
                }
            }
        }
        other => println!("{indent}{other}"),
    }
}

/// `action sessions`: one line per session (or the JSON with `--json`).
fn print_sessions(reply: &serde_json::Value, json: bool) {
    let sessions = reply["overview"]["sessions"].as_array().cloned().unwrap_or_default();
    if json {
        println!("{}", serde_json::Value::Array(sessions));
        return;
    }
    println!("{:<20} {:<12} {:<16} {:<8} {:>8}  last fetch", "session", "tenant", "replication id", "state", "lag");
    for s in &sessions {
        let last =
            s["last_fetch_ms"].as_i64().map_or("never".to_owned(), |ms| format!("{} s ago", (now_ms() - ms) / 1000));
        println!(
            "{:<20} {:<12} {:<16} {:<8} {:>8}  {last}",
            s["session_id"].as_str().unwrap_or(""),
            s["tenant"].as_str().unwrap_or(""),
            s["replication_id"].as_str().unwrap_or(""),
            if s["revoked"].as_bool().unwrap_or(false) { "revoked" } else { "live" },
            s["lag"],
        );
    }
    println!("changes per second: {}", reply["changes_per_sec"]);
}

#[derive(Parser)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Where the event log, sessions, journal and TLS certificate live.
    #[arg(long, default_value = "dbmirror-cloud-data")]
    data_dir: PathBuf,
    /// Keep everything in memory instead (nothing survives a restart).
    #[arg(long)]
    in_memory: bool,
    /// Tenant context ids to simulate (repeatable).
    #[arg(long = "tenant", default_value = "cust1234", value_parser = context_id)]
    tenants: Vec<String>,
    /// Many tenants at once: `t0001` … `tNNNN` besides the `--tenant`s (a partner's
    /// customers; use a small `--rows`).
    #[arg(long, default_value_t = 0)]
    many_tenants: usize,
    /// Rows per table in each tenant's initial snapshot.
    #[arg(long, default_value_t = 1000)]
    rows: u64,
    /// Random source changes per second per tenant.
    #[arg(long, default_value_t = 0)]
    changes_per_sec: u32,
    /// Partitions of each `<ctx>-cdc` topic.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// Retention of the event log in seconds (7 days by default).
    #[arg(long, default_value_t = 7 * 24 * 3600)]
    retention_secs: u64,
    /// Seed of the data generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Emit events with the JsonConverter schema block.
    #[arg(long)]
    with_schema: bool,
    /// Plain HTTP instead of HTTPS (tests, local demos).
    #[arg(long)]
    http: bool,
    /// Token for the operations endpoints (`/admin/…`); a random one is printed if not given.
    #[arg(long)]
    admin_token: Option<String>,
    /// A partner: `id:secret:ctx1,ctx2` (repeatable); `*` for every tenant.
    #[arg(long = "partner")]
    partners: Vec<String>,
    /// The oldest client version accepted; without it, the value last set (by this flag or
    /// `action min-client-version`) is kept across restarts (0.1.0 at first).
    #[arg(long)]
    min_client_version: Option<String>,
    /// How long an access token is valid, in seconds (20 minutes by default; short for tests
    /// that want a token refresh during a run).
    #[arg(long, default_value_t = 20 * 60)]
    token_ttl_secs: u64,
}

/// A self-signed certificate for `localhost`/127.0.0.1, created once and kept in the data
/// directory so its fingerprint stays the same across restarts.
fn certificate(dir: Option<&PathBuf>) -> Result<(Vec<u8>, Vec<u8>)> {
    if let Some(dir) = dir {
        let (cert, key) = (dir.join("cloud-cert.der"), dir.join("cloud-key.der"));
        if cert.exists() && key.exists() {
            return Ok((std::fs::read(cert)?, std::fs::read(key)?));
        }
    }
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .context("generating a self-signed certificate")?;
    let (cert, key) = (generated.cert.der().to_vec(), generated.signing_key.serialize_der());
    if let Some(dir) = dir {
        std::fs::write(dir.join("cloud-cert.der"), &cert)?;
        std::fs::write(dir.join("cloud-key.der"), &key)?;
    }
    Ok((cert, key))
}

async fn serve(args: ServeArgs) -> Result<()> {
    let retention = Duration::from_secs(args.retention_secs);
    let data_dir = (!args.in_memory).then(|| args.data_dir.clone());
    let log = match &data_dir {
        Some(dir) => EventLog::open(&dir.join("log"), retention).context("opening the event log")?,
        None => EventLog::in_memory(retention),
    };
    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if args.http { "http" } else { "https" };
    let mut state = State::new(log, format!("{scheme}://{addr}"));
    state.token_ttl = Duration::from_secs(args.token_ttl_secs.max(1));
    if let Some(dir) = &data_dir {
        state =
            state.with_journal(dir).and_then(|s| s.with_store(dir)).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    }
    // The flag wins over a saved value; without it the saved one stays.
    if let Some(version) = &args.min_client_version {
        state.set_min_client_version(version);
    }
    let mut tenants = args.tenants.clone();
    tenants.extend(many_tenants(args.many_tenants));
    for ctx in &tenants {
        let config = TenantConfig {
            context: ctx.clone(),
            seed: args.seed,
            rows_per_table: args.rows,
            partitions: args.partitions,
            with_schema: args.with_schema,
        };
        state
            .add_tenant(Tenant::new(config, source_tables()), now_ms())
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    }
    for p in &args.partners {
        let mut parts = p.splitn(3, ':');
        let (Some(id), Some(secret), Some(tenants)) = (parts.next(), parts.next(), parts.next()) else {
            anyhow::bail!("--partner must be id:secret:ctx1,ctx2");
        };
        let approving =
            if tenants == "*" { state.tenant_ids() } else { tenants.split(',').map(str::to_owned).collect() };
        state.add_partner(id, secret, approving);
    }
    let admin_token = args.admin_token.clone().unwrap_or_else(dbmirror::cloud::auth::opaque_token);
    let cloud = Cloud::new(state, admin_token.clone());
    println!("dbmirror-cloud listening on {scheme}://{addr}");
    match tenants.len() {
        n if n > 10 => println!("tenants: {} … {} ({n})", tenants[0], tenants[n - 1]),
        _ => println!("tenants: {}", tenants.join(", ")),
    }
    if args.admin_token.is_none() {
        println!("admin token (operations endpoints): {admin_token}");
    }
    if args.http {
        spawn(listener, cloud, args.changes_per_sec).await?;
        return Ok(());
    }
    let (cert, key) = certificate(data_dir.as_ref())?;
    println!("certificate SHA-256 fingerprint: {}", hex(&Sha256::digest(&cert)));
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.into()], tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()))?;
    let mut config = config;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    cloud.changes_per_sec.store(args.changes_per_sec, std::sync::atomic::Ordering::Relaxed);
    let _background = spawn_background(cloud.clone());
    loop {
        let (stream, peer) = listener.accept().await?;
        let (acceptor, cloud) = (acceptor.clone(), cloud.clone());
        tokio::spawn(async move {
            match acceptor.accept(stream).await {
                Ok(tls) => serve_stream(tls, peer, cloud).await,
                Err(e) => tracing::info!(%peer, "TLS handshake failed: {e}"),
            }
        });
    }
}

/// `t0001` … : the names of `--many-tenants`.
fn many_tenants(count: usize) -> impl Iterator<Item = String> {
    (1..=count).map(|i| format!("t{i:04}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    dbmirror::telemetry::init(dbmirror::telemetry::LogFormat::Text, "info");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Action(args) => runtime.block_on(action(args)),
    }
}

/// A `--tenant` value: a context id the cloud can name topics and files after.
fn context_id(text: &str) -> Result<String, String> {
    dbmirror::protocol::check_context_id(text).map(|()| text.to_owned())
}
