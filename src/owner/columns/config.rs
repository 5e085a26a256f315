//! The `Columns` section of `appsettings.json`:
//!
//! ```json
//! "Columns": {
//!   "HashKey": "env:DBMIRROR_HASH_KEY",
//!   "*":           { "Exclude": ["password"] },
//!   "crm7.person": { "Exclude": ["birthdate"], "Hash": ["person_id", "email"], "Fixed": { "phone": "hidden" } }
//! }
//! ```
//!
//! `HashKey` (needed by `Hash` rules, at least 16 bytes) is `env:NAME` (an environment
//! variable), `file:PATH` (a file, relative to the instance folder; its content trimmed) or
//! the key itself (then it sits in the file: prefer the other two). It is never logged.

use std::path::Path;

use serde_json::Value;

use super::{ColumnRules, HashKey, TableRules, Treatment};

use crate::owner::SectionError;

fn bad(key: &str, reason: impl Into<String>) -> SectionError {
    SectionError::new(key, reason)
}

fn names(key: &str, value: &Value) -> Result<Vec<String>, SectionError> {
    value
        .as_array()
        .ok_or_else(|| bad(key, "expected a list of column names"))?
        .iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| bad(key, "every entry must be a column name")))
        .collect()
}

fn table_rules(key: &str, value: &Value) -> Result<TableRules, SectionError> {
    let object = value.as_object().ok_or_else(|| bad(key, "expected an object with Exclude, Hash or Fixed"))?;
    let mut rules = TableRules::new();
    for (name, value) in object {
        let here = format!("{key}.{name}");
        match name.to_ascii_lowercase().as_str() {
            "exclude" => names(&here, value)?.into_iter().for_each(|c| {
                rules.insert(c, Treatment::Exclude);
            }),
            "hash" => names(&here, value)?.into_iter().for_each(|c| {
                rules.insert(c, Treatment::Hash);
            }),
            "fixed" => {
                let fixed = value.as_object().ok_or_else(|| bad(&here, "expected { \"column\": \"value\" }"))?;
                for (column, v) in fixed {
                    let text = v.as_str().ok_or_else(|| bad(&format!("{here}.{column}"), "expected a text value"))?;
                    rules.insert(column.clone(), Treatment::Fixed(text.to_owned()));
                }
            }
            _ => return Err(bad(&here, "unknown key (use Exclude, Hash or Fixed)")),
        }
    }
    Ok(rules)
}

fn hash_key(raw: &str, folder: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<HashKey, SectionError> {
    const KEY: &str = "Columns.HashKey";
    let bytes = crate::secrets::setting_value(raw, folder, env).map_err(|reason| bad(KEY, reason))?;
    HashKey::new(bytes).ok_or_else(|| bad(KEY, "the key must be at least 16 bytes"))
}

/// Reads the `Columns` section; `folder` is where `file:` keys are found, `env` reads
/// environment variables.
pub fn parse(
    section: Option<&Value>,
    folder: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ColumnRules, SectionError> {
    let object = match section {
        None | Some(Value::Null) => return Ok(ColumnRules::default()),
        Some(Value::Object(object)) => object,
        Some(_) => return Err(bad("Columns", "expected an object of tables")),
    };
    let mut rules = ColumnRules::default();
    let mut raw_key = None;
    for (name, value) in object {
        if name.eq_ignore_ascii_case("HashKey") {
            raw_key = Some(value.as_str().ok_or_else(|| bad("Columns.HashKey", "expected text"))?);
            continue;
        }
        rules.tables.push((name.as_str().into(), table_rules(&format!("Columns.{name}"), value)?));
    }
    let hashing = rules.tables.iter().any(|(_, r)| r.values().any(|t| *t == Treatment::Hash));
    match (raw_key, hashing) {
        (Some(raw), _) => rules.key = Some(hash_key(raw, folder, env)?),
        (None, true) => return Err(bad("Columns.HashKey", "required by the Hash rules (env:NAME or file:PATH)")),
        (None, false) => {}
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<ColumnRules, SectionError> {
        parse(Some(&serde_json::from_str(text).unwrap()), Path::new("."), env)
    }

    #[test]
    fn rules_and_a_key_from_the_environment() {
        let env = |name: &str| (name == "K").then(|| "a key of sixteen+ bytes".to_owned());
        let rules = parse_text(
            r#"{"HashKey":"env:K","*":{"Exclude":["password"]},
                "crm7.person":{"Hash":["email"],"Fixed":{"phone":"hidden"}}}"#,
            &env,
        )
        .unwrap();
        assert_eq!(rules.tables.len(), 2);
        assert_eq!(rules.tables[1].1["phone"], Treatment::Fixed("hidden".into()));
        assert!(rules.key.is_some());
        assert!(!format!("{rules:?}").contains("sixteen"), "the key never shows");
    }

    #[test]
    fn mistakes_name_their_key() {
        let none = |_: &str| None;
        let key = |text: &str| parse_text(text, &none).unwrap_err().key;
        assert_eq!(key(r#"{"crm7.person":{"Hash":["email"]}}"#), "Columns.HashKey");
        assert_eq!(key(r#"{"HashKey":"env:NOPE","t":{"Hash":["x"]}}"#), "Columns.HashKey");
        assert_eq!(key(r#"{"HashKey":"short","t":{"Hash":["x"]}}"#), "Columns.HashKey");
        assert_eq!(key(r#"{"t":{"Exclud":["x"]}}"#), "Columns.t.Exclud");
        assert_eq!(key(r#"{"t":{"Exclude":"x"}}"#), "Columns.t.Exclude");
        assert_eq!(key(r#"{"t":{"Fixed":{"c":1}}}"#), "Columns.t.Fixed.c");
    }
}
