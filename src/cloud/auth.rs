//! Tokens of the reference cloud: signed JWT access tokens (HS256) and opaque refresh tokens.
//!
//! The access token carries the tenant and session, so the Replication Service can check a
//! request without a lookup; it lives about 20 minutes. Refresh tokens are random, stored only
//! as SHA-256 hashes, and replaced on every use; a used one presented again means it leaked,
//! and the caller revokes the whole session (see `service`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What an access token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The session id.
    pub sub: String,
    /// The tenant context id.
    pub ctx: String,
    /// The Replication ID.
    pub rid: String,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Expires at (seconds since the epoch).
    pub exp: i64,
    /// The issuer.
    pub iss: String,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT we issued.
    #[error("the access token is malformed or not signed by this service")]
    Invalid,
    /// Past its expiry.
    #[error("the access token expired")]
    Expired,
}

/// Signs and verifies access tokens with one secret key.
pub struct Signer {
    key: [u8; 32],
    issuer: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

/// A new opaque token (32 random bytes, base64url).
pub fn opaque_token() -> String {
    B64.encode(crate::secrets::random_bytes::<32>())
}

/// The stored form of an opaque token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Signer {
    /// A signer with a fresh random key.
    pub fn new(issuer: impl Into<String>) -> Self {
        Signer { key: crate::secrets::random_bytes(), issuer: issuer.into() }
    }

    /// A signer with a saved key (so tokens stay valid across restarts).
    pub fn from_key(key: [u8; 32], issuer: impl Into<String>) -> Self {
        Signer { key, issuer: issuer.into() }
    }

    /// The key, for saving it next to the sessions it signs for.
    pub(crate) fn key(&self) -> &[u8; 32] {
        &self.key
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length")
    }

    /// `header.payload.signature`.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = B64.encode(serde_json::to_vec(claims).expect("claims serialize"));
        let mut mac = self.mac();
        mac.update(format!("{header}.{payload}").as_bytes());
        let signature = B64.encode(mac.finalize().into_bytes());
        format!("{header}.{payload}.{signature}")
    }

    /// Checks the signature, issuer and expiry (`now` in seconds; `leeway` seconds allowed).
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Invalid);
        };
        let signature = B64.decode(signature).map_err(|_| TokenError::Invalid)?;
        let mut mac = self.mac();
        mac.update(format!("{header}.{payload}").as_bytes());
        mac.verify_slice(&signature).map_err(|_| TokenError::Invalid)?;
        let claims: Claims = serde_json::from_slice(&B64.decode(payload).map_err(|_| TokenError::Invalid)?)
            .map_err(|_| TokenError::Invalid)?;
        if claims.iss != self.issuer {
            return Err(TokenError::Invalid);
        }
        if now >= claims.exp {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims { sub: "s1".into(), ctx: "cust1".into(), rid: "prod".into(), iat: 0, exp, iss: "test".into() }
    }

    #[test]
    fn tokens_verify_expire_and_resist_tampering() {
        let signer = Signer::new("test");
        let token = signer.sign(&claims(1200));
        assert_eq!(signer.verify(&token, 10).unwrap(), claims(1200));
        assert_eq!(signer.verify(&token, 1200), Err(TokenError::Expired));
        assert_eq!(Signer::new("test").verify(&token, 10), Err(TokenError::Invalid), "another key");
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = B64.encode(serde_json::to_vec(&Claims { ctx: "other".into(), ..claims(1200) }).unwrap());
        assert_eq!(signer.verify(&parts.join("."), 10), Err(TokenError::Invalid), "a forged tenant");
        assert_eq!(signer.verify("a.b", 10), Err(TokenError::Invalid));
        assert_ne!(opaque_token(), opaque_token());
        assert_eq!(token_hash("x"), token_hash("x"));
    }
}
