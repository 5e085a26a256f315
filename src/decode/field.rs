//! How to read one field: from the event's own Connect schema, or from the table schema
//! learned from schema history when events come without one.
//!
//! The connector's representation depends on its settings (`time.precision.mode`,
//! `decimal.handling.mode`, `binary.handling.mode`), so payload-only events need those
//! settings to be read back exactly. [`DecodeOptions`] carries them.

use super::json::Json;
use crate::schema::{ColumnSchema, SqlType};
use crate::value::Shape;

/// The connector's `time.precision.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimePrecisionMode {
    /// Debezium's default: the representation follows each column's precision.
    #[default]
    Adaptive,
    /// Like adaptive, but every `time` column is `MicroTime`.
    AdaptiveTimeMicroseconds,
    /// Kafka Connect's logical types (milliseconds; lossy above precision 3 at the source).
    Connect,
}

/// The connector's `decimal.handling.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecimalHandlingMode {
    /// Connect `Decimal` bytes (Debezium's default).
    #[default]
    Precise,
    /// Plain strings.
    String,
    /// Doubles (lossy at the source).
    Double,
}

/// The connector's `binary.handling.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BinaryHandlingMode {
    /// Connect `bytes` (base64 in JSON).
    #[default]
    Bytes,
    /// A base64 string.
    Base64,
    /// A URL-safe base64 string.
    Base64UrlSafe,
    /// A hex string.
    Hex,
}

/// The source connector's settings that change how values are represented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecodeOptions {
    /// `time.precision.mode`.
    pub time_precision: TimePrecisionMode,
    /// `decimal.handling.mode`.
    pub decimal_handling: DecimalHandlingMode,
    /// `binary.handling.mode`.
    pub binary_handling: BinaryHandlingMode,
}

/// Text encodings of binary values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryEncoding {
    /// Standard base64 (what JSON `bytes` use).
    Base64,
    /// URL-safe base64.
    Base64UrlSafe,
    /// Hexadecimal.
    Hex,
}

/// What a field holds and how it is represented on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldKind {
    Bool,
    Int,
    Float32,
    Float64,
    Text,
    Uuid,
    Xml,
    Binary(BinaryEncoding),
    /// Connect `Decimal` bytes with the schema's scale. Every decimal kind carries the source
    /// column's shape when it is known: the value is then fitted to it (padded to the column's
    /// scale, refused when it has more digits than the column holds).
    DecimalBytes {
        scale: u8,
        column: Option<Shape>,
    },
    /// `VariableScaleDecimal` struct `{scale, value}`.
    DecimalVariable {
        column: Option<Shape>,
    },
    /// An exact numeric carried as a string or double.
    DecimalText {
        column: Option<Shape>,
    },
    DecimalDouble {
        column: Option<Shape>,
    },
    Date,
    /// Time of day in units of this many nanoseconds.
    Time {
        unit_nanos: i64,
    },
    /// Timestamp since the epoch in units of this many nanoseconds.
    Timestamp {
        unit_nanos: i64,
    },
    ZonedTimestamp,
    ZonedTime,
    /// Nothing known: the value passes through as it appeared in the JSON.
    Unknown,
}

/// A field's wire representation as its Connect schema declares it, before the source
/// column refines it. Small and owned, so a whole envelope schema can be cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectType {
    Decimal { scale: Option<u8> },
    VariableScaleDecimal,
    Date,
    Time { unit_nanos: i64 },
    Timestamp { unit_nanos: i64 },
    ZonedTimestamp,
    ZonedTime,
    Xml,
    Uuid,
    Bool,
    Int,
    Float32,
    Float64,
    Bytes,
    String,
    Unknown,
}

/// Reads a Connect field schema (`{"type":…,"name":…,"parameters":…}`).
pub(crate) fn connect_type(schema: Json<'_, '_>) -> ConnectType {
    let ty = schema.get("type").and_then(Json::as_str).unwrap_or("");
    let name = schema.get("name").and_then(Json::as_str).unwrap_or("");
    match name {
        "org.apache.kafka.connect.data.Decimal" => ConnectType::Decimal {
            scale: schema.get("parameters").and_then(|p| p.get("scale")).and_then(|s| {
                s.as_str().and_then(|s| s.parse::<u8>().ok()).or_else(|| s.as_i64().and_then(|v| u8::try_from(v).ok()))
            }),
        },
        "io.debezium.data.VariableScaleDecimal" => ConnectType::VariableScaleDecimal,
        "io.debezium.time.Date" | "org.apache.kafka.connect.data.Date" => ConnectType::Date,
        "io.debezium.time.Time" | "org.apache.kafka.connect.data.Time" => ConnectType::Time { unit_nanos: 1_000_000 },
        "io.debezium.time.MicroTime" => ConnectType::Time { unit_nanos: 1_000 },
        "io.debezium.time.NanoTime" => ConnectType::Time { unit_nanos: 1 },
        "io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp" => {
            ConnectType::Timestamp { unit_nanos: 1_000_000 }
        }
        "io.debezium.time.MicroTimestamp" => ConnectType::Timestamp { unit_nanos: 1_000 },
        "io.debezium.time.NanoTimestamp" => ConnectType::Timestamp { unit_nanos: 1 },
        "io.debezium.time.ZonedTimestamp" => ConnectType::ZonedTimestamp,
        "io.debezium.time.ZonedTime" => ConnectType::ZonedTime,
        "io.debezium.data.Xml" => ConnectType::Xml,
        "io.debezium.data.Uuid" => ConnectType::Uuid,
        _ => match ty {
            "boolean" => ConnectType::Bool,
            "int8" | "int16" | "int32" | "int64" => ConnectType::Int,
            "float32" => ConnectType::Float32,
            "float64" | "double" | "float" => ConnectType::Float64,
            "bytes" => ConnectType::Bytes,
            "string" => ConnectType::String,
            _ => ConnectType::Unknown,
        },
    }
}

/// Combines the declared representation with the source column, when known: a `string` in a
/// `decimal` column is an exact decimal, a `double` in a `money` column too.
pub(crate) fn refine(ty: ConnectType, column: Option<&ColumnSchema>) -> FieldKind {
    let sql = column.map(|c| c.sql_type);
    match ty {
        ConnectType::Decimal { scale } => FieldKind::DecimalBytes {
            scale: scale.or_else(|| sql.and_then(SqlType::decimal_scale)).unwrap_or(0),
            column: sql.and_then(SqlType::decimal_shape),
        },
        ConnectType::VariableScaleDecimal => {
            FieldKind::DecimalVariable { column: sql.and_then(SqlType::decimal_shape) }
        }
        ConnectType::Date => FieldKind::Date,
        ConnectType::Time { unit_nanos } => FieldKind::Time { unit_nanos },
        ConnectType::Timestamp { unit_nanos } => FieldKind::Timestamp { unit_nanos },
        ConnectType::ZonedTimestamp => FieldKind::ZonedTimestamp,
        ConnectType::ZonedTime => FieldKind::ZonedTime,
        ConnectType::Xml => FieldKind::Xml,
        ConnectType::Uuid => FieldKind::Uuid,
        ConnectType::Bool => FieldKind::Bool,
        ConnectType::Int => FieldKind::Int,
        ConnectType::Float32 => FieldKind::Float32,
        ConnectType::Float64 => match sql {
            Some(t) if t.is_exact_numeric() => FieldKind::DecimalDouble { column: t.decimal_shape() },
            _ => FieldKind::Float64,
        },
        ConnectType::Bytes => FieldKind::Binary(BinaryEncoding::Base64),
        ConnectType::String => sql.map_or(FieldKind::Text, text_kind),
        ConnectType::Unknown => FieldKind::Unknown,
    }
}

/// A string-typed field for a known SQL type: which text it is.
fn text_kind(sql: SqlType) -> FieldKind {
    match sql {
        t if t.is_exact_numeric() => FieldKind::DecimalText { column: t.decimal_shape() },
        SqlType::UniqueIdentifier => FieldKind::Uuid,
        SqlType::Xml => FieldKind::Xml,
        SqlType::DateTimeOffset { .. } => FieldKind::ZonedTimestamp,
        _ => FieldKind::Text,
    }
}

/// Resolves a field of a payload-only event from the source column and the connector's
/// settings, following the SQL Server connector's documented type mapping.
pub(crate) fn from_column(column: &ColumnSchema, opts: &DecodeOptions) -> FieldKind {
    let connect = opts.time_precision == TimePrecisionMode::Connect;
    let by_scale = |scale: u8| match scale {
        0..=3 => 1_000_000,
        4..=6 => 1_000,
        _ => 1,
    };
    match column.sql_type {
        SqlType::Bit => FieldKind::Bool,
        SqlType::TinyInt | SqlType::SmallInt | SqlType::Int | SqlType::BigInt => FieldKind::Int,
        SqlType::Real => FieldKind::Float32,
        SqlType::Float => FieldKind::Float64,
        t @ (SqlType::Decimal { .. } | SqlType::Numeric { .. } | SqlType::Money | SqlType::SmallMoney) => {
            let column = t.decimal_shape();
            match opts.decimal_handling {
                DecimalHandlingMode::Precise => {
                    FieldKind::DecimalBytes { scale: t.decimal_scale().unwrap_or(0), column }
                }
                DecimalHandlingMode::String => FieldKind::DecimalText { column },
                DecimalHandlingMode::Double => FieldKind::DecimalDouble { column },
            }
        }
        SqlType::Binary(_) | SqlType::VarBinary(_) | SqlType::Image | SqlType::RowVersion => {
            FieldKind::Binary(match opts.binary_handling {
                BinaryHandlingMode::Bytes | BinaryHandlingMode::Base64 => BinaryEncoding::Base64,
                BinaryHandlingMode::Base64UrlSafe => BinaryEncoding::Base64UrlSafe,
                BinaryHandlingMode::Hex => BinaryEncoding::Hex,
            })
        }
        SqlType::Date => FieldKind::Date,
        SqlType::Time { scale } => FieldKind::Time {
            unit_nanos: match opts.time_precision {
                TimePrecisionMode::Connect => 1_000_000,
                TimePrecisionMode::AdaptiveTimeMicroseconds => 1_000,
                TimePrecisionMode::Adaptive => by_scale(scale),
            },
        },
        SqlType::DateTime | SqlType::SmallDateTime => FieldKind::Timestamp { unit_nanos: 1_000_000 },
        SqlType::DateTime2 { scale } => {
            FieldKind::Timestamp { unit_nanos: if connect { 1_000_000 } else { by_scale(scale) } }
        }
        t @ (SqlType::DateTimeOffset { .. }
        | SqlType::UniqueIdentifier
        | SqlType::Xml
        | SqlType::Char(_)
        | SqlType::VarChar(_)
        | SqlType::NChar(_)
        | SqlType::NVarChar(_)
        | SqlType::Text
        | SqlType::NText) => text_kind(t),
        SqlType::Other => FieldKind::Unknown,
    }
}
