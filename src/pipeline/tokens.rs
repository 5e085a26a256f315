//! The session's tokens at rest and their rotation: sealed in `_ReplicationState`, and a
//! rotated pair stored before it is used, so a crash in between cannot lock the client out.

use std::sync::atomic::AtomicBool;

use crate::policy::{Action, sink_action};
use crate::retry::Backoff;
use crate::secrets::SecretKey;
use crate::sink::SinkError;
use crate::source::replication::{Replication, TokenPair};
use crate::state::{Session, SessionValue, StateStore};

use super::PipelineError;

/// Stores tokens (sealed) in the replica's `_ReplicationState`, in one transaction.
pub fn store_tokens(state: &mut (dyn StateStore + Send), key: &SecretKey, tokens: &TokenPair) -> Result<(), SinkError> {
    state.write_facts(&token_facts(key, tokens))
}

/// The facts [`store_tokens`] writes, for a caller that stores them with others in one
/// transaction (a new session and its first tokens).
pub fn token_facts(key: &SecretKey, tokens: &TokenPair) -> [(&'static str, SessionValue); 3] {
    [
        ("access_token", SessionValue::Sealed(key.seal("access_token", &tokens.access))),
        ("refresh_token", SessionValue::Sealed(key.seal("refresh_token", &tokens.refresh))),
        ("access_expires_at_ms", SessionValue::Text(tokens.expires_at_ms.to_string())),
    ]
}

/// Opens the sealed tokens stored by [`store_tokens`]; tokens stored in clear are refused.
pub fn stored_tokens(session: &Session, key: &SecretKey) -> Result<TokenPair, PipelineError> {
    let sealed = |name: &str| match session.get(name) {
        Some(SessionValue::Sealed(b)) => key.open(name, b).map_err(|e| PipelineError::Session(e.to_string())),
        _ => Err(PipelineError::Session(format!("the replica has no sealed {name}: run `dbmirror provision`"))),
    };
    let expires = match session.get("access_expires_at_ms") {
        Some(SessionValue::Text(t)) => t.parse().unwrap_or(0),
        _ => 0,
    };
    Ok(TokenPair { access: sealed("access_token")?, refresh: sealed("refresh_token")?, expires_at_ms: expires })
}

/// Rotates the tokens: the new pair is stored (sealed) in the replica before it is used.
///
/// The stored pair is read first: another process of the same instance (`status` or `verify`
/// next to a running service) may have rotated already. Its pair is then the live one, and
/// rotating with ours would present a dead refresh token, which the cloud treats as theft
/// and answers by revoking the whole session.
///
/// After the cloud rotated, the old refresh token is dead and the new one exists only in
/// memory: if the replica cannot store it (down, locked), storing is retried with backoff
/// until it succeeds, as long as the process runs.
pub fn refresh_tokens(
    replication: &mut Replication,
    state: &mut (dyn StateStore + Send),
    key: &SecretKey,
    stop: &AtomicBool,
) -> Result<(), PipelineError> {
    let stored = state.read_facts().map_err(PipelineError::Sink).and_then(|s| stored_tokens(&s, key));
    if let Ok(stored) = stored
        && stored.refresh != replication.tokens().refresh
    {
        replication.adopt(stored);
        if !replication.needs_refresh() {
            return Ok(());
        }
    }
    let tokens = replication.rotate()?;
    let mut backoff = Backoff::cloud();
    while let Err(e) = store_tokens(state, key, &tokens) {
        let Action::Retry { .. } = sink_action(&e) else { return Err(PipelineError::TokenStore(e)) };
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            tracing::error!(
                error = %e,
                "stopping before the rotated tokens could be stored: the session must be renewed with `dbmirror reconnect`"
            );
            return Err(PipelineError::TokenStore(e));
        }
        tracing::warn!(error = %e, "the rotated tokens could not be stored yet; retrying before they are used");
        backoff.wait(None, stop);
    }
    replication.adopt(tokens);
    Ok(())
}
