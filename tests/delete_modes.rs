//! The owner's delete modes against the in-process cloud, on SQLite and PostgreSQL: a soft
//! table keeps deleted rows flagged (through resyncs too), a history table holds every change
//! exactly once (a replayed stretch of the log adds nothing) and replaying it gives the current
//! state, resyncs never truncate a history, and an incompatible change keeps the old history.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use dbmirror::clock::now_ms;
use dbmirror::cloud::journal::TenantOp;
use dbmirror::owner::OwnerRules;
use dbmirror::owner::modes::{DeleteMode, DeleteModes};
use dbmirror::schema::TableId;
use dbmirror::sink::{SinkOptions, TargetKind, shadow};
use dbmirror::state::SessionValue;

use crate::support::targets::{TestDb, fresh_databases};
use crate::support::world::{World, key, world};

fn local_databases() -> Vec<TestDb> {
    fresh_databases().into_iter().filter(|db| db.kind != TargetKind::SqlServer).collect()
}

fn modes() -> Arc<OwnerRules> {
    let modes = DeleteModes::of(&[("crm7.person", DeleteMode::Soft), ("contact", DeleteMode::History)]);
    Arc::new(OwnerRules { modes, ..OwnerRules::default() })
}

fn shaped() -> SinkOptions {
    SinkOptions { owner: modes(), ..SinkOptions::default() }
}

fn sync(w: &World, db: &TestDb, key: &dbmirror::secrets::SecretKey) {
    let options = dbmirror::pipeline::SyncOptions { owner: modes(), ..World::options() };
    w.sync_shaped(db, key, &options, &shaped(), Arc::new(AtomicBool::new(false)))
        .unwrap_or_else(|e| panic!("{:?}: {e}", db.kind));
}

/// `verify` through the modes: every table equals the source (a soft table's live rows).
fn verify(w: &World, db: &TestDb, phase: &str) {
    let mut replica = db.open(shaped());
    let truth = || w.cloud.with(|s| s.ground_truth("e2e1")).map_err(|e| format!("{e:?}"));
    let checks = dbmirror::verify::verify_live(replica.as_mut(), truth, &shaped(), Duration::from_secs(5)).unwrap();
    let bad: Vec<_> = checks.iter().filter(|c| !c.equal).collect();
    assert!(bad.is_empty(), "{:?} {phase}: {bad:?}", db.kind);
    assert_eq!(checks.len(), 20, "{phase}: the history table is not taken for a source table");
}

fn count(db: &TestDb, sqlite: &str, postgres: &str) -> i64 {
    db.scalar(sqlite, postgres)
}

/// (flagged rows, flagged rows without a time) of the soft table.
fn flagged(db: &TestDb) -> (i64, i64) {
    (
        count(
            db,
            "SELECT count(*) FROM crm7_person WHERE _deleted = 1",
            "SELECT count(*) FROM crm7.person WHERE _deleted",
        ),
        count(
            db,
            "SELECT count(*) FROM crm7_person WHERE _deleted = 1 AND _deleted_at IS NULL",
            "SELECT count(*) FROM crm7.person WHERE _deleted AND _deleted_at IS NULL",
        ),
    )
}

fn history_rows(db: &TestDb) -> i64 {
    count(db, "SELECT count(*) FROM crm7_contact_history", "SELECT count(*) FROM crm7.contact_history")
}

/// Replays the history: per key the latest change (by LSN) must be a delete exactly when the
/// live table lacks the key, and carry the live row's name otherwise.
fn assert_history_replays_to_the_table(db: &TestDb, phase: &str) {
    let latest = |table: &str| {
        format!(
            "SELECT h.* FROM {table}_history h WHERE NOT EXISTS (SELECT 1 FROM {table}_history n \
             WHERE n.contact_id = h.contact_id AND (n._commit_lsn, n._change_lsn, n._seq) > (h._commit_lsn, h._change_lsn, h._seq))"
        )
    };
    let check = |sql: &dyn Fn(&str) -> String| count(db, &sql("crm7_contact"), &sql("crm7.contact"));
    let live = check(&|t| format!("SELECT count(*) FROM {t}"));
    let alive = check(&|t| format!("SELECT count(*) FROM ({}) l WHERE l._op <> 'd'", latest(t)));
    let matching = check(&|t| {
        format!(
            "SELECT count(*) FROM ({}) l JOIN {t} c ON c.contact_id = l.contact_id \
             WHERE l._op <> 'd' AND (c.name = l.name OR (c.name IS NULL AND l.name IS NULL))",
            latest(t)
        )
    });
    assert!(live > 0, "{:?} {phase}", db.kind);
    assert_eq!((alive, matching), (live, live), "{:?} {phase}: the history replays to the table", db.kind);
}

fn request_resync(db: &TestDb, ids: &[TableId]) {
    let facts: Vec<(String, SessionValue)> =
        ids.iter().map(|id| (shadow::request_fact(id), SessionValue::Text(now_ms().to_string()))).collect();
    let facts: Vec<(&str, SessionValue)> = facts.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    db.open(SinkOptions::default()).write_facts(&facts).unwrap();
}

/// Moves every stored offset back by `by` records: the next run receives that stretch of the
/// log again, as after a crash between a commit and its acknowledgement.
fn rewind(db: &TestDb, by: i64) {
    let sql = format!(
        "UPDATE \"_ReplicationState\" SET int_value = CASE WHEN int_value > {by} THEN int_value - {by} ELSE -1 END \
         WHERE scope = 'offset' AND name LIKE '%-cdc/%'"
    );
    db.exec(&sql);
}

#[test]
fn soft_and_history_tables_keep_what_they_promise_through_changes_replays_resyncs_and_recreates() {
    for db in local_databases() {
        let w = world(false);
        let key = key(&db);
        w.provision(&db, &key, "modes");
        sync(&w, &db, &key);
        let snapshot_history = history_rows(&db);
        assert!(snapshot_history > 0, "{:?}: the snapshot's reads are the history's start", db.kind);
        for round in 0..3 {
            w.changes(300);
            sync(&w, &db, &key);
            verify(&w, &db, &format!("round {round}"));
        }
        let (deleted, untimed) = flagged(&db);
        assert!(deleted > 0, "{:?}: deleted people stay, flagged", db.kind);
        assert_eq!(untimed, 0, "{:?}: every flagged row has its time", db.kind);
        assert_history_replays_to_the_table(&db, "after changes");
        let kept = history_rows(&db);
        assert!(kept > snapshot_history, "{:?}", db.kind);

        // A stretch of the log delivered again: nothing is written twice.
        rewind(&db, 150);
        sync(&w, &db, &key);
        assert_eq!(history_rows(&db), kept, "{:?}: replayed changes are not duplicated in the history", db.kind);
        assert_eq!(flagged(&db).0, deleted, "{:?}", db.kind);
        verify(&w, &db, "after a replay");

        // Resyncs: the soft table keeps its flagged rows, the history is not truncated.
        request_resync(&db, &[TableId::new("crm7", "person"), TableId::new("crm7", "contact")]);
        w.changes(100);
        sync(&w, &db, &key);
        verify(&w, &db, "after resyncs");
        assert!(flagged(&db).0 >= deleted, "{:?}: a resync keeps soft-deleted rows", db.kind);
        let contacts = count(&db, "SELECT count(*) FROM crm7_contact", "SELECT count(*) FROM crm7.contact");
        assert!(history_rows(&db) >= kept + contacts, "{:?}: the resync's reads are appended", db.kind);
        assert_history_replays_to_the_table(&db, "after resyncs");

        // An incompatible re-create (a column's type changed): the old history is kept under
        // a new name, whole, and a new one starts with the re-created table's snapshot.
        let before = history_rows(&db);
        let change = TenantOp::IncompatibleChange { table: "crm7.contact".into() };
        w.cloud.with(|s| s.run("e2e1", &change, now_ms())).unwrap();
        w.changes(100);
        sync(&w, &db, &key);
        verify(&w, &db, "after an incompatible change");
        let retired = db.text(
            "SELECT name FROM sqlite_master WHERE name LIKE 'crm7_contact_history_%'",
            "SELECT 'crm7.' || tablename FROM pg_tables WHERE schemaname = 'crm7' AND tablename LIKE 'contact_history_%'",
        );
        let retired_rows =
            count(&db, &format!("SELECT count(*) FROM \"{retired}\""), &format!("SELECT count(*) FROM {retired}"));
        assert_eq!(retired_rows, before, "{:?}: the retired history {retired} is whole", db.kind);
        let contacts = count(&db, "SELECT count(*) FROM crm7_contact", "SELECT count(*) FROM crm7.contact");
        assert!(history_rows(&db) >= contacts, "{:?}: the new history starts with the snapshot", db.kind);
        assert_history_replays_to_the_table(&db, "after an incompatible change");
    }
}
