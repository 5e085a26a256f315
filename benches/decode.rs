//! Decode throughput: the zero-copy simd-json decoder against a straightforward
//! serde_json-based decoder of the same CRM-like events, side by side in one run.
//!
//! `cargo bench --bench decode` (quick CI run: `-- --quick`). Before measuring, every event is
//! decoded both ways and the results compared, so the two sides do the same work.

#[path = "support/mod.rs"]
mod support;

use support::ingest_common::registry;
use support::{events, serde_baseline};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dbmirror::decode::{Decoder, Event};
use dbmirror::protocol::LineFramer;
use dbmirror::schema::SchemaRegistry;
use std::hint::black_box;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EVENTS: u64 = 500;

/// Asserts both decoders produce identical rows for every event.
fn check_same_output(lines: &[String], schemas: &SchemaRegistry) {
    let mut decoder = Decoder::default();
    for line in lines {
        let mut bytes = line.clone().into_bytes();
        let ours = decoder.decode(&mut bytes, schemas).expect("zero-copy decode");
        let Event::Change(ours) = ours.event else { panic!("not a change") };
        let doc = serde_baseline::parse(line.as_bytes()).expect("serde parse");
        let theirs = serde_baseline::decode(&doc, schemas).expect("serde decode");
        assert_eq!(ours.before, theirs.before, "before differs");
        assert_eq!(ours.after, theirs.after, "after differs");
        assert_eq!(ours.source, theirs.source, "source differs");
    }
}

fn bench_decode(c: &mut Criterion) {
    for (label, columns) in [("narrow10", 10usize), ("wide60", 60)] {
        for with_schema in [true, false] {
            let work = events::workload(label, columns, EVENTS, with_schema);
            let schemas = registry(&work.history);
            check_same_output(&work.events, &schemas);
            let total_bytes: usize = work.events.iter().map(String::len).sum();
            // One contiguous buffer of newline-separated records, like a fetch response body.
            let body: Vec<u8> = work.events.iter().flat_map(|e| e.bytes().chain(std::iter::once(b'\n'))).collect();
            let group_name = format!("decode/{label}/{}", if with_schema { "with_schema" } else { "payload_only" });
            let mut group = c.benchmark_group(&group_name);
            group.throughput(Throughput::Elements(EVENTS));
            eprintln!("{group_name}: {EVENTS} events, {} bytes/event", total_bytes / EVENTS as usize);

            let mut decoder = Decoder::default();
            let mut framer = LineFramer::new(1 << 30);
            group.bench_function(BenchmarkId::new("simd_zero_copy", total_bytes), |b| {
                b.iter(|| {
                    // The body arrives once (one copy into the framer's buffer, as from the
                    // network); each record line is split off and decoded in place.
                    framer.push(&body);
                    let mut rows = 0usize;
                    while let Some(mut line) = framer.next_line().expect("line") {
                        let decoded = decoder.decode(&mut line, &schemas).expect("decode");
                        if let Event::Change(change) = decoded.event {
                            rows += change.after.map_or(0, |r| r.len());
                        }
                    }
                    black_box(rows)
                })
            });
            // The floor under any simd-json decoder: the same lines parsed to a tape (reused
            // buffers, as the decoder keeps them) and nothing else: no typing, no rows.
            let mut buffers = simd_json::Buffers::default();
            let mut spare: Option<simd_json::Tape<'static>> = None;
            group.bench_function(BenchmarkId::new("simd_tape_only", total_bytes), |b| {
                b.iter(|| {
                    framer.push(&body);
                    let mut nodes = 0usize;
                    while let Some(mut line) = framer.next_line().expect("line") {
                        let mut tape = spare.take().unwrap_or_else(simd_json::Tape::null).reset();
                        simd_json::fill_tape(&mut line, &mut buffers, &mut tape).expect("parse");
                        nodes += tape.0.len();
                        spare = Some(tape.reset());
                    }
                    black_box(nodes)
                })
            });
            group.bench_function(BenchmarkId::new("serde_json_value", total_bytes), |b| {
                b.iter(|| {
                    let mut rows = 0usize;
                    for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                        let doc = serde_baseline::parse(line).expect("parse");
                        let change = serde_baseline::decode(&doc, &schemas).expect("decode");
                        rows += change.after.map_or(0, |r| r.len());
                    }
                    black_box(rows)
                })
            });
            group.finish();
        }
    }
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
