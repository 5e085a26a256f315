//! TLS to a PostgreSQL replica, with libpq's connection-string keys.
//!
//! `sslmode=require`, `verify-ca` or `verify-full` connect over TLS (rustls) and always verify
//! the server's certificate — against `sslrootcert=<PEM file>` when given, else against the
//! system's trusted roots; a replica on another host should not be trusted blindly just because
//! the channel is encrypted. Without one of those modes (or with `disable` / `prefer` /
//! `allow`) the connection is plain, as on a local socket or loopback.

use std::sync::Arc;

use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_rustls::rustls;

use crate::sink::SinkError;

/// The parsed connection and its TLS connector, if TLS is required.
pub struct Target {
    /// The driver's configuration (TLS keys it does not know are removed).
    pub config: ::postgres::Config,
    /// The TLS connector, when `sslmode` asks for TLS.
    pub tls: Option<MakeRustlsConnect>,
}

fn bad(message: impl std::fmt::Display) -> SinkError {
    SinkError::ConnectionString(format!("PostgreSQL: {message}"))
}

/// Splits `sslmode` and `sslrootcert` out of a URL (`?a=b&…`) or `key=value …` string and
/// returns the rest, with `verify-*` modes mapped to the driver's `require`.
fn split_tls(connection_string: &str) -> (String, Option<String>, Option<String>) {
    let (mut mode, mut root) = (None, None);
    let mut keep = |key: &str, value: &str| match key {
        "sslmode" => {
            mode = Some(value.to_owned());
            false
        }
        "sslrootcert" => {
            root = Some(value.to_owned());
            false
        }
        _ => true,
    };
    let url = connection_string.starts_with("postgres://") || connection_string.starts_with("postgresql://");
    let rest = if url {
        match connection_string.split_once('?') {
            Some((base, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                        keep(k, v)
                    })
                    .collect();
                if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) }
            }
            None => connection_string.to_owned(),
        }
    } else {
        connection_string
            .split_whitespace()
            .filter(|token| {
                let (k, v) = token.split_once('=').unwrap_or((token, ""));
                keep(k.trim(), v.trim_matches('\''))
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    (rest, mode, root)
}

/// Parses a connection string into the driver's configuration and a TLS connector.
pub fn parse(connection_string: &str) -> Result<Target, SinkError> {
    let (rest, mode, root) = split_tls(connection_string.trim());
    let config: ::postgres::Config = rest.parse().map_err(|e: ::postgres::Error| bad(e))?;
    let tls = match mode.as_deref() {
        None | Some("disable" | "allow" | "prefer") => None,
        Some("require" | "verify-ca" | "verify-full") => Some(connector(root.as_deref())?),
        Some(other) => return Err(bad(format!("unknown sslmode `{other}`"))),
    };
    Ok(Target { config, tls })
}

fn connector(root: Option<&str>) -> Result<MakeRustlsConnect, SinkError> {
    let mut roots = rustls::RootCertStore::empty();
    match root {
        Some(path) => {
            use rustls_pki_types::pem::PemObject as _;
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(format!("sslrootcert {path}: {e}")))?;
            for cert in certs {
                roots.add(cert.map_err(|e| bad(format!("sslrootcert {path}: {e}")))?).map_err(bad)?;
            }
            if roots.is_empty() {
                return Err(bad(format!("sslrootcert {path} holds no certificate")));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(bad("sslmode asks for TLS, but the system has no trusted roots: set sslrootcert"));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(bad)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_keys_are_split_out_of_both_forms() {
        let (rest, mode, root) = split_tls("host=db port=5432 sslmode=verify-full sslrootcert=/etc/ca.pem dbname=crm");
        assert_eq!(
            (rest.as_str(), mode.as_deref(), root.as_deref()),
            ("host=db port=5432 dbname=crm", Some("verify-full"), Some("/etc/ca.pem"))
        );
        let (rest, mode, root) =
            split_tls("postgres://u:p@db/crm?sslmode=require&sslrootcert=/ca.pem&application_name=x");
        assert_eq!(
            (rest.as_str(), mode.as_deref(), root.as_deref()),
            ("postgres://u:p@db/crm?application_name=x", Some("require"), Some("/ca.pem"))
        );
        let (rest, mode, _) = split_tls("postgres://db/crm");
        assert_eq!((rest.as_str(), mode), ("postgres://db/crm", None));
        assert!(parse("host=db sslmode=bogus").is_err());
        assert!(parse("host=db sslmode=require sslrootcert=/nonexistent").is_err());
        assert!(parse("host=db sslmode=disable").unwrap().tls.is_none());
    }
}
