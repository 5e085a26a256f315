//! How cells are bound to SQLite statements: exact numerics and temporals rendered as text
//! (into a per-row scratch buffer, so binding a row allocates nothing), everything else bound
//! as it is.

use rusqlite::ToSql;
use rusqlite::types::{ToSqlOutput, ValueRef};

use crate::canonical::fraction_scale;
use crate::row::Cell;
use crate::schema::SqlType;

/// Writes the text SQLite stores for cells we format (exact numerics, temporals, integers
/// beyond `i64`); returns false for cells bound as they are.
fn render(cell: &Cell, sql: SqlType, out: &mut String) -> bool {
    use std::fmt::Write as _;
    match cell {
        Cell::UInt(v) => {
            let _ = write!(out, "{v}");
        }
        Cell::Decimal(d) => {
            let _ = write!(out, "{d}");
        }
        Cell::Date(d) => {
            let _ = write!(out, "{d}");
        }
        Cell::Time(t) => t.write_fixed(out, fraction_scale(sql)),
        Cell::DateTime(dt) => dt.write_fixed(out, fraction_scale(sql)),
        Cell::DateTimeOffset(v) => v.write_fixed(out, fraction_scale(sql)),
        _ => return false,
    }
    true
}

/// A statement parameter: a cell bound directly (borrowing text and blobs) or text rendered
/// into a per-row scratch buffer, so binding a row allocates nothing.
pub(super) enum Param<'a> {
    Direct(&'a Cell),
    Rendered(&'a str),
}

impl ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Param::Rendered(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Param::Direct(Cell::Bool(b)) => ToSqlOutput::from(i64::from(*b)),
            Param::Direct(Cell::Int(v)) => ToSqlOutput::from(*v),
            Param::Direct(Cell::Float(v)) => ToSqlOutput::from(*v),
            Param::Direct(Cell::Text(s)) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Param::Direct(Cell::Binary(b)) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Param::Direct(_) => ToSqlOutput::Borrowed(ValueRef::Null),
        })
    }
}

/// Renders one row's formatted cells into `scratch` and records where each one lies.
pub(super) fn render_row(
    cells: &[Cell],
    types: impl Iterator<Item = SqlType>,
    scratch: &mut String,
    spans: &mut Vec<Option<(usize, usize)>>,
) {
    scratch.clear();
    spans.clear();
    for (cell, sql) in cells.iter().zip(types) {
        let start = scratch.len();
        spans.push(render(cell, sql, scratch).then_some((start, scratch.len())));
    }
}

pub(super) fn params<'a>(
    cells: &'a [Cell],
    scratch: &'a str,
    spans: &'a [Option<(usize, usize)>],
) -> impl Iterator<Item = Param<'a>> {
    cells.iter().zip(spans).map(move |(cell, span)| match span {
        Some((a, b)) => Param::Rendered(&scratch[*a..*b]),
        None => Param::Direct(cell),
    })
}

/// The value SQLite stores for a cell of a column of type `sql`, as an owned value (for
/// callers outside a batch, such as benchmarks' baselines and `verify`).
pub fn sql_value(cell: &Cell, sql: SqlType) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    let mut text = String::new();
    if render(cell, sql, &mut text) {
        return V::Text(text);
    }
    match cell {
        Cell::Bool(b) => V::Integer(i64::from(*b)),
        Cell::Int(v) => V::Integer(*v),
        Cell::Float(v) => V::Real(*v),
        Cell::Text(s) => V::Text(s.to_string()),
        Cell::Binary(b) => V::Blob(b.to_vec()),
        _ => V::Null,
    }
}
