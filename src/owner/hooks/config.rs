//! The `Hooks` section of `appsettings.json`:
//!
//! ```json
//! "Hooks": {
//!   "OnFailure": "Log",
//!   "TableCreated": [{ "Tables": ["crm7.person"], "Sql": "CREATE INDEX ix_person_name ON {table} (lastname)" }],
//!   "BatchCommitted": [{ "SqlFile": "hooks/refresh_summary.sql", "Command": ["/opt/etl/notify", "--quiet"],
//!                        "TimeoutSeconds": 30, "OnFailure": "Stop" }]
//! }
//! ```
//!
//! A `SqlFile` is read once, relative to the instance folder, when the configuration loads,
//! so a typo is reported at start and not at the first event.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::{Hook, HookEvent, Hooks, OnFailure};

use crate::owner::SectionError;

fn bad(key: &str, reason: impl Into<String>) -> SectionError {
    SectionError::new(key, reason)
}

fn field<'v>(object: &'v serde_json::Map<String, Value>, name: &str) -> Option<&'v Value> {
    object.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

fn on_failure(key: &str, value: Option<&Value>, default: OnFailure) -> Result<OnFailure, SectionError> {
    match value {
        None | Some(Value::Null) => Ok(default),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("log") => Ok(OnFailure::Log),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("stop") => Ok(OnFailure::Stop),
        Some(other) => Err(bad(key, format!("expected \"Log\" or \"Stop\", found {other}"))),
    }
}

fn strings(key: &str, value: Option<&Value>) -> Result<Vec<String>, SectionError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| bad(key, "every entry must be a string")))
            .collect(),
        Some(other) => Err(bad(key, format!("expected a list of strings, found {other}"))),
    }
}

const HOOK_KEYS: &[&str] = &["Tables", "Sql", "SqlFile", "Command", "TimeoutSeconds", "OnFailure"];

fn hook(key: &str, event: HookEvent, value: &Value, default: OnFailure, folder: &Path) -> Result<Hook, SectionError> {
    let object = value.as_object().ok_or_else(|| bad(key, "expected an object with `Sql`, `SqlFile` or `Command`"))?;
    if let Some((unknown, _)) = object.iter().find(|(k, _)| !HOOK_KEYS.iter().any(|h| h.eq_ignore_ascii_case(k))) {
        return Err(bad(&format!("{key}.{unknown}"), format!("unknown key (use {})", HOOK_KEYS.join(", "))));
    }
    let text = |name: &str| match field(object, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(bad(&format!("{key}.{name}"), format!("expected a string, found {other}"))),
    };
    let sql = match (text("Sql")?, text("SqlFile")?) {
        (Some(_), Some(_)) => return Err(bad(key, "give `Sql` or `SqlFile`, not both")),
        (Some(sql), None) => Some(sql),
        (None, Some(file)) => {
            let path = folder.join(&file);
            Some(
                std::fs::read_to_string(&path)
                    .map_err(|e| bad(&format!("{key}.SqlFile"), format!("{}: {e}", path.display())))?,
            )
        }
        (None, None) => None,
    };
    let command = strings(&format!("{key}.Command"), field(object, "Command"))?;
    if sql.is_none() && command.is_empty() {
        return Err(bad(key, "a hook needs `Sql`, `SqlFile` or `Command`"));
    }
    let timeout = match field(object, "TimeoutSeconds") {
        None | Some(Value::Null) => 60,
        Some(v) => v
            .as_u64()
            .filter(|s| (1..=86_400).contains(s))
            .ok_or_else(|| bad(&format!("{key}.TimeoutSeconds"), format!("expected 1 to 86400 seconds, found {v}")))?,
    };
    Ok(Hook {
        event,
        tables: strings(&format!("{key}.Tables"), field(object, "Tables"))?.iter().map(|t| t.as_str().into()).collect(),
        sql,
        command,
        timeout: Duration::from_secs(timeout),
        on_failure: on_failure(&format!("{key}.OnFailure"), field(object, "OnFailure"), default)?,
    })
}

/// Reads the `Hooks` section (`None`: no hooks); `folder` is where `SqlFile`s are found.
pub fn parse(section: Option<&Value>, folder: &Path) -> Result<Hooks, SectionError> {
    let object = match section {
        None | Some(Value::Null) => return Ok(Hooks::default()),
        Some(Value::Object(object)) => object,
        Some(other) => return Err(bad("Hooks", format!("expected an object, found {other}"))),
    };
    let known = |k: &str| {
        k.eq_ignore_ascii_case("OnFailure") || HookEvent::ALL.iter().any(|e| e.name().eq_ignore_ascii_case(k))
    };
    if let Some((unknown, _)) = object.iter().find(|(k, _)| !known(k)) {
        let events: Vec<&str> = HookEvent::ALL.iter().map(|e| e.name()).collect();
        return Err(bad(
            &format!("Hooks.{unknown}"),
            format!("unknown key (events: {}; and OnFailure)", events.join(", ")),
        ));
    }
    let default = on_failure("Hooks.OnFailure", field(object, "OnFailure"), OnFailure::Log)?;
    let mut hooks = Vec::new();
    for event in HookEvent::ALL {
        let key = format!("Hooks.{}", event.name());
        match field(object, event.name()) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    hooks.push(hook(&format!("{key}[{i}]"), event, item, default, folder)?);
                }
            }
            Some(single @ Value::Object(_)) => hooks.push(hook(&key, event, single, default, folder)?),
            Some(other) => return Err(bad(&key, format!("expected a list of hooks, found {other}"))),
        }
    }
    Ok(Hooks { hooks })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Hooks, SectionError> {
        parse(Some(&serde_json::from_str(text).unwrap()), Path::new("."))
    }

    #[test]
    fn hooks_are_read_per_event_with_defaults() {
        let hooks = parse_text(
            r#"{"onfailure":"Stop","TableCreated":[{"Tables":["crm7.person"],"Sql":"CREATE INDEX i ON {table} (x)"}],
                "BatchCommitted":{"Command":["/bin/true"],"TimeoutSeconds":5,"OnFailure":"log"}}"#,
        )
        .unwrap();
        assert_eq!(hooks.hooks.len(), 2);
        assert_eq!(hooks.hooks[0].event, HookEvent::TableCreated);
        assert_eq!(hooks.hooks[0].on_failure, OnFailure::Stop);
        assert_eq!(hooks.hooks[0].timeout, Duration::from_secs(60));
        assert_eq!(hooks.hooks[1].command, ["/bin/true"]);
        assert_eq!(hooks.hooks[1].on_failure, OnFailure::Log);
        assert_eq!(hooks.hooks[1].timeout, Duration::from_secs(5));
    }

    #[test]
    fn mistakes_name_their_key() {
        let key = |text: &str| parse_text(text).unwrap_err().key;
        assert_eq!(key(r#"{"TableCreatd":[]}"#), "Hooks.TableCreatd");
        assert_eq!(key(r#"{"TableLoaded":[{"Tables":["x"]}]}"#), "Hooks.TableLoaded[0]");
        assert_eq!(key(r#"{"TableLoaded":[{"Sql":"x","Sqll":"y"}]}"#), "Hooks.TableLoaded[0].Sqll");
        assert_eq!(key(r#"{"BatchCommitted":[{"Command":"x"}]}"#), "Hooks.BatchCommitted[0].Command");
        assert_eq!(key(r#"{"BatchCommitted":[{"Sql":"x","OnFailure":"later"}]}"#), "Hooks.BatchCommitted[0].OnFailure");
        assert_eq!(key(r#"{"SchemaChanged":[{"SqlFile":"no/such/file.sql"}]}"#), "Hooks.SchemaChanged[0].SqlFile");
        assert_eq!(
            key(r#"{"SchemaChanged":[{"Sql":"x","TimeoutSeconds":0}]}"#),
            "Hooks.SchemaChanged[0].TimeoutSeconds"
        );
    }
}
