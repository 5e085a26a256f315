//! Which servers the client trusts. By default, like a browser: the operating system's trusted
//! roots (a real cloud has a public certificate, so there is nothing to install or renew).
//! For a self-signed reference cloud or a private CA, trust can instead be a pinned SHA-256
//! fingerprint of the server certificate (what `dbmirror-cloud` prints) or a CA file (PEM). A
//! pinned certificate is compared byte for byte; the handshake signature is still verified,
//! so a stolen fingerprint without the key is useless.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, ring};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, Error as TlsError, RootCertStore, SignatureScheme};

/// How the client decides to trust the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The operating system's trusted roots (`SSL_CERT_FILE`/`SSL_CERT_DIR` override them).
    SystemRoots,
    /// The server certificate's SHA-256, as 32 bytes.
    Fingerprint([u8; 32]),
    /// Certificates (PEM) of the authorities to trust.
    CaFile(std::path::PathBuf),
}

impl Trust {
    /// The trust a setting pair asks for: a pinned fingerprint wins over a CA file; neither is
    /// `None` (the caller's default). The one place a fingerprint's text becomes a `Trust`.
    pub fn from_settings(fingerprint: Option<&str>, ca_file: Option<&Path>) -> Result<Option<Trust>, TrustError> {
        Ok(match (fingerprint, ca_file) {
            (Some(fp), _) => Some(Trust::Fingerprint(parse_fingerprint(fp)?)),
            (None, Some(ca)) => Some(Trust::CaFile(ca.to_owned())),
            (None, None) => None,
        })
    }

    /// The trust a stored session records (the facts [`Trust::fact`] writes).
    pub fn from_facts(session: &crate::state::Session) -> Result<Option<Trust>, TrustError> {
        let text = |name: &str| match session.get(name) {
            Some(crate::state::SessionValue::Text(t)) => Some(t.as_str()),
            _ => None,
        };
        Self::from_settings(text("trust_fingerprint"), text("trust_ca_file").map(Path::new))
    }

    /// The session fact that records this trust beside a session (`trust_fingerprint` or
    /// `trust_ca_file`), so every later command reaches the cloud the same way; none for the
    /// system's roots, the default.
    pub fn fact(&self) -> Option<(&'static str, crate::state::SessionValue)> {
        use crate::state::SessionValue::Text;
        match self {
            Trust::Fingerprint(fp) => {
                Some(("trust_fingerprint", Text(fp.iter().map(|b| format!("{b:02X}")).collect())))
            }
            Trust::CaFile(ca) => Some(("trust_ca_file", Text(ca.display().to_string()))),
            Trust::SystemRoots => None,
        }
    }
}

/// Why a trust setting is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// Not 32 hex bytes.
    #[error("a certificate fingerprint is 64 hex digits (colons allowed), e.g. AB:CD:…")]
    Fingerprint,
    /// The CA file could not be read or holds no certificate.
    #[error("CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The operating system has no trusted roots to verify against.
    #[error("the system has no trusted root certificates: pass --ca-file or --fingerprint")]
    NoSystemRoots,
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] TlsError),
}

/// Parses `AB:CD:…` or `abcd…` (64 hex digits).
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], TrustError> {
    let hex: String = text.chars().filter(|c| *c != ':' && !c.is_whitespace()).collect();
    if hex.len() != 64 {
        return Err(TrustError::Fingerprint);
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| TrustError::Fingerprint)?;
    }
    Ok(out)
}

#[derive(Debug)]
struct Pinned {
    fingerprint: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(TlsError::General("the server certificate does not match the pinned fingerprint".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        tokio_rustls::rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        tokio_rustls::rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A rustls client configuration (ring provider) for `trust`; the HTTP connector adds ALPN.
pub fn client_config(trust: &Trust) -> Result<ClientConfig, TrustError> {
    let provider: Arc<CryptoProvider> = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let config = match trust {
        Trust::SystemRoots => {
            let mut roots = RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                // A root the platform lists but rustls cannot parse is skipped, as browsers do.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(TrustError::NoSystemRoots);
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Fingerprint(fingerprint) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                fingerprint: *fingerprint,
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
        Trust::CaFile(path) => {
            let bad = |reason: String| TrustError::CaFile { path: path.display().to_string(), reason };
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(Path::new(path)).map_err(|e| bad(e.to_string()))? {
                roots.add(cert.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(bad("no certificate in the file".into()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_with_or_without_colons() {
        let hex = "AB".repeat(32);
        let colons = vec!["ab"; 32].join(":");
        assert_eq!(parse_fingerprint(&hex).unwrap(), [0xab; 32]);
        assert_eq!(parse_fingerprint(&colons).unwrap(), [0xab; 32]);
        assert!(parse_fingerprint("AB:CD").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
        assert!(matches!(client_config(&Trust::CaFile("/nonexistent/ca.pem".into())), Err(TrustError::CaFile { .. })));
    }
}
