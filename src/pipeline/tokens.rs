//! The session's tokens at rest and their rotation: sealed in `_ReplicationState`, and a
//! rotated pair stored before it is used, so a crash in between cannot lock the client out.

use crate::secrets::SecretKey;
use crate::source::replication::{Replication, TokenPair};
use crate::state::SessionValue;
use crate::state::StateStore;

use super::PipelineError;

/// Stores rotated tokens (sealed) in the replica's `_ReplicationState`.
pub fn token_store<'a>(
    state: &'a mut (dyn StateStore + Send),
    key: &'a SecretKey,
) -> impl FnMut(&TokenPair) -> Result<(), String> + Send + 'a {
    move |tokens: &TokenPair| {
        state
            .write_facts(&[
                ("access_token", SessionValue::Sealed(key.seal("access_token", &tokens.access))),
                ("refresh_token", SessionValue::Sealed(key.seal("refresh_token", &tokens.refresh))),
                ("access_expires_at_ms", SessionValue::Text(tokens.expires_at_ms.to_string())),
            ])
            .map_err(|e| e.to_string())
    }
}

/// Opens the sealed tokens stored by [`token_store`]; tokens stored in clear are refused.
pub fn stored_tokens(session: &crate::state::Session, key: &SecretKey) -> Result<TokenPair, PipelineError> {
    let sealed = |name: &str| match session.get(name) {
        Some(SessionValue::Sealed(b)) => key.open(name, b).map_err(|e| PipelineError::Record(e.to_string())),
        _ => Err(PipelineError::Record(format!("the replica has no sealed {name}: run `dbmirror provision`"))),
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
pub fn refresh_tokens(
    runtime: &tokio::runtime::Runtime,
    replication: &mut Replication,
    state: &mut (dyn StateStore + Send),
    key: &SecretKey,
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
    let tokens = runtime.block_on(replication.rotate())?;
    token_store(state, key)(&tokens)
        .map_err(|e| PipelineError::Record(format!("the rotated tokens could not be stored: {e}")))?;
    replication.adopt(tokens);
    Ok(())
}
