//! Envelope schemas seen before, recognised by their bytes.
//!
//! Every event of a table repeats the same Connect schema block. The decoder keeps the raw
//! bytes of recent blocks with their resolved field types; when an event's block is
//! byte-for-byte one of them, the block is blanked before parsing and the cached types are
//! used, so only the payload is turned into a tape.

use super::field::{ConnectType, connect_type};
use super::json::Json;

/// One field of a `before`/`after` struct schema.
#[derive(Debug)]
pub(crate) struct ConnectField {
    pub(crate) name: Box<str>,
    pub(crate) ty: ConnectType,
}

/// The row schemas of an envelope, resolved once.
#[derive(Debug, Default)]
pub(crate) struct EnvelopeSchema {
    pub(crate) before: Option<Vec<ConnectField>>,
    pub(crate) after: Option<Vec<ConnectField>>,
}

impl EnvelopeSchema {
    /// Resolves the `before` and `after` struct schemas of an envelope schema.
    pub(crate) fn from_json(schema: Json<'_, '_>) -> Self {
        let image = |name: &str| {
            let fields = schema
                .get("fields")?
                .elements()
                .find(|f| f.get("field").and_then(Json::as_str) == Some(name))?
                .get("fields")?;
            Some(
                fields
                    .elements()
                    .filter_map(|f| Some(ConnectField { name: f.get("field")?.as_str()?.into(), ty: connect_type(f) }))
                    .collect(),
            )
        };
        EnvelopeSchema { before: image("before"), after: image("after") }
    }
}

/// Most-recently-used list of schema blocks; tables arrive in runs, so hits are found first.
#[derive(Debug, Default)]
pub(crate) struct SchemaCache {
    entries: Vec<(Box<[u8]>, EnvelopeSchema)>,
}

/// Enough for every table of a large tenant; each entry is a few kilobytes.
const CAPACITY: usize = 512;

impl SchemaCache {
    /// If the bytes at `at` are a cached block followed by `,"payload":`, moves it to the
    /// front and returns its length.
    pub(crate) fn lookup(&mut self, input: &[u8], at: usize) -> Option<usize> {
        let rest = input.get(at..)?;
        let index = self
            .entries
            .iter()
            .position(|(bytes, _)| rest.starts_with(bytes) && super::scan::payload_follows(input, at + bytes.len()))?;
        if index > 0 {
            self.entries[..=index].rotate_right(1);
        }
        Some(self.entries[0].0.len())
    }

    /// Adds a block at the front, evicting the least recently used beyond capacity.
    pub(crate) fn insert(&mut self, bytes: Box<[u8]>, schema: EnvelopeSchema) {
        if self.entries.len() == CAPACITY {
            self.entries.pop();
        }
        self.entries.insert(0, (bytes, schema));
    }

    /// The most recently used schema.
    pub(crate) fn front(&self) -> Option<&EnvelopeSchema> {
        self.entries.first().map(|(_, s)| s)
    }
}
