//! What a tenant's own database records about partner mode, as session facts: which host
//! mirrors it, whether it is still approved, and its recent passes (host, start, end) — what
//! `status` shows, and what shows that no two processes ever wrote it at once.

use crate::db::SinkError;
use crate::state::{Session, SessionValue, StateStore};

/// `mirroring` or `withdrawn`.
pub const STATE: &str = "partner_state";
/// The host (and process) that ran the latest pass.
pub const HOST: &str = "partner_host";
/// The latest passes: one `host start_ms end_ms` per line, `end_ms` `-` while running.
pub const PASSES: &str = "partner_passes";
/// Passes kept.
const KEEP: usize = 200;

/// One pass of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    /// `host/pid`.
    pub host: String,
    /// When it took the tenant (ms since the epoch).
    pub start_ms: i64,
    /// When it let go; `None` while running, or if its process died.
    pub end_ms: Option<i64>,
}

fn text(session: &Session, name: &str) -> Option<String> {
    match session.get(name) {
        Some(SessionValue::Text(t)) if !t.is_empty() => Some(t.clone()),
        _ => None,
    }
}

/// The recorded passes, oldest first.
pub fn read(session: &Session) -> Vec<Pass> {
    text(session, PASSES)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut parts = line.split(' ');
            let (host, start, end) = (parts.next()?, parts.next()?, parts.next()?);
            Some(Pass { host: host.to_owned(), start_ms: start.parse().ok()?, end_ms: end.parse().ok() })
        })
        .collect()
}

fn write(state: &mut dyn StateStore, passes: &[Pass], extra: &[(&str, SessionValue)]) -> Result<(), SinkError> {
    let from = passes.len().saturating_sub(KEEP);
    let lines: Vec<String> = passes[from..]
        .iter()
        .map(|p| format!("{} {} {}", p.host, p.start_ms, p.end_ms.map_or("-".to_owned(), |e| e.to_string())))
        .collect();
    let mut facts = vec![(PASSES, SessionValue::Text(lines.join("\n")))];
    facts.extend(extra.iter().cloned());
    state.write_facts(&facts)
}

/// Records a pass starting now on `host` (the tenant is approved and mirrored).
pub fn start(state: &mut dyn StateStore, host: &str, now_ms: i64) -> Result<(), SinkError> {
    let mut passes = read(&state.read_facts()?);
    passes.push(Pass { host: host.to_owned(), start_ms: now_ms, end_ms: None });
    let extra = [(HOST, SessionValue::Text(host.to_owned())), (STATE, SessionValue::Text("mirroring".into()))];
    write(state, &passes, &extra)
}

/// Records the end of `host`'s latest pass.
pub fn end(state: &mut dyn StateStore, host: &str, now_ms: i64) -> Result<(), SinkError> {
    let mut passes = read(&state.read_facts()?);
    if let Some(pass) = passes.iter_mut().rev().find(|p| p.host == host && p.end_ms.is_none()) {
        pass.end_ms = Some(now_ms);
    }
    write(state, &passes, &[])
}

/// Records that the tenant withdrew its approval.
pub fn withdrawn(state: &mut dyn StateStore) -> Result<(), SinkError> {
    state.write_facts(&[(STATE, SessionValue::Text("withdrawn".into()))])
}

/// (`mirroring`/`withdrawn`, host of the latest pass), as recorded.
pub fn summary(session: &Session) -> (Option<String>, Option<String>) {
    (text(session, STATE), text(session, HOST))
}
