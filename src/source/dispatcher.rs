//! The Dispatcher from the client's side: the device grant that creates a session (or
//! re-authorizes one) after an administrator approves it in a browser. Typed calls, each
//! blocking on this client's own runtime, like [`super::replication::Replication`].

use hyper::Method;

use super::client::{HttpClient, SourceError};
use crate::protocol::{DeviceAuthorization, ErrorCode, Grant, GrantPoll, GrantRequest};

/// A client of one cloud's Dispatcher.
pub struct Dispatcher {
    http: HttpClient,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").field("http", &self.http).finish_non_exhaustive()
    }
}

/// Where a device grant stands.
#[derive(Debug)]
pub enum GrantState {
    /// The administrator has not decided yet (or the client polls too often).
    Pending,
    /// Approved: the session and its first tokens.
    Granted(Box<Grant>),
}

impl Dispatcher {
    /// A Dispatcher client over `http`.
    pub fn new(http: HttpClient) -> Result<Self, SourceError> {
        let runtime = super::client::blocking_runtime(&http)?;
        Ok(Dispatcher { http, runtime })
    }

    /// Starts a device grant: a new session, or (with `session_id`) the same one re-authorized.
    pub fn start(&self, session_id: Option<&str>) -> Result<DeviceAuthorization, SourceError> {
        let request = GrantRequest { session_id: session_id.map(str::to_owned) };
        self.runtime.block_on(self.http.typed(Method::POST, "/api/v1/provisioning", None, Some(&request)))
    }

    /// Polls a device grant once.
    pub fn poll(&self, device_code: &str) -> Result<GrantState, SourceError> {
        let poll = GrantPoll { device_code: device_code.to_owned() };
        match self.runtime.block_on(self.http.typed(Method::POST, "/api/v1/provisioning/token", None, Some(&poll))) {
            Ok(grant) => Ok(GrantState::Granted(Box::new(grant))),
            Err(SourceError::Service { code: ErrorCode::AuthorizationPending | ErrorCode::SlowDown, .. }) => {
                Ok(GrantState::Pending)
            }
            Err(e) => Err(e),
        }
    }
}
