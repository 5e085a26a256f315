//! The writer fence: whoever writes a replica proves, inside the transaction of each write,
//! that it is still the replica's writer.
//!
//! A claim (an advisory lock, an OS file lock, an instance lock file) decides who *should*
//! write, but it can be lost without the holder noticing: a database restart ends the session
//! that held an advisory lock while its holder is still retrying a batch it fetched before.
//! Another process then claims the tenant and commits newer records, and the first one's
//! retry would commit its older batch over them. So a writer also takes an **epoch**: the
//! `writer_epoch` row of `_ReplicationState` (scope `session`) is raised by one in a
//! transaction of its own when a run starts ([`claim`]), and every later write transaction
//! of that run first reads the row with a lock held to its commit ([`check`]): a differing
//! epoch rolls the transaction back with [`SinkError::Superseded`], and the run ends.
//!
//! Why that is enough: the claim's update and each check lock the same row, so they are
//! ordered. A write ordered before the claim committed before the new writer read the
//! offsets it resumes from; a write ordered after it sees the new epoch and changes nothing.
//! No older batch can land after a newer writer started. Handles without a fence (owner
//! commands such as `resync-tables`, tests) do not check.

use std::collections::HashMap;

use super::TableRecord;
use super::table::{Cell, Column, Param, StateExec, StateStatements};
use crate::db::SinkError;
use crate::schema::TableId;

/// The session fact holding the writer epoch (`int_value`) and who took it (`text_value`).
pub const WRITER_EPOCH: &str = "writer_epoch";

/// The epoch a run took: every write transaction of the run proves it is still current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// The `writer_epoch` this run set.
    pub epoch: i64,
}

/// One target's writer statements (parameters as each field's doc gives).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterStatements {
    /// Raises the epoch by one (inserting it as 1): who takes it.
    pub claim: String,
    /// Selects `int_value, text_value` of the epoch row (no lock).
    pub select: String,
    /// Selects `int_value` of the epoch row with a lock that a [`WriterStatements::claim`]
    /// must wait for until the transaction ends; no parameters.
    pub check: String,
}

impl WriterStatements {
    /// The statements in the `INSERT … ON CONFLICT` dialects (SQLite, PostgreSQL): the state
    /// table `state` (quoted), the holder's parameter, the dialect's current time, and how
    /// the check holds its lock: `check(state, predicate)`.
    pub fn on_conflict(state: &str, param: &str, now: &str, check: impl Fn(&str, &str) -> String) -> Self {
        let row = format!("scope = 'session' AND name = '{WRITER_EPOCH}'");
        WriterStatements {
            claim: format!(
                "INSERT INTO {state} (scope, name, text_value, int_value, updated_at) \
                 VALUES ('session', '{WRITER_EPOCH}', {param}, 1, {now}) ON CONFLICT (scope, name) DO UPDATE SET \
                 int_value = COALESCE({state}.int_value, 0) + 1, text_value = excluded.text_value, \
                 updated_at = excluded.updated_at"
            ),
            select: format!("SELECT int_value, text_value FROM {state} WHERE {row}"),
            check: check(state, &row),
        }
    }
}

/// Takes the writer epoch for `holder` (e.g. `host-a/4242`) in a transaction of its own, and
/// reads the table records in it: what the run starts from is what the replica held when
/// the run became its writer.
pub fn claim(
    exec: &mut dyn StateExec,
    sql: &StateStatements,
    holder: &str,
) -> Result<(Fence, HashMap<TableId, TableRecord>), SinkError> {
    exec.begin()?;
    let taken = exec.execute(&sql.writer.claim, &[Param::Text(holder)]).and_then(|()| {
        let (epoch, _) = read(exec, sql)?;
        Ok((epoch, super::table::read_tables(exec, sql)?))
    });
    match taken.and_then(|taken| exec.commit().map(|()| taken)) {
        Ok((Some(epoch), tables)) => Ok((Fence { epoch }, tables)),
        Ok((None, _)) => Err(SinkError::Superseded { ours: 0, stored: None, holder: String::new() }),
        Err(e) => {
            let _ = exec.rollback();
            Err(e)
        }
    }
}

/// The epoch in the first cell of the first row, if any.
fn epoch_of(rows: Vec<Vec<Cell>>) -> (Option<i64>, std::vec::IntoIter<Cell>) {
    let mut cells = rows.into_iter().next().unwrap_or_default().into_iter();
    let epoch = match cells.next() {
        Some(Cell::Int(epoch)) => Some(epoch),
        _ => None,
    };
    (epoch, cells)
}

/// The stored epoch and its holder, if a writer ever claimed the replica.
pub fn read(exec: &mut dyn StateExec, sql: &StateStatements) -> Result<(Option<i64>, String), SinkError> {
    let (epoch, mut rest) = epoch_of(exec.query(&sql.writer.select, &[Column::Int, Column::Text])?);
    Ok((epoch, rest.next().and_then(Cell::text).unwrap_or_default()))
}

/// Proves, first thing inside an open write transaction, that `sql.fence` (when the handle
/// has one) is still the replica's epoch; the lock taken lasts until the transaction ends.
pub fn check(exec: &mut dyn StateExec, sql: &StateStatements) -> Result<(), SinkError> {
    let Some(fence) = sql.fence else { return Ok(()) };
    let (stored, _) = epoch_of(exec.query(&sql.writer.check, &[Column::Int])?);
    if stored == Some(fence.epoch) {
        return Ok(());
    }
    let (_, holder) = read(exec, sql)?;
    Err(SinkError::Superseded { ours: fence.epoch, stored, holder })
}

/// This process as a writer is named (`host/pid`): in the epoch row and a partner's pass records.
pub fn this_process() -> String {
    let host = ["HOSTNAME", "COMPUTERNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|h| !h.is_empty()))
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_owned()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!("{host}/{}", std::process::id())
}
