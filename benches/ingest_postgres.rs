//! Snapshot ingest into a real PostgreSQL replica, side by side in one run:
//!
//! - `pipeline_2_threads`: record lines framed, decoded in place, coalesced and applied in
//!   batches of 2,000 by `PgSink` on its own thread (binary `COPY`; into an empty table the
//!   snapshot path copies straight into the target);
//! - `row_by_row`: what JDBC-style sinks do: each event parsed with serde_json and written
//!   with its own `INSERT … ON CONFLICT DO UPDATE` (prepared once), committing every 500;
//! - `stage_decode_coalesce`: the pipeline's first stage alone, to show where time goes;
//! - `raw_limit`: the same rows pre-rendered as one binary `COPY` buffer and copied into the
//!   empty table: no decoding, no coalescing, no staging.
//!
//! PostgreSQL comes from `DBMIRROR_PG_URL` or a private cluster the bench starts (as the
//! tests do). Each iteration starts from an empty table. `cargo bench --bench ingest_postgres`.

#[path = "support/mod.rs"]
mod support;
#[allow(dead_code)]
#[path = "../tests/support/targets.rs"]
mod targets;

use std::io::Write as _;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dbmirror::canonical::canonical;
use dbmirror::coalesce::FlushPolicy;
use dbmirror::row::Cell;
use dbmirror::schema::{SchemaChangeKind, TableChange, TableSchema};
use dbmirror::sink::postgres::encode::{self, pg_type};
use dbmirror::sink::postgres::{PgSink, quote};
use dbmirror::sink::{Sink, SinkOptions};
use support::{ingest_common, serde_baseline};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROWS: u64 = 20_000;
const BATCH: u64 = 2_000;

/// Empties the table and the offsets, as before an initial snapshot.
fn fresh(url: &str, schema: &TableSchema) -> PgSink {
    let mut sink = PgSink::open(url, SinkOptions::default()).unwrap();
    sink.apply_schema(&TableChange { kind: SchemaChangeKind::Create, table: schema.clone() }).unwrap();
    sink.execute_batch(&format!(
        "TRUNCATE crm7.{}; DELETE FROM \"_ReplicationState\" WHERE scope = 'offset'; CHECKPOINT",
        quote(&schema.id.table)
    ))
    .unwrap();
    sink
}

fn bench_ingest(c: &mut Criterion) {
    let Some(admin) = targets::postgres_admin() else {
        eprintln!("no PostgreSQL available: skipping the PostgreSQL ingest bench");
        return;
    };
    let db = format!("dbm_bench_{}", std::process::id());
    postgres::Client::connect(admin, postgres::NoTls).unwrap().batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
    let url = format!("{admin} dbname={db}");
    let policy = FlushPolicy { max_records: BATCH, ..FlushPolicy::default() };
    for (label, columns) in [("narrow10", 10usize), ("wide60", 60)] {
        let ingest_common::Prepared { schemas, schema, body, rows } = ingest_common::prepare(label, columns, ROWS);
        let target = format!("crm7.{}", quote(label));
        let types: Vec<_> = schema.columns.iter().map(|c| (c.sql_type, pg_type(c.sql_type).1)).collect();
        let mut rendered = Vec::new();
        encode::header(&mut rendered);
        for row in &rows {
            encode::write_row(&mut rendered, row, types.iter()).unwrap();
        }
        encode::trailer(&mut rendered);
        let columns_sql: Vec<String> = schema.columns.iter().map(|c| quote(&c.name)).collect();
        let casts: Vec<String> = schema
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("${}::text::{}", i + 1, pg_type(c.sql_type).0))
            .collect();
        let upsert = format!(
            "INSERT INTO {target} ({}) VALUES ({}) ON CONFLICT (\"id\") DO UPDATE SET {}",
            columns_sql.join(", "),
            casts.join(", "),
            columns_sql[1..].iter().map(|q| format!("{q} = excluded.{q}")).collect::<Vec<_>>().join(", ")
        );

        let mut group = c.benchmark_group(format!("ingest/postgres/{label}"));
        group.throughput(Throughput::Elements(ROWS));
        group.sample_size(10);

        group.bench_function(BenchmarkId::new("pipeline_2_threads", ROWS), |b| {
            b.iter_batched(
                || fresh(&url, &schema),
                |sink| ingest_common::pipeline_2_threads(sink, &body, &schemas, policy),
                BatchSize::PerIteration,
            )
        });

        // The client-side stage alone (frame, decode, coalesce; batches dropped): what the
        // pipeline's first thread costs, to tell where the time goes.
        group.bench_function(BenchmarkId::new("stage_decode_coalesce", ROWS), |b| {
            b.iter(|| {
                let mut tables = 0;
                ingest_common::decode_and_coalesce(&body, &schemas, policy, |batch| tables += batch.tables().count());
                tables
            })
        });

        group.bench_function(BenchmarkId::new("row_by_row", ROWS), |b| {
            b.iter_batched(
                || {
                    drop(fresh(&url, &schema));
                    postgres::Client::connect(&url, postgres::NoTls).unwrap()
                },
                |mut client| {
                    let statement = client.prepare(&upsert).unwrap();
                    let mut tx = client.transaction().unwrap();
                    for (i, line) in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()).enumerate() {
                        let doc = serde_baseline::parse(line).unwrap();
                        let change = serde_baseline::decode(&doc, &schemas).unwrap();
                        let values: Vec<Option<String>> = change
                            .after
                            .unwrap()
                            .iter()
                            .zip(&schema.columns)
                            .map(|(f, col)| {
                                let text = canonical(&Cell::from_value(&f.value).unwrap(), col.sql_type);
                                // bytea's text input spells hex `\x…`, not `0x…`.
                                match pg_type(col.sql_type).1 {
                                    encode::PgKind::Bytea => text.map(|t| format!("\\x{}", &t[2..])),
                                    _ => text,
                                }
                            })
                            .collect();
                        let params: Vec<&(dyn postgres::types::ToSql + Sync)> =
                            values.iter().map(|v| v as &(dyn postgres::types::ToSql + Sync)).collect();
                        tx.execute(&statement, &params).unwrap();
                        if (i + 1) % 500 == 0 {
                            tx.commit().unwrap();
                            tx = client.transaction().unwrap();
                        }
                    }
                    tx.commit().unwrap();
                    client
                },
                BatchSize::PerIteration,
            )
        });

        group.bench_function(BenchmarkId::new("raw_limit", ROWS), |b| {
            b.iter_batched(
                || {
                    drop(fresh(&url, &schema));
                    postgres::Client::connect(&url, postgres::NoTls).unwrap()
                },
                |mut client| {
                    let mut tx = client.transaction().unwrap();
                    let mut writer = tx
                        .copy_in(&format!("COPY {target} ({}) FROM STDIN (FORMAT binary)", columns_sql.join(", ")))
                        .unwrap();
                    writer.write_all(&rendered).unwrap();
                    writer.finish().unwrap();
                    tx.commit().unwrap();
                    client
                },
                BatchSize::PerIteration,
            )
        });
        group.finish();
    }
}

criterion_group!(benches, bench_ingest);
criterion_main!(benches);
