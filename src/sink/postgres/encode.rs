//! PostgreSQL column types for SQL Server types, and rows in `COPY … (FORMAT binary)`.
//!
//! Binary COPY is the fastest way into PostgreSQL and needs no text escaping; each value is
//! encoded straight from its cell into one reused buffer, so a row costs no allocation.
//! PostgreSQL temporals stop at microseconds and `timestamptz` forgets the offset, so
//! `time(7)`, `datetime2(7)` and every `datetimeoffset` are stored as fixed-width text that
//! sorts in time order rather than lose the source's precision or offset.

use crate::canonical::canonical;
use crate::row::Cell;
use crate::schema::SqlType;
use crate::value::Decimal;

/// Days from 1970-01-01 (our epoch) to 2000-01-01 (PostgreSQL's).
const PG_EPOCH_DAYS: i64 = 10_957;
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// How a column is stored in PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgKind {
    /// `boolean`.
    Bool,
    /// `smallint`.
    Int2,
    /// `integer`.
    Int4,
    /// `bigint`.
    Int8,
    /// `real`.
    Float4,
    /// `double precision`.
    Float8,
    /// `numeric(p,s)` at this scale.
    Numeric(u8),
    /// `uuid`.
    Uuid,
    /// `bytea`.
    Bytea,
    /// `date`.
    Date,
    /// `time(n)`, n ≤ 6.
    Time,
    /// `timestamp(n)`, n ≤ 6.
    Timestamp,
    /// Text: character data, xml, unknown types, and the temporals PostgreSQL cannot hold exactly.
    Text,
}

/// The PostgreSQL column type and storage kind for a SQL Server type.
pub fn pg_type(sql: SqlType) -> (String, PgKind) {
    let exact = |p: u8, s: u8| (format!("numeric({p},{s})"), PgKind::Numeric(s));
    match sql {
        SqlType::Bit => ("boolean".into(), PgKind::Bool),
        SqlType::TinyInt | SqlType::SmallInt => ("smallint".into(), PgKind::Int2),
        SqlType::Int => ("integer".into(), PgKind::Int4),
        SqlType::BigInt => ("bigint".into(), PgKind::Int8),
        SqlType::Real => ("real".into(), PgKind::Float4),
        SqlType::Float => ("double precision".into(), PgKind::Float8),
        SqlType::Decimal { precision, scale } | SqlType::Numeric { precision, scale } => exact(precision, scale),
        SqlType::Money => exact(19, 4),
        SqlType::SmallMoney => exact(10, 4),
        // varchar(n) counts characters, never more than SQL Server's bytes or UTF-16 units;
        // char(n) too, because PostgreSQL's `character` would drop the source's padding.
        SqlType::Char(Some(n)) | SqlType::VarChar(Some(n)) | SqlType::NChar(Some(n)) | SqlType::NVarChar(Some(n)) => {
            (format!("varchar({n})"), PgKind::Text)
        }
        SqlType::UniqueIdentifier => ("uuid".into(), PgKind::Uuid),
        SqlType::Binary(_) | SqlType::VarBinary(_) | SqlType::Image | SqlType::RowVersion => {
            ("bytea".into(), PgKind::Bytea)
        }
        SqlType::Date => ("date".into(), PgKind::Date),
        SqlType::Time { scale } if scale <= 6 => (format!("time({scale})"), PgKind::Time),
        SqlType::DateTime => ("timestamp(3)".into(), PgKind::Timestamp),
        SqlType::SmallDateTime => ("timestamp(0)".into(), PgKind::Timestamp),
        SqlType::DateTime2 { scale } if scale <= 6 => (format!("timestamp({scale})"), PgKind::Timestamp),
        _ => ("text".into(), PgKind::Text),
    }
}

/// The PGCOPY header: signature, flags, header extension length.
pub fn header(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
}

/// The end-of-data marker.
pub fn trailer(out: &mut Vec<u8>) {
    out.extend_from_slice(&(-1i16).to_be_bytes());
}

/// Appends one tuple; `types` are the cells' column types.
pub fn write_row<'a>(
    out: &mut Vec<u8>,
    cells: &[Cell],
    types: impl ExactSizeIterator<Item = &'a (SqlType, PgKind)>,
) -> Result<(), String> {
    out.extend_from_slice(&(types.len() as i16).to_be_bytes());
    for (cell, (sql, kind)) in cells.iter().zip(types) {
        write_field(out, cell, *sql, *kind)?;
    }
    Ok(())
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Appends one field: its length and bytes in PostgreSQL's binary format.
pub fn write_field(out: &mut Vec<u8>, cell: &Cell, sql: SqlType, kind: PgKind) -> Result<(), String> {
    let mismatch = || format!("a {} value cannot be stored in a {sql} column", cell_kind(cell));
    match (kind, cell) {
        (_, Cell::Null) => out.extend_from_slice(&(-1i32).to_be_bytes()),
        (PgKind::Bool, Cell::Bool(b)) => field(out, &[u8::from(*b)]),
        (PgKind::Int2, Cell::Int(v)) => {
            field(out, &i16::try_from(*v).map_err(|_| format!("{v} is out of range for {sql}"))?.to_be_bytes())
        }
        (PgKind::Int4, Cell::Int(v)) => {
            field(out, &i32::try_from(*v).map_err(|_| format!("{v} is out of range for {sql}"))?.to_be_bytes())
        }
        (PgKind::Int8, Cell::Int(v)) => field(out, &v.to_be_bytes()),
        (PgKind::Float4, Cell::Float(v)) => field(out, &(*v as f32).to_be_bytes()),
        (PgKind::Float8, Cell::Float(v)) => field(out, &v.to_be_bytes()),
        (PgKind::Numeric(scale), Cell::Decimal(d)) => {
            let d = d.rescale(scale).map_err(|e| format!("{d} does not fit {sql}: {e}"))?;
            write_numeric(out, d);
        }
        (PgKind::Uuid, Cell::Text(s)) => field(out, &parse_uuid(s).ok_or_else(|| format!("`{s}` is not a uuid"))?),
        (PgKind::Bytea, Cell::Binary(b)) => field(out, b),
        (PgKind::Date, Cell::Date(d)) => field(out, &((i64::from(d.0) - PG_EPOCH_DAYS) as i32).to_be_bytes()),
        (PgKind::Time, Cell::Time(t)) => field(out, &((t.0 / 1000) as i64).to_be_bytes()),
        (PgKind::Timestamp, Cell::DateTime(dt)) => {
            let micros = (i64::from(dt.date.0) - PG_EPOCH_DAYS) * MICROS_PER_DAY + (dt.time.0 / 1000) as i64;
            field(out, &micros.to_be_bytes());
        }
        (PgKind::Text, Cell::Text(s)) => {
            if s.contains('\0') {
                return Err("PostgreSQL text cannot hold the NUL character (U+0000)".into());
            }
            field(out, s.as_bytes());
        }
        (PgKind::Text, _) => field(out, canonical(cell, sql).unwrap_or_default().as_bytes()),
        _ => return Err(mismatch()),
    }
    Ok(())
}

fn cell_kind(cell: &Cell) -> &'static str {
    match cell {
        Cell::Null => "NULL",
        Cell::Bool(_) => "boolean",
        Cell::Int(_) | Cell::UInt(_) => "integer",
        Cell::Float(_) => "floating-point",
        Cell::Text(_) => "text",
        Cell::Binary(_) => "binary",
        Cell::Decimal(_) => "decimal",
        Cell::Date(_) => "date",
        Cell::Time(_) => "time",
        Cell::DateTime(_) => "timestamp",
        Cell::DateTimeOffset(_) => "datetimeoffset",
    }
}

fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    let mut digits = text.bytes().filter(|b| *b != b'-').map(|b| (b as char).to_digit(16));
    for byte in &mut out {
        *byte = (digits.next()?? << 4 | digits.next()??) as u8;
    }
    digits.next().is_none().then_some(out)
}

/// PostgreSQL's binary `numeric`: base-10000 digits with a weight, a sign and a display scale.
/// Computed arithmetically (no text, no allocation): it runs once per decimal cell.
fn write_numeric(out: &mut Vec<u8>, d: Decimal) {
    let scale = u32::from(d.scale());
    let magnitude = d.unscaled().unsigned_abs();
    let unit = 10u128.pow(scale);
    let (mut int, mut frac) = (magnitude / unit, magnitude % unit);
    // Fraction groups, least significant first; a partial last group is padded with zeros.
    let mut frac_groups = [0i16; 12];
    let mut nfrac = 0;
    let rem = scale % 4;
    if rem != 0 {
        frac_groups[0] = ((frac % 10u128.pow(rem)) * 10u128.pow(4 - rem)) as i16;
        frac /= 10u128.pow(rem);
        nfrac = 1;
    }
    for _ in 0..scale / 4 {
        frac_groups[nfrac] = (frac % 10_000) as i16;
        frac /= 10_000;
        nfrac += 1;
    }
    let mut int_groups = [0i16; 12];
    let mut nint = 0;
    while int > 0 {
        int_groups[nint] = (int % 10_000) as i16;
        int /= 10_000;
        nint += 1;
    }
    // Most significant first, then trim zero groups at both ends (the weight follows).
    let mut digits = [0i16; 24];
    let mut n = 0;
    for g in int_groups[..nint].iter().rev().chain(frac_groups[..nfrac].iter().rev()) {
        digits[n] = *g;
        n += 1;
    }
    let leading = digits[..n].iter().take_while(|g| **g == 0).count();
    let mut weight = nint as i16 - 1 - leading as i16;
    let mut end = n;
    while end > leading && digits[end - 1] == 0 {
        end -= 1;
    }
    let digits = &digits[leading..end];
    if digits.is_empty() {
        weight = 0;
    }
    let sign: u16 = if d.unscaled() < 0 { 0x4000 } else { 0 };
    out.extend_from_slice(&((8 + 2 * digits.len()) as i32).to_be_bytes());
    out.extend_from_slice(&(digits.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&(scale as i16).to_be_bytes());
    for g in digits {
        out.extend_from_slice(&g.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(text: &str) -> Vec<i16> {
        let mut out = Vec::new();
        write_numeric(&mut out, Decimal::parse(text).unwrap());
        out[4..].chunks(2).map(|c| i16::from_be_bytes([c[0], c[1]])).collect()
    }

    #[test]
    fn numerics_encode_as_base_10000_groups() {
        // [ndigits, weight, sign, dscale, digits…]
        assert_eq!(numeric("0.00"), vec![0, 0, 0, 2]);
        assert_eq!(numeric("12345.6789"), vec![3, 1, 0, 4, 1, 2345, 6789]);
        assert_eq!(numeric("-0.0001"), vec![1, -1, 0x4000, 4, 1]);
        assert_eq!(numeric("10000"), vec![1, 1, 0, 0, 1]);
        assert_eq!(numeric("0.50"), vec![1, -1, 0, 2, 5000]);
        assert_eq!(numeric("1.00000"), vec![1, 0, 0, 5, 1]);
        assert_eq!(numeric("100000000.000000001"), vec![6, 2, 0, 9, 1, 0, 0, 0, 0, 1000]);
        assert_eq!(numeric("0.00000000000000000000000000000000000001"), vec![1, -10, 0, 38, 100]);
        assert_eq!(
            numeric("-99999999999999999999999999999999999999"),
            vec![10, 9, 0x4000, 0, 99, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999]
        );
    }

    #[test]
    fn fields_refuse_what_the_column_cannot_hold() {
        let mut out = Vec::new();
        assert!(write_field(&mut out, &Cell::Int(70_000), SqlType::SmallInt, PgKind::Int2).is_err());
        assert!(write_field(&mut out, &Cell::Text("a\0b".into()), SqlType::NVarChar(None), PgKind::Text).is_err());
        assert!(write_field(&mut out, &Cell::Text("nope".into()), SqlType::UniqueIdentifier, PgKind::Uuid).is_err());
        assert!(write_field(&mut out, &Cell::Bool(true), SqlType::Int, PgKind::Int4).is_err());
        assert_eq!(parse_uuid("6F9619FF-8B86-D011-B42D-00C04FC964FF").unwrap()[..2], [0x6f, 0x96]);
    }

    #[test]
    fn types_are_exact_or_text() {
        assert_eq!(pg_type(SqlType::DateTime2 { scale: 7 }).1, PgKind::Text);
        assert_eq!(pg_type(SqlType::DateTime2 { scale: 3 }).0, "timestamp(3)");
        assert_eq!(pg_type(SqlType::Money).0, "numeric(19,4)");
        assert_eq!(pg_type(SqlType::NVarChar(None)).0, "text");
        assert_eq!(pg_type(SqlType::DateTimeOffset { scale: 0 }).1, PgKind::Text);
    }
}
