//! How the modes lay tables out: the soft-delete columns and the history tables.
//!
//! A soft table is the source's columns plus `_deleted` and `_deleted_at`. Columns the source
//! adds later are appended after them, so the replica only ever sees an `ALTER … ADD`, as for
//! any other table.
//!
//! A history table (`<table>_history`) starts with the change's metadata — `_op` (`c`, `u`,
//! `d`, `r`), `_source_ts`, `_commit_lsn`, `_change_lsn`, `_seq` — followed by the source's
//! columns. Its primary key is the change's identity (`_commit_lsn`, `_change_lsn`, `_seq`)
//! plus the row's key, so writing a change twice (a batch replayed after a crash) leaves one
//! row. It only grows: a column the source drops stays (NULL from then on), one it adds is
//! appended. A column whose type changes cannot be kept in place: the old history table is
//! renamed `<table>_history_<yyyymmdd_hhmmss>` (UTC) (kept, never written again) and a new one started.

use crate::coalesce::Logged;
use crate::row::{Cell, OwnedRow, PrimaryKey};
use crate::schema::{ColumnSchema, SchemaDiff, SqlType, TableId, TableSchema};

/// The soft-delete flag column.
pub const DELETED: &str = "_deleted";
/// The soft-delete time column.
pub const DELETED_AT: &str = "_deleted_at";
/// The suffix of history tables' names.
pub const HISTORY_SUFFIX: &str = "_history";
/// The history tables' metadata columns, in order.
pub const HISTORY_META: [&str; 5] = ["_op", "_source_ts", "_commit_lsn", "_change_lsn", "_seq"];
/// The type of `_deleted_at` and `_source_ts`.
pub const TIME_TYPE: SqlType = SqlType::DateTime2 { scale: 3 };

fn column(name: &str, sql_type: SqlType, nullable: bool, position: usize) -> ColumnSchema {
    ColumnSchema {
        name: name.to_owned(),
        sql_type,
        type_name: sql_type.to_string(),
        position: position as u32,
        nullable,
        identity: false,
        default_expression: None,
    }
}

/// True when a replica table has the soft-delete columns.
pub fn is_soft(schema: &TableSchema) -> bool {
    schema.column(DELETED).is_some()
}

/// Where a soft table's `_deleted` and `_deleted_at` are among its columns.
pub fn soft_positions(schema: &TableSchema) -> Option<(usize, usize)> {
    let find = |name| schema.columns.iter().position(|c| c.name == name);
    Some((find(DELETED)?, find(DELETED_AT)?))
}

/// The source's view of a soft table: without the soft-delete columns.
pub fn strip_soft(schema: &TableSchema) -> TableSchema {
    let columns = schema.columns.iter().filter(|c| c.name != DELETED && c.name != DELETED_AT).cloned().collect();
    TableSchema { columns, ..schema.clone() }
}

/// The soft layout of `source`, continuing `existing` (the replica's soft table) when the
/// source only added columns. Fails when the source itself has a column of those names.
pub fn soft_layout(
    source: &TableSchema,
    existing: Option<&TableSchema>,
) -> Result<TableSchema, crate::owner::RuleConflict> {
    if let Some(taken) = [DELETED, DELETED_AT].into_iter().find(|name| source.column(name).is_some()) {
        return Err(crate::owner::RuleConflict::SoftColumnTaken(taken));
    }
    if let Some(existing) = existing.filter(|e| is_soft(e)) {
        match strip_soft(existing).diff(source) {
            SchemaDiff::Same => return Ok(TableSchema { id: source.id.clone(), ..existing.clone() }),
            SchemaDiff::AddColumns(added) => {
                let mut grown = existing.clone();
                for c in added {
                    grown.columns.push(ColumnSchema { position: grown.columns.len() as u32 + 1, ..c });
                }
                return Ok(TableSchema { id: source.id.clone(), ..grown });
            }
            SchemaDiff::Incompatible => {}
        }
    }
    let mut columns = source.columns.clone();
    columns.push(column(DELETED, SqlType::Bit, false, columns.len() + 1));
    columns.push(column(DELETED_AT, TIME_TYPE, true, columns.len() + 1));
    Ok(TableSchema { columns, ..source.clone() })
}

/// Where each of a replica layout's columns comes from in the source's row: `None` for a
/// column the source does not have (a soft column, a history column the source dropped).
pub fn slots(layout: &[ColumnSchema], source: &TableSchema) -> Vec<Option<usize>> {
    layout.iter().map(|c| source.columns.iter().position(|s| s.name == c.name)).collect()
}

/// A source row laid out as a live soft row (`_deleted` false, `_deleted_at` NULL).
pub fn soft_row(layout: &TableSchema, slots: &[Option<usize>], row: &[Cell]) -> OwnedRow {
    layout
        .columns
        .iter()
        .zip(slots)
        .map(|(c, slot)| match slot {
            Some(i) => row.get(*i).cloned().unwrap_or(Cell::Null),
            None if c.name == DELETED => Cell::Bool(false),
            None => Cell::Null,
        })
        .collect()
}

/// The history table of a table.
pub fn history_id(id: &TableId) -> TableId {
    TableId::new(id.schema.clone(), format!("{}{HISTORY_SUFFIX}", id.table))
}

/// True when a replica table is a history table (by its layout, so one kept after its table
/// went back to `Hard` is still known for what it is).
pub fn is_history(schema: &TableSchema) -> bool {
    schema.columns.iter().map(|c| c.name.as_str()).take(HISTORY_META.len()).eq(HISTORY_META)
        && schema.primary_key.first().is_some_and(|k| k == HISTORY_META[2])
}

/// The history layout for `source`, continuing `existing` when it can hold it. The flag says
/// the existing one cannot (a column's type changed, or the key did): it is to be retired.
pub fn history_layout(source: &TableSchema, existing: Option<&TableSchema>) -> (TableSchema, bool) {
    let fresh = || {
        let meta = [
            (HISTORY_META[0], SqlType::Char(Some(1)), false),
            (HISTORY_META[1], TIME_TYPE, true),
            (HISTORY_META[2], SqlType::VarChar(Some(64)), false),
            (HISTORY_META[3], SqlType::VarChar(Some(64)), false),
            (HISTORY_META[4], SqlType::BigInt, false),
        ];
        let mut columns: Vec<ColumnSchema> =
            meta.iter().enumerate().map(|(i, (n, t, null))| column(n, *t, *null, i + 1)).collect();
        columns.extend(source.columns.iter().map(|c| ColumnSchema {
            nullable: c.nullable || !source.primary_key.contains(&c.name),
            identity: false,
            default_expression: None,
            ..c.clone()
        }));
        renumber(&mut columns);
        let primary_key = HISTORY_META[2..].iter().map(|s| (*s).to_owned()).chain(source.primary_key.clone()).collect();
        TableSchema { id: history_id(&source.id), columns, primary_key }
    };
    let Some(existing) = existing else { return (fresh(), false) };
    let key_kept = existing.primary_key[HISTORY_META.len() - 2..] == source.primary_key[..];
    let types_kept = source
        .columns
        .iter()
        .all(|c| existing.column(&c.name).is_none_or(|e| e.sql_type == c.sql_type && e.type_name == c.type_name));
    if !key_kept || !types_kept {
        return (fresh(), true);
    }
    let mut grown = existing.clone();
    for c in source.columns.iter().filter(|c| existing.column(&c.name).is_none()) {
        grown.columns.push(ColumnSchema { nullable: true, identity: false, default_expression: None, ..c.clone() });
    }
    renumber(&mut grown.columns);
    (grown, false)
}

fn renumber(columns: &mut [ColumnSchema]) {
    columns.iter_mut().enumerate().for_each(|(i, c)| c.position = i as u32 + 1);
}

/// One logged change as a history row and its key, for a history `layout` whose source
/// columns come from `slots` (see [`slots`]).
pub fn history_row(layout: &TableSchema, slots: &[Option<usize>], logged: &Logged) -> (PrimaryKey, OwnedRow) {
    // Changes without LSNs (not SQL Server's) are identified by where they sit in the log.
    let position = || logged.position.map_or_else(String::new, |(p, o)| format!("offset:{p}:{o}"));
    let commit = logged.commit_lsn.as_deref().map_or_else(position, str::to_owned);
    let meta = [
        Cell::Text(logged.op.code().into()),
        logged
            .source_ms
            .and_then(|ms| crate::value::DateTime::from_epoch_units(ms, 1_000_000).ok())
            .map_or(Cell::Null, Cell::DateTime),
        Cell::Text(commit.into()),
        Cell::Text(logged.change_lsn.as_deref().unwrap_or_default().into()),
        Cell::Int(logged.serial.unwrap_or(0)),
    ];
    let row: OwnedRow = meta
        .iter()
        .cloned()
        .chain(
            slots[HISTORY_META.len()..]
                .iter()
                .map(|slot| slot.and_then(|i| logged.row.get(i).cloned()).unwrap_or(Cell::Null)),
        )
        .collect();
    let key_cells = layout.primary_key.iter().map(|k| {
        let i = layout.columns.iter().position(|c| &c.name == k).unwrap_or(0);
        row[i].clone()
    });
    (key_cells.collect(), row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::TableId;

    fn table(columns: &[(&str, SqlType)]) -> TableSchema {
        TableSchema {
            id: TableId::new("crm7", "person"),
            columns: columns.iter().enumerate().map(|(i, (n, t))| column(n, *t, *n != "id", i + 1)).collect(),
            primary_key: vec!["id".into()],
        }
    }

    #[test]
    fn soft_tables_grow_after_their_flags_and_history_tables_only_grow() {
        let v1 = table(&[("id", SqlType::Int), ("name", SqlType::NVarChar(Some(50)))]);
        let soft = soft_layout(&v1, None).unwrap();
        assert_eq!(
            soft.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["id", "name", DELETED, DELETED_AT]
        );
        let v2 =
            table(&[("id", SqlType::Int), ("name", SqlType::NVarChar(Some(50))), ("email", SqlType::NVarChar(None))]);
        let grown = soft_layout(&v2, Some(&soft)).unwrap();
        assert!(matches!(soft.diff(&grown), SchemaDiff::AddColumns(ref a) if a[0].name == "email"));
        assert_eq!(strip_soft(&grown).columns.len(), 3);

        let (history, retire) = history_layout(&v1, None);
        assert!(!retire && is_history(&history));
        assert_eq!(history.primary_key, ["_commit_lsn", "_change_lsn", "_seq", "id"]);
        let v3 = table(&[("id", SqlType::Int), ("email", SqlType::NVarChar(None))]);
        let (grown, retire) = history_layout(&v3, Some(&history));
        assert!(!retire);
        assert!(matches!(history.diff(&grown), SchemaDiff::AddColumns(ref a) if a.len() == 1 && a[0].name == "email"));
        let v4 = table(&[("id", SqlType::Int), ("name", SqlType::Int)]);
        assert!(history_layout(&v4, Some(&grown)).1, "a changed type retires the history table");
        assert!(soft_layout(&table(&[("id", SqlType::Int), ("_deleted", SqlType::Bit)]), None).is_err());
    }
}
