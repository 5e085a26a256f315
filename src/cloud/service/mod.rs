//! The reference cloud's state and rules, free of HTTP: tenants and their event log,
//! provisioning (an OAuth 2.0 device-authorization-style grant), sessions, token rotation with
//! reuse detection, partner access, consumer offsets, lifecycle actions and fault injection.
//! `http` maps requests onto these methods; tests can call them directly. The methods are
//! split by role: [`provisioning`] (the device grant), [`sessions`] (tokens, authorization,
//! partners), [`replication`] (fetch, commit, status, schema) and [`operations`] (resets,
//! suspensions, the workload); this file holds the state they share.

mod operations;
pub use operations::OverviewPage;
mod provisioning;
mod replication;
mod sessions;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use super::auth::{Claims, Signer, TokenError, opaque_token, token_hash};
use super::error::ApiError;
use super::journal::{Journal, TenantOp};
use super::log::{EventLog, LogError};
use super::tenant::Tenant;
use crate::protocol::{
    DeviceAuthorization, ErrorCode, FetchRequest, Grant, GroundTruth, OwnedPosition as Position, PartitionStatus,
    PublishedColumn, PublishedTable, ResetDetails, SchemaReply, SessionReply, StatusReply, TableTruth, Tokens, Topics,
    to_list,
};
use crate::schema::{TableId, column_type_text};

/// Faults injected into one session's requests (tests set them through the admin API).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Answer this many next requests with 503 and `Retry-After`.
    pub fail_next: u32,
    /// Answer this many next requests with 429 and `Retry-After` (rate limited).
    pub rate_limit_next: u32,
    /// Cut the connection after half of this many next fetch bodies.
    pub drop_mid_body_next: u32,
    /// End this many next fetch bodies inside a record line.
    pub truncate_next: u32,
    /// Pause this long between streamed records.
    pub slow_ms: u64,
    /// Rewind the next fetch by this many offsets per partition (at-least-once redelivery).
    pub redeliver: i64,
    /// Treat every access token of the session as expired (until cleared).
    pub expire_tokens: bool,
    /// Shift the `Date` response header by this many seconds.
    pub clock_skew_secs: i64,
}

/// One replication session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Session id.
    pub id: String,
    /// Tenant context id.
    pub ctx: String,
    /// Replication ID: the session name, lower-cased.
    pub replication_id: String,
    /// Revoked by an operator or by refresh-token reuse.
    pub revoked: bool,
    pub(super) refresh: [u8; 32],
    pub(super) used: HashSet<[u8; 32]>,
    /// Committed (acknowledged) offsets: the last processed offset per topic/partition.
    pub committed: BTreeMap<(String, i32), i64>,
    /// Set by an offset reset: where the session must continue from.
    pub reset: Option<BTreeMap<(String, i32), i64>>,
    /// Number of offset resets so far; a fetch that says it has handled fewer is refused
    /// with `offsets_reset` until the client has reloaded from the reset positions.
    pub reset_epoch: u64,
    /// Injected faults.
    pub faults: Faults,
    /// When the session last fetched (ms since the epoch); not saved across restarts.
    pub last_fetch_ms: Option<i64>,
    /// Tables an operator asked a fresh snapshot of: announced to the client with every fetch
    /// (`x-resync-requested`) until its `POST resync` covers them.
    pub resync_requested: BTreeSet<String>,
}

/// A pending provisioning request.
#[derive(Debug, Clone)]
struct Device {
    user_code: String,
    expires_ms: i64,
    outcome: Option<Result<String, ()>>,
    /// For `reconnect`: the existing session the approval re-authorizes.
    reconnect: Option<String>,
}

/// A multi-tenant partner's credentials and the tenants that approved its app.
#[derive(Debug, Clone)]
pub struct Partner {
    secret: [u8; 32],
    /// Tenant context ids.
    pub tenants: Vec<String>,
    /// Sessions the partner created (ended when their tenant withdraws its approval).
    pub sessions: Vec<String>,
}

/// Everything the cloud knows.
#[derive(Debug)]
pub struct State {
    /// The event log of every tenant.
    pub log: EventLog,
    pub(super) tenants: BTreeMap<String, (Tenant, bool)>,
    pub(super) sessions: BTreeMap<String, Session>,
    devices: BTreeMap<String, Device>,
    partners: BTreeMap<String, Partner>,
    /// The oldest client version the service accepts.
    pub min_client_version: String,
    /// The `Retry-After` (seconds) sent while a tenant is suspended (tests shorten it).
    pub suspended_retry_after_s: u64,
    /// Access-token lifetime.
    pub token_ttl: Duration,
    /// Public base URL (for provisioning links and session URLs).
    pub base_url: String,
    pub(super) signer: Signer,
    journal: Option<Journal>,
    /// Where sessions and the signing key are saved (see `persist`).
    pub(super) store: Option<std::path::PathBuf>,
    /// Tenants saved as suspended, applied when they are added.
    pub(super) saved_suspended: HashSet<String>,
    /// Per tenant, where its latest full snapshot (an offset reset) starts: a session created
    /// later reads from there, not from offset 0, since the log before it may describe rows a
    /// source restore took away.
    pub(super) last_reset: BTreeMap<String, BTreeMap<(String, i32), i64>>,
}

/// Parses `major.minor.patch` (missing parts are 0) for comparison.
pub fn version_key(v: &str) -> (u64, u64, u64) {
    let mut parts = v.trim().split('.').map(|p| p.chars().take_while(char::is_ascii_digit).collect::<String>());
    let mut next = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (next(), next(), next())
}

impl State {
    /// An empty cloud.
    pub fn new(log: EventLog, base_url: String) -> Self {
        State {
            log,
            tenants: BTreeMap::new(),
            sessions: BTreeMap::new(),
            devices: BTreeMap::new(),
            partners: BTreeMap::new(),
            min_client_version: "0.1.0".into(),
            suspended_retry_after_s: 30,
            token_ttl: Duration::from_secs(20 * 60),
            base_url,
            signer: Signer::new("dbmirror-cloud"),
            journal: None,
            store: None,
            saved_suspended: HashSet::new(),
            last_reset: BTreeMap::new(),
        }
    }

    /// Keeps a journal of tenant operations in `dir`, so ground truth survives restarts.
    /// Call before [`State::add_tenant`].
    pub fn with_journal(mut self, dir: &std::path::Path) -> Result<Self, ApiError> {
        self.journal = Some(Journal::open(dir)?);
        Ok(self)
    }

    /// Runs (and journals) an operation that changes a tenant's data or schema.
    pub fn run(&mut self, ctx: &str, op: &TenantOp, now_ms: i64) -> Result<Json, ApiError> {
        self.tenant(ctx)?;
        if let Some(journal) = &mut self.journal {
            journal.record(ctx, now_ms, op)?;
        }
        let (tenant, log) = self.tenant_mut(ctx)?;
        op.apply(tenant, log, now_ms)
    }

    /// Adds a tenant and publishes its initial snapshot (unless its topics already hold one,
    /// as after a restart with a durable log).
    pub fn add_tenant(&mut self, mut tenant: Tenant, now_ms: i64) -> Result<(), ApiError> {
        crate::protocol::check_context_id(tenant.context())
            .map_err(|reason| ApiError::new(400, ErrorCode::BadRequest, reason))?;
        if let Some(journal) = &self.journal {
            let replayed = journal.replay(&mut tenant)?;
            tracing::info!(tenant = tenant.context(), replayed, "rebuilt the tenant from its journal");
        }
        let published = self.log.partitions(&tenant.cdc_topic()) > 0
            && (0..self.log.partitions(&tenant.cdc_topic()))
                .any(|p| self.log.bounds(&tenant.cdc_topic(), p).is_ok_and(|(_, e)| e > 0));
        if !published {
            tenant.publish_initial(&mut self.log, now_ms)?;
        } else {
            tenant.assume_changed_up_to(&self.log.ends(&tenant.cdc_topic()));
        }
        let suspended = self.saved_suspended.contains(tenant.context());
        self.tenants.insert(tenant.context().to_owned(), (tenant, suspended));
        Ok(())
    }

    /// Raises (or lowers) the oldest accepted client version.
    pub fn set_min_client_version(&mut self, version: &str) {
        self.min_client_version = version.to_owned();
        tracing::info!(version, "minimum client version changed");
        self.save();
    }

    /// Registers a partner with its secret and the tenants that approved its app.
    pub fn add_partner(&mut self, id: &str, secret: &str, tenants: Vec<String>) {
        self.partners.insert(id.to_owned(), Partner { secret: token_hash(secret), tenants, sessions: Vec::new() });
    }

    /// A tenant approves the partner's application (`approve`) or withdraws its approval:
    /// the partner's sessions of that tenant are then revoked, as the Dispatcher ends a
    /// withdrawn app's access.
    pub fn set_approval(&mut self, partner: &str, ctx: &str, approved: bool) -> Result<Json, ApiError> {
        self.tenant(ctx)?;
        let p = self
            .partners
            .get_mut(partner)
            .ok_or_else(|| ApiError::new(404, ErrorCode::NotFound, format!("no partner `{partner}`")))?;
        p.tenants.retain(|t| t != ctx);
        let mut revoked = Vec::new();
        if approved {
            p.tenants.push(ctx.to_owned());
        } else {
            let ids = p.sessions.clone();
            for id in ids {
                if let Some(s) = self.sessions.get_mut(&id).filter(|s| s.ctx == ctx && !s.revoked) {
                    s.revoked = true;
                    revoked.push(id);
                }
            }
        }
        Ok(json!({ "partner": partner, "tenant": ctx, "approved": approved, "revoked_sessions": revoked }))
    }

    /// The tenant context ids.
    pub fn tenant_ids(&self) -> Vec<String> {
        self.tenants.keys().cloned().collect()
    }

    /// A tenant, mutably, with the log.
    pub fn tenant_mut(&mut self, ctx: &str) -> Result<(&mut Tenant, &mut EventLog), ApiError> {
        let (tenant, _) = self
            .tenants
            .get_mut(ctx)
            .ok_or_else(|| ApiError::new(404, ErrorCode::TenantNotFound, format!("no tenant `{ctx}`")))?;
        Ok((tenant, &mut self.log))
    }

    /// A tenant.
    pub fn tenant(&self, ctx: &str) -> Result<&Tenant, ApiError> {
        self.tenants
            .get(ctx)
            .map(|(t, _)| t)
            .ok_or_else(|| ApiError::new(404, ErrorCode::TenantNotFound, format!("no tenant `{ctx}`")))
    }

    /// Notes that `id` is fetching now (the Operation Center shows it).
    pub fn fetching(&mut self, id: &str, now_ms: i64) {
        if let Some(s) = self.sessions.get_mut(id) {
            s.last_fetch_ms = Some(now_ms);
        }
    }

    /// A session.
    pub fn session(&self, id: &str) -> Option<&Session> {
        self.sessions.get(id)
    }

    /// Sets a session's injected faults.
    pub fn set_faults(&mut self, session_id: &str, faults: Faults) -> Result<(), ApiError> {
        let s = self
            .sessions
            .get_mut(session_id)
            .ok_or_else(|| ApiError::new(404, ErrorCode::SessionNotFound, "no such session"))?;
        s.faults = faults;
        Ok(())
    }

    /// Takes one pending 429 or 503 fault, if any.
    pub fn take_failure(&mut self, session_id: &str) -> Option<ApiError> {
        let s = self.sessions.get_mut(session_id)?;
        if s.faults.rate_limit_next > 0 {
            s.faults.rate_limit_next -= 1;
            return Some(ApiError::new(429, ErrorCode::RateLimited, "too many requests (injected)").retry(2));
        }
        (s.faults.fail_next > 0).then(|| {
            s.faults.fail_next -= 1;
            ApiError::new(503, ErrorCode::Unavailable, "the service is temporarily unavailable (injected)").retry(1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::crm::published_tables;
    use crate::cloud::tenant::TenantConfig;

    fn cloud() -> State {
        let mut state = State::new(EventLog::in_memory(Duration::from_secs(60)), "http://127.0.0.1:1".into());
        let config =
            TenantConfig { context: "cust1".into(), seed: 1, rows_per_table: 3, partitions: 2, with_schema: false };
        state.add_tenant(Tenant::new(config, published_tables()), 0).unwrap();
        state
    }

    #[test]
    fn provisioning_refresh_rotation_and_reuse_revocation() {
        let mut c = cloud();
        let start = c.start_provisioning(0);
        let device = start.device_code.clone();
        let code = start.user_code.clone();
        assert_eq!(c.poll_provisioning(&device, 1).unwrap_err().code, "authorization_pending");
        assert_eq!(
            c.decide_provisioning(&code, "cust1", "Bad Name!", true, 2).unwrap_err().code,
            "invalid_session_name"
        );
        let info = c.decide_provisioning(&code, "cust1", "Reporting", true, 2).unwrap();
        assert_eq!(info.unwrap().replication_id, "reporting");
        let granted = c.poll_provisioning(&device, 3).unwrap();
        let access = granted.tokens.access_token.clone();
        let refresh1 = granted.tokens.refresh_token.clone();
        assert!(c.poll_provisioning(&device, 4).is_err(), "a device code is good once");
        let claims = c.authorize(Some(&access), "cust1", Some("0.1.0"), 5).unwrap();
        assert_eq!(c.authorize(Some(&access), "cust1", Some("0.0.9"), 5).unwrap_err().status, 426);
        assert_eq!(c.authorize(Some(&access), "other", Some("0.1.0"), 5).unwrap_err().code, "wrong_tenant");
        assert_eq!(c.authorize(Some(&access), "cust1", Some("0.1.0"), 21 * 60_000).unwrap_err().code, "token_expired");
        let refresh2 = c.refresh(&refresh1, 6).unwrap().tokens.refresh_token;
        assert_ne!(refresh1, refresh2);
        // The old refresh token again: stolen. The whole session is revoked.
        assert_eq!(c.refresh(&refresh1, 7).unwrap_err().code, "token_reused");
        assert_eq!(c.refresh(&refresh2, 8).unwrap_err().code, "session_revoked");
        assert_eq!(c.authorize(Some(&access), "cust1", Some("0.1.0"), 9).unwrap_err().code, "session_revoked");
        assert!(c.session(&claims.sub).unwrap().revoked);
    }

    #[test]
    fn fetch_commit_reset_and_purge() {
        let mut c = cloud();
        c.add_partner("p1", "secret", vec!["cust1".into()]);
        assert_eq!(c.partner_session("p1", "wrong", "cust1", "x", 0).unwrap_err().code, "invalid_client");
        let granted = c.partner_session("p1", "secret", "cust1", "bi", 0).unwrap();
        let id = granted.session.unwrap().session_id;
        let all = |offset| FetchRequest {
            positions: vec![
                Position { topic: "cust1-cdc".into(), partition: 0, offset },
                Position { topic: "cust1-cdc".into(), partition: 1, offset },
            ],
            max_events: 10_000,
            max_bytes: 1 << 20,
            max_wait_ms: 0,
            reset_epoch: 0,
        };
        let first = c.fetch_now(&id, &all(0)).unwrap();
        assert_eq!(first.len(), published_tables().len() * 3);
        c.commit(&id, &[Position { topic: "cust1-cdc".into(), partition: 0, offset: 1 }]).unwrap();
        assert_eq!(
            c.commit(&id, &[Position { topic: "cust1-cdc".into(), partition: 0, offset: 10_000 }]).unwrap_err().code,
            "offset_out_of_range"
        );
        let reset = c.reset_offsets("cust1", 10, false).unwrap();
        let err = c.fetch_now(&id, &all(0)).unwrap_err();
        assert_eq!((err.status, err.code.as_str()), (409, "offsets_reset"));
        assert_eq!(err.details["positions"], reset["positions"]);
        c.log.enforce_retention(120_000).unwrap();
        let later = c.partner_session("p1", "secret", "cust1", "bi2", 0).unwrap();
        let later = later.session.unwrap().session_id;
        // A session created after the reset starts with it: it is told where the snapshot is.
        let first = c.fetch_now(&later, &all(0)).unwrap_err();
        assert_eq!((first.status, first.code.as_str()), (409, "offsets_reset"));
        assert_eq!(first.details["positions"], reset["positions"]);
        // Reading from offset 0 anyway (having handled the reset) finds it purged.
        let purged = c.fetch_now(&later, &FetchRequest { reset_epoch: 1, ..all(0) }).unwrap_err();
        assert_eq!((purged.status, purged.code.as_str()), (410, "offset_purged"));
        assert!(purged.details["earliest"].as_i64().unwrap() > 0);
        assert_eq!(c.suspend("cust1", true, 11).unwrap()["suspended"], true);
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(version_key("0.10.0") > version_key("0.9.9"));
        assert_eq!(version_key("1.2"), (1, 2, 0));
    }
}
