//! Wall-clock time for both sides: token lifetimes, the `Date` header, and the times kept in
//! session facts. One place reads the system clock, so the client does not borrow the
//! reference cloud's clock and tests know where time comes from.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// `Tue, 24 Nov 2026 06:20:01 GMT` for the `Date` header.
pub fn http_date(epoch_secs: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = epoch_secs.div_euclid(86_400);
    let secs = epoch_secs.rem_euclid(86_400);
    let (y, m, d) = crate::value::Date::from_days(days).map(|d| d.ymd()).unwrap_or((1970, 1, 1));
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Parses an HTTP date (`Tue, 24 Nov 2026 06:20:01 GMT`) to ms since the epoch.
pub fn parse_http_date(text: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let mut parts = text.split_whitespace().skip(1);
    let day: u32 = parts.next()?.parse().ok()?;
    let month_name = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == month_name)? as u32 + 1;
    let year: i32 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    let date = crate::value::Date::from_ymd(year, month, day).ok()?;
    Some((i64::from(date.0) * 86_400 + h * 3600 + m * 60 + s) * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_round_trip() {
        let secs = 1_795_501_201;
        assert_eq!(parse_http_date(&http_date(secs)), Some(secs * 1000));
        assert_eq!(parse_http_date("Tue, 24 Nov 2026 06:20:01 GMT"), Some(1_795_501_201_000));
        assert_eq!(parse_http_date("garbage"), None);
    }
}
