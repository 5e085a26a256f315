//! Walking the record line and the Debezium envelope into a [`Decoded`] event.

use super::field::{self, DecodeOptions, FieldKind};
use super::history::read_table_changes;
use super::json::Json;
use super::schema_cache::{ConnectField, EnvelopeSchema};
use super::value;
use super::{
    ChangeEvent, DecodeError, DecodeErrorKind, Decoded, Event, Field, Key, Op, Row, SchemaChanges, Snapshot,
    SourceInfo, Transaction, need,
};
use crate::protocol::Position;
use crate::schema::{SchemaRegistry, TableSchema};

/// Decodes a parsed record: the record line form or a bare value.
pub(super) fn decode_root<'a>(
    root: Json<'_, 'a>,
    schemas: &SchemaRegistry,
    opts: &DecodeOptions,
    envelope: Option<&EnvelopeSchema>,
) -> Result<Decoded<'a>, DecodeError> {
    let is_record_line = root.is_object()
        && root.get("value").is_some()
        && (root.get("topic").is_some() || root.get("offset").is_some());
    if !is_record_line {
        let event = decode_value(root, None, schemas, opts, envelope).map_err(|kind| DecodeError::new(None, kind))?;
        return Ok(Decoded { position: None, event });
    }
    let position = read_position(root).map_err(|kind| DecodeError::new(None, kind))?;
    let with_position = |kind| DecodeError::new(position.as_ref().map(Position::to_owned), kind);
    let value = root.get("value").ok_or_else(|| with_position(DecodeErrorKind::Missing("value")))?;
    let key = root.get("key").filter(|k| !k.is_null());
    let event = decode_value(value, key, schemas, opts, envelope)
        .map_err(|kind| with_position(kind).in_table(source_table(value)))?;
    Ok(Decoded { position, event })
}

/// `(schema, table)` of a change value's `source` block, read leniently (for errors).
fn source_table(value: Json<'_, '_>) -> Option<(String, String)> {
    let (_, payload) = unwrap_connect(value);
    let source = payload.get("source")?;
    Some((source.get("schema")?.as_str()?.to_owned(), source.get("table")?.as_str()?.to_owned()))
}

fn read_position<'a>(root: Json<'_, 'a>) -> Result<Option<Position<'a>>, DecodeErrorKind> {
    let topic = root.get("topic").and_then(Json::as_str);
    let partition = root.get("partition").map(|p| {
        p.as_i64()
            .and_then(|v| i32::try_from(v).ok())
            .ok_or_else(|| DecodeErrorKind::field("partition", "a 32-bit integer", p.kind()))
    });
    let offset =
        root.get("offset").map(|o| o.as_i64().ok_or_else(|| DecodeErrorKind::field("offset", "an integer", o.kind())));
    Ok(match (topic, partition, offset) {
        (Some(topic), Some(partition), Some(offset)) => {
            Some(Position { topic, partition: partition?, offset: offset? })
        }
        (_, Some(Err(e)), _) | (_, _, Some(Err(e))) => return Err(e),
        _ => None,
    })
}

/// Splits a Connect JSON document into (schema, payload); bare payloads have no schema.
fn unwrap_connect<'t, 'a>(doc: Json<'t, 'a>) -> (Option<Json<'t, 'a>>, Json<'t, 'a>) {
    if doc.is_object() {
        let mut entries = doc.entries();
        if let (Some(("schema", schema)), Some(("payload", payload)), None) =
            (entries.next(), entries.next(), entries.next())
        {
            return (Some(schema).filter(|s| !s.is_null()), payload);
        }
        if let (Some(schema), Some(payload), 2) = (doc.get("schema"), doc.get("payload"), doc.len()) {
            return (Some(schema).filter(|s| !s.is_null()), payload);
        }
    }
    (None, doc)
}

fn decode_value<'a>(
    value: Json<'_, 'a>,
    key: Option<Json<'_, 'a>>,
    schemas: &SchemaRegistry,
    opts: &DecodeOptions,
    envelope: Option<&EnvelopeSchema>,
) -> Result<Event<'a>, DecodeErrorKind> {
    if value.is_null() {
        return Ok(Event::Tombstone);
    }
    let (schema, payload) = unwrap_connect(value);
    if payload.is_null() {
        return Ok(Event::Tombstone);
    }
    if !payload.is_object() {
        return Err(DecodeErrorKind::field("value", "an object or null", payload.kind()));
    }
    if let Some(status) = payload.get("status").and_then(Json::as_str) {
        let end = match status {
            "BEGIN" => false,
            "END" => true,
            other => {
                return Err(DecodeErrorKind::Invalid {
                    field: "status",
                    reason: format!("unknown transaction status `{other}`"),
                });
            }
        };
        let id = need(payload, "id")?.as_str().ok_or(DecodeErrorKind::field("id", "string", "other"))?;
        let event_count = match payload.get("event_count").filter(|c| !c.is_null()) {
            None => None,
            Some(c) => match c.as_i64() {
                Some(n) => Some(u64::try_from(n).map_err(|_| DecodeErrorKind::Invalid {
                    field: "event_count",
                    reason: format!("a transaction cannot have {n} events"),
                })?),
                None => return Err(DecodeErrorKind::field("event_count", "an integer", c.kind())),
            },
        };
        return Ok(Event::TransactionMarker(crate::decode::TransactionMarker { end, id, event_count }));
    }
    if payload.get("tableChanges").is_some() {
        let ddl_lsn = payload.get("position").and_then(|p| p.get("commit_lsn")).and_then(Json::as_str);
        let changes = read_table_changes(payload)?;
        return Ok(Event::SchemaChange(SchemaChanges { changes, ddl_lsn: ddl_lsn.map(str::to_owned) }));
    }
    let op = match need(payload, "op")?.as_str() {
        Some("c") => Op::Create,
        Some("u") => Op::Update,
        Some("d") => Op::Delete,
        Some("r") => Op::Read,
        Some("t") => Op::Truncate,
        Some(other) => {
            return Err(DecodeErrorKind::Invalid { field: "op", reason: format!("unknown operation `{other}`") });
        }
        None => return Err(DecodeErrorKind::field("op", "string", need(payload, "op")?.kind())),
    };
    let source = read_source(need(payload, "source")?)?;
    let table = schemas.get(source.schema, source.table).map(AsRef::as_ref);
    let row_schema = |image: &str| -> ImageSchema<'_, '_, 'a> {
        if let Some(env) = envelope {
            let fields = if image == "before" { &env.before } else { &env.after };
            return fields.as_deref().map_or(ImageSchema::None, ImageSchema::Cached);
        }
        schema
            .and_then(|s| s.get("fields"))
            .and_then(|fields| {
                fields
                    .elements()
                    .find(|f| f.get("field").and_then(Json::as_str) == Some(image))
                    .and_then(|f| f.get("fields"))
            })
            .map_or(ImageSchema::None, ImageSchema::Tape)
    };
    let ctx = RowContext { table, opts, source: &source };
    let before = read_row(payload.get("before"), row_schema("before"), "before", &ctx)?;
    let after = read_row(payload.get("after"), row_schema("after"), "after", &ctx)?;
    let key = match key {
        Some(k) => {
            let (key_schema, key_payload) = unwrap_connect(k);
            let fields = key_schema.and_then(|s| s.get("fields")).map_or(ImageSchema::None, ImageSchema::Tape);
            let mut key = Key::new();
            read_into(key_payload, fields, "key", &ctx, &mut key)?;
            Some(key)
        }
        None => table.and_then(|t| key_from_image(t, if op == Op::Delete { &before } else { &after })),
    };
    let transaction = match payload.get("transaction").filter(|t| !t.is_null()) {
        Some(t) => Some(Transaction {
            id: need(t, "id")?.as_str().ok_or(DecodeErrorKind::field("transaction.id", "string", "other"))?,
            total_order: t.get("total_order").and_then(Json::as_i64).unwrap_or(0),
            data_collection_order: t.get("data_collection_order").and_then(Json::as_i64).unwrap_or(0),
        }),
        None => None,
    };
    let ts_ms = payload.get("ts_ms").and_then(Json::as_i64);
    Ok(Event::Change(ChangeEvent { op, key, before, after, source, ts_ms, transaction }))
}

/// The key of a record that carries none (payload-only, or `key` left out), taken from its
/// row image by the primary key the schema history declares: what the applier keys rows by,
/// so every reader of a decoded event sees the same key. `None` when the image lacks a key
/// column (the applier then refuses the record and names it).
fn key_from_image<'a>(table: &TableSchema, image: &Option<Row<'a>>) -> Option<Key<'a>> {
    let image = image.as_ref()?;
    if table.primary_key.is_empty() {
        return None;
    }
    table.primary_key.iter().map(|column| image.iter().find(|f| f.name == column.as_str()).cloned()).collect()
}

fn opt_str<'a>(obj: Json<'_, 'a>, field: &str) -> Option<&'a str> {
    obj.get(field).and_then(Json::as_str)
}

fn read_source<'a>(source: Json<'_, 'a>) -> Result<SourceInfo<'a>, DecodeErrorKind> {
    let req = |field: &'static str| -> Result<&'a str, DecodeErrorKind> {
        let v = need(source, field)?;
        v.as_str().ok_or_else(|| DecodeErrorKind::field(field, "string", v.kind()))
    };
    let snapshot = match source.get("snapshot") {
        None => Snapshot::False,
        Some(v) if v.is_null() => Snapshot::False,
        Some(v) => match (v.as_bool(), v.as_str()) {
            (Some(true), _) | (_, Some("true")) => Snapshot::True,
            (Some(false), _) | (_, Some("false")) => Snapshot::False,
            (_, Some("last")) => Snapshot::Last,
            (_, Some("first")) => Snapshot::First,
            (_, Some("first_in_data_collection")) => Snapshot::FirstInDataCollection,
            (_, Some("last_in_data_collection")) => Snapshot::LastInDataCollection,
            (_, Some("incremental")) => Snapshot::Incremental,
            (_, Some(other)) => {
                return Err(DecodeErrorKind::Invalid {
                    field: "source.snapshot",
                    reason: format!("unknown value `{other}`"),
                });
            }
            _ => return Err(DecodeErrorKind::field("source.snapshot", "boolean or string", v.kind())),
        },
    };
    let event_serial_no = source.get("event_serial_no").and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()));
    Ok(SourceInfo {
        version: opt_str(source, "version"),
        connector: opt_str(source, "connector"),
        name: opt_str(source, "name"),
        ts_ms: source.get("ts_ms").and_then(Json::as_i64),
        snapshot,
        db: opt_str(source, "db"),
        schema: req("schema")?,
        table: req("table")?,
        change_lsn: opt_str(source, "change_lsn"),
        commit_lsn: opt_str(source, "commit_lsn"),
        event_serial_no,
    })
}

/// Where a row image's field types come from.
#[derive(Clone, Copy)]
enum ImageSchema<'s, 't, 'a> {
    /// No Connect schema: the table schema (if known) decides.
    None,
    /// The struct schema's `fields` array on the tape.
    Tape(Json<'t, 'a>),
    /// Fields resolved earlier for an identical schema block.
    Cached(&'s [ConnectField]),
}

struct RowContext<'c, 'a> {
    table: Option<&'c TableSchema>,
    opts: &'c DecodeOptions,
    source: &'c SourceInfo<'a>,
}

/// Reads a row image. Connect schema fields and table columns are matched positionally
/// first (both follow column order), by name when that fails.
fn read_row<'a>(
    row: Option<Json<'_, 'a>>,
    connect_fields: ImageSchema<'_, '_, 'a>,
    image: &'static str,
    ctx: &RowContext<'_, 'a>,
) -> Result<Option<Row<'a>>, DecodeErrorKind> {
    let Some(row) = row.filter(|r| !r.is_null()) else { return Ok(None) };
    if !row.is_object() {
        return Err(DecodeErrorKind::field(image, "an object or null", row.kind()));
    }
    let mut fields: Row<'a> = Vec::with_capacity(row.len());
    read_into(row, connect_fields, image, ctx, &mut fields)?;
    Ok(Some(fields))
}

/// Appends the typed fields of `row` to `out` (a [`Row`] or an inline [`Key`]).
fn read_into<'a, C: Extend<Field<'a>>>(
    row: Json<'_, 'a>,
    connect_fields: ImageSchema<'_, '_, 'a>,
    image: &'static str,
    ctx: &RowContext<'_, 'a>,
    out: &mut C,
) -> Result<(), DecodeErrorKind> {
    if !row.is_object() {
        return Err(DecodeErrorKind::field(image, "an object", row.kind()));
    }
    let mut tape_iter = match connect_fields {
        ImageSchema::Tape(fields) => Some(fields.elements()),
        _ => None,
    };
    let columns = ctx.table.map(|t| t.columns.as_slice());
    for (index, (name, json)) in row.entries().enumerate() {
        let column = columns.and_then(|cols| match cols.get(index) {
            Some(c) if c.name == name => Some(c),
            _ => cols.iter().find(|c| c.name == name),
        });
        let declared = match (connect_fields, &mut tape_iter) {
            (ImageSchema::Cached(fields), _) => match fields.get(index) {
                Some(f) if &*f.name == name => Some(f.ty),
                _ => fields.iter().find(|f| &*f.name == name).map(|f| f.ty),
            },
            (ImageSchema::Tape(all), Some(iter)) => {
                let is_named = |f: &Json<'_, 'a>| f.get("field").and_then(Json::as_str) == Some(name);
                iter.next().filter(is_named).or_else(|| all.elements().find(is_named)).map(field::connect_type)
            }
            _ => None,
        };
        let kind = match declared {
            Some(ty) => field::refine(ty, column),
            None => column.map_or(FieldKind::Unknown, |c| field::from_column(c, ctx.opts)),
        };
        let value = value::read(kind, json).map_err(|source| DecodeErrorKind::Value {
            image,
            column: name.to_owned(),
            table: format!("{}.{}", ctx.source.schema, ctx.source.table),
            source,
        })?;
        out.extend(std::iter::once(Field { name, value }));
    }
    Ok(())
}
