//! Provisioning: the device-authorization grant an administrator approves in a browser,
//! which creates a session (or re-authorizes one, `reconnect`).

use super::*;

impl State {
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
}

fn user_code() -> String {
    const LETTERS: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
    let bytes = crate::secrets::random_bytes::<8>();
    let chars: String = bytes.iter().map(|b| LETTERS[usize::from(*b) % LETTERS.len()] as char).collect();
    format!("{}-{}", &chars[..4], &chars[4..])
}
