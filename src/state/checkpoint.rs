//! What a replica has applied, as one value: the last applied offset per partition and the
//! number of offset resets it has reloaded from. Both are written in the batch's own
//! transaction, so they always describe the data beside them.
//!
//! Storage: one `scope = 'offset'` row per partition (`name = topic/partition`, the topic in
//! `text_value`, the offset in `int_value`), and the reset epoch as the row `_reset/0`. That
//! row's name is known here only; the rest of the system sees [`Checkpoint::reset_epoch`].

use super::Offsets;

/// The storage topic of the reset-epoch row (kept from the first layout, so replicas written
/// by earlier versions read back the same).
const RESET_ROW_TOPIC: &str = "_reset";

/// A replica's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last applied offset per (topic, partition); the next fetch starts one later.
    pub offsets: Offsets,
    /// How many offset resets (source restores, resumes, operator resets) were reloaded.
    pub reset_epoch: u64,
}

impl Checkpoint {
    /// From the stored offset rows.
    pub fn from_rows(mut rows: Offsets) -> Self {
        let epoch = rows.remove(&(RESET_ROW_TOPIC.to_owned(), 0)).unwrap_or(0);
        Checkpoint { offsets: rows, reset_epoch: u64::try_from(epoch).unwrap_or(0) }
    }
}

/// The offset rows a batch writes, as `(name, topic, value)`: its offsets, and the reset
/// epoch when the batch carries one. Stored values only ever grow (targets keep the maximum).
pub fn offset_rows(offsets: &Offsets, reset_epoch: Option<u64>) -> impl Iterator<Item = (String, &str, i64)> {
    let epoch =
        reset_epoch.map(|e| (offset_name(RESET_ROW_TOPIC, 0), RESET_ROW_TOPIC, i64::try_from(e).unwrap_or(i64::MAX)));
    offsets
        .iter()
        .map(|((topic, partition), last)| (offset_name(topic, *partition), topic.as_str(), *last))
        .chain(epoch)
}

/// Key of an offset row: `topic/partition`.
pub fn offset_name(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// Reads an offset row's key back; `None` if it is not `topic/partition`.
pub fn parse_offset_name(name: &str) -> Option<(String, i32)> {
    let (topic, partition) = name.rsplit_once('/')?;
    Some((topic.to_owned(), partition.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reset_epoch_round_trips_through_the_rows() {
        let offsets: Offsets = [(("c-cdc".to_owned(), 1), 41)].into();
        let rows: Offsets =
            offset_rows(&offsets, Some(3)).map(|(name, _, v)| (parse_offset_name(&name).unwrap(), v)).collect();
        assert_eq!(Checkpoint::from_rows(rows), Checkpoint { offsets, reset_epoch: 3 });
        assert_eq!(parse_offset_name(&offset_name("cust1-cdc", 7)), Some(("cust1-cdc".into(), 7)));
        assert_eq!(parse_offset_name("nope"), None);
    }
}
