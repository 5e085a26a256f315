//! The owner's delete and history modes (`DeleteModes` in `appsettings.json`), per table:
//!
//! - `Hard` (the default): a delete removes the row.
//! - `Soft`: the table gains `_deleted` (bit) and `_deleted_at` (datetime2(3), the source
//!   commit time of the batch that applied the delete); a delete sets them and the row stays,
//!   a re-insert clears them. Readers that want the source's rows filter `_deleted = 0`.
//! - `History`: the table stays the source's current state (deletes remove rows) and every
//!   change event is appended to `<table>_history` with its operation, source commit time and
//!   LSNs (see [`layout`]).
//!
//! ```json
//! "DeleteModes": { "*": "Hard", "crm7.person": "Soft", "sale": "History" }
//! ```
//!
//! Targets hold soft tables natively (a soft delete is an `UPDATE`, the resync swap keeps rows
//! the fresh snapshot no longer has as deleted, see `sink::soft::Dialect::swap`); everything
//! else is `sink::retaining::Retaining`, a wrapper that lays out soft rows and writes history rows into the same
//! batch, so the history commits in the transaction of the data it describes.

pub mod layout;

use serde_json::Value;

use crate::owner::SectionError;
use crate::schema::{TableId, TablePattern};

/// The `_deleted_at` of a batch's soft deletes: the source commit time of its newest change
/// (deletes are flagged at most one batch's span later than they happened), or now for a
/// batch without source times (a resync's swap, a truncate without events).
pub fn deleted_at(batch: &crate::coalesce::Batch) -> crate::value::DateTime {
    let now = crate::clock::now_ms;
    let ms = batch.source_ms().map_or_else(now, |(_, newest)| newest);
    crate::value::DateTime::from_epoch_units(ms, 1_000_000)
        .or_else(|_| crate::value::DateTime::from_epoch_units(now(), 1_000_000))
        .expect("the present is a valid time")
}

/// What a delete does to a table, and whether its changes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeleteMode {
    /// A delete removes the row.
    #[default]
    Hard,
    /// A delete flags the row (`_deleted`, `_deleted_at`); the row stays.
    Soft,
    /// Deletes remove rows; every change is appended to `<table>_history`.
    History,
}

impl DeleteMode {
    fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "hard" => Some(DeleteMode::Hard),
            "soft" => Some(DeleteMode::Soft),
            "history" => Some(DeleteMode::History),
            _ => None,
        }
    }
}

/// The modes of every table: by `schema.table`, then `table`, then `*` (any case).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteModes {
    tables: Vec<(TablePattern, DeleteMode)>,
}

impl DeleteModes {
    /// A table's mode; a resync's shadow table has its live table's.
    pub fn for_table(&self, id: &TableId) -> DeleteMode {
        let id = id.live_or_self();
        let closest = self.tables.iter().filter_map(|(p, m)| Some((p.closeness(&id)?, *m))).max_by_key(|(c, _)| *c);
        closest.map_or(DeleteMode::Hard, |(_, m)| m)
    }

    /// True when every table is `Hard`: nothing to wrap.
    pub fn all_hard(&self) -> bool {
        self.tables.iter().all(|(_, m)| *m == DeleteMode::Hard)
    }

    /// Modes from `(table, mode)` pairs, `*` being the default (tests and benches).
    pub fn of(pairs: &[(&str, DeleteMode)]) -> Self {
        DeleteModes { tables: pairs.iter().map(|(name, mode)| (TablePattern::new(name), *mode)).collect() }
    }

    /// The filter of tables whose changes the coalescer keeps for a history.
    pub fn log_filter(&self) -> Option<crate::coalesce::LogFilter> {
        let any = self.tables.iter().any(|(_, m)| *m == DeleteMode::History);
        any.then(|| {
            let modes = self.clone();
            crate::coalesce::LogFilter(std::sync::Arc::new(move |id: &TableId| {
                !id.is_shadow() && modes.for_table(id) == DeleteMode::History
            }))
        })
    }
}

/// Reads the `DeleteModes` section (absent: every table `Hard`); an error names the key.
pub fn parse(section: Option<&Value>) -> Result<DeleteModes, SectionError> {
    let Some(section) = section else { return Ok(DeleteModes::default()) };
    let object = section
        .as_object()
        .ok_or_else(|| SectionError::new("DeleteModes", "expected { \"*\": \"Hard\", \"crm7.person\": \"Soft\" }"))?;
    let mut pairs = Vec::new();
    for (table, value) in object {
        let key = format!("DeleteModes.{table}");
        let mode = value.as_str().and_then(DeleteMode::parse).ok_or_else(|| {
            SectionError::new(&key, format!("expected \"Hard\", \"Soft\" or \"History\", found {value}"))
        })?;
        pairs.push((table.as_str(), mode));
    }
    Ok(DeleteModes::of(&pairs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_find_their_mode_by_qualified_name_then_name_then_default() {
        let section = serde_json::json!({ "*": "soft", "crm7.person": "History", "SALE": "hard" });
        let modes = parse(Some(&section)).unwrap();
        assert_eq!(modes.for_table(&TableId::new("crm7", "person")), DeleteMode::History);
        assert_eq!(modes.for_table(&TableId::new("crm7", "person__resync")), DeleteMode::History);
        assert_eq!(modes.for_table(&TableId::new("crm7", "sale")), DeleteMode::Hard);
        assert_eq!(modes.for_table(&TableId::new("crm7", "contact")), DeleteMode::Soft);
        assert!(!modes.all_hard());
        assert!(parse(None).unwrap().all_hard());
        let error = parse(Some(&serde_json::json!({ "crm7.person": "archive" }))).unwrap_err();
        assert_eq!(error.key, "DeleteModes.crm7.person");
        assert!(error.reason.contains("\"archive\""), "{error}");
    }
}
