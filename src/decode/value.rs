//! Typed column values that borrow from the record they came from.
//!
//! Ordinary strings and numbers cost nothing beyond the tape: text is a `&str` into the
//! record buffer, numbers and temporals are plain integers. Binary values stay in their text
//! encoding until a sink asks for bytes; they are checked once here so a bad value fails at
//! decode time with the record's position, not later inside a database transaction.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};

use super::field::{BinaryEncoding, FieldKind};
use super::json::Json;
use crate::value::{Date, DateTime, DateTimeOffset, TemporalError, Time, validate_zoned_time};
use crate::value::{Decimal, DecimalError, Shape};

/// One column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// SQL `NULL`.
    Null,
    /// `bit`.
    Bool(bool),
    /// Any integer column (`tinyint` … `bigint`), exact.
    Int(i64),
    /// An integer above `i64::MAX`, only seen in values passed through without a schema.
    UInt(u64),
    /// `real` (widened losslessly) or `float`.
    Float(f64),
    /// `real` kept as single precision so it prints as the source shows it.
    Float32(f32),
    /// Character data.
    Text(&'a str),
    /// `uniqueidentifier` as text.
    Uuid(&'a str),
    /// `xml` document text.
    Xml(&'a str),
    /// Binary data in its wire encoding.
    Binary(Binary<'a>),
    /// `decimal`, `numeric`, `money`, `smallmoney`.
    Decimal(Decimal),
    /// `date`.
    Date(Date),
    /// `time(n)`.
    Time(Time),
    /// `datetime`, `smalldatetime`, `datetime2(n)`.
    DateTime(DateTime),
    /// `datetimeoffset(n)`.
    DateTimeOffset(DateTimeOffset),
    /// A time with zone offset, as text (not produced for SQL Server columns).
    ZonedTime(&'a str),
    /// A structured value with no known schema, kept as compact JSON text (rare; allocates).
    Json(Box<str>),
}

/// Binary data still in its text encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binary<'a> {
    text: &'a str,
    encoding: BinaryEncoding,
}

/// Why a field's value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The JSON kind does not fit the field's type.
    #[error("expected {expected}, found {found}")]
    Type {
        /// What the schema calls for.
        expected: &'static str,
        /// What the JSON holds.
        found: &'static str,
    },
    /// A bad decimal.
    #[error(transparent)]
    Decimal(#[from] DecimalError),
    /// A bad date or time.
    #[error(transparent)]
    Temporal(#[from] TemporalError),
    /// Binary text that does not decode.
    #[error("invalid {0} binary text")]
    Encoding(&'static str),
}

impl<'a> Binary<'a> {
    /// Wraps encoded text after checking that it decodes.
    pub fn new(text: &'a str, encoding: BinaryEncoding) -> Result<Self, ValueError> {
        let ok = match encoding {
            BinaryEncoding::Hex => text.len().is_multiple_of(2) && text.bytes().all(|b| b.is_ascii_hexdigit()),
            BinaryEncoding::Base64 | BinaryEncoding::Base64UrlSafe => base64_len(text, encoding).is_some(),
        };
        if ok { Ok(Self { text, encoding }) } else { Err(ValueError::Encoding(encoding_name(encoding))) }
    }

    /// The encoded text as received.
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// Appends the decoded bytes to `out`.
    pub fn decode_into(&self, out: &mut Vec<u8>) -> Result<(), ValueError> {
        match self.encoding {
            BinaryEncoding::Hex => {
                let bytes = self.text.as_bytes();
                out.reserve(bytes.len() / 2);
                for pair in bytes.chunks_exact(2) {
                    out.push(hex_val(pair[0]) << 4 | hex_val(pair[1]));
                }
                Ok(())
            }
            enc => engine(enc).decode_vec(self.text, out).map_err(|_| ValueError::Encoding(encoding_name(enc))),
        }
    }

    /// Writes the bytes as upper-case hex, as SQL Server shows binary (`0x` not included).
    pub fn write_hex(&self, out: &mut String) -> Result<(), ValueError> {
        const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
        let mut bytes = Vec::new();
        self.decode_into(&mut bytes)?;
        out.reserve(bytes.len() * 2);
        for b in bytes {
            out.push(DIGITS[usize::from(b >> 4)] as char);
            out.push(DIGITS[usize::from(b & 15)] as char);
        }
        Ok(())
    }
}

fn engine(encoding: BinaryEncoding) -> &'static base64::engine::GeneralPurpose {
    match encoding {
        BinaryEncoding::Base64UrlSafe => &URL_SAFE,
        _ => &STANDARD,
    }
}

fn encoding_name(encoding: BinaryEncoding) -> &'static str {
    match encoding {
        BinaryEncoding::Base64 => "base64",
        BinaryEncoding::Base64UrlSafe => "url-safe base64",
        BinaryEncoding::Hex => "hex",
    }
}

fn hex_val(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b.wrapping_sub(b'A').wrapping_add(10) & 15,
    }
}

/// Checks padded base64 syntax without decoding and returns the decoded length.
fn base64_len(text: &str, encoding: BinaryEncoding) -> Option<usize> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let pad = bytes.iter().rev().take_while(|&&b| b == b'=').count();
    if pad > 2 {
        return None;
    }
    let (c62, c63) = match encoding {
        BinaryEncoding::Base64UrlSafe => (b'-', b'_'),
        _ => (b'+', b'/'),
    };
    let body = &bytes[..bytes.len() - pad];
    if !body.iter().all(|&b| b.is_ascii_alphanumeric() || b == c62 || b == c63) {
        return None;
    }
    // The unused low bits of the last symbol must be zero (canonical encoding).
    if pad > 0 {
        let last = *body.last()?;
        let v = match last {
            b'A'..=b'Z' => last - b'A',
            b'a'..=b'z' => last - b'a' + 26,
            b'0'..=b'9' => last - b'0' + 52,
            _ if last == c62 => 62,
            _ => 63,
        };
        let mask = if pad == 1 { 0b11 } else { 0b1111 };
        if v & mask != 0 {
            return None;
        }
    }
    Some(bytes.len() / 4 * 3 - pad)
}

fn type_err(expected: &'static str, json: Json<'_, '_>) -> ValueError {
    ValueError::Type { expected, found: json.kind() }
}

fn int(json: Json<'_, '_>) -> Result<i64, ValueError> {
    json.as_i64().ok_or_else(|| type_err("integer", json))
}

fn text<'a>(json: Json<'_, 'a>) -> Result<&'a str, ValueError> {
    json.as_str().ok_or_else(|| type_err("string", json))
}

/// Decodes Connect `Decimal` bytes from base64 text without touching the heap.
fn decimal_from_base64(text: &str, scale: i64) -> Result<Decimal, ValueError> {
    let mut buf = [0u8; 48];
    let n = STANDARD.decode_slice(text, &mut buf).map_err(|_| {
        if text.len() > 64 { ValueError::Decimal(DecimalError::Overflow) } else { ValueError::Encoding("base64") }
    })?;
    Ok(Decimal::from_be_bytes(&buf[..n], scale)?)
}

/// The decimal as its source column holds it, when the column is known.
fn fitted(d: Decimal, column: Option<Shape>) -> Result<Decimal, ValueError> {
    Ok(match column {
        Some(shape) => d.fit(shape)?,
        None => d,
    })
}

/// Reads a value the way `kind` says it is represented.
pub(crate) fn read<'a>(kind: FieldKind, json: Json<'_, 'a>) -> Result<Value<'a>, ValueError> {
    if json.is_null() {
        return Ok(Value::Null);
    }
    Ok(match kind {
        FieldKind::Bool => Value::Bool(json.as_bool().ok_or_else(|| type_err("boolean", json))?),
        FieldKind::Int => Value::Int(int(json)?),
        FieldKind::Float64 => Value::Float(json.as_f64().ok_or_else(|| type_err("number", json))?),
        FieldKind::Float32 => Value::Float32(json.as_f64().ok_or_else(|| type_err("number", json))? as f32),
        FieldKind::Text => Value::Text(text(json)?),
        FieldKind::Uuid => Value::Uuid(text(json)?),
        FieldKind::Xml => Value::Xml(text(json)?),
        FieldKind::Binary(enc) => Value::Binary(Binary::new(text(json)?, enc)?),
        FieldKind::DecimalBytes { scale, column } => {
            Value::Decimal(fitted(decimal_from_base64(text(json)?, i64::from(scale))?, column)?)
        }
        FieldKind::DecimalVariable { column } => {
            let scale = json.get("scale").ok_or_else(|| type_err("object with scale", json))?;
            let value = json.get("value").ok_or_else(|| type_err("object with value", json))?;
            Value::Decimal(fitted(decimal_from_base64(text(value)?, int(scale)?)?, column)?)
        }
        FieldKind::DecimalText { column } => Value::Decimal(fitted(Decimal::parse(text(json)?)?, column)?),
        FieldKind::DecimalDouble { column } => {
            let d = match json.as_str() {
                Some(s) => Decimal::parse(s)?,
                None => Decimal::from_f64(json.as_f64().ok_or_else(|| type_err("number", json))?)?,
            };
            Value::Decimal(fitted(d, column)?)
        }
        FieldKind::Date => Value::Date(Date::from_days(int(json)?)?),
        FieldKind::Time { unit_nanos } => Value::Time(Time::from_units(int(json)?, unit_nanos)?),
        FieldKind::Timestamp { unit_nanos } => Value::DateTime(DateTime::from_epoch_units(int(json)?, unit_nanos)?),
        FieldKind::ZonedTimestamp => Value::DateTimeOffset(DateTimeOffset::parse(text(json)?)?),
        FieldKind::ZonedTime => {
            let t = text(json)?;
            validate_zoned_time(t)?;
            Value::ZonedTime(t)
        }
        FieldKind::Unknown => passthrough(json),
    })
}

/// A value with no schema: scalars keep their JSON meaning, structures their JSON text.
pub(crate) fn passthrough<'a>(json: Json<'_, 'a>) -> Value<'a> {
    use simd_json::{Node, StaticNode};
    match *json.node() {
        Node::String(s) => Value::Text(s),
        Node::Static(StaticNode::Null) => Value::Null,
        Node::Static(StaticNode::Bool(b)) => Value::Bool(b),
        Node::Static(StaticNode::I64(v)) => Value::Int(v),
        Node::Static(StaticNode::U64(v)) => i64::try_from(v).map_or(Value::UInt(v), Value::Int),
        Node::Static(StaticNode::F64(v)) => Value::Float(v),
        Node::Object { .. } | Node::Array { .. } => {
            let mut out = String::new();
            json.write_json(&mut out);
            Value::Json(out.into_boxed_str())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_text_is_checked() {
        assert!(Binary::new("AQ==", BinaryEncoding::Base64).is_ok());
        assert!(Binary::new("AR==", BinaryEncoding::Base64).is_err(), "non-canonical trailing bits");
        assert!(Binary::new("AQ=", BinaryEncoding::Base64).is_err());
        assert!(Binary::new("A===", BinaryEncoding::Base64).is_err());
        assert!(Binary::new("_-8=", BinaryEncoding::Base64UrlSafe).is_ok());
        assert!(Binary::new("0aFf", BinaryEncoding::Hex).is_ok());
        assert!(Binary::new("0aF", BinaryEncoding::Hex).is_err());
        let mut hex = String::new();
        Binary::new("3q2+7w==", BinaryEncoding::Base64).unwrap().write_hex(&mut hex).unwrap();
        assert_eq!(hex, "DEADBEEF");
        let mut bytes = Vec::new();
        Binary::new("dEAD", BinaryEncoding::Hex).unwrap().decode_into(&mut bytes).unwrap();
        assert_eq!(bytes, [0xde, 0xad]);
    }

    #[test]
    fn decimal_base64() {
        assert_eq!(decimal_from_base64("BNI=", 2).unwrap().to_string(), "12.34");
        assert!(decimal_from_base64(&"A".repeat(100), 0).is_err());
        assert!(decimal_from_base64("!!!!", 0).is_err());
    }
}
