//! Cells to TDS bulk-load values and back, exactly per SQL Server type.
//!
//! The peers' known failures are here: `datetime` is 1/300-second ticks since 1900, not
//! `datetime2`; `datetimeoffset` travels as UTC plus an offset; `money` must not pass through
//! a float; `(max)` types are sent whole. Every conversion is exact or an error that names the
//! value and the column type, never a silent rounding.

use std::borrow::Cow;

use tiberius::numeric::Numeric;
use tiberius::time::{Date as TdsDate, DateTime as TdsDateTime, DateTime2, DateTimeOffset as TdsOffset};
use tiberius::time::{SmallDateTime, Time as TdsTime};
use tiberius::xml::XmlData;
use tiberius::{ColumnData, Uuid};

use crate::row::Cell;
use crate::schema::SqlType;
use crate::value::{Date, DateTime, DateTimeOffset, Decimal, NANOS_PER_DAY, Time};

/// Days from 0001-01-01 to 1970-01-01 (TDS `date` counts from the former).
const DAYS_0001_TO_1970: i64 = 719_162;
/// Days from 1900-01-01 to 1970-01-01 (`datetime` and `smalldatetime` count from the former).
const DAYS_1900_TO_1970: i64 = 25_567;

fn pow10(n: u8) -> u64 {
    10u64.pow(u32::from(n))
}

fn tds_time(t: Time, scale: u8) -> Result<TdsTime, String> {
    let unit = pow10(9 - scale.min(7));
    if !t.0.is_multiple_of(unit) {
        return Err(format!("time {t} has more precision than scale {scale}"));
    }
    Ok(TdsTime::new(t.0 / unit, scale))
}

fn tds_date(d: Date) -> Result<TdsDate, String> {
    u32::try_from(i64::from(d.0) + DAYS_0001_TO_1970)
        .map(TdsDate::new)
        .map_err(|_| format!("date {d} is before 0001-01-01"))
}

/// Converts one cell for a column of type `sql` into the value a bulk load sends.
pub fn to_column_data(cell: &Cell, sql: SqlType) -> Result<ColumnData<'_>, String> {
    let mismatch = || format!("cannot store {cell:?} in a {sql} column");
    let range = |v: &dyn std::fmt::Display| format!("{v} is out of range for {sql}");
    Ok(match (sql, cell) {
        (_, Cell::Null) => null_of(sql),
        (SqlType::Bit, Cell::Bool(b)) => ColumnData::Bit(Some(*b)),
        (SqlType::TinyInt, Cell::Int(v)) => ColumnData::U8(Some(u8::try_from(*v).map_err(|_| range(v))?)),
        (SqlType::SmallInt, Cell::Int(v)) => ColumnData::I16(Some(i16::try_from(*v).map_err(|_| range(v))?)),
        (SqlType::Int, Cell::Int(v)) => ColumnData::I32(Some(i32::try_from(*v).map_err(|_| range(v))?)),
        (SqlType::BigInt, Cell::Int(v)) => ColumnData::I64(Some(*v)),
        (SqlType::Real, Cell::Float(v)) => ColumnData::F32(Some(*v as f32)),
        (SqlType::Float, Cell::Float(v)) => ColumnData::F64(Some(*v)),
        (
            SqlType::Decimal { .. } | SqlType::Numeric { .. } | SqlType::Money | SqlType::SmallMoney,
            Cell::Decimal(d),
        ) => {
            let scale = sql.decimal_scale().unwrap_or(d.scale());
            let d = d.rescale(scale).map_err(|e| format!("{d} does not fit {sql}: {e}"))?;
            ColumnData::Numeric(Some(Numeric::new_with_scale(d.unscaled(), scale)))
        }
        (SqlType::Xml, Cell::Text(s)) => ColumnData::Xml(Some(Cow::Owned(XmlData::new(s)))),
        (SqlType::UniqueIdentifier, Cell::Text(s)) => {
            ColumnData::Guid(Some(Uuid::parse_str(s).map_err(|_| format!("`{s}` is not a uniqueidentifier"))?))
        }
        (_, Cell::Text(s)) if is_text(sql) => ColumnData::String(Some(Cow::Borrowed(s))),
        (SqlType::Binary(_) | SqlType::VarBinary(_) | SqlType::Image | SqlType::RowVersion, Cell::Binary(b)) => {
            ColumnData::Binary(Some(Cow::Borrowed(b)))
        }
        (SqlType::Date, Cell::Date(d)) => ColumnData::Date(Some(tds_date(*d)?)),
        (SqlType::Time { scale }, Cell::Time(t)) => ColumnData::Time(Some(tds_time(*t, scale)?)),
        (SqlType::DateTime2 { scale }, Cell::DateTime(dt)) => {
            ColumnData::DateTime2(Some(DateTime2::new(tds_date(dt.date)?, tds_time(dt.time, scale)?)))
        }
        (SqlType::DateTime, Cell::DateTime(dt)) => {
            let days = i32::try_from(i64::from(dt.date.0) + DAYS_1900_TO_1970).map_err(|_| range(&dt.date))?;
            // 1/300-second ticks, rounded as SQL Server rounds datetime literals.
            let ticks = (u128::from(dt.time.0) * 300 + 500_000_000) / 1_000_000_000;
            ColumnData::DateTime(Some(TdsDateTime::new(days, ticks as u32)))
        }
        (SqlType::SmallDateTime, Cell::DateTime(dt)) => {
            let days = u16::try_from(i64::from(dt.date.0) + DAYS_1900_TO_1970).map_err(|_| range(&dt.date))?;
            if dt.time.0 % 60_000_000_000 != 0 {
                return Err(format!("{dt} has seconds, which smalldatetime cannot hold"));
            }
            ColumnData::SmallDateTime(Some(SmallDateTime::new(days, (dt.time.0 / 60_000_000_000) as u16)))
        }
        (SqlType::DateTimeOffset { scale }, Cell::DateTimeOffset(v)) => {
            // TDS carries the UTC instant and the offset; our value is the local time.
            let local = i128::from(v.local.date.0) * i128::from(NANOS_PER_DAY) + i128::from(v.local.time.0);
            let utc = local - i128::from(v.offset_minutes) * 60_000_000_000;
            let days = utc.div_euclid(i128::from(NANOS_PER_DAY)) as i64;
            let time = Time(utc.rem_euclid(i128::from(NANOS_PER_DAY)) as u64);
            let date = Date::from_days(days).map_err(|_| range(v))?;
            let dt2 = DateTime2::new(tds_date(date)?, tds_time(time, scale)?);
            ColumnData::DateTimeOffset(Some(TdsOffset::new(dt2, v.offset_minutes)))
        }
        _ => return Err(mismatch()),
    })
}

fn is_text(sql: SqlType) -> bool {
    matches!(
        sql,
        SqlType::Char(_)
            | SqlType::VarChar(_)
            | SqlType::NChar(_)
            | SqlType::NVarChar(_)
            | SqlType::Text
            | SqlType::NText
            | SqlType::Other
    )
}

/// A typed `NULL` for a column of type `sql`.
fn null_of(sql: SqlType) -> ColumnData<'static> {
    match sql {
        SqlType::Bit => ColumnData::Bit(None),
        SqlType::TinyInt => ColumnData::U8(None),
        SqlType::SmallInt => ColumnData::I16(None),
        SqlType::Int => ColumnData::I32(None),
        SqlType::BigInt => ColumnData::I64(None),
        SqlType::Real => ColumnData::F32(None),
        SqlType::Float => ColumnData::F64(None),
        SqlType::Decimal { .. } | SqlType::Numeric { .. } | SqlType::Money | SqlType::SmallMoney => {
            ColumnData::Numeric(None)
        }
        SqlType::Xml => ColumnData::Xml(None),
        SqlType::UniqueIdentifier => ColumnData::Guid(None),
        SqlType::Binary(_) | SqlType::VarBinary(_) | SqlType::Image | SqlType::RowVersion => ColumnData::Binary(None),
        SqlType::Date => ColumnData::Date(None),
        SqlType::Time { .. } => ColumnData::Time(None),
        SqlType::DateTime => ColumnData::DateTime(None),
        SqlType::SmallDateTime => ColumnData::SmallDateTime(None),
        SqlType::DateTime2 { .. } => ColumnData::DateTime2(None),
        SqlType::DateTimeOffset { .. } => ColumnData::DateTimeOffset(None),
        _ => ColumnData::String(None),
    }
}

fn our_date(d: TdsDate) -> Result<Date, String> {
    Date::from_days(i64::from(d.days()) - DAYS_0001_TO_1970).map_err(|e| e.to_string())
}

fn our_time(t: TdsTime) -> Time {
    Time(t.increments() * pow10(9 - t.scale().min(7)))
}

/// Reads a value SQL Server returned back into a cell (for `read_rows`). `money` columns
/// must be selected as `decimal(19,4)`: tiberius returns `money` as a float.
pub fn from_column_data(data: &ColumnData<'_>) -> Result<Cell, String> {
    Ok(match data {
        ColumnData::Bit(Some(b)) => Cell::Bool(*b),
        ColumnData::U8(Some(v)) => Cell::Int(i64::from(*v)),
        ColumnData::I16(Some(v)) => Cell::Int(i64::from(*v)),
        ColumnData::I32(Some(v)) => Cell::Int(i64::from(*v)),
        ColumnData::I64(Some(v)) => Cell::Int(*v),
        ColumnData::F32(Some(v)) => Cell::Float(f64::from(*v)),
        ColumnData::F64(Some(v)) => Cell::Float(*v),
        ColumnData::Numeric(Some(n)) => {
            Cell::Decimal(Decimal::new(n.value(), i64::from(n.scale())).map_err(|e| e.to_string())?)
        }
        ColumnData::String(Some(s)) => Cell::Text(s.as_ref().into()),
        ColumnData::Xml(Some(x)) => Cell::Text(x.as_ref().as_ref().into()),
        ColumnData::Guid(Some(g)) => Cell::Text(g.to_string().to_ascii_uppercase().into()),
        ColumnData::Binary(Some(b)) => Cell::Binary(b.as_ref().into()),
        ColumnData::Date(Some(d)) => Cell::Date(our_date(*d)?),
        ColumnData::Time(Some(t)) => Cell::Time(our_time(*t)),
        ColumnData::DateTime2(Some(dt)) => {
            Cell::DateTime(DateTime { date: our_date(dt.date())?, time: our_time(dt.time()) })
        }
        ColumnData::DateTime(Some(dt)) => {
            let date = Date::from_days(i64::from(dt.days()) - DAYS_1900_TO_1970).map_err(|e| e.to_string())?;
            // Ticks back to milliseconds, as SQL Server displays datetime (.000/.003/.007).
            let millis = (u64::from(dt.seconds_fragments()) * 1000 * 2 + 300) / 600;
            Cell::DateTime(DateTime { date, time: Time(millis * 1_000_000) })
        }
        ColumnData::SmallDateTime(Some(dt)) => {
            let date = Date::from_days(i64::from(dt.days()) - DAYS_1900_TO_1970).map_err(|e| e.to_string())?;
            Cell::DateTime(DateTime { date, time: Time(u64::from(dt.seconds_fragments()) * 60_000_000_000) })
        }
        ColumnData::DateTimeOffset(Some(v)) => {
            let dt2 = v.datetime2();
            let utc =
                i128::from(our_date(dt2.date())?.0) * i128::from(NANOS_PER_DAY) + i128::from(our_time(dt2.time()).0);
            let local = utc + i128::from(v.offset()) * 60_000_000_000;
            let date =
                Date::from_days(local.div_euclid(i128::from(NANOS_PER_DAY)) as i64).map_err(|e| e.to_string())?;
            let time = Time(local.rem_euclid(i128::from(NANOS_PER_DAY)) as u64);
            Cell::DateTimeOffset(DateTimeOffset { local: DateTime { date, time }, offset_minutes: v.offset() })
        }
        _ => Cell::Null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::{canonical, parse_stored};

    /// Every type: canonical text → cell → TDS value → cell → the same canonical text.
    #[test]
    fn every_type_round_trips_through_its_tds_value() {
        let cases: &[(SqlType, &str)] = &[
            (SqlType::Bit, "1"),
            (SqlType::TinyInt, "255"),
            (SqlType::SmallInt, "-32768"),
            (SqlType::Int, "2147483647"),
            (SqlType::BigInt, "-9223372036854775808"),
            (SqlType::Real, "3.4028235e38"),
            (SqlType::Float, "-2.2250738585072014e-308"),
            (SqlType::Decimal { precision: 38, scale: 0 }, "99999999999999999999999999999999999999"),
            (SqlType::Decimal { precision: 38, scale: 10 }, "-1234567890123456789012345678.0123456789"),
            (SqlType::Money, "-922337203685477.5808"),
            (SqlType::SmallMoney, "214748.3647"),
            (SqlType::NVarChar(None), "Zoë \"quoted\" 'single' \u{1F600}"),
            (SqlType::VarChar(Some(10)), "plain"),
            (SqlType::Xml, "<a b=\"1\">x</a>"),
            (SqlType::UniqueIdentifier, "6F9619FF-8B86-D011-B42D-00C04FC964FF"),
            (SqlType::VarBinary(None), "0x00FF10"),
            (SqlType::Date, "0001-01-01"),
            (SqlType::Date, "9999-12-31"),
            (SqlType::Time { scale: 7 }, "23:59:59.9999999"),
            (SqlType::Time { scale: 0 }, "00:00:00"),
            (SqlType::DateTime2 { scale: 7 }, "1600-02-29 12:34:56.1234567"),
            (SqlType::DateTime2 { scale: 3 }, "2024-01-01 00:00:00.120"),
            (SqlType::DateTime, "1753-01-01 00:00:00.000"),
            (SqlType::DateTime, "2024-05-06 07:08:09.997"),
            (SqlType::DateTime, "1899-12-31 23:59:59.003"),
            (SqlType::SmallDateTime, "2079-06-06 23:59:00"),
            (SqlType::DateTimeOffset { scale: 7 }, "0001-01-01 14:30:00.0000001 +14:00"),
            (SqlType::DateTimeOffset { scale: 3 }, "9999-12-31 09:00:00.000 -14:00"),
        ];
        for (sql, text) in cases {
            let cell = parse_stored(text, *sql).unwrap();
            let data = to_column_data(&cell, *sql).unwrap_or_else(|e| panic!("{text} as {sql}: {e}"));
            let back = from_column_data(&data).unwrap();
            assert_eq!(canonical(&back, *sql).as_deref(), Some(*text), "{sql}");
            assert!(matches!(from_column_data(&null_of(*sql)), Ok(Cell::Null)));
        }
    }

    #[test]
    fn datetime_uses_1_300_second_ticks_and_offsets_travel_as_utc() {
        let cell = parse_stored("2024-01-01 00:00:01.003", SqlType::DateTime).unwrap();
        let ColumnData::DateTime(Some(dt)) = to_column_data(&cell, SqlType::DateTime).unwrap() else { panic!() };
        assert_eq!((dt.days(), dt.seconds_fragments()), (45_290, 301));
        let cell = parse_stored("2024-01-01 01:00:00 +02:00", SqlType::DateTimeOffset { scale: 0 }).unwrap();
        let ColumnData::DateTimeOffset(Some(v)) = to_column_data(&cell, SqlType::DateTimeOffset { scale: 0 }).unwrap()
        else {
            panic!()
        };
        assert_eq!((v.datetime2().time().increments(), v.offset()), (23 * 3600, 120));
    }

    #[test]
    fn values_that_do_not_fit_are_errors_not_roundings() {
        let int = |v| Cell::Int(v);
        assert!(to_column_data(&int(256), SqlType::TinyInt).is_err());
        assert!(to_column_data(&int(1 << 40), SqlType::Int).is_err());
        let fine = parse_stored("12:00:00.1234567", SqlType::Time { scale: 7 }).unwrap();
        assert!(to_column_data(&fine, SqlType::Time { scale: 3 }).is_err());
        let secs = parse_stored("2024-01-01 10:00:30", SqlType::SmallDateTime).unwrap();
        assert!(to_column_data(&secs, SqlType::SmallDateTime).is_err());
        assert!(to_column_data(&Cell::Text("nope".into()), SqlType::UniqueIdentifier).is_err());
        assert!(to_column_data(&Cell::Bool(true), SqlType::NVarChar(Some(5))).is_err());
    }
}
