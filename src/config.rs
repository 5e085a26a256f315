//! `appsettings.json`: the original Replication client's keys, so existing files carry over.
//!
//! Keys are case-insensitive (as in .NET configuration). Environment variables override the
//! file: `DBMIRROR_<Key>` with `__` between levels, e.g. `DBMIRROR_MaxBatchSize=5000` or
//! `DBMIRROR_ReplicaDatabase__ConnectionString=…`. A bad value is reported with its key path;
//! unknown keys are returned as warnings, not errors, because real files carry other sections
//! (`ApplicationInsights`, NLog settings). Connection strings are secrets: `Debug` and
//! [`crate::redact::connection_string`] never show passwords.

use crate::pipeline::{DEFAULT_COMMIT_INTERVAL, DEFAULT_DATABASE_BATCH_SIZE, SyncOptions};
use crate::protocol::{DEFAULT_MAX_BYTES, DEFAULT_MAX_EVENTS, DEFAULT_MAX_WAIT_MS};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

pub use crate::settings::ConfigError;
use crate::settings::{Reader, bad, env_override, kind, lookup};

/// The replica database settings (`ReplicaDatabase`).
#[derive(Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// `ReplicaDatabase.ConnectionString`: SQL Server (`Server=…`), SQLite (`Data Source=…`
    /// or `sqlite://…`) or PostgreSQL (`postgres://…`). Contains secrets.
    pub connection_string: String,
    /// `ReplicaDatabase.TablePrefix`: destination schema override, applied at the initial snapshot.
    pub table_prefix: Option<String>,
    /// `ReplicaDatabase.SkipTables`: source tables never replicated (`schema.table` or `table`).
    pub skip_tables: Vec<String>,
    /// `ReplicaDatabase.ErrorPolicy`: `Stop` (hold at a refused batch) or `Isolate` (store the
    /// refused changes in `_ReplicationErrors` and go on).
    pub isolate_refused: bool,
}

impl fmt::Debug for ReplicaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicaConfig")
            .field("connection_string", &crate::redact::connection_string(&self.connection_string))
            .field("table_prefix", &self.table_prefix)
            .field("skip_tables", &self.skip_tables)
            .field("isolate_refused", &self.isolate_refused)
            .finish()
    }
}

/// Every setting, with the original client's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `MaxBatchSize`: most events one fetch returns (10,000).
    pub max_batch_size: u32,
    /// `MaxPollTimeSeconds`: how long the service holds a long-poll open (30 s).
    pub max_poll_time: Duration,
    /// `MaxBytes`: soft limit on a fetch response (16 MB).
    pub max_bytes: u64,
    /// `CommitIntervalSeconds`: how often applied offsets are acknowledged to the cloud (60 s).
    pub commit_interval: Duration,
    /// `SchemaUpdateIntervalSeconds` (3600 s): accepted so the original client's files load.
    /// It has no effect: schema changes are read from the schema-history topic with every
    /// fetch, so they apply as they happen.
    pub schema_update_interval: Duration,
    /// `DatabaseBatchSize`: events per replica transaction (10,000).
    pub database_batch_size: u32,
    /// `ReplicaDatabase`.
    pub replica: ReplicaConfig,
    /// `Logging.LogLevel.Default` (or `Logging.EventLog.LogLevel.Default`): `Information`, …
    pub log_level: String,
    /// `Metrics`.
    pub metrics: MetricsConfig,
    /// `WholeSourceTransactions`: cut replica transactions only between source transactions
    /// (true).
    pub whole_transactions: bool,
    /// `Hooks`, `Columns` and `DeleteModes`: the owner's rules (see [`crate::owner`]), parsed
    /// once and shared.
    pub owner: std::sync::Arc<crate::owner::OwnerRules>,
    /// `Partner`: mirror every tenant approving the partner's app (see [`crate::partner`]).
    pub partner: Option<crate::partner::PartnerConfig>,
}

/// `Metrics`: the Prometheus endpoint and health check of a running `sync`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `Metrics.Listen`: a local address (`127.0.0.1:9464`) for `/metrics` and `/healthz`;
    /// unset, nothing listens.
    pub listen: Option<String>,
    /// `Metrics.HealthWindowSeconds`: `/healthz` answers 503 when no cycle succeeded for this
    /// long (300 s).
    pub health_window: Duration,
    /// `Metrics.StatusPageActions`: the status page offers a Resync button per table (off).
    pub status_page_actions: bool,
}

/// Parses `16 MB`, `512KB`, `1GB` or a plain number of bytes.
fn byte_size(key: &str, raw: &str) -> Result<u64, ConfigError> {
    let text = raw.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad(key, format!("expected a size like `16 MB`, found `{raw}`")))?;
    let factor: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" | "K" | "KIB" => 1 << 10,
        "MB" | "M" | "MIB" => 1 << 20,
        "GB" | "G" | "GIB" => 1 << 30,
        other => return Err(bad(key, format!("unknown size unit `{other}` (use B, KB, MB or GB)"))),
    };
    number
        .checked_mul(factor)
        .filter(|&b| b >= 1 << 10)
        .ok_or_else(|| bad(key, format!("size `{raw}` is out of range")))
}

const KNOWN_TOP_LEVEL: &[&str] = &[
    "Partner",
    "DeleteModes",
    "MaxBatchSize",
    "MaxPollTimeSeconds",
    "MaxBytes",
    "CommitIntervalSeconds",
    "SchemaUpdateIntervalSeconds",
    "DatabaseBatchSize",
    "ReplicaDatabase",
    "Logging",
    "Metrics",
    "Hooks",
    "WholeSourceTransactions",
    "Columns",
];

impl Config {
    /// Reads `path` with overrides from the process environment.
    pub fn load(path: &Path) -> Result<(Config, Vec<String>), ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { path: path.display().to_string(), reason: e.to_string() })?;
        Self::parse(&text, &path.display().to_string(), &|name| std::env::var(name).ok())
    }

    /// Parses a file's text; `env` supplies overrides. Returns the settings and warnings about
    /// keys this client does not use.
    pub fn parse(
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(Config, Vec<String>), ConfigError> {
        // Files written for .NET may start with a byte-order mark.
        let text = text.trim_start_matches('\u{feff}');
        let root: Value = serde_json::from_str(text)
            .map_err(|e| ConfigError::Syntax { path: origin.to_owned(), reason: e.to_string() })?;
        if !root.is_object() {
            return Err(ConfigError::Syntax {
                path: origin.to_owned(),
                reason: "the top level must be an object".into(),
            });
        }
        let r = Reader { root: &root, env };
        let seconds =
            |key: &str, default: u64, min: u64, max: u64| r.integer(&[key], default, min, max).map(Duration::from_secs);
        let folder = Path::new(origin).parent().unwrap_or(Path::new("."));
        let partner = crate::partner::config::parse(&r, folder)?;
        // A partner instance's replicas are its tenants' databases on the partner's server.
        let connection_string = match (r.text(&["ReplicaDatabase", "ConnectionString"])?, &partner) {
            (Some(conn), _) => conn,
            (None, Some(p)) => p.server.clone(),
            (None, None) => {
                return Err(bad(
                    "ReplicaDatabase.ConnectionString",
                    "required: the replica database, e.g. `Data Source=replica.db`",
                ));
            }
        };
        // From here on every log line and printed error hides its secrets, however they are quoted.
        crate::redact::remember(&connection_string);
        let skip_tables = match env_override(env, &["ReplicaDatabase", "SkipTables"]) {
            Some(list) => list.split([',', ';']).map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect(),
            None => match lookup(&root, &["ReplicaDatabase", "SkipTables"]) {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| bad("ReplicaDatabase.SkipTables", "every entry must be a table name string"))
                    })
                    .collect::<Result<_, _>>()?,
                Some(other) => {
                    return Err(bad(
                        "ReplicaDatabase.SkipTables",
                        format!("expected a list of table names, found {}", kind(other)),
                    ));
                }
            },
        };
        let max_bytes = match r.raw(&["MaxBytes"]) {
            None => DEFAULT_MAX_BYTES,
            Some(raw) => byte_size("MaxBytes", &raw?)?,
        };
        let log_level = r
            .text(&["Logging", "LogLevel", "Default"])?
            .or(r.text(&["Logging", "EventLog", "LogLevel", "Default"])?)
            .unwrap_or_else(|| "Information".to_owned());
        if !["Trace", "Debug", "Information", "Warning", "Error", "Critical", "None"]
            .iter()
            .any(|l| l.eq_ignore_ascii_case(&log_level))
        {
            return Err(bad(
                "Logging.LogLevel.Default",
                format!("unknown level `{log_level}` (Trace, Debug, Information, Warning, Error, Critical, None)"),
            ));
        }
        let owner = crate::owner::OwnerRules::parse(|name| lookup(&root, &[name]).cloned(), folder, env)
            .map_err(|e| ConfigError::Value { key: e.key, reason: e.reason })?;
        let config = Config {
            max_batch_size: r.integer(&["MaxBatchSize"], u64::from(DEFAULT_MAX_EVENTS), 1, 1_000_000)? as u32,
            max_poll_time: seconds("MaxPollTimeSeconds", DEFAULT_MAX_WAIT_MS / 1000, 1, 300)?,
            max_bytes,
            commit_interval: seconds("CommitIntervalSeconds", DEFAULT_COMMIT_INTERVAL.as_secs(), 1, 86_400)?,
            schema_update_interval: seconds("SchemaUpdateIntervalSeconds", 3_600, 10, 7 * 86_400)?,
            database_batch_size: r.integer(
                &["DatabaseBatchSize"],
                u64::from(DEFAULT_DATABASE_BATCH_SIZE),
                1,
                1_000_000,
            )? as u32,
            replica: ReplicaConfig {
                connection_string,
                table_prefix: r.text(&["ReplicaDatabase", "TablePrefix"])?,
                skip_tables,
                isolate_refused: match r.text(&["ReplicaDatabase", "ErrorPolicy"])? {
                    None => false,
                    Some(p) if p.eq_ignore_ascii_case("stop") => false,
                    Some(p) if p.eq_ignore_ascii_case("isolate") => true,
                    Some(other) => {
                        return Err(bad(
                            "ReplicaDatabase.ErrorPolicy",
                            format!("expected \"Stop\" or \"Isolate\", found `{other}`"),
                        ));
                    }
                },
            },
            log_level,
            metrics: MetricsConfig {
                listen: match r.text(&["Metrics", "Listen"])? {
                    Some(a) if a.parse::<std::net::SocketAddr>().is_err() => {
                        return Err(bad("Metrics.Listen", format!("`{a}` is not an address like 127.0.0.1:9464")));
                    }
                    listen => listen,
                },
                health_window: r
                    .integer(&["Metrics", "HealthWindowSeconds"], 300, 5, 86_400)
                    .map(Duration::from_secs)?,
                status_page_actions: r.boolean(&["Metrics", "StatusPageActions"], false)?,
            },
            owner: std::sync::Arc::new(owner),
            whole_transactions: r.boolean(&["WholeSourceTransactions"], true)?,
            partner,
        };
        let warnings = root
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| !KNOWN_TOP_LEVEL.iter().any(|known| known.eq_ignore_ascii_case(k)))
            .map(|(k, _)| format!("{origin}: `{k}` is not used by dbmirror"))
            .collect();
        Ok((config, warnings))
    }

    /// The pipeline's knobs, by the same names, for a run of `sync`.
    pub fn sync_options(&self) -> SyncOptions {
        SyncOptions {
            fetch: crate::pipeline::FetchLimits {
                max_events: self.max_batch_size,
                max_bytes: self.max_bytes,
                max_wait: self.max_poll_time,
            },
            commit_interval: self.commit_interval,
            database_batch_size: self.database_batch_size,
            isolate_refused: self.replica.isolate_refused,
            whole_transactions: self.whole_transactions,
            owner: self.owner.clone(),
            ..SyncOptions::default()
        }
    }

    /// The level for `tracing`'s filter.
    pub fn tracing_level(&self) -> &'static str {
        match self.log_level.to_ascii_lowercase().as_str() {
            "trace" => "trace",
            "debug" => "debug",
            "warning" => "warn",
            "error" | "critical" => "error",
            "none" => "off",
            _ => "info",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "appsettings.json", &|_| None).map(|(c, _)| c)
    }

    #[test]
    fn defaults_are_the_original_clients() {
        let c = parse(r#"{"ReplicaDatabase":{"ConnectionString":"Data Source=replica.db"}}"#).unwrap();
        assert_eq!(c.max_batch_size, 10_000);
        assert_eq!(c.max_poll_time, Duration::from_secs(30));
        assert_eq!(c.max_bytes, 16 << 20);
        assert_eq!(c.commit_interval, Duration::from_secs(60));
        assert_eq!(c.schema_update_interval, Duration::from_secs(3600));
        assert_eq!(c.database_batch_size, 10_000);
        assert_eq!(c.replica.table_prefix, None);
        assert_eq!(c.log_level, "Information");
    }

    #[test]
    fn a_real_file_with_other_sections_and_any_case() {
        let text = "\u{feff}{\"maxbatchsize\": 5000, \"MaxBytes\": \"8 MB\", \"ReplicaDatabase\": {\"connectionString\": \"Server=.;Database=crm;User Id=sa;Password=S3cret!\", \"TablePrefix\": \"dbo\", \"SkipTables\": [\"crm7.ticket_log\"]},
            \"Logging\": {\"EventLog\": {\"LogLevel\": {\"Default\": \"Warning\", \"Microsoft\": \"Warning\"}}}, \"ApplicationInsights\": {\"ConnectionString\": \"InstrumentationKey=x\"}}";
        let (c, warnings) = Config::parse(text, "appsettings.json", &|_| None).unwrap();
        assert_eq!(c.max_batch_size, 5000);
        assert_eq!(c.max_bytes, 8 << 20);
        assert_eq!(c.replica.table_prefix.as_deref(), Some("dbo"));
        assert_eq!(c.replica.skip_tables, vec!["crm7.ticket_log"]);
        assert_eq!(c.tracing_level(), "warn");
        assert_eq!(warnings, vec!["appsettings.json: `ApplicationInsights` is not used by dbmirror"]);
        let debug = format!("{c:?}");
        assert!(!debug.contains("S3cret"), "{debug}");
        assert!(debug.contains("Password=***"), "{debug}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = |text: &str| parse(text).unwrap_err().to_string();
        assert_eq!(
            err(r#"{}"#),
            "ReplicaDatabase.ConnectionString: required: the replica database, e.g. `Data Source=replica.db`"
        );
        let base = r#""ReplicaDatabase":{"ConnectionString":"Data Source=r.db"}"#;
        assert_eq!(
            err(&format!(r#"{{"MaxBatchSize":"lots",{base}}}"#)),
            "MaxBatchSize: expected a whole number from 1 to 1000000, found `lots`"
        );
        assert_eq!(
            err(&format!(r#"{{"MaxPollTimeSeconds":0,{base}}}"#)),
            "MaxPollTimeSeconds: must be from 1 to 300, found 0"
        );
        assert_eq!(
            err(&format!(r#"{{"MaxBytes":"16 XB",{base}}}"#)),
            "MaxBytes: unknown size unit `XB` (use B, KB, MB or GB)"
        );
        assert_eq!(
            err(&format!(r#"{{"DatabaseBatchSize":[1],{base}}}"#)),
            "DatabaseBatchSize: expected a value, found a list"
        );
        assert!(
            err(&format!(r#"{{"Logging":{{"LogLevel":{{"Default":"Loud"}}}},{base}}}"#))
                .starts_with("Logging.LogLevel.Default: unknown level `Loud`")
        );
        assert!(
            err(r#"{"ReplicaDatabase":{"ConnectionString":"x","SkipTables":"crm7.a"}}"#)
                .starts_with("ReplicaDatabase.SkipTables:")
        );
        let syntax = parse("{\n \"MaxBatchSize\": 5,\n}").unwrap_err().to_string();
        assert!(syntax.starts_with("appsettings.json is not valid JSON:") && syntax.contains("line 3"), "{syntax}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = |name: &str| match name {
            "DBMIRROR_MaxBatchSize" => Some("7".to_owned()),
            "DBMIRROR_ReplicaDatabase__ConnectionString" => Some("sqlite://other.db".to_owned()),
            "DBMIRROR_ReplicaDatabase__SkipTables" => Some("crm7.a, crm7.b".to_owned()),
            _ => None,
        };
        let (c, _) = Config::parse(r#"{"MaxBatchSize":5}"#, "appsettings.json", &env).unwrap();
        assert_eq!(c.max_batch_size, 7);
        assert_eq!(c.replica.connection_string, "sqlite://other.db");
        assert_eq!(c.replica.skip_tables, vec!["crm7.a", "crm7.b"]);
    }
}
