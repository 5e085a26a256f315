//! An instance folder: `appsettings.json`, the token sealing key and the lock that lets one
//! `sync` run per folder. Everything else an instance knows lives in its replica's
//! `_ReplicationState`. Every command starts here; this module depends on no other command.

use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use dbmirror::config::Config;
use dbmirror::pipeline::stored_tokens;
use dbmirror::secrets::{SecretError, SecretKey};
use dbmirror::sink::{Replica, SinkOptions};
use dbmirror::source::client::HttpClient;
use dbmirror::source::replication::{Replication, SessionInfo};
use dbmirror::source::tls::Trust;
use dbmirror::state::StateStore;

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
        Self::load_with_key(dir, SecretKey::load_or_create)
    }

    /// Loads an instance for `reconnect`: a key file that does not open on this machine (the
    /// host moved; on Windows DPAPI binds the file to the machine) is set aside for a new key,
    /// which `reconnect` then seals new tokens with.
    pub fn load_for_reconnect(dir: &Path) -> Result<Self> {
        Self::load_with_key(dir, SecretKey::load_or_replace)
    }

    fn load_with_key(dir: &Path, key: impl FnOnce(&Path) -> Result<SecretKey, SecretError>) -> Result<Self> {
        let (config, warnings) = Config::load(&dir.join("appsettings.json"))?;
        for w in warnings {
            tracing::warn!("appsettings.json: {w}");
        }
        let key = key(&key_path(dir))?;
        Ok(Instance { dir: dir.to_owned(), config, key })
    }

    /// Loads an instance for a command that only looks at it (`validate`, `status`, `verify`,
    /// `info`): no key file is created (an instance without one has no session to open), and
    /// [`Instance::open_existing`] creates no replica.
    pub fn load_to_look(dir: &Path) -> Result<Self> {
        let (config, _) = Config::load(&dir.join("appsettings.json"))?;
        let key = SecretKey::load(&key_path(dir))?.unwrap_or_else(SecretKey::ephemeral);
        Ok(Instance { dir: dir.to_owned(), config, key })
    }

    /// The instance a command works on: with `tenant`, that tenant's database of a partner
    /// instance (any single-tenant command then works on it); without, this one — which must
    /// not be a partner instance, whose tenants each need naming.
    pub fn select(self, tenant: Option<&str>) -> Result<Self> {
        match (tenant, &self.config.partner) {
            (Some(ctx), _) => self.for_tenant(ctx),
            (None, Some(_)) => bail!("this is a partner instance: name the tenant with `--tenant <context id>`"),
            (None, None) => Ok(self),
        }
    }

    /// A partner instance seen as tenant `ctx`'s single-tenant instance: same folder, key and
    /// settings, that tenant's database as the replica.
    pub fn for_tenant(&self, ctx: &str) -> Result<Self> {
        let partner =
            self.config.partner.as_ref().context("`--tenant` is for partner instances (a `Partner` section)")?;
        let databases = dbmirror::partner::databases::Databases::new(&partner.server, &partner.database_name)?;
        let mut config = self.config.clone();
        config.replica.connection_string = databases.connection_string(ctx)?;
        config.partner = None;
        Ok(Instance { dir: self.dir.clone(), config, key: self.key.clone() })
    }

    /// The replica, unless it is a SQLite file that does not exist yet (opening would create
    /// it): then an error that says what to do.
    pub(crate) fn open_existing(&self) -> Result<Box<dyn Replica>> {
        let conn = &self.config.replica.connection_string;
        if let Ok(dbmirror::sink::TargetKind::Sqlite) = dbmirror::sink::TargetKind::detect(conn) {
            let path = dbmirror::sink::sqlite::parse_connection_string(conn)?;
            if path != ":memory:" && !Path::new(&path).exists() {
                bail!("the replica {path} does not exist yet: `dbmirror provision` creates it");
            }
        }
        self.open()
    }

    pub(crate) fn options(&self) -> SinkOptions {
        SinkOptions {
            table_prefix: self.config.replica.table_prefix.clone(),
            skip_tables: self.config.replica.skip_tables.iter().map(|s| s.as_str().into()).collect(),
            owner: self.config.owner.clone(),
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
            format!(
                "opening the replica {}",
                dbmirror::redact::connection_string(&self.config.replica.connection_string)
            )
        })
    }

    /// The two handles of a `sync` run (its bookkeeping and its data path), after the run
    /// became the replica's writer: every write of either proves it still is (see
    /// [`dbmirror::state::fence`]).
    pub(crate) fn open_writer(&self) -> Result<(Box<dyn Replica>, Box<dyn Replica>)> {
        let mut state = self.open()?;
        let fence = state.claim_writer(&dbmirror::state::fence::this_process())?;
        let mut data = self.open()?;
        data.hold_fence(fence);
        Ok((state, data))
    }

    /// The stored session, its trust setting and its tokens.
    pub(crate) fn replication(&self, state: &mut dyn StateStore) -> Result<Replication> {
        let session = state.read_facts()?;
        let info = SessionInfo::from_facts(&session)
            .context("the replica holds no session: run `dbmirror provision` first")?;
        let http = HttpClient::new(&info.cloud_url, Trust::from_facts(&session)?.as_ref())?;
        Ok(Replication::new(http, info, stored_tokens(&session, &self.key)?)?)
    }
}

/// One `sync` at a time per instance folder: an OS file lock on `dbmirror.lock` (see
/// [`dbmirror::lockfile`]), which also holds the owner's process id for messages.
pub struct InstanceLock(#[allow(dead_code)] File);

impl InstanceLock {
    /// The process id of a live holder of the lock, if any.
    pub fn holder(path: &Path) -> Option<String> {
        match dbmirror::lockfile::try_lock(path) {
            Ok(Some(file)) => {
                let _ = file.unlock();
                None
            }
            Ok(None) => {
                let mut pid = String::new();
                let _ = dbmirror::lockfile::open(path).ok()?.read_to_string(&mut pid);
                Some(if pid.trim().is_empty() { "?".into() } else { pid.trim().to_owned() })
            }
            Err(_) => None,
        }
    }

    /// Takes the lock, or says which process holds it.
    pub fn take(path: &Path) -> Result<Self> {
        let Some(mut file) =
            dbmirror::lockfile::try_lock(path).with_context(|| format!("locking {}", path.display()))?
        else {
            let pid = Self::holder(path).unwrap_or_else(|| "?".into());
            bail!("another dbmirror (process {pid}) is running in {}", path.parent().unwrap_or(path).display());
        };
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        file.flush()?;
        Ok(InstanceLock(file))
    }
}

/// The service name of an instance: `dbmirror-<replication-id>`.
pub fn service_name(instance: &Instance) -> Result<(String, SessionInfo)> {
    let mut state = instance.open()?;
    let info = SessionInfo::from_facts(&state.read_facts()?)
        .context("the replica holds no session: run `dbmirror provision` first")?;
    Ok((format!("dbmirror-{}", info.replication_id), info))
}

/// An error and its causes, each once (some errors already include their cause).
pub(crate) fn describe(e: &anyhow::Error) -> String {
    let mut message = e.to_string();
    for cause in e.chain().skip(1).map(ToString::to_string) {
        if !message.contains(&cause) {
            message = format!("{message}: {cause}");
        }
    }
    dbmirror::redact::scrub_known(&message).into_owned()
}
