//! Sessions, their token families and the token signing key, saved in the data directory so
//! a restart of `dbmirror-cloud` does not lock clients out: a client's refresh token and
//! committed offsets are still valid afterwards. Written atomically (temp file and rename),
//! readable by the owner only. Pending provisioning requests are not kept.

use crate::protocol::ErrorCode;
use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::auth::Signer;
use super::error::ApiError;
use super::service::{Faults, Session, State};
use crate::protocol::{OwnedPosition as Position, to_list, to_map};

#[derive(Serialize, Deserialize)]
struct SavedSession {
    id: String,
    ctx: String,
    replication_id: String,
    revoked: bool,
    refresh: String,
    used: Vec<String>,
    committed: Vec<Position>,
    reset: Option<Vec<Position>>,
    #[serde(default)]
    reset_epoch: u64,
    #[serde(default)]
    resync_requested: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    signing_key: String,
    sessions: Vec<SavedSession>,
    suspended: Vec<String>,
    min_client_version: String,
    /// Where each tenant's latest full snapshot starts (see `State::last_reset`).
    #[serde(default)]
    last_resets: Vec<(String, Vec<Position>)>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl State {
    /// Loads (or starts) the saved sessions in `dir`. Call before adding tenants.
    pub fn with_store(mut self, dir: &Path) -> Result<Self, ApiError> {
        let path = dir.join("state.json");
        let bad = |e: String| ApiError::new(503, ErrorCode::Unavailable, format!("{}: {e}", path.display()));
        if path.exists() {
            let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
            let saved: Saved = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
            let key = unhex(&saved.signing_key).ok_or_else(|| bad("bad signing key".into()))?;
            self.signer = Signer::from_key(key, "dbmirror-cloud");
            self.min_client_version = saved.min_client_version;
            self.saved_suspended = saved.suspended.into_iter().collect();
            self.last_reset = saved.last_resets.into_iter().map(|(ctx, list)| (ctx, to_map(&list))).collect();
            for s in saved.sessions {
                let session = Session {
                    id: s.id.clone(),
                    ctx: s.ctx,
                    replication_id: s.replication_id,
                    revoked: s.revoked,
                    refresh: unhex(&s.refresh).unwrap_or([0; 32]),
                    used: s.used.iter().filter_map(|u| unhex(u)).collect::<HashSet<_>>(),
                    committed: to_map(&s.committed),
                    reset: s.reset.as_deref().map(to_map),
                    reset_epoch: s.reset_epoch,
                    faults: Faults::default(),
                    last_fetch_ms: None,
                    resync_requested: s.resync_requested.into_iter().collect(),
                };
                self.sessions.insert(s.id, session);
            }
        }
        self.store = Some(path);
        self.save();
        Ok(self)
    }

    /// Writes the sessions file (when there is a store); failures are logged, not fatal: the
    /// service keeps answering from memory.
    pub(super) fn save(&self) {
        let Some(path) = &self.store else { return };
        let saved = Saved {
            signing_key: hex(self.signer.key()),
            sessions: self
                .sessions
                .values()
                .map(|s| SavedSession {
                    id: s.id.clone(),
                    ctx: s.ctx.clone(),
                    replication_id: s.replication_id.clone(),
                    revoked: s.revoked,
                    refresh: hex(&s.refresh),
                    used: s.used.iter().map(|u| hex(u)).collect(),
                    committed: to_list(&s.committed),
                    reset: s.reset.as_ref().map(to_list),
                    reset_epoch: s.reset_epoch,
                    resync_requested: s.resync_requested.iter().cloned().collect(),
                })
                .collect(),
            suspended: self.tenants.iter().filter(|(_, (_, s))| *s).map(|(k, _)| k.clone()).collect(),
            min_client_version: self.min_client_version.clone(),
            last_resets: self.last_reset.iter().map(|(ctx, reset)| (ctx.clone(), to_list(reset))).collect(),
        };
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write as _;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&tmp)?;
            file.write_all(serde_json::to_string(&saved).unwrap_or_default().as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        if let Err(e) = write() {
            tracing::error!("saving sessions to {}: {e}", path.display());
        }
    }
}
