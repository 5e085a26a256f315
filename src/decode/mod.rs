//! Stage 2: zero-copy decoding of Debezium SQL Server change events.
//!
//! A record arrives as one JSON document: either the Replication Service's record line
//! `{"topic","partition","offset","key","value"}` or a bare record value. The value is a
//! Debezium envelope serialized by Kafka Connect's JsonConverter, with or without the
//! `{"schema":…,"payload":…}` wrapper. We parse it in place with simd-json into a reused
//! tape; every string in the result borrows from the record's own buffer, so ordinary text
//! and numbers cost no allocation. A row costs one `Vec`; a key of up to two columns none.
//!
//! Values are typed from the event's own Connect schema when present, else from the table
//! schema learned from schema history plus the connector's settings ([`DecodeOptions`]).

mod envelope;
mod field;
mod history;
mod json;
mod scan;
mod schema_cache;
mod value;

use std::fmt;

use simd_json::{Buffers, Tape};
use smallvec::SmallVec;

pub use field::{BinaryEncoding, BinaryHandlingMode, DecimalHandlingMode, DecodeOptions, TimePrecisionMode};
pub use history::read_definition;
pub use value::{Binary, Value, ValueError};

use crate::protocol::{OwnedPosition, Position};
use crate::schema::{SchemaRegistry, TableChange};
use json::Json;
use schema_cache::{EnvelopeSchema, SchemaCache};

/// The operation a change event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `c`: a row was inserted.
    Create,
    /// `u`: a row was updated.
    Update,
    /// `d`: a row was deleted.
    Delete,
    /// `r`: a row was read by a snapshot.
    Read,
    /// `t`: the table was truncated.
    Truncate,
}

impl Op {
    /// The connector's one-letter code.
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
            Op::Truncate => "t",
        }
    }
}

/// Whether and how an event belongs to a snapshot (`source.snapshot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Snapshot {
    False,
    True,
    First,
    FirstInDataCollection,
    LastInDataCollection,
    Last,
    Incremental,
}

/// The `source` block: where and when the change happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct SourceInfo<'a> {
    pub version: Option<&'a str>,
    pub connector: Option<&'a str>,
    pub name: Option<&'a str>,
    pub ts_ms: Option<i64>,
    pub snapshot: Snapshot,
    pub db: Option<&'a str>,
    pub schema: &'a str,
    pub table: &'a str,
    pub change_lsn: Option<&'a str>,
    pub commit_lsn: Option<&'a str>,
    pub event_serial_no: Option<i64>,
}

/// The `transaction` block (present when the connector runs with `provide.transaction.metadata`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Transaction<'a> {
    pub id: &'a str,
    pub total_order: i64,
    pub data_collection_order: i64,
}

/// One named column value.
#[derive(Debug, Clone, PartialEq)]
pub struct Field<'a> {
    /// Column name, borrowed from the record.
    pub name: &'a str,
    /// The typed value.
    pub value: Value<'a>,
}

/// A row image (`before` or `after`): one allocation per row, none per field.
pub type Row<'a> = Vec<Field<'a>>;

/// A primary key; inline for the one- and two-column keys CRM tables use.
pub type Key<'a> = SmallVec<[Field<'a>; 2]>;

/// A decoded data change.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent<'a> {
    /// What happened.
    pub op: Op,
    /// The record key (the row's primary key), when the record carried one.
    pub key: Option<Key<'a>>,
    /// The row before the change (updates and deletes).
    pub before: Option<Row<'a>>,
    /// The row after the change (creates, updates, reads).
    pub after: Option<Row<'a>>,
    /// Origin of the change.
    pub source: SourceInfo<'a>,
    /// When the connector processed the event.
    pub ts_ms: Option<i64>,
    /// Transaction metadata, if provided.
    pub transaction: Option<Transaction<'a>>,
}

/// What one record holds.
// Boxing the change would cost an allocation per event on the hot path; the enum is moved
// once or twice per record, so its size is cheap.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Event<'a> {
    /// A row change.
    Change(ChangeEvent<'a>),
    /// A null value following a delete, for log compaction; nothing to apply.
    Tombstone,
    /// A schema-history record: the new structure of one or more tables.
    SchemaChange(SchemaChanges),
    /// A transaction-metadata record (`provide.transaction.metadata`): a source transaction
    /// began or ended; `END` tells how many change events it has.
    TransactionMarker(TransactionMarker<'a>),
}

/// A transaction-metadata record's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionMarker<'a> {
    /// `BEGIN` (false) or `END` (true).
    pub end: bool,
    /// The transaction id, as the change events' `transaction.id` spells it.
    pub id: &'a str,
    /// Change events in the transaction (`END` only).
    pub event_count: Option<u64>,
}

/// The table changes of one schema-history record, and the LSN of the DDL that made them
/// (history records carry `position.commit_lsn`): a change of the same table with an older
/// commit LSN belongs to the table's previous incarnation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SchemaChanges {
    /// The changes, in record order.
    pub changes: Vec<TableChange>,
    /// The DDL's commit LSN, when the record carried one.
    pub ddl_lsn: Option<String>,
}

impl std::ops::Deref for SchemaChanges {
    type Target = Vec<TableChange>;
    fn deref(&self) -> &Vec<TableChange> {
        &self.changes
    }
}

impl std::ops::DerefMut for SchemaChanges {
    fn deref_mut(&mut self) -> &mut Vec<TableChange> {
        &mut self.changes
    }
}

impl<'s> IntoIterator for &'s SchemaChanges {
    type Item = &'s TableChange;
    type IntoIter = std::slice::Iter<'s, TableChange>;
    fn into_iter(self) -> Self::IntoIter {
        self.changes.iter()
    }
}

/// A decoded record: its position in the log, when the record carried one, and its event.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded<'a> {
    /// Topic, partition and offset from the record line.
    pub position: Option<Position<'a>>,
    /// The event.
    pub event: Event<'a>,
}

/// A record that could not be decoded, with its position and its table when known.
///
/// Boxed so that `Result<Decoded, DecodeError>` stays small on the success path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(Box<DecodeFailure>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct DecodeFailure {
    position: Option<OwnedPosition>,
    kind: DecodeErrorKind,
    table: Option<(String, String)>,
}

impl DecodeError {
    /// An error for the record at `position` (if known).
    pub fn new(position: Option<OwnedPosition>, kind: DecodeErrorKind) -> Self {
        Self(Box::new(DecodeFailure { position, kind, table: None }))
    }

    fn in_table(mut self, table: Option<(String, String)>) -> Self {
        self.0.table = table;
        self
    }

    /// Where the record sits in the log, when the record line said.
    pub fn position(&self) -> Option<&OwnedPosition> {
        self.0.position.as_ref()
    }

    /// The `(schema, table)` of a change record's `source` block, when it could be read: a
    /// caller can tell whose record failed (a reshaped table's old records are skipped).
    pub fn table(&self) -> Option<(&str, &str)> {
        self.0.table.as_ref().map(|(s, t)| (s.as_str(), t.as_str()))
    }

    /// What is wrong.
    pub fn kind(&self) -> &DecodeErrorKind {
        &self.0.kind
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position() {
            Some(p) => write!(f, "record {p}: {}", self.kind()),
            None => write!(f, "record: {}", self.kind()),
        }
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self.kind() {
            DecodeErrorKind::Value { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The ways a record can be malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    /// Not JSON at all.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// A required member is absent.
    #[error("missing `{0}`")]
    Missing(&'static str),
    /// A member has the wrong JSON kind.
    #[error("`{field}` must be {expected}, found {found}")]
    Field {
        /// The member.
        field: &'static str,
        /// Expected JSON kind.
        expected: &'static str,
        /// Actual JSON kind.
        found: &'static str,
    },
    /// A member has an unusable value.
    #[error("`{field}`: {reason}")]
    Invalid {
        /// The member.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A column value does not match its type.
    #[error("{image} column `{column}` of {table}: {source}")]
    Value {
        /// `key`, `before` or `after`.
        image: &'static str,
        /// The column.
        column: String,
        /// `schema.table`.
        table: String,
        /// What is wrong with the value.
        source: ValueError,
    },
}

impl DecodeErrorKind {
    fn field(field: &'static str, expected: &'static str, found: &'static str) -> Self {
        DecodeErrorKind::Field { field, expected, found }
    }
}

/// Fetches a required member.
fn need<'t, 'a>(obj: Json<'t, 'a>, field: &'static str) -> Result<Json<'t, 'a>, DecodeErrorKind> {
    if !obj.is_object() {
        return Err(DecodeErrorKind::field(field, "in an object", obj.kind()));
    }
    obj.get(field).ok_or(DecodeErrorKind::Missing(field))
}

/// Decodes records, reusing its parse buffers from one record to the next.
///
/// Not `Sync`: each pipeline stage owns one.
pub struct Decoder {
    options: DecodeOptions,
    buffers: Buffers,
    tape: Option<Tape<'static>>,
    schema_cache: SchemaCache,
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder").field("options", &self.options).finish_non_exhaustive()
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DecodeOptions::default())
    }
}

impl Decoder {
    /// A decoder for a connector configured with `options`.
    pub fn new(options: DecodeOptions) -> Self {
        Self {
            options,
            buffers: Buffers::new(16 * 1024),
            tape: Some(Tape::null().reset()),
            schema_cache: SchemaCache::default(),
        }
    }

    /// The connector settings this decoder assumes for payload-only events.
    pub fn options(&self) -> &DecodeOptions {
        &self.options
    }

    /// Decodes one record in place. `input` is modified (strings are unescaped where they
    /// lie) and the result borrows from it. `schemas` types payload-only events; schema
    /// changes are returned, not applied, so the caller decides when they take effect.
    pub fn decode<'a>(&mut self, input: &'a mut [u8], schemas: &SchemaRegistry) -> Result<Decoded<'a>, DecodeError> {
        // A schema block seen before is blanked (`null` + spaces) so the parser skips it and
        // the cached field types are used; a new one is remembered after parsing.
        let mut cached = false;
        let mut remember: Option<Box<[u8]>> = None;
        if let Some(at) = scan::value_schema_start(input) {
            if let Some(len) = self.schema_cache.lookup(input, at) {
                let block = &mut input[at..at + len];
                block.fill(b' ');
                block[..4].copy_from_slice(b"null");
                cached = true;
            } else if let Some(end) =
                scan::skip_value(input, at).filter(|&end| end - at >= 4 && scan::payload_follows(input, end))
            {
                remember = Some(input[at..end].into());
            }
        }
        let mut tape: Tape<'a> = self.tape.take().unwrap_or_else(Tape::null).reset();
        let result = match simd_json::fill_tape(input, &mut self.buffers, &mut tape) {
            Ok(()) => match Json::root(&tape.0) {
                Some(root) => {
                    if let Some(bytes) = remember {
                        let value = root.get("value").filter(|_| root.get("schema").is_none()).unwrap_or(root);
                        if let Some(schema) = value.get("schema") {
                            self.schema_cache.insert(bytes, EnvelopeSchema::from_json(schema));
                            cached = true;
                        }
                    }
                    let envelope = if cached { self.schema_cache.front() } else { None };
                    envelope::decode_root(root, schemas, &self.options, envelope)
                }
                None => Err(DecodeError::new(None, DecodeErrorKind::Json("empty document".into()))),
            },
            Err(e) => Err(DecodeError::new(None, DecodeErrorKind::Json(e.to_string()))),
        };
        self.tape = Some(tape.reset());
        result
    }
}
