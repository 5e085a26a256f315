//! Tokens at rest: sealed with AES-256-GCM under a key kept in the instance folder.
//!
//! The key is a file (`dbmirror.key`, mode 0600) next to `appsettings.json`. On Windows the
//! file holds the key protected by DPAPI (machine scope, as the original client uses DPAPI), so
//! a copied key file is useless on another machine; elsewhere it holds the 32 raw bytes. Either
//! way the replica database alone —
//! a backup, a copy for reporting — never holds usable tokens. Moving a replica to another
//! host means moving the key file with the instance folder (or running `reconnect`). Each
//! sealed value is `nonce (12 bytes) || ciphertext+tag`, bound to its name (as associated
//! data) so a sealed refresh token cannot be swapped in as an access token.

use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

/// Why sealing or opening failed.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The key file does not open here: on Windows it was protected on another machine (DPAPI
    /// binds it to the machine), or it is damaged.
    #[error(
        "key file {0} cannot be opened on this machine (made on another one, or damaged): run `dbmirror \
         reconnect`, which keeps the old file aside, makes a new key and gets new tokens"
    )]
    Unusable(PathBuf),
    /// The sealed value does not open with this key (another host's key, or damaged).
    #[error("a stored token cannot be decrypted with this instance's key: run `dbmirror reconnect`")]
    Open,
}

/// How the key file's bytes are protected: as they are (the file's mode protects them).
#[cfg(not(windows))]
mod at_rest {
    pub fn protect(key: &[u8]) -> std::io::Result<Vec<u8>> {
        Ok(key.to_vec())
    }
    pub fn unprotect(stored: &[u8]) -> std::io::Result<Vec<u8>> {
        Ok(stored.to_vec())
    }
}

/// DPAPI with machine scope: the service (LocalSystem) and an administrator's commands can
/// both open it on this machine, and nobody can on another. Compiled for Windows in CI and
/// run under Wine there, whose DPAPI is not bound to a machine; not run on real Windows.
#[cfg(windows)]
#[allow(unsafe_code)] // FFI to DPAPI (the other unsafe code is the console mode in `telemetry`).
mod at_rest {
    use windows_sys::Win32::Foundation::LocalFree;
    use windows_sys::Win32::Security::Cryptography::{
        CRYPT_INTEGER_BLOB, CRYPTPROTECT_LOCAL_MACHINE, CRYPTPROTECT_UI_FORBIDDEN, CryptProtectData, CryptUnprotectData,
    };

    fn call(
        input: &[u8],
        f: impl FnOnce(*const CRYPT_INTEGER_BLOB, *mut CRYPT_INTEGER_BLOB) -> i32,
    ) -> std::io::Result<Vec<u8>> {
        let len = u32::try_from(input.len()).map_err(|_| std::io::Error::other("key file too large"))?;
        let blob_in = CRYPT_INTEGER_BLOB { cbData: len, pbData: input.as_ptr() as *mut u8 };
        let mut blob_out = CRYPT_INTEGER_BLOB { cbData: 0, pbData: std::ptr::null_mut() };
        if f(&blob_in, &mut blob_out) == 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: on success DPAPI returns `cbData` bytes at `pbData`, allocated with LocalAlloc.
        let out = unsafe { std::slice::from_raw_parts(blob_out.pbData, blob_out.cbData as usize).to_vec() };
        // SAFETY: freed once, as DPAPI's documentation requires.
        unsafe { LocalFree(blob_out.pbData.cast()) };
        Ok(out)
    }

    pub fn protect(key: &[u8]) -> std::io::Result<Vec<u8>> {
        let flags = CRYPTPROTECT_LOCAL_MACHINE | CRYPTPROTECT_UI_FORBIDDEN;
        // SAFETY: every pointer is valid for the call; optional arguments are null.
        call(key, |i, o| unsafe {
            CryptProtectData(i, std::ptr::null(), std::ptr::null(), std::ptr::null(), std::ptr::null(), flags, o)
        })
    }

    pub fn unprotect(stored: &[u8]) -> std::io::Result<Vec<u8>> {
        // SAFETY: as above; the description output is not requested.
        call(stored, |i, o| unsafe {
            CryptUnprotectData(
                i,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null(),
                CRYPTPROTECT_UI_FORBIDDEN,
                o,
            )
        })
    }
}

/// A secret setting's value: `env:NAME` (an environment variable), `file:PATH` (a file,
/// relative to the instance folder, its content trimmed) or the value itself (then it sits
/// in the file: the other two are better). The error says what is missing, never the value.
pub fn setting_value(raw: &str, folder: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<u8>, String> {
    let value = if let Some(name) = raw.strip_prefix("env:") {
        let value = env(name).ok_or_else(|| format!("the environment variable {name} is not set"))?;
        if value.trim().is_empty() {
            return Err(format!("the environment variable {name} is empty"));
        }
        value.into_bytes()
    } else if let Some(file) = raw.strip_prefix("file:") {
        let path = folder.join(file);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        text.trim().as_bytes().to_vec()
    } else {
        raw.as_bytes().to_vec()
    };
    if value.is_empty() {
        return Err("the secret is empty".into());
    }
    Ok(value)
}

/// The instance's sealing key.
#[derive(Clone)]
pub struct SecretKey {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// Loads the key file if it exists. Commands that only look (`validate`, `status`,
    /// `verify`) use this, so looking at an instance never creates anything in it.
    pub fn load(path: &Path) -> Result<Option<Self>, SecretError> {
        if !path.exists() {
            return Ok(None);
        }
        Self::load_or_create(path).map(Some)
    }

    /// A key that is never stored: what a command that only looks holds when the instance has
    /// no key yet. Nothing sealed with it is ever written, and nothing stored opens with it.
    pub fn ephemeral() -> Self {
        let key: [u8; 32] = random_bytes();
        SecretKey { cipher: Aes256Gcm::new(&key.into()) }
    }

    /// Loads the key file, creating it (0600) with a random key if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretError> {
        let io = |source| SecretError::Io { path: path.to_owned(), source };
        let unusable = |_| SecretError::Unusable(path.to_owned());
        let bytes = if path.exists() {
            at_rest::unprotect(&std::fs::read(path).map_err(io)?).map_err(unusable)?
        } else {
            let key: [u8; 32] = random_bytes();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            use std::io::Write as _;
            match options.open(path) {
                Ok(mut f) => {
                    f.write_all(&at_rest::protect(&key).map_err(io)?).and_then(|()| f.sync_all()).map_err(io)?;
                    key.to_vec()
                }
                // Another process created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    at_rest::unprotect(&std::fs::read(path).map_err(io)?).map_err(unusable)?
                }
                Err(e) => return Err(io(e)),
            }
        };
        let key: [u8; 32] = bytes.try_into().map_err(|_| SecretError::Unusable(path.to_owned()))?;
        Ok(SecretKey { cipher: Aes256Gcm::new(&key.into()) })
    }

    /// The key for `reconnect`: the key file's, or — when it does not open here (a host moved
    /// to another machine; on Windows DPAPI binds the file to the machine) — a new one, the
    /// old file kept beside it as `<name>.unusable-<ms>`. Tokens sealed with the old key are
    /// lost either way; `reconnect` gets new ones.
    pub fn load_or_replace(path: &Path) -> Result<Self, SecretError> {
        match Self::load_or_create(path) {
            Err(SecretError::Unusable(_)) => {
                let aside = path.with_extension(format!("key.unusable-{}", crate::clock::now_ms()));
                std::fs::rename(path, &aside).map_err(|source| SecretError::Io { path: path.to_owned(), source })?;
                tracing::warn!(kept = %aside.display(), "the key file does not open on this machine: a new key is made");
                Self::load_or_create(path)
            }
            other => other,
        }
    }

    /// Seals `plain` under `name`.
    pub fn seal(&self, name: &str, plain: &str) -> Vec<u8> {
        let nonce: [u8; 12] = random_bytes();
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain.as_bytes(), aad: name.as_bytes() })
            .expect("AES-GCM encryption does not fail for in-memory buffers");
        [nonce.to_vec(), sealed].concat()
    }

    /// Opens a value sealed under `name`.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<String, SecretError> {
        if sealed.len() < 12 {
            return Err(SecretError::Open);
        }
        let (nonce, body) = sealed.split_at(12);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad: name.as_bytes() })
            .map_err(|_| SecretError::Open)?;
        String::from_utf8(plain).map_err(|_| SecretError::Open)
    }
}

/// Random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).expect("the operating system's random source");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_secret_is_refused_with_its_source_named() {
        let env = |name: &str| (name == "EMPTY").then(String::new);
        let folder = Path::new(".");
        assert_eq!(setting_value("env:EMPTY", folder, &env).unwrap_err(), "the environment variable EMPTY is empty");
        assert_eq!(setting_value("env:UNSET", folder, &env).unwrap_err(), "the environment variable UNSET is not set");
        assert_eq!(setting_value("", folder, &env).unwrap_err(), "the secret is empty");
    }

    #[test]
    fn sealed_tokens_open_only_with_their_key_and_name() {
        let dir = std::env::temp_dir().join(format!("dbmirror-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dbmirror.key");
        let _ = std::fs::remove_file(&path);
        let key = SecretKey::load_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let sealed = key.seal("refresh_token", "secret-value");
        assert!(!sealed.windows(12).any(|w| w == b"secret-value"), "not stored in clear");
        assert_eq!(key.open("refresh_token", &sealed).unwrap(), "secret-value");
        assert!(key.open("access_token", &sealed).is_err(), "bound to its name");
        let again = SecretKey::load_or_create(&path).unwrap();
        assert_eq!(again.open("refresh_token", &sealed).unwrap(), "secret-value", "the key file is reused");
        std::fs::remove_file(&path).unwrap();
        let other = SecretKey::load_or_create(&path).unwrap();
        assert!(matches!(other.open("refresh_token", &sealed), Err(SecretError::Open)));
        assert_eq!(format!("{other:?}"), "SecretKey(..)");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_key_file_that_does_not_open_here_is_set_aside_only_by_reconnect() {
        let dir = std::env::temp_dir().join(format!("dbmirror-moved-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dbmirror.key");
        std::fs::write(&path, b"another machine's").unwrap();
        let error = SecretKey::load_or_create(&path).unwrap_err();
        assert!(
            matches!(error, SecretError::Unusable(_)) && error.to_string().contains("dbmirror reconnect"),
            "{error}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"another machine's", "a plain load changes nothing");
        let key = SecretKey::load_or_replace(&path).unwrap();
        let sealed = key.seal("t", "v");
        assert_eq!(SecretKey::load_or_create(&path).unwrap().open("t", &sealed).unwrap(), "v", "the new key is stored");
        let aside: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert!(aside.iter().any(|n| n.to_string_lossy().starts_with("dbmirror.key.unusable-")), "{aside:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
