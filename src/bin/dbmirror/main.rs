//! The client customers run. Thin: parse arguments, set up logging, call the library.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use dbmirror::decode::{BinaryHandlingMode, DecimalHandlingMode, DecodeOptions, Decoder, TimePrecisionMode};
use dbmirror::telemetry::{self, LogFormat};

mod commands;
#[cfg(feature = "refserver")]
mod demo;
#[cfg(not(feature = "refserver"))]
#[path = "demo_off.rs"]
mod demo;
mod instance;
mod owner_page;
mod partner;
mod progress;
mod report;
mod service;
mod session;
#[cfg(windows)]
mod windows;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Mirrors a cloud CRM tenant into a local SQL database.
#[derive(Parser)]
#[command(name = "dbmirror", version, about)]
struct Cli {
    /// Log output format.
    #[arg(long, value_enum, default_value_t = LogArg::Text, global = true)]
    log_format: LogArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogArg {
    Text,
    Json,
}

/// Where a command works: the instance folder.
#[derive(Args, Clone)]
struct At {
    /// The instance folder (appsettings.json, dbmirror.key, logs/).
    #[arg(long, default_value = ".")]
    instance: PathBuf,
}

impl At {
    /// The instance, for a command that changes it.
    fn load(&self) -> anyhow::Result<instance::Instance> {
        instance::Instance::load(&self.instance)
    }
}

/// An instance folder, and on a partner instance the tenant whose database to use.
#[derive(Args, Clone)]
struct AtTenant {
    #[command(flatten)]
    at: At,
    /// On a partner instance: the tenant (context id) whose database to use.
    #[arg(long, value_name = "CONTEXT_ID")]
    tenant: Option<String>,
}

impl AtTenant {
    /// The instance (a partner's tenant's when named), for a command that changes it.
    fn load(&self) -> anyhow::Result<instance::Instance> {
        self.at.load()?.select(self.tenant.as_deref())
    }

    /// The same, for a command that only looks (no key file or replica is created).
    fn look(&self) -> anyhow::Result<instance::Instance> {
        instance::Instance::load_to_look(&self.at.instance)?.select(self.tenant.as_deref())
    }
}

#[derive(Subcommand)]
enum Command {
    /// Sign in through the cloud's browser page, create the session and store it (with sealed
    /// tokens) in the replica named by appsettings.json.
    Provision {
        /// The cloud's base URL.
        #[arg(long)]
        cloud: String,
        /// Pin the cloud's certificate by its SHA-256 fingerprint (a self-signed cloud, such as
        /// `dbmirror-cloud`). Without this or --ca-file, an https cloud is verified against
        /// the operating system's trusted roots, as a browser does.
        #[arg(long)]
        fingerprint: Option<String>,
        /// Trust the authorities in this CA file (PEM) instead of the system's roots.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Replace the session this replica already holds (the same tenant provisioned again).
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        at: At,
    },
    /// Check configuration, replica, cloud, tokens and clock; exit code 0 only if all pass.
    Validate {
        #[command(flatten)]
        at: At,
    },
    /// Run by the Windows Service Control Manager for an installed instance (not by hand).
    #[command(hide = true)]
    ServiceRun {
        #[command(flatten)]
        at: At,
    },
    /// Run the instance as a service named dbmirror-<replication-id> (a systemd unit on
    /// Linux, a Windows service on Windows).
    Install {
        #[command(flatten)]
        at: At,
        /// Start it now.
        #[arg(long)]
        start: bool,
        /// Where unit files go.
        #[arg(long, default_value = "/etc/systemd/system")]
        unit_dir: PathBuf,
    },
    /// Stop and remove the instance's service.
    Uninstall {
        #[command(flatten)]
        at: At,
        /// Where unit files go.
        #[arg(long, default_value = "/etc/systemd/system")]
        unit_dir: PathBuf,
    },
    /// Check for new or changed tables now.
    UpdateSchema {
        #[command(flatten)]
        at: At,
    },
    /// Re-authenticate the stored session (revoked or invalid tokens) without re-provisioning.
    Reconnect {
        #[command(flatten)]
        at: At,
    },
    /// Replicate in the foreground until Ctrl-C / SIGTERM.
    Sync {
        #[command(flatten)]
        at: AtTenant,
        /// Stop once caught up (for scripts and tests).
        #[arg(long)]
        until_idle: bool,
        /// If the replica was offline longer than the cloud's retention, reload every table
        /// from a fresh snapshot instead of stopping.
        #[arg(long)]
        auto_resync: bool,
        /// Serve Prometheus `/metrics` and `/healthz` on this local address (e.g.
        /// 127.0.0.1:9464); overrides `Metrics.Listen`.
        #[arg(long, value_name = "ADDRESS")]
        metrics_listen: Option<String>,
    },
    /// Reload just these tables from a fresh snapshot, without emptying them for readers: a
    /// shadow table is loaded and swapped in when complete. A running service picks the
    /// request up; otherwise this command runs the resync and returns when it is done.
    ResyncTables {
        /// Tables as `schema.table` (or just `table`), e.g. `crm7.person`.
        #[arg(required = true)]
        tables: Vec<String>,
        #[command(flatten)]
        at: AtTenant,
    },
    /// Show the session: tenant, Replication ID, token expiry, URLs, client version.
    Info {
        #[command(flatten)]
        at: AtTenant,
    },
    /// Tables, rows, state, offsets and lag.
    Status {
        #[command(flatten)]
        at: AtTenant,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List the changes the replica refused (kept in `_ReplicationErrors` under
    /// `ReplicaDatabase.ErrorPolicy: Isolate`). Exits 1 when there are any.
    Errors {
        #[command(flatten)]
        at: AtTenant,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Apply the refused changes again after fixing their cause; those applied are removed
    /// from `_ReplicationErrors`. Exits 1 when some are still refused.
    RetryErrors {
        #[command(flatten)]
        at: AtTenant,
    },
    /// Compare every table's rows with the cloud's ground truth.
    Verify {
        #[command(flatten)]
        at: AtTenant,
    },
    /// Start an in-process reference cloud with a simulated tenant, provision, mirror it into a
    /// local replica while it changes, then verify the replica equals the source.
    Demo(demo::DemoArgs),
    /// Decode a file of Debezium records (one per line) and print each as canonical JSON.
    ///
    /// A line is a bare record value (Debezium JSON, or `null` for a tombstone) or a full
    /// record {"topic","partition","offset","key","value"}. Schema-history lines update the
    /// schemas used for the lines after them. Bad lines are reported on stderr with their
    /// line number; the exit code is 1 if any line failed.
    Inspect {
        /// The file to read; `-` reads standard input.
        file: PathBuf,
        /// The source connector's `time.precision.mode` (for events without a schema block).
        #[arg(long, value_enum, default_value_t = TimeArg::Adaptive)]
        time_precision_mode: TimeArg,
        /// The source connector's `decimal.handling.mode`.
        #[arg(long, value_enum, default_value_t = DecimalArg::Precise)]
        decimal_handling_mode: DecimalArg,
        /// The source connector's `binary.handling.mode`.
        #[arg(long, value_enum, default_value_t = BinaryArg::Bytes)]
        binary_handling_mode: BinaryArg,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum TimeArg {
    Adaptive,
    AdaptiveTimeMicroseconds,
    Connect,
}

#[derive(Clone, Copy, ValueEnum)]
enum DecimalArg {
    Precise,
    String,
    Double,
}

#[derive(Clone, Copy, ValueEnum)]
enum BinaryArg {
    Bytes,
    Base64,
    Base64UrlSafe,
    Hex,
}

/// Output piped into a reader that stops early (`dbmirror status | head`) ends the process
/// quietly, as other command-line tools do, instead of a panic from `println!`.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload().downcast_ref::<String>().map(String::as_str).unwrap_or_default();
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    let format = match cli.log_format {
        LogArg::Text => LogFormat::Text,
        LogArg::Json => LogFormat::Json,
    };
    // Commands that run on an instance folder also log to `<instance>/logs`.
    let instance = match &cli.command {
        Command::Sync { at: AtTenant { at, .. }, .. }
        | Command::ResyncTables { at: AtTenant { at, .. }, .. }
        | Command::RetryErrors { at: AtTenant { at, .. } }
        | Command::ServiceRun { at }
        | Command::Provision { at, .. }
        | Command::Reconnect { at }
        | Command::UpdateSchema { at } => Some(at.instance.clone()),
        _ => None,
    };
    let _log_file = match instance {
        Some(dir) => {
            // `Logging.LogLevel.Default` from the instance's appsettings.json, if readable.
            let level = dbmirror::config::Config::load(&dir.join("appsettings.json"))
                .map(|(c, _)| c.tracing_level())
                .unwrap_or("info");
            telemetry::init_with_file(format, level, &dir.join("logs"))
        }
        None => {
            telemetry::init(format, "info");
            None
        }
    };
    let logs_to_file = _log_file.is_some();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            // With an instance log file the reason goes through the logger, so it lands in the
            // file (in the chosen format) as well as on stderr; otherwise on stderr only.
            if logs_to_file {
                tracing::error!("dbmirror stopped: {}", instance::describe(&e));
            } else {
                eprintln!("error: {}", instance::describe(&e));
            }
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Demo(args) => Ok(if demo::run(args)? { ExitCode::SUCCESS } else { ExitCode::from(1) }),
        Command::Provision { cloud, fingerprint, ca_file, replace, at } => {
            let args = session::ProvisionArgs {
                cloud: &cloud,
                fingerprint: fingerprint.as_deref(),
                ca_file: ca_file.as_deref(),
                replace,
            };
            session::provision(&at.load()?, &args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::UpdateSchema { at } => {
            commands::update_schema(&at.load()?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Reconnect { at } => {
            session::reconnect(&instance::Instance::load_for_reconnect(&at.instance)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { at } => {
            Ok(if report::validate(&at.instance)? { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Install { at, start, unit_dir } => {
            service::install(&at.load()?, &unit_dir, start)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Uninstall { at, unit_dir } => {
            service::uninstall(&at.load()?, &unit_dir)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ServiceRun { at } => {
            #[cfg(windows)]
            windows::run(&at.instance)?;
            #[cfg(not(windows))]
            anyhow::bail!(
                "`service-run` is for the Windows service ({}); on Linux, `install` writes a systemd unit",
                at.instance.display()
            );
            #[allow(unreachable_code)]
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync { at, until_idle, auto_resync, metrics_listen } => {
            let instance = at.at.load()?;
            if at.tenant.is_none() && instance.config.partner.is_some() {
                partner::run(&instance, until_idle, commands::stop_on_signals())?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut instance = instance.select(at.tenant.as_deref())?;
            if metrics_listen.is_some() {
                instance.config.metrics.listen = metrics_listen;
            }
            commands::run_sync(&instance, until_idle, auto_resync)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ResyncTables { tables, at } => {
            commands::resync_tables(&at.load()?, &tables)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Info { at } => {
            report::info(&at.look()?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { at, json } => {
            let instance = instance::Instance::load_to_look(&at.at.instance)?;
            if at.tenant.is_none() && instance.config.partner.is_some() {
                partner::status(&instance, json)?;
                return Ok(ExitCode::SUCCESS);
            }
            report::status(&instance.select(at.tenant.as_deref())?, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Errors { at, json } => {
            let count = report::errors(&at.look()?, json)?;
            Ok(if count == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::RetryErrors { at } => {
            let still = report::retry_errors(&at.load()?)?;
            Ok(if still == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Verify { at } => Ok(if report::verify(&at.look()?)? { ExitCode::SUCCESS } else { ExitCode::from(1) }),
        Command::Inspect { file, time_precision_mode, decimal_handling_mode, binary_handling_mode } => {
            let options = DecodeOptions {
                time_precision: match time_precision_mode {
                    TimeArg::Adaptive => TimePrecisionMode::Adaptive,
                    TimeArg::AdaptiveTimeMicroseconds => TimePrecisionMode::AdaptiveTimeMicroseconds,
                    TimeArg::Connect => TimePrecisionMode::Connect,
                },
                decimal_handling: match decimal_handling_mode {
                    DecimalArg::Precise => DecimalHandlingMode::Precise,
                    DecimalArg::String => DecimalHandlingMode::String,
                    DecimalArg::Double => DecimalHandlingMode::Double,
                },
                binary_handling: match binary_handling_mode {
                    BinaryArg::Bytes => BinaryHandlingMode::Bytes,
                    BinaryArg::Base64 => BinaryHandlingMode::Base64,
                    BinaryArg::Base64UrlSafe => BinaryHandlingMode::Base64UrlSafe,
                    BinaryArg::Hex => BinaryHandlingMode::Hex,
                },
            };
            let mut decoder = Decoder::new(options);
            let stdout = io::stdout();
            let mut out = io::BufWriter::new(stdout.lock());
            let mut errors = io::stderr();
            let summary = if file.as_os_str() == "-" {
                dbmirror::inspect::run(&mut io::stdin().lock(), &mut out, &mut errors, &mut decoder)?
            } else {
                let f = File::open(&file).with_context(|| format!("cannot open {}", file.display()))?;
                dbmirror::inspect::run(&mut BufReader::new(f), &mut out, &mut errors, &mut decoder)?
            };
            if summary.failed > 0 {
                eprintln!("{} of {} records failed to decode", summary.failed, summary.records);
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
