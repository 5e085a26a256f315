//! What every ingest bench needs: the schema from the workload's history record, the body
//! as the service streams it, and the decoded rows (for the raw-limit baselines, whose
//! measurement must not include decoding).

use dbmirror::decode::{Decoder, Event};
use dbmirror::row::Cell;
use dbmirror::schema::{SchemaRegistry, TableSchema};

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

fn registry(history: &str) -> SchemaRegistry {
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
