//! Deterministic tenant data: the same seed always yields the same rows, so tests, the demo
//! and benchmarks can compare a replica against a ground truth they can rebuild.

use std::collections::BTreeMap;

use crate::row::{Cell, OwnedRow, PrimaryKey};
use crate::schema::{ColumnSchema, SqlType, TableId, TableSchema};
use crate::value::{Date, DateTime, DateTimeOffset, Decimal, Time};

/// A small, fast, seedable generator (xorshift64*); statistical quality is ample for test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo) as u64 + 1) as i64
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Words for generated text: unicode, quotes, a backslash, an emoji, line-break candidates.
pub const WORDS: &[&str] = &[
    "Ålesund",
    "Müller",
    "O'Connor",
    "Sørensen",
    "Zoë",
    "García",
    "Björk",
    "Nakamura",
    "José",
    "Straße",
    "König",
    "\"quoted\"",
    "back\\slash",
    "meeting",
    "follow-up",
    "proposal",
    "invoice",
    "renewal",
    "Øst",
    "日本",
    "😀",
    "Kraków",
    "naïve",
    "café",
    "AS",
    "Ltd",
    "GmbH",
    "support",
    "Oslo",
    "Bergen",
];

fn words(rng: &mut Rng, max_chars: usize, count: usize) -> String {
    let mut out = String::new();
    for i in 0..count {
        let word = WORDS[rng.below(WORDS.len() as u64) as usize];
        if out.chars().count() + word.chars().count() + usize::from(i > 0) > max_chars {
            break;
        }
        if i > 0 {
            out.push(if rng.chance(5) { '\n' } else { ' ' });
        }
        out.push_str(word);
    }
    out
}

/// Days from 1970-01-01 to 0001-01-01, 1753-01-01 and 9999-12-31.
const DAY_0001: i64 = -719_162;
const DAY_1753: i64 = -79_987;
const DAY_9999: i64 = 2_932_896;

fn day(rng: &mut Rng) -> i64 {
    // Mostly recent business dates, sometimes a historic one.
    if rng.chance(5) { rng.range(DAY_0001, -25_568) } else { rng.range(-10_000, 22_000) }
}

/// A value for `column` in row `index` (`index` makes single-column integer keys unique).
pub fn value(rng: &mut Rng, column: &ColumnSchema, index: u64, key_position: Option<usize>) -> Cell {
    if key_position.is_none() && column.nullable && rng.chance(10) {
        return Cell::Null;
    }
    let text = |rng: &mut Rng, n: Option<u32>| {
        let (max_chars, count) = match n {
            Some(n) => (n as usize, 1 + rng.below(6) as usize),
            None => (4000, 20 + rng.below(200) as usize),
        };
        Cell::Text(words(rng, max_chars, count).into())
    };
    match column.sql_type {
        SqlType::Int | SqlType::BigInt | SqlType::SmallInt | SqlType::TinyInt if key_position.is_some() => {
            Cell::Int(index as i64 + 1)
        }
        SqlType::TinyInt => Cell::Int(rng.range(0, 255)),
        SqlType::SmallInt => Cell::Int(rng.range(-32_768, 32_767)),
        SqlType::Int => Cell::Int(rng.range(-2_147_483_648, 2_147_483_647)),
        SqlType::BigInt => Cell::Int(if rng.chance(20) { rng.next_u64() as i64 } else { rng.range(0, 1 << 40) }),
        SqlType::Bit => Cell::Bool(rng.chance(50)),
        SqlType::Real => Cell::Float(f64::from((rng.below(2_000_000) as f32 - 1e6) / 7.0)),
        SqlType::Float => Cell::Float((rng.next_u64() >> 11) as f64 / (1u64 << 30) as f64 - 4096.0),
        t @ (SqlType::Decimal { .. } | SqlType::Numeric { .. }) => {
            let (precision, scale) = match t {
                SqlType::Decimal { precision, scale } | SqlType::Numeric { precision, scale } => (precision, scale),
                _ => unreachable!("matched above"),
            };
            let digits = 1 + rng.below(u64::from(precision)) as u32;
            let magnitude = (u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())) % 10u128.pow(digits);
            let unscaled = if rng.chance(30) { -(magnitude as i128) } else { magnitude as i128 };
            Cell::Decimal(Decimal::new(unscaled, i64::from(scale)).expect("within precision"))
        }
        SqlType::Money => Cell::Decimal(Decimal::new(i128::from(rng.next_u64() as i64), 4).expect("fits")),
        SqlType::SmallMoney => {
            Cell::Decimal(Decimal::new(rng.range(-2_147_483_648, 2_147_483_647).into(), 4).expect("fits"))
        }
        SqlType::Char(n) | SqlType::VarChar(n) | SqlType::NChar(n) | SqlType::NVarChar(n) => text(rng, n),
        SqlType::Text | SqlType::NText | SqlType::Xml | SqlType::Other => text(rng, None),
        SqlType::Binary(_) | SqlType::VarBinary(_) | SqlType::Image | SqlType::RowVersion => {
            let len = rng.below(300) as usize;
            Cell::Binary((0..len).map(|_| rng.next_u64() as u8).collect())
        }
        SqlType::UniqueIdentifier => {
            let (a, b) = (rng.next_u64(), rng.next_u64());
            Cell::Text(
                format!(
                    "{:08X}-{:04X}-{:04X}-{:04X}-{:012X}",
                    a >> 32,
                    (a >> 16) & 0xFFFF,
                    a & 0xFFFF,
                    b >> 48,
                    b & 0xFFFF_FFFF_FFFF
                )
                .into(),
            )
        }
        SqlType::Date => Cell::Date(Date::from_days(day(rng)).expect("in range")),
        SqlType::Time { scale } => Cell::Time(Time(truncate(rng.below(86_400_000_000_000), scale))),
        SqlType::DateTime => {
            // 1/300 s ticks, as SQL Server stores them: milliseconds end in 0, 3 or 7.
            let ms = rng.below(100) * 10 + [0, 3, 7][rng.below(3) as usize];
            let days = rng.range(DAY_1753.max(-10_000), 22_000);
            Cell::DateTime(datetime(days, rng.below(86_400) * 1_000_000_000 + ms * 1_000_000))
        }
        SqlType::SmallDateTime => {
            Cell::DateTime(datetime(rng.range(-25_567, 22_000), rng.below(1_440) * 60_000_000_000))
        }
        SqlType::DateTime2 { scale } => {
            // NanoTimestamp (scale 7) is nanoseconds in an int64: only 1677-09-22 to 2262-04-10
            // can be carried, so the connector cannot publish other datetime2(7) values.
            let (lo, hi) = if scale == 7 { (-106_750, 106_749) } else { (DAY_0001, DAY_9999) };
            let days = if rng.chance(3) { rng.range(lo, hi) } else { rng.range(-10_000, 22_000) };
            Cell::DateTime(datetime(days, truncate(rng.below(86_400_000_000_000), scale)))
        }
        SqlType::DateTimeOffset { scale } => Cell::DateTimeOffset(DateTimeOffset {
            local: datetime(rng.range(-10_000, 22_000), truncate(rng.below(86_400_000_000_000), scale)),
            offset_minutes: (rng.range(-56, 56) * 15) as i16,
        }),
    }
}

fn truncate(nanos: u64, scale: u8) -> u64 {
    let unit = 10u64.pow(9 - u32::from(scale.min(7)));
    nanos / unit * unit
}

fn datetime(days: i64, nanos: u64) -> DateTime {
    DateTime { date: Date::from_days(days).expect("in range"), time: Time(nanos) }
}

/// A table's rows by primary key: the source of truth.
pub type TableRows = BTreeMap<PrimaryKey, OwnedRow>;

/// Generates `count` rows for `table`.
pub fn rows(rng: &mut Rng, table: &TableSchema, count: u64) -> TableRows {
    let key_positions: Vec<Option<usize>> =
        table.columns.iter().map(|c| table.primary_key.iter().position(|k| *k == c.name)).collect();
    (0..count)
        .map(|index| {
            let row: OwnedRow = table
                .columns
                .iter()
                .zip(&key_positions)
                .map(|(c, key)| match (key, table.primary_key.len()) {
                    // Composite keys: distinct per row through the first column.
                    (Some(k), n) if n > 1 => Cell::Int(if *k == 0 { index as i64 + 1 } else { rng.range(1, 1_000) }),
                    (Some(_), _) if !matches!(c.sql_type, SqlType::Int | SqlType::BigInt | SqlType::SmallInt) => {
                        Cell::Text(format!("key-{index}").into())
                    }
                    _ => value(rng, c, index, *key),
                })
                .collect();
            let key = table
                .primary_key
                .iter()
                .map(|k| row[table.columns.iter().position(|c| &c.name == k).expect("key column")].clone())
                .collect();
            (key, row)
        })
        .collect()
}

/// Ground truth for a set of tables.
pub fn tenant(tables: &[TableSchema], seed: u64, rows_per_table: u64) -> BTreeMap<TableId, TableRows> {
    let mut rng = Rng::new(seed);
    tables.iter().map(|t| (t.id.clone(), rows(&mut rng, t, rows_per_table))).collect()
}
