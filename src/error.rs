//! The library's top-level error and its classification.
//!
//! Each stage has its own typed error ([`crate::decode::DecodeError`], …); [`Error`] gathers
//! them so binaries can report one type, and [`Error::retry`] is the single place that says
//! whether waiting and trying again can help.

use crate::decode::DecodeError;

/// Any failure the library reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A record could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Reading or writing a local file failed.
    #[error("{context}")]
    Io {
        /// What was being done, e.g. `reading events.jsonl`.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Whether an operation that failed with an error may succeed if tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A passing condition: back off and try again.
    Transient,
    /// Trying again gives the same result; a person must act.
    Fatal,
}

impl Error {
    /// Classifies the error for the pipeline's retry loop.
    pub fn retry(&self) -> Retry {
        match self {
            // The same bytes decode the same way every time.
            Error::Decode(_) => Retry::Fatal,
            Error::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                    Retry::Transient
                }
                _ => Retry::Fatal,
            },
        }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
