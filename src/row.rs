//! Owned rows: what a batch keeps after the record buffers they were decoded from are gone.
//!
//! Decoding borrows from each record; a batch outlives its records, so the coalescer copies
//! the surviving row images into [`Cell`]s laid out in the table's column order, which is also
//! the order every sink loads them in.

use std::hash::{Hash, Hasher};

use smallvec::SmallVec;

use crate::decode::{Value, ValueError};
use crate::value::{Date, DateTime, DateTimeOffset, Decimal, Time};

/// One owned column value.
#[derive(Debug, Clone)]
pub enum Cell {
    /// SQL `NULL`.
    Null,
    /// `bit`.
    Bool(bool),
    /// Integer columns.
    Int(i64),
    /// An integer beyond `i64` (only from schema-less pass-through).
    UInt(u64),
    /// `float` / `real`.
    Float(f64),
    /// Character data, xml, uniqueidentifier text.
    Text(Box<str>),
    /// Decoded binary data.
    Binary(Box<[u8]>),
    /// Exact numerics.
    Decimal(Decimal),
    /// `date`.
    Date(Date),
    /// `time`.
    Time(Time),
    /// `datetime`, `smalldatetime`, `datetime2`.
    DateTime(DateTime),
    /// `datetimeoffset`.
    DateTimeOffset(DateTimeOffset),
}

impl PartialEq for Cell {
    /// Floats compare by bits so a key made of them is a well-behaved map key.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Cell::Float(a), Cell::Float(b)) => a.to_bits() == b.to_bits(),
            (Cell::Null, Cell::Null) => true,
            (Cell::Bool(a), Cell::Bool(b)) => a == b,
            (Cell::Int(a), Cell::Int(b)) => a == b,
            (Cell::UInt(a), Cell::UInt(b)) => a == b,
            (Cell::Text(a), Cell::Text(b)) => a == b,
            (Cell::Binary(a), Cell::Binary(b)) => a == b,
            (Cell::Decimal(a), Cell::Decimal(b)) => a == b,
            (Cell::Date(a), Cell::Date(b)) => a == b,
            (Cell::Time(a), Cell::Time(b)) => a == b,
            (Cell::DateTime(a), Cell::DateTime(b)) => a == b,
            (Cell::DateTimeOffset(a), Cell::DateTimeOffset(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Cell {}

impl Ord for Cell {
    /// A total order consistent with equality: values of one kind in their natural order
    /// (decimals of one scale, floats by `total_cmp`), kinds in declaration order. Sinks sort
    /// keys with it so rows reach the table's B-tree in key order.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        fn rank(c: &Cell) -> u8 {
            match c {
                Cell::Null => 0,
                Cell::Bool(_) => 1,
                Cell::Int(_) => 2,
                Cell::UInt(_) => 3,
                Cell::Float(_) => 4,
                Cell::Text(_) => 5,
                Cell::Binary(_) => 6,
                Cell::Decimal(_) => 7,
                Cell::Date(_) => 8,
                Cell::Time(_) => 9,
                Cell::DateTime(_) => 10,
                Cell::DateTimeOffset(_) => 11,
            }
        }
        match (self, other) {
            (Cell::Bool(a), Cell::Bool(b)) => a.cmp(b),
            (Cell::Int(a), Cell::Int(b)) => a.cmp(b),
            (Cell::UInt(a), Cell::UInt(b)) => a.cmp(b),
            (Cell::Float(a), Cell::Float(b)) => a.total_cmp(b),
            (Cell::Text(a), Cell::Text(b)) => a.cmp(b),
            (Cell::Binary(a), Cell::Binary(b)) => a.cmp(b),
            (Cell::Decimal(a), Cell::Decimal(b)) => (a.scale(), a.unscaled()).cmp(&(b.scale(), b.unscaled())),
            (Cell::Date(a), Cell::Date(b)) => a.cmp(b),
            (Cell::Time(a), Cell::Time(b)) => a.cmp(b),
            (Cell::DateTime(a), Cell::DateTime(b)) => a.cmp(b),
            (Cell::DateTimeOffset(a), Cell::DateTimeOffset(b)) => {
                (a.local, a.offset_minutes).cmp(&(b.local, b.offset_minutes))
            }
            _ => rank(self).cmp(&rank(other)).then(Ordering::Equal),
        }
    }
}

impl PartialOrd for Cell {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Hash for Cell {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            Cell::Null => {}
            Cell::Bool(v) => v.hash(state),
            Cell::Int(v) => v.hash(state),
            Cell::UInt(v) => v.hash(state),
            Cell::Float(v) => v.to_bits().hash(state),
            Cell::Text(v) => v.hash(state),
            Cell::Binary(v) => v.hash(state),
            Cell::Decimal(v) => v.hash(state),
            Cell::Date(v) => v.hash(state),
            Cell::Time(v) => v.hash(state),
            Cell::DateTime(v) => v.hash(state),
            Cell::DateTimeOffset(v) => v.hash(state),
        }
    }
}

impl Cell {
    /// Copies a decoded value; binary is decoded from its wire text here, once.
    pub fn from_value(value: &Value<'_>) -> Result<Self, ValueError> {
        Ok(match value {
            Value::Null => Cell::Null,
            Value::Bool(b) => Cell::Bool(*b),
            Value::Int(v) => Cell::Int(*v),
            Value::UInt(v) => Cell::UInt(*v),
            Value::Float(v) => Cell::Float(*v),
            Value::Float32(v) => Cell::Float(f64::from(*v)),
            Value::Text(s) | Value::Uuid(s) | Value::Xml(s) | Value::ZonedTime(s) => Cell::Text((*s).into()),
            Value::Json(s) => Cell::Text(s.clone()),
            Value::Binary(b) => {
                let mut bytes = Vec::new();
                b.decode_into(&mut bytes)?;
                Cell::Binary(bytes.into_boxed_slice())
            }
            Value::Decimal(d) => Cell::Decimal(*d),
            Value::Date(d) => Cell::Date(*d),
            Value::Time(t) => Cell::Time(*t),
            Value::DateTime(dt) => Cell::DateTime(*dt),
            Value::DateTimeOffset(v) => Cell::DateTimeOffset(*v),
        })
    }

    /// Rough heap plus inline size, for byte-based flushing.
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Cell>()
            + match self {
                Cell::Text(s) => s.len(),
                Cell::Binary(b) => b.len(),
                _ => 0,
            }
    }
}

/// A row in table column order.
pub type OwnedRow = Box<[Cell]>;

/// A primary key in key-column order; inline for one- and two-column keys.
pub type PrimaryKey = SmallVec<[Cell; 2]>;
