//! The passes' side of the network: one runtime and one cloud client per cloud URL, shared by
//! every pass. A pass used to build its own client and runtime, so each pass connected anew
//! — over HTTPS a TLS handshake and a new HTTP/2 connection per pass — and the connections
//! died with the pass. Here they are pooled and outlive the pass (see
//! [`Replication::sharing`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::source::client::{HttpClient, SourceError};
use crate::source::replication::{Replication, SessionInfo, TokenPair};
use crate::source::tls::Trust;

/// A runtime of `threads` threads named `name`, for network tasks shared by many tenants
/// (the passes' connections here, the watches' in [`super::watch`]).
pub(super) fn runtime(threads: usize, name: &str) -> Result<tokio::runtime::Runtime, SourceError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(SourceError::Runtime)
}

/// The shared runtime and the clients (see the module docs).
pub struct PassNet {
    runtime: Arc<tokio::runtime::Runtime>,
    trust: Option<Trust>,
    clients: Mutex<HashMap<String, HttpClient>>,
}

impl std::fmt::Debug for PassNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassNet").finish_non_exhaustive()
    }
}

impl PassNet {
    /// Clients verifying clouds with `trust`. Two threads run the connections (TLS, HTTP/2
    /// framing) while the workers decode and apply on their own threads.
    pub fn new(trust: Option<Trust>) -> Result<Self, SourceError> {
        Ok(PassNet { runtime: Arc::new(runtime(2, "partner-net")?), trust, clients: Mutex::default() })
    }

    /// A session of `info` on the shared runtime, through the pooled client of its cloud.
    pub fn session(&self, info: SessionInfo, tokens: TokenPair) -> Result<Replication, SourceError> {
        let http = {
            let mut clients = self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match clients.get(&info.cloud_url) {
                Some(client) => client.clone(),
                None => {
                    let client = HttpClient::new(&info.cloud_url, self.trust.as_ref())?;
                    clients.insert(info.cloud_url.clone(), client.clone());
                    client
                }
            }
        };
        Ok(Replication::sharing(http, info, tokens, self.runtime.clone()))
    }
}
