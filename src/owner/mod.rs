//! The replica owner's controls: what the owner of a replica decides about it beyond the
//! source's data, read once from `appsettings.json` into [`OwnerRules`] and shared by one
//! `Arc` with everything that follows them.
//!
//! - [`hooks`]: SQL and commands run when something happens to the replica (`Hooks`);
//! - [`columns`]: columns excluded, hashed or fixed (`Columns`);
//! - [`modes`]: hard, soft or history deletes per table (`DeleteModes`).
//!
//! This module holds the rules and what they mean for a row or a table; nothing here writes a
//! replica. The replicas that apply them sit beside the targets (`sink::projecting`,
//! `sink::retaining`, `sink::hooks`), so the targets never learn the owner's rules.

pub mod columns;
pub mod hooks;
pub mod modes;

use std::path::Path;

use serde_json::Value;

/// A problem in one of the owner's sections, naming the key (`Hooks.TableCreated[0].Sql`,
/// `Columns.crm7.person.Exclude`, `DeleteModes.crm7.person`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct SectionError {
    /// The key path.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl SectionError {
    /// A problem at `key`.
    pub fn new(key: &str, reason: impl Into<String>) -> Self {
        SectionError { key: key.to_owned(), reason: reason.into() }
    }
}

/// A rule of the owner's that a table's columns do not allow: the table is left out (see
/// `state::TableState::Failed`) until the rule or the table changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleConflict {
    /// A key column may be hashed, never excluded or fixed: rows would lose their identity.
    #[error("key column `{column}` of {table} can be hashed but not excluded or fixed")]
    KeyColumn {
        /// The table.
        table: String,
        /// The key column.
        column: String,
    },
    /// `Soft` needs `_deleted` and `_deleted_at`, and the source already has one of them.
    #[error("has a column named {0}, which soft deletes need: use Hard or History")]
    SoftColumnTaken(&'static str),
}

/// Every rule of the replica's owner. Parsed once per configuration; the pipeline, the
/// replica's wrappers and `verify` share it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnerRules {
    /// `Hooks`.
    pub hooks: hooks::Hooks,
    /// `Columns`.
    pub columns: columns::ColumnRules,
    /// `DeleteModes`.
    pub modes: modes::DeleteModes,
}

impl OwnerRules {
    /// Reads the three sections (each may be absent) of a file in `folder` (where `SqlFile`
    /// and `file:` keys are relative to); `env` resolves `env:` secrets.
    pub fn parse(
        section: impl Fn(&str) -> Option<Value>,
        folder: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, SectionError> {
        Ok(OwnerRules {
            hooks: hooks::parse(section("Hooks").as_ref(), folder)?,
            columns: columns::parse(section("Columns").as_ref(), folder, env)?,
            modes: modes::parse(section("DeleteModes").as_ref())?,
        })
    }
}
