//! Shared test helpers: a two-table CRM-like schema, a generator of random change events and
//! a one-by-one model of what the source tables contain.

/// A headless Chromium driven through chromedriver, for the page tests.
pub mod browser;

/// Real databases per target.
pub mod targets;

/// The in-process reference cloud and the client's side of it.
pub mod world;

use std::collections::HashMap;

use dbmirror::coalesce::Batch;
use dbmirror::decode::{ChangeEvent, Decoded, Event, Field, Op, Snapshot, SourceInfo, Value};
use dbmirror::protocol::Position;
use dbmirror::row::{Cell, OwnedRow, PrimaryKey};
use dbmirror::schema::{ColumnSchema, SchemaChangeKind, SchemaRegistry, SqlType, TableChange, TableId, TableSchema};
use proptest::prelude::*;

pub const TEXTS: [&str; 4] = ["a", "Åsa", "O'Brien", ""];

/// Table 0: `crm7.person(id int PK, v int, s nvarchar)`; table 1: `crm7.link(a int, b int, v int; PK (a, b))`.
/// Runs `work` while another thread reads `count` over and over; returns the smallest count
/// it saw (tests that readers never see a table empty).
pub fn fewest_while<T: Ord + Send>(count: impl Fn() -> T + Sync, work: impl FnOnce()) -> T {
    let reading = std::sync::atomic::AtomicBool::new(true);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut fewest = count();
            while reading.load(std::sync::atomic::Ordering::Relaxed) {
                fewest = fewest.min(count());
            }
            fewest
        });
        work();
        reading.store(false, std::sync::atomic::Ordering::Relaxed);
        reader.join().expect("the reader does not panic")
    })
}

pub fn registry() -> SchemaRegistry {
    let col = |name: &str, position, sql_type| ColumnSchema {
        name: name.into(),
        sql_type,
        type_name: sql_type.to_string(),
        position,
        nullable: true,
        identity: false,
        default_expression: None,
    };
    let mut reg = SchemaRegistry::new();
    for table in [
        TableSchema {
            id: TableId::new("crm7", "person"),
            columns: vec![
                col("id", 1, SqlType::Int),
                col("v", 2, SqlType::Int),
                col("s", 3, SqlType::NVarChar(Some(20))),
            ],
            primary_key: vec!["id".into()],
        },
        TableSchema {
            id: TableId::new("crm7", "link"),
            columns: vec![col("a", 1, SqlType::Int), col("b", 2, SqlType::Int), col("v", 3, SqlType::BigInt)],
            primary_key: vec!["a".into(), "b".into()],
        },
    ] {
        reg.apply(&TableChange { kind: SchemaChangeKind::Create, table });
    }
    reg
}

#[derive(Debug, Clone)]
#[allow(dead_code)]
pub enum GenOp {
    Upsert { table: usize, key: i64, v: i64, op: Op },
    Update { table: usize, old: i64, new: i64, v: i64 },
    Delete { table: usize, key: i64, with_before: bool },
    Truncate { table: usize },
    Tombstone,
}

pub fn gen_op() -> impl Strategy<Value = GenOp> {
    let table = 0usize..2;
    let key = 0i64..5;
    prop_oneof![
        4 => (table.clone(), key.clone(), any::<i64>(), prop_oneof![Just(Op::Create), Just(Op::Read), Just(Op::Update)])
            .prop_map(|(table, key, v, op)| GenOp::Upsert { table, key, v, op }),
        2 => (table.clone(), key.clone(), key.clone(), any::<i64>()).prop_map(|(table, old, new, v)| GenOp::Update { table, old, new, v }),
        3 => (table.clone(), key, any::<bool>()).prop_map(|(table, key, with_before)| GenOp::Delete { table, key, with_before }),
        1 => table.prop_map(|table| GenOp::Truncate { table }),
        1 => Just(GenOp::Tombstone),
    ]
}

/// Table 1's key splits the generated key into (a, b) so composite keys collide too.
pub fn image(table: usize, key: i64, v: i64) -> Vec<Field<'static>> {
    match table {
        0 => vec![
            Field { name: "id", value: Value::Int(key) },
            // `person.v` is an `int`: keep the value in range, as the source would.
            Field { name: "v", value: Value::Int(i64::from(v as i32)) },
            Field { name: "s", value: Value::Text(TEXTS[v.rem_euclid(4) as usize]) },
        ],
        _ => vec![
            Field { name: "a", value: Value::Int(key / 2) },
            Field { name: "b", value: Value::Int(key % 2) },
            Field { name: "v", value: Value::Int(v) },
        ],
    }
}

pub fn owned(fields: &[Field<'_>]) -> OwnedRow {
    fields.iter().map(|f| Cell::from_value(&f.value).unwrap()).collect()
}

pub fn key_of(table: usize, key: i64) -> PrimaryKey {
    match table {
        0 => [Cell::Int(key)].into_iter().collect(),
        _ => [Cell::Int(key / 2), Cell::Int(key % 2)].into_iter().collect(),
    }
}

pub fn event(op: &GenOp, offset: i64) -> Decoded<'static> {
    let table_name = |t: usize| if t == 0 { "person" } else { "link" };
    let change = |table: usize, op: Op, before: Option<Vec<Field<'static>>>, after: Option<Vec<Field<'static>>>| {
        Event::Change(ChangeEvent {
            op,
            key: None,
            before,
            after,
            source: SourceInfo {
                version: None,
                connector: Some("sqlserver"),
                name: None,
                ts_ms: None,
                snapshot: Snapshot::False,
                db: None,
                schema: "crm7",
                table: table_name(table),
                change_lsn: None,
                commit_lsn: None,
                event_serial_no: None,
            },
            ts_ms: None,
            transaction: None,
        })
    };
    let ev = match *op {
        GenOp::Upsert { table, key, v, op } => change(table, op, None, Some(image(table, key, v))),
        GenOp::Update { table, old, new, v } => {
            change(table, Op::Update, Some(image(table, old, 0)), Some(image(table, new, v)))
        }
        GenOp::Delete { table, key, with_before: true } => change(table, Op::Delete, Some(image(table, key, 0)), None),
        GenOp::Delete { table, key, with_before: false } => {
            let Event::Change(mut c) = change(table, Op::Delete, None, None) else { unreachable!() };
            c.key = Some(image(table, key, 0).into_iter().take(if table == 0 { 1 } else { 2 }).collect());
            Event::Change(c)
        }
        GenOp::Truncate { table } => change(table, Op::Truncate, None, None),
        GenOp::Tombstone => Event::Tombstone,
    };
    Decoded { position: Some(Position { topic: "t-cdc", partition: (offset % 3) as i32, offset }), event: ev }
}

pub type Model = [HashMap<PrimaryKey, OwnedRow>; 2];

pub fn apply_one(model: &mut Model, op: &GenOp) {
    match *op {
        GenOp::Upsert { table, key, v, .. } => {
            model[table].insert(key_of(table, key), owned(&image(table, key, v)));
        }
        GenOp::Update { table, old, new, v } => {
            model[table].remove(&key_of(table, old));
            model[table].insert(key_of(table, new), owned(&image(table, new, v)));
        }
        GenOp::Delete { table, key, .. } => {
            model[table].remove(&key_of(table, key));
        }
        GenOp::Truncate { table } => model[table].clear(),
        GenOp::Tombstone => {}
    }
}

pub fn apply_batch(model: &mut Model, batch: &Batch) {
    for tb in batch.tables() {
        let t = &mut model[usize::from(tb.schema().id.table == "link")];
        if tb.truncate_first() {
            t.clear();
        }
        for key in tb.deletes() {
            t.remove(key);
        }
        for (key, row) in tb.upserts() {
            t.insert(key.clone(), row.clone());
        }
    }
}

/// A deterministic pseudo-random history of `n` operations (for tests outside proptest, such
/// as crash tests whose child process must regenerate exactly the same events).
pub fn scripted_ops(n: usize, seed: u64) -> Vec<GenOp> {
    let mut state = seed | 1;
    let mut next = move |bound: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % bound
    };
    (0..n)
        .map(|_| {
            let table = next(2) as usize;
            let key = next(50) as i64;
            match next(10) {
                0..=4 => GenOp::Upsert { table, key, v: next(1_000_000) as i64, op: Op::Update },
                5..=6 => GenOp::Update { table, old: key, new: next(50) as i64, v: next(1_000) as i64 },
                7..=8 => GenOp::Delete { table, key, with_before: true },
                _ => GenOp::Tombstone,
            }
        })
        .collect()
}
