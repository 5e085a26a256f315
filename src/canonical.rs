//! One text form per value and column type, whatever the target stored.
//!
//! Every target stores a value its own way (SQLite text for exact numerics, PostgreSQL
//! `numeric`, SQL Server `money`), so comparing a replica with the source needs a form that
//! does not depend on the target: [`canonical`] renders a cell in it and [`parse_stored`]
//! reads a target's text back into a cell. `verify`, the cross-target tests and the reference
//! cloud's ground truth all compare in this form, so "equal" means the same thing everywhere.

use std::fmt::Write as _;

use crate::row::Cell;
use crate::schema::SqlType;
use crate::value::{Date, DateTime, DateTimeOffset, Decimal, Time};

/// Fraction digits a temporal column's text always has (the column's scale).
pub fn fraction_scale(sql: SqlType) -> u8 {
    match sql {
        SqlType::Time { scale } | SqlType::DateTime2 { scale } | SqlType::DateTimeOffset { scale } => scale,
        SqlType::DateTime => 3,
        _ => 0,
    }
}

/// The canonical text of a cell in a column of type `sql`; `None` for SQL `NULL`.
///
/// Integers in decimal, `bit` as `0`/`1`, floats in their shortest round-trip form (`real` at
/// single precision), exact numerics with exactly the column's scale, binary as `0x` and
/// upper-case hex, `uniqueidentifier` upper-case, temporals with the column's fraction width.
pub fn canonical(cell: &Cell, sql: SqlType) -> Option<String> {
    let mut out = String::new();
    match cell {
        Cell::Null => return None,
        Cell::Bool(b) => out.push(if *b { '1' } else { '0' }),
        Cell::Int(v) => out.push_str(itoa::Buffer::new().format(*v)),
        Cell::UInt(v) => out.push_str(itoa::Buffer::new().format(*v)),
        Cell::Float(v) if sql == SqlType::Real => out.push_str(ryu::Buffer::new().format(*v as f32)),
        Cell::Float(v) => out.push_str(ryu::Buffer::new().format(*v)),
        Cell::Text(s) if sql == SqlType::UniqueIdentifier => out.push_str(&s.to_ascii_uppercase()),
        Cell::Text(s) => out.push_str(s),
        Cell::Binary(b) => {
            out.push_str("0x");
            for byte in b.iter() {
                let _ = write!(out, "{byte:02X}");
            }
        }
        Cell::Decimal(d) => {
            let scaled = sql.decimal_scale().and_then(|s| d.rescale(s).ok()).unwrap_or(*d);
            let _ = write!(out, "{scaled}");
        }
        Cell::Date(d) => {
            let _ = write!(out, "{d}");
        }
        Cell::Time(t) => t.write_fixed(&mut out, fraction_scale(sql)),
        Cell::DateTime(dt) => dt.write_fixed(&mut out, fraction_scale(sql)),
        Cell::DateTimeOffset(v) => v.write_fixed(&mut out, fraction_scale(sql)),
    }
    Some(out)
}

/// Reads a target's text for a column of type `sql` back into a cell: PostgreSQL's output
/// forms (`t`/`f`, `YYYY-MM-DD HH:MM:SS.ffffff`, `\x…` bytea) and our own stored forms.
pub fn parse_stored(text: &str, sql: SqlType) -> Result<Cell, String> {
    let bad = |what: &str| format!("`{text}` is not a valid {what} for a {sql} column");
    Ok(match sql {
        SqlType::Bit => match text {
            "t" | "true" | "1" => Cell::Bool(true),
            "f" | "false" | "0" => Cell::Bool(false),
            _ => return Err(bad("boolean")),
        },
        SqlType::TinyInt | SqlType::SmallInt | SqlType::Int | SqlType::BigInt => {
            Cell::Int(text.parse().map_err(|_| bad("integer"))?)
        }
        SqlType::Real => Cell::Float(f64::from(text.parse::<f32>().map_err(|_| bad("real"))?)),
        SqlType::Float => Cell::Float(text.parse().map_err(|_| bad("float"))?),
        SqlType::Decimal { .. } | SqlType::Numeric { .. } | SqlType::Money | SqlType::SmallMoney => {
            Cell::Decimal(Decimal::parse(text).map_err(|_| bad("decimal"))?)
        }
        SqlType::Date => Cell::Date(Date::parse(text).map_err(|_| bad("date"))?),
        SqlType::Time { .. } => Cell::Time(Time::parse(text).map_err(|_| bad("time"))?),
        SqlType::DateTime | SqlType::SmallDateTime | SqlType::DateTime2 { .. } => {
            Cell::DateTime(DateTime::parse(text).map_err(|_| bad("timestamp"))?)
        }
        SqlType::DateTimeOffset { .. } => {
            Cell::DateTimeOffset(DateTimeOffset::parse(text).map_err(|_| bad("datetimeoffset"))?)
        }
        SqlType::Binary(_) | SqlType::VarBinary(_) | SqlType::Image | SqlType::RowVersion => {
            let hex = text.strip_prefix("\\x").or_else(|| text.strip_prefix("0x")).unwrap_or(text);
            Cell::Binary(decode_hex(hex).ok_or_else(|| bad("hex binary"))?.into_boxed_slice())
        }
        _ => Cell::Text(text.into()),
    })
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    let hex = hex.as_bytes();
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    hex.chunks(2).map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?)).collect()
}

/// An order-independent checksum of a table's canonical rows (FNV-1a per row, summed), with
/// the row count: two tables with the same rows in any order give the same pair.
pub fn checksum<'a>(rows: impl IntoIterator<Item = &'a [Option<String>]>) -> (u64, u64) {
    let (mut count, mut sum) = (0u64, 0u64);
    for row in rows {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for cell in row {
            let bytes = cell.as_deref().map_or(&[0xff_u8][..], str::as_bytes);
            for &b in bytes.iter().chain(&[0x1f]) {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
            if cell.is_some() {
                hash = hash.wrapping_add(1);
            }
        }
        count += 1;
        sum = sum.wrapping_add(hash);
    }
    (count, sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_text_reads_back_to_the_same_canonical_form() {
        let cases: &[(&str, SqlType, &str)] = &[
            ("t", SqlType::Bit, "1"),
            ("12.30", SqlType::Decimal { precision: 18, scale: 2 }, "12.30"),
            ("12.3", SqlType::Decimal { precision: 18, scale: 2 }, "12.30"),
            ("-0.5000", SqlType::Money, "-0.5000"),
            ("0.1", SqlType::Real, "0.1"),
            ("\\xdeadBEEF", SqlType::VarBinary(None), "0xDEADBEEF"),
            ("2024-02-29 23:59:59.5", SqlType::DateTime2 { scale: 7 }, "2024-02-29 23:59:59.5000000"),
            ("0099-01-01", SqlType::Date, "0099-01-01"),
            ("10:00:00", SqlType::Time { scale: 3 }, "10:00:00.000"),
            (
                "2024-01-01 10:00:00.1234567 -05:30",
                SqlType::DateTimeOffset { scale: 7 },
                "2024-01-01 10:00:00.1234567 -05:30",
            ),
            ("6f9619ff-8b86-d011-b42d-00c04fc964ff", SqlType::UniqueIdentifier, "6F9619FF-8B86-D011-B42D-00C04FC964FF"),
        ];
        for (stored, sql, want) in cases {
            let cell = parse_stored(stored, *sql).unwrap();
            assert_eq!(canonical(&cell, *sql).as_deref(), Some(*want), "{stored} as {sql}");
        }
        assert!(parse_stored("maybe", SqlType::Bit).is_err());
        assert!(parse_stored("0xABC", SqlType::Binary(Some(2))).is_err());
    }

    #[test]
    fn checksum_ignores_order_but_not_content() {
        let a = vec![Some("1".to_string()), None];
        let b = vec![Some("2".to_string()), Some(String::new())];
        let ab = checksum([a.as_slice(), b.as_slice()]);
        assert_eq!(ab, checksum([b.as_slice(), a.as_slice()]));
        let c = vec![Some("2".to_string()), None];
        assert_ne!(ab, checksum([a.as_slice(), c.as_slice()]));
    }
}
