//! The decoder and `dbmirror inspect` against real captured Debezium SQL Server events and
//! hand-made edge cases, with expected output written independently of the decoder.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;

use dbmirror::decode::{DecimalHandlingMode, DecodeErrorKind, DecodeOptions, Decoder, Event, Value};
use dbmirror::inspect;
use dbmirror::schema::SchemaRegistry;
use proptest::prelude::*;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

/// Runs inspect over `input` and returns (stdout lines, stderr text, failed count).
fn inspect_file(input: &Path, options: DecodeOptions) -> (Vec<String>, String, u64) {
    let bytes = std::fs::read(input).unwrap();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut decoder = Decoder::new(options);
    let summary = inspect::run(&mut Cursor::new(bytes), &mut out, &mut err, &mut decoder).unwrap();
    let out = String::from_utf8(out).unwrap();
    (out.lines().map(str::to_owned).collect(), String::from_utf8(err).unwrap(), summary.failed)
}

/// Compares each output line with the expected line as JSON values, so number spelling
/// (`1.0` vs `1`, `e+38` vs `e38`) does not matter but every value, key and digit does.
fn assert_matches_expected(input: &str, options: DecodeOptions) {
    let (lines, errors, failed) = inspect_file(&fixture(input), options);
    assert_eq!(failed, 0, "{input}: unexpected errors: {errors}");
    let expected_path = fixture(&input.replace(".jsonl", ".expected.jsonl"));
    let expected = std::fs::read_to_string(expected_path).unwrap();
    let expected: Vec<&str> = expected.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{input}: line count");
    for (i, (got, want)) in lines.iter().zip(&expected).enumerate() {
        let got_v: serde_json::Value =
            serde_json::from_str(got).unwrap_or_else(|e| panic!("{input}:{} invalid JSON {e}: {got}", i + 1));
        let want_v: serde_json::Value = serde_json::from_str(want).unwrap();
        assert_eq!(got_v, want_v, "{input} line {}\n got: {got}\nwant: {want}", i + 1);
    }
}

#[test]
fn real_debezium_2_4_sqlserver_events_with_schema() {
    assert_matches_expected("debezium/customers-2.4.1.jsonl", DecodeOptions::default());
}

#[test]
fn debezium_docs_schema_change_delete_and_tombstone() {
    assert_matches_expected("debezium/docs-schema-change.jsonl", DecodeOptions::default());
}

#[test]
fn real_debezium_1_6_full_types_payload_only_double_mode() {
    let options = DecodeOptions { decimal_handling: DecimalHandlingMode::Double, ..DecodeOptions::default() };
    assert_matches_expected("debezium/seatunnel-full-types.jsonl", options);
}

#[test]
fn edge_cases_every_logical_type_unicode_extremes_and_passthrough() {
    assert_matches_expected("edge/edge-cases.jsonl", DecodeOptions::default());
}

#[test]
fn canonical_output_keeps_integers_beyond_2_pow_53_exact() {
    let (lines, _, _) = inspect_file(&fixture("edge/edge-cases.jsonl"), DecodeOptions::default());
    // serde_json would also keep these exact, but check the literal text too.
    assert!(lines[0].contains("\"id\":9007199254740993"), "{}", lines[0]);
    assert!(lines[0].contains("\"big\":-9223372036854775808"));
    assert!(lines.iter().any(|l| l.contains("\"n\":18446744073709551615")));
}

#[test]
fn decimal_string_mode_is_exact_and_scaled_to_the_column() {
    let history = r#"{"schemaName":"crm7","tableChanges":[{"type":"CREATE","id":"crm7.sale","table":{"primaryKeyColumnNames":["sale_id"],"columns":[{"name":"sale_id","typeName":"int","position":1,"optional":false},{"name":"amount","typeName":"decimal","length":38,"scale":6,"position":2,"optional":true},{"name":"fee","typeName":"money","length":19,"scale":4,"position":3}]}}]}"#;
    let event = r#"{"before":null,"after":{"sale_id":7,"amount":"12345678901234567890123456789012.5","fee":"-922337203685477.5808"},"source":{"schema":"crm7","table":"sale","snapshot":"true"},"op":"r"}"#;
    let mut decoder =
        Decoder::new(DecodeOptions { decimal_handling: DecimalHandlingMode::String, ..Default::default() });
    let mut schemas = SchemaRegistry::new();
    let mut h = history.as_bytes().to_vec();
    let Event::SchemaChange(changes) = decoder.decode(&mut h, &schemas).unwrap().event else { panic!() };
    changes.iter().for_each(|c| schemas.apply(c));
    let mut e = event.as_bytes().to_vec();
    let decoded = decoder.decode(&mut e, &schemas).unwrap();
    let mut out = String::new();
    inspect::render(&decoded, &mut out);
    assert!(out.contains(r#""amount":"12345678901234567890123456789012.500000""#), "{out}");
    assert!(out.contains(r#""fee":"-922337203685477.5808""#), "{out}");
}

/// Issue 10 #18: a `VariableScaleDecimal` carries the scale of the value, not of the column;
/// the replica must see the column's scale, and a value the column cannot hold is refused.
#[test]
fn variable_scale_decimals_are_fitted_to_their_column() {
    let history = r#"{"schemaName":"crm7","tableChanges":[{"type":"CREATE","id":"crm7.sale","table":{"primaryKeyColumnNames":["sale_id"],"columns":[{"name":"sale_id","typeName":"int","position":1,"optional":false},{"name":"amount","typeName":"numeric","length":10,"scale":4,"position":2,"optional":true}]}}]}"#;
    let mut decoder = Decoder::default();
    let mut schemas = SchemaRegistry::new();
    let mut h = history.as_bytes().to_vec();
    let Event::SchemaChange(changes) = decoder.decode(&mut h, &schemas).unwrap().event else { panic!() };
    changes.iter().for_each(|c| schemas.apply(c));
    let event = |offset: u32, scale: u32, value: &str| {
        format!(
            r#"{{"topic":"t-cdc","partition":0,"offset":{offset},"value":{{"schema":{{"type":"struct","fields":[{{"type":"struct","field":"after","fields":[{{"type":"int32","field":"sale_id"}},{{"type":"struct","name":"io.debezium.data.VariableScaleDecimal","field":"amount"}}]}}]}},"payload":{{"after":{{"sale_id":1,"amount":{{"scale":{scale},"value":"{value}"}}}},"source":{{"schema":"crm7","table":"sale"}},"op":"c"}}}}}}"#
        )
    };
    let mut render = |line: String| {
        let mut bytes = line.into_bytes();
        decoder.decode(&mut bytes, &schemas).map(|d| {
            let mut out = String::new();
            inspect::render(&d, &mut out);
            out
        })
    };
    // 12.345 (scale 3) and -7 (scale 0) read back with the column's four fraction digits.
    let out = render(event(1, 3, "MDk=")).unwrap();
    assert!(out.contains(r#""amount":"12.3450""#), "{out}");
    let out = render(event(2, 0, "+Q==")).unwrap();
    assert!(out.contains(r#""amount":"-7.0000""#), "{out}");
    // 12.34567 has five fraction digits: refused, never rounded, and the record is named.
    let e = render(event(3, 5, "EtaH")).unwrap_err();
    assert!(e.to_string().starts_with("record t-cdc/0@3:"), "{e}");
    assert!(e.to_string().contains("scale 4"), "{e}");
    // 1,000,000 needs 11 digits at scale 4: more than numeric(10,4) holds.
    let e = render(event(4, 0, "AlQL5AA=")).unwrap_err();
    assert!(e.to_string().contains("precision 10 and scale 4"), "{e}");
}

fn decode_err(input: &str) -> dbmirror::decode::DecodeError {
    let mut bytes = input.as_bytes().to_vec();
    Decoder::default().decode(&mut bytes, &SchemaRegistry::new()).expect_err("should fail")
}

#[test]
fn malformed_records_name_their_position_and_problem() {
    let e = decode_err(
        r#"{"topic":"cust1-cdc","partition":2,"offset":77,"key":null,"value":{"after":{},"source":{"schema":"s","table":"t"},"op":"x"}}"#,
    );
    assert_eq!(e.to_string(), "record cust1-cdc/2@77: `op`: unknown operation `x`");
    let e = decode_err(
        r#"{"topic":"cust1-cdc","partition":0,"offset":5,"value":{"schema":{"type":"struct","fields":[{"type":"struct","field":"after","fields":[{"type":"int32","name":"io.debezium.time.Date","field":"d"}]}]},"payload":{"after":{"d":"yesterday"},"source":{"schema":"crm7","table":"x"},"op":"c"}}}"#,
    );
    assert_eq!(e.to_string(), "record cust1-cdc/0@5: after column `d` of crm7.x: expected integer, found string");
    let e = decode_err(r#"{"topic":"c-cdc","partition":0,"offset":6,"value":{"op":"c","after":{}}}"#);
    assert_eq!(e.kind(), &DecodeErrorKind::Missing("source"));
    assert!(e.to_string().starts_with("record c-cdc/0@6:"));
    let e = decode_err(r#"{"op":"c","after":{"a":1},"source":{"schema":"s","table":"t""#);
    assert!(matches!(e.kind(), DecodeErrorKind::Json(_)), "{e}");
    assert!(e.position().is_none());
    let e = decode_err(r#"{"topic":"c","partition":"zero","offset":1,"value":null}"#);
    assert!(e.to_string().contains("`partition` must be a 32-bit integer"), "{e}");
    let e = decode_err(r#"[1,2,3]"#);
    assert!(e.to_string().contains("must be an object"), "{e}");
    let e = decode_err(r#"{"tableChanges":[{"type":"RENAME","id":"a.b","table":{}}]}"#);
    assert!(e.to_string().contains("unknown change type `RENAME`"), "{e}");
    let e = decode_err(r#"{"op":"c","after":{"a":1},"source":{"schema":"s","table":"t","snapshot":"maybe"}}"#);
    assert!(e.to_string().contains("`source.snapshot`: unknown value `maybe`"), "{e}");
}

#[test]
fn transaction_metadata_begin_change_and_end() {
    assert_matches_expected("edge/transactions.jsonl", DecodeOptions::default());
}

/// Transaction-metadata records (Debezium's `provide.transaction.metadata`), bare or with the
/// JsonConverter schema block, and a broken one named by its position.
#[test]
fn transaction_markers_decode_and_a_bad_one_names_its_record() {
    use dbmirror::decode::{Event, TransactionMarker};
    let decode = |input: &str| {
        let mut bytes = input.as_bytes().to_vec();
        let decoded = Decoder::default().decode(&mut bytes, &SchemaRegistry::new()).unwrap();
        match decoded.event {
            Event::TransactionMarker(TransactionMarker { end, id, event_count }) => (end, id.to_owned(), event_count),
            other => panic!("{other:?}"),
        }
    };
    let end = r#"{"topic":"c-cdc","partition":0,"offset":9,"key":{"id":"tx1"},"value":{"status":"END","id":"tx1","event_count":3,"data_collections":[{"data_collection":"CRM.crm7.person","event_count":3}],"ts_ms":1}}"#;
    assert_eq!(decode(end), (true, "tx1".to_owned(), Some(3)));
    let with_schema = r#"{"schema":{"type":"struct","fields":[],"optional":false,"name":"io.debezium.connector.common.TransactionMetadataValue"},"payload":{"status":"BEGIN","id":"tx2","event_count":null,"data_collections":null,"ts_ms":1}}"#;
    assert_eq!(decode(with_schema), (false, "tx2".to_owned(), None));
    let e = decode_err(
        r#"{"topic":"c-cdc","partition":0,"offset":10,"key":null,"value":{"status":"END","id":"tx1","event_count":-1}}"#,
    );
    assert_eq!(e.to_string(), "record c-cdc/0@10: `event_count`: a transaction cannot have -1 events");
    let e = decode_err(
        r#"{"topic":"c-cdc","partition":0,"offset":11,"key":null,"value":{"status":"COMMITTED","id":"tx1"}}"#,
    );
    assert!(e.to_string().starts_with("record c-cdc/0@11:") && e.to_string().contains("COMMITTED"), "{e}");
}

#[test]
fn inspect_binary_reports_bad_lines_and_keeps_going() {
    let dir = std::env::temp_dir().join(format!("dbmirror-inspect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mixed.jsonl");
    std::fs::write(&path, "null\n{\"op\":\n\n{\"topic\":\"t-cdc\",\"partition\":0,\"offset\":9,\"key\":null,\"value\":{\"op\":\"c\",\"after\":{\"a\":1},\"source\":{\"schema\":\"s\",\"table\":\"t\",\"snapshot\":true}}}\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_dbmirror")).args(["inspect"]).arg(&path).output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(
        stdout,
        "{\"tombstone\":true}\n{\"table\":\"s.t\",\"op\":\"c\",\"key\":null,\"before\":null,\"after\":{\"a\":1}}\n"
    );
    assert!(stderr.contains("line 2: record: invalid JSON"), "{stderr}");
    assert!(stderr.contains("1 of 3 records failed"), "{stderr}");
    let ok = Command::new(env!("CARGO_BIN_EXE_dbmirror"))
        .arg("inspect")
        .arg(fixture("debezium/customers-2.4.1.jsonl"))
        .output()
        .unwrap();
    assert!(ok.status.success());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn decoded_strings_borrow_from_the_record_buffer() {
    let mut bytes = br#"{"op":"c","after":{"name":"plain","esc":"a\"b"},"source":{"schema":"s","table":"t"}}"#.to_vec();
    let range = bytes.as_ptr_range();
    let decoded = Decoder::default().decode(&mut bytes, &SchemaRegistry::new()).unwrap();
    let Event::Change(change) = decoded.event else { panic!() };
    for field in change.after.unwrap() {
        let Value::Text(s) = field.value else { panic!() };
        assert!(range.contains(&s.as_ptr()), "{} was copied", field.name);
        assert!(range.contains(&field.name.as_ptr()));
    }
}

mod alloc_count {
    //! Counts heap allocations made by the current thread.
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    pub struct Counting;

    thread_local! {
        static COUNT: Cell<u64> = const { Cell::new(0) };
    }

    // SAFETY: defers every operation to the system allocator; only counts.
    #[allow(unsafe_code)]
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            COUNT.with(|c| c.set(c.get() + 1));
            // SAFETY: same contract as the caller's.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: same contract as the caller's.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            COUNT.with(|c| c.set(c.get() + 1));
            // SAFETY: same contract as the caller's.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    pub fn count() -> u64 {
        COUNT.with(Cell::get)
    }
}

#[global_allocator]
static COUNTING: alloc_count::Counting = alloc_count::Counting;

#[test]
fn no_allocation_per_field() {
    // A 60-column update with the schema block: only the two row vectors may allocate.
    let line = wide_update_event(60);
    let mut decoder = Decoder::default();
    let schemas = SchemaRegistry::new();
    let mut warm = line.clone().into_bytes();
    decoder.decode(&mut warm, &schemas).unwrap();
    let mut bytes = line.into_bytes();
    let before = alloc_count::count();
    let decoded = decoder.decode(&mut bytes, &schemas).unwrap();
    let allocations = alloc_count::count() - before;
    let Event::Change(change) = &decoded.event else { panic!() };
    assert_eq!(change.after.as_ref().unwrap().len(), 60);
    assert!(allocations <= 2, "{allocations} allocations for a 60-column update");
}

/// An update event on a table with `columns` typed columns, with the schema block.
fn wide_update_event(columns: usize) -> String {
    let kinds = [
        (r#"{"type":"int32","optional":false,"field":"c{i}"}"#, "{i}"),
        (r#"{"type":"string","optional":true,"field":"c{i}"}"#, r#""text value {i} with some words""#),
        (
            r#"{"type":"int64","optional":true,"name":"io.debezium.time.NanoTimestamp","version":1,"field":"c{i}"}"#,
            "1734382927123456700",
        ),
        (
            r#"{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"2"},"field":"c{i}"}"#,
            r#""BNI=""#,
        ),
        (r#"{"type":"boolean","optional":true,"field":"c{i}"}"#, "true"),
    ];
    let (mut schema, mut row) = (Vec::new(), Vec::new());
    for i in 0..columns {
        let (s, v) = kinds[i % kinds.len()];
        schema.push(s.replace("{i}", &i.to_string()));
        row.push(format!("\"c{i}\":{}", v.replace("{i}", &i.to_string())));
    }
    let fields = schema.join(",");
    let row = row.join(",");
    format!(
        r#"{{"schema":{{"type":"struct","fields":[{{"type":"struct","fields":[{fields}],"optional":true,"field":"before"}},{{"type":"struct","fields":[{fields}],"optional":true,"field":"after"}}]}},"payload":{{"before":{{{row}}},"after":{{{row}}},"source":{{"version":"2.7.3.Final","connector":"sqlserver","name":"crm","ts_ms":1,"snapshot":"false","db":"CRM","schema":"crm7","table":"wide","change_lsn":"0000002b:00000557:0003","commit_lsn":"0000002b:00000557:0005","event_serial_no":2}},"op":"u","ts_ms":2}}}}"#
    )
}

fn real_lines() -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    for f in [
        "debezium/customers-2.4.1.jsonl",
        "debezium/docs-schema-change.jsonl",
        "debezium/seatunnel-full-types.jsonl",
        "edge/edge-cases.jsonl",
    ] {
        let text = std::fs::read(fixture(f)).unwrap();
        lines.extend(text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec));
    }
    lines
}

/// Decodes `bytes` with a registry that knows the fixtures' tables; must never panic.
fn decode_any(bytes: &mut [u8]) {
    thread_local! {
        static SCHEMAS: SchemaRegistry = {
            let mut reg = SchemaRegistry::new();
            let mut d = Decoder::default();
            for mut line in real_lines() {
                if let Ok(Event::SchemaChange(changes)) = d.decode(&mut line, &reg).map(|d| d.event) {
                    changes.iter().for_each(|c| reg.apply(c));
                }
            }
            reg
        };
    }
    SCHEMAS.with(|schemas| {
        let mut decoder = Decoder::default();
        if let Ok(decoded) = decoder.decode(bytes, schemas) {
            let mut out = String::new();
            inspect::render(&decoded, &mut out);
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_any(&mut bytes);
    }

    #[test]
    fn mutated_real_events_never_panic(
        pick in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let lines = real_lines();
        let mut bytes = lines[pick.index(lines.len())].clone();
        for (at, byte, how) in edits {
            let len = bytes.len();
            let i = at.index(len.max(1));
            match how {
                0 if len > 0 => bytes[i.min(len - 1)] = byte,
                1 if len > 0 => { bytes.remove(i.min(len - 1)); }
                _ => bytes.insert(i.min(len), byte),
            }
        }
        decode_any(&mut bytes);
    }
}

/// Renders every line with one long-lived decoder (schema blocks cached after first sight).
fn render_all(decoder: &mut Decoder, lines: &[Vec<u8>], schemas: &SchemaRegistry) -> Vec<String> {
    lines
        .iter()
        .map(|line| {
            let mut bytes = line.clone();
            let mut out = String::new();
            match decoder.decode(&mut bytes, schemas) {
                Ok(decoded) => inspect::render(&decoded, &mut out),
                Err(e) => out = format!("error: {e}"),
            }
            out
        })
        .collect()
}

#[test]
fn cached_schema_blocks_decode_exactly_like_fresh_ones() {
    let value_has_schema = |l: &Vec<u8>| {
        let v: serde_json::Value = serde_json::from_slice(l).unwrap();
        let value = v.get("value").unwrap_or(&v);
        value.get("schema").is_some_and(serde_json::Value::is_object)
    };
    let with_schema: Vec<Vec<u8>> = real_lines().into_iter().filter(value_has_schema).collect();
    assert!(with_schema.len() >= 3);
    let schemas = SchemaRegistry::new();
    // Each line twice in a row with one decoder: the second decode hits the cache.
    let doubled: Vec<Vec<u8>> = with_schema.iter().flat_map(|l| [l.clone(), l.clone()]).collect();
    let cached = render_all(&mut Decoder::default(), &doubled, &schemas);
    // The same documents with `payload` before `schema`: the block cannot be located, so the
    // decoder reads the field types from the tape every time.
    let reordered: Vec<Vec<u8>> = with_schema
        .iter()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_slice(l).unwrap();
            let target = if v.get("value").is_some() { v.get_mut("value").unwrap() } else { &mut v };
            let obj = target.as_object_mut().unwrap();
            let schema = obj.shift_remove("schema").unwrap();
            obj.insert("schema".into(), schema);
            serde_json::to_vec(&v).unwrap()
        })
        .collect();
    let fresh = render_all(&mut Decoder::default(), &reordered, &schemas);
    for (i, want) in fresh.iter().enumerate() {
        assert!(!want.starts_with("error"), "{want}");
        assert_eq!(&cached[2 * i], want, "first sight of block {i}");
        assert_eq!(&cached[2 * i + 1], want, "cache hit for block {i}");
    }
}

#[test]
fn a_changed_schema_block_is_not_served_from_the_cache() {
    let event = |ty: &str, value: &str| {
        format!(
            r#"{{"schema":{{"type":"struct","fields":[{{"type":"struct","field":"after","fields":[{{"field":"c",{ty}}}]}}]}},"payload":{{"after":{{"c":{value}}},"source":{{"schema":"s","table":"t"}},"op":"c"}}}}"#
        )
        .into_bytes()
    };
    let lines = vec![
        event(r#""type":"int64","name":"io.debezium.time.NanoTimestamp""#, "1000000000"),
        event(r#""type":"int64","name":"io.debezium.time.MicroTimestamp""#, "1000000000"),
        event(r#""type":"int64","name":"io.debezium.time.NanoTimestamp""#, "1000000000"),
        event(r#""type":"string""#, r#""1000000000""#),
    ];
    let out = render_all(&mut Decoder::default(), &lines, &SchemaRegistry::new());
    assert!(out[0].contains(r#""c":"1970-01-01T00:00:01""#), "{}", out[0]);
    assert!(out[1].contains(r#""c":"1970-01-01T00:16:40""#), "{}", out[1]);
    assert_eq!(out[2], out[0]);
    assert!(out[3].contains(r#""c":"1000000000""#), "{}", out[3]);
}

/// The decoder surfaces what the pipeline needs about records it does not apply as rows: the
/// DDL's LSN of a schema-history record, and the table and position of a record that failed,
/// so no code outside the decoder reads record bytes.
#[test]
fn ddl_lsn_and_the_table_of_a_failed_record_are_surfaced() {
    let schemas = dbmirror::schema::SchemaRegistry::new();
    let mut decoder = Decoder::default();
    let mut history = br#"{"topic":"t-schemahistory","partition":0,"offset":3,"key":null,"value":{"source":{"server":"x"},"position":{"commit_lsn":"0000002c:00000020:0005"},"tableChanges":[{"type":"DROP","id":"\"crm7\".\"contact\""}]}}"#.to_vec();
    let Event::SchemaChange(changes) = decoder.decode(&mut history, &schemas).unwrap().event else { panic!() };
    assert_eq!(changes.ddl_lsn.as_deref(), Some("0000002c:00000020:0005"));
    assert_eq!(changes.len(), 1);
    let mut broken = br#"{"topic":"t-cdc","partition":1,"offset":9,"key":null,"value":{"op":"x","source":{"schema":"crm7","table":"contact"}}}"#.to_vec();
    let error = decoder.decode(&mut broken, &schemas).unwrap_err();
    assert_eq!(error.table(), Some(("crm7", "contact")));
    assert_eq!(error.position().map(ToString::to_string).as_deref(), Some("t-cdc/1@9"));
}
