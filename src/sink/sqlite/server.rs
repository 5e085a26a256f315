//! Partner mode on SQLite: the "server" is a folder, each tenant's database a file in it, and
//! a claim an operating-system lock on `<name>.lock` beside it (one host, or hosts sharing a
//! local file system).

use std::path::PathBuf;

use crate::db::SinkError;
use crate::sink::server::{Held, Server};

/// A folder of SQLite databases (`Data Source=<folder>`).
#[derive(Debug, Clone)]
pub struct Folder(PathBuf);

/// A held lock file.
struct LockFile(#[allow(dead_code)] std::fs::File);

impl Held for LockFile {}

fn io(context: String) -> impl FnOnce(std::io::Error) -> SinkError {
    move |source| SinkError::Io { context, source }
}

impl Folder {
    /// The folder a `Data Source=<folder>` names.
    pub fn new(connection_string: &str) -> Result<Self, SinkError> {
        Ok(Folder(PathBuf::from(super::parse_connection_string(connection_string)?)))
    }

    fn create(&self) -> Result<(), SinkError> {
        std::fs::create_dir_all(&self.0).map_err(io(format!("creating {}", self.0.display())))
    }
}

impl Server for Folder {
    fn connection_string(&self, name: &str) -> Result<String, SinkError> {
        Ok(format!("Data Source={}", self.0.join(format!("{name}.db")).display()))
    }

    fn ensure_database(&self, name: &str) -> Result<bool, SinkError> {
        self.create()?;
        // The file is created when the tenant's replica is first opened.
        Ok(!self.0.join(format!("{name}.db")).exists())
    }

    fn databases(&self) -> Result<Vec<String>, SinkError> {
        match std::fs::read_dir(&self.0) {
            Ok(entries) => Ok(entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".db").map(str::to_owned))
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io(format!("listing {}", self.0.display()))(e)),
        }
    }

    fn check_rights(&self) -> Result<String, SinkError> {
        let context = || format!("writing in {}", self.0.display());
        self.create()?;
        let probe = self.0.join(".dbmirror-probe");
        std::fs::write(&probe, b"probe").map_err(io(context()))?;
        std::fs::remove_file(&probe).map_err(io(context()))?;
        Ok(format!("may create tenants' files in {}", self.0.display()))
    }

    fn try_claim(&self, name: &str) -> Result<Option<Box<dyn Held>>, SinkError> {
        self.create()?;
        let path = self.0.join(format!("{name}.lock"));
        let lock = crate::lockfile::try_lock(&path).map_err(io(format!("locking {}", path.display())))?;
        Ok(lock.map(|file| Box::new(LockFile(file)) as Box<dyn Held>))
    }
}
