//! The owner's hooks against the in-process cloud, on SQLite and PostgreSQL: an index and a
//! view put back after an incompatible re-create, a summary table refreshed after every
//! commit (and caught up after a run stopped between a commit and its hooks), a failing hook
//! that is only logged, one that holds replication until it is fixed, and a command that gets
//! the event and nothing else of this process's environment.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use dbmirror::clock::now_ms;
use dbmirror::cloud::journal::TenantOp;
use dbmirror::owner::OwnerRules;
use dbmirror::owner::hooks::{self, Hooks};
use dbmirror::pipeline::SyncOptions;
use dbmirror::sink::TargetKind;

use crate::support::targets::{TestDb, fresh_databases};
use crate::support::world::{World, key, world};

fn local_databases() -> Vec<TestDb> {
    fresh_databases().into_iter().filter(|db| db.kind != TargetKind::SqlServer).collect()
}

fn hooks_from(json: serde_json::Value) -> Arc<OwnerRules> {
    let hooks: Hooks = hooks::parse(Some(&json), Path::new(".")).unwrap();
    Arc::new(OwnerRules { hooks, ..OwnerRules::default() })
}

fn sync_with(
    w: &World,
    db: &TestDb,
    key: &dbmirror::secrets::SecretKey,
    hooks: &Arc<OwnerRules>,
) -> crate::support::world::SyncResult {
    let options = SyncOptions { owner: hooks.clone(), ..World::options() };
    w.sync_options(db, key, &options, Arc::new(AtomicBool::new(false)))
}

/// The person table's replica name, per target.
fn person(db: &TestDb) -> &'static str {
    match db.kind {
        TargetKind::Sqlite => "crm7_person",
        _ => "crm7.person",
    }
}

/// Counts of the owner's index and view on `crm7.contact`.
fn owner_objects(db: &TestDb) -> (i64, i64) {
    let index = db.scalar(
        "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'ix_contact_name'",
        "SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_contact_name'",
    );
    let view = db.scalar("SELECT count(*) FROM contact_names", "SELECT count(*) FROM contact_names");
    (index, view)
}

fn source_rows(w: &World, table: &str) -> i64 {
    let truth = w.cloud.with(|s| s.ground_truth("e2e1")).unwrap();
    truth.tables.iter().find(|t| t.table == table).map_or(0, |t| t.rows as i64)
}

#[test]
fn hooks_keep_the_owners_index_view_and_summary_in_step() {
    for db in local_databases() {
        let w = world(false);
        let key = key(&db);
        w.provision(&db, &key, "hooks");
        let view = match db.kind {
            TargetKind::Sqlite => {
                "DROP VIEW IF EXISTS contact_names; CREATE VIEW contact_names AS SELECT name FROM {table}"
            }
            _ => "CREATE OR REPLACE VIEW contact_names AS SELECT name FROM {table}",
        };
        let hooks = hooks_from(serde_json::json!({
            "TableCreated": [{
                "Tables": ["crm7.contact"],
                "Sql": format!("CREATE INDEX IF NOT EXISTS ix_contact_name ON {{table}} (name); {view}")
            }],
            "BatchCommitted": [{
                "Sql": format!("CREATE TABLE IF NOT EXISTS person_summary (people bigint); DELETE FROM person_summary; \
                                INSERT INTO person_summary SELECT count(*) FROM {}", person(&db))
            }]
        }));
        sync_with(&w, &db, &key, &hooks).unwrap();
        w.verify(&db, "after the snapshot, with hooks");
        let summary = || db.scalar("SELECT people FROM person_summary", "SELECT people FROM person_summary");
        assert_eq!(summary(), source_rows(&w, "crm7.person"), "{:?}: the summary follows the commits", db.kind);
        assert_eq!(owner_objects(&db), (1, source_rows(&w, "crm7.contact")), "{:?}: created with the table", db.kind);

        // An incompatible change re-creates the table: the owner's index (and on PostgreSQL the
        // view, dropped with the table) are gone until the hook puts them back.
        let op = TenantOp::IncompatibleAlter { table: "crm7.contact".into() };
        w.cloud.with(|s| s.run("e2e1", &op, now_ms())).unwrap();
        w.changes(80);
        sync_with(&w, &db, &key, &hooks).unwrap();
        w.verify(&db, "after the re-create, with hooks");
        assert_eq!(
            owner_objects(&db),
            (1, source_rows(&w, "crm7.contact")),
            "{:?}: put back after the re-create",
            db.kind
        );
        assert_eq!(summary(), source_rows(&w, "crm7.person"), "{:?}", db.kind);

        // A run stopped between a commit and its hook (here: a run without the hook) is
        // caught up when the next run starts, even with nothing new to apply.
        w.changes(60);
        sync_with(&w, &db, &key, &Arc::default()).unwrap();
        sync_with(&w, &db, &key, &hooks).unwrap();
        assert_eq!(summary(), source_rows(&w, "crm7.person"), "{:?}: caught up at start", db.kind);
    }
}

#[test]
fn a_failing_hook_is_logged_or_holds_replication_as_configured() {
    for db in local_databases() {
        let w = world(false);
        let key = key(&db);
        w.provision(&db, &key, "hookfail");
        let broken = |on_failure: &str| {
            hooks_from(serde_json::json!({
                "OnFailure": on_failure,
                "BatchCommitted": [{ "Sql": "INSERT INTO no_such_table VALUES (1)" }]
            }))
        };
        // Log (the default): every batch goes in, the replica equals the source.
        sync_with(&w, &db, &key, &broken("Log")).unwrap();
        w.verify(&db, "with a failing hook that is only logged");

        // Stop: the batch the hook followed is committed, nothing after it; the run stops
        // with the hook's error and advice.
        w.changes(100);
        let error = sync_with(&w, &db, &key, &broken("Stop")).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("BatchCommitted hook") && text.contains("no_such_table"), "{text}");
        // Fixed (here: the table the hook writes now exists): the next run converges.
        db.exec("CREATE TABLE no_such_table (n integer)");
        sync_with(&w, &db, &key, &broken("Stop")).unwrap();
        w.verify(&db, "after the hook was fixed");
        assert!(db.scalar("SELECT count(*) FROM no_such_table", "SELECT count(*) FROM no_such_table") >= 1);
    }
}

#[test]
fn a_hook_command_gets_the_event_and_none_of_the_process_environment() {
    let db = local_databases().into_iter().next().unwrap();
    let dir = std::env::temp_dir().join(format!("dbmirror-hook-cmd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("env.txt");
    let w = world(false);
    let key = key(&db);
    w.provision(&db, &key, "hookcmd");
    let hooks = hooks_from(serde_json::json!({
        "TableLoaded": [{ "Tables": ["person"], "Command": ["sh", "-c", format!("env >> '{}'", out.display())] }]
    }));
    sync_with(&w, &db, &key, &hooks).unwrap();
    let env = std::fs::read_to_string(&out).unwrap();
    let names: Vec<&str> = env.lines().filter_map(|l| l.split_once('=').map(|(k, _)| k)).collect();
    assert!(env.contains("DBMIRROR_EVENT=TableLoaded\n"), "{env}");
    assert!(env.contains("DBMIRROR_TABLE=crm7.person\n"), "{env}");
    assert!(env.contains("DBMIRROR_TENANT=e2e1\n"), "{env}");
    assert!(env.contains("DBMIRROR_REASON=snapshot\n"), "{env}");
    // Only the event's variables and the few a script needs to find its tools (the shell
    // adds PWD, SHLVL and `_` itself).
    let allowed = ["PATH", "LANG", "HOME", "PWD", "SHLVL", "_"];
    let stray: Vec<_> = names.iter().filter(|n| !n.starts_with("DBMIRROR_") && !allowed.contains(n)).collect();
    assert!(stray.is_empty(), "the hook saw this process's environment: {stray:?}");
    let dbmirror_vars: Vec<_> = names.iter().filter(|n| n.starts_with("DBMIRROR_")).collect();
    assert!(dbmirror_vars.len() <= 7, "{dbmirror_vars:?}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `sync` as a service with a failing `OnFailure: Stop` hook: replication holds (nothing after
/// the hook's event is applied), `status` says why, and it resumes by itself once the owner
/// fixes what the hook needs.
#[test]
fn a_running_sync_holds_for_a_stop_hook_until_it_passes() {
    use dbmirror::sink::SinkOptions;
    use dbmirror::state::StateStore as _;
    for db in local_databases() {
        let w = world(false);
        let key = key(&db);
        w.provision(&db, &key, "hookhold");
        w.sync_until_idle(&db, &key);
        let hooks = hooks_from(serde_json::json!({
            "BatchCommitted": [{ "Sql": "INSERT INTO hook_log VALUES (1)", "OnFailure": "Stop" }]
        }));
        let options = SyncOptions { until_idle: false, owner: hooks, ..World::options() };
        let run = w.while_syncing(&db, &key, &options, |run| {
            w.changes(200);
            std::thread::sleep(std::time::Duration::from_secs(3));
            assert!(!run.is_finished(), "{:?}: a failing hook must not stop the service", db.kind);
            let facts = db.open(SinkOptions::default()).read_facts().unwrap();
            let last_error = dbmirror::pipeline::facts::last_error(&facts).map(|(_, m)| m).unwrap_or_default();
            assert!(last_error.contains("hook") && last_error.contains("hook_log"), "{:?}: {last_error}", db.kind);
            let truth = w.cloud.with(|s| s.ground_truth("e2e1")).unwrap();
            let checks = dbmirror::verify::verify(db.open(SinkOptions::default()).as_mut(), &truth).unwrap();
            assert!(checks.iter().any(|c| !c.equal), "{:?}: the changes wait behind the hook", db.kind);
            db.exec("CREATE TABLE hook_log (n integer)");
            std::thread::sleep(std::time::Duration::from_secs(8));
        });
        run.unwrap_or_else(|e| panic!("{:?}: {e}", db.kind));
        w.verify(&db, "after the hook passed");
        assert!(db.scalar("SELECT count(*) FROM hook_log", "SELECT count(*) FROM hook_log") >= 1);
    }
}
