//! The SQLite and PostgreSQL statements, checked offline like SQL Server's: every
//! `_ReplicationState` statement and every table statement for every simulated table is
//! accepted by a parser of the target's dialect, and the state layout's text is pinned.

use dbmirror::cloud::crm::published_tables;
use dbmirror::sink::{mssql, postgres, sqlite};
use dbmirror::state::StateStatements;
use sqlparser::dialect::{Dialect, MsSqlDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;

fn assert_parses(dialect: &dyn Dialect, statement: &str) {
    if let Err(e) = Parser::parse_sql(dialect, statement) {
        panic!("{e}\n{statement}");
    }
}

fn all(s: &StateStatements) -> [&str; 12] {
    [
        &s.writer.claim,
        &s.writer.select,
        &s.writer.check,
        &s.create_table,
        &s.select_offsets,
        &s.upsert_offset,
        &s.select_facts,
        &s.upsert_fact,
        &s.select_tables,
        &s.upsert_table,
        &s.delete_table,
        &s.set_table_state,
    ]
}

#[test]
fn state_statements_parse_in_their_dialects() {
    for statement in all(&sqlite::sql::state_statements()) {
        assert_parses(&SQLiteDialect {}, statement);
    }
    for statement in all(&postgres::sql::state_statements()) {
        assert_parses(&PostgreSqlDialect {}, statement);
    }
    // SQL Server's MERGE statements carry a table hint sqlparser does not read; the full
    // T-SQL checks are in `mssql_sql`. The plain ones parse here.
    let mssql = mssql::sql::state_statements();
    for statement in [&mssql.select_offsets, &mssql.select_facts, &mssql.select_tables, &mssql.delete_table] {
        assert_parses(&MsSqlDialect {}, statement);
    }
}

#[test]
fn state_layout_is_pinned() {
    assert_eq!(
        postgres::sql::state_statements().writer.check,
        "SELECT int_value FROM \"_ReplicationState\" WHERE scope = 'session' AND name = 'writer_epoch' FOR SHARE"
    );
    assert_eq!(
        sqlite::sql::state_statements().writer.claim,
        "INSERT INTO \"_ReplicationState\" (scope, name, text_value, int_value, updated_at) VALUES ('session', \
         'writer_epoch', ?1, 1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) ON CONFLICT (scope, name) DO UPDATE SET \
         int_value = COALESCE(\"_ReplicationState\".int_value, 0) + 1, text_value = excluded.text_value, \
         updated_at = excluded.updated_at"
    );
    assert_eq!(
        sqlite::sql::state_statements().set_table_state,
        "UPDATE \"_ReplicationState\" SET state = ?1, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
         WHERE scope = 'table' AND name = ?2"
    );
    assert_eq!(
        postgres::sql::state_statements().upsert_offset,
        "INSERT INTO \"_ReplicationState\" (scope, name, text_value, int_value, updated_at) \
         VALUES ('offset', $1, $2, $3, now()) ON CONFLICT (scope, name) DO UPDATE SET \
         int_value = GREATEST(\"_ReplicationState\".int_value, excluded.int_value), updated_at = excluded.updated_at"
    );
}

#[test]
fn table_statements_parse_for_every_simulated_table() {
    for t in published_tables() {
        let target = sqlite::sql::quote(&format!("crm7_{}", t.id.table));
        for statement in [
            sqlite::sql::create_table(&format!("crm7_{}", t.id.table), &t),
            sqlite::sql::delete_row(&target, &t),
            sqlite::sql::insert_row(&target, &t),
            sqlite::sql::upsert_row(&target, &t),
        ] {
            assert_parses(&SQLiteDialect {}, &statement);
        }
        let target = postgres::sql::qualified("crm7", &t.id.table);
        let (keys, rows) = postgres::sql::stage_names(&target, &t);
        for statement in [
            postgres::sql::create_table("crm7", &t),
            postgres::sql::create_key_stage(&keys, &target, &t),
            postgres::sql::delete_staged_keys(&target, &t, &keys),
            postgres::sql::create_row_stage(&rows, &target, &t),
            postgres::sql::merge_staged_rows(&target, &t, &rows),
            postgres::sql::truncate(&target),
        ] {
            assert_parses(&PostgreSqlDialect {}, &statement);
        }
        if let Some(c) = t.columns.iter().find(|c| c.nullable) {
            assert_parses(&SQLiteDialect {}, &sqlite::sql::add_column("crm7_x", c));
            assert_parses(&PostgreSqlDialect {}, &postgres::sql::add_column("crm7", &t.id.table, c));
        }
    }
}

/// Soft tables' statements on the embedded and PostgreSQL targets: golden, and parsed.
#[test]
fn soft_delete_statements_are_golden_and_parse() {
    use dbmirror::owner::modes::layout;
    let person = published_tables().into_iter().find(|t| t.id.table == "person").unwrap();
    let soft = layout::soft_layout(&person, None).unwrap();
    let at_time = dbmirror::value::DateTime::from_epoch_units(1_764_417_600_123, 1_000_000).unwrap();

    let at = sqlite::sql::SOFT.at(&at_time);
    let delete = sqlite::sql::soft_delete_row("\"crm7_person\"", &soft, &at);
    assert_eq!(
        delete,
        "UPDATE \"crm7_person\" SET \"_deleted\" = 1, \"_deleted_at\" = '2025-11-29 12:00:00.123' \
         WHERE \"person_id\" = ?1 AND \"_deleted\" = 0"
    );
    assert_parses(&SQLiteDialect {}, &delete);
    let shadow = "\"crm7_person__resync\"";
    for statement in sqlite::sql::SOFT.swap("\"crm7_person\"", shadow, &soft).split("; ") {
        assert_parses(&SQLiteDialect {}, statement);
    }
    assert_parses(&SQLiteDialect {}, &sqlite::sql::rename_table("crm7_person_history", "crm7_person_history_1"));

    let at = postgres::sql::SOFT.at(&at_time);
    let delete = postgres::sql::soft_delete_staged_keys("\"crm7\".\"person\"", &soft, "dbmirror_k_1", &at);
    assert_eq!(
        delete,
        "UPDATE \"crm7\".\"person\" AS t SET \"_deleted\" = TRUE, \
         \"_deleted_at\" = '2025-11-29 12:00:00.123'::timestamp(3) FROM dbmirror_k_1 AS s \
         WHERE t.\"person_id\" = s.\"person_id\" AND t.\"_deleted\" = FALSE"
    );
    assert_parses(&PostgreSqlDialect {}, &delete);
    let swap = postgres::sql::SOFT.swap("\"crm7\".\"person\"", "\"crm7\".\"person__resync\"", &soft);
    for statement in swap.split("; ") {
        assert_parses(&PostgreSqlDialect {}, statement);
    }
    assert_parses(&PostgreSqlDialect {}, &postgres::sql::SOFT.flag_all("\"crm7\".\"person\"", &at));
}
