//! Stage 1: talking to the cloud over outbound HTTPS only.
//!
//! [`tls`] decides which server is trusted (the system's roots, a pinned certificate
//! fingerprint or a CA file); [`client`] sends requests over HTTP/2 or HTTP/1.1 and turns the
//! service's error replies into typed ones; [`dispatcher`] runs the device grant that creates
//! a session; [`partner`] is the partner API (approving tenants, sessions without a browser);
//! [`replication`] is a session's typed calls: the streamed long-poll fetch, commits, status
//! and resyncs. Every call speaks the wire types of [`crate::protocol`].

pub mod client;
pub mod dispatcher;
pub mod partner;
pub mod replication;
pub mod tls;
