//! Rows as the Debezium SQL Server connector emits them (JsonConverter; `time.precision.mode`
//! `adaptive`, `decimal.handling.mode` `precise`), with or without the schema block, plus the
//! schema-history records that describe the tables.
//!
//! This is the source side of the simulated cloud. It is written from the connector's
//! documented mapping, independently of the client's decoder, so that a test decoding its
//! output checks the decoder rather than restating it.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::row::Cell;
use crate::schema::{ColumnSchema, SqlType, TableSchema};
use crate::value::{write_json_string, write_json_string_array};

/// `(Connect type, logical name, scale parameter)` of a column under the default modes.
fn connect_type(sql: SqlType) -> (&'static str, Option<&'static str>) {
    match sql {
        SqlType::Bit => ("boolean", None),
        SqlType::TinyInt | SqlType::SmallInt => ("int16", None),
        SqlType::Int => ("int32", None),
        SqlType::BigInt => ("int64", None),
        SqlType::Real => ("float32", None),
        SqlType::Float => ("float64", None),
        SqlType::Decimal { .. } | SqlType::Numeric { .. } | SqlType::Money | SqlType::SmallMoney => {
            ("bytes", Some("org.apache.kafka.connect.data.Decimal"))
        }
        SqlType::Binary(_) | SqlType::VarBinary(_) | SqlType::Image | SqlType::RowVersion => ("bytes", None),
        SqlType::Xml => ("string", Some("io.debezium.data.Xml")),
        SqlType::Date => ("int32", Some("io.debezium.time.Date")),
        SqlType::Time { scale: 0..=3 } => ("int32", Some("io.debezium.time.Time")),
        SqlType::Time { scale: 4..=6 } => ("int64", Some("io.debezium.time.MicroTime")),
        SqlType::Time { .. } => ("int64", Some("io.debezium.time.NanoTime")),
        SqlType::DateTime | SqlType::SmallDateTime | SqlType::DateTime2 { scale: 0..=3 } => {
            ("int64", Some("io.debezium.time.Timestamp"))
        }
        SqlType::DateTime2 { scale: 4..=6 } => ("int64", Some("io.debezium.time.MicroTimestamp")),
        SqlType::DateTime2 { .. } => ("int64", Some("io.debezium.time.NanoTimestamp")),
        SqlType::DateTimeOffset { .. } => ("string", Some("io.debezium.time.ZonedTimestamp")),
        _ => ("string", None),
    }
}

/// Nanoseconds per unit of a temporal column's representation.
fn unit_nanos(sql: SqlType) -> i64 {
    match connect_type(sql).1 {
        Some("io.debezium.time.MicroTime" | "io.debezium.time.MicroTimestamp") => 1_000,
        Some("io.debezium.time.NanoTime" | "io.debezium.time.NanoTimestamp") => 1,
        _ => 1_000_000,
    }
}

/// The Connect field schema of a column.
pub fn field_schema(column: &ColumnSchema, out: &mut String) {
    let (ty, name) = connect_type(column.sql_type);
    let _ = write!(out, "{{\"type\":\"{ty}\",\"optional\":{}", column.nullable);
    if let Some(name) = name {
        let _ = write!(out, ",\"name\":\"{name}\",\"version\":1");
    }
    if let Some(scale) = column.sql_type.decimal_scale() {
        let precision = match column.sql_type {
            SqlType::Decimal { precision, .. } | SqlType::Numeric { precision, .. } => precision,
            SqlType::Money => 19,
            _ => 10,
        };
        let _ = write!(out, ",\"parameters\":{{\"scale\":\"{scale}\",\"connect.decimal.precision\":\"{precision}\"}}");
    }
    out.push_str(",\"field\":");
    write_json_string(out, &column.name);
    out.push('}');
}

/// A cell's JSON value in the connector's representation for its column type.
pub fn field_value(cell: &Cell, sql: SqlType, out: &mut String) {
    match cell {
        Cell::Null => out.push_str("null"),
        Cell::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Cell::Int(v) => out.push_str(itoa::Buffer::new().format(*v)),
        Cell::UInt(v) => out.push_str(itoa::Buffer::new().format(*v)),
        Cell::Float(v) if sql == SqlType::Real => out.push_str(ryu::Buffer::new().format(*v as f32)),
        Cell::Float(v) => out.push_str(ryu::Buffer::new().format(*v)),
        Cell::Text(s) => write_json_string(out, s),
        Cell::Binary(b) => {
            out.push('"');
            out.push_str(&STANDARD.encode(b));
            out.push('"');
        }
        Cell::Decimal(d) => {
            // Big-endian two's complement, as short as the value allows (Java's BigInteger).
            let bytes = d.unscaled().to_be_bytes();
            let negative = d.unscaled() < 0;
            let mut start = 0;
            while start < 15 {
                let fill = if negative { 0xFF } else { 0x00 };
                if bytes[start] == fill && (bytes[start + 1] & 0x80 != 0) == negative {
                    start += 1;
                } else {
                    break;
                }
            }
            out.push('"');
            out.push_str(&STANDARD.encode(&bytes[start..]));
            out.push('"');
        }
        Cell::Date(d) => out.push_str(itoa::Buffer::new().format(d.0)),
        Cell::Time(t) => out.push_str(itoa::Buffer::new().format(t.0 as i64 / unit_nanos(sql))),
        Cell::DateTime(dt) => {
            let nanos = i128::from(dt.date.0) * 86_400_000_000_000 + i128::from(dt.time.0);
            out.push_str(itoa::Buffer::new().format(nanos / i128::from(unit_nanos(sql))));
        }
        Cell::DateTimeOffset(v) => {
            let (y, m, d) = v.local.date.ymd();
            let (h, mi, s, nanos) = v.local.time.hmsn();
            let _ = write!(out, "\"{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
            if nanos > 0 {
                let _ = write!(out, ".{:07}", nanos / 100);
            }
            let sign = if v.offset_minutes < 0 { '-' } else { '+' };
            let abs = v.offset_minutes.unsigned_abs();
            if abs == 0 {
                out.push_str("Z\"");
            } else {
                let _ = write!(out, "{sign}{:02}:{:02}\"", abs / 60, abs % 60);
            }
        }
    }
}

/// `(typeName, length, scale)` as SQL Server's JDBC metadata reports them.
fn jdbc_parts(sql: SqlType) -> (String, i64, Option<i64>) {
    let text = sql.to_string();
    let base = text.split('(').next().unwrap_or_default().to_string();
    match sql {
        SqlType::NVarChar(None) | SqlType::NChar(None) | SqlType::NText | SqlType::Xml => (base, 1_073_741_823, None),
        SqlType::VarChar(None)
        | SqlType::VarBinary(None)
        | SqlType::Binary(None)
        | SqlType::Char(None)
        | SqlType::Text
        | SqlType::Image => (base, 2_147_483_647, None),
        SqlType::Char(Some(n))
        | SqlType::VarChar(Some(n))
        | SqlType::NChar(Some(n))
        | SqlType::NVarChar(Some(n))
        | SqlType::Binary(Some(n))
        | SqlType::VarBinary(Some(n)) => (base, i64::from(n), None),
        SqlType::Decimal { precision, scale } | SqlType::Numeric { precision, scale } => {
            (base, precision.into(), Some(scale.into()))
        }
        SqlType::Money => (base, 19, Some(4)),
        SqlType::SmallMoney => (base, 10, Some(4)),
        SqlType::Time { scale } => (base, 8 + i64::from(scale) + i64::from(scale > 0), Some(scale.into())),
        SqlType::DateTime2 { scale } => (base, 19 + i64::from(scale) + i64::from(scale > 0), Some(scale.into())),
        SqlType::DateTimeOffset { scale } => (base, 26 + i64::from(scale) + i64::from(scale > 0), Some(scale.into())),
        SqlType::DateTime => (base, 23, Some(3)),
        SqlType::SmallDateTime => (base, 16, Some(0)),
        SqlType::Date => (base, 10, Some(0)),
        SqlType::Int => (base, 10, Some(0)),
        SqlType::BigInt => (base, 19, Some(0)),
        SqlType::SmallInt => (base, 5, Some(0)),
        SqlType::TinyInt => (base, 3, Some(0)),
        SqlType::Float => (base, 53, None),
        SqlType::Real => (base, 24, None),
        SqlType::UniqueIdentifier => (base, 36, None),
        _ => (base, 1, None),
    }
}

/// SQL Server's LSN text for a transaction number: fixed-width hex, so LSNs compare as text.
pub fn commit_lsn(transaction: u64) -> String {
    format!("0000002c:{transaction:08x}:0005")
}

/// A transaction-metadata `END` record (Debezium's `provide.transaction.metadata`) for
/// transaction `txn`: how many change events it has, in total and per table. The reference
/// cloud publishes it in the change topic's partition 0, after the transaction's events.
pub fn transaction_end_record(
    topic: &str,
    offset: i64,
    txn: u64,
    tables: &[(String, u64)],
    (ts_ms, with_schema): (i64, bool),
) -> String {
    let id = commit_lsn(txn);
    let total: u64 = tables.iter().map(|(_, n)| n).sum();
    let collections: Vec<String> =
        tables.iter().map(|(t, n)| format!("{{\"data_collection\":\"{t}\",\"event_count\":{n}}}")).collect();
    let payload = format!(
        "{{\"status\":\"END\",\"id\":\"{id}\",\"event_count\":{total},\"data_collections\":[{}],\"ts_ms\":{ts_ms}}}",
        collections.join(",")
    );
    let value = if with_schema {
        format!(
            "{{\"schema\":{{\"type\":\"struct\",\"optional\":false,\"name\":\"io.debezium.connector.common.TransactionMetadataValue\",\"fields\":[]}},\"payload\":{payload}}}"
        )
    } else {
        payload
    };
    let mut out = String::from("{\"topic\":");
    write_json_string(&mut out, topic);
    let _ = write!(out, ",\"partition\":0,\"offset\":{offset},\"key\":{{\"id\":\"{id}\"}},\"value\":{value}}}");
    out
}

/// A schema-history record (the connector's internal history format) for one table change;
/// `position.commit_lsn` is the DDL's LSN.
pub fn history_record(table: &TableSchema, kind: &str, database: &str, commit: u64) -> String {
    let mut out = format!(
        "{{\"source\":{{\"server\":\"{database}\"}},\"position\":{{\"commit_lsn\":\"{}\"}},\"databaseName\":",
        commit_lsn(commit)
    );
    write_json_string(&mut out, database);
    out.push_str(",\"schemaName\":");
    write_json_string(&mut out, &table.id.schema);
    let _ = write!(out, ",\"ddl\":null,\"tableChanges\":[{{\"type\":\"{kind}\",\"id\":");
    write_json_string(&mut out, &format!("\"{database}\".\"{}\".\"{}\"", table.id.schema, table.id.table));
    out.push_str(",\"table\":{\"defaultCharsetName\":null,\"primaryKeyColumnNames\":");
    write_json_string_array(&mut out, table.primary_key.iter().map(String::as_str));
    out.push_str(",\"columns\":[");
    for (i, c) in table.columns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let (type_name, length, scale) = jdbc_parts(c.sql_type);
        let type_name = if c.identity { format!("{type_name} identity") } else { type_name };
        out.push_str("{\"name\":");
        write_json_string(&mut out, &c.name);
        out.push_str(",\"jdbcType\":0,\"nativeType\":null,\"typeName\":");
        write_json_string(&mut out, &type_name);
        out.push_str(",\"typeExpression\":");
        write_json_string(&mut out, &type_name);
        let scale = scale.map_or("null".to_string(), |s| s.to_string());
        let _ = write!(
            out,
            ",\"charsetName\":null,\"length\":{length},\"scale\":{scale},\"position\":{},\"optional\":{},\"autoIncremented\":{},\"generated\":false",
            c.position, c.nullable, c.identity
        );
        if let Some(d) = &c.default_expression {
            out.push_str(",\"defaultValueExpression\":");
            write_json_string(&mut out, d);
        }
        out.push('}');
    }
    out.push_str("],\"attributes\":[]}}]}");
    out
}

/// Where a record goes and what it says about the snapshot.
#[derive(Debug, Clone, Copy)]
pub struct RecordMeta<'a> {
    /// Topic (`<ctx>-cdc`).
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// `source.snapshot`: `true`, `last` or `false`.
    pub snapshot: &'a str,
    /// `op`.
    pub op: &'a str,
    /// The database name (`source.db`, and the connector name).
    pub database: &'a str,
    /// Connect JsonConverter `schemas.enable`.
    pub with_schema: bool,
    /// When the change happened (`source.ts_ms`); the envelope's `ts_ms` is when the
    /// connector processed it, a few milliseconds later.
    pub ts_ms: i64,
    /// (the change's sequence number, its transaction's number), which become `change_lsn`
    /// and `commit_lsn` (changes of one transaction share the latter); sequence 0 (snapshot
    /// reads) has no `change_lsn`.
    pub lsn: Option<(u64, u64)>,
    /// The `transaction` block of a streamed change: (`total_order`, `data_collection_order`)
    /// within the transaction `lsn` names; `None` writes `null` (snapshot reads).
    pub transaction: Option<(u64, u64)>,
}

fn image(table: &TableSchema, row: Option<&[Cell]>, out: &mut String) {
    let Some(row) = row else {
        out.push_str("null");
        return;
    };
    out.push('{');
    for (i, (cell, c)) in row.iter().zip(&table.columns).enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_string(out, &c.name);
        out.push(':');
        field_value(cell, c.sql_type, out);
    }
    out.push('}');
}

/// The record key: the primary-key columns of `row`, with or without the key schema.
fn write_key(table: &TableSchema, row: Option<&[Cell]>, schema_prefix: &str, with_schema: bool, out: &mut String) {
    let key_columns: Vec<usize> =
        table.primary_key.iter().filter_map(|k| table.columns.iter().position(|c| &c.name == k)).collect();
    let Some(row) = row else {
        out.push_str("null");
        return;
    };
    if with_schema {
        out.push_str("{\"schema\":{\"type\":\"struct\",\"fields\":[");
        for (i, &k) in key_columns.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            field_schema(&ColumnSchema { nullable: false, ..table.columns[k].clone() }, out);
        }
        out.push_str("],\"optional\":false,\"name\":");
        write_json_string(out, &format!("{schema_prefix}.Key"));
        out.push_str("},\"payload\":");
    }
    out.push('{');
    for (i, &k) in key_columns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_string(out, &table.columns[k].name);
        out.push(':');
        field_value(&row[k], table.columns[k].sql_type, out);
    }
    out.push('}');
    if with_schema {
        out.push('}');
    }
}

/// The tombstone Debezium writes after a delete: the deleted row's key and a `null` value.
/// (`meta.op` and `meta.snapshot` are not used.)
pub fn tombstone_record(table: &TableSchema, deleted: &[Cell], meta: &RecordMeta<'_>) -> String {
    let mut out = String::from("{\"topic\":");
    write_json_string(&mut out, meta.topic);
    let _ = write!(out, ",\"partition\":{},\"offset\":{},\"key\":", meta.partition, meta.offset);
    let prefix = format!("{}.{}.{}", meta.database, table.id.schema, table.id.table);
    write_key(table, Some(deleted), &prefix, meta.with_schema, &mut out);
    out.push_str(",\"value\":null}");
    out
}

/// A record line `{"topic","partition","offset","key","value"}` for a change of `table`.
pub fn change_record(
    table: &TableSchema,
    before: Option<&[Cell]>,
    after: Option<&[Cell]>,
    meta: &RecordMeta<'_>,
) -> String {
    let mut out = String::with_capacity(1024);
    out.push_str("{\"topic\":");
    write_json_string(&mut out, meta.topic);
    let _ = write!(out, ",\"partition\":{},\"offset\":{},\"key\":", meta.partition, meta.offset);
    let schema_prefix = format!("{}.{}.{}", meta.database, table.id.schema, table.id.table);
    write_key(table, after.or(before), &schema_prefix, meta.with_schema, &mut out);
    out.push_str(",\"value\":");
    if meta.with_schema {
        let mut fields = String::new();
        for (i, c) in table.columns.iter().enumerate() {
            if i > 0 {
                fields.push(',');
            }
            field_schema(c, &mut fields);
        }
        let value_name = format!("{schema_prefix}.Value");
        let _ = write!(
            out,
            "{{\"schema\":{{\"type\":\"struct\",\"fields\":[{{\"type\":\"struct\",\"fields\":[{fields}],\"optional\":true,\"name\":\"{value_name}\",\"field\":\"before\"}},{{\"type\":\"struct\",\"fields\":[{fields}],\"optional\":true,\"name\":\"{value_name}\",\"field\":\"after\"}},{{\"type\":\"struct\",\"fields\":[],\"optional\":false,\"name\":\"io.debezium.connector.sqlserver.Source\",\"field\":\"source\"}},{{\"type\":\"string\",\"optional\":false,\"field\":\"op\"}},{{\"type\":\"int64\",\"optional\":true,\"field\":\"ts_ms\"}}],\"optional\":false,\"name\":\"{schema_prefix}.Envelope\",\"version\":1}},\"payload\":"
        );
    }
    out.push_str("{\"before\":");
    image(table, before, &mut out);
    out.push_str(",\"after\":");
    image(table, after, &mut out);
    let _ = write!(
        out,
        ",\"source\":{{\"version\":\"2.7.3.Final\",\"connector\":\"sqlserver\",\"name\":\"{db}\",\"ts_ms\":{source_ts},\"snapshot\":\"{snap}\",\"db\":\"{db}\",\"sequence\":null,\"schema\":\"{schema}\",\"table\":\"{table_name}\",\"change_lsn\":{change_lsn},\"commit_lsn\":\"{commit_lsn}\",\"event_serial_no\":{serial}}},\"op\":\"{op}\",\"ts_ms\":{processed_ts},\"transaction\":{transaction}}}",
        source_ts = meta.ts_ms,
        // Streamed changes carry their log sequence numbers; snapshot reads only the
        // snapshot's commit position.
        change_lsn = meta
            .lsn
            .filter(|(seq, _)| *seq > 0)
            .map_or("null".into(), |(seq, _)| format!("\"0000002c:{seq:08x}:0002\"")),
        commit_lsn = meta.lsn.map_or("0000002b:00000557:0005".into(), |(_, txn)| commit_lsn(txn)),
        serial = match (meta.snapshot, meta.op) {
            ("false", "u") => "2",
            ("false", _) => "1",
            _ => "null",
        },
        processed_ts = meta.ts_ms + 7,
        transaction = match (meta.transaction, meta.lsn) {
            (Some((total, in_table)), Some((_, txn))) => format!(
                "{{\"id\":\"{}\",\"total_order\":{total},\"data_collection_order\":{in_table}}}",
                commit_lsn(txn)
            ),
            _ => "null".to_owned(),
        },
        db = meta.database,
        snap = meta.snapshot,
        schema = table.id.schema,
        table_name = table.id.table,
        op = meta.op,
    );
    if meta.with_schema {
        out.push('}');
    }
    out.push('}');
    out
}
