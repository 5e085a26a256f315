//! Every statement the SQLite target runs, as text: `_ReplicationState`, table DDL and the
//! per-table write statements. Pure functions, golden-tested like SQL Server's.

use crate::schema::{ColumnSchema, SqlType, TableSchema};
use crate::state::{STATE_TABLE, StateStatements};

/// `"name"`, with `"` doubled.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The declared SQLite type that stores a SQL Server type losslessly.
pub fn sqlite_type(sql: SqlType) -> String {
    match sql {
        SqlType::Bit => "BOOLEAN".into(),
        SqlType::TinyInt | SqlType::SmallInt | SqlType::Int => "INTEGER".into(),
        SqlType::BigInt => "BIGINT".into(),
        SqlType::Real => "REAL".into(),
        SqlType::Float => "FLOAT".into(),
        SqlType::Decimal { precision, scale } | SqlType::Numeric { precision, scale } => {
            format!("DECIMAL_TEXT({precision},{scale})")
        }
        SqlType::Money => "MONEY_TEXT".into(),
        SqlType::SmallMoney => "SMALLMONEY_TEXT".into(),
        SqlType::Char(n) | SqlType::VarChar(n) | SqlType::NChar(n) | SqlType::NVarChar(n) => {
            let name = sql.to_string().to_ascii_uppercase();
            let base = name.split('(').next().unwrap_or_default();
            // SQLite type arguments must be numbers: `(max)` becomes a `_MAX` suffix.
            n.map_or_else(|| format!("{base}_MAX"), |_| name.clone())
        }
        SqlType::Text | SqlType::NText => sql.to_string().to_ascii_uppercase(),
        SqlType::Xml => "XML_TEXT".into(),
        SqlType::UniqueIdentifier => "UNIQUEIDENTIFIER_TEXT".into(),
        SqlType::Binary(_) | SqlType::VarBinary(_) | SqlType::Image | SqlType::RowVersion => "BLOB".into(),
        SqlType::Date => "DATE_TEXT".into(),
        SqlType::Time { scale } => format!("TIME_TEXT({scale})"),
        SqlType::DateTime => "DATETIME_TEXT".into(),
        SqlType::SmallDateTime => "SMALLDATETIME_TEXT".into(),
        SqlType::DateTime2 { scale } => format!("DATETIME2_TEXT({scale})"),
        SqlType::DateTimeOffset { scale } => format!("DATETIMEOFFSET_TEXT({scale})"),
        // No declared type: BLOB affinity stores values exactly as received.
        SqlType::Other => String::new(),
    }
}

/// Re-creates a replica table (dropping a leftover of the same name).
pub fn create_table(target: &str, schema: &TableSchema) -> String {
    let mut sql = format!("DROP TABLE IF EXISTS {0}; CREATE TABLE {0} (", quote(target));
    for c in &schema.columns {
        sql.push_str(&format!(
            "{} {}{}, ",
            quote(&c.name),
            sqlite_type(c.sql_type),
            if c.nullable { "" } else { " NOT NULL" }
        ));
    }
    let pk: Vec<String> = schema.primary_key.iter().map(|c| quote(c)).collect();
    sql.push_str(&format!("PRIMARY KEY ({}))", pk.join(", ")));
    sql
}

/// Adds a nullable column.
pub fn add_column(target: &str, column: &ColumnSchema) -> String {
    format!("ALTER TABLE {} ADD COLUMN {} {}", quote(target), quote(&column.name), sqlite_type(column.sql_type))
}

/// Drops a replica table if it exists.
pub fn drop_table(target: &str) -> String {
    format!("DROP TABLE IF EXISTS {}", quote(target))
}

/// `"k1" = ?1 AND "k2" = ?2 …`: one row by its primary key, parameters in key order.
fn key_predicate(schema: &TableSchema) -> String {
    let predicate: Vec<String> =
        schema.primary_key.iter().enumerate().map(|(i, k)| format!("{} = ?{}", quote(k), i + 1)).collect();
    predicate.join(" AND ")
}

/// Deletes one row by its primary key (`?1`, `?2`, … in key order).
pub fn delete_row(target: &str, schema: &TableSchema) -> String {
    format!("DELETE FROM {target} WHERE {}", key_predicate(schema))
}

/// How soft tables' statements are spelled in SQLite (see `sink::soft`); times are
/// stored as the text every `datetime2(3)` value is stored as.
pub const SOFT: crate::sink::soft::Dialect =
    crate::sink::soft::Dialect { quote, yes: "1", no: "0", now: "strftime('%Y-%m-%d %H:%M:%f', 'now')", time: as_is };

fn as_is(literal: &str) -> String {
    literal.to_owned()
}

/// Flags one live row of a soft table deleted at `at` (`?1`, `?2`, … in key order).
pub fn soft_delete_row(target: &str, schema: &TableSchema, at: &str) -> String {
    format!("UPDATE {target} SET {} WHERE {} AND {}", SOFT.flag(at), key_predicate(schema), SOFT.live(""))
}

/// Renames a table (a retired history table, see `owner::modes::layout`).
pub fn rename_table(target: &str, new_name: &str) -> String {
    format!("ALTER TABLE {} RENAME TO {}", quote(target), quote(new_name))
}

fn column_list(schema: &TableSchema) -> (String, String) {
    let columns: Vec<String> = schema.columns.iter().map(|c| quote(&c.name)).collect();
    let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
    (columns.join(", "), placeholders.join(", "))
}

/// Inserts one row (`?1`… in column order); fails on an existing key.
pub fn insert_row(target: &str, schema: &TableSchema) -> String {
    let (columns, placeholders) = column_list(schema);
    format!("INSERT INTO {target} ({columns}) VALUES ({placeholders})")
}

/// Inserts or replaces one row by its primary key (`?1`… in column order).
pub fn upsert_row(target: &str, schema: &TableSchema) -> String {
    let (columns, placeholders) = column_list(schema);
    let updates: Vec<String> = schema
        .columns
        .iter()
        .filter(|c| !schema.primary_key.contains(&c.name))
        .map(|c| format!("{0} = excluded.{0}", quote(&c.name)))
        .collect();
    let pk: Vec<String> = schema.primary_key.iter().map(|k| quote(k)).collect();
    let on_conflict =
        if updates.is_empty() { "DO NOTHING".to_string() } else { format!("DO UPDATE SET {}", updates.join(", ")) };
    format!("INSERT INTO {target} ({columns}) VALUES ({placeholders}) ON CONFLICT ({}) {on_conflict}", pk.join(", "))
}

/// `_ReplicationState` in SQLite; the layout is `docs/replica-schema.md`'s.
pub fn state_statements() -> StateStatements {
    let state = quote(STATE_TABLE);
    let now = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";
    let errors = quote(crate::state::refused::ERRORS_TABLE);
    StateStatements {
        // SQLite has one writer at a time: the check is a write, so the transaction holds the
        // database's write lock from its first statement to its end.
        writer: crate::state::fence::WriterStatements::on_conflict(&state, "?1", now, |state, row| {
            format!("UPDATE {state} SET int_value = int_value WHERE {row} RETURNING int_value")
        }),
        fence: None,
        errors: crate::state::refused::ErrorStatements {
            create: format!(
                "CREATE TABLE IF NOT EXISTS {errors} (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    table_name TEXT NOT NULL,
                    row_key TEXT NOT NULL,
                    operation TEXT NOT NULL,
                    row_image TEXT,
                    error TEXT NOT NULL,
                    refused_at TEXT NOT NULL DEFAULT ({now}))"
            ),
            insert: format!(
                "INSERT INTO {errors} (table_name, row_key, operation, row_image, error) VALUES (?1, ?2, ?3, ?4, ?5)"
            ),
            select: format!(
                "SELECT id, table_name, row_key, operation, row_image, error, refused_at FROM {errors} ORDER BY id"
            ),
            delete: format!("DELETE FROM {errors} WHERE id = ?1"),
        },
        columns_of: "SELECT name FROM pragma_table_info('{schema}_{table}')".into(),
        create_table: format!(
            "CREATE TABLE IF NOT EXISTS {state} (
                scope TEXT NOT NULL CHECK (scope IN ('session', 'offset', 'table')),
                name TEXT NOT NULL,
                text_value TEXT,
                int_value INTEGER,
                blob_value BLOB,
                schema_hash TEXT,
                definition TEXT,
                state TEXT,
                updated_at TEXT NOT NULL DEFAULT ({now}),
                PRIMARY KEY (scope, name)
            ) WITHOUT ROWID"
        ),
        select_offsets: format!("SELECT name, int_value FROM {state} WHERE scope = 'offset'"),
        upsert_offset: format!(
            "INSERT INTO {state} (scope, name, text_value, int_value, updated_at) VALUES ('offset', ?1, ?2, ?3, {now}) \
             ON CONFLICT (scope, name) DO UPDATE SET int_value = max(int_value, excluded.int_value), \
             updated_at = excluded.updated_at"
        ),
        select_facts: format!("SELECT name, text_value, blob_value FROM {state} WHERE scope = 'session'"),
        upsert_fact: format!(
            "INSERT INTO {state} (scope, name, text_value, blob_value, updated_at) VALUES ('session', ?1, ?2, ?3, {now}) \
             ON CONFLICT (scope, name) DO UPDATE SET text_value = excluded.text_value, \
             blob_value = excluded.blob_value, updated_at = excluded.updated_at"
        ),
        select_tables: format!("SELECT name, text_value, definition, state FROM {state} WHERE scope = 'table'"),
        upsert_table: format!(
            "INSERT INTO {state} (scope, name, text_value, schema_hash, definition, state, updated_at) \
             VALUES ('table', ?1, ?2, ?3, ?4, ?5, {now}) \
             ON CONFLICT (scope, name) DO UPDATE SET text_value = excluded.text_value, \
             schema_hash = excluded.schema_hash, definition = excluded.definition, \
             state = excluded.state, updated_at = excluded.updated_at"
        ),
        delete_table: format!("DELETE FROM {state} WHERE scope = 'table' AND name = ?1"),
        set_table_state: format!(
            "UPDATE {state} SET state = ?1, updated_at = {now} WHERE scope = 'table' AND name = ?2"
        ),
    }
}
