//! The comparison point: a straightforward decoder of the same events built on
//! `serde_json::Value` (an owned tree, one allocation per string and per object), producing
//! the same typed values as the zero-copy decoder for the types the benchmark uses.

use base64::Engine as _;
use dbmirror::decode::{ChangeEvent, Field, Op, Row, Snapshot, SourceInfo, Value};
use dbmirror::schema::{SchemaRegistry, SqlType, TableSchema};
use dbmirror::value::{Date, DateTime, Decimal};
use serde_json::Value as J;
use std::collections::HashMap;

/// How a field is represented, as far as the benchmark's tables need.
#[derive(Clone, Copy)]
enum Kind {
    Int,
    Text,
    Uuid,
    Bool,
    Decimal(i64),
    NanoTs,
    MilliTs,
    Date,
}

fn kind_from_connect(f: &J) -> Kind {
    match (f.get("name").and_then(J::as_str), f.get("type").and_then(J::as_str)) {
        (Some("org.apache.kafka.connect.data.Decimal"), _) => {
            Kind::Decimal(f["parameters"]["scale"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0))
        }
        (Some("io.debezium.time.NanoTimestamp"), _) => Kind::NanoTs,
        (Some("io.debezium.time.Timestamp"), _) => Kind::MilliTs,
        (Some("io.debezium.time.Date"), _) => Kind::Date,
        (_, Some("boolean")) => Kind::Bool,
        (_, Some("string")) => Kind::Text,
        _ => Kind::Int,
    }
}

fn kind_from_column(t: SqlType) -> Kind {
    match t {
        SqlType::Decimal { scale, .. } => Kind::Decimal(i64::from(scale)),
        SqlType::DateTime2 { .. } => Kind::NanoTs,
        SqlType::DateTime => Kind::MilliTs,
        SqlType::Date => Kind::Date,
        SqlType::Bit => Kind::Bool,
        SqlType::UniqueIdentifier => Kind::Uuid,
        SqlType::NVarChar(_) => Kind::Text,
        _ => Kind::Int,
    }
}

fn read(kind: Kind, v: &J) -> Result<Value<'_>, String> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    Ok(match kind {
        Kind::Int => Value::Int(v.as_i64().ok_or("int")?),
        Kind::Text => Value::Text(v.as_str().ok_or("text")?),
        Kind::Uuid => Value::Uuid(v.as_str().ok_or("uuid")?),
        Kind::Bool => Value::Bool(v.as_bool().ok_or("bool")?),
        Kind::Decimal(scale) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().ok_or("b64")?)
                .map_err(|e| e.to_string())?;
            Value::Decimal(Decimal::from_be_bytes(&bytes, scale).map_err(|e| e.to_string())?)
        }
        Kind::NanoTs => {
            Value::DateTime(DateTime::from_epoch_units(v.as_i64().ok_or("ts")?, 1).map_err(|e| e.to_string())?)
        }
        Kind::MilliTs => {
            Value::DateTime(DateTime::from_epoch_units(v.as_i64().ok_or("ts")?, 1_000_000).map_err(|e| e.to_string())?)
        }
        Kind::Date => Value::Date(Date::from_days(v.as_i64().ok_or("date")?).map_err(|e| e.to_string())?),
    })
}

fn row<'v>(image: &'v J, connect: Option<&'v J>, table: Option<&TableSchema>) -> Result<Option<Row<'v>>, String> {
    let Some(obj) = image.as_object() else { return Ok(None) };
    // Index the image's field schemas once per event rather than searching per field.
    let by_name: HashMap<&str, &J> = connect
        .and_then(J::as_array)
        .map(|fields| fields.iter().filter_map(|f| Some((f["field"].as_str()?, f))).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (name, v) in obj {
        let column = table.and_then(|t| t.column(name));
        let kind = match by_name.get(name.as_str()) {
            Some(f) => match (kind_from_connect(f), column.map(|c| c.sql_type)) {
                (Kind::Text, Some(SqlType::UniqueIdentifier)) => Kind::Uuid,
                (kind, _) => kind,
            },
            None => column.map_or(Kind::Int, |c| kind_from_column(c.sql_type)),
        };
        out.push(Field { name: name.as_str(), value: read(kind, v)? });
    }
    Ok(Some(out))
}

/// Parses the record into an owned tree (the caller keeps it alive).
pub fn parse(line: &[u8]) -> Result<J, String> {
    serde_json::from_slice(line).map_err(|e| e.to_string())
}

/// Decodes a parsed change event into the same typed rows the zero-copy decoder returns.
pub fn decode<'v>(doc: &'v J, schemas: &SchemaRegistry) -> Result<ChangeEvent<'v>, String> {
    let (schema, payload) = match doc.get("payload") {
        Some(p) if doc.get("schema").is_some() => (doc.get("schema"), p),
        _ => (None, doc),
    };
    let source = &payload["source"];
    let schema_name = source["schema"].as_str().ok_or("source.schema")?;
    let table_name = source["table"].as_str().ok_or("source.table")?;
    let table = schemas.get(schema_name, table_name).map(AsRef::as_ref);
    let image_fields =
        |image: &str| schema?["fields"].as_array()?.iter().find(|f| f["field"] == image).map(|f| &f["fields"]);
    let op = match payload["op"].as_str() {
        Some("c") => Op::Create,
        Some("u") => Op::Update,
        Some("d") => Op::Delete,
        Some("r") => Op::Read,
        _ => return Err("op".into()),
    };
    Ok(ChangeEvent {
        op,
        key: None,
        before: row(&payload["before"], image_fields("before"), table)?,
        after: row(&payload["after"], image_fields("after"), table)?,
        source: SourceInfo {
            version: source["version"].as_str(),
            connector: source["connector"].as_str(),
            name: source["name"].as_str(),
            ts_ms: source["ts_ms"].as_i64(),
            snapshot: match source["snapshot"].as_str() {
                Some("true") => Snapshot::True,
                Some("last") => Snapshot::Last,
                _ => Snapshot::False,
            },
            db: source["db"].as_str(),
            schema: schema_name,
            table: table_name,
            change_lsn: source["change_lsn"].as_str(),
            commit_lsn: source["commit_lsn"].as_str(),
            event_serial_no: source["event_serial_no"].as_i64(),
        },
        ts_ms: payload["ts_ms"].as_i64(),
        transaction: None,
    })
}
