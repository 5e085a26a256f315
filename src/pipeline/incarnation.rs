//! Records of a table's previous incarnation.
//!
//! When a table is dropped, or dropped and re-created with an incompatible structure, the
//! schema history says so before the client has necessarily read every older change of that
//! table: those sit in other partitions of the change topic, behind the client's position.
//! Applied to the new table, an old update would bring back a row the new table does not have
//! (or fail to decode and stop the client). Every history record carries the DDL's LSN
//! (`position.commit_lsn`) and every change its transaction's (`source.commit_lsn`), so a
//! change of a reshaped table with an older LSN belongs to the old incarnation and is skipped.
//! The LSN is kept as a session fact (`incarnation:<schema.table>`), so a restart between the
//! DDL and the last old change still recognises them.
//!
//! The decoder surfaces both LSNs ([`crate::decode::SchemaChanges::ddl_lsn`] and the change's
//! `source.commit_lsn`); nothing here reads record bytes.
//!
//! LSNs are SQL Server's fixed-width hex text (`0000002c:00000af0:0003`): they compare as text.

use std::collections::HashMap;

use crate::sink::SinkError;
use crate::state::{Session, SessionValue, StateStore, prefixed_facts};

const FACT: &str = "incarnation:";

/// `(schema, table)`.
pub(super) type Table = (String, String);

/// The tables reshaped so far, with the LSN their current incarnation starts at (when the
/// history record carried one).
#[derive(Debug, Default)]
pub(super) struct Incarnations {
    tables: HashMap<Table, Option<String>>,
    unsaved: Vec<(String, String)>,
}

impl Incarnations {
    /// Those recorded in the replica.
    pub(super) fn new(session: &Session) -> Self {
        let tables = prefixed_facts(session, FACT)
            .filter_map(|(table, lsn)| {
                let (schema, table) = table.split_once('.')?;
                Some(((schema.to_owned(), table.to_owned()), Some(lsn.to_owned())))
            })
            .collect();
        Self { tables, unsaved: Vec::new() }
    }

    /// True when no table was ever reshaped (the common case: nothing to check).
    pub(super) fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Whether `table` was reshaped.
    pub(super) fn contains(&self, table: &Table) -> bool {
        self.tables.contains_key(table)
    }

    /// A table was dropped or re-created by a DDL at `lsn`.
    pub(super) fn reshaped(&mut self, table: Table, lsn: Option<String>) {
        if let Some(lsn) = &lsn {
            self.unsaved.push((format!("{FACT}{}.{}", table.0, table.1), lsn.clone()));
        }
        let slot = self.tables.entry(table).or_default();
        if lsn.is_some() {
            *slot = lsn;
        }
    }

    /// Whether a change with this commit LSN belongs to an earlier incarnation of `table`.
    pub(super) fn is_stale(&self, table: &Table, commit_lsn: Option<&str>) -> bool {
        match (self.tables.get(table), commit_lsn) {
            (Some(Some(start)), Some(lsn)) => lsn < start.as_str(),
            _ => false,
        }
    }

    /// Stores the LSNs learnt since the last call; must happen before the history record's
    /// offset is committed, so a crash cannot lose them.
    pub(super) fn save(&mut self, state: &mut (dyn StateStore + Send)) -> Result<(), SinkError> {
        if self.unsaved.is_empty() {
            return Ok(());
        }
        let facts: Vec<(&str, SessionValue)> =
            self.unsaved.iter().map(|(name, lsn)| (name.as_str(), SessionValue::Text(lsn.clone()))).collect();
        state.write_facts(&facts)?;
        self.unsaved.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_changes_of_a_reshaped_table_are_stale() {
        let mut session = Session::new();
        session.insert("incarnation:crm7.contact".into(), SessionValue::Text("0000002c:00000010:0005".into()));
        let mut inc = Incarnations::new(&session);
        let contact = ("crm7".to_owned(), "contact".to_owned());
        assert!(inc.is_stale(&contact, Some("0000002c:0000000f:0005")));
        assert!(!inc.is_stale(&contact, Some("0000002c:00000010:0005")), "the new incarnation starts at the DDL");
        assert!(!inc.is_stale(&contact, None));
        inc.reshaped(contact.clone(), Some("0000002c:00000020:0005".into()));
        assert!(inc.is_stale(&contact, Some("0000002c:00000010:0005")));
        assert_eq!(inc.unsaved.len(), 1);
    }
}
