//! Dates and times in the proleptic Gregorian calendar, to 100 ns and beyond.
//!
//! Debezium sends SQL Server temporals as counts since the Unix epoch (days, ms, µs, ns) or,
//! for `datetimeoffset`, as ISO-8601 text with the original offset. We keep the count exactly
//! (days plus nanoseconds of day) so `datetime2(7)` keeps its 100 ns and dates before 1753 or
//! 1900 survive; nothing here goes through a float or a time zone database.

use std::fmt;

/// Nanoseconds in a day.
pub const NANOS_PER_DAY: i64 = 86_400_000_000_000;

/// A calendar date as days since 1970-01-01 (negative before).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(pub i32);

/// A time of day in nanoseconds since midnight (0 ..< 24 h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

/// A timestamp without zone: a date and a time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DateTime {
    /// The calendar day.
    pub date: Date,
    /// The time within that day.
    pub time: Time,
}

/// A `datetimeoffset`: the local wall-clock time and its offset from UTC in minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DateTimeOffset {
    /// Wall-clock time at the offset.
    pub local: DateTime,
    /// Minutes east of UTC (-840 ..= 840 in SQL Server).
    pub offset_minutes: i16,
}

/// Why a temporal value is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TemporalError {
    /// A count outside the representable calendar.
    #[error("temporal value out of range")]
    Range,
    /// Time of day outside 00:00..24:00.
    #[error("time of day out of range")]
    TimeOfDay,
    /// Text that is not ISO-8601.
    #[error("not an ISO-8601 timestamp with offset")]
    Syntax,
}

/// Days from the epoch are limited to years -9999..=9999, far beyond SQL Server's 0001..9999.
const MAX_DAYS: i64 = 2_932_896;

impl Date {
    /// From days since the epoch.
    pub fn from_days(days: i64) -> Result<Self, TemporalError> {
        if days.abs() > MAX_DAYS {
            return Err(TemporalError::Range);
        }
        Ok(Date(days as i32))
    }

    /// Year, month (1-12) and day (1-31).
    pub fn ymd(self) -> (i32, u32, u32) {
        civil_from_days(i64::from(self.0))
    }

    /// Builds a date from its calendar parts, validating the day of month.
    pub fn from_ymd(year: i32, month: u32, day: u32) -> Result<Self, TemporalError> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return Err(TemporalError::Syntax);
        }
        Date::from_days(days_from_civil(year, month, day))
    }
}

impl Time {
    /// From a count of `unit_nanos`-sized units since midnight.
    pub fn from_units(count: i64, unit_nanos: i64) -> Result<Self, TemporalError> {
        let nanos = count.checked_mul(unit_nanos).ok_or(TemporalError::TimeOfDay)?;
        // Debezium sends 24:00:00 for SQL Server's never-valid time; reject anything outside a day.
        if !(0..NANOS_PER_DAY).contains(&nanos) {
            return Err(TemporalError::TimeOfDay);
        }
        Ok(Time(nanos as u64))
    }

    /// Hours, minutes, seconds and nanoseconds.
    pub fn hmsn(self) -> (u32, u32, u32, u32) {
        let secs = self.0 / 1_000_000_000;
        ((secs / 3600) as u32, (secs / 60 % 60) as u32, (secs % 60) as u32, (self.0 % 1_000_000_000) as u32)
    }
}

impl DateTime {
    /// From a count of `unit_nanos`-sized units since the epoch; exact for any unit.
    pub fn from_epoch_units(count: i64, unit_nanos: i64) -> Result<Self, TemporalError> {
        let units_per_day = NANOS_PER_DAY / unit_nanos;
        let days = count.div_euclid(units_per_day);
        let rem = count.rem_euclid(units_per_day);
        Ok(DateTime { date: Date::from_days(days)?, time: Time((rem * unit_nanos) as u64) })
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fffffffff]` (a space is accepted for `T`).
    fn parse_prefix(s: &[u8]) -> Result<(Self, usize), TemporalError> {
        let year = num(s, 0, 4)? as i32;
        expect(s, 4, b'-')?;
        let month = num(s, 5, 2)?;
        expect(s, 7, b'-')?;
        let day = num(s, 8, 2)?;
        if !matches!(s.get(10), Some(b'T' | b' ')) {
            return Err(TemporalError::Syntax);
        }
        let (time, used) = parse_time(&s[11..])?;
        Ok((DateTime { date: Date::from_ymd(year, month, day)?, time }, 11 + used))
    }
}

impl DateTimeOffset {
    /// Parses Debezium's `ZonedTimestamp` text: ISO-8601 with `Z` or `±HH:MM`; one space
    /// before the offset is accepted, so [`DateTimeOffset::write_fixed`]'s text reads back.
    pub fn parse(text: &str) -> Result<Self, TemporalError> {
        let s = text.as_bytes();
        let (local, mut used) = DateTime::parse_prefix(s)?;
        if s.get(used) == Some(&b' ') {
            used += 1;
        }
        let offset_minutes = parse_offset(&s[used..])?;
        Ok(DateTimeOffset { local, offset_minutes })
    }
}

impl Date {
    /// Parses `YYYY-MM-DD` (the text replicas store and return).
    pub fn parse(text: &str) -> Result<Self, TemporalError> {
        let s = text.as_bytes();
        if s.len() != 10 {
            return Err(TemporalError::Syntax);
        }
        expect(s, 4, b'-')?;
        expect(s, 7, b'-')?;
        Date::from_ymd(num(s, 0, 4)? as i32, num(s, 5, 2)?, num(s, 8, 2)?)
    }
}

impl Time {
    /// Parses `HH:MM:SS[.f{1,9}]`.
    pub fn parse(text: &str) -> Result<Self, TemporalError> {
        let (time, used) = parse_time(text.as_bytes())?;
        if used == text.len() { Ok(time) } else { Err(TemporalError::Syntax) }
    }
}

impl DateTime {
    /// Parses `YYYY-MM-DD[T ]HH:MM:SS[.f{1,9}]`.
    pub fn parse(text: &str) -> Result<Self, TemporalError> {
        let (value, used) = DateTime::parse_prefix(text.as_bytes())?;
        if used == text.len() { Ok(value) } else { Err(TemporalError::Syntax) }
    }
}

/// Parses `HH:MM:SS[.f{1,9}]` and returns the time and the bytes used.
fn parse_time(s: &[u8]) -> Result<(Time, usize), TemporalError> {
    let h = num(s, 0, 2)?;
    expect(s, 2, b':')?;
    let m = num(s, 3, 2)?;
    expect(s, 5, b':')?;
    let sec = num(s, 6, 2)?;
    if h > 23 || m > 59 || sec > 59 {
        return Err(TemporalError::TimeOfDay);
    }
    let mut used = 8;
    let mut nanos = 0u64;
    if s.get(8) == Some(&b'.') {
        let mut digits = 0;
        used = 9;
        while let Some(d @ b'0'..=b'9') = s.get(used).copied() {
            if digits == 9 {
                return Err(TemporalError::Syntax);
            }
            nanos = nanos * 10 + u64::from(d - b'0');
            digits += 1;
            used += 1;
        }
        if digits == 0 {
            return Err(TemporalError::Syntax);
        }
        nanos *= 10u64.pow(9 - digits);
    }
    let total = (u64::from(h) * 3600 + u64::from(m) * 60 + u64::from(sec)) * 1_000_000_000 + nanos;
    Ok((Time(total), used))
}

/// Parses `Z` or `±HH:MM` (also `±HHMM` and `±HH`) to minutes; nothing may follow.
fn parse_offset(s: &[u8]) -> Result<i16, TemporalError> {
    match s {
        [b'Z'] => Ok(0),
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (h, m) = match rest.len() {
                2 => (num(rest, 0, 2)?, 0),
                4 => (num(rest, 0, 2)?, num(rest, 2, 2)?),
                5 if rest[2] == b':' => (num(rest, 0, 2)?, num(rest, 3, 2)?),
                _ => return Err(TemporalError::Syntax),
            };
            if h > 18 || m > 59 {
                return Err(TemporalError::Syntax);
            }
            let minutes = (h * 60 + m) as i16;
            Ok(if *sign == b'-' { -minutes } else { minutes })
        }
        _ => Err(TemporalError::Syntax),
    }
}

/// Validates `HH:MM:SS[.f](Z|±HH:MM)`, Debezium's `ZonedTime` text.
pub fn validate_zoned_time(text: &str) -> Result<(), TemporalError> {
    let s = text.as_bytes();
    let (_, used) = parse_time(s)?;
    parse_offset(&s[used..]).map(|_| ())
}

fn num(s: &[u8], at: usize, len: usize) -> Result<u32, TemporalError> {
    let digits = s.get(at..at + len).ok_or(TemporalError::Syntax)?;
    digits.iter().try_fold(0u32, |acc, &d| match d {
        b'0'..=b'9' => Ok(acc * 10 + u32::from(d - b'0')),
        _ => Err(TemporalError::Syntax),
    })
}

fn expect(s: &[u8], at: usize, byte: u8) -> Result<(), TemporalError> {
    if s.get(at) == Some(&byte) { Ok(()) } else { Err(TemporalError::Syntax) }
}

fn is_leap(year: i32) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's era-based algorithm, which
/// is exact for every proleptic Gregorian date without loops or tables.
fn civil_from_days(days: i64) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as i32, month, day)
}

/// The inverse of [`civil_from_days`].
fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Appends `.fraction` with at least `scale` digits (more only if the value needs them), so
/// values of one column all have the same width and their text sorts in time order.
fn write_fraction(out: &mut String, nanos: u32, scale: u8) {
    let mut digits = 9usize;
    let mut n = nanos;
    while digits > usize::from(scale.min(9)) && n.is_multiple_of(10) && n != 0 {
        n /= 10;
        digits -= 1;
    }
    if nanos == 0 {
        digits = usize::from(scale.min(9));
    }
    if digits > 0 {
        let mut text = [b'0'; 9];
        let mut v = nanos;
        for slot in text.iter_mut().rev() {
            *slot = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.push('.');
        // The digits are ASCII.
        out.push_str(std::str::from_utf8(&text[..digits]).unwrap_or_default());
    }
}

impl Time {
    /// `HH:MM:SS[.fraction]` with a fixed fraction width of `scale` digits.
    pub fn write_fixed(&self, out: &mut String, scale: u8) {
        use std::fmt::Write as _;
        let (h, m, s, nanos) = self.hmsn();
        let _ = write!(out, "{h:02}:{m:02}:{s:02}");
        write_fraction(out, nanos, scale);
    }
}

impl DateTime {
    /// `YYYY-MM-DD HH:MM:SS[.fraction]` with a fixed fraction width of `scale` digits.
    pub fn write_fixed(&self, out: &mut String, scale: u8) {
        use std::fmt::Write as _;
        let _ = write!(out, "{} ", self.date);
        self.time.write_fixed(out, scale);
    }
}

impl DateTimeOffset {
    /// `YYYY-MM-DD HH:MM:SS[.fraction] ±HH:MM` (SQL Server's literal form).
    pub fn write_fixed(&self, out: &mut String, scale: u8) {
        use std::fmt::Write as _;
        self.local.write_fixed(out, scale);
        let sign = if self.offset_minutes < 0 { '-' } else { '+' };
        let abs = self.offset_minutes.unsigned_abs();
        let _ = write!(out, " {sign}{:02}:{:02}", abs / 60, abs % 60);
    }
}

impl fmt::Display for Date {
    /// `YYYY-MM-DD`, years below 1000 zero-padded, negative years signed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        if y < 0 { write!(f, "-{:04}-{m:02}-{d:02}", -i64::from(y)) } else { write!(f, "{y:04}-{m:02}-{d:02}") }
    }
}

impl fmt::Display for Time {
    /// `HH:MM:SS[.fraction]` with trailing zeros of the fraction dropped, so a value prints
    /// the same whichever precision the connector used to carry it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (h, m, s, nanos) = self.hmsn();
        write!(f, "{h:02}:{m:02}:{s:02}")?;
        if nanos != 0 {
            let mut digits = format!("{nanos:09}");
            while digits.ends_with('0') {
                digits.pop();
            }
            write!(f, ".{digits}")?;
        }
        Ok(())
    }
}

impl fmt::Display for DateTime {
    /// `YYYY-MM-DDTHH:MM:SS[.fraction]`, no zone.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}T{}", self.date, self.time)
    }
}

impl fmt::Display for DateTimeOffset {
    /// The local time followed by `±HH:MM` (UTC prints as `+00:00`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.offset_minutes < 0 { '-' } else { '+' };
        let abs = self.offset_minutes.unsigned_abs();
        write!(f, "{}{sign}{:02}:{:02}", self.local, abs / 60, abs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trips_across_the_whole_sql_server_range() {
        for days in (-719_162..=2_932_896).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(Date(0).to_string(), "1970-01-01");
        assert_eq!(Date(-719_162).to_string(), "0001-01-01");
        assert_eq!(Date(2_932_896).to_string(), "9999-12-31");
        // 1752-09-14: before SQL Server's `datetime` range, fine for `date`/`datetime2`.
        assert_eq!(Date::from_ymd(1752, 9, 14).unwrap().to_string(), "1752-09-14");
        assert_eq!(Date::from_ymd(1899, 12, 31).unwrap().0, -25_568);
    }

    #[test]
    fn timestamps_keep_100ns_and_negative_epochs() {
        // 2024-12-16T21:02:07 as NanoTimestamp, plus 123.4567 ms.
        let dt = DateTime::from_epoch_units(1_734_382_927_123_456_700, 1).unwrap();
        assert_eq!(dt.to_string(), "2024-12-16T21:02:07.1234567");
        // One tick of 100 ns before the epoch.
        let before = DateTime::from_epoch_units(-1, 1_000).unwrap();
        assert_eq!(before.to_string(), "1969-12-31T23:59:59.999999");
        // Year 0001 in microseconds fits easily.
        let first = DateTime::from_epoch_units(-62_135_596_800_000_000, 1_000).unwrap();
        assert_eq!(first.to_string(), "0001-01-01T00:00:00");
    }

    #[test]
    fn times_of_day() {
        assert_eq!(Time::from_units(75_723_000_000_000, 1).unwrap().to_string(), "21:02:03");
        assert_eq!(Time::from_units(75_724_500, 1_000_000).unwrap().to_string(), "21:02:04.5");
        assert_eq!(Time::from_units(86_400_000, 1_000_000), Err(TemporalError::TimeOfDay));
        assert_eq!(Time::from_units(-1, 1), Err(TemporalError::TimeOfDay));
    }

    #[test]
    fn fixed_width_text_sorts() {
        let mut out = String::new();
        DateTime::from_epoch_units(1_734_382_927_100_000_000, 1).unwrap().write_fixed(&mut out, 7);
        assert_eq!(out, "2024-12-16 21:02:07.1000000");
        out.clear();
        DateTime::from_epoch_units(0, 1).unwrap().write_fixed(&mut out, 3);
        assert_eq!(out, "1970-01-01 00:00:00.000");
        out.clear();
        Time(1).write_fixed(&mut out, 0);
        assert_eq!(out, "00:00:00.000000001", "never drops precision the value has");
        out.clear();
        Time(0).write_fixed(&mut out, 0);
        assert_eq!(out, "00:00:00");
        out.clear();
        DateTimeOffset::parse("2024-01-02T03:04:05.5-09:30").unwrap().write_fixed(&mut out, 7);
        assert_eq!(out, "2024-01-02 03:04:05.5000000 -09:30");
    }

    #[test]
    fn offsets_are_kept() {
        let v = DateTimeOffset::parse("2019-03-28T09:55:24.1234567+01:00").unwrap();
        assert_eq!(v.to_string(), "2019-03-28T09:55:24.1234567+01:00");
        assert_eq!(
            DateTimeOffset::parse("2024-12-16T21:02:09.799Z").unwrap().to_string(),
            "2024-12-16T21:02:09.799+00:00"
        );
        assert_eq!(DateTimeOffset::parse("0001-01-01T00:00:00-14:00").unwrap().offset_minutes, -840);
        for bad in ["2019-02-30T00:00:00Z", "2019-01-01T00:00:00", "2019-01-01T25:00:00Z", "2019-01-01T00:00:00.Z", "x"]
        {
            assert!(DateTimeOffset::parse(bad).is_err(), "{bad}");
        }
        assert!(validate_zoned_time("10:15:30.5+02:00").is_ok());
        assert!(validate_zoned_time("10:15").is_err());
    }
}
