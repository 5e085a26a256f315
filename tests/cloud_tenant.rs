//! The simulated tenant through its whole lifecycle (snapshot, a change workload with hot
//! keys and key updates, a new column, an incompatible re-create, a new table, a dropped
//! table, a resync, a source restore), read back from the event log, decoded by the client's
//! decoder and applied by a real replica, equals the tenant's ground truth, table by table.

use dbmirror::sink::Replica;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dbmirror::canonical::checksum;
use dbmirror::cloud::crm::source_tables;
use dbmirror::cloud::log::EventLog;
use dbmirror::cloud::tenant::{Tenant, TenantConfig, Workload};
use dbmirror::coalesce::{Coalescer, FlushPolicy};
use dbmirror::decode::{Decoder, Event};
use dbmirror::schema::{ColumnSchema, SchemaRegistry, SqlType, TableId, TableSchema};
use dbmirror::sink::{Sink, SinkOptions};

use crate::support::targets::fresh_databases;

/// A consumer of the tenant's topics: what the client's pipeline does, minus HTTP.
struct Consumer {
    positions: BTreeMap<(String, i32), i64>,
    decoder: Decoder,
    schemas: SchemaRegistry,
    sink: Box<dyn Replica>,
}

impl Consumer {
    /// Reads everything new on `topic` and applies it (schema changes first, as they come).
    fn drain(&mut self, log: &EventLog, topic: &str) {
        let mut coalescer = Coalescer::new(FlushPolicy { max_records: 300, ..FlushPolicy::default() });
        for partition in 0..log.partitions(topic) {
            let from = self.positions.get(&(topic.to_owned(), partition)).map_or(0, |o| o + 1);
            let fetched = log.fetch(topic, partition, from, usize::MAX, usize::MAX).unwrap();
            for record in fetched.records {
                let mut line = record.line.to_vec();
                let decoded = self.decoder.decode(&mut line, &self.schemas).unwrap();
                if let Event::SchemaChange(changes) = &decoded.event {
                    self.sink.apply(&coalescer.take()).unwrap();
                    for change in changes {
                        self.schemas.apply(change);
                        self.sink.apply_schema(change).unwrap();
                    }
                } else {
                    coalescer.push(&decoded, &self.schemas, Instant::now()).unwrap();
                    if coalescer.should_flush(Instant::now()) {
                        self.sink.apply(&coalescer.take()).unwrap();
                    }
                }
                self.positions.insert((topic.to_owned(), partition), record.offset);
            }
        }
        self.sink.apply(&coalescer.take()).unwrap();
    }

    fn sync(&mut self, log: &EventLog, tenant: &Tenant) {
        self.drain(log, &tenant.history_topic());
        self.drain(log, &tenant.cdc_topic());
    }
}

fn assert_equal(tenant: &Tenant, sink: &mut dyn Replica, phase: &str) {
    let truth = tenant.checksums();
    let replica: BTreeMap<TableId, (u64, u64)> = sink
        .tables()
        .into_iter()
        .map(|r| {
            let rows = sink.read_rows(&r.schema.id).unwrap();
            (r.schema.id.clone(), checksum(rows.iter().map(Vec::as_slice)))
        })
        .collect();
    assert_eq!(replica.keys().collect::<Vec<_>>(), truth.keys().collect::<Vec<_>>(), "{phase}: tables");
    for (id, sums) in &truth {
        assert_eq!(&replica[id], sums, "{phase}: {id}");
    }
}

#[test]
fn the_tenant_lifecycle_replicates_to_exactly_its_ground_truth() {
    for with_schema in [false, true] {
        let config =
            TenantConfig { context: "cust1234".into(), seed: 7, rows_per_table: 25, partitions: 3, with_schema };
        let mut tenant = Tenant::new(config, source_tables());
        let mut log = EventLog::in_memory(Duration::from_secs(3600));
        // One target per run is enough here; the sink contract covers the others.
        let db = fresh_databases().into_iter().last().unwrap();
        let mut consumer = Consumer {
            positions: BTreeMap::new(),
            decoder: Decoder::default(),
            schemas: SchemaRegistry::new(),
            sink: db.open(SinkOptions::default()),
        };
        let now = 1_700_000_000_000;
        tenant.publish_initial(&mut log, now).unwrap();
        consumer.sync(&log, &tenant);
        assert_equal(&tenant, consumer.sink.as_mut(), "snapshot");

        tenant.change(&mut log, now, 600, Workload::default()).unwrap();
        consumer.sync(&log, &tenant);
        assert_equal(&tenant, consumer.sink.as_mut(), "changes");

        let person = TableId::new("crm7", "person");
        let note = ColumnSchema {
            name: "mirror_note".into(),
            sql_type: SqlType::NVarChar(Some(100)),
            type_name: "nvarchar".into(),
            position: 0,
            nullable: true,
            identity: false,
            default_expression: None,
        };
        assert!(tenant.add_nullable_column(&mut log, now, &person, note).unwrap());
        tenant.change(&mut log, now, 300, Workload { hot_percent: 80, ..Workload::default() }).unwrap();
        consumer.sync(&log, &tenant);
        assert_equal(&tenant, consumer.sink.as_mut(), "added column");

        let contact = TableId::new("crm7", "contact");
        assert!(tenant.recreate_incompatible(&mut log, now, &contact).unwrap());
        let extra = TableSchema { id: TableId::new("crm7", "extra_service_table"), ..tenant.schemas()[0].clone() };
        tenant.add_table(&mut log, now, extra, 10).unwrap();
        assert!(tenant.drop_table(&mut log, now, &TableId::new("crm7", "relations")).unwrap());
        tenant.change(&mut log, now, 300, Workload::default()).unwrap();
        consumer.sync(&log, &tenant);
        assert_equal(&tenant, consumer.sink.as_mut(), "re-create, new table, drop");

        let resynced = tenant.resnapshot(&mut log, now, &[person.clone(), TableId::new("crm7", "nope")]).unwrap();
        assert_eq!(resynced, std::slice::from_ref(&person));
        consumer.sync(&log, &tenant);
        assert_equal(&tenant, consumer.sink.as_mut(), "resync");

        // A restored source re-snapshots everything from the returned offsets on. A replica
        // that starts there (with the whole schema history) holds exactly the new truth; an
        // existing replica must resync every table (the client's job) to drop vanished rows.
        let starts = tenant.restore(&mut log, now).unwrap();
        assert_eq!(starts.len(), 3);
        let db = fresh_databases().into_iter().last().unwrap();
        let mut fresh = Consumer {
            positions: starts.iter().filter(|(_, s)| **s > 0).map(|(p, s)| ((tenant.cdc_topic(), *p), s - 1)).collect(),
            decoder: Decoder::default(),
            schemas: SchemaRegistry::new(),
            sink: db.open(SinkOptions::default()),
        };
        fresh.sync(&log, &tenant);
        assert_equal(&tenant, fresh.sink.as_mut(), "restore");
    }
}
