//! Wire types shared by the client and the reference cloud.
//!
//! The Replication Service streams newline-delimited records, one JSON object per line:
//! `{"topic":"<ctx>-cdc","partition":0,"offset":42,"key":{…},"value":{…}}`, where `value` is
//! the Debezium envelope exactly as Kafka Connect's JsonConverter wrote it (or `null` for a
//! tombstone). The full HTTP contract is written down in `docs/protocol.md`.

use std::fmt;

/// Suffix of a tenant's change-event topic (`<ctx>-cdc`).
pub const CDC_TOPIC_SUFFIX: &str = "-cdc";

/// Suffix of a tenant's schema-history topic (`<ctx>-schemahistory`).
pub const SCHEMA_HISTORY_TOPIC_SUFFIX: &str = "-schemahistory";

/// Where a record sits in the log, borrowed from the record line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position<'a> {
    /// Kafka topic.
    pub topic: &'a str,
    /// Partition within the topic.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
}

impl Position<'_> {
    /// An owned copy, for errors and progress records that outlive the record buffer.
    pub fn to_owned(&self) -> OwnedPosition {
        OwnedPosition { topic: self.topic.to_owned(), partition: self.partition, offset: self.offset }
    }
}

/// An owned [`Position`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnedPosition {
    /// Kafka topic.
    pub topic: String,
    /// Partition within the topic.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
}

impl fmt::Display for OwnedPosition {
    /// `topic/partition@offset`, the form every log line and error uses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.topic, self.partition, self.offset)
    }
}

impl fmt::Display for Position<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.topic, self.partition, self.offset)
    }
}
