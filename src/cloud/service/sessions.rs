//! Sessions and their tokens: creation, the JWT and rotating refresh token (reuse revokes the
//! session), authorization of every replication request, and partner access.

use super::*;

impl State {
    pub(super) fn issue(&mut self, session_id: &str, now_ms: i64) -> Tokens {
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

    pub(super) fn create_session(&mut self, ctx: &str, name: &str) -> Result<String, ApiError> {
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
                // A session created after an offset reset starts with it: its client's first
                // fetch is told to continue from the latest full snapshot.
                reset: self.last_reset.get(ctx).cloned(),
                reset_epoch: u64::from(self.last_reset.contains_key(ctx)),
                faults: Faults::default(),
                last_fetch_ms: None,
                resync_requested: BTreeSet::new(),
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
        self.refuse_if_suspended(ctx)?;
        Ok(claims)
    }

    /// `423 tenant_suspended` (with `Retry-After`) while `ctx` is suspended: checked when a
    /// request arrives and again when a waiting long-poll wakes, so a client hears of a
    /// suspension at once instead of at the end of its current long-poll.
    pub fn refuse_if_suspended(&self, ctx: &str) -> Result<(), ApiError> {
        if self.tenants.get(ctx).is_some_and(|(_, suspended)| *suspended) {
            let retry_after = self.suspended_retry_after_s;
            return Err(ApiError::new(423, ErrorCode::TenantSuspended, "the tenant is suspended").retry(retry_after));
        }
        Ok(())
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
        if let Some(p) = self.partners.get_mut(partner) {
            p.sessions.push(id.clone());
        }
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
}
