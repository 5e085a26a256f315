//! Where a record sits in the log, borrowed from the record line or owned, and position
//! maps: the one shape every part of the system speaks positions in.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A position per (topic, partition). What an offset means (the last applied record, or the
/// next to read) is said by whoever holds the map; the pipeline's cursor converts.
pub type Offsets = BTreeMap<(String, i32), i64>;

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
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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

/// A position list as the wire carries it, from a map.
pub fn to_list(map: &Offsets) -> Vec<OwnedPosition> {
    map.iter()
        .map(|((topic, partition), offset)| OwnedPosition {
            topic: topic.clone(),
            partition: *partition,
            offset: *offset,
        })
        .collect()
}

/// A wire position list as a map (a later entry for the same partition wins).
pub fn to_map(list: &[OwnedPosition]) -> Offsets {
    list.iter().map(|p| ((p.topic.clone(), p.partition), p.offset)).collect()
}
