//! Realistic CRM-like Debezium SQL Server events for benchmarks: a narrow table (10 columns)
//! and a wide one (60 columns), as update events with `before` and `after`, serialized with
//! or without the JsonConverter schema block.

/// One column of a generated table: SQL type, Connect schema JSON, and a value generator.
struct Col {
    name: String,
    sql: &'static str,
    length: i64,
    scale: Option<i64>,
    connect: &'static str,
}

const PATTERNS: &[(&str, i64, Option<i64>, &str)] = &[
    ("int", 10, Some(0), r#"{"type":"int32","optional":true,"field":"NAME"}"#),
    ("nvarchar", 50, None, r#"{"type":"string","optional":true,"field":"NAME"}"#),
    (
        "datetime2",
        27,
        Some(7),
        r#"{"type":"int64","optional":true,"name":"io.debezium.time.NanoTimestamp","version":1,"field":"NAME"}"#,
    ),
    (
        "decimal",
        18,
        Some(2),
        r#"{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"2","connect.decimal.precision":"18"},"field":"NAME"}"#,
    ),
    ("bit", 1, None, r#"{"type":"boolean","optional":true,"field":"NAME"}"#),
    ("nvarchar", 1073741823, None, r#"{"type":"string","optional":true,"field":"NAME"}"#),
    ("uniqueidentifier", 36, None, r#"{"type":"string","optional":true,"field":"NAME"}"#),
    (
        "datetime",
        23,
        Some(3),
        r#"{"type":"int64","optional":true,"name":"io.debezium.time.Timestamp","version":1,"field":"NAME"}"#,
    ),
    ("bigint", 19, Some(0), r#"{"type":"int64","optional":true,"field":"NAME"}"#),
    (
        "date",
        10,
        Some(0),
        r#"{"type":"int32","optional":true,"name":"io.debezium.time.Date","version":1,"field":"NAME"}"#,
    ),
];

use dbmirror::cloud::generate::WORDS;

fn json_string(text: &str) -> String {
    let mut out = String::new();
    dbmirror::value::write_json_string(&mut out, text);
    out
}

fn columns(count: usize) -> Vec<Col> {
    (0..count)
        .map(|i| {
            let (sql, length, scale, connect) = if i == 0 { PATTERNS[0] } else { PATTERNS[i % PATTERNS.len()] };
            let name = if i == 0 { "id".to_string() } else { format!("col_{i}_{sql}") };
            Col { name, sql, length, scale, connect }
        })
        .collect()
}

fn value(col: &Col, row: u64, i: usize) -> String {
    let mix = row.wrapping_mul(6364136223846793005).wrapping_add(i as u64 * 1442695040888963407) >> 17;
    match (col.sql, col.length) {
        ("int", _) if i == 0 => row.to_string(),
        ("int", _) => (mix % 100_000).to_string(),
        ("bigint", _) => (mix % 10_000_000_000).to_string(),
        ("nvarchar", 50) => {
            json_string(&format!("{} {}", WORDS[mix as usize % WORDS.len()], WORDS[(mix >> 8) as usize % WORDS.len()]))
        }
        ("nvarchar", _) => {
            let words: Vec<&str> = (0..12).map(|k| WORDS[((mix >> k) as usize + k) % WORDS.len()]).collect();
            json_string(&words.join(" "))
        }
        ("datetime2", _) => (1_700_000_000_000_000_000u64 + mix % 100_000_000_000_000_000).to_string(),
        ("datetime", _) => (1_700_000_000_000u64 + mix % 100_000_000_000).to_string(),
        ("decimal", _) => ["\"BNI=\"", "\"AJiWfw==\"", "\"/+A=\"", "\"AQ==\""][mix as usize % 4].to_string(),
        ("bit", _) => mix.is_multiple_of(2).to_string(),
        ("uniqueidentifier", _) => format!("\"{:08X}-8B86-D011-B42D-{:012X}\"", mix as u32, mix % 0xFFFF_FFFF_FFFF),
        ("date", _) => (18_000 + mix % 3_000).to_string(),
        _ => "null".to_string(),
    }
}

/// A generated table and its events.
pub struct Workload {
    /// Schema-history record for the table (needed for payload-only events).
    pub history: String,
    /// One update event per line.
    pub events: Vec<String>,
}

/// `rows` update events for a table with `column_count` columns.
#[allow(dead_code)]
pub fn workload(table: &str, column_count: usize, rows: u64, with_schema: bool) -> Workload {
    events(table, column_count, rows, with_schema, false)
}

/// `rows` snapshot reads (`op` `r`, no `before`) for a table with `column_count` columns.
#[allow(dead_code)]
pub fn snapshot(table: &str, column_count: usize, rows: u64, with_schema: bool) -> Workload {
    events(table, column_count, rows, with_schema, true)
}

/// `count` streaming changes to a table of `rows` rows (keys `0..rows`) with `column_count`
/// columns, in a steady-state mix: 90% updates of a pseudo-random existing key, 5% inserts of
/// new keys, 5% deletes of a pseudo-random key (which may already be gone, as a source may
/// delete a row the replica never saw). Deterministic, so every variant gets the same events.
#[allow(dead_code)]
pub fn changes(table: &str, column_count: usize, rows: u64, count: u64) -> Workload {
    let ops = (0..count).map(|i| {
        let mix = (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(23);
        let key = mix % rows;
        match mix % 20 {
            0 => Op { key: rows + i, op: 'c', salt: i + 1 },
            1 => Op { key, op: 'd', salt: 0 },
            _ => Op { key, op: 'u', salt: i + 1 },
        }
    });
    build(table, column_count, ops.collect(), false)
}

/// One event to build: its key, Debezium `op`, and a salt that varies the non-key values.
struct Op {
    key: u64,
    op: char,
    salt: u64,
}

fn events(table: &str, column_count: usize, rows: u64, with_schema: bool, snapshot: bool) -> Workload {
    let op = if snapshot { 'r' } else { 'u' };
    build(table, column_count, (0..rows).map(|key| Op { key, op, salt: 1 }).collect(), with_schema)
}

fn build(table: &str, column_count: usize, ops: Vec<Op>, with_schema: bool) -> Workload {
    let cols = columns(column_count);
    let connect_fields: Vec<String> = cols.iter().map(|c| c.connect.replace("NAME", &c.name)).collect();
    let connect_fields = connect_fields.join(",");
    let history_cols: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let scale = c.scale.map_or("null".to_string(), |s| s.to_string());
            format!(
                r#"{{"name":"{}","jdbcType":0,"typeName":"{}","typeExpression":"{}","length":{},"scale":{},"position":{},"optional":{},"autoIncremented":false}}"#,
                c.name, c.sql, c.sql, c.length, scale, i + 1, i != 0
            )
        })
        .collect();
    let history = format!(
        r#"{{"source":{{"server":"crm"}},"databaseName":"CRM","schemaName":"crm7","ddl":null,"tableChanges":[{{"type":"CREATE","id":"\"CRM\".\"crm7\".\"{table}\"","table":{{"primaryKeyColumnNames":["id"],"columns":[{}]}}}}]}}"#,
        history_cols.join(",")
    );
    let events = ops
        .iter()
        .enumerate()
        .map(|(n, &Op { key: row, op, salt })| {
            let image = |salt: u64| {
                let fields: Vec<String> =
                    cols.iter().enumerate().map(|(i, c)| format!("\"{}\":{}", c.name, value(c, row + salt * (i != 0) as u64, i))).collect();
                format!("{{{}}}", fields.join(","))
            };
            let (before, after, snap) = match op {
                'r' => ("null".to_string(), image(salt), "true"),
                'c' => ("null".to_string(), image(salt), "false"),
                'd' => (image(0), "null".to_string(), "false"),
                _ => (image(0), image(salt), "false"),
            };
            let n = n as u64;
            let payload = format!(
                r#"{{"before":{},"after":{},"source":{{"version":"2.7.3.Final","connector":"sqlserver","name":"crm","ts_ms":{},"snapshot":"{snap}","db":"CRM","sequence":null,"schema":"crm7","table":"{table}","change_lsn":"0000002b:00000557:0003","commit_lsn":"0000002b:00000557:0005","event_serial_no":2}},"op":"{op}","ts_ms":{},"transaction":null}}"#,
                before,
                after,
                1_734_382_927_000 + n,
                1_734_382_928_000 + n
            );
            if with_schema {
                format!(
                    r#"{{"schema":{{"type":"struct","fields":[{{"type":"struct","fields":[{connect_fields}],"optional":true,"name":"crm.crm7.{table}.Value","field":"before"}},{{"type":"struct","fields":[{connect_fields}],"optional":true,"name":"crm.crm7.{table}.Value","field":"after"}},{{"type":"struct","fields":[{{"type":"string","optional":false,"field":"version"}},{{"type":"string","optional":false,"field":"connector"}},{{"type":"string","optional":false,"field":"name"}},{{"type":"int64","optional":false,"field":"ts_ms"}},{{"type":"string","optional":true,"name":"io.debezium.data.Enum","version":1,"parameters":{{"allowed":"true,last,false,incremental"}},"default":"false","field":"snapshot"}},{{"type":"string","optional":false,"field":"db"}},{{"type":"string","optional":true,"field":"sequence"}},{{"type":"string","optional":false,"field":"schema"}},{{"type":"string","optional":false,"field":"table"}},{{"type":"string","optional":true,"field":"change_lsn"}},{{"type":"string","optional":true,"field":"commit_lsn"}},{{"type":"int64","optional":true,"field":"event_serial_no"}}],"optional":false,"name":"io.debezium.connector.sqlserver.Source","field":"source"}},{{"type":"string","optional":false,"field":"op"}},{{"type":"int64","optional":true,"field":"ts_ms"}}],"optional":false,"name":"crm.crm7.{table}.Envelope","version":1}},"payload":{payload}}}"#
                )
            } else {
                payload
            }
        })
        .collect();
    Workload { history, events }
}
