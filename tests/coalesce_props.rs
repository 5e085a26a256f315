//! Coalescing is invisible: for any event sequence cut into batches anywhere, applying the
//! coalesced batches gives the same tables as applying the events one by one.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use dbmirror::coalesce::{Batch, CoalesceErrorKind, Coalescer, FlushPolicy};
use dbmirror::decode::{ChangeEvent, Decoded, Event, Field, Op, Snapshot, SourceInfo, Value};
use dbmirror::protocol::Position;
use dbmirror::row::{Cell, OwnedRow, PrimaryKey};
use dbmirror::schema::{ColumnSchema, SchemaChangeKind, SchemaRegistry, SqlType, TableChange, TableId, TableSchema};
use proptest::prelude::*;

const TEXTS: [&str; 4] = ["a", "Åsa", "O'Brien", ""];

/// Table 0: `crm7.person(id int PK, v int, s nvarchar)`; table 1: `crm7.link(a int, b int, v int; PK (a, b))`.
fn registry() -> SchemaRegistry {
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
enum GenOp {
    Upsert { table: usize, key: i64, v: i64, op: Op },
    Update { table: usize, old: i64, new: i64, v: i64 },
    Delete { table: usize, key: i64, with_before: bool },
    Truncate { table: usize },
    Tombstone,
}

fn gen_op() -> impl Strategy<Value = GenOp> {
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
fn image(table: usize, key: i64, v: i64) -> Vec<Field<'static>> {
    match table {
        0 => vec![
            Field { name: "id", value: Value::Int(key) },
            Field { name: "v", value: Value::Int(v) },
            Field { name: "s", value: Value::Text(TEXTS[v.rem_euclid(4) as usize]) },
        ],
        _ => vec![
            Field { name: "a", value: Value::Int(key / 2) },
            Field { name: "b", value: Value::Int(key % 2) },
            Field { name: "v", value: Value::Int(v) },
        ],
    }
}

fn owned(fields: &[Field<'_>]) -> OwnedRow {
    fields.iter().map(|f| Cell::from_value(&f.value).unwrap()).collect()
}

fn key_of(table: usize, key: i64) -> PrimaryKey {
    match table {
        0 => [Cell::Int(key)].into_iter().collect(),
        _ => [Cell::Int(key / 2), Cell::Int(key % 2)].into_iter().collect(),
    }
}

fn event(op: &GenOp, offset: i64) -> Decoded<'static> {
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

type Model = [HashMap<PrimaryKey, OwnedRow>; 2];

fn apply_one(model: &mut Model, op: &GenOp) {
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

fn apply_batch(model: &mut Model, batch: &Batch) {
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn coalesced_batches_equal_one_by_one(
        ops in proptest::collection::vec(gen_op(), 0..60),
        cuts in proptest::collection::vec(any::<bool>(), 60),
    ) {
        let schemas = registry();
        let mut expected: Model = Default::default();
        ops.iter().for_each(|op| apply_one(&mut expected, op));

        let mut actual: Model = Default::default();
        let mut coalescer = Coalescer::new(FlushPolicy::default());
        let mut segment_max: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut segment_len = 0u64;
        let now = Instant::now();
        for (i, op) in ops.iter().enumerate() {
            coalescer.push(&event(op, i as i64), &schemas, now).unwrap();
            let slot = segment_max.entry(("t-cdc".to_string(), (i % 3) as i32)).or_insert(0);
            *slot = (*slot).max(i as i64);
            segment_len += 1;
            if cuts[i] || i + 1 == ops.len() {
                let batch = coalescer.take();
                prop_assert_eq!(batch.offsets(), &segment_max);
                prop_assert_eq!(batch.records(), segment_len);
                for tb in batch.tables() {
                    // At most one change per key, and no key both deleted and upserted.
                    let deleted: Vec<_> = tb.deletes().collect();
                    prop_assert!(tb.upserts().all(|(k, _)| !deleted.contains(&k)));
                }
                apply_batch(&mut actual, &batch);
                segment_max.clear();
                segment_len = 0;
            }
        }
        prop_assert_eq!(actual, expected);
    }
}

#[test]
fn hot_key_updates_collapse_to_one_row_and_flush_by_records() {
    let schemas = registry();
    let mut coalescer = Coalescer::new(FlushPolicy { max_records: 1000, ..FlushPolicy::default() });
    let now = Instant::now();
    for i in 0..999 {
        coalescer.push(&event(&GenOp::Upsert { table: 0, key: 1, v: i, op: Op::Update }, i), &schemas, now).unwrap();
        assert!(!coalescer.should_flush(now));
    }
    coalescer.push(&event(&GenOp::Upsert { table: 0, key: 1, v: 999, op: Op::Update }, 999), &schemas, now).unwrap();
    assert!(coalescer.should_flush(now));
    let batch = coalescer.take();
    let table = batch.tables().next().unwrap();
    assert_eq!(table.len(), 1);
    assert_eq!(table.upserts().next().unwrap().1[1], Cell::Int(999));
    assert_eq!(batch.records(), 1000);
}

#[test]
fn flush_by_age() {
    let schemas = registry();
    let policy = FlushPolicy { max_age: std::time::Duration::from_millis(500), ..FlushPolicy::default() };
    let mut coalescer = Coalescer::new(policy);
    let t0 = Instant::now();
    assert!(!coalescer.should_flush(t0 + std::time::Duration::from_secs(60)), "an empty batch never ages");
    coalescer.push(&event(&GenOp::Tombstone, 0), &schemas, t0).unwrap();
    assert!(!coalescer.should_flush(t0 + std::time::Duration::from_millis(499)));
    assert!(coalescer.should_flush(t0 + std::time::Duration::from_millis(500)));
    assert_eq!(coalescer.deadline(), Some(t0 + std::time::Duration::from_millis(500)));
}

#[test]
fn bad_events_leave_the_batch_untouched_and_name_the_record() {
    let schemas = registry();
    let mut coalescer = Coalescer::new(FlushPolicy::default());
    let now = Instant::now();
    coalescer.push(&event(&GenOp::Upsert { table: 0, key: 1, v: 5, op: Op::Create }, 0), &schemas, now).unwrap();
    // A row with a column the schema does not know.
    let mut bad = event(&GenOp::Upsert { table: 0, key: 2, v: 6, op: Op::Create }, 1);
    if let Event::Change(c) = &mut bad.event {
        c.after.as_mut().unwrap().push(Field { name: "extra", value: Value::Int(1) });
    }
    let err = coalescer.push(&bad, &schemas, now).unwrap_err();
    assert!(matches!(*err.kind, CoalesceErrorKind::UnknownColumn { .. }));
    assert_eq!(
        err.to_string(),
        "record t-cdc/1@1: table crm7.person has no column `extra` (the schema is older than the event)"
    );
    // A delete without any key.
    let mut keyless = event(&GenOp::Delete { table: 0, key: 3, with_before: false }, 2);
    if let Event::Change(c) = &mut keyless.event {
        c.key = None;
    }
    assert!(matches!(*coalescer.push(&keyless, &schemas, now).unwrap_err().kind, CoalesceErrorKind::MissingKey { .. }));
    // A table without a schema.
    let mut unknown = event(&GenOp::Upsert { table: 0, key: 1, v: 5, op: Op::Create }, 3);
    if let Event::Change(c) = &mut unknown.event {
        c.source.table = "nosuch";
    }
    assert!(matches!(*coalescer.push(&unknown, &schemas, now).unwrap_err().kind, CoalesceErrorKind::UnknownTable(_)));
    let batch = coalescer.take();
    assert_eq!(batch.records(), 1);
    assert_eq!(batch.offsets().values().copied().collect::<Vec<_>>(), vec![0]);
}

#[test]
fn schema_change_within_a_batch_is_refused() {
    let mut schemas = registry();
    let mut coalescer = Coalescer::new(FlushPolicy::default());
    let now = Instant::now();
    coalescer.push(&event(&GenOp::Upsert { table: 0, key: 1, v: 5, op: Op::Create }, 0), &schemas, now).unwrap();
    let mut altered = (**schemas.get("crm7", "person").unwrap()).clone();
    altered.columns[2].sql_type = SqlType::NVarChar(None);
    schemas.apply(&TableChange { kind: SchemaChangeKind::Alter, table: altered });
    let err = coalescer
        .push(&event(&GenOp::Upsert { table: 0, key: 2, v: 5, op: Op::Create }, 1), &schemas, now)
        .unwrap_err();
    assert!(matches!(*err.kind, CoalesceErrorKind::SchemaChangedWithinBatch(_)));
    coalescer.take();
    coalescer.push(&event(&GenOp::Upsert { table: 0, key: 2, v: 5, op: Op::Create }, 1), &schemas, now).unwrap();
}
