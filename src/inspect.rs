//! `dbmirror inspect`: decode a file of records and print each as canonical JSON.
//!
//! Users debugging a stream and our own tests need one stable, lossless text form of a
//! decoded event: integers exact, decimals and money as strings with their digits, binary
//! as `0x…`, temporals in ISO-8601 without float rounding or time-zone shifts.

use std::io::{BufRead, Write};

use crate::decode::{Decoded, Decoder, Event, Field, Value};

/// Reading the input or writing the output failed (a bad record is reported, not an error).
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct InspectError {
    /// What was being done, e.g. `reading input`.
    pub context: String,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}
use crate::protocol::LineFramer;
use crate::schema::{SchemaRegistry, TableChange};
use crate::value::write_json_string;

/// Longest line `inspect` accepts; far above Kafka's message size limits.
const MAX_LINE: usize = 1 << 30;

/// Counts from one inspect run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InspectSummary {
    /// Non-blank lines read.
    pub records: u64,
    /// Lines that failed to decode (reported on the error writer).
    pub failed: u64,
}

/// Decodes every line of `input`, writing one JSON object per record to `out` and one
/// `line N: reason` message per bad line to `errors`. Schema-history records update the
/// schemas used for the lines after them.
pub fn run(
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    errors: &mut dyn Write,
    decoder: &mut Decoder,
) -> Result<InspectSummary, InspectError> {
    let io = |context: &str| {
        let context = context.to_owned();
        move |source| InspectError { context, source }
    };
    let mut schemas = SchemaRegistry::new();
    let mut summary = InspectSummary::default();
    let mut framer = LineFramer::new(MAX_LINE);
    let mut rendered = String::with_capacity(64 * 1024);
    let mut line_no = 0u64;
    let mut at_end = false;
    while !at_end {
        let chunk = input.fill_buf().map_err(io("reading input"))?;
        at_end = chunk.is_empty();
        framer.push(chunk);
        let consumed = chunk.len();
        input.consume(consumed);
        loop {
            let line = match framer.next_line() {
                Ok(Some(line)) => line,
                Ok(None) if at_end => match framer.finish() {
                    Some(line) => line,
                    None => break,
                },
                Ok(None) => break,
                Err(e) => {
                    // The rest of the input cannot be framed reliably.
                    summary.failed += 1;
                    writeln!(errors, "line {}: {e}", line_no + 1).map_err(io("writing errors"))?;
                    out.flush().map_err(io("writing output"))?;
                    return Ok(summary);
                }
            };
            line_no += 1;
            let mut line = line;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            summary.records += 1;
            rendered.clear();
            match decoder.decode(&mut line, &schemas) {
                Ok(decoded) => {
                    if let Event::SchemaChange(changes) = &decoded.event {
                        changes.iter().for_each(|c| schemas.apply(c));
                    }
                    render(&decoded, &mut rendered);
                    rendered.push('\n');
                    out.write_all(rendered.as_bytes()).map_err(io("writing output"))?;
                }
                Err(e) => {
                    summary.failed += 1;
                    writeln!(errors, "line {line_no}: {e}").map_err(io("writing errors"))?;
                }
            }
        }
    }
    out.flush().map_err(io("writing output"))?;
    Ok(summary)
}

/// Renders a decoded record as one canonical JSON object (no trailing newline).
pub fn render(decoded: &Decoded<'_>, out: &mut String) {
    match &decoded.event {
        Event::Tombstone => out.push_str("{\"tombstone\":true}"),
        Event::TransactionMarker(marker) => {
            out.push_str(if marker.end { "{\"transaction_end\":" } else { "{\"transaction_begin\":" });
            write_json_string(out, marker.id);
            if let Some(count) = marker.event_count {
                out.push_str(",\"event_count\":");
                out.push_str(itoa::Buffer::new().format(count));
            }
            out.push('}');
        }
        Event::SchemaChange(changes) => {
            out.push_str("{\"schema_change\":");
            match changes.as_slice() {
                [one] => render_table_change(one, out),
                many => {
                    out.push('[');
                    for (i, c) in many.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        render_table_change(c, out);
                    }
                    out.push(']');
                }
            }
            out.push('}');
        }
        Event::Change(change) => {
            out.push_str("{\"table\":");
            let mut table = String::with_capacity(change.source.schema.len() + change.source.table.len() + 1);
            table.push_str(change.source.schema);
            table.push('.');
            table.push_str(change.source.table);
            write_json_string(out, &table);
            out.push_str(",\"op\":\"");
            out.push_str(change.op.code());
            out.push_str("\",\"key\":");
            render_fields(change.key.as_deref(), out);
            out.push_str(",\"before\":");
            render_fields(change.before.as_deref(), out);
            out.push_str(",\"after\":");
            render_fields(change.after.as_deref(), out);
            out.push('}');
        }
    }
}

fn render_fields(fields: Option<&[Field<'_>]>, out: &mut String) {
    let Some(fields) = fields else {
        out.push_str("null");
        return;
    };
    out.push('{');
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_string(out, field.name);
        out.push(':');
        render_value(&field.value, out);
    }
    out.push('}');
}

/// Renders one value canonically (see the module docs).
pub fn render_value(value: &Value<'_>, out: &mut String) {
    use std::fmt::Write as _;
    let quoted = |out: &mut String, display: &dyn std::fmt::Display| {
        out.push('"');
        let _ = write!(out, "{display}");
        out.push('"');
    };
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(v) => out.push_str(itoa::Buffer::new().format(*v)),
        Value::UInt(v) => out.push_str(itoa::Buffer::new().format(*v)),
        Value::Float(v) => out.push_str(ryu::Buffer::new().format(*v)),
        Value::Float32(v) => out.push_str(ryu::Buffer::new().format(*v)),
        Value::Text(s) | Value::Uuid(s) | Value::Xml(s) | Value::ZonedTime(s) => write_json_string(out, s),
        Value::Binary(b) => {
            out.push_str("\"0x");
            if b.write_hex(out).is_err() {
                // Unreachable for decoded values (checked at decode time); keep the text visible.
                out.push_str(b.text());
            }
            out.push('"');
        }
        Value::Decimal(d) => quoted(out, d),
        Value::Date(d) => quoted(out, d),
        Value::Time(t) => quoted(out, t),
        Value::DateTime(dt) => quoted(out, dt),
        Value::DateTimeOffset(dto) => quoted(out, dto),
        Value::Json(raw) => out.push_str(raw),
    }
}

fn render_table_change(change: &TableChange, out: &mut String) {
    use std::fmt::Write as _;
    let table = &change.table;
    out.push_str("{\"type\":\"");
    out.push_str(change.kind.as_str());
    out.push_str("\",\"table\":");
    write_json_string(out, &table.id.to_string());
    out.push_str(",\"primary_key\":");
    crate::value::write_json_string_array(out, table.primary_key.iter().map(String::as_str));
    out.push_str(",\"columns\":[");
    for (i, c) in table.columns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        write_json_string(out, &c.name);
        out.push_str(",\"type\":");
        let ty = if c.sql_type == crate::schema::SqlType::Other { c.type_name.clone() } else { c.sql_type.to_string() };
        write_json_string(out, &ty);
        let _ = write!(out, ",\"position\":{},\"nullable\":{},\"identity\":{}", c.position, c.nullable, c.identity);
        out.push_str(",\"default\":");
        match &c.default_expression {
            Some(d) => write_json_string(out, d),
            None => out.push_str("null"),
        }
        out.push('}');
    }
    out.push_str("]}");
}
