//! The `Partner` section of `appsettings.json`: the partner's credentials, the cloud, the
//! server its tenants' databases live on, and how the worker pool paces passes.

use std::path::Path;
use std::time::Duration;

use super::databases;
use crate::settings::{ConfigError, Reader, bad, lookup};
use crate::source::tls::Trust;

/// A secret that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// The `Partner` section of `appsettings.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerConfig {
    /// The partner id (`Partner.Id`).
    pub id: String,
    /// The partner secret (`Partner.Secret`: `env:NAME`, `file:PATH` or the value).
    pub secret: Secret,
    /// The Dispatcher's base URL (`Partner.Cloud`).
    pub cloud_url: String,
    /// How the cloud's certificate is trusted (`Partner.Fingerprint`, `Partner.CaFile`;
    /// the system's roots otherwise).
    pub trust: Option<Trust>,
    /// The server every tenant's database is on (`Partner.ServerConnectionString`).
    pub server: String,
    /// The tenants' database names (`Partner.DatabaseName`, `Mirror_{contextId}`).
    pub database_name: String,
    /// The session name new sessions get (`Partner.SessionName`, `dbmirror`).
    pub session_name: String,
    /// Passes at once in this process (`Partner.Workers`, 4).
    pub workers: usize,
    /// How often the tenant list is read (`Partner.PollSeconds`, 30).
    pub poll: Duration,
    /// The least time between two passes of a tenant that records keep arriving at, and how
    /// long an idle tenant waits when it cannot be watched (`Partner.IdleSeconds`, 2).
    pub idle: Duration,
    /// The longest a pass holds a worker (`Partner.SliceSeconds`, 10).
    pub slice: Duration,
    /// Reload a tenant past the cloud's retention without asking (`Partner.AutoResync`, true).
    pub auto_resync: bool,
}

impl PartnerConfig {
    /// Defaults for everything but the partner, its secret, the cloud and the server.
    pub fn new(id: &str, secret: Secret, cloud_url: &str, server: &str) -> Self {
        PartnerConfig {
            id: id.to_owned(),
            secret,
            cloud_url: cloud_url.to_owned(),
            trust: None,
            server: server.to_owned(),
            database_name: databases::DEFAULT_PATTERN.to_owned(),
            session_name: "dbmirror".to_owned(),
            workers: 4,
            poll: Duration::from_secs(30),
            idle: Duration::from_secs(2),
            slice: Duration::from_secs(10),
            auto_resync: true,
        }
    }
}

/// Reads the `Partner` section (see [`crate::partner`]); `None` without one.
pub fn parse(r: &Reader<'_>, folder: &Path) -> Result<Option<PartnerConfig>, ConfigError> {
    if lookup(r.root, &["Partner"]).is_none() {
        return Ok(None);
    }
    let required = |key: &str, what: &str| {
        r.text(&["Partner", key])?.ok_or_else(|| bad(&format!("Partner.{key}"), format!("required: {what}")))
    };
    let id = required("Id", "the partner id the Dispatcher gave you")?;
    let raw_secret = required("Secret", "the partner secret: env:NAME or file:PATH")?;
    let secret =
        crate::secrets::setting_value(&raw_secret, folder, r.env).map_err(|reason| bad("Partner.Secret", reason))?;
    let secret = String::from_utf8(secret).map_err(|_| bad("Partner.Secret", "the secret is not text"))?;
    let cloud = required("Cloud", "the Dispatcher's URL, e.g. https://dispatcher.example")?;
    let server = required(
        "ServerConnectionString",
        "the server every tenant's database is created on (or `Data Source=<folder>` for SQLite files)",
    )?;
    crate::redact::remember(&server);
    crate::redact::remember_secret(&secret);
    let mut config = PartnerConfig::new(&id, Secret::new(secret), &cloud, &server);
    if let Some(pattern) = r.text(&["Partner", "DatabaseName"])? {
        if !pattern.contains(super::databases::CONTEXT_ID) {
            return Err(bad("Partner.DatabaseName", "must contain {contextId}, e.g. Mirror_{contextId}"));
        }
        config.database_name = pattern;
    }
    if let Some(name) = r.text(&["Partner", "SessionName"])? {
        config.session_name = name;
    }
    let ca_file = r.text(&["Partner", "CaFile"])?.map(|ca| folder.join(ca));
    config.trust =
        crate::source::tls::Trust::from_settings(r.text(&["Partner", "Fingerprint"])?.as_deref(), ca_file.as_deref())
            .map_err(|e| bad("Partner.Fingerprint", e.to_string()))?;
    config.workers = r.integer(&["Partner", "Workers"], 4, 1, 256)? as usize;
    config.poll = Duration::from_secs(r.integer(&["Partner", "PollSeconds"], 30, 1, 3600)?);
    config.idle = Duration::from_secs(r.integer(&["Partner", "IdleSeconds"], 2, 1, 3600)?);
    config.slice = Duration::from_secs(r.integer(&["Partner", "SliceSeconds"], 10, 1, 600)?);
    config.auto_resync = r.boolean(&["Partner", "AutoResync"], true)?;
    Ok(Some(config))
}
