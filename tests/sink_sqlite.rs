//! The SQLite replica: equals the source after any history and batching, replays are no-ops,
//! failures commit nothing, every type is stored losslessly, and schema changes evolve tables.

use dbmirror::sink::ReplicaRead;
use dbmirror::state::StateStore;
use std::collections::HashMap;
use std::time::Instant;

use dbmirror::coalesce::{Coalescer, FlushPolicy};
use dbmirror::decode::{DecodeOptions, Decoder, Event};
use dbmirror::row::{Cell, OwnedRow, PrimaryKey};
use dbmirror::schema::{SchemaChangeKind, SchemaRegistry, TableChange, TableId};
use dbmirror::sink::sqlite::{SinkOptions, SqliteSink, parse_connection_string};
use dbmirror::sink::{SchemaOutcome, Sink};
use dbmirror::state::{SessionValue, TableState};
use rusqlite::Connection;
use rusqlite::types::ValueRef;

use crate::support::{Model, apply_one, event, registry};

fn memory_sink(options: SinkOptions) -> SqliteSink {
    SqliteSink::from_connection(Connection::open_in_memory().unwrap(), options).unwrap()
}

fn create_all(sink: &mut SqliteSink, schemas: &SchemaRegistry) {
    for name in ["person", "link"] {
        let table = (**schemas.get("crm7", name).unwrap()).clone();
        assert_eq!(
            sink.apply_schema(&TableChange { kind: SchemaChangeKind::Create, table }).unwrap(),
            SchemaOutcome::Created
        );
    }
}

/// Reads a replica table into the model's shape (key columns first, in key order).
fn read_table(conn: &Connection, table: &str, key_columns: usize) -> HashMap<PrimaryKey, OwnedRow> {
    let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
    let width = stmt.column_count();
    let rows = stmt
        .query_map([], |r| {
            let row: OwnedRow = (0..width)
                .map(|i| match r.get_ref(i).unwrap() {
                    ValueRef::Null => Cell::Null,
                    ValueRef::Integer(v) => Cell::Int(v),
                    ValueRef::Real(v) => Cell::Float(v),
                    ValueRef::Text(t) => Cell::Text(String::from_utf8(t.to_vec()).unwrap().into()),
                    ValueRef::Blob(b) => Cell::Binary(b.into()),
                })
                .collect();
            Ok(row)
        })
        .unwrap();
    rows.map(|r| {
        let row = r.unwrap();
        (row[..key_columns].iter().cloned().collect(), row)
    })
    .collect()
}

fn replica(sink: &SqliteSink) -> Model {
    [read_table(sink.connection(), "crm7_person", 1), read_table(sink.connection(), "crm7_link", 2)]
}

/// Decodes fixture lines, applying schema changes to both the registry and the sink.
fn load_fixture(sink: &mut SqliteSink, path: &str, options: DecodeOptions) -> SchemaRegistry {
    let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
    let mut decoder = Decoder::new(options);
    let mut schemas = SchemaRegistry::new();
    let mut coalescer = Coalescer::new(FlushPolicy::default());
    for line in text.lines() {
        let mut bytes = line.as_bytes().to_vec();
        let decoded = decoder.decode(&mut bytes, &schemas).unwrap();
        if let Event::SchemaChange(changes) = &decoded.event {
            sink.apply(&coalescer.take()).unwrap();
            for change in changes {
                schemas.apply(change);
                sink.apply_schema(change).unwrap();
            }
        } else if coalescer.push(&decoded, &schemas, Instant::now()).is_err() {
            // Lines for tables without a schema (pass-through) are not replicable.
        }
    }
    sink.apply(&coalescer.take()).unwrap();
    schemas
}

fn text_of(conn: &Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn.prepare(sql).unwrap();
    let width = stmt.column_count();
    stmt.query_row([], |r| {
        Ok((0..width)
            .map(|i| match r.get_ref(i).unwrap() {
                ValueRef::Null => "NULL".to_string(),
                ValueRef::Integer(v) => v.to_string(),
                ValueRef::Real(v) => format!("{v:?}"),
                ValueRef::Text(t) => format!("'{}'", String::from_utf8_lossy(t)),
                ValueRef::Blob(b) => format!("x'{}'", b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
            })
            .collect())
    })
    .unwrap()
}

#[test]
fn every_type_is_stored_losslessly() {
    let mut sink = memory_sink(SinkOptions::default());
    load_fixture(
        &mut sink,
        "tests/fixtures/debezium/seatunnel-full-types.jsonl",
        DecodeOptions { decimal_handling: dbmirror::decode::DecimalHandlingMode::Double, ..DecodeOptions::default() },
    );
    let got = text_of(sink.connection(), "SELECT * FROM dbo_full_types_1");
    let want = [
        "1",
        "1",
        "1",
        "1",
        "1",
        "1",
        "1",
        "1.0",
        "1.0",
        "1.0",
        "'1'",
        "'1.000000000000000000'",
        "'1'",
        "'1.000000000000000000'",
        "'1.0000'",
        "'1.0000'",
        "'1'",
        "'1'",
        "'1'",
        "'1'",
        "'1'",
        "'1'",
        "'1'",
        "'1'",
        "'1'",
        "'1'",
        "'1'",
        "'1'",
        "'1'",
        "x'01'",
        "x'01'",
        "x'01'",
        "x'01'",
        "x'01'",
        "x'01'",
        "'2024-12-16'",
        "'21:02:03.0000000'",
        "'21:02:04.000'",
        "'2024-12-16 21:02:05.000'",
        "'2024-12-16 21:02:07.0000000'",
        "'2024-12-16 21:02:08.000'",
        "'2024-12-16 21:02:09.7990000 +00:00'",
        "'2024-12-16 21:02:11.349 +00:00'",
        "'2024-12-16 21:02:00'",
    ];
    assert_eq!(got, want);

    // Payload-only events with precise decimals, 100 ns timestamps, pre-1753 dates, offsets.
    let mut sink = memory_sink(SinkOptions::default());
    load_fixture(&mut sink, "tests/fixtures/edge/edge-cases.jsonl", DecodeOptions::default());
    // The fixture ends by dropping crm7.person, so the replica no longer has it.
    assert!(sink.tables().is_empty());
    let mut sink = memory_sink(SinkOptions::default());
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/edge/edge-cases.jsonl"),
    )
    .unwrap();
    let upto_create: String = text.lines().skip(1).take(2).map(|l| format!("{l}\n")).collect();
    let dir = tempdir();
    let path = dir.join("person.jsonl");
    std::fs::write(&path, upto_create).unwrap();
    load_fixture(&mut sink, path.to_str().unwrap(), DecodeOptions::default());
    let got = text_of(sink.connection(), "SELECT * FROM crm7_person");
    let want = [
        "1",
        "42",
        "'Åsa \"Ace\" Ødegård'",
        "'line1\r\nline2\u{1}'",
        "'123456789012345.67'",
        "'-0.0001'",
        "0.1",
        "'2024-12-16 21:02:07.1234567'",
        "'1700-01-01 12:00:00.000'",
        "'1696-03-17'",
        "'07:00:00.0000001'",
        "'2024-06-30 22:15:00.1234567 -09:30'",
        "'00000000-0000-0000-0000-000000000000'",
        "x'0001020304'",
        "1",
    ];
    assert_eq!(got, want);
    let declared: Vec<String> = sink
        .connection()
        .prepare("SELECT type FROM pragma_table_info('crm7_person')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(declared[4], "DECIMAL_TEXT(18,2)");
    assert_eq!(declared[7], "DATETIME2_TEXT(7)");
}

fn tempdir() -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("dbmirror-sqlite-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn table_prefix_and_connection_strings() {
    assert_eq!(parse_connection_string("Data Source=replica.db").unwrap(), "replica.db");
    assert_eq!(parse_connection_string(" data source = /x/y.db ; Cache=Shared").unwrap(), "/x/y.db");
    assert_eq!(parse_connection_string("sqlite://replica.db").unwrap(), "replica.db");
    assert!(parse_connection_string("Server=x;Database=y").unwrap_err().to_string().contains("Data Source"));
    assert!(parse_connection_string("sqlite://").is_err());
    let sink = memory_sink(SinkOptions { table_prefix: Some("dbo".into()), ..Default::default() });
    assert_eq!(SqliteSink::table_name("dbo", &TableId::new("crm7", "person")), "dbo_person");
    drop(sink);
}

const CRASH_CHILD_ENV: &str = "DBMIRROR_TEST_CRASH_CHILD";
const CRASH_OPS: usize = 30_000;

/// The child side of `kill_9_during_apply_loses_nothing`: resumes from the replica's stored
/// offsets and applies the rest of a fixed history in batches of varying size. A no-op when
/// the environment variable is not set (that is, in a normal test run).
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CRASH_CHILD_ENV) else { return };
    let schemas = registry();
    let mut sink = SqliteSink::open(&format!("Data Source={path}"), SinkOptions::default()).unwrap();
    if sink.tables().is_empty() {
        create_all(&mut sink, &schemas);
    }
    let resume = sink.offsets().unwrap().values().max().map_or(0, |last| last + 1) as usize;
    let ops = crate::support::scripted_ops(CRASH_OPS, 7);
    let mut coalescer = Coalescer::new(FlushPolicy::default());
    let now = Instant::now();
    for (i, op) in ops.iter().enumerate().skip(resume) {
        coalescer.push(&event(op, i as i64), &schemas, now).unwrap();
        if i % 97 == 0 || i % 1_000 == 999 || i + 1 == ops.len() {
            sink.apply(&coalescer.take()).unwrap();
        }
    }
}

/// SIGKILL at random moments while batches are being written; after each kill the next run
/// resumes from the offsets stored with the data. The final replica equals the source: no
/// change lost, none applied twice, progress never ahead of the data.
#[test]
fn kill_9_during_apply_loses_nothing() {
    let dir = tempdir().join("crash");
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("replica.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let child = || {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "sink_sqlite::crash_child", "--nocapture", "--test-threads=1"])
            .env(CRASH_CHILD_ENV, &db)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let committed = || {
        let mut sink = SqliteSink::open(&format!("Data Source={}", db.display()), SinkOptions::default()).unwrap();
        sink.offsets().unwrap().values().max().copied().unwrap_or(-1)
    };
    let mut progress = Vec::new();
    for delay_ms in [40u64, 90, 15, 150, 60, 120, 200, 250] {
        let mut running = child();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let killed = running.try_wait().unwrap().is_none();
        if killed {
            running.kill().unwrap();
        }
        running.wait().unwrap();
        if killed {
            progress.push(committed());
        }
    }
    eprintln!("committed offsets after kills: {progress:?}");
    let status = child().wait().unwrap();
    assert!(status.success(), "the final run must finish the history");
    assert!(
        progress.iter().any(|&p| p > 0 && p < CRASH_OPS as i64 - 1),
        "no run was killed mid-history (committed offsets after kills: {progress:?})"
    );
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "progress went backwards: {progress:?}");

    let schemas = registry();
    let sink = SqliteSink::open(&format!("Data Source={}", db.display()), SinkOptions::default()).unwrap();
    let mut expected: Model = Default::default();
    crate::support::scripted_ops(CRASH_OPS, 7).iter().for_each(|op| apply_one(&mut expected, op));
    assert_eq!(replica(&sink), expected);
    let mut sink = sink;
    assert_eq!(sink.offsets().unwrap().values().max(), Some(&(CRASH_OPS as i64 - 1)));
    drop(schemas);
    std::fs::remove_dir_all(&dir).ok();
}

/// Fails the `fail_at`-th batch once (as a full disk or a lost connection would).
struct FlakySink {
    inner: SqliteSink,
    applies: usize,
    fail_at: usize,
}

impl Sink for FlakySink {
    fn change_schema(
        &mut self,
        change: &TableChange,
        intent: &dbmirror::sink::Intent,
    ) -> Result<SchemaOutcome, dbmirror::sink::SinkError> {
        self.inner.change_schema(change, intent)
    }

    fn apply(&mut self, batch: &dbmirror::coalesce::Batch) -> Result<(), dbmirror::sink::SinkError> {
        self.applies += 1;
        if self.applies == self.fail_at {
            return Err(dbmirror::sink::SinkError::ConnectionString("simulated failure".into()));
        }
        self.inner.apply(batch)
    }

    fn replace_from_shadow(&mut self, id: &TableId) -> Result<(), dbmirror::sink::SinkError> {
        self.inner.replace_from_shadow(id)
    }

    fn run_script(&mut self, sql: &str) -> Result<(), dbmirror::sink::SinkError> {
        self.inner.run_script(sql)
    }

    fn retire_table(&mut self, id: &TableId, new_name: &str) -> Result<(), dbmirror::sink::SinkError> {
        self.inner.retire_table(id, new_name)
    }

    fn target_name(&self, id: &TableId) -> Option<String> {
        self.inner.target_name(id)
    }
}

impl StateStore for FlakySink {
    fn all_records(&self) -> Vec<dbmirror::sink::TableRecord> {
        self.inner.all_records()
    }
    fn offset_rows(&mut self) -> Result<dbmirror::state::Offsets, dbmirror::sink::SinkError> {
        self.inner.offset_rows()
    }

    fn set_table_state(&mut self, id: &TableId, state: TableState) -> Result<(), dbmirror::sink::SinkError> {
        self.inner.set_table_state(id, state)
    }

    fn write_facts(&mut self, facts: &[(&str, SessionValue)]) -> Result<(), dbmirror::sink::SinkError> {
        self.inner.write_facts(facts)
    }

    fn read_facts(&mut self) -> Result<dbmirror::state::Session, dbmirror::sink::SinkError> {
        self.inner.read_facts()
    }

    fn claim_writer(&mut self, holder: &str) -> Result<dbmirror::state::fence::Fence, dbmirror::sink::SinkError> {
        self.inner.claim_writer(holder)
    }

    fn hold_fence(&mut self, fence: dbmirror::state::fence::Fence) {
        self.inner.hold_fence(fence)
    }

    fn write_refused(
        &mut self,
        refused: &[dbmirror::state::refused::Refusal],
        progress: (&dbmirror::state::Offsets, Option<u64>),
    ) -> Result<(), dbmirror::sink::SinkError> {
        self.inner.write_refused(refused, progress)
    }

    fn read_refused(&mut self) -> Result<Vec<dbmirror::state::refused::RefusedRow>, dbmirror::sink::SinkError> {
        self.inner.read_refused()
    }

    fn delete_refused(&mut self, ids: &[i64]) -> Result<(), dbmirror::sink::SinkError> {
        self.inner.delete_refused(ids)
    }
}

impl ReplicaRead for FlakySink {
    fn check_writable(&mut self) -> Result<(), dbmirror::sink::SinkError> {
        self.inner.check_writable()
    }

    fn read_rows(&mut self, id: &TableId) -> Result<Vec<dbmirror::sink::CanonicalRow>, dbmirror::sink::SinkError> {
        self.inner.read_rows(id)
    }
}

/// A failure in the middle of a stream of batches: nothing after it is applied, the failed
/// batch and everything queued behind it come back in order, and a new worker finishes them.
#[test]
fn sink_worker_stops_at_a_failure_and_returns_the_rest_in_order() {
    use dbmirror::sink::worker::{Job, Report, SinkWorker};
    let schemas = registry();
    let ops = crate::support::scripted_ops(2_000, 11);
    let mut expected: Model = Default::default();
    ops.iter().for_each(|op| apply_one(&mut expected, op));

    let inner = memory_sink(SinkOptions::default());
    let worker = SinkWorker::spawn(FlakySink { inner, applies: 0, fail_at: 4 }, 2);
    for name in ["person", "link"] {
        let table = (**schemas.get("crm7", name).unwrap()).clone();
        worker.submit(Job::Schema(TableChange { kind: SchemaChangeKind::Create, table })).unwrap();
    }
    let mut coalescer = Coalescer::new(FlushPolicy::default());
    let mut returned = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        coalescer.push(&event(op, i as i64), &schemas, Instant::now()).unwrap();
        if i % 200 == 199
            && let Err(job) = worker.submit(Job::Apply(coalescer.take()))
        {
            returned.push(job);
        }
    }
    let (sink, reports, mut unapplied) = worker.finish();
    unapplied.extend(returned);
    let applied = reports.iter().filter(|r| matches!(r, Report::Applied { .. })).count();
    assert_eq!(applied, 3, "only the batches before the failure commit");
    assert!(reports.iter().any(|r| matches!(r, Report::Failed(_))));
    assert_eq!(unapplied.len(), 10 - 3, "the failed batch and every later one come back");
    let mut sink = sink;
    assert_eq!(sink.offsets().unwrap().values().max(), Some(&599), "progress stops at the last commit");

    // Retry: a new worker on the same sink applies the returned jobs in order.
    let worker = SinkWorker::spawn(sink, 2);
    for job in unapplied {
        worker.submit(job).unwrap();
    }
    let (sink, reports, unapplied) = worker.finish();
    assert!(unapplied.is_empty());
    assert!(reports.iter().all(|r| matches!(r, Report::Applied { .. })));
    assert_eq!(replica(&sink.inner), expected);
}
