//! Per-table progress bars (rows, rows/s, ETA) while `sync` loads the initial snapshot, drawn
//! on stderr only when it is a terminal; services and pipes get the log lines instead.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use dbmirror::pipeline::{ProgressHook, SyncSummary};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One table's bar: rows applied so far against the cloud's estimate (`None`: unknown, the
/// bar counts without an end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarState {
    pub rows: u64,
    pub of: Option<u64>,
}

/// Row estimates per table from the cloud's `GET schema` reply (`approx_rows`).
pub fn estimates(schema: &dbmirror::protocol::SchemaReply) -> BTreeMap<String, u64> {
    schema.tables.iter().map(|t| (t.table.clone(), t.approx_rows)).collect()
}

/// Whether every table with an estimate has reached it (the snapshot is in, even while the
/// source keeps changing and the stream is never idle).
pub fn all_loaded(summary: &SyncSummary, estimates: &BTreeMap<String, u64>) -> bool {
    !estimates.is_empty() && estimates.iter().all(|(t, n)| summary.rows_total.get(t).copied().unwrap_or(0) >= *n)
}

/// What each bar shows for a run so far. Changes applied on top of the snapshot can push a
/// table past its estimate; the bar then stops at its end rather than overflowing.
pub fn bar_states(summary: &SyncSummary, estimates: &BTreeMap<String, u64>) -> BTreeMap<String, BarState> {
    summary
        .rows_total
        .iter()
        .filter(|(table, _)| !table.ends_with(dbmirror::schema::SHADOW_SUFFIX))
        .map(|(table, rows)| {
            let of = estimates.get(table).copied().filter(|n| *n > 0);
            (table.clone(), BarState { rows: of.map_or(*rows, |n| (*rows).min(n)), of })
        })
        .collect()
}

struct Bars {
    multi: MultiProgress,
    bars: BTreeMap<String, (ProgressBar, Instant)>,
    finished: bool,
    started: Instant,
}

fn style(known: bool) -> ProgressStyle {
    let template = if known {
        "{prefix:<24} [{bar:24}] {pos:>9}/{len:<9} {msg}"
    } else {
        "{prefix:<24} {spinner:^26} {pos:>9} rows    {msg}"
    };
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ")
}

/// `rows/s` since the table's first rows, and the time left at that rate (when the total is known).
pub fn rate_and_eta(s: BarState, seconds: f64) -> String {
    let rate = if seconds > 0.0 { s.rows as f64 / seconds } else { 0.0 };
    let eta = match s.of {
        Some(of) if rate >= 1.0 => {
            let left = ((of.saturating_sub(s.rows)) as f64 / rate).ceil() as u64;
            format!("ETA {}:{:02}", left / 60, left % 60)
        }
        _ => String::new(),
    };
    format!("{rate:>9.0} rows/s  {eta}")
}

/// The hook `sync` passes to the pipeline, or `None` when stderr is not a terminal.
pub fn snapshot_bars(estimates: BTreeMap<String, u64>) -> Option<ProgressHook> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let state = Mutex::new(Bars {
        multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
        bars: BTreeMap::new(),
        finished: false,
        started: Instant::now(),
    });
    Some(ProgressHook(Arc::new(move |summary: &SyncSummary, idle: bool| {
        let Ok(mut bars) = state.lock() else { return };
        if bars.finished {
            return;
        }
        for (table, s) in bar_states(summary, &estimates) {
            let (bar, since) = match bars.bars.get(&table) {
                Some(entry) => entry.clone(),
                None => {
                    let bar = bars.multi.add(ProgressBar::new(s.of.unwrap_or(0)));
                    bar.set_style(style(s.of.is_some()));
                    bar.set_prefix(table.clone());
                    // The rows that made the bar appear took about one fetch cycle.
                    let since = Instant::now() - std::time::Duration::from_millis(200);
                    bars.bars.insert(table.clone(), (bar.clone(), since));
                    (bar, since)
                }
            };
            bar.set_position(s.rows);
            bar.set_message(rate_and_eta(s, since.elapsed().as_secs_f64()));
        }
        // Caught up: the snapshot is in; streaming continues with log lines only.
        if idle || all_loaded(summary, &estimates) {
            for (bar, _) in bars.bars.values() {
                bar.finish();
            }
            let total: u64 = summary.rows_total.values().sum();
            let _ = bars.multi.println(format!(
                "initial snapshot loaded: {total} rows in {:.1} s; streaming changes",
                bars.started.elapsed().as_secs_f64()
            ));
            bars.finished = true;
        }
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_follow_rows_and_stop_at_the_estimate() {
        let mut summary = SyncSummary::default();
        summary.rows_total.insert("crm7.person".into(), 40);
        summary.rows_total.insert("crm7.contact".into(), 500);
        summary.rows_total.insert("crm7.person__resync".into(), 7);
        summary.rows_total.insert("crm7.new".into(), 3);
        let estimates: BTreeMap<String, u64> =
            [("crm7.person".into(), 100), ("crm7.contact".into(), 450), ("crm7.new".into(), 0)].into();
        let states = bar_states(&summary, &estimates);
        assert_eq!(states["crm7.person"], BarState { rows: 40, of: Some(100) });
        assert_eq!(states["crm7.contact"], BarState { rows: 450, of: Some(450) });
        assert_eq!(states["crm7.new"], BarState { rows: 3, of: None });
        assert!(!states.contains_key("crm7.person__resync"), "shadows have no bar of their own");
        assert!(!all_loaded(&summary, &estimates), "person is at 40 of 100");
        summary.rows_total.insert("crm7.person".into(), 100);
        assert!(all_loaded(&summary, &estimates));
        assert_eq!(rate_and_eta(BarState { rows: 100, of: Some(700) }, 2.0), "       50 rows/s  ETA 0:12");
        assert_eq!(rate_and_eta(BarState { rows: 3, of: None }, 1.0), "        3 rows/s  ");
    }
}
