//! T-SQL text for the SQL Server target, built in one place with every identifier quoted.

use std::fmt::Write as _;

use crate::schema::{ColumnSchema, SqlType, TableSchema, column_type_text};
use crate::state::{STATE_TABLE, StateStatements};

/// `[name]`, with `]` doubled: safe for any identifier, including spaces and unicode.
pub fn quote(ident: &str) -> String {
    format!("[{}]", ident.replace(']', "]]"))
}

/// `[schema].[table]`.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote(schema), quote(table))
}

/// An `N'…'` string literal.
pub fn literal(text: &str) -> String {
    format!("N'{}'", text.replace('\'', "''"))
}

/// Bytes a value of this type takes in an index key; `None` for types that cannot be keys.
pub fn key_bytes(sql: SqlType) -> Option<u32> {
    Some(match sql {
        SqlType::Bit | SqlType::TinyInt => 1,
        SqlType::SmallInt => 2,
        SqlType::Int | SqlType::Real | SqlType::SmallMoney | SqlType::SmallDateTime => 4,
        SqlType::BigInt | SqlType::Float | SqlType::Money | SqlType::DateTime | SqlType::RowVersion => 8,
        SqlType::Decimal { precision, .. } | SqlType::Numeric { precision, .. } => match precision {
            0..=9 => 5,
            10..=19 => 9,
            20..=28 => 13,
            _ => 17,
        },
        SqlType::UniqueIdentifier => 16,
        SqlType::Date => 3,
        SqlType::Time { scale } => 3 + u32::from(scale.div_ceil(2).min(2)),
        SqlType::DateTime2 { scale } => 6 + u32::from(scale.div_ceil(2).min(2)),
        SqlType::DateTimeOffset { scale } => 8 + u32::from(scale.div_ceil(2).min(2)),
        SqlType::Char(Some(n)) | SqlType::VarChar(Some(n)) | SqlType::Binary(Some(n)) | SqlType::VarBinary(Some(n)) => {
            n
        }
        SqlType::NChar(Some(n)) | SqlType::NVarChar(Some(n)) => 2 * n,
        _ => return None,
    })
}

/// SQL Server's limit for a clustered index key, and for a nonclustered one (2016 and later).
const CLUSTERED_KEY_LIMIT: u32 = 900;
const NONCLUSTERED_KEY_LIMIT: u32 = 1700;

/// How the primary key can be declared for this table's key columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyIndex {
    /// Up to 900 bytes: a clustered primary key, as CRM tables have.
    Clustered,
    /// 901 to 1,700 bytes: only a nonclustered primary key can hold such keys.
    NonClustered,
}

/// Chooses the primary key index, or says why the key cannot be indexed.
pub fn key_index(table: &TableSchema) -> Result<KeyIndex, String> {
    let mut total = 0u32;
    for name in &table.primary_key {
        let column = table.column(name).ok_or_else(|| format!("key column `{name}` is not a column"))?;
        total += key_bytes(column.sql_type).ok_or_else(|| {
            format!("key column `{name}` has type {}, which cannot be a key", column_type_text(column))
        })?;
    }
    match total {
        0..=CLUSTERED_KEY_LIMIT => Ok(KeyIndex::Clustered),
        _ if total <= NONCLUSTERED_KEY_LIMIT => Ok(KeyIndex::NonClustered),
        _ => {
            Err(format!("the primary key is {total} bytes wide, over SQL Server's {NONCLUSTERED_KEY_LIMIT}-byte limit"))
        }
    }
}

/// The replica column type: the source's exact type, except `rowversion`, which SQL Server
/// generates itself and so cannot receive the source's values: it becomes `binary(8)`.
pub fn replica_type(column: &ColumnSchema) -> String {
    match column.sql_type {
        SqlType::RowVersion => "binary(8)".into(),
        _ => column_type_text(column),
    }
}

/// `[name] type NULL|NOT NULL [DEFAULT …]`: the exact source type; identity becomes a plain
/// column (the replica stores the source's values).
pub fn column_definition(column: &ColumnSchema, with_default: bool) -> String {
    let mut out = format!(
        "{} {} {}",
        quote(&column.name),
        replica_type(column),
        if column.nullable { "NULL" } else { "NOT NULL" }
    );
    if let (true, Some(default)) = (with_default, &column.default_expression) {
        let _ = write!(out, " DEFAULT {default}");
    }
    out
}

/// Creates the schema if it does not exist (`CREATE SCHEMA` must be alone in its batch).
pub fn ensure_schema(schema: &str) -> String {
    format!("IF SCHEMA_ID({}) IS NULL EXEC(N'CREATE SCHEMA {}')", literal(schema), quote(schema).replace('\'', "''"))
}

/// The replica table: source columns, types, nullability and defaults, and the primary key.
pub fn create_table(table: &TableSchema, target_schema: &str) -> Result<String, String> {
    let index = key_index(table)?;
    let mut out = format!("CREATE TABLE {} (", qualified(target_schema, &table.id.table));
    for column in &table.columns {
        out.push_str(&column_definition(column, true));
        out.push_str(", ");
    }
    let keys: Vec<String> = table.primary_key.iter().map(|k| quote(k)).collect();
    let kind = if index == KeyIndex::Clustered { "CLUSTERED" } else { "NONCLUSTERED" };
    let _ = write!(out, "PRIMARY KEY {kind} ({}))", keys.join(", "));
    Ok(out)
}

/// Adds a nullable column (a compatible schema change).
pub fn add_column(table: &TableSchema, target_schema: &str, column: &ColumnSchema) -> String {
    format!("ALTER TABLE {} ADD {}", qualified(target_schema, &table.id.table), column_definition(column, true))
}

/// Drops the replica table if it exists.
pub fn drop_table(table: &TableSchema, target_schema: &str) -> String {
    format!("DROP TABLE IF EXISTS {}", qualified(target_schema, &table.id.table))
}

/// A session temp table for a batch's upserts, typed exactly like the target so the `MERGE`
/// join compares like with like (no implicit conversions); a heap, for a fast bulk load.
pub fn create_staging(table: &TableSchema, staging: &str) -> String {
    let columns: Vec<String> = table.columns.iter().map(|c| column_definition(c, false)).collect();
    format!("CREATE TABLE {} ({})", quote(staging), columns.join(", "))
}

/// A session temp table for deleted keys.
pub fn create_key_staging(table: &TableSchema, staging: &str) -> String {
    let columns: Vec<String> = table
        .primary_key
        .iter()
        .filter_map(|k| table.column(k))
        .map(|c| column_definition(&ColumnSchema { nullable: false, ..c.clone() }, false))
        .collect();
    format!("CREATE TABLE {} ({})", quote(staging), columns.join(", "))
}

fn key_join(table: &TableSchema, left: &str, right: &str) -> String {
    let parts: Vec<String> =
        table.primary_key.iter().map(|k| format!("{left}.{q} = {right}.{q}", q = quote(k))).collect();
    parts.join(" AND ")
}

/// Deletes the rows whose keys were bulk-loaded into `keys`.
pub fn delete_join(table: &TableSchema, target_schema: &str, keys: &str) -> String {
    format!(
        "DELETE t FROM {} AS t INNER JOIN {} AS d ON {}",
        qualified(target_schema, &table.id.table),
        quote(keys),
        key_join(table, "t", "d")
    )
}

/// How soft tables' statements are spelled in T-SQL (see `sink::soft`).
pub const SOFT: crate::sink::soft::Dialect = crate::sink::soft::Dialect {
    quote,
    yes: "1",
    no: "0",
    now: "CAST(SYSUTCDATETIME() AS datetime2(3))",
    time: datetime2,
};

fn datetime2(literal: &str) -> String {
    format!("CAST({literal} AS datetime2(3))")
}

/// Flags the live rows whose keys were bulk-loaded into `keys` deleted at `at`.
pub fn soft_delete_join(table: &TableSchema, target_schema: &str, keys: &str, at: &str) -> String {
    format!(
        "UPDATE t SET {} FROM {} AS t INNER JOIN {} AS d ON {} WHERE {}",
        SOFT.flag(at),
        qualified(target_schema, &table.id.table),
        quote(keys),
        key_join(table, "t", "d"),
        SOFT.live("t")
    )
}

/// Renames a table within its schema (a retired history table, see `owner::modes::layout`).
pub fn rename_table(target_schema: &str, table: &str, new_name: &str) -> String {
    let old = qualified(target_schema, table).replace('\'', "''");
    format!("EXEC sp_rename N'{old}', N'{}'", new_name.replace('\'', "''"))
}

/// One set-based upsert of every staged row. `UPDLOCK, HOLDLOCK` keeps a concurrent writer
/// from inserting the same key between the match and the insert, without the S-to-X
/// conversion deadlocks `HOLDLOCK` alone causes.
pub fn merge(table: &TableSchema, target_schema: &str, staging: &str) -> String {
    let all: Vec<String> = table.columns.iter().map(|c| quote(&c.name)).collect();
    let values: Vec<String> = table.columns.iter().map(|c| format!("s.{}", quote(&c.name))).collect();
    let updates: Vec<String> = table
        .columns
        .iter()
        .filter(|c| !table.primary_key.contains(&c.name))
        .map(|c| format!("t.{q} = s.{q}", q = quote(&c.name)))
        .collect();
    let mut out = format!(
        "MERGE INTO {} WITH (UPDLOCK, HOLDLOCK) AS t USING {} AS s ON {}",
        qualified(target_schema, &table.id.table),
        quote(staging),
        key_join(table, "t", "s")
    );
    if !updates.is_empty() {
        let _ = write!(out, " WHEN MATCHED THEN UPDATE SET {}", updates.join(", "));
    }
    let _ = write!(out, " WHEN NOT MATCHED BY TARGET THEN INSERT ({}) VALUES ({});", all.join(", "), values.join(", "));
    out
}

/// `_ReplicationState` in SQL Server (in `dbo`); the layout is `docs/replica-schema.md`'s.
pub fn create_state_table() -> String {
    format!(
        "IF OBJECT_ID(N'[dbo].{state}', N'U') IS NULL CREATE TABLE [dbo].{state} (\
         [scope] nvarchar(16) NOT NULL, [name] nvarchar(400) NOT NULL, [text_value] nvarchar(max) NULL, \
         [int_value] bigint NULL, [blob_value] varbinary(max) NULL, [schema_hash] nvarchar(64) NULL, \
         [definition] nvarchar(max) NULL, [state] nvarchar(32) NULL, \
         [updated_at] datetime2(3) NOT NULL DEFAULT (sysutcdatetime()), \
         PRIMARY KEY CLUSTERED ([scope], [name]))",
        state = quote(STATE_TABLE)
    )
}

/// Records one partition's last applied offset, never moving it backwards. Parameters:
/// `@P1` the row name (`topic/partition`), `@P2` the topic, `@P3` the offset.
pub fn upsert_offset() -> String {
    format!(
        "MERGE INTO [dbo].{} WITH (UPDLOCK, HOLDLOCK) AS t USING (VALUES (@P1, @P2, @P3)) AS s ([name], [topic], [last]) \
         ON t.[scope] = N'offset' AND t.[name] = s.[name] \
         WHEN MATCHED THEN UPDATE SET t.[int_value] = CASE WHEN s.[last] > t.[int_value] THEN s.[last] ELSE t.[int_value] END, \
         t.[updated_at] = sysutcdatetime() \
         WHEN NOT MATCHED BY TARGET THEN INSERT ([scope], [name], [text_value], [int_value]) VALUES (N'offset', s.[name], s.[topic], s.[last]);",
        quote(STATE_TABLE)
    )
}

/// Records a replicated table. Parameters: `@P1` source table, `@P2` target schema, `@P3`
/// schema hash, `@P4` definition, `@P5` state.
pub fn upsert_table_record() -> String {
    format!(
        "MERGE INTO [dbo].{} WITH (UPDLOCK, HOLDLOCK) AS t USING (VALUES (@P1, @P2, @P3, @P4, @P5)) \
         AS s ([name], [target], [hash], [definition], [state]) ON t.[scope] = N'table' AND t.[name] = s.[name] \
         WHEN MATCHED THEN UPDATE SET t.[text_value] = s.[target], t.[schema_hash] = s.[hash], \
         t.[definition] = s.[definition], t.[state] = s.[state], t.[updated_at] = sysutcdatetime() \
         WHEN NOT MATCHED BY TARGET THEN INSERT ([scope], [name], [text_value], [schema_hash], [definition], [state]) \
         VALUES (N'table', s.[name], s.[target], s.[hash], s.[definition], s.[state]);",
        quote(STATE_TABLE)
    )
}

/// Forgets a dropped table. Parameter: `@P1` source table.
pub fn delete_table_record() -> String {
    format!("DELETE FROM [dbo].{} WHERE [scope] = N'table' AND [name] = @P1", quote(STATE_TABLE))
}

/// Sets a table's state. Parameters: `@P1` state, `@P2` source table.
pub fn set_table_state() -> String {
    format!(
        "UPDATE [dbo].{} SET [state] = @P1, [updated_at] = sysutcdatetime() WHERE [scope] = N'table' AND [name] = @P2",
        quote(STATE_TABLE)
    )
}

/// `_ReplicationState` in SQL Server (in `dbo`): the statements above and the reads.
pub fn state_statements() -> StateStatements {
    let state = quote(STATE_TABLE);
    let errors = quote(crate::state::refused::ERRORS_TABLE);
    let writer = format!("[scope] = N'session' AND [name] = N'{}'", crate::state::fence::WRITER_EPOCH);
    StateStatements {
        // A shared key lock held to the transaction's end (HOLDLOCK): the run's own handles
        // do not wait for each other, a claim's update waits for every transaction that
        // proved the old epoch.
        writer: crate::state::fence::WriterStatements {
            claim: format!(
                "MERGE INTO [dbo].{state} WITH (UPDLOCK, HOLDLOCK) AS t USING (VALUES (@P1)) AS s ([holder]) \
                 ON t.[scope] = N'session' AND t.[name] = N'{epoch}' \
                 WHEN MATCHED THEN UPDATE SET t.[int_value] = COALESCE(t.[int_value], 0) + 1, \
                 t.[text_value] = s.[holder], t.[updated_at] = sysutcdatetime() \
                 WHEN NOT MATCHED BY TARGET THEN INSERT ([scope], [name], [text_value], [int_value]) \
                 VALUES (N'session', N'{epoch}', s.[holder], 1);",
                epoch = crate::state::fence::WRITER_EPOCH
            ),
            select: format!("SELECT [int_value], [text_value] FROM [dbo].{state} WHERE {writer}"),
            check: format!("SELECT [int_value] FROM [dbo].{state} WITH (HOLDLOCK, ROWLOCK) WHERE {writer}"),
        },
        fence: None,
        errors: crate::state::refused::ErrorStatements {
            create: format!(
                "IF OBJECT_ID(N'[dbo].{errors}', N'U') IS NULL CREATE TABLE [dbo].{errors} (
                    [id] bigint IDENTITY(1,1) NOT NULL PRIMARY KEY,
                    [table_name] nvarchar(400) NOT NULL,
                    [row_key] nvarchar(max) NOT NULL,
                    [operation] nvarchar(10) NOT NULL,
                    [row_image] nvarchar(max) NULL,
                    [error] nvarchar(max) NOT NULL,
                    [refused_at] datetime2(3) NOT NULL DEFAULT SYSUTCDATETIME())"
            ),
            insert: format!(
                "INSERT INTO [dbo].{errors} ([table_name], [row_key], [operation], [row_image], [error]) \
                 VALUES (@P1, @P2, @P3, @P4, @P5)"
            ),
            select: format!(
                "SELECT [id], [table_name], [row_key], [operation], [row_image], [error], \
                 CONVERT(nvarchar(30), [refused_at], 126) FROM [dbo].{errors} ORDER BY [id]"
            ),
            delete: format!("DELETE FROM [dbo].{errors} WHERE [id] = @P1"),
        },
        columns_of: "SELECT [COLUMN_NAME] FROM INFORMATION_SCHEMA.COLUMNS WHERE [TABLE_SCHEMA] = N'{schema}' \
                     AND [TABLE_NAME] = N'{table}' ORDER BY [ORDINAL_POSITION]"
            .into(),
        create_table: create_state_table(),
        select_offsets: format!("SELECT [name], [int_value] FROM [dbo].{state} WHERE [scope] = N'offset'"),
        upsert_offset: upsert_offset(),
        select_facts: format!(
            "SELECT [name], [text_value], [blob_value] FROM [dbo].{state} WHERE [scope] = N'session'"
        ),
        upsert_fact: upsert_session(),
        select_tables: format!(
            "SELECT [name], [text_value], [definition], [state] FROM [dbo].{state} WHERE [scope] = N'table'"
        ),
        upsert_table: upsert_table_record(),
        delete_table: delete_table_record(),
        set_table_state: set_table_state(),
    }
}

/// Reads every column of a replica table; `money` as `decimal(19,4)` and `smallmoney` as
/// `decimal(10,4)`, because the driver returns money as a float.
pub fn select_all(table: &TableSchema, target_schema: &str) -> String {
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|c| match c.sql_type {
            SqlType::Money => format!("CONVERT(decimal(19,4), {})", quote(&c.name)),
            SqlType::SmallMoney => format!("CONVERT(decimal(10,4), {})", quote(&c.name)),
            _ => quote(&c.name),
        })
        .collect();
    format!("SELECT {} FROM {}", columns.join(", "), qualified(target_schema, &table.id.table))
}

/// Stores one session fact. Parameters: `@P1` name, `@P2` text, `@P3` sealed bytes.
pub fn upsert_session() -> String {
    format!(
        "MERGE INTO [dbo].{} WITH (UPDLOCK, HOLDLOCK) AS t USING (VALUES (@P1, @P2, @P3)) AS s ([name], [text], [blob]) \
         ON t.[scope] = N'session' AND t.[name] = s.[name] \
         WHEN MATCHED THEN UPDATE SET t.[text_value] = s.[text], t.[blob_value] = s.[blob], t.[updated_at] = sysutcdatetime() \
         WHEN NOT MATCHED BY TARGET THEN INSERT ([scope], [name], [text_value], [blob_value]) VALUES (N'session', s.[name], s.[text], s.[blob]);",
        quote(STATE_TABLE)
    )
}

/// The `resync-tables` swap (see `sink::shadow`): the live table's rows replaced by the
/// shadow's, and the shadow dropped; run inside the swap's transaction.
/// A soft table keeps the rows the fresh snapshot no longer has, flagged deleted.
pub fn replace_from_shadow(live: &TableSchema, live_schema: &str, shadow: &TableSchema, shadow_schema: &str) -> String {
    SOFT.swap(&qualified(live_schema, &live.id.table), &qualified(shadow_schema, &shadow.id.table), live)
}

/// Creates a tenant's database when it does not exist (partner mode).
pub fn create_database(name: &str) -> String {
    format!("IF DB_ID(N'{}') IS NULL CREATE DATABASE {}", name.replace('\'', "''"), quote(name))
}

/// Whether a database exists (`@P1`: its name).
pub const DATABASE_EXISTS: &str = "SELECT 1 FROM sys.databases WHERE name = @P1";

/// The server's user databases (the system ones left out), by name.
pub const LIST_DATABASES: &str = "SELECT name FROM sys.databases WHERE database_id > 4 ORDER BY name";

/// Fails unless the login may create databases (partner mode's `validate`).
pub fn check_create_database() -> String {
    "IF HAS_PERMS_BY_NAME(NULL, NULL, 'CREATE ANY DATABASE') = 0 \
     THROW 51001, 'the login may not create databases: grant it CREATE ANY DATABASE', 1;"
        .into()
}

/// Takes an exclusive session lock on `resource` without waiting, or fails (partner mode:
/// one process at a time mirrors a tenant); released when the connection ends. Whether it
/// was granted is read back with `APPLOCK_MODE`, so the batch fails unless this session
/// holds the lock.
pub fn claim(resource: &str) -> String {
    let resource = resource.replace('\'', "''");
    format!(
        "EXEC sp_getapplock @Resource = N'{resource}', @LockMode = 'Exclusive', @LockOwner = 'Session', \
         @LockTimeout = 0; IF APPLOCK_MODE('public', N'{resource}', 'Session') <> 'Exclusive' \
         THROW 51000, 'held by another process', 1;"
    )
}

/// Counts a table's rows (`status`).
pub fn count_rows(table: &TableSchema, target_schema: &str) -> String {
    format!("SELECT COUNT_BIG(*) FROM {}", qualified(target_schema, &table.id.table))
}

/// `validate`'s write check: create, fill and drop a table, then roll it all back.
pub fn write_check() -> String {
    format!("BEGIN TRANSACTION; {}; ROLLBACK TRANSACTION", crate::sink::probe_sql(&qualified("dbo", "_dbmirror_probe")))
}
