//! The reference cloud's state and rules, free of HTTP: tenants and their event log,
//! provisioning (an OAuth 2.0 device-authorization-style grant), sessions, token rotation with
//! reuse detection, partner access, consumer offsets, lifecycle actions and fault injection.
//! `http` maps requests onto these methods; tests can call them directly.

use std::collections::{BTreeMap, HashSet};
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
}

/// Parses `major.minor.patch` (missing parts are 0) for comparison.
pub fn version_key(v: &str) -> (u64, u64, u64) {
    let mut parts = v.trim().split('.').map(|p| p.chars().take_while(char::is_ascii_digit).collect::<String>());
    let mut next = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (next(), next(), next())
}

fn user_code() -> String {
    const LETTERS: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
    let bytes = crate::secrets::random_bytes::<8>();
    let chars: String = bytes.iter().map(|b| LETTERS[usize::from(*b) % LETTERS.len()] as char).collect();
    format!("{}-{}", &chars[..4], &chars[4..])
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
        if let Some(journal) = &self.journal {
            let replayed = journal.replay(&mut tenant)?;
            tracing::info!(tenant = tenant.context(), replayed, "rebuilt the tenant from its journal");
        }
        let published = self.log.partitions(&tenant.cdc_topic()) > 0
            && (0..self.log.partitions(&tenant.cdc_topic()))
                .any(|p| self.log.bounds(&tenant.cdc_topic(), p).is_ok_and(|(_, e)| e > 0));
        if !published {
            tenant.publish_initial(&mut self.log, now_ms)?;
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
        self.partners.insert(id.to_owned(), Partner { secret: token_hash(secret), tenants });
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

    fn issue(&mut self, session_id: &str, now_ms: i64) -> Tokens {
        let session = self.sessions.get_mut(session_id).expect("issuing for an existing session");
        let refresh_token = opaque_token();
        session.used.insert(session.refresh);
        session.refresh = token_hash(&refresh_token);
        let ttl = self.token_ttl.as_secs() as i64;
        let now = now_ms / 1000;
        let claims = Claims {
            sub: session.id.clone(),
            ctx: session.ctx.clone(),
            rid: session.replication_id.clone(),
            iat: now,
            exp: now + ttl,
            iss: "dbmirror-cloud".into(),
        };
        let tokens = Tokens { access_token: self.signer.sign(&claims), refresh_token, expires_in: ttl };
        // The rotated refresh token must survive a restart, or the client is locked out.
        self.save();
        tokens
    }

    fn create_session(&mut self, ctx: &str, name: &str) -> Result<String, ApiError> {
        let replication_id = name.trim().to_ascii_lowercase();
        if replication_id.is_empty()
            || replication_id.len() > 40
            || !replication_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ApiError::new(
                400,
                ErrorCode::InvalidSessionName,
                "a session name is 1-40 letters, digits, `-` or `_`",
            ));
        }
        self.tenant(ctx)?;
        if self.sessions.values().any(|s| s.ctx == ctx && s.replication_id == replication_id && !s.revoked) {
            return Err(ApiError::new(
                409,
                ErrorCode::SessionExists,
                format!("tenant {ctx} already has a session `{replication_id}`"),
            ));
        }
        let id = format!("s-{}", &opaque_token()[..16]);
        tracing::info!(tenant = ctx, replication_id = %replication_id, session = %id, "session created");
        self.sessions.insert(
            id.clone(),
            Session {
                id: id.clone(),
                ctx: ctx.to_owned(),
                replication_id,
                revoked: false,
                refresh: [0; 32],
                used: HashSet::new(),
                committed: BTreeMap::new(),
                reset: None,
                reset_epoch: 0,
                faults: Faults::default(),
            },
        );
        Ok(id)
    }

    /// What a client needs to know about its session.
    pub fn session_info(&self, id: &str) -> SessionReply {
        let s = &self.sessions[id];
        let partitions = self.tenant(&s.ctx).map(|t| self.log.partitions(&t.cdc_topic())).unwrap_or(0);
        SessionReply {
            session_id: s.id.clone(),
            tenant_context_id: s.ctx.clone(),
            replication_id: s.replication_id.clone(),
            dispatcher_url: format!("{}/api/v1", self.base_url),
            service_url: format!("{}/api/v1/replication/{}", self.base_url, s.ctx),
            topics: Topics {
                cdc: format!("{}-cdc", s.ctx),
                schema_history: format!("{}-schemahistory", s.ctx),
                cdc_partitions: partitions,
            },
        }
    }

    /// Starts a provisioning request: the device code (secret, for polling) and the user
    /// code the admin confirms in the browser.
    pub fn start_provisioning(&mut self, now_ms: i64) -> DeviceAuthorization {
        self.start_device(now_ms, None)
    }

    /// Starts a re-authorization of an existing session (`reconnect`): after the admin
    /// approves, the session is reinstated (even if revoked) with a new token family.
    pub fn start_reconnect(&mut self, session_id: &str, now_ms: i64) -> Result<DeviceAuthorization, ApiError> {
        if !self.sessions.contains_key(session_id) {
            return Err(ApiError::new(404, ErrorCode::SessionNotFound, "no such session: run `provision` instead"));
        }
        Ok(self.start_device(now_ms, Some(session_id.to_owned())))
    }

    fn start_device(&mut self, now_ms: i64, reconnect: Option<String>) -> DeviceAuthorization {
        let device_code = opaque_token();
        let user_code = user_code();
        self.devices.insert(
            device_code.clone(),
            Device { user_code: user_code.clone(), expires_ms: now_ms + 600_000, outcome: None, reconnect },
        );
        DeviceAuthorization {
            device_code,
            verification_uri: format!("{}/provision", self.base_url),
            verification_uri_complete: format!("{}/provision?user_code={user_code}", self.base_url),
            user_code,
            expires_in: 600,
            interval: 1,
        }
    }

    /// The browser side: the admin of `ctx` approves (creating the session) or denies.
    pub fn decide_provisioning(
        &mut self,
        user_code: &str,
        ctx: &str,
        session_name: &str,
        approve: bool,
        now_ms: i64,
    ) -> Result<Option<SessionReply>, ApiError> {
        let code = user_code.trim().to_ascii_uppercase();
        let device_code = self
            .devices
            .iter()
            .find(|(_, d)| d.user_code == code && d.expires_ms > now_ms && d.outcome.is_none())
            .map(|(k, _)| k.clone())
            .ok_or_else(|| ApiError::new(404, ErrorCode::UnknownUserCode, "this code is unknown, used or expired"))?;
        let reconnect = self.devices[&device_code].reconnect.clone();
        let outcome = match (approve, reconnect) {
            (false, _) => Err(()),
            (true, Some(id)) => {
                let session = self
                    .sessions
                    .get_mut(&id)
                    .ok_or_else(|| ApiError::new(404, ErrorCode::SessionNotFound, "the session is gone"))?;
                if session.ctx != ctx {
                    return Err(ApiError::new(403, ErrorCode::WrongTenant, "this session belongs to another tenant"));
                }
                session.revoked = false;
                tracing::info!(session = %id, "session reconnected");
                Ok(id)
            }
            (true, None) => Ok(self.create_session(ctx, session_name)?),
        };
        let info = outcome.as_ref().ok().map(|id| self.session_info(id));
        self.devices.get_mut(&device_code).expect("found above").outcome = Some(outcome);
        Ok(info)
    }

    /// The session a pending user code would reconnect, for the approval page.
    pub fn reconnect_target(&self, user_code: &str) -> Option<&Session> {
        let code = user_code.trim().to_ascii_uppercase();
        let device = self.devices.values().find(|d| d.user_code == code)?;
        self.sessions.get(device.reconnect.as_ref()?)
    }

    /// The client polls with its device code until the admin decided.
    pub fn poll_provisioning(&mut self, device_code: &str, now_ms: i64) -> Result<Grant, ApiError> {
        let device = self
            .devices
            .get(device_code)
            .ok_or_else(|| ApiError::new(400, ErrorCode::InvalidGrant, "unknown device code"))?;
        match &device.outcome {
            None if device.expires_ms <= now_ms => {
                Err(ApiError::new(400, ErrorCode::ExpiredToken, "the provisioning request expired; start again"))
            }
            None => Err(ApiError::new(
                400,
                ErrorCode::AuthorizationPending,
                "waiting for the administrator to approve in the browser",
            )),
            Some(Err(())) => Err(ApiError::new(400, ErrorCode::AccessDenied, "the administrator denied the request")),
            Some(Ok(id)) => {
                let id = id.clone();
                self.devices.remove(device_code);
                let tokens = self.issue(&id, now_ms);
                Ok(Grant { session: Some(self.session_info(&id)), tokens })
            }
        }
    }

    /// Rotates a refresh token; a used one revokes the session.
    pub fn refresh(&mut self, refresh_token: &str, now_ms: i64) -> Result<Grant, ApiError> {
        let hash = token_hash(refresh_token);
        let session = self
            .sessions
            .values_mut()
            .find(|s| s.refresh == hash || s.used.contains(&hash))
            .ok_or_else(|| ApiError::new(401, ErrorCode::InvalidGrant, "unknown refresh token"))?;
        if session.revoked {
            return Err(ApiError::new(
                403,
                ErrorCode::SessionRevoked,
                "the session was revoked: run `reconnect`, then `provision`",
            ));
        }
        if session.refresh != hash {
            session.revoked = true;
            tracing::warn!(session = %session.id, "refresh token reused: session revoked");
            let id = session.id.clone();
            self.save();
            return Err(ApiError::new(
                403,
                ErrorCode::TokenReused,
                "a refresh token was used twice; the session is revoked",
            )
            .with(json!({"session_id": id})));
        }
        let id = session.id.clone();
        let tokens = self.issue(&id, now_ms);
        Ok(Grant { session: None, tokens })
    }

    /// Re-authentication without re-provisioning (`reconnect`): partner or admin approval is
    /// not modelled, so a revoked session cannot come back this way.
    pub fn revoke(&mut self, session_id: &str) -> Result<(), ApiError> {
        let s = self
            .sessions
            .get_mut(session_id)
            .ok_or_else(|| ApiError::new(404, ErrorCode::SessionNotFound, "no such session"))?;
        s.revoked = true;
        Ok(())
    }

    /// Checks a bearer token and the client version for a request on tenant `ctx`.
    pub fn authorize(
        &self,
        bearer: Option<&str>,
        ctx: &str,
        client_version: Option<&str>,
        now_ms: i64,
    ) -> Result<Claims, ApiError> {
        let token = bearer.ok_or_else(|| {
            ApiError::new(401, ErrorCode::TokenMissing, "send `Authorization: Bearer <access token>`")
        })?;
        let claims = self.signer.verify(token, now_ms / 1000).map_err(|e| match e {
            TokenError::Expired => ApiError::new(401, ErrorCode::TokenExpired, "the access token expired; refresh it"),
            TokenError::Invalid => ApiError::new(401, ErrorCode::TokenInvalid, "the access token is not valid"),
        })?;
        let session = self
            .sessions
            .get(&claims.sub)
            .ok_or_else(|| ApiError::new(404, ErrorCode::SessionNotFound, "the session does not exist"))?;
        if session.faults.expire_tokens {
            return Err(ApiError::new(401, ErrorCode::TokenExpired, "the access token expired; refresh it (injected)"));
        }
        if session.revoked {
            return Err(ApiError::new(
                403,
                ErrorCode::SessionRevoked,
                "the session was revoked: run `reconnect`, then `provision`",
            ));
        }
        if claims.ctx != ctx {
            return Err(ApiError::new(403, ErrorCode::WrongTenant, "the token is for another tenant"));
        }
        let version = client_version.unwrap_or("0.0.0");
        if version_key(version) < version_key(&self.min_client_version) {
            return Err(ApiError::new(
                426,
                ErrorCode::ClientTooOld,
                format!("client {version} is older than the minimum {}", self.min_client_version),
            )
            .with(json!({"minimum_version": self.min_client_version})));
        }
        if self.tenants.get(ctx).is_some_and(|(_, suspended)| *suspended) {
            let retry_after = self.suspended_retry_after_s;
            return Err(ApiError::new(423, ErrorCode::TenantSuspended, "the tenant is suspended").retry(retry_after));
        }
        Ok(claims)
    }

    /// Checks a partner's Basic credentials.
    pub fn partner(&self, id: &str, secret: &str) -> Result<&Partner, ApiError> {
        self.partners
            .get(id)
            .filter(|p| p.secret == token_hash(secret))
            .ok_or_else(|| ApiError::new(401, ErrorCode::InvalidClient, "unknown partner or wrong secret"))
    }

    /// A partner creates a session for one of its tenants and receives its first tokens.
    pub fn partner_session(
        &mut self,
        partner: &str,
        secret: &str,
        ctx: &str,
        name: &str,
        now_ms: i64,
    ) -> Result<Grant, ApiError> {
        if !self.partner(partner, secret)?.tenants.iter().any(|t| t == ctx) {
            return Err(ApiError::new(
                403,
                ErrorCode::TenantNotApproved,
                format!("tenant {ctx} has not approved this partner's app"),
            ));
        }
        let id = self.create_session(ctx, name)?;
        let tokens = self.issue(&id, now_ms);
        Ok(Grant { session: Some(self.session_info(&id)), tokens })
    }

    /// A partner's sessions across its tenants.
    pub fn partner_sessions(&self, partner: &str, secret: &str) -> Result<Json, ApiError> {
        let p = self.partner(partner, secret)?;
        let list: Vec<Json> = self
            .sessions
            .values()
            .filter(|s| p.tenants.contains(&s.ctx))
            .map(|s| json!({"session_id": s.id, "tenant_context_id": s.ctx, "replication_id": s.replication_id, "revoked": s.revoked}))
            .collect();
        Ok(json!({ "sessions": list }))
    }

    /// Records acknowledged offsets (never moving backwards).
    pub fn commit(&mut self, session_id: &str, offsets: &[Position]) -> Result<(), ApiError> {
        let ends: Vec<i64> =
            offsets.iter().map(|p| self.log.bounds(&p.topic, p.partition).map(|(_, e)| e)).collect::<Result<_, _>>()?;
        let s = self
            .sessions
            .get_mut(session_id)
            .ok_or_else(|| ApiError::new(404, ErrorCode::SessionNotFound, "no such session"))?;
        for (p, end) in offsets.iter().zip(ends) {
            if p.offset >= end {
                return Err(ApiError::new(
                    409,
                    ErrorCode::OffsetOutOfRange,
                    format!("{}/{} has no offset {}", p.topic, p.partition, p.offset),
                ));
            }
            let slot = s.committed.entry((p.topic.clone(), p.partition)).or_insert(p.offset);
            *slot = (*slot).max(p.offset);
        }
        self.save();
        Ok(())
    }

    /// The published schema: tables, exact column types, keys and a hash per table.
    pub fn schema(&self, ctx: &str) -> Result<SchemaReply, ApiError> {
        let tenant = self.tenant(ctx)?;
        let tables = tenant
            .schemas()
            .into_iter()
            .map(|t| PublishedTable {
                table: t.id.to_string(),
                primary_key: t.primary_key.clone(),
                columns: t
                    .columns
                    .iter()
                    .map(|c| PublishedColumn {
                        name: c.name.clone(),
                        sql_type: column_type_text(c),
                        nullable: c.nullable,
                        default: c.default_expression.clone(),
                    })
                    .collect(),
                schema_hash: t.fingerprint(),
                approx_rows: tenant.rows(&t.id).map_or(0, |r| r.len() as u64),
            })
            .collect();
        Ok(SchemaReply { tables })
    }

    /// Ends, committed offsets and lag per partition, and the tenant's state.
    pub fn status(&self, session_id: &str) -> Result<StatusReply, ApiError> {
        let s = self
            .sessions
            .get(session_id)
            .ok_or_else(|| ApiError::new(404, ErrorCode::SessionNotFound, "no such session"))?;
        let tenant = self.tenant(&s.ctx)?;
        let mut partitions = Vec::new();
        for topic in [tenant.cdc_topic(), tenant.history_topic()] {
            for partition in 0..self.log.partitions(&topic) {
                let (start, end) = self.log.bounds(&topic, partition)?;
                let committed = s.committed.get(&(topic.clone(), partition)).copied();
                let lag = end - committed.map_or(start, |c| c + 1);
                partitions.push(PartitionStatus { topic: topic.clone(), partition, start, end, committed, lag });
            }
        }
        Ok(StatusReply {
            session: self.session_info(session_id),
            tenant_suspended: self.tenants.get(&s.ctx).is_some_and(|(_, x)| *x),
            minimum_client_version: self.min_client_version.clone(),
            partitions,
        })
    }

    /// Row counts and checksums of the tenant's tables (the ground truth for `verify`).
    pub fn ground_truth(&self, ctx: &str) -> Result<GroundTruth, ApiError> {
        let tables = self
            .tenant(ctx)?
            .checksums()
            .into_iter()
            .map(|(id, (rows, sum))| TableTruth { table: id.to_string(), rows, checksum: format!("{sum:016x}") })
            .collect();
        Ok(GroundTruth { tables })
    }

    /// Resets every session of a tenant to a fresh full snapshot (`reset-offsets`, or a
    /// source restore): a new snapshot is appended and sessions must continue from its start.
    pub fn reset_offsets(&mut self, ctx: &str, now_ms: i64, restore: bool) -> Result<Json, ApiError> {
        if restore && let Some(journal) = &mut self.journal {
            journal.record(ctx, now_ms, &TenantOp::Restore)?;
        }
        let (tenant, log) = self.tenant_mut(ctx)?;
        let topic = tenant.cdc_topic();
        let starts = if restore {
            tenant.restore(log, now_ms)?
        } else {
            let starts = log.ends(&topic);
            let ids: Vec<TableId> = tenant.schemas().iter().map(|s| s.id.clone()).collect();
            tenant.resnapshot(log, now_ms, &ids)?;
            starts
        };
        let reset: BTreeMap<(String, i32), i64> = starts.iter().map(|(p, o)| ((topic.clone(), *p), *o)).collect();
        for s in self.sessions.values_mut().filter(|s| s.ctx == ctx) {
            s.reset = Some(reset.clone());
            s.reset_epoch += 1;
            s.committed.retain(|(t, _), _| *t != topic);
        }
        tracing::info!(tenant = ctx, restore, "offsets reset to a fresh snapshot");
        self.save();
        Ok(json!({"positions": positions_json(&reset)}))
    }

    /// Suspends or resumes a tenant; resuming resets offsets to a fresh snapshot.
    pub fn suspend(&mut self, ctx: &str, suspended: bool, now_ms: i64) -> Result<Json, ApiError> {
        self.tenant(ctx)?;
        self.tenants.get_mut(ctx).expect("checked").1 = suspended;
        tracing::info!(tenant = ctx, suspended, "tenant suspension changed");
        self.save();
        if suspended { Ok(json!({"suspended": true})) } else { self.reset_offsets(ctx, now_ms, false) }
    }

    /// Applies `count` random changes to every running tenant.
    pub fn tick(&mut self, count: usize, now_ms: i64) -> Result<(), ApiError> {
        let running: Vec<String> = self.tenants.iter().filter(|(_, (_, s))| !*s).map(|(k, _)| k.clone()).collect();
        for ctx in running {
            self.run(&ctx, &TenantOp::Change { count }, now_ms)?;
        }
        Ok(())
    }
}

fn positions_json(map: &BTreeMap<(String, i32), i64>) -> Json {
    Json::Array(map.iter().map(|((t, p), o)| json!({"topic": t, "partition": p, "offset": o})).collect())
}

impl State {
    /// Reads what is available now for a fetch (possibly nothing). Checks resets and
    /// retention first, so an error is reported before any record is sent.
    pub fn fetch_now(&mut self, session_id: &str, req: &FetchRequest) -> Result<Vec<bytes::Bytes>, ApiError> {
        let s = self
            .sessions
            .get_mut(session_id)
            .ok_or_else(|| ApiError::new(404, ErrorCode::SessionNotFound, "no such session"))?;
        // A reset is reported until the client says (with `reset_epoch`) that it reloaded
        // from it: its stored epoch moves in the same replica transaction as the cleared
        // tables, so a crash in between is told again.
        if req.reset_epoch < s.reset_epoch {
            let positions = s.reset.as_ref().map(to_list).unwrap_or_default();
            // The snapshot was appended when the offsets were reset: today's ends are past it.
            let ends: BTreeMap<(String, i32), i64> = s
                .reset
                .iter()
                .flatten()
                .map(|((t, p), _)| Ok(((t.clone(), *p), self.log.next_offset(t, *p)?)))
                .collect::<Result<_, LogError>>()?;
            return Err(ApiError::new(409, ErrorCode::OffsetsReset, "the tenant's offsets were reset: a fresh snapshot starts at the given positions; reload every table from there")
                .with(serde_json::to_value(ResetDetails { positions, until: to_list(&ends), reset_epoch: s.reset_epoch }).unwrap_or_default()));
        }
        let rewind = std::mem::take(&mut s.faults.redeliver);
        let mut lines = Vec::new();
        let (max_events, max_bytes) = (req.max_events as usize, usize::try_from(req.max_bytes).unwrap_or(usize::MAX));
        let mut bytes = 0;
        for p in &req.positions {
            let (start, _) = self.log.bounds(&p.topic, p.partition)?;
            let from = if rewind > 0 { (p.offset - rewind).max(start) } else { p.offset };
            let budget = max_events.saturating_sub(lines.len());
            if budget == 0 || bytes >= max_bytes {
                break;
            }
            let fetched = self.log.fetch(&p.topic, p.partition, from, budget, max_bytes - bytes)?;
            for r in fetched.records {
                bytes += r.line.len() + 1;
                lines.push(r.line);
            }
        }
        Ok(lines)
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
        let purged = c.fetch_now(&later, &all(0)).unwrap_err();
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
