//! Stage 1: talking to the cloud over outbound HTTPS only.
//!
//! [`tls`] decides which server is trusted (a pinned certificate fingerprint or a CA file);
//! [`client`] sends requests over HTTP/2 or HTTP/1.1 and turns the service's JSON errors into
//! typed ones. The streamed long-poll fetch builds on this with the client issue.

pub mod client;
pub mod replication;
pub mod tls;
