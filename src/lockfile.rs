//! An operating-system lock on a file: held while the handle lives, released by the operating
//! system when the process ends, however it ends, so a crash never leaves a stale lock. Used
//! for one `sync` per instance folder and for a partner's claim on a SQLite tenant.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

/// The lock file, created when missing (its content is the caller's).
pub fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)
}

/// Takes the lock on `path` if no other process holds it; `None` when one does.
pub fn try_lock(path: &Path) -> std::io::Result<Option<File>> {
    let file = open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e),
    }
}
