//! The SQL Server statements, checked offline: golden text for a CRM table, every statement
//! of every simulated table accepted by a T-SQL parser, key widths, quoting.

use dbmirror::cloud::crm::published_tables;
use dbmirror::schema::{ColumnSchema, SqlType, TableId, TableSchema};
use dbmirror::sink::mssql::sql;
use sqlparser::dialect::MsSqlDialect;
use sqlparser::parser::Parser;

const HINT: &str = " WITH (UPDLOCK, HOLDLOCK)";

/// Parses T-SQL. sqlparser does not know table hints on a `MERGE` target (valid T-SQL:
/// `MERGE [INTO] target [WITH (hints)] [AS alias]`), so the hint is checked to sit right after
/// the target and removed before parsing.
fn assert_parses(statement: &str) {
    let text = if statement.starts_with("MERGE INTO ") {
        let hint = statement.find(HINT).expect("MERGE carries UPDLOCK, HOLDLOCK");
        assert!(statement[hint + HINT.len()..].starts_with(" AS t USING "), "hint must follow the target: {statement}");
        statement.replacen(HINT, "", 1)
    } else {
        statement.to_owned()
    };
    if let Err(e) = Parser::parse_sql(&MsSqlDialect {}, &text) {
        panic!("{e}\n{statement}");
    }
}

fn person() -> TableSchema {
    published_tables().into_iter().find(|t| t.id.table == "person").unwrap()
}

#[test]
fn golden_statements_for_a_crm_table() {
    let t = person();
    assert_eq!(
        sql::create_table(&t, "crm7").unwrap(),
        "CREATE TABLE [crm7].[person] ([person_id] int NOT NULL, [contact_id] int NOT NULL, \
         [firstname] nvarchar(50) NOT NULL DEFAULT (''), [middlename] nvarchar(50) NULL, \
         [lastname] nvarchar(50) NOT NULL DEFAULT (''), [title] nvarchar(80) NULL, [birthdate] date NULL, \
         [registered] datetime NOT NULL DEFAULT (getdate()), [updated] datetime2(7) NULL, \
         [retired] bit NOT NULL DEFAULT ((0)), PRIMARY KEY CLUSTERED ([person_id]))"
    );
    assert_eq!(
        sql::merge(&t, "crm7", "#stage_person"),
        "MERGE INTO [crm7].[person] WITH (UPDLOCK, HOLDLOCK) AS t USING [#stage_person] AS s ON t.[person_id] = s.[person_id] \
         WHEN MATCHED THEN UPDATE SET t.[contact_id] = s.[contact_id], t.[firstname] = s.[firstname], \
         t.[middlename] = s.[middlename], t.[lastname] = s.[lastname], t.[title] = s.[title], t.[birthdate] = s.[birthdate], \
         t.[registered] = s.[registered], t.[updated] = s.[updated], t.[retired] = s.[retired] \
         WHEN NOT MATCHED BY TARGET THEN INSERT ([person_id], [contact_id], [firstname], [middlename], [lastname], [title], \
         [birthdate], [registered], [updated], [retired]) VALUES (s.[person_id], s.[contact_id], s.[firstname], s.[middlename], \
         s.[lastname], s.[title], s.[birthdate], s.[registered], s.[updated], s.[retired]);"
    );
    assert_eq!(
        sql::delete_join(&t, "dbo", "#del_person"),
        "DELETE t FROM [dbo].[person] AS t INNER JOIN [#del_person] AS d ON t.[person_id] = d.[person_id]"
    );
    assert_eq!(
        sql::create_staging(&t, "#stage_person"),
        "CREATE TABLE [#stage_person] ([person_id] int NOT NULL, [contact_id] int NOT NULL, [firstname] nvarchar(50) NOT NULL, \
         [middlename] nvarchar(50) NULL, [lastname] nvarchar(50) NOT NULL, [title] nvarchar(80) NULL, [birthdate] date NULL, \
         [registered] datetime NOT NULL, [updated] datetime2(7) NULL, [retired] bit NOT NULL)"
    );
}

#[test]
fn every_statement_for_every_table_parses() {
    for t in published_tables() {
        let stage = format!("#stage_{}", t.id.table);
        let keys = format!("#del_{}", t.id.table);
        for statement in [
            sql::ensure_schema("crm7"),
            sql::create_table(&t, "crm7").unwrap(),
            sql::drop_table(&t, "crm7"),
            sql::create_staging(&t, &stage),
            sql::create_key_staging(&t, &keys),
            format!("{} DROP TABLE {}", sql::merge(&t, "crm7", &stage), sql::quote(&stage)),
            sql::select_all(&t, "crm7"),
            sql::delete_join(&t, "crm7", &keys),
            sql::add_column(&t, "crm7", &t.columns[t.columns.len() - 1]),
        ] {
            assert_parses(&statement);
        }
        // Legacy datetime stays datetime, datetime2 keeps its scale, money stays money.
        let ddl = sql::create_table(&t, "crm7").unwrap();
        for c in &t.columns {
            assert!(
                ddl.contains(&format!("[{}] {} ", c.name, dbmirror::schema::column_type_text(c))),
                "{}: {ddl}",
                c.name
            );
        }
    }
    assert_parses(&sql::create_state_table());
    assert_parses(&sql::write_check());
    let t = person();
    let shadow = TableSchema { id: t.id.shadow(), ..t.clone() };
    let swap = sql::replace_from_shadow(&t, "crm7", &shadow, "crm7");
    assert_eq!(
        swap,
        "DELETE FROM [crm7].[person]; INSERT INTO [crm7].[person] ([person_id], [contact_id], [firstname], [middlename], \
         [lastname], [title], [birthdate], [registered], [updated], [retired]) SELECT [person_id], [contact_id], [firstname], \
         [middlename], [lastname], [title], [birthdate], [registered], [updated], [retired] FROM [crm7].[person__resync]; \
         DROP TABLE [crm7].[person__resync]"
    );
    assert_parses(&swap);
    assert_parses(&sql::count_rows(&t, "crm7"));
    for statement in [
        sql::upsert_offset(),
        sql::upsert_table_record(),
        sql::delete_table_record(),
        sql::set_table_state(),
        sql::upsert_session(),
    ] {
        assert_parses(&statement);
    }
    // The writer fence: the claim's MERGE and the select parse as they are; the check's
    // shared lock held to the commit (`WITH (HOLDLOCK, ROWLOCK)`) is pinned here.
    let writer = sql::state_statements().writer;
    assert_parses(&writer.claim);
    assert_parses(&writer.select);
    assert_eq!(
        writer.check,
        "SELECT [int_value] FROM [dbo].[_ReplicationState] WITH (HOLDLOCK, ROWLOCK) \
         WHERE [scope] = N'session' AND [name] = N'writer_epoch'"
    );
    assert_parses(&writer.check.replace(" WITH (HOLDLOCK, ROWLOCK)", ""));
    // `_ReplicationErrors` (ErrorPolicy: Isolate).
    let errors = sql::state_statements().errors;
    for statement in [&errors.create, &errors.insert, &errors.select, &errors.delete] {
        assert_parses(statement);
    }
    assert!(errors.create.starts_with("IF OBJECT_ID(N'[dbo].[_ReplicationErrors]', N'U') IS NULL CREATE TABLE"));
    // A key-only table has nothing to update: the MERGE only inserts.
    let relations = published_tables().into_iter().find(|t| t.id.table == "relations").unwrap();
    let keys_only = TableSchema { columns: relations.columns[..3].to_vec(), ..relations };
    let merge = sql::merge(&keys_only, "crm7", "#s");
    assert!(!merge.contains("WHEN MATCHED"), "{merge}");
    assert_parses(&merge);
}

fn column(name: &str, sql_type: SqlType) -> ColumnSchema {
    ColumnSchema {
        name: name.into(),
        sql_type,
        type_name: sql_type.to_string(),
        position: 1,
        nullable: false,
        identity: false,
        default_expression: None,
    }
}

#[test]
fn wide_string_keys_get_a_nonclustered_key_and_impossible_keys_are_refused() {
    let table = |sql_type| TableSchema {
        id: TableId::new("crm7", "k"),
        columns: vec![column("k", sql_type)],
        primary_key: vec!["k".into()],
    };
    assert_eq!(sql::key_index(&table(SqlType::NVarChar(Some(450)))), Ok(sql::KeyIndex::Clustered));
    assert_eq!(sql::key_index(&table(SqlType::NVarChar(Some(451)))), Ok(sql::KeyIndex::NonClustered));
    assert!(
        sql::create_table(&table(SqlType::NVarChar(Some(800))), "crm7").unwrap().contains("PRIMARY KEY NONCLUSTERED")
    );
    assert!(sql::key_index(&table(SqlType::NVarChar(Some(851)))).unwrap_err().contains("1700-byte limit"));
    assert!(sql::key_index(&table(SqlType::NVarChar(None))).unwrap_err().contains("cannot be a key"));
}

#[test]
fn identifiers_and_literals_are_quoted() {
    assert_eq!(sql::quote("we]ird name"), "[we]]ird name]");
    assert_eq!(sql::literal("O'Brien"), "N'O''Brien'");
    let odd = TableSchema {
        id: TableId::new("my schema", "tab]le"),
        columns: vec![column("id]", SqlType::Int), column("Sørensen's", SqlType::NVarChar(Some(10)))],
        primary_key: vec!["id]".into()],
    };
    let ddl = sql::create_table(&odd, "my schema").unwrap();
    assert_eq!(
        ddl,
        "CREATE TABLE [my schema].[tab]]le] ([id]]] int NOT NULL, [Sørensen's] nvarchar(10) NOT NULL, PRIMARY KEY CLUSTERED ([id]]]))"
    );
    assert_parses(&ddl);
    assert_parses(&sql::merge(&odd, "my schema", "#s"));
    assert_eq!(sql::ensure_schema("o'k"), "IF SCHEMA_ID(N'o''k') IS NULL EXEC(N'CREATE SCHEMA [o''k]')");
}

#[test]
fn delete_mode_statements_are_golden_and_parse() {
    use dbmirror::owner::modes::layout;
    let t = person();
    let soft = layout::soft_layout(&t, None).unwrap();
    let ddl = sql::create_table(&soft, "crm7").unwrap();
    assert!(ddl.contains("[_deleted] bit NOT NULL, [_deleted_at] datetime2(3) NULL, PRIMARY KEY"), "{ddl}");
    assert_parses(&ddl);
    let at = sql::SOFT.at(&dbmirror::value::DateTime::from_epoch_units(1_764_417_600_123, 1_000_000).unwrap());
    assert_eq!(at, "CAST('2025-11-29 12:00:00.123' AS datetime2(3))");
    let delete = sql::soft_delete_join(&soft, "crm7", "#del_person", &at);
    assert_eq!(
        delete,
        "UPDATE t SET [_deleted] = 1, [_deleted_at] = CAST('2025-11-29 12:00:00.123' AS datetime2(3)) \
         FROM [crm7].[person] AS t INNER JOIN [#del_person] AS d ON t.[person_id] = d.[person_id] WHERE t.[_deleted] = 0"
    );
    assert_parses(&delete);
    let flag_all = sql::SOFT.flag_all("[crm7].[person]", &at);
    assert_eq!(
        flag_all,
        "UPDATE [crm7].[person] SET [_deleted] = 1, [_deleted_at] = CAST('2025-11-29 12:00:00.123' AS datetime2(3)) \
         WHERE [_deleted] = 0"
    );
    assert_parses(&flag_all);
    let shadow = TableSchema { id: soft.id.shadow(), ..soft.clone() };
    let swap = sql::replace_from_shadow(&soft, "crm7", &shadow, "crm7");
    assert!(
        swap.starts_with(
            "UPDATE [crm7].[person] SET [_deleted] = 1, [_deleted_at] = CAST(SYSUTCDATETIME() AS datetime2(3)) \
             WHERE [_deleted] = 0 AND NOT EXISTS (SELECT 1 FROM [crm7].[person__resync] s \
             WHERE s.[person_id] = [crm7].[person].[person_id]); DELETE FROM [crm7].[person] WHERE EXISTS"
        ),
        "{swap}"
    );
    for statement in swap.split("; ") {
        assert_parses(statement);
    }
    let (history, _) = layout::history_layout(&t, None);
    let ddl = sql::create_table(&history, "crm7").unwrap();
    assert!(
        ddl.starts_with(
            "CREATE TABLE [crm7].[person_history] ([_op] char(1) NOT NULL, [_source_ts] datetime2(3) NULL, \
             [_commit_lsn] varchar(64) NOT NULL, [_change_lsn] varchar(64) NOT NULL, [_seq] bigint NOT NULL, \
             [person_id] int NOT NULL, [contact_id] int NULL,"
        ),
        "{ddl}"
    );
    assert!(ddl.ends_with("PRIMARY KEY CLUSTERED ([_commit_lsn], [_change_lsn], [_seq], [person_id]))"), "{ddl}");
    assert_parses(&ddl);
    assert_parses(&sql::merge(&history, "crm7", "#stage_history"));
    let rename = sql::rename_table("crm7", "person_history", "person_history_20261129_193830");
    assert_eq!(rename, "EXEC sp_rename N'[crm7].[person_history]', N'person_history_20261129_193830'");
    assert_parses(&rename);
}

#[test]
fn partner_and_adoption_statements_are_golden_and_parse() {
    let create = sql::create_database("Mirror_cust1234");
    assert_eq!(create, "IF DB_ID(N'Mirror_cust1234') IS NULL CREATE DATABASE [Mirror_cust1234]");
    assert_parses(&create);
    let claim = sql::claim("dbmirror-partner:Mirror_cust1234");
    assert!(claim.contains("sp_getapplock @Resource = N'dbmirror-partner:Mirror_cust1234'"), "{claim}");
    assert!(claim.contains("@LockOwner = 'Session', @LockTimeout = 0"), "{claim}");
    assert_parses(&claim);
    assert_parses(&sql::check_create_database());
    assert_eq!(sql::LIST_DATABASES, "SELECT name FROM sys.databases WHERE database_id > 4 ORDER BY name");
    assert_parses(sql::LIST_DATABASES);
    assert_parses(sql::DATABASE_EXISTS);
    let columns = sql::state_statements().columns_of.replace("{schema}", "crm7").replace("{table}", "person");
    assert_eq!(
        columns,
        "SELECT [COLUMN_NAME] FROM INFORMATION_SCHEMA.COLUMNS WHERE [TABLE_SCHEMA] = N'crm7' AND [TABLE_NAME] = N'person' \
         ORDER BY [ORDINAL_POSITION]"
    );
    assert_parses(&columns);
}
