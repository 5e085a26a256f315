//! Snapshot ingest into the SQLite replica, side by side in one run:
//!
//! - `pipeline`: record lines framed, decoded in place, coalesced, applied in batches of
//!   10,000 (`DatabaseBatchSize`) by `SqliteSink` (prepared upserts, one transaction a batch);
//! - `pipeline_2_threads`: the same, with the sink on its own thread (`SinkWorker`), so
//!   decoding and coalescing the next batch overlaps writing the current one;
//! - `row_by_row`: what JDBC-style sinks do: each event parsed with serde_json and written
//!   with its own upsert statement (prepared for each event), committing every 500 events
//!   (the Debezium JDBC sink's default `batch.size`);
//! - `raw_limit`: the same rows, already rendered as SQLite values, inserted with one prepared
//!   statement in one transaction: no decoding, no coalescing, no upsert.
//!
//! Each iteration starts from an empty replica file. `cargo bench --bench ingest`.

#[path = "support/mod.rs"]
mod support;

use support::{ingest_common, serde_baseline};

use std::path::Path;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dbmirror::coalesce::FlushPolicy;
use dbmirror::row::Cell;
use dbmirror::schema::{SchemaChangeKind, TableChange, TableSchema};
use dbmirror::sink::Sink;
use dbmirror::sink::sqlite::{SinkOptions, SqliteSink, sql_value};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROWS: u64 = 20_000;

/// `DatabaseBatchSize` 2,000 (the original client documents 1,000 to 10,000): ten batches per
/// iteration, so a two-stage pipeline reaches its steady state within the measured run.
const BATCH: u64 = 2_000;

/// A fresh replica file with the table created, as after provisioning.
fn fresh_replica(dir: &Path, schema: &TableSchema) -> SqliteSink {
    let path = dir.join("replica.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let mut sink = SqliteSink::open(&format!("Data Source={}", path.display()), SinkOptions::default()).unwrap();
    sink.apply_schema(&TableChange { kind: SchemaChangeKind::Create, table: schema.clone() }).unwrap();
    sink
}

fn bench_ingest(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("dbmirror-ingest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = FlushPolicy { max_records: BATCH, ..FlushPolicy::default() };
    for (label, columns) in [("narrow10", 10usize), ("wide60", 60)] {
        let ingest_common::Prepared { schemas, schema, body, rows } = ingest_common::prepare(label, columns, ROWS);
        let target = format!("crm7_{label}");
        // Pre-rendered rows for the raw limit: decoding is not part of what it measures.
        let rendered: Vec<Vec<rusqlite::types::Value>> = rows
            .iter()
            .map(|row| row.iter().zip(&schema.columns).map(|(cell, col)| sql_value(cell, col.sql_type)).collect())
            .collect();
        let quoted: Vec<String> = schema.columns.iter().map(|c| format!("\"{}\"", c.name)).collect();
        let placeholders = vec!["?"; quoted.len()].join(", ");
        let insert = format!("INSERT INTO \"{target}\" ({}) VALUES ({placeholders})", quoted.join(", "));
        let upsert = format!(
            "{insert} ON CONFLICT (\"id\") DO UPDATE SET {}",
            quoted[1..].iter().map(|q| format!("{q} = excluded.{q}")).collect::<Vec<_>>().join(", ")
        );

        let mut group = c.benchmark_group(format!("ingest/sqlite/{label}"));
        group.throughput(Throughput::Elements(ROWS));
        group.sample_size(10);

        group.bench_function(BenchmarkId::new("pipeline", ROWS), |b| {
            b.iter_batched(
                || fresh_replica(&dir, &schema),
                |mut sink| {
                    ingest_common::decode_and_coalesce(&body, &schemas, policy, |batch| sink.apply(&batch).unwrap());
                    sink
                },
                BatchSize::PerIteration,
            )
        });

        group.bench_function(BenchmarkId::new("pipeline_2_threads", ROWS), |b| {
            b.iter_batched(
                || fresh_replica(&dir, &schema),
                |sink| ingest_common::pipeline_2_threads(sink, &body, &schemas, policy),
                BatchSize::PerIteration,
            )
        });

        group.bench_function(BenchmarkId::new("row_by_row", ROWS), |b| {
            b.iter_batched(
                || fresh_replica(&dir, &schema),
                |sink| {
                    let conn = sink.connection();
                    conn.execute_batch("BEGIN").unwrap();
                    for (i, line) in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()).enumerate() {
                        let doc = serde_baseline::parse(line).unwrap();
                        let change = serde_baseline::decode(&doc, &schemas).unwrap();
                        let values: Vec<rusqlite::types::Value> = change
                            .after
                            .unwrap()
                            .iter()
                            .zip(&schema.columns)
                            .map(|(f, col)| sql_value(&Cell::from_value(&f.value).unwrap(), col.sql_type))
                            .collect();
                        conn.execute(&upsert, rusqlite::params_from_iter(values)).unwrap();
                        if (i + 1) % 500 == 0 {
                            conn.execute_batch("COMMIT; BEGIN").unwrap();
                        }
                    }
                    conn.execute_batch("COMMIT").unwrap();
                    sink
                },
                BatchSize::PerIteration,
            )
        });

        group.bench_function(BenchmarkId::new("raw_limit", ROWS), |b| {
            b.iter_batched(
                || fresh_replica(&dir, &schema),
                |sink| {
                    let conn = sink.connection();
                    conn.execute_batch("BEGIN").unwrap();
                    {
                        let mut stmt = conn.prepare(&insert).unwrap();
                        for row in &rendered {
                            stmt.execute(rusqlite::params_from_iter(row.iter())).unwrap();
                        }
                    }
                    conn.execute_batch("COMMIT").unwrap();
                    sink
                },
                BatchSize::PerIteration,
            )
        });
        group.finish();
    }
    std::fs::remove_dir_all(&dir).ok();
}

criterion_group!(benches, bench_ingest);
criterion_main!(benches);
