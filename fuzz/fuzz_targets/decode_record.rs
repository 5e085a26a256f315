//! Any bytes as a record line or value: the decoder and the canonical renderer must return
//! a value or an error, never panic, overflow or allocate without bound.
#![no_main]

use std::sync::OnceLock;

use dbmirror::decode::{Decoder, Event};
use dbmirror::inspect;
use dbmirror::schema::{SchemaChangeKind, SchemaRegistry};
use libfuzzer_sys::fuzz_target;

/// Schemas for the tables the seed corpus uses, so payload-only inputs exercise typed paths.
fn schemas() -> &'static SchemaRegistry {
    static SCHEMAS: OnceLock<SchemaRegistry> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let mut reg = SchemaRegistry::new();
        let history = include_str!("../../tests/fixtures/edge/edge-cases.jsonl")
            .lines()
            .chain(include_str!("../../tests/fixtures/debezium/seatunnel-full-types.jsonl").lines());
        let mut decoder = Decoder::default();
        for line in history {
            let mut bytes = line.as_bytes().to_vec();
            if let Ok(Event::SchemaChange(changes)) = decoder.decode(&mut bytes, &reg).map(|d| d.event) {
                changes.iter().filter(|c| c.kind != SchemaChangeKind::Drop).for_each(|c| reg.apply(c));
            }
        }
        reg
    })
}

fuzz_target!(|data: &[u8]| {
    // Twice with one decoder: the first sight of a schema block fills the cache, the second
    // is served from it. Both must give the same result.
    let mut decoder = Decoder::default();
    let outcome = |decoder: &mut Decoder| {
        let mut bytes = data.to_vec();
        match decoder.decode(&mut bytes, schemas()) {
            Ok(decoded) => {
                let mut out = String::new();
                inspect::render(&decoded, &mut out);
                out
            }
            Err(e) => format!("error: {e}"),
        }
    };
    let first = outcome(&mut decoder);
    let second = outcome(&mut decoder);
    assert_eq!(first, second, "cached schema changed the result");
});
