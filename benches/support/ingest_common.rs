//! What every ingest bench needs: the schema from the workload's history record, the body
//! as the service streams it, and the decoded rows (for the raw-limit baselines, whose
//! measurement must not include decoding).

use dbmirror::state::StateStore;
use std::time::Instant;

use dbmirror::coalesce::{Batch, Coalescer, FlushPolicy};
use dbmirror::decode::{Decoder, Event};
use dbmirror::protocol::LineFramer;
use dbmirror::row::Cell;
use dbmirror::schema::{SchemaRegistry, TableSchema};
use dbmirror::sink::Sink;
use dbmirror::sink::worker::{Job, SinkWorker};

use super::events;

/// One table's snapshot workload, prepared.
pub struct Prepared {
    pub schemas: SchemaRegistry,
    pub schema: TableSchema,
    /// Newline-delimited records, as the Replication Service streams them.
    pub body: Vec<u8>,
    /// Every event's `after` image as cells, in column order.
    pub rows: Vec<Vec<Cell>>,
}

/// Schemas learned from a workload's history record, as the pipeline would have them.
pub fn registry(history: &str) -> SchemaRegistry {
    let mut reg = SchemaRegistry::new();
    let mut bytes = history.as_bytes().to_vec();
    let Event::SchemaChange(changes) = Decoder::default().decode(&mut bytes, &reg).expect("history").event else {
        panic!("history record did not decode as a schema change")
    };
    changes.iter().for_each(|c| reg.apply(c));
    reg
}

/// A snapshot of `rows` rows of a `columns`-wide CRM-like table named `label`.
pub fn prepare(label: &str, columns: usize, rows: u64) -> Prepared {
    let work = events::snapshot(label, columns, rows, false);
    let schemas = registry(&work.history);
    let schema = (**schemas.get("crm7", label).unwrap()).clone();
    let body: Vec<u8> = work.events.iter().flat_map(|e| e.bytes().chain(std::iter::once(b'\n'))).collect();
    let mut decoder = Decoder::default();
    let rows = work
        .events
        .iter()
        .map(|e| {
            let mut bytes = e.clone().into_bytes();
            let Event::Change(change) = decoder.decode(&mut bytes, &schemas).unwrap().event else { panic!() };
            change.after.unwrap().iter().map(|f| Cell::from_value(&f.value).unwrap()).collect()
        })
        .collect();
    Prepared { schemas, schema, body, rows }
}

/// The client's first stage: frames the body, decodes every line in place and coalesces,
/// handing each batch to `apply` when the policy says flush, and the rest at the end.
pub fn decode_and_coalesce(body: &[u8], schemas: &SchemaRegistry, policy: FlushPolicy, mut apply: impl FnMut(Batch)) {
    let mut framer = LineFramer::new(1 << 30);
    let mut decoder = Decoder::default();
    let mut coalescer = Coalescer::new(policy);
    let now = Instant::now();
    framer.push(body);
    while let Some(mut line) = framer.next_line().unwrap() {
        let decoded = decoder.decode(&mut line, schemas).unwrap();
        coalescer.push(&decoded, schemas, now).unwrap();
        if coalescer.should_flush(now) {
            apply(coalescer.take());
        }
    }
    apply(coalescer.take());
}

/// The two-stage pipeline: decoding on this thread, the sink on its own (`SinkWorker`).
pub fn pipeline_2_threads<S: Sink + StateStore + Send + 'static>(
    sink: S,
    body: &[u8],
    schemas: &SchemaRegistry,
    policy: FlushPolicy,
) -> S {
    let worker = SinkWorker::spawn(sink, 1);
    decode_and_coalesce(body, schemas, policy, |batch| worker.submit(Job::Apply(batch)).unwrap());
    let (sink, _, unapplied) = worker.finish();
    assert!(unapplied.is_empty());
    sink
}
