//! Adopting a legacy mirror, on SQLite and PostgreSQL: a database whose tables a legacy
//! service filled (here: a mirror made stale on purpose, its `_ReplicationState` gone) is
//! taken over. Every table is reloaded through a shadow and swapped in, a reader never sees
//! an empty table, the owner's view and index survive, and streaming goes on.

use dbmirror::sink::{SinkOptions, TargetKind};
use dbmirror::state::TableState;

use crate::support::targets::{TestDb, fresh_databases};
use crate::support::world::{ready, store_session};

fn local_databases() -> Vec<TestDb> {
    fresh_databases().into_iter().filter(|db| db.kind != TargetKind::SqlServer).collect()
}

/// The replica as the legacy service would leave it: its tables, stale, an owner's view and
/// index on one of them, and no `_ReplicationState` (nor `_ReplicationErrors`).
fn make_legacy(db: &TestDb) {
    db.exec_per_target(
        "DELETE FROM crm7_person WHERE person_id % 4 = 0; UPDATE crm7_contact SET name = 'stale'; \
         CREATE INDEX owners_ix ON crm7_person (lastname); CREATE VIEW owners_view AS SELECT person_id FROM crm7_person; \
         DROP TABLE \"_ReplicationState\"; DROP TABLE \"_ReplicationErrors\"",
        "DELETE FROM crm7.person WHERE person_id % 4 = 0; UPDATE crm7.contact SET name = 'stale'; \
         CREATE INDEX owners_ix ON crm7.person (lastname); CREATE VIEW owners_view AS SELECT person_id FROM crm7.person; \
         DROP TABLE \"_ReplicationState\"; DROP TABLE \"_ReplicationErrors\"",
        "unused",
    );
}

fn person_rows(db: &TestDb) -> i64 {
    db.scalar("SELECT count(*) FROM crm7_person", "SELECT count(*) FROM crm7.person")
}

#[test]
fn a_legacy_mirror_is_adopted_table_by_table_without_an_empty_moment() {
    for db in local_databases() {
        let (w, key) = ready(&db, "legacy");
        w.changes(200);
        make_legacy(&db);
        let legacy_rows = person_rows(&db);
        assert!(legacy_rows > 0);
        // dbmirror's own session for the database (provisioning stores it in the new
        // `_ReplicationState`).
        store_session(db.open(SinkOptions::default()).as_mut(), &key, w.grant("adopted"));

        let fewest = crate::support::fewest_while(|| person_rows(&db), || drop(w.sync_until_idle(&db, &key)));
        assert!(fewest > 0, "{:?}: a reader saw the person table empty", db.kind);

        w.verify(&db, "adopted");
        let replica = db.open(SinkOptions::default());
        assert!(replica.tables().iter().all(|r| r.state == TableState::Ready), "{:?}: every table adopted", db.kind);
        let kept = db.scalar(
            "SELECT count(*) FROM sqlite_master WHERE name IN ('owners_ix', 'owners_view')",
            "SELECT (SELECT count(*) FROM pg_indexes WHERE indexname = 'owners_ix') + \
             (SELECT count(*) FROM pg_views WHERE viewname = 'owners_view')",
        );
        assert_eq!(kept, 2, "{:?}: the owner's index and view survive the adoption", db.kind);
        w.changes(100);
        w.sync_until_idle(&db, &key);
        w.verify(&db, "streaming after the adoption");
    }
}
