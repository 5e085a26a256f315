//! `ErrorPolicy: Isolate` against the in-process cloud, on SQLite and PostgreSQL: rows the
//! owner's trigger refuses go to `_ReplicationErrors` while everything else is applied, later
//! accepted versions of a refused row make its entry obsolete, and a retry after the fix
//! leaves the replica equal to the source.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use dbmirror::pipeline::SyncOptions;
use dbmirror::sink::{SinkOptions, TargetKind};
use dbmirror::state::StateStore as _;

use crate::support::targets::{TestDb, fresh_databases};
use crate::support::world::{World, ready};

fn local_databases() -> Vec<TestDb> {
    fresh_databases().into_iter().filter(|db| db.kind != TargetKind::SqlServer).collect()
}

/// The owner's trigger: `crm7.person` refuses rows whose key is a multiple of 5.
fn refuse_some_people(db: &TestDb) {
    db.exec_per_target(
        "CREATE TRIGGER refuse_i BEFORE INSERT ON crm7_person WHEN NEW.person_id % 5 = 0 \
           BEGIN SELECT RAISE(ABORT, 'owner refuses this person'); END; \
         CREATE TRIGGER refuse_u BEFORE UPDATE ON crm7_person WHEN NEW.person_id % 5 = 0 \
           BEGIN SELECT RAISE(ABORT, 'owner refuses this person'); END;",
        "CREATE FUNCTION refuse_some() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.person_id % 5 = 0 THEN RAISE EXCEPTION 'owner refuses this person'; END IF; RETURN NEW; END $$; \
         CREATE TRIGGER refuse_some BEFORE INSERT OR UPDATE ON crm7.person FOR EACH ROW EXECUTE FUNCTION refuse_some();",
        "",
    );
}

fn accept_all_people(db: &TestDb) {
    db.exec_per_target("DROP TRIGGER refuse_i; DROP TRIGGER refuse_u;", "DROP TRIGGER refuse_some ON crm7.person;", "");
}

fn sync_isolating(w: &World, db: &TestDb, key: &dbmirror::secrets::SecretKey) {
    let options = SyncOptions { isolate_refused: true, ..World::options() };
    w.sync_options(db, key, &options, Arc::new(AtomicBool::new(false)))
        .unwrap_or_else(|e| panic!("{:?}: an isolated refusal must not stop the run: {e}", db.kind));
}

fn unequal_tables(w: &World, db: &TestDb) -> Vec<String> {
    let truth = w.cloud.with(|s| s.ground_truth("e2e1")).unwrap();
    let checks = dbmirror::verify::verify(db.open(SinkOptions::default()).as_mut(), &truth).unwrap();
    checks.into_iter().filter(|c| !c.equal).map(|c| c.table).collect()
}

#[test]
fn refused_rows_are_isolated_kept_and_retried_after_the_fix() {
    for db in local_databases() {
        let (w, key) = ready(&db, "isolate");
        refuse_some_people(&db);
        w.changes(400);
        sync_isolating(&w, &db, &key);

        // Everything but the refused people is in; the refused ones are kept, named.
        let refused = db.open(SinkOptions::default()).read_refused().unwrap();
        assert!(!refused.is_empty(), "{:?}: 400 changes touch some refused people", db.kind);
        for r in &refused {
            assert_eq!(r.table, "crm7.person", "{r:?}");
            let id: i64 = serde_json::from_str::<Vec<String>>(&r.key).unwrap()[0].parse().unwrap();
            assert_eq!(id % 5, 0, "{:?}: only refused keys are kept: {r:?}", db.kind);
            assert!(r.error.contains("owner refuses this person"), "{r:?}");
            assert!(r.operation == "upsert" && r.image.is_some(), "{r:?}");
        }
        assert_eq!(unequal_tables(&w, &db), ["crm7.person"], "{:?}", db.kind);

        // The owner fixes the cause. New changes that rewrite a refused key make its entry
        // obsolete (deleted with that batch), so a retry never writes an older image.
        accept_all_people(&db);
        w.changes(3000);
        sync_isolating(&w, &db, &key);
        let left = db.open(SinkOptions::default()).read_refused().unwrap();
        assert!(left.len() < refused.len(), "{:?}: some refused people changed again since", db.kind);

        let outcome = dbmirror::pipeline::refused::retry(db.open(SinkOptions::default()).as_mut()).unwrap();
        assert!(outcome.still_refused.is_empty(), "{:?}: {:?}", db.kind, outcome.still_refused);
        assert_eq!(outcome.applied, left.len(), "{:?}", db.kind);
        assert!(db.open(SinkOptions::default()).read_refused().unwrap().is_empty());
        w.verify(&db, "after the retry");
    }
}

/// A retry while the cause is still there keeps the refusals and changes nothing; the
/// default policy (`Stop`) still holds at the refused batch.
#[test]
fn a_retry_before_the_fix_keeps_the_refusals_and_stop_still_holds() {
    for db in local_databases() {
        let (w, key) = ready(&db, "isolate2");
        refuse_some_people(&db);
        w.changes(200);
        sync_isolating(&w, &db, &key);
        let refused = db.open(SinkOptions::default()).read_refused().unwrap().len();
        let outcome = dbmirror::pipeline::refused::retry(db.open(SinkOptions::default()).as_mut()).unwrap();
        assert_eq!((outcome.applied, outcome.still_refused.len()), (0, refused), "{:?}", db.kind);
        assert_eq!(db.open(SinkOptions::default()).read_refused().unwrap().len(), refused);

        w.changes(200);
        let stop = w.try_sync(&db, &key, false);
        assert!(stop.is_err(), "{:?}: without Isolate a refused batch stops a one-shot run", db.kind);
        accept_all_people(&db);
        w.sync_until_idle(&db, &key);
        dbmirror::pipeline::refused::retry(db.open(SinkOptions::default()).as_mut()).unwrap();
        w.verify(&db, "after Stop, the fix and a retry");
    }
}

/// `sync` running as a service under `Isolate` while the source changes: the owner's trigger
/// refuses some people, the service never stops, every other table stays current, the health
/// check names the refusals; after the fix a retry makes the replica equal to the source.
#[test]
fn a_running_sync_isolates_refused_rows_and_goes_on() {
    use std::time::{Duration, Instant};
    let eventually = |what: &str, mut check: Box<dyn FnMut() -> bool + '_>| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    for db in local_databases() {
        let (w, key) = ready(&db, "isolate3");
        refuse_some_people(&db);
        let metrics = Arc::new(dbmirror::metrics::Metrics::default());
        let options =
            SyncOptions { until_idle: false, isolate_refused: true, metrics: metrics.clone(), ..World::options() };
        let run = w.while_syncing(&db, &key, &options, |run| {
            w.changes(300);
            eventually("refusals", Box::new(|| !db.open(SinkOptions::default()).read_refused().unwrap().is_empty()));
            w.changes(300);
            eventually("every other table current", Box::new(|| unequal_tables(&w, &db) == ["crm7.person"]));
            eventually(
                "the health check to name the refusals",
                Box::new(|| {
                    matches!(metrics.health(Duration::from_secs(300)),
                        dbmirror::metrics::Health::Unhealthy(why) if why.contains("_ReplicationErrors"))
                }),
            );
            assert!(!run.is_finished(), "{:?}: refusals must not stop the service", db.kind);
        });
        run.unwrap_or_else(|e| panic!("{:?}: {e}", db.kind));
        accept_all_people(&db);
        let outcome = dbmirror::pipeline::refused::retry(db.open(SinkOptions::default()).as_mut()).unwrap();
        assert!(outcome.still_refused.is_empty(), "{:?}", outcome.still_refused);
        w.verify(&db, "after the running service isolated, the fix and a retry");
    }
}
