//! Reading `appsettings.json` the way .NET configuration does: keys case-insensitive,
//! `DBMIRROR_<Key>` environment variables (`__` between levels) over the file, and every
//! problem reported with its key path. Shared by [`crate::config`] and the sections their
//! owners parse ([`crate::partner::config`]), so each reads its keys the same way.

use serde_json::Value;

/// A configuration problem, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The file is not JSON.
    #[error("{path} is not valid JSON: {reason}")]
    Syntax {
        /// The file.
        path: String,
        /// The parser's message (line and column).
        reason: String,
    },
    /// A key has an unusable value.
    #[error("{key}: {reason}")]
    Value {
        /// The key path, e.g. `ReplicaDatabase.ConnectionString`.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// A bad value at `key`.
pub fn bad(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Value { key: key.to_owned(), reason: reason.into() }
}

/// Looks up a key path case-insensitively.
pub fn lookup<'v>(root: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(root, |node, part| {
        node.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(part)).map(|(_, v)| v)
    })
}

/// An environment override for `path`, if set.
pub fn env_override(env: &dyn Fn(&str) -> Option<String>, path: &[&str]) -> Option<String> {
    env(&format!("DBMIRROR_{}", path.join("__")))
}

/// A file's settings with the environment over them.
pub struct Reader<'a> {
    /// The file's top level.
    pub root: &'a Value,
    /// Environment variables by name.
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl Reader<'_> {
    /// The raw setting: environment first, then the file. JSON strings and numbers both count.
    pub fn raw(&self, path: &[&str]) -> Option<Result<String, ConfigError>> {
        if let Some(v) = env_override(self.env, path) {
            return Some(Ok(v));
        }
        let key = path.join(".");
        match lookup(self.root, path)? {
            Value::Null => None,
            Value::String(s) => Some(Ok(s.clone())),
            Value::Number(n) => Some(Ok(n.to_string())),
            Value::Bool(b) => Some(Ok(b.to_string())),
            other => Some(Err(bad(&key, format!("expected a value, found {}", kind(other))))),
        }
    }

    /// A whole number from `min` to `max`, `default` when unset.
    pub fn integer(&self, path: &[&str], default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        let key = path.join(".");
        let Some(raw) = self.raw(path) else { return Ok(default) };
        let raw = raw?;
        let value: u64 = raw
            .trim()
            .parse()
            .map_err(|_| bad(&key, format!("expected a whole number from {min} to {max}, found `{raw}`")))?;
        if !(min..=max).contains(&value) {
            return Err(bad(&key, format!("must be from {min} to {max}, found {value}")));
        }
        Ok(value)
    }

    /// `true` or `false`, `default` when unset.
    pub fn boolean(&self, path: &[&str], default: bool) -> Result<bool, ConfigError> {
        let Some(raw) = self.raw(path) else { return Ok(default) };
        let raw = raw?;
        match raw.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(bad(&path.join("."), format!("expected true or false, found `{raw}`"))),
        }
    }

    /// A trimmed, non-empty text, `None` when unset.
    pub fn text(&self, path: &[&str]) -> Result<Option<String>, ConfigError> {
        self.raw(path).transpose().map(|v| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()))
    }
}

/// What a JSON value is, for messages (`a list`).
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
