//! Which stored refusals (`_ReplicationErrors`, see [`crate::state::refused`]) a batch makes
//! obsolete: a later version of a refused row that the replica accepts deletes the entry in
//! that batch's transaction, so a retry never writes an image older than what the replica
//! holds.

use std::collections::HashMap;

use crate::canonical::canonical;
use crate::coalesce::Batch;
use crate::schema::{SqlType, TableSchema};
use crate::state::refused::RefusedRow;

/// The canonical text of a key, as a JSON array (`["42"]`): how refusals name their row.
pub fn key_text(schema: &TableSchema, key: &[crate::row::Cell]) -> String {
    let values: Vec<Option<String>> = schema
        .primary_key
        .iter()
        .zip(key)
        .map(|(name, cell)| canonical(cell, schema.column(name).map_or(SqlType::Other, |c| c.sql_type)))
        .collect();
    serde_json::to_string(&values).unwrap_or_default()
}

/// The stored refusals by table and key, so the sink thread can tell when a batch writes a
/// newer version of a refused row (see [`Batch::superseded`]). Empty, it costs nothing.
#[derive(Debug, Default)]
pub struct RefusedIndex {
    by_key: HashMap<(String, String), Vec<i64>>,
}

impl RefusedIndex {
    /// The index of the stored refusals.
    pub fn new(rows: &[RefusedRow]) -> Self {
        let mut by_key: HashMap<(String, String), Vec<i64>> = HashMap::new();
        for row in rows {
            by_key.entry((row.table.clone(), row.key.clone())).or_default().push(row.id);
        }
        RefusedIndex { by_key }
    }

    /// The refusals `batch` makes obsolete: every one of a key it writes (upsert or delete)
    /// and of a table it truncates. They are forgotten here; the batch deletes them.
    pub fn take_superseded(&mut self, batch: &Batch) -> Vec<i64> {
        if self.by_key.is_empty() {
            return Vec::new();
        }
        let mut ids = Vec::new();
        for table in batch.tables() {
            let schema = table.schema();
            let name = schema.id.to_string();
            if table.truncate_first() {
                let keys: Vec<_> = self.by_key.keys().filter(|(t, _)| *t == name).cloned().collect();
                keys.iter().filter_map(|k| self.by_key.remove(k)).for_each(|v| ids.extend(v));
            }
            let keys = table.upserts().map(|(k, _)| k).chain(table.deletes());
            for key in keys {
                if let Some(found) = self.by_key.remove(&(name.clone(), key_text(schema, key))) {
                    ids.extend(found);
                }
            }
        }
        ids
    }

    /// Whether no refusal is stored.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}
