//! Every statement the PostgreSQL target runs, as text: `_ReplicationState`, table DDL and the
//! per-table batch statements (COPY targets, staging, the set-based delete and upsert).

use super::encode::pg_type;
use crate::schema::{ColumnSchema, TableSchema};
use crate::state::{STATE_TABLE, StateStatements};

/// `"name"`, with `"` doubled.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// `"schema"."table"`.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote(schema), quote(table))
}

/// Creates a replica table under `target_schema` (creating the schema, dropping a leftover).
/// Drops cascade: PostgreSQL refuses to drop a table an owner's view depends on, which would
/// hold every re-create and source drop until a person intervened; the owner's views go with
/// the table and a `TableCreated` hook puts them back (see `owner::hooks`).
pub fn create_table(target_schema: &str, table: &TableSchema) -> String {
    let target = qualified(target_schema, &table.id.table);
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|c| format!("{} {}{}", quote(&c.name), pg_type(c.sql_type).0, if c.nullable { "" } else { " NOT NULL" }))
        .collect();
    let pk: Vec<String> = table.primary_key.iter().map(|c| quote(c)).collect();
    format!(
        "CREATE SCHEMA IF NOT EXISTS {}; DROP TABLE IF EXISTS {target} CASCADE; CREATE TABLE {target} ({}, PRIMARY KEY ({}))",
        quote(target_schema),
        columns.join(", "),
        pk.join(", ")
    )
}

/// Adds a nullable column.
pub fn add_column(target_schema: &str, table: &str, column: &ColumnSchema) -> String {
    format!(
        "ALTER TABLE {} ADD COLUMN {} {}",
        qualified(target_schema, table),
        quote(&column.name),
        pg_type(column.sql_type).0
    )
}

/// Drops a replica table if it exists, with the owner's views on it (see [`create_table`]).
pub fn drop_table(target_schema: &str, table: &str) -> String {
    format!("DROP TABLE IF EXISTS {} CASCADE", qualified(target_schema, table))
}

/// Empties a table (a truncate event, or a table cleared for a snapshot).
pub fn truncate(target: &str) -> String {
    format!("TRUNCATE {target}")
}

fn keys(schema: &TableSchema) -> Vec<String> {
    schema.primary_key.iter().map(|k| quote(k)).collect()
}

fn columns(schema: &TableSchema) -> String {
    schema.columns.iter().map(|c| quote(&c.name)).collect::<Vec<_>>().join(", ")
}

/// The session's staging tables for `target` with `schema`: (deleted keys, upserted rows).
/// A batch copies into them and moves their rows with one set-based statement each. They are
/// created once per connection (`ON COMMIT DELETE ROWS` empties them at every commit without
/// touching the catalog): creating and dropping two temp tables per table per batch was most
/// of a small streaming batch's time. The name covers the schema, so a changed table gets
/// fresh ones; the old ones are left to the session (a few small temp tables).
pub fn stage_names(target: &str, schema: &TableSchema) -> (String, String) {
    // FNV-1a: stable and short; a collision would need two tables of one replica to agree.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in target.bytes().chain([0]).chain(schema.fingerprint().bytes()) {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (format!("dbmirror_k_{hash:016x}"), format!("dbmirror_s_{hash:016x}"))
}

/// Creates the keys stage `name` for `target`'s primary key.
pub fn create_key_stage(name: &str, target: &str, schema: &TableSchema) -> String {
    format!(
        "CREATE TEMP TABLE {name} ON COMMIT DELETE ROWS AS SELECT {} FROM {target} WITH NO DATA",
        keys(schema).join(", ")
    )
}

/// Creates the rows stage `name` with `target`'s columns.
pub fn create_row_stage(name: &str, target: &str, schema: &TableSchema) -> String {
    format!("CREATE TEMP TABLE {name} ON COMMIT DELETE ROWS AS SELECT {} FROM {target} WITH NO DATA", columns(schema))
}

/// Binary COPY of keys into the keys stage `name`.
pub fn copy_keys(name: &str) -> String {
    format!("COPY {name} FROM STDIN (FORMAT binary)")
}

/// Deletes the rows whose keys are in the stage `stage`, in one join.
pub fn delete_staged_keys(target: &str, schema: &TableSchema, stage: &str) -> String {
    let join: Vec<String> = keys(schema).iter().map(|k| format!("t.{k} = s.{k}")).collect();
    format!("DELETE FROM {target} AS t USING {stage} AS s WHERE {}", join.join(" AND "))
}

/// How soft tables' statements are spelled in PostgreSQL (see `sink::soft`).
pub const SOFT: crate::sink::soft::Dialect = crate::sink::soft::Dialect {
    quote,
    yes: "TRUE",
    no: "FALSE",
    now: "(now() AT TIME ZONE 'UTC')::timestamp(3)",
    time: timestamp,
};

fn timestamp(literal: &str) -> String {
    format!("{literal}::timestamp(3)")
}

/// Flags the live rows whose keys are in the stage `stage` deleted at `at`, in one join.
pub fn soft_delete_staged_keys(target: &str, schema: &TableSchema, stage: &str, at: &str) -> String {
    let join: Vec<String> = keys(schema).iter().map(|k| format!("t.{k} = s.{k}")).collect();
    format!(
        "UPDATE {target} AS t SET {} FROM {stage} AS s WHERE {} AND {}",
        SOFT.flag(at),
        join.join(" AND "),
        SOFT.live("t")
    )
}

/// Renames a table within its schema (a retired history table, see `owner::modes::layout`).
pub fn rename_table(target_schema: &str, table: &str, new_name: &str) -> String {
    format!("ALTER TABLE {} RENAME TO {}", qualified(target_schema, table), quote(new_name))
}

/// Binary COPY of whole rows into `target` (a replica table or a rows stage).
pub fn copy_into(target: &str, schema: &TableSchema) -> String {
    format!("COPY {target} ({}) FROM STDIN (FORMAT binary)", columns(schema))
}

/// Moves the staged rows into the table in one `INSERT … ON CONFLICT` (see the module docs of
/// the target for why not `MERGE`).
pub fn merge_staged_rows(target: &str, schema: &TableSchema, stage: &str) -> String {
    let updates: Vec<String> = schema
        .columns
        .iter()
        .filter(|c| !schema.primary_key.contains(&c.name))
        .map(|c| format!("{0} = excluded.{0}", quote(&c.name)))
        .collect();
    let action =
        if updates.is_empty() { "DO NOTHING".to_string() } else { format!("DO UPDATE SET {}", updates.join(", ")) };
    format!(
        "INSERT INTO {target} ({cols}) SELECT {cols} FROM {stage} ON CONFLICT ({}) {action}",
        keys(schema).join(", "),
        cols = columns(schema)
    )
}

/// `_ReplicationState` in PostgreSQL (in the connection's default schema); the layout is
/// `docs/replica-schema.md`'s.
pub fn state_statements() -> StateStatements {
    let state = quote(STATE_TABLE);
    let errors = quote(crate::state::refused::ERRORS_TABLE);
    StateStatements {
        // A share lock: the run's own handles do not wait for each other, a claim waits for
        // every transaction that proved the old epoch (and they, after it, read the new one).
        writer: crate::state::fence::WriterStatements::on_conflict(&state, "$1", "now()", |state, row| {
            format!("SELECT int_value FROM {state} WHERE {row} FOR SHARE")
        }),
        fence: None,
        errors: crate::state::refused::ErrorStatements {
            create: format!(
                "CREATE TABLE IF NOT EXISTS {errors} (
                    id bigserial PRIMARY KEY,
                    table_name text NOT NULL,
                    row_key text NOT NULL,
                    operation text NOT NULL,
                    row_image text,
                    error text NOT NULL,
                    refused_at timestamptz NOT NULL DEFAULT now())"
            ),
            insert: format!(
                "INSERT INTO {errors} (table_name, row_key, operation, row_image, error) VALUES ($1, $2, $3, $4, $5)"
            ),
            select: format!(
                "SELECT id, table_name, row_key, operation, row_image, error, refused_at::text FROM {errors} ORDER BY id"
            ),
            delete: format!("DELETE FROM {errors} WHERE id = $1"),
        },
        columns_of: "SELECT column_name::text FROM information_schema.columns WHERE table_schema = '{schema}' \
                     AND table_name = '{table}' ORDER BY ordinal_position"
            .into(),
        create_table: format!(
            "CREATE TABLE IF NOT EXISTS {state} (
                scope text NOT NULL CHECK (scope IN ('session', 'offset', 'table')),
                name text NOT NULL,
                text_value text,
                int_value bigint,
                blob_value bytea,
                schema_hash text,
                definition text,
                state text,
                updated_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (scope, name))"
        ),
        select_offsets: format!("SELECT name, int_value FROM {state} WHERE scope = 'offset'"),
        upsert_offset: format!(
            "INSERT INTO {state} (scope, name, text_value, int_value, updated_at) VALUES ('offset', $1, $2, $3, now()) \
             ON CONFLICT (scope, name) DO UPDATE SET int_value = GREATEST({state}.int_value, excluded.int_value), \
             updated_at = excluded.updated_at"
        ),
        select_facts: format!("SELECT name, text_value, blob_value FROM {state} WHERE scope = 'session'"),
        upsert_fact: format!(
            "INSERT INTO {state} (scope, name, text_value, blob_value, updated_at) VALUES ('session', $1, $2, $3, now()) \
             ON CONFLICT (scope, name) DO UPDATE SET text_value = excluded.text_value, \
             blob_value = excluded.blob_value, updated_at = excluded.updated_at"
        ),
        select_tables: format!("SELECT name, text_value, definition, state FROM {state} WHERE scope = 'table'"),
        upsert_table: format!(
            "INSERT INTO {state} (scope, name, text_value, schema_hash, definition, state, updated_at) \
             VALUES ('table', $1, $2, $3, $4, $5, now()) \
             ON CONFLICT (scope, name) DO UPDATE SET text_value = excluded.text_value, \
             schema_hash = excluded.schema_hash, definition = excluded.definition, \
             state = excluded.state, updated_at = excluded.updated_at"
        ),
        delete_table: format!("DELETE FROM {state} WHERE scope = 'table' AND name = $1"),
        set_table_state: format!(
            "UPDATE {state} SET state = $1, updated_at = now() WHERE scope = 'table' AND name = $2"
        ),
    }
}
