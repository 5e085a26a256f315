//! The last hour, minute by minute: records applied and the lag, for the charts the status
//! pages draw (`GET /history.json`). Kept in memory by the running process (a restart starts
//! an empty hour): the replica keeps what must survive, this is what people glance at.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// Minutes kept, and shown.
pub const MINUTES: usize = 60;
const MINUTE_MS: i64 = 60_000;

/// One minute's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Minute {
    /// Minutes since the epoch.
    at: i64,
    records: u64,
    /// The largest lag seen in the minute (seconds); `None` when none was measured.
    lag_seconds: Option<f64>,
}

/// Records applied and lag per minute over the last hour (see the module docs).
#[derive(Debug, Default)]
pub struct History {
    minutes: Mutex<VecDeque<Minute>>,
}

/// The last hour as the pages draw it: one entry per minute, oldest first, the current
/// minute last; a minute in which nothing was measured has no lag (`null`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chart {
    /// The start of the first minute (ms since the epoch).
    pub from_ms: i64,
    /// Records applied in each minute.
    pub records: Vec<u64>,
    /// The largest lag in each minute (seconds).
    pub lag_seconds: Vec<Option<f64>>,
}

impl History {
    /// `records` applied at `now_ms`.
    pub fn records(&self, records: u64, now_ms: i64) {
        self.with_minute(now_ms, |m| m.records += records);
    }

    /// A lag of `seconds` measured at `now_ms` (the minute keeps its largest).
    pub fn lag(&self, seconds: f64, now_ms: i64) {
        self.with_minute(now_ms, |m| m.lag_seconds = Some(m.lag_seconds.map_or(seconds, |s| s.max(seconds))));
    }

    fn with_minute(&self, now_ms: i64, update: impl FnOnce(&mut Minute)) {
        let at = now_ms.div_euclid(MINUTE_MS);
        let mut minutes = self.minutes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // A clock set back leaves the minute it left behind alone: the figure goes to the
        // newest minute kept instead of a minute out of order.
        if minutes.back().is_none_or(|m| m.at < at) {
            minutes.push_back(Minute { at, records: 0, lag_seconds: None });
            while minutes.len() > MINUTES {
                minutes.pop_front();
            }
        }
        if let Some(minute) = minutes.back_mut() {
            update(minute);
        }
    }

    /// The hour up to `now_ms`.
    pub fn last_hour(&self, now_ms: i64) -> Chart {
        let last = now_ms.div_euclid(MINUTE_MS);
        let first = last - MINUTES as i64 + 1;
        let minutes = self.minutes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut chart =
            Chart { from_ms: first * MINUTE_MS, records: vec![0; MINUTES], lag_seconds: vec![None; MINUTES] };
        for m in minutes.iter().filter(|m| (first..=last).contains(&m.at)) {
            let i = (m.at - first) as usize;
            chart.records[i] = m.records;
            chart.lag_seconds[i] = m.lag_seconds;
        }
        chart
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_800_000_000_000; // a minute boundary (divisible by 60,000)

    #[test]
    fn figures_go_to_their_minute_and_the_hour_ends_now() {
        let h = History::default();
        h.records(5, T);
        h.records(7, T + 59_999);
        h.lag(2.0, T + 1_000);
        h.lag(0.5, T + 2_000);
        h.records(1, T + 60_000);
        let chart = h.last_hour(T + 60_000);
        assert_eq!(chart.records.len(), MINUTES);
        assert_eq!(chart.from_ms, T + 60_000 - 59 * 60_000);
        assert_eq!(&chart.records[MINUTES - 2..], &[12, 1]);
        assert_eq!(&chart.lag_seconds[MINUTES - 2..], &[Some(2.0), None], "a minute keeps its largest lag");
        assert!(chart.records[..MINUTES - 2].iter().all(|&r| r == 0));
    }

    #[test]
    fn only_the_last_hour_is_kept_and_shown() {
        let h = History::default();
        for minute in 0..90 {
            h.records(minute as u64 + 1, T + minute * 60_000);
        }
        assert_eq!(h.minutes.lock().unwrap().len(), MINUTES);
        let chart = h.last_hour(T + 89 * 60_000);
        assert_eq!(chart.records.first(), Some(&31));
        assert_eq!(chart.records.last(), Some(&90));
        // An hour later with nothing new, the chart is empty.
        let later = h.last_hour(T + 150 * 60_000);
        assert!(later.records.iter().all(|&r| r == 0) && later.lag_seconds.iter().all(Option::is_none));
    }

    #[test]
    fn a_clock_set_back_does_not_reorder_the_minutes() {
        let h = History::default();
        h.records(1, T + 120_000);
        h.records(2, T);
        let chart = h.last_hour(T + 120_000);
        assert_eq!(chart.records.last(), Some(&3));
        assert_eq!(h.minutes.lock().unwrap().len(), 1);
    }
}
