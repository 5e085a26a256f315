//! The sink contract on every target that runs here (SQLite, PostgreSQL, and SQL Server when
//! `DBMIRROR_MSSQL_URL` is set): the replica equals the source after any history and
//! batching, replays are no-ops, failures commit nothing, every type round-trips exactly, and
//! schema changes evolve tables and survive a reopen. Replicas are compared in canonical form.

use dbmirror::sink::Replica;
use std::time::Instant;

use dbmirror::canonical::{canonical, parse_stored};
use dbmirror::coalesce::{Coalescer, FlushPolicy};
use dbmirror::decode::{ChangeEvent, Decoded, Event, Field, Op, Snapshot, SourceInfo, Value};
use dbmirror::protocol::Position;
use dbmirror::row::Cell;
use dbmirror::schema::{ColumnSchema, SchemaChangeKind, SchemaRegistry, SqlType, TableChange, TableId, TableSchema};
use dbmirror::sink::{CanonicalRow, SchemaOutcome, Sink, SinkOptions};
use dbmirror::state::{SessionValue, TableState};
use proptest::prelude::*;

use dbmirror::owner::columns::{ColumnRules, Projection};
use dbmirror::owner::modes::{DeleteMode, DeleteModes};
use dbmirror::sink::TargetKind;

use crate::support::targets::{TestDb, fresh_databases};
use crate::support::{GenOp, Model, apply_one, event, gen_op, registry};

pub(crate) fn create_all(sink: &mut dyn Replica, schemas: &SchemaRegistry) {
    for name in ["person", "link"] {
        let table = (**schemas.get("crm7", name).unwrap()).clone();
        assert_eq!(
            sink.apply_schema(&TableChange { kind: SchemaChangeKind::Create, table }).unwrap(),
            SchemaOutcome::Created
        );
    }
}

/// A table's rows in canonical form, sorted.
pub(crate) fn sorted(mut rows: Vec<CanonicalRow>) -> Vec<CanonicalRow> {
    rows.sort();
    rows
}

/// The model's rows as the replica should hold them: through the owner's column rules, if any.
pub(crate) fn model_rows(model: &Model, schemas: &SchemaRegistry, rules: &ColumnRules) -> [Vec<CanonicalRow>; 2] {
    let table = |i: usize, name: &str| {
        let schema = schemas.get("crm7", name).unwrap();
        let projection = rules.for_table(&schema.id).map(|r| Projection::new(schema, &r).unwrap());
        sorted(
            model[i]
                .values()
                .map(|row| {
                    let (cells, columns) = match &projection {
                        Some(p) => (p.row(rules, row).to_vec(), &p.schema.columns),
                        None => (row.to_vec(), &schema.columns),
                    };
                    cells.iter().zip(columns).map(|(c, col)| canonical(c, col.sql_type)).collect()
                })
                .collect(),
        )
    };
    [table(0, "person"), table(1, "link")]
}

/// Column rules for the property test: every kind, on keys and other columns.
fn some_rules() -> ColumnRules {
    let json = serde_json::json!({
        "HashKey": "property test key, long enough",
        "crm7.person": { "Hash": ["id"], "Exclude": ["v"], "Fixed": { "s": "~" } },
        "link": { "Hash": ["b"] }
    });
    dbmirror::owner::columns::parse(Some(&json), std::path::Path::new("."), &|_| None).unwrap()
}

pub(crate) fn replica_rows(sink: &mut dyn Replica) -> [Vec<CanonicalRow>; 2] {
    let mut read = |name: &str| sorted(sink.read_rows(&TableId::new("crm7", name)).unwrap());
    [read("person"), read("link")]
}

/// Delete modes for the property test: none, or each table in one of the other two.
fn some_modes(choice: usize) -> DeleteModes {
    match choice {
        0 => DeleteModes::default(),
        1 => DeleteModes::of(&[("person", DeleteMode::Soft), ("crm7.link", DeleteMode::History)]),
        _ => DeleteModes::of(&[("person", DeleteMode::History), ("link", DeleteMode::Soft)]),
    }
}

/// What the modes keep beside the current state, read from the target's tables: rows
/// flagged deleted in a soft table, rows in a history table.
fn kept(db: &TestDb, table: &str, mode: DeleteMode) -> Option<i64> {
    if db.kind == TargetKind::SqlServer {
        return None;
    }
    Some(match mode {
        DeleteMode::Hard => return None,
        DeleteMode::Soft => db.scalar(
            &format!("SELECT count(*) FROM crm7_{table} WHERE _deleted = 1"),
            &format!("SELECT count(*) FROM crm7.{table} WHERE _deleted"),
        ),
        DeleteMode::History => db.scalar(
            &format!("SELECT count(*) FROM crm7_{table}_history"),
            &format!("SELECT count(*) FROM crm7.{table}_history"),
        ),
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// Any history, cut into batches anywhere, each batch applied twice (a replay): every
    /// target's replica equals the source — through the owner's column rules when `ruled`,
    /// in any mix of delete modes — and the stored offsets are the highest consumed. A soft
    /// table flags exactly the keys a committed batch had and the source no longer has; a
    /// history table holds each change event once.
    #[test]
    fn every_target_equals_the_source_after_any_history(
        ops in proptest::collection::vec(gen_op(), 0..40),
        cuts in proptest::collection::vec(any::<bool>(), 40),
        ready in any::<bool>(),
        ruled in any::<bool>(),
        mode_choice in 0usize..3,
    ) {
        let schemas = registry();
        let rules = if ruled { some_rules() } else { ColumnRules::default() };
        let modes = some_modes(mode_choice);
        let owner = std::sync::Arc::new(dbmirror::owner::OwnerRules {
            columns: rules.clone(),
            modes: modes.clone(),
            ..Default::default()
        });
        for db in fresh_databases() {
            let options = SinkOptions {
                owner: owner.clone(),
                ..SinkOptions::default()
            };
            let mut sink = db.open(options);
            create_all(sink.as_mut(), &schemas);
            // Snapshotting tables take the optimistic bulk path; ready ones always merge.
            if ready {
                for name in ["person", "link"] {
                    sink.set_table_state(&TableId::new("crm7", name), TableState::Ready).unwrap();
                }
            }
            let mut expected: Model = Default::default();
            let mut committed: [std::collections::HashSet<dbmirror::row::PrimaryKey>; 2] = Default::default();
            let mut events = [0i64; 2];
            let mut coalescer = Coalescer::new(FlushPolicy::default()).keep_logs(modes.log_filter());
            for (i, op) in ops.iter().enumerate() {
                apply_one(&mut expected, op);
                if let GenOp::Upsert { table, .. } | GenOp::Update { table, .. } | GenOp::Delete { table, .. } = op {
                    events[*table] += 1;
                }
                coalescer.push(&event(op, i as i64), &schemas, Instant::now()).unwrap();
                if cuts[i] || i + 1 == ops.len() {
                    let batch = coalescer.take();
                    sink.apply(&batch).unwrap();
                    sink.apply(&batch).unwrap();
                    prop_assert_eq!(replica_rows(sink.as_mut()), model_rows(&expected, &schemas, &rules), "{:?}", db.kind);
                    for (t, name) in ["person", "link"].iter().enumerate() {
                        committed[t].extend(expected[t].keys().cloned());
                        let mode = modes.for_table(&TableId::new("crm7", *name));
                        let gone = committed[t].iter().filter(|k| !expected[t].contains_key(*k)).count() as i64;
                        let want = match mode { DeleteMode::Soft => gone, _ => events[t] };
                        if let Some(found) = kept(&db, name, mode) {
                            prop_assert_eq!(found, want, "{:?} {} {:?}", db.kind, name, mode);
                        }
                    }
                }
            }
            let offsets = sink.offsets().unwrap();
            for p in 0..3i64 {
                let last = (0..ops.len() as i64).filter(|i| i % 3 == p).max();
                prop_assert_eq!(offsets.get(&("t-cdc".to_string(), p as i32)).copied(), last, "{:?}", db.kind);
            }
        }
    }
}

#[test]
fn offsets_only_move_forward() {
    let schemas = registry();
    for db in fresh_databases() {
        let mut sink = db.open(SinkOptions::default());
        create_all(sink.as_mut(), &schemas);
        let mut coalescer = Coalescer::new(FlushPolicy::default());
        coalescer.push(&event(&GenOp::Tombstone, 30), &schemas, Instant::now()).unwrap();
        sink.apply(&coalescer.take()).unwrap();
        coalescer.push(&event(&GenOp::Tombstone, 3), &schemas, Instant::now()).unwrap();
        sink.apply(&coalescer.take()).unwrap();
        assert_eq!(sink.offsets().unwrap().get(&("t-cdc".into(), 0)), Some(&30), "{:?}", db.kind);
    }
}

#[test]
fn a_failed_batch_commits_nothing_and_a_retry_after_the_fix_succeeds() {
    let schemas = registry();
    for db in fresh_databases() {
        let mut sink = db.open(SinkOptions::default());
        create_all(sink.as_mut(), &schemas);
        // The replica's `link.v` refuses NULL: a batch carrying one fails at the target.
        db.exec_per_target(
            "DROP TABLE crm7_link; CREATE TABLE crm7_link (a INTEGER, b INTEGER, v BIGINT NOT NULL, PRIMARY KEY (a, b))",
            "ALTER TABLE crm7.link ALTER COLUMN v SET NOT NULL",
            "ALTER TABLE [crm7].[link] ALTER COLUMN [v] bigint NOT NULL",
        );
        let mut coalescer = Coalescer::new(FlushPolicy::default());
        let now = Instant::now();
        coalescer.push(&event(&GenOp::Upsert { table: 0, key: 1, v: 7, op: Op::Create }, 0), &schemas, now).unwrap();
        let mut bad = event(&GenOp::Upsert { table: 1, key: 1, v: 7, op: Op::Create }, 1);
        if let Event::Change(c) = &mut bad.event {
            c.after.as_mut().unwrap()[2].value = Value::Null;
        }
        coalescer.push(&bad, &schemas, now).unwrap();
        let batch = coalescer.take();
        let error = sink.apply(&batch).unwrap_err();
        assert!(error.to_string().contains("link"), "{:?}: {error}", db.kind);
        assert!(replica_rows(sink.as_mut())[0].is_empty(), "{:?}: the first table's rows must roll back", db.kind);
        assert!(sink.offsets().unwrap().is_empty(), "{:?}: offsets must not advance", db.kind);
        // An operator fixes the table; the same batch, retried, now lands whole.
        db.exec_per_target(
            "DROP TABLE crm7_link; CREATE TABLE crm7_link (a INTEGER, b INTEGER, v BIGINT, PRIMARY KEY (a, b))",
            "ALTER TABLE crm7.link ALTER COLUMN v DROP NOT NULL",
            "ALTER TABLE [crm7].[link] ALTER COLUMN [v] bigint NULL",
        );
        sink.apply(&batch).unwrap();
        let rows = replica_rows(sink.as_mut());
        assert_eq!((rows[0].len(), rows[1].len()), (1, 1), "{:?}", db.kind);
        assert_eq!(sink.offsets().unwrap().get(&("t-cdc".into(), 1)), Some(&1));
    }
}

fn column(name: &str, sql_type: SqlType, nullable: bool, position: u32) -> ColumnSchema {
    ColumnSchema {
        name: name.into(),
        sql_type,
        type_name: sql_type.to_string().split('(').next().unwrap_or_default().to_owned(),
        position,
        nullable,
        identity: false,
        default_expression: None,
    }
}

/// One column per SQL Server type with its extreme and awkward values, as canonical text.
fn type_cases() -> Vec<(SqlType, [&'static str; 2])> {
    vec![
        (SqlType::Bit, ["0", "1"]),
        (SqlType::TinyInt, ["0", "255"]),
        (SqlType::SmallInt, ["-32768", "32767"]),
        (SqlType::Int, ["-2147483648", "2147483647"]),
        (SqlType::BigInt, ["-9223372036854775808", "9223372036854775807"]),
        (SqlType::Real, ["-3.4028235e38", "1.1754944e-38"]),
        (SqlType::Float, ["-1.7976931348623157e308", "5e-324"]),
        (SqlType::Decimal { precision: 38, scale: 0 }, ["-99999999999999999999999999999999999999", "0"]),
        (
            SqlType::Decimal { precision: 38, scale: 38 },
            ["0.00000000000000000000000000000000000001", "-0.99999999999999999999999999999999999999"],
        ),
        (SqlType::Decimal { precision: 18, scale: 2 }, ["1234567890123456.78", "-0.01"]),
        (SqlType::Numeric { precision: 10, scale: 5 }, ["12345.67891", "0.00000"]),
        (SqlType::Money, ["-922337203685477.5808", "922337203685477.5807"]),
        (SqlType::SmallMoney, ["-214748.3648", "214748.3647"]),
        (SqlType::NVarChar(Some(40)), ["Åsa \"Ace\" O'Brien 😀", ""]),
        (SqlType::NVarChar(None), ["line1\r\nline2\ttab \\ backslash", "ünïcödé 漢字"]),
        (SqlType::VarChar(Some(10)), ["plain", " padded  "]),
        (SqlType::NChar(Some(5)), ["ab   ", "abcde"]),
        (SqlType::Xml, ["<a b=\"1\">x &amp; y</a>", "<r/>"]),
        (SqlType::UniqueIdentifier, ["6F9619FF-8B86-D011-B42D-00C04FC964FF", "00000000-0000-0000-0000-000000000000"]),
        (SqlType::VarBinary(None), ["0x000102FF", "0x"]),
        (SqlType::Binary(Some(4)), ["0xDEADBEEF", "0x00000000"]),
        (SqlType::Date, ["0001-01-01", "9999-12-31"]),
        (SqlType::Date, ["1696-03-17", "1899-12-31"]),
        (SqlType::Time { scale: 7 }, ["00:00:00.0000000", "23:59:59.9999999"]),
        (SqlType::Time { scale: 3 }, ["12:34:56.789", "00:00:00.001"]),
        (SqlType::DateTime, ["1753-01-01 00:00:00.000", "9999-12-31 23:59:59.997"]),
        (SqlType::SmallDateTime, ["1900-01-01 00:00:00", "2079-06-06 23:59:00"]),
        (SqlType::DateTime2 { scale: 7 }, ["0001-01-01 00:00:00.0000000", "9999-12-31 23:59:59.9999999"]),
        (SqlType::DateTime2 { scale: 3 }, ["1600-02-29 12:00:00.123", "2024-12-16 21:02:07.000"]),
        (SqlType::DateTime2 { scale: 0 }, ["2024-01-01 00:00:00", "1700-01-01 12:00:00"]),
        (
            SqlType::DateTimeOffset { scale: 7 },
            ["2024-06-30 22:15:00.1234567 -09:30", "0001-01-02 00:00:00.0000000 +14:00"],
        ),
        (SqlType::DateTimeOffset { scale: 0 }, ["9999-12-31 09:59:59 -14:00", "2024-01-01 00:00:00 +00:00"]),
    ]
}

/// A change event carrying the given cells (as decoded values) for `crm7.types`.
fn row_event(cells: &[Cell], schema: &TableSchema, offset: i64) -> Decoded<'static> {
    let fields: Vec<Field<'static>> = cells
        .iter()
        .zip(&schema.columns)
        .map(|(cell, col)| Field { name: Box::leak(col.name.clone().into_boxed_str()), value: to_value(cell) })
        .collect();
    Decoded {
        position: Some(Position { topic: "t-cdc", partition: 0, offset }),
        event: Event::Change(ChangeEvent {
            op: Op::Read,
            key: None,
            before: None,
            after: Some(fields),
            source: SourceInfo {
                version: None,
                connector: Some("sqlserver"),
                name: None,
                ts_ms: None,
                snapshot: Snapshot::True,
                db: None,
                schema: "crm7",
                table: "types",
                change_lsn: None,
                commit_lsn: None,
                event_serial_no: None,
            },
            ts_ms: None,
            transaction: None,
        }),
    }
}

fn to_value(cell: &Cell) -> Value<'static> {
    match cell {
        Cell::Null => Value::Null,
        Cell::Bool(b) => Value::Bool(*b),
        Cell::Int(v) => Value::Int(*v),
        Cell::UInt(v) => Value::UInt(*v),
        Cell::Float(v) => Value::Float(*v),
        Cell::Text(s) => Value::Text(Box::leak(s.clone())),
        Cell::Binary(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            Value::Binary(
                dbmirror::decode::Binary::new(Box::leak(hex.into_boxed_str()), dbmirror::decode::BinaryEncoding::Hex)
                    .unwrap(),
            )
        }
        Cell::Decimal(d) => Value::Decimal(*d),
        Cell::Date(d) => Value::Date(*d),
        Cell::Time(t) => Value::Time(*t),
        Cell::DateTime(dt) => Value::DateTime(*dt),
        Cell::DateTimeOffset(v) => Value::DateTimeOffset(*v),
    }
}

/// Every type, at its extremes and as NULL, through each target and back, unchanged.
#[test]
fn every_type_round_trips_exactly_on_every_target() {
    let cases = type_cases();
    let mut columns = vec![column("id", SqlType::Int, false, 1)];
    for (i, (sql, _)) in cases.iter().enumerate() {
        columns.push(column(&format!("c{i}"), *sql, true, i as u32 + 2));
    }
    let schema = TableSchema { id: TableId::new("crm7", "types"), columns, primary_key: vec!["id".into()] };
    let mut registry = SchemaRegistry::new();
    let change = TableChange { kind: SchemaChangeKind::Create, table: schema.clone() };
    registry.apply(&change);
    let mut rows: Vec<Vec<Cell>> = (0..2)
        .map(|r| {
            let mut row = vec![Cell::Int(r as i64)];
            row.extend(cases.iter().map(|(sql, values)| parse_stored(values[r], *sql).unwrap()));
            row
        })
        .collect();
    rows.push(std::iter::once(Cell::Int(2)).chain(cases.iter().map(|_| Cell::Null)).collect());
    let expected: Vec<CanonicalRow> = sorted(
        rows.iter()
            .map(|row| row.iter().zip(&schema.columns).map(|(c, col)| canonical(c, col.sql_type)).collect())
            .collect(),
    );
    for db in fresh_databases() {
        let mut sink = db.open(SinkOptions::default());
        sink.apply_schema(&change).unwrap();
        // Twice: once into the empty table (the snapshot path), once as a merge over it.
        for round in 0..2 {
            let mut coalescer = Coalescer::new(FlushPolicy::default());
            for (i, row) in rows.iter().enumerate() {
                coalescer.push(&row_event(row, &schema, (round * 10 + i) as i64), &registry, Instant::now()).unwrap();
            }
            sink.apply(&coalescer.take()).unwrap();
            let got = sorted(sink.read_rows(&schema.id).unwrap());
            for (g, e) in got.iter().zip(&expected) {
                for ((g, e), col) in g.iter().zip(e).zip(&schema.columns) {
                    assert_eq!(g, e, "{:?} round {round}: column {} ({})", db.kind, col.name, col.sql_type);
                }
            }
            assert_eq!(got.len(), expected.len());
            assert_eq!(sink.count_rows(&schema.id).unwrap(), expected.len() as u64, "{:?}", db.kind);
        }
    }
}

fn reopen_with(db: &TestDb, prefix: Option<&str>) -> Box<dyn Replica> {
    db.open(SinkOptions {
        table_prefix: prefix.map(str::to_owned),
        skip_tables: vec!["crm7.ignored".into()],
        ..Default::default()
    })
}

#[test]
fn schema_changes_evolve_tables_and_survive_a_reopen() {
    for db in fresh_databases() {
        let kind = db.kind;
        let mut sink = reopen_with(&db, Some("replica"));
        let base = TableSchema {
            id: TableId::new("crm7", "sale"),
            columns: vec![column("sale_id", SqlType::Int, false, 1), column("amount", SqlType::Money, true, 2)],
            primary_key: vec!["sale_id".into()],
        };
        let change = |kind, table: &TableSchema| TableChange { kind, table: table.clone() };
        assert_eq!(sink.apply_schema(&change(SchemaChangeKind::Create, &base)).unwrap(), SchemaOutcome::Created);
        assert_eq!(sink.apply_schema(&change(SchemaChangeKind::Create, &base)).unwrap(), SchemaOutcome::Unchanged);
        let mut registry = SchemaRegistry::new();
        registry.apply(&change(SchemaChangeKind::Create, &base));
        let row = [Cell::Int(1), parse_stored("5.0000", SqlType::Money).unwrap()];
        let mut coalescer = Coalescer::new(FlushPolicy::default());
        let mut ev = row_event(&row, &base, 0);
        if let Event::Change(c) = &mut ev.event {
            c.source.table = "sale";
        }
        coalescer.push(&ev, &registry, Instant::now()).unwrap();
        sink.apply(&coalescer.take()).unwrap();

        let mut wider = base.clone();
        wider.columns.push(column("note", SqlType::NVarChar(None), true, 3));
        let outcome = sink.apply_schema(&change(SchemaChangeKind::Alter, &wider)).unwrap();
        assert_eq!(outcome, SchemaOutcome::Altered { added: vec!["note".into()] }, "{kind:?}");
        let one = |s: &str| Some(s.to_owned());
        assert_eq!(sink.read_rows(&base.id).unwrap(), vec![vec![one("1"), one("5.0000"), None]], "{kind:?}");

        // Reopen without the prefix: the state table remembers the definition and where the
        // table was created, so the next change is diffed right and nothing moves.
        drop(sink);
        let mut sink = reopen_with(&db, None);
        let records = sink.tables();
        assert_eq!(records.len(), 1);
        assert_eq!(*records[0].schema, wider, "{kind:?}");
        assert_eq!(records[0].target_schema, "replica");
        assert_eq!(records[0].state, TableState::Snapshotting);
        sink.set_table_state(&base.id, TableState::Ready).unwrap();

        let mut retyped = wider.clone();
        retyped.columns[1].sql_type = SqlType::Decimal { precision: 19, scale: 2 };
        assert_eq!(sink.apply_schema(&change(SchemaChangeKind::Alter, &retyped)).unwrap(), SchemaOutcome::Recreated);
        assert!(sink.read_rows(&base.id).unwrap().is_empty(), "{kind:?}: re-created empty");
        let records = sink.tables();
        assert_eq!((records[0].target_schema.as_str(), records[0].state), ("replica", TableState::ResyncPending));

        let blocked = TableSchema { id: TableId::new("crm7", "credentials"), ..base.clone() };
        assert_eq!(sink.apply_schema(&change(SchemaChangeKind::Create, &blocked)).unwrap(), SchemaOutcome::Skipped);
        let ignored = TableSchema { id: TableId::new("crm7", "Ignored"), ..base.clone() };
        assert_eq!(sink.apply_schema(&change(SchemaChangeKind::Create, &ignored)).unwrap(), SchemaOutcome::Skipped);
        let no_key = TableSchema { id: TableId::new("crm7", "nokey"), primary_key: vec![], ..base.clone() };
        assert!(sink.apply_schema(&change(SchemaChangeKind::Create, &no_key)).is_err());

        assert_eq!(sink.apply_schema(&change(SchemaChangeKind::Drop, &retyped)).unwrap(), SchemaOutcome::Dropped);
        assert!(sink.tables().is_empty());
        drop(sink);
        assert!(reopen_with(&db, None).tables().is_empty(), "{kind:?}: the drop is durable");
    }
}

#[test]
fn session_facts_are_stored_replaced_and_survive_a_reopen() {
    for db in fresh_databases() {
        let mut sink = db.open(SinkOptions::default());
        assert!(sink.read_facts().unwrap().is_empty());
        let text = |s: &str| SessionValue::Text(s.into());
        sink.write_facts(&[
            ("tenant_context_id", text("cust1234")),
            ("replication_id", text("reporting")),
            ("refresh_token", SessionValue::Sealed(vec![0, 1, 2, 255])),
        ])
        .unwrap();
        sink.write_facts(&[("refresh_token", SessionValue::Sealed(vec![9; 40]))]).unwrap();
        drop(sink);
        let session = db.open(SinkOptions::default()).read_facts().unwrap();
        assert_eq!(session.len(), 3, "{:?}", db.kind);
        assert_eq!(session["tenant_context_id"], text("cust1234"));
        assert_eq!(
            session["refresh_token"],
            SessionValue::Sealed(vec![9; 40]),
            "{:?}: rotated token replaced",
            db.kind
        );
    }
}

/// `validate`'s permission check succeeds on a writable replica and leaves nothing behind:
/// running it twice proves the probe table was rolled back.
#[test]
fn the_write_check_leaves_nothing_behind() {
    for db in fresh_databases() {
        let mut sink = db.open(SinkOptions::default());
        sink.check_writable().unwrap_or_else(|e| panic!("{:?}: {e}", db.kind));
        sink.check_writable().unwrap_or_else(|e| panic!("{:?}: a second check: {e}", db.kind));
        assert!(sink.tables().is_empty() && sink.offsets().unwrap().is_empty(), "{:?}", db.kind);
    }
}

/// A PostgreSQL replica over TLS: with the server's certificate as `sslrootcert` the sink
/// connects encrypted (checked on the server side); with no trusted root it refuses.
#[test]
fn postgres_over_tls_verifies_the_server_certificate() {
    let (Some(admin), Some(root)) =
        (crate::support::targets::postgres_admin(), crate::support::targets::postgres_root_cert())
    else {
        eprintln!("skipped: no test cluster with TLS");
        return;
    };
    let db = fresh_databases().into_iter().find(|d| d.kind == dbmirror::sink::TargetKind::Postgres).unwrap();
    let over_tls = format!("{} sslmode=verify-full sslrootcert={}", db.connection_string, root.display());
    let mut sink =
        dbmirror::sink::postgres::PgSink::open(&over_tls, SinkOptions::default()).unwrap_or_else(|e| panic!("{e:?}"));
    sink.execute_batch(
        "DO $$ BEGIN IF NOT (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) THEN RAISE EXCEPTION 'plain'; END IF; END $$",
    )
    .expect("the connection is encrypted");
    let untrusted = format!("{admin} dbname=postgres sslmode=require");
    let refused = dbmirror::sink::postgres::PgSink::open(&untrusted, SinkOptions::default()).unwrap_err().to_string();
    assert!(refused.contains("certificate") || refused.contains("trusted roots"), "{refused}");
}
