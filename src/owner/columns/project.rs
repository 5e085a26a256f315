//! One table's rules applied to its schema, rows and keys.

use std::sync::Arc;

use super::{ColumnRules, TableRules, Treatment};
use crate::canonical::canonical;
use crate::row::{Cell, OwnedRow, PrimaryKey};
use crate::schema::{ColumnSchema, SqlType, TableSchema};

/// What becomes of one kept column.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kept {
    Copy,
    Hash(SqlType),
    Fixed(Box<str>),
}

/// A table's layout in the replica under its rules, and how to get there from the source's.
#[derive(Debug, Clone)]
pub struct Projection {
    /// The replica's layout: excluded columns left out, hashed and fixed ones as text.
    pub schema: Arc<TableSchema>,
    /// Per replica column: its source column and what is done to it.
    columns: Vec<(usize, Kept)>,
    /// Per key column (in key order): whether it is hashed, and its source type.
    key: Vec<Option<SqlType>>,
}

impl Projection {
    /// The projection of `source` under `rules`. A key column may be hashed, never excluded
    /// or fixed (rows would lose their identity); rules naming no column of the table are
    /// ignored (the column may come later).
    pub fn new(source: &TableSchema, rules: &TableRules) -> Result<Self, crate::owner::RuleConflict> {
        let mut columns = Vec::new();
        let mut kept = Vec::new();
        for (i, column) in source.columns.iter().enumerate() {
            let is_key = source.primary_key.contains(&column.name);
            let treatment = rules.iter().find(|(name, _)| name.eq_ignore_ascii_case(&column.name)).map(|(_, t)| t);
            let (how, sql_type) = match treatment {
                None => (Kept::Copy, column.sql_type),
                Some(Treatment::Exclude | Treatment::Fixed(_)) if is_key => {
                    return Err(crate::owner::RuleConflict::KeyColumn {
                        table: source.id.to_string(),
                        column: column.name.clone(),
                    });
                }
                Some(Treatment::Exclude) => continue,
                Some(Treatment::Hash) => (Kept::Hash(column.sql_type), SqlType::NVarChar(Some(64))),
                Some(Treatment::Fixed(value)) => (Kept::Fixed(value.as_str().into()), SqlType::NVarChar(None)),
            };
            let type_name = if sql_type == column.sql_type { column.type_name.clone() } else { sql_type.to_string() };
            kept.push(ColumnSchema { sql_type, type_name, default_expression: None, ..column.clone() });
            if how == Kept::Copy {
                kept.last_mut().expect("just pushed").default_expression.clone_from(&column.default_expression);
            }
            columns.push((i, how));
        }
        let key = source
            .primary_key
            .iter()
            .map(|name| {
                let hashed = matches!(
                    rules.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, t)| t),
                    Some(Treatment::Hash)
                );
                hashed.then(|| source.column(name).map_or(SqlType::Other, |c| c.sql_type))
            })
            .collect();
        let schema = TableSchema { columns: kept, ..source.clone() };
        Ok(Projection { schema: Arc::new(schema), columns, key })
    }

    /// Whether the rules change nothing in this table (they name none of its columns).
    pub fn is_identity(&self) -> bool {
        self.columns.iter().enumerate().all(|(i, (source, how))| *source == i && *how == Kept::Copy)
            && self.key.iter().all(Option::is_none)
    }

    /// A source row in the replica's layout.
    pub fn row(&self, rules: &ColumnRules, row: &[Cell]) -> OwnedRow {
        self.columns
            .iter()
            .map(|(i, how)| {
                let cell = row.get(*i).unwrap_or(&Cell::Null);
                match how {
                    Kept::Copy => cell.clone(),
                    Kept::Hash(sql) => hashed(rules, cell, *sql),
                    Kept::Fixed(_) if matches!(cell, Cell::Null) => Cell::Null,
                    Kept::Fixed(value) => Cell::Text(value.clone()),
                }
            })
            .collect()
    }

    /// A source key as the replica stores it.
    pub fn key(&self, rules: &ColumnRules, key: &[Cell]) -> PrimaryKey {
        key.iter()
            .zip(&self.key)
            .map(|(cell, hashed_as)| match hashed_as {
                Some(sql) => hashed(rules, cell, *sql),
                None => cell.clone(),
            })
            .collect()
    }
}

fn hashed(rules: &ColumnRules, cell: &Cell, sql: SqlType) -> Cell {
    canonical(cell, sql).map_or(Cell::Null, |text| Cell::Text(rules.hash(&text).into()))
}

#[cfg(test)]
mod tests {
    use super::super::HashKey;
    use super::*;
    use crate::schema::TableId;

    fn person() -> TableSchema {
        let column = |name: &str, sql_type: SqlType, position: u32| ColumnSchema {
            name: name.into(),
            sql_type,
            type_name: sql_type.to_string(),
            position,
            nullable: true,
            identity: false,
            default_expression: None,
        };
        TableSchema {
            id: TableId::new("crm7", "person"),
            columns: vec![
                column("person_id", SqlType::Int, 1),
                column("birthdate", SqlType::Date, 2),
                column("email", SqlType::NVarChar(Some(200)), 3),
                column("phone", SqlType::NVarChar(Some(40)), 4),
                column("lastname", SqlType::NVarChar(Some(50)), 5),
            ],
            primary_key: vec!["person_id".into()],
        }
    }

    #[test]
    fn excluded_columns_go_hashed_and_fixed_become_text_and_keys_hash_alike() {
        let table_rules = TableRules::from([
            ("birthdate".to_owned(), Treatment::Exclude),
            ("email".to_owned(), Treatment::Hash),
            ("PHONE".to_owned(), Treatment::Fixed("hidden".into())),
            ("person_id".to_owned(), Treatment::Hash),
        ]);
        let rules =
            ColumnRules { tables: vec![("crm7.person".into(), table_rules.clone())], key: HashKey::new(vec![7; 32]) };
        let p = Projection::new(&person(), &table_rules).unwrap();
        let names: Vec<&str> = p.schema.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["person_id", "email", "phone", "lastname"]);
        assert_eq!(p.schema.columns[0].sql_type, SqlType::NVarChar(Some(64)));
        assert_eq!(p.schema.columns[3].sql_type, SqlType::NVarChar(Some(50)));
        let row = [
            Cell::Int(42),
            Cell::Null,
            Cell::Text("ann@example.com".into()),
            Cell::Text("+47 555".into()),
            Cell::Text("Berg".into()),
        ];
        let out = p.row(&rules, &row);
        assert_eq!(out.len(), 4);
        assert_eq!(out[0], Cell::Text(rules.hash("42").into()));
        assert_eq!(p.key(&rules, &[Cell::Int(42)])[0], out[0], "the key hashes as its column does");
        assert!(matches!(&out[1], Cell::Text(h) if h.len() == 64 && !h.contains("ann")));
        assert_eq!(out[2], Cell::Text("hidden".into()));
        assert_eq!(out[3], Cell::Text("Berg".into()));
        let nulls = p.row(&rules, &[Cell::Int(1), Cell::Null, Cell::Null, Cell::Null, Cell::Null]);
        assert_eq!(&nulls[1..], &[Cell::Null, Cell::Null, Cell::Null], "NULL stays NULL");
    }

    #[test]
    fn a_key_column_cannot_be_excluded_or_fixed() {
        for treatment in [Treatment::Exclude, Treatment::Fixed("x".into())] {
            let rules = TableRules::from([("person_id".to_owned(), treatment)]);
            let error = Projection::new(&person(), &rules).unwrap_err().to_string();
            assert!(error.contains("key column `person_id`"), "{error}");
        }
    }
}
