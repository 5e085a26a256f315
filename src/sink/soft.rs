//! The statements of soft tables that every target shares, for its quoting and literals:
//! flagging every live row (a truncate), and the resync swap, which for a soft table keeps
//! the rows the fresh snapshot no longer has (flagged deleted) instead of dropping them.

use crate::owner::modes::layout::{DELETED, DELETED_AT, is_soft};
use crate::schema::TableSchema;
use crate::sink::shadow::copy_back_sql;

/// A target's spelling of what soft statements need.
#[derive(Debug, Clone, Copy)]
pub struct Dialect {
    /// Quotes an identifier.
    pub quote: fn(&str) -> String,
    /// The flag's true and false literals.
    pub yes: &'static str,
    /// See `yes`.
    pub no: &'static str,
    /// The current UTC time as a `datetime2(3)` value.
    pub now: &'static str,
    /// Wraps a `YYYY-MM-DD HH:MM:SS.fff` text literal into the time type (`{}` is the literal).
    pub time: fn(&str) -> String,
}

impl Dialect {
    /// `_deleted = true, _deleted_at = <at>`: what flagging a row sets.
    pub fn flag(&self, at: &str) -> String {
        format!("{} = {}, {} = {at}", (self.quote)(DELETED), self.yes, (self.quote)(DELETED_AT))
    }

    /// `_deleted = false` on `alias` (empty: unqualified): rows still live.
    pub fn live(&self, alias: &str) -> String {
        let dot = if alias.is_empty() { "" } else { "." };
        format!("{alias}{dot}{} = {}", (self.quote)(DELETED), self.no)
    }

    /// The `_deleted_at` literal of `batch`'s soft deletes in a table laid out by `schema`;
    /// `None` when the table is not soft (its deletes delete).
    pub fn delete_time(&self, schema: &TableSchema, batch: &crate::coalesce::Batch) -> Option<String> {
        is_soft(schema).then(|| self.at(&crate::owner::modes::deleted_at(batch)))
    }

    /// A source time as a literal of the time type.
    pub fn at(&self, time: &crate::value::DateTime) -> String {
        let mut text = String::new();
        time.write_fixed(&mut text, 3);
        (self.time)(&format!("'{text}'"))
    }

    /// Flags every live row of `target` (a truncate of a soft table).
    pub fn flag_all(&self, target: &str, at: &str) -> String {
        format!("UPDATE {target} SET {} WHERE {}", self.flag(at), self.live(""))
    }

    /// The resync swap of a table laid out by `schema` (`live`, `shadow` quoted). A soft
    /// table's live rows the shadow lacks are flagged deleted now, the shadow's rows replace
    /// the rest; any other table's rows are all replaced ([`copy_back_sql`]). The shadow is
    /// dropped.
    pub fn swap(&self, live: &str, shadow: &str, schema: &TableSchema) -> String {
        let q = self.quote;
        let columns: Vec<String> = schema.columns.iter().map(|c| q(&c.name)).collect();
        if !is_soft(schema) {
            return copy_back_sql(live, shadow, &columns);
        }
        let columns = columns.join(", ");
        let same_key: Vec<String> = schema.primary_key.iter().map(|k| format!("s.{0} = {live}.{0}", q(k))).collect();
        let in_shadow = format!("EXISTS (SELECT 1 FROM {shadow} s WHERE {})", same_key.join(" AND "));
        format!(
            "UPDATE {live} SET {flag} WHERE {still} AND NOT {in_shadow}; \
             DELETE FROM {live} WHERE {in_shadow}; \
             INSERT INTO {live} ({columns}) SELECT {columns} FROM {shadow}; \
             DROP TABLE {shadow}",
            flag = self.flag(self.now),
            still = self.live(""),
        )
    }
}
