//! `resync-tables` end to end on every target: a drifted table is reloaded from a fresh
//! snapshot through a shadow table while the source keeps changing, readers never see it
//! empty, a stop in the middle resumes, and schema changes during a resync are followed or
//! cancel it cleanly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dbmirror::clock::now_ms;
use dbmirror::cloud::journal::TenantOp;
use dbmirror::schema::TableId;
use dbmirror::sink::{SinkOptions, shadow};
use dbmirror::state::SessionValue;

use crate::support::targets::{TestDb, fresh_databases};
use crate::support::world::World;

fn request(db: &TestDb, tables: &[&TableId]) {
    let facts: Vec<(String, SessionValue)> =
        tables.iter().map(|id| (shadow::request_fact(id), SessionValue::Text(now_ms().to_string()))).collect();
    let facts: Vec<(&str, SessionValue)> = facts.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    db.open(SinkOptions::default()).write_facts(&facts).unwrap();
}

/// No shadow table and no resync fact is left behind.
fn assert_settled(db: &TestDb) {
    let mut sink = db.open(SinkOptions::default());
    assert!(shadow::shadows(&sink).is_empty(), "{:?}: a shadow is left", db.kind);
    let session = sink.read_facts().unwrap();
    assert!(shadow::requested(&session).is_empty() && shadow::running(&session).is_empty(), "{:?}", db.kind);
}

fn person_rows(db: &TestDb) -> usize {
    db.open(SinkOptions::default()).read_rows(&TableId::new("crm7", "person")).unwrap().len()
}

/// Breaks `crm7.person` in the replica: rows missing, a row that the source does not have.
fn drift(db: &TestDb) {
    db.exec_per_target(
        "DELETE FROM crm7_person WHERE person_id % 3 = 0; UPDATE crm7_person SET person_id = person_id + 100000 WHERE person_id = 1",
        "DELETE FROM crm7.person WHERE person_id % 3 = 0; UPDATE crm7.person SET person_id = person_id + 100000 WHERE person_id = 1",
        "DELETE FROM [crm7].[person] WHERE person_id % 3 = 0; UPDATE [crm7].[person] SET person_id = person_id + 100000 WHERE person_id = 1",
    );
}

/// Makes the cloud pause `ms` before each record it sends this replica's session.
fn slow_down(w: &World, db: &TestDb, ms: u64) {
    let session = db.open(SinkOptions::default()).read_facts().unwrap();
    let Some(SessionValue::Text(id)) = session.get("session_id") else { panic!("no session id") };
    let faults = dbmirror::cloud::service::Faults { slow_ms: ms, ..Default::default() };
    w.cloud.with(|s| s.set_faults(id, faults)).unwrap();
}

fn provisioned(db: &TestDb) -> (World, dbmirror::secrets::SecretKey) {
    crate::support::world::ready(db, "resync")
}

#[test]
fn a_drifted_table_is_reloaded_through_a_shadow_and_never_seen_empty() {
    for db in fresh_databases() {
        let (w, key) = provisioned(&db);
        let person = TableId::new("crm7", "person");
        drift(&db);
        let truth = w.cloud.with(|s| s.ground_truth("e2e1")).unwrap();
        let checks = dbmirror::verify::verify(db.open(SinkOptions::default()).as_mut(), &truth).unwrap();
        assert!(checks.iter().any(|c| c.table == "crm7.person" && !c.equal), "{:?}: the drift is visible", db.kind);

        // A reader counts the table's rows the whole time.
        let fewest = crate::support::fewest_while(
            || person_rows(&db),
            || {
                request(&db, &[&person]);
                w.changes(300);
                w.sync_until_idle(&db, &key);
            },
        );
        assert!(fewest > 0, "{:?}: readers saw an empty table", db.kind);
        w.verify(&db, "after resync-tables");
        assert_settled(&db);

        // Changes after the swap go to the live table as usual.
        w.changes(100);
        w.sync_until_idle(&db, &key);
        w.verify(&db, "streaming after the resync");
    }
}

#[test]
fn a_resync_stopped_midway_resumes_and_completes() {
    for db in fresh_databases() {
        let (w, key) = provisioned(&db);
        let person = TableId::new("crm7", "person");
        drift(&db);
        request(&db, &[&person]);
        // Records trickle in (a pause before each), so a stop lands inside the snapshot.
        slow_down(&w, &db, 20);
        let stop = Arc::new(AtomicBool::new(false));
        let stopper = {
            let (db, stop) = (db.clone(), stop.clone());
            std::thread::spawn(move || {
                // Stop (as Ctrl-C would) once the shadow exists: the snapshot is still trickling in.
                let shadow = TableId::new("crm7", "person").shadow();
                for _ in 0..2000 {
                    if db.open(SinkOptions::default()).table(&shadow).is_some() {
                        stop.store(true, Ordering::Relaxed);
                        return true;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                false
            })
        };
        w.run_sync(&db, &key, stop).unwrap();
        assert!(stopper.join().unwrap(), "the shadow table appeared");
        let session = db.open(SinkOptions::default()).read_facts().unwrap();
        assert_eq!(shadow::running(&session).len(), 1, "stopped while the resync was running");
        slow_down(&w, &db, 0);
        w.changes(100);
        w.sync_until_idle(&db, &key);
        w.verify(&db, "after the resumed resync");
        assert_settled(&db);
    }
}

#[test]
fn schema_changes_during_a_resync_are_followed_or_cancel_it() {
    for db in fresh_databases() {
        let (w, key) = provisioned(&db);
        let (person, contact) = (TableId::new("crm7", "person"), TableId::new("crm7", "contact"));
        request(&db, &[&person, &contact]);
        // The changes are in the log before the resync snapshots, so the client reads them
        // while both resyncs are running.
        for op in [
            TenantOp::AddColumn { table: "crm7.person".into(), column: "nickname".into() },
            TenantOp::Change { count: 100 },
            TenantOp::IncompatibleChange { table: "crm7.contact".into() },
            TenantOp::Change { count: 100 },
        ] {
            w.cloud.with(|s| s.run("e2e1", &op, now_ms())).unwrap();
        }
        w.sync_until_idle(&db, &key);
        w.verify(&db, "after schema changes during resyncs");
        assert_settled(&db);
    }
}

/// The states a crash can leave between a resync's steps: a shadow created but its start not
/// recorded (the request is still pending), and a swap committed but its fact not cleared.
#[test]
fn a_crash_between_resync_steps_is_reconciled_on_restart() {
    for db in fresh_databases() {
        let (w, key) = provisioned(&db);
        let (person, contact) = (TableId::new("crm7", "person"), TableId::new("crm7", "contact"));
        drift(&db);
        let mut sink = db.open(SinkOptions::default());
        let live = sink.tables().into_iter().find(|r| r.schema.id == person).unwrap();
        let orphan = dbmirror::schema::TableSchema { id: person.shadow(), ..(*live.schema).clone() };
        let create = dbmirror::schema::TableChange { kind: dbmirror::schema::SchemaChangeKind::Create, table: orphan };
        sink.apply_schema(&create).unwrap();
        sink.write_facts(&[("resync:crm7.contact", SessionValue::Text("e2e1-cdc/0=1".into()))]).unwrap();
        drop(sink);
        request(&db, &[&person]);
        w.sync_until_idle(&db, &key);
        w.verify(&db, "after reconciling interrupted steps");
        assert_settled(&db);
        assert!(db.open(SinkOptions::default()).tables().iter().any(|r| r.schema.id == contact));
    }
}

/// A source restore resets the offsets: every table is reloaded through a shadow, so while
/// the reload runs the live tables keep every row they had (no truncation), and after it the
/// replica equals the restored source.
#[test]
fn a_restore_reloads_through_shadows_and_keeps_tables_complete() {
    for db in fresh_databases() {
        let (w, key) = provisioned(&db);
        w.changes(100);
        w.sync_until_idle(&db, &key);
        let before = person_rows(&db);
        w.cloud.with(|s| s.reset_offsets("e2e1", now_ms(), true)).unwrap();
        slow_down(&w, &db, 5);
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (db, stop) = (db.clone(), stop.clone());
            std::thread::spawn(move || {
                for _ in 0..4000 {
                    let running = shadow::running(&db.open(SinkOptions::default()).read_facts().unwrap());
                    if running.len() >= 20 {
                        stop.store(true, Ordering::Relaxed);
                        return Some(person_rows(&db));
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                None
            })
        };
        w.run_sync(&db, &key, stop).unwrap();
        let during = watcher.join().unwrap().expect("every table was being reloaded through a shadow");
        assert!(during >= before, "the live table kept its rows during the reload ({during} < {before})");
        slow_down(&w, &db, 0);
        w.sync_until_idle(&db, &key);
        w.verify(&db, "after the reload");
        assert_settled(&db);
    }
}
