//! Coalescing is invisible: for any event sequence cut into batches anywhere, applying the
//! coalesced batches gives the same tables as applying the events one by one.

use std::collections::BTreeMap;
use std::time::Instant;

use dbmirror::coalesce::{CoalesceErrorKind, Coalescer, FlushPolicy};
use dbmirror::decode::{Event, Field, Op, Value};
use dbmirror::row::Cell;
use dbmirror::schema::{SchemaChangeKind, SqlType, TableChange};
use proptest::prelude::*;

use crate::support::{GenOp, Model, apply_batch, apply_one, event, gen_op, registry};

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
