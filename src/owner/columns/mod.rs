//! The owner's column rules (`Columns` in `appsettings.json`): per table, columns never copied
//! (`Exclude`), columns replaced by a keyed hash (`Hash`: HMAC-SHA256 with the owner's key, hex:
//! joinable, not readable) or by a fixed value (`Fixed`). `"*"` holds rules for every table;
//! a table's own rules add to them. A hashed key column is hashed the same way in every table,
//! so joins on it still work; NULL stays NULL.
//!
//! The rules are applied where rows enter the replica (`sink::projecting::Projecting`), so the pipeline,
//! coalescing and `_ReplicationErrors` keep seeing the source's columns, and a schema change
//! of an excluded column changes nothing in the replica.

mod config;
mod project;

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use config::parse;
pub use project::Projection;

use crate::schema::{TableId, TablePattern};

/// What a rule does to one column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Treatment {
    /// Not copied.
    Exclude,
    /// Replaced by HMAC-SHA256(key, canonical value), 64 hex digits.
    Hash,
    /// Replaced by this text.
    Fixed(String),
}

/// One table's rules (or `"*"`'s): column name → treatment.
pub type TableRules = BTreeMap<String, Treatment>;

/// The owner's hash key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct HashKey(Vec<u8>);

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKey(…)")
    }
}

impl HashKey {
    /// A key from its bytes (at least 16).
    pub fn new(bytes: Vec<u8>) -> Option<Self> {
        (bytes.len() >= 16).then_some(HashKey(bytes))
    }
}

/// Every table's column rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnRules {
    /// By table; `*` for every table.
    pub tables: Vec<(TablePattern, TableRules)>,
    /// The key of `Hash` rules.
    pub key: Option<HashKey>,
}

impl ColumnRules {
    /// Whether there are no rules at all.
    pub fn is_empty(&self) -> bool {
        self.tables.iter().all(|(_, r)| r.is_empty())
    }

    /// The rules for `id` (`*`'s and its own; its own win), or `None` when it has none.
    /// A resync's shadow table follows its live table's rules.
    pub fn for_table(&self, id: &TableId) -> Option<TableRules> {
        let live = id.live_or_self();
        let mut rules = TableRules::new();
        let every = self.tables.iter().filter(|(p, _)| p.is_any());
        let own = self.tables.iter().filter(|(p, _)| !p.is_any() && p.matches(&live));
        for (_, table_rules) in every.chain(own) {
            rules.extend(table_rules.iter().map(|(c, t)| (c.clone(), t.clone())));
        }
        (!rules.is_empty()).then_some(rules)
    }

    /// The keyed hash of a value's canonical text.
    pub(crate) fn hash(&self, text: &str) -> String {
        let key = self.key.as_ref().map_or(&[][..], |k| &k.0[..]);
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(text.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(64);
        for byte in digest {
            out.push_str(&format!("{byte:02x}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> ColumnRules {
        let star = TableRules::from([("password".to_owned(), Treatment::Exclude)]);
        let person = TableRules::from([
            ("birthdate".to_owned(), Treatment::Exclude),
            ("person_id".to_owned(), Treatment::Hash),
            ("password".to_owned(), Treatment::Fixed("***".into())),
        ]);
        ColumnRules {
            tables: vec![("*".into(), star), ("crm7.Person".into(), person)],
            key: HashKey::new(b"0123456789abcdef".to_vec()),
        }
    }

    #[test]
    fn a_tables_rules_add_to_every_tables_and_win() {
        let r = rules();
        let person = r.for_table(&TableId::new("crm7", "person")).unwrap();
        assert_eq!(person["password"], Treatment::Fixed("***".into()));
        assert_eq!(person["birthdate"], Treatment::Exclude);
        let shadow = r.for_table(&TableId::new("crm7", "person").shadow()).unwrap();
        assert_eq!(shadow, person, "a shadow follows its live table");
        let contact = r.for_table(&TableId::new("crm7", "contact")).unwrap();
        assert_eq!(contact.len(), 1);
        assert!(ColumnRules::default().for_table(&TableId::new("crm7", "contact")).is_none());
    }

    #[test]
    fn hashes_are_keyed_stable_and_not_the_value() {
        let r = rules();
        let h = r.hash("42");
        assert_eq!(h.len(), 64);
        assert_eq!(h, r.hash("42"), "the same value hashes the same in every table: joins work");
        assert_ne!(h, r.hash("43"));
        let other = ColumnRules { key: HashKey::new(b"another key, 16+".to_vec()), ..r.clone() };
        assert_ne!(h, other.hash("42"), "another key, another hash");
        assert!(!format!("{:?}", r).contains("0123456789abcdef"), "the key never shows");
    }
}
