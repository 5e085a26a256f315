//! The simulated tenant's snapshot, encoded as the Debezium SQL Server connector would emit
//! it, decodes with the client's decoder into exactly the ground truth, and a SQLite replica
//! fed through the coalescer and sink holds exactly the ground truth.

use dbmirror::state::StateStore;
use std::collections::BTreeMap;
use std::time::Instant;

use dbmirror::cloud::crm::{published_tables, source_tables};
use dbmirror::cloud::encode::{RecordMeta, change_record, history_record};
use dbmirror::cloud::generate::tenant;
use dbmirror::coalesce::{Coalescer, FlushPolicy};
use dbmirror::decode::{Decoder, Event};
use dbmirror::protocol::LineFramer;
use dbmirror::row::{Cell, OwnedRow};
use dbmirror::schema::{SchemaRegistry, TableId, is_blocked};
use dbmirror::sink::Sink;
use dbmirror::sink::sqlite::{SinkOptions, SqliteSink, sql_value};

fn snapshot_stream(
    with_schema: bool,
    rows_per_table: u64,
) -> (String, BTreeMap<TableId, BTreeMap<dbmirror::row::PrimaryKey, OwnedRow>>) {
    let tables = published_tables();
    let truth = tenant(&tables, 42, rows_per_table);
    let mut body = String::new();
    for t in &tables {
        body.push_str(&history_record(t, "CREATE", "CRM", 1));
        body.push('\n');
    }
    let mut offset = 0i64;
    let total: usize = truth.values().map(BTreeMap::len).sum();
    for t in &tables {
        for row in truth[&t.id].values() {
            offset += 1;
            let meta = RecordMeta {
                topic: "cust1234-cdc",
                partition: (offset % 3) as i32,
                offset,
                snapshot: if offset as usize == total { "last" } else { "true" },
                op: "r",
                database: "CRM",
                with_schema,
                ts_ms: 1_734_382_927_000,
                lsn: None,
                transaction: None,
            };
            body.push_str(&change_record(t, None, Some(row), &meta));
            body.push('\n');
        }
    }
    (body, truth)
}

#[test]
fn simulated_snapshot_decodes_to_ground_truth_and_replicates_exactly() {
    for with_schema in [true, false] {
        let (body, truth) = snapshot_stream(with_schema, 60);
        let mut framer = LineFramer::new(1 << 26);
        framer.push(body.as_bytes());
        let mut decoder = Decoder::default();
        let mut schemas = SchemaRegistry::new();
        let mut coalescer = Coalescer::new(FlushPolicy { max_records: 500, ..FlushPolicy::default() });
        let mut sink =
            SqliteSink::from_connection(rusqlite::Connection::open_in_memory().unwrap(), SinkOptions::default())
                .unwrap();
        let mut decoded_rows = 0;
        let now = Instant::now();
        while let Some(mut line) = framer.next_line().unwrap() {
            let decoded =
                decoder.decode(&mut line, &schemas).unwrap_or_else(|e| panic!("with_schema={with_schema}: {e}"));
            match &decoded.event {
                Event::SchemaChange(changes) => {
                    sink.apply(&coalescer.take()).unwrap();
                    for change in changes {
                        schemas.apply(change);
                        sink.apply_schema(change).unwrap();
                    }
                }
                Event::Change(change) => {
                    // Decoder level: every value equals the ground truth cell exactly.
                    let schema = schemas.get(change.source.schema, change.source.table).unwrap();
                    let cells: OwnedRow =
                        change.after.as_ref().unwrap().iter().map(|f| Cell::from_value(&f.value).unwrap()).collect();
                    let key: dbmirror::row::PrimaryKey = schema
                        .primary_key
                        .iter()
                        .map(|k| cells[schema.columns.iter().position(|c| &c.name == k).unwrap()].clone())
                        .collect();
                    assert_eq!(truth[&schema.id].get(&key), Some(&cells), "{} with_schema={with_schema}", schema.id);
                    decoded_rows += 1;
                    coalescer.push(&decoded, &schemas, now).unwrap();
                    if coalescer.should_flush(now) {
                        sink.apply(&coalescer.take()).unwrap();
                    }
                }
                Event::Tombstone | Event::TransactionMarker(_) => {
                    unreachable!("a snapshot has no tombstones or transactions")
                }
            }
        }
        sink.apply(&coalescer.take()).unwrap();
        assert_eq!(decoded_rows, truth.values().map(BTreeMap::len).sum::<usize>());

        // Replica level: each table holds exactly the ground truth, as SQLite stores it.
        for (id, rows) in &truth {
            let schema = schemas.get(&id.schema, &id.table).unwrap();
            let target = SqliteSink::table_name(&id.schema, id);
            let order: Vec<String> = schema.primary_key.iter().map(|k| format!("\"{k}\"")).collect();
            let mut stmt = sink
                .connection()
                .prepare(&format!("SELECT * FROM \"{target}\" ORDER BY {}", order.join(", ")))
                .unwrap();
            let width = stmt.column_count();
            let stored: Vec<Vec<rusqlite::types::Value>> =
                stmt.query_map([], |r| (0..width).map(|i| r.get(i)).collect()).unwrap().map(Result::unwrap).collect();
            let mut expected: Vec<Vec<rusqlite::types::Value>> = rows
                .values()
                .map(|row| row.iter().zip(&schema.columns).map(|(c, col)| sql_value(c, col.sql_type)).collect())
                .collect();
            // SQLite orders keys by stored value; sort the expectation the same way.
            let key_index: Vec<usize> =
                schema.primary_key.iter().map(|k| schema.columns.iter().position(|c| &c.name == k).unwrap()).collect();
            expected.sort_by(|a, b| {
                key_index
                    .iter()
                    .map(|&i| sqlite_cmp(&a[i], &b[i]))
                    .find(|o| o.is_ne())
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            assert_eq!(stored, expected, "{id} with_schema={with_schema}");
        }
        let offsets = sink.offsets().unwrap();
        assert_eq!(offsets.values().max().copied(), Some(decoded_rows as i64));
    }
}

fn sqlite_cmp(a: &rusqlite::types::Value, b: &rusqlite::types::Value) -> std::cmp::Ordering {
    use rusqlite::types::Value as V;
    match (a, b) {
        (V::Integer(x), V::Integer(y)) => x.cmp(y),
        (V::Text(x), V::Text(y)) => x.cmp(y),
        _ => std::cmp::Ordering::Equal,
    }
}

#[test]
fn blocked_tables_exist_at_the_source_but_are_never_published() {
    let blocked: Vec<_> = source_tables().into_iter().filter(|t| is_blocked(&t.id.table)).collect();
    assert!(!blocked.is_empty());
    let (body, _) = snapshot_stream(false, 3);
    for t in blocked {
        assert!(!body.contains(&format!("\"table\":\"{}\"", t.id.table)), "{} was published", t.id);
    }
}
