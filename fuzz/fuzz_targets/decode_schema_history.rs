//! A schema-history record (up to the first newline) followed by a record that uses it: the
//! history decoder, type mapping and schema-driven value decoding must never panic.
#![no_main]

use dbmirror::decode::{DecimalHandlingMode, DecodeOptions, Decoder, Event, TimePrecisionMode};
use dbmirror::inspect;
use dbmirror::schema::SchemaRegistry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (history, rest) = data.split_at(split);
    let mut registry = SchemaRegistry::new();
    // The low bits of the first byte pick connector settings, to cover every mode.
    let mode = data.first().copied().unwrap_or(0);
    let options = DecodeOptions {
        time_precision: [
            TimePrecisionMode::Adaptive,
            TimePrecisionMode::AdaptiveTimeMicroseconds,
            TimePrecisionMode::Connect,
        ][usize::from(mode % 3)],
        decimal_handling: [DecimalHandlingMode::Precise, DecimalHandlingMode::String, DecimalHandlingMode::Double]
            [usize::from(mode / 3 % 3)],
        ..DecodeOptions::default()
    };
    let mut decoder = Decoder::new(options);
    let mut out = String::new();
    let mut history = history.to_vec();
    if let Ok(decoded) = decoder.decode(&mut history, &registry) {
        inspect::render(&decoded, &mut out);
        if let Event::SchemaChange(changes) = decoded.event {
            changes.iter().for_each(|c| registry.apply(c));
        }
    }
    let mut record = rest.get(1..).unwrap_or_default().to_vec();
    if let Ok(decoded) = decoder.decode(&mut record, &registry) {
        out.clear();
        inspect::render(&decoded, &mut out);
    }
});
