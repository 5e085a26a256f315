//! The reference cloud's error: an HTTP status, a protocol [`ErrorCode`] and details, written
//! as the protocol's error body. Every cloud module reports it; it depends on none of them.

use serde_json::{Value as Json, json};

use super::log::LogError;
use crate::protocol::ErrorCode;

/// An error with an HTTP status and a machine-readable code (`docs/protocol.md` lists them).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Stable code, e.g. `offset_purged`.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: Box<str>,
    /// Structured details (positions, minimum version, …).
    pub details: Box<Json>,
    /// Seconds to wait, for 429 and 503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error without details.
    pub fn new(status: u16, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into().into_boxed_str(),
            details: Box::new(Json::Null),
            retry_after: None,
        }
    }

    /// Adds details.
    pub fn with(mut self, details: Json) -> Self {
        self.details = Box::new(details);
        self
    }

    /// The JSON body: `{"error":{"code","message",…details}}` (the protocol's
    /// [`crate::protocol::ErrorReply`], which the client reads).
    pub fn body(&self) -> Json {
        let details = match self.details.as_ref() {
            Json::Object(details) => details.clone(),
            _ => Default::default(),
        };
        let error =
            crate::protocol::ErrorObject { code: self.code.clone(), message: self.message.to_string(), details };
        serde_json::to_value(crate::protocol::ErrorReply { error }).unwrap_or(Json::Null)
    }
}

impl ApiError {
    /// Asks the client to wait `seconds` (`Retry-After`).
    pub(crate) fn retry(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Purged { topic, partition, requested, earliest } => ApiError::new(
                410,
                ErrorCode::OffsetPurged,
                format!("offset {requested} of {topic}/{partition} is older than the retention"),
            )
            .with(json!({"topic": topic, "partition": partition, "requested": requested, "earliest": earliest})),
            LogError::OutOfRange { topic, partition, requested, end } => ApiError::new(
                409,
                ErrorCode::OffsetOutOfRange,
                format!("offset {requested} of {topic}/{partition} is beyond its end"),
            )
            .with(json!({"topic": topic, "partition": partition, "requested": requested, "end": end})),
            LogError::Unknown { topic, partition } => {
                ApiError::new(404, ErrorCode::UnknownPartition, format!("{topic}/{partition} does not exist"))
            }
            LogError::Io { .. } => ApiError::new(503, ErrorCode::Unavailable, e.to_string()).retry(5),
        }
    }
}
