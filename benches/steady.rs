//! Steady state: streaming changes into tables that already hold their rows, side by side in
//! one run, on SQLite and PostgreSQL. Every variant starts from the same 20,000 preloaded rows
//! and applies the same 20,000 change events (90% updates, 5% inserts, 5% deletes; see
//! `events::changes`) in batches of 2,000:
//!
//! - `pipeline_2_threads`: dbmirror: record lines framed, decoded in place, coalesced by key
//!   and applied by the sink on its own thread (PostgreSQL: keys and rows `COPY`ed into the
//!   connection's staging tables, one `DELETE … USING` and one `INSERT … ON CONFLICT` per table
//!   and batch; SQLite: prepared statements), offsets in the same transaction;
//! - `row_by_row`: what the Debezium JDBC sink does: each event parsed with serde_json and
//!   written with its own prepared upsert or delete, committing every 500;
//! - `raw_*`: the raw set-based limit: the same batches already coalesced and rendered (binary
//!   `COPY` buffers for PostgreSQL, bound values for SQLite), so no decoding, no coalescing
//!   and no offsets: only the database's work. On PostgreSQL one per statement shape for
//!   changes into existing rows, to choose the cheapest:
//!   - `raw_on_conflict`: staged keys deleted with `DELETE … USING`, staged rows moved with
//!     `INSERT … SELECT … ON CONFLICT DO UPDATE` (the shape the sink uses);
//!   - `raw_merge`: one stage with a delete flag and one `MERGE` (PostgreSQL 15+);
//!   - `raw_update_insert`: `DELETE … USING`, `UPDATE … FROM` the stage, then `INSERT` of the
//!     staged rows whose key is still missing;
//!   - `raw_delete_insert`: every staged key deleted, then every staged row inserted.
//!
//! `cargo bench --bench steady`; `perf/steady.sh` runs it beside the end-to-end measurement.

#[path = "support/mod.rs"]
mod support;
#[allow(dead_code)]
#[path = "../tests/support/targets.rs"]
mod targets;

use std::io::Write as _;

use criterion::measurement::WallTime;
use criterion::{BatchSize, BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dbmirror::canonical::canonical;
use dbmirror::coalesce::FlushPolicy;
use dbmirror::row::Cell;
use dbmirror::schema::{SchemaChangeKind, SchemaRegistry, SqlType, TableChange, TableSchema};
use dbmirror::sink::postgres::encode::{self, PgKind, pg_type};
use dbmirror::sink::postgres::{PgSink, quote};
use dbmirror::sink::sqlite::{SqliteSink, sql_value};
use dbmirror::sink::{Sink, SinkOptions};
use dbmirror::state::{StateStore, TableState};
use support::{events, ingest_common, serde_baseline};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROWS: u64 = 20_000;
const CHANGES: u64 = 20_000;
const BATCH: u64 = 2_000;
const LABEL: &str = "narrow10";

/// The workload, prepared once for every variant.
struct Work {
    schemas: SchemaRegistry,
    schema: TableSchema,
    /// The rows every iteration starts from.
    preload: Vec<Vec<Cell>>,
    /// The change events, one per line, as the service streams them.
    body: Vec<u8>,
    /// The same changes coalesced into batches of `BATCH`: per batch the deleted keys and the
    /// upserted rows, sorted by key (as the sink applies them).
    batches: Vec<Coalesced>,
}

/// One batch after coalescing: the deleted keys and the upserted rows.
type Coalesced = (Vec<Vec<Cell>>, Vec<Vec<Cell>>);

fn prepare() -> Work {
    let snapshot = ingest_common::prepare(LABEL, 10, ROWS);
    let changes = events::changes(LABEL, 10, ROWS, CHANGES);
    let body: Vec<u8> = changes.events.iter().flat_map(|e| e.bytes().chain(std::iter::once(b'\n'))).collect();
    let mut batches = Vec::new();
    ingest_common::decode_and_coalesce(&body, &snapshot.schemas, policy(), |batch| {
        for table in batch.tables() {
            let mut deletes: Vec<Vec<Cell>> = table.deletes().map(|k| k.to_vec()).collect();
            let mut upserts: Vec<Vec<Cell>> = table.upserts().map(|(_, row)| row.to_vec()).collect();
            deletes.sort_unstable();
            upserts.sort_unstable_by(|a, b| a[..1].cmp(&b[..1]));
            batches.push((deletes, upserts));
        }
    });
    Work { schemas: snapshot.schemas, schema: snapshot.schema, preload: snapshot.rows, body, batches }
}

fn policy() -> FlushPolicy {
    FlushPolicy { max_records: BATCH, ..FlushPolicy::default() }
}

fn create_change(schema: &TableSchema) -> TableChange {
    TableChange { kind: SchemaChangeKind::Create, table: schema.clone() }
}

/// Marks the table loaded, so the sink takes its streaming path (not the snapshot's).
fn streaming<S: Sink + StateStore>(mut sink: S, schema: &TableSchema) -> S {
    sink.set_table_state(&schema.id, TableState::Ready).unwrap();
    sink
}

/// The target's group, with dbmirror's pipeline measured first, each iteration on a replica
/// from `fresh`.
fn group_with_pipeline<'c, S: Sink + StateStore + Send + 'static>(
    c: &'c mut Criterion,
    target: &str,
    work: &Work,
    mut fresh: impl FnMut() -> S,
) -> BenchmarkGroup<'c, WallTime> {
    let mut group = c.benchmark_group(format!("steady/{target}/{LABEL}"));
    group.throughput(Throughput::Elements(CHANGES));
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("pipeline_2_threads", CHANGES), |b| {
        b.iter_batched(
            &mut fresh,
            |sink| ingest_common::pipeline_2_threads(sink, &work.body, &work.schemas, policy()),
            BatchSize::PerIteration,
        )
    });
    group
}

fn bench(c: &mut Criterion) {
    let work = prepare();
    bench_sqlite(c, &work);
    match targets::postgres_admin() {
        Some(admin) => bench_postgres(c, &work, admin),
        None => eprintln!("no PostgreSQL available: skipping the PostgreSQL steady-state bench"),
    }
}

// --- SQLite -------------------------------------------------------------------------------

fn bench_sqlite(c: &mut Criterion, work: &Work) {
    let dir = std::env::temp_dir().join(format!("dbmirror-steady-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let schema = &work.schema;
    let target = format!("\"crm7_{LABEL}\"");
    let quoted: Vec<String> = schema.columns.iter().map(|c| format!("\"{}\"", c.name)).collect();
    let insert =
        format!("INSERT INTO {target} ({}) VALUES ({})", quoted.join(", "), vec!["?"; quoted.len()].join(", "));
    let upsert = format!(
        "{insert} ON CONFLICT (\"id\") DO UPDATE SET {}",
        quoted[1..].iter().map(|q| format!("{q} = excluded.{q}")).collect::<Vec<_>>().join(", ")
    );
    let delete = format!("DELETE FROM {target} WHERE \"id\" = ?");
    let values = |row: &[Cell]| -> Vec<rusqlite::types::Value> {
        row.iter().zip(&schema.columns).map(|(cell, col)| sql_value(cell, col.sql_type)).collect()
    };
    let rendered: Vec<(Vec<_>, Vec<_>)> = work
        .batches
        .iter()
        .map(|(deletes, upserts)| {
            (deletes.iter().map(|k| values(k)).collect(), upserts.iter().map(|r| values(r)).collect())
        })
        .collect();
    let fresh = || {
        let path = dir.join("replica.db");
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let mut sink = SqliteSink::open(&format!("Data Source={}", path.display()), SinkOptions::default()).unwrap();
        sink.apply_schema(&create_change(schema)).unwrap();
        let conn = sink.connection();
        conn.execute_batch("BEGIN").unwrap();
        {
            let mut stmt = conn.prepare(&insert).unwrap();
            for row in &work.preload {
                stmt.execute(rusqlite::params_from_iter(values(row))).unwrap();
            }
        }
        conn.execute_batch("COMMIT").unwrap();
        streaming(sink, schema)
    };

    let mut group = group_with_pipeline(c, "sqlite", work, fresh);
    group.bench_function(BenchmarkId::new("row_by_row", CHANGES), |b| {
        b.iter_batched(
            fresh,
            |sink| {
                let conn = sink.connection();
                conn.execute_batch("BEGIN").unwrap();
                for (i, line) in lines(&work.body).enumerate() {
                    let doc = serde_baseline::parse(line).unwrap();
                    let change = serde_baseline::decode(&doc, &work.schemas).unwrap();
                    match &change.after {
                        Some(after) => {
                            let row: Vec<Cell> = after.iter().map(|f| Cell::from_value(&f.value).unwrap()).collect();
                            conn.execute(&upsert, rusqlite::params_from_iter(values(&row))).unwrap()
                        }
                        None => {
                            let key = Cell::from_value(&change.before.as_ref().unwrap()[0].value).unwrap();
                            conn.execute(&delete, [sql_value(&key, SqlType::Int)]).unwrap()
                        }
                    };
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
    group.bench_function(BenchmarkId::new("raw_limit", CHANGES), |b| {
        b.iter_batched(
            fresh,
            |sink| {
                let conn = sink.connection();
                for (deletes, upserts) in &rendered {
                    conn.execute_batch("BEGIN").unwrap();
                    {
                        let mut del = conn.prepare_cached(&delete).unwrap();
                        for key in deletes {
                            del.execute(rusqlite::params_from_iter(key.iter())).unwrap();
                        }
                        let mut up = conn.prepare_cached(&upsert).unwrap();
                        for row in upserts {
                            up.execute(rusqlite::params_from_iter(row.iter())).unwrap();
                        }
                    }
                    conn.execute_batch("COMMIT").unwrap();
                }
                sink
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
    std::fs::remove_dir_all(&dir).ok();
}

fn lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split(|&b| b == b'\n').filter(|l| !l.is_empty())
}

// --- PostgreSQL ---------------------------------------------------------------------------

/// One batch rendered for the raw variants: binary `COPY` buffers of the deleted keys, of the
/// upserted rows, and of both in one stage with a trailing `deleted` flag (for `MERGE`).
struct PgBatch {
    keys: Vec<u8>,
    rows: Vec<u8>,
    flagged: Vec<u8>,
}

fn copy_buffer<'r>(types: &[(SqlType, PgKind)], rows: impl Iterator<Item = &'r [Cell]>) -> Vec<u8> {
    let mut out = Vec::new();
    encode::header(&mut out);
    for row in rows {
        encode::write_row(&mut out, row, types.iter()).unwrap();
    }
    encode::trailer(&mut out);
    out
}

fn render_pg(work: &Work) -> Vec<PgBatch> {
    let types: Vec<_> = work.schema.columns.iter().map(|c| (c.sql_type, pg_type(c.sql_type).1)).collect();
    let mut flagged_types = types.clone();
    flagged_types.push((SqlType::Bit, pg_type(SqlType::Bit).1));
    let width = types.len();
    work.batches
        .iter()
        .map(|(deletes, upserts)| {
            let flagged: Vec<Vec<Cell>> = deletes
                .iter()
                .map(|k| {
                    let mut row = k.clone();
                    row.resize(width, Cell::Null);
                    row.push(Cell::Bool(true));
                    row
                })
                .chain(upserts.iter().map(|r| r.iter().cloned().chain([Cell::Bool(false)]).collect()))
                .collect();
            PgBatch {
                keys: copy_buffer(&types[..1], deletes.iter().map(|k| &k[..])),
                rows: copy_buffer(&types, upserts.iter().map(|r| &r[..])),
                flagged: copy_buffer(&flagged_types, flagged.iter().map(|r| &r[..])),
            }
        })
        .collect()
}

/// The statements of the raw variants, per shape: run after the batch's stages are filled.
struct Shapes {
    columns: String,
    set: String,
    target: String,
}

impl Shapes {
    fn new(schema: &TableSchema) -> Self {
        let quoted: Vec<String> = schema.columns.iter().map(|c| quote(&c.name)).collect();
        let set = quoted[1..].iter().map(|q| format!("{q} = s.{q}")).collect::<Vec<_>>().join(", ");
        Self { columns: quoted.join(", "), set, target: format!("crm7.{}", quote(LABEL)) }
    }

    fn delete_keys(&self) -> String {
        format!("DELETE FROM {} AS t USING stage_keys AS s WHERE t.\"id\" = s.\"id\"", self.target)
    }

    fn on_conflict(&self) -> String {
        let excluded = self.set.replace("s.", "excluded.");
        format!(
            "{}; INSERT INTO {t} ({c}) SELECT {c} FROM stage_rows ON CONFLICT (\"id\") DO UPDATE SET {excluded}",
            self.delete_keys(),
            t = self.target,
            c = self.columns
        )
    }

    fn merge(&self) -> String {
        let values = self.columns.split(", ").map(|c| format!("s.{c}")).collect::<Vec<_>>().join(", ");
        format!(
            "MERGE INTO {t} AS t USING stage_flagged AS s ON t.\"id\" = s.\"id\" \
             WHEN MATCHED AND s.deleted THEN DELETE \
             WHEN MATCHED THEN UPDATE SET {set} \
             WHEN NOT MATCHED AND NOT s.deleted THEN INSERT ({c}) VALUES ({values})",
            t = self.target,
            set = self.set,
            c = self.columns
        )
    }

    fn update_insert(&self) -> String {
        format!(
            "{}; UPDATE {t} AS t SET {set} FROM stage_rows AS s WHERE t.\"id\" = s.\"id\"; \
             INSERT INTO {t} ({c}) SELECT {c} FROM stage_rows AS s \
             WHERE NOT EXISTS (SELECT 1 FROM {t} AS t WHERE t.\"id\" = s.\"id\")",
            self.delete_keys(),
            t = self.target,
            set = self.set,
            c = self.columns
        )
    }

    fn delete_insert(&self) -> String {
        format!(
            "{}; DELETE FROM {t} AS t USING stage_rows AS s WHERE t.\"id\" = s.\"id\"; \
             INSERT INTO {t} ({c}) SELECT {c} FROM stage_rows",
            self.delete_keys(),
            t = self.target,
            c = self.columns
        )
    }
}

/// Opens a connection the way the sink's writer is set up (joins through the primary key,
/// see `PgSink::connect`) with the raw variants' staging tables.
fn raw_client(url: &str) -> postgres::Client {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let target = format!("crm7.{}", quote(LABEL));
    client
        .batch_execute(&format!(
            "SET enable_hashjoin = off; SET enable_mergejoin = off; \
             CREATE TEMP TABLE stage_keys ON COMMIT DELETE ROWS AS SELECT \"id\" FROM {target} WITH NO DATA; \
             CREATE TEMP TABLE stage_rows (LIKE {target}) ON COMMIT DELETE ROWS; \
             CREATE TEMP TABLE stage_flagged (LIKE {target}) ON COMMIT DELETE ROWS; \
             ALTER TABLE stage_flagged ADD COLUMN deleted boolean"
        ))
        .unwrap();
    client
}

fn copy(tx: &mut postgres::Transaction<'_>, sql: &str, buffer: &[u8]) {
    let mut writer = tx.copy_in(sql).unwrap();
    writer.write_all(buffer).unwrap();
    writer.finish().unwrap();
}

fn bench_postgres(c: &mut Criterion, work: &Work, admin: &str) {
    let db = format!("dbm_steady_{}", std::process::id());
    postgres::Client::connect(admin, postgres::NoTls).unwrap().batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
    let url = format!("{admin} dbname={db}");
    let schema = &work.schema;
    let types: Vec<_> = schema.columns.iter().map(|c| (c.sql_type, pg_type(c.sql_type).1)).collect();
    let preload = copy_buffer(&types, work.preload.iter().map(|r| &r[..]));
    let shapes = Shapes::new(schema);
    let target = &shapes.target;
    // Every iteration starts from the same table: the preloaded rows, fresh statistics, no
    // dead tuples, no offsets.
    let fresh = || {
        let mut sink = PgSink::open(&url, SinkOptions::default()).unwrap();
        sink.apply_schema(&create_change(schema)).unwrap();
        sink.execute_batch(&format!("TRUNCATE {target}; DELETE FROM \"_ReplicationState\" WHERE scope = 'offset'"))
            .unwrap();
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut tx = client.transaction().unwrap();
        copy(&mut tx, &format!("COPY {target} ({}) FROM STDIN (FORMAT binary)", shapes.columns), &preload);
        tx.commit().unwrap();
        client.batch_execute(&format!("VACUUM ANALYZE {target}")).unwrap();
        client.batch_execute("CHECKPOINT").unwrap();
        streaming(sink, schema)
    };
    let rendered = render_pg(work);

    let mut group = group_with_pipeline(c, "postgres", work, fresh);
    group.bench_function(BenchmarkId::new("row_by_row", CHANGES), |b| {
        let columns: Vec<String> = schema.columns.iter().map(|c| quote(&c.name)).collect();
        let casts: Vec<String> = schema
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("${}::text::{}", i + 1, pg_type(c.sql_type).0))
            .collect();
        let upsert = format!(
            "INSERT INTO {target} ({}) VALUES ({}) ON CONFLICT (\"id\") DO UPDATE SET {}",
            columns.join(", "),
            casts.join(", "),
            columns[1..].iter().map(|q| format!("{q} = excluded.{q}")).collect::<Vec<_>>().join(", ")
        );
        let delete = format!("DELETE FROM {target} WHERE \"id\" = $1::text::integer");
        b.iter_batched(
            || {
                drop(fresh());
                postgres::Client::connect(&url, postgres::NoTls).unwrap()
            },
            |mut client| {
                let upsert = client.prepare(&upsert).unwrap();
                let delete = client.prepare(&delete).unwrap();
                let mut tx = client.transaction().unwrap();
                for (i, line) in lines(&work.body).enumerate() {
                    let doc = serde_baseline::parse(line).unwrap();
                    let change = serde_baseline::decode(&doc, &work.schemas).unwrap();
                    let image = change.after.as_ref().or(change.before.as_ref()).unwrap();
                    let values: Vec<Option<String>> = image
                        .iter()
                        .zip(&schema.columns)
                        .map(|(f, col)| canonical(&Cell::from_value(&f.value).unwrap(), col.sql_type))
                        .collect();
                    let params: Vec<&(dyn postgres::types::ToSql + Sync)> =
                        values.iter().map(|v| v as &(dyn postgres::types::ToSql + Sync)).collect();
                    match change.after {
                        Some(_) => tx.execute(&upsert, &params).unwrap(),
                        None => tx.execute(&delete, &params[..1]).unwrap(),
                    };
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
    let variants: [(&str, String, bool); 4] = [
        ("raw_on_conflict", shapes.on_conflict(), false),
        ("raw_merge", shapes.merge(), true),
        ("raw_update_insert", shapes.update_insert(), false),
        ("raw_delete_insert", shapes.delete_insert(), false),
    ];
    for (name, statement, flagged) in &variants {
        group.bench_function(BenchmarkId::new(*name, CHANGES), |b| {
            b.iter_batched(
                || {
                    drop(fresh());
                    raw_client(&url)
                },
                |mut client| {
                    apply_raw(&mut client, &rendered, &shapes, statement, *flagged);
                    client
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
    check_shapes_agree(&url, work, &rendered, &shapes, &variants);
}

/// One raw variant's run: per batch, its stages filled by `COPY` and its statement, one
/// transaction each.
fn apply_raw(client: &mut postgres::Client, rendered: &[PgBatch], shapes: &Shapes, statement: &str, flagged: bool) {
    for batch in rendered {
        let mut tx = client.transaction().unwrap();
        if flagged {
            copy(
                &mut tx,
                &format!("COPY stage_flagged ({}, deleted) FROM STDIN (FORMAT binary)", shapes.columns),
                &batch.flagged,
            );
        } else {
            copy(&mut tx, "COPY stage_keys (\"id\") FROM STDIN (FORMAT binary)", &batch.keys);
            copy(&mut tx, &format!("COPY stage_rows ({}) FROM STDIN (FORMAT binary)", shapes.columns), &batch.rows);
        }
        tx.batch_execute(statement).unwrap();
        tx.commit().unwrap();
    }
}

/// Every shape must leave the table as the sink does, or comparing their speed means nothing.
fn check_shapes_agree(
    url: &str,
    work: &Work,
    rendered: &[PgBatch],
    shapes: &Shapes,
    variants: &[(&str, String, bool)],
) {
    let target = &shapes.target;
    let contents = |client: &mut postgres::Client| -> Vec<String> {
        let sql = format!("SELECT t::text FROM {target} AS t ORDER BY \"id\"");
        client.query(&sql, &[]).unwrap().iter().map(|r| r.get(0)).collect()
    };
    let preload_and = |client: &mut postgres::Client| {
        client.batch_execute(&format!("TRUNCATE {target}")).unwrap();
        let types: Vec<_> = work.schema.columns.iter().map(|c| (c.sql_type, pg_type(c.sql_type).1)).collect();
        let mut tx = client.transaction().unwrap();
        let sql = format!("COPY {target} ({}) FROM STDIN (FORMAT binary)", shapes.columns);
        copy(&mut tx, &sql, &copy_buffer(&types, work.preload.iter().map(|r| &r[..])));
        tx.commit().unwrap();
    };
    let mut client = raw_client(url);
    preload_and(&mut client);
    let sink = streaming(PgSink::open(url, SinkOptions::default()).unwrap(), &work.schema);
    drop(ingest_common::pipeline_2_threads(sink, &work.body, &work.schemas, policy()));
    let expected = contents(&mut client);
    for (name, statement, flagged) in variants {
        preload_and(&mut client);
        apply_raw(&mut client, rendered, shapes, statement, *flagged);
        assert!(contents(&mut client) == expected, "{name} left the table different from the sink");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
