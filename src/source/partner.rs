//! The Dispatcher's partner API from the client's side: which tenants approved the partner's
//! application, and a session for one of them without a browser (a partner instance mirrors
//! every approving tenant, see [`crate::partner`]). Typed calls, each blocking on this
//! client's own runtime, like [`super::replication::Replication`].

use hyper::Method;

use super::client::{Credentials, HttpClient, SourceError};
use crate::protocol::{Grant, PartnerSessionRequest, PartnerTenants};

/// A partner's client of one cloud's Dispatcher. The secret never appears in `Debug`.
pub struct PartnerApi {
    http: HttpClient,
    id: String,
    secret: String,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for PartnerApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartnerApi").field("http", &self.http).field("id", &self.id).finish_non_exhaustive()
    }
}

impl PartnerApi {
    /// The partner `id` with its `secret`, over `http`.
    pub fn new(http: HttpClient, id: &str, secret: &str) -> Result<Self, SourceError> {
        let runtime = super::client::blocking_runtime(&http)?;
        Ok(PartnerApi { http, id: id.to_owned(), secret: secret.to_owned(), runtime })
    }

    fn credentials(&self) -> Credentials<'_> {
        Credentials::Basic { user: &self.id, secret: &self.secret }
    }

    /// The tenants that approve the partner's application now.
    pub fn tenants(&self) -> Result<Vec<String>, SourceError> {
        let path = "/api/v1/partner/tenants";
        let reply: PartnerTenants =
            self.runtime.block_on(self.http.typed_as(Method::GET, path, self.credentials(), None))?;
        Ok(reply.tenants)
    }

    /// A new session for `tenant`, named `session_name`, with its first tokens.
    pub fn create_session(&self, tenant: &str, session_name: &str) -> Result<Grant, SourceError> {
        let request = PartnerSessionRequest { tenant: tenant.to_owned(), session_name: session_name.to_owned() };
        let body = serde_json::to_value(&request).map_err(|e| SourceError::BadReply {
            url: self.http.base().to_owned(),
            reason: format!("unencodable request: {e}"),
        })?;
        let path = "/api/v1/partner/sessions";
        self.runtime.block_on(self.http.typed_as(Method::POST, path, self.credentials(), Some(&body)))
    }

    /// The cloud's base URL.
    pub fn base(&self) -> &str {
        self.http.base()
    }
}
