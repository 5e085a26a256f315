//! The client's pipeline end to end against the in-process reference cloud, on every target
//! that runs here: a new customer (provision, snapshot, stream), restarts that resume from
//! the replica's offsets, and a stream full of injected faults (cut connections, truncated
//! bodies, redelivered records, 503s, expired tokens) — after each, `verify` proves the replica
//! equals the source.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use dbmirror::clock::now_ms;
use dbmirror::cloud::service::Faults;
use dbmirror::pipeline::{SyncOptions, stored_tokens, sync};
use dbmirror::sink::{ReplicaRead, SinkOptions};
use dbmirror::source::client::HttpClient;
use dbmirror::source::replication::{Replication, SessionInfo};
use dbmirror::state::SessionValue;

use crate::support::targets::fresh_databases;
use crate::support::world::{key, provisioned, ready, world, world_with};

#[test]
fn new_customer_restarts_and_a_faulty_stream_all_converge() {
    for db in fresh_databases() {
        let w = world(db.kind == dbmirror::sink::TargetKind::Postgres);
        let key = key(&db);
        let session = w.provision(&db, &key, "Reporting");

        // New customer: the snapshot, then streaming.
        let first = w.sync_until_idle(&db, &key);
        assert!(first.records >= 20 * 30 && first.schema_changes == 20, "{first:?}");
        w.verify(&db, "snapshot");
        w.changes(400);
        w.sync_until_idle(&db, &key);
        w.verify(&db, "streaming");

        // Replica restarted (or restored): the next run resumes from the stored offsets and
        // only replays what came after.
        let idle = w.sync_until_idle(&db, &key);
        assert_eq!(idle.records, 0, "nothing new, nothing applied");
        w.changes(200);
        let resumed = w.sync_until_idle(&db, &key);
        assert!(resumed.records > 0 && resumed.records < 400, "{resumed:?}");
        w.verify(&db, "resume");

        // A hostile network: every kind of injected fault, repeatedly; the client converges.
        for faults in [
            Faults { drop_mid_body_next: 2, ..Faults::default() },
            Faults { truncate_next: 2, ..Faults::default() },
            Faults { redeliver: 50, ..Faults::default() },
            Faults { fail_next: 2, rate_limit_next: 1, ..Faults::default() },
        ] {
            w.cloud.with(|s| s.set_faults(&session, faults.clone())).unwrap();
            w.changes(150);
            w.sync_until_idle(&db, &key);
            w.sync_until_idle(&db, &key);
            w.verify(&db, &format!("{faults:?}"));
        }

        // An access token about to expire: refreshed before use, and the rotated refresh token
        // is stored (sealed) before it is used.
        let before = db.open(SinkOptions::default()).read_facts().unwrap()["refresh_token"].clone();
        db.open(SinkOptions::default())
            .write_facts(&[("access_expires_at_ms", SessionValue::Text("0".into()))])
            .unwrap();
        w.changes(20);
        w.sync_until_idle(&db, &key);
        let after = db.open(SinkOptions::default()).read_facts().unwrap()["refresh_token"].clone();
        assert_ne!(before, after, "{:?}: the rotated refresh token was stored", db.kind);
        w.verify(&db, "token refresh");
    }
}

/// The initial snapshot spread over three partitions, read a few records at a time: no table
/// is `ready` before every table holds all its rows (its last record may arrive while other
/// partitions still carry snapshot rows), and after the run every table is.
#[test]
fn tables_are_ready_only_once_the_whole_snapshot_is_in() {
    for db in fresh_databases() {
        let (w, key) = provisioned(&db, "Reporting");
        let truth = w.cloud.with(|s| s.ground_truth("e2e1")).unwrap();
        let early = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (watched, seen) = (db.clone(), early.clone());
        let progress = dbmirror::pipeline::ProgressHook(Arc::new(move |_: &dbmirror::pipeline::SyncSummary, _| {
            let mut replica = watched.open(SinkOptions::default());
            for record in replica.tables() {
                let id = record.schema.id.clone();
                let want = truth.tables.iter().find(|t| t.table == id.to_string()).map_or(0, |t| t.rows);
                let have = replica.count_rows(&id).unwrap();
                let mut seen = seen.lock().unwrap();
                if record.state == dbmirror::state::TableState::Ready && have < want && seen.len() < 5 {
                    seen.push(format!("{id}: ready with {have} of {want} rows"));
                }
            }
        }));
        let fetch = dbmirror::pipeline::FetchLimits { max_events: 25, ..SyncOptions::default().fetch };
        let options = SyncOptions { progress: Some(progress), fetch, ..support_options() };
        w.sync_options(&db, &key, &options, Arc::new(AtomicBool::new(false))).unwrap();
        assert_eq!(*early.lock().unwrap(), Vec::<String>::new(), "{:?}", db.kind);
        let replica = db.open(SinkOptions::default());
        assert!(replica.tables().iter().all(|r| r.state == dbmirror::state::TableState::Ready), "{:?}", db.kind);
        w.verify(&db, "snapshot");
    }
}

fn support_options() -> SyncOptions {
    crate::support::world::World::options()
}

/// A running `sync` under a steady stream of changes, with the default minute between commit
/// cycles: `status` from another handle gives the lag the running client measures (a second
/// or two, as `/metrics` does), not the age of the newest change as of the last cycle.
#[test]
fn status_shows_the_lag_the_running_client_measures() {
    for db in fresh_databases() {
        let (w, key) = ready(&db, "Reporting");
        let options = SyncOptions { until_idle: false, commit_interval: Duration::from_secs(60), ..support_options() };
        let result = w.while_syncing(&db, &key, &options, |_| {
            for _ in 0..40 {
                w.changes(5);
                std::thread::sleep(Duration::from_millis(200));
            }
            let report = dbmirror::status::StatusReport::read(db.open(SinkOptions::default()).as_mut(), true).unwrap();
            let seconds =
                report.lag.seconds.unwrap_or_else(|| panic!("{:?}: no lag in seconds: {:?}", db.kind, report.lag));
            assert!(seconds <= 3, "{:?}: {seconds} s behind while the client keeps up: {:?}", db.kind, report.lag);
            assert!(report.lag.as_of_ms.is_some_and(|at| dbmirror::clock::now_ms() - at < 10_000), "{:?}", report.lag);
        });
        result.unwrap();
    }
}

/// A cloud that calls every token expired, even one it just issued: the client refreshes,
/// then waits longer and longer before refreshing again (it refreshed hundreds of times in
/// thirty seconds), says why in `status`, and goes on once tokens are accepted again.
#[test]
fn tokens_refused_as_expired_are_refreshed_with_backoff() {
    for db in fresh_databases() {
        let (w, key) = ready(&db, "Reporting");
        let session = db.open(SinkOptions::default()).read_facts().unwrap();
        let session_id = SessionInfo::from_facts(&session).unwrap().session_id;
        w.cloud.with(|s| s.set_faults(&session_id, Faults { expire_tokens: true, ..Faults::default() })).unwrap();
        let metrics = Arc::new(dbmirror::metrics::Metrics::new("e2e1"));
        let options = SyncOptions {
            until_idle: false,
            run_for: Some(Duration::from_secs(4)),
            metrics: metrics.clone(),
            ..support_options()
        };
        let _ = w.sync_options(&db, &key, &options, Arc::new(AtomicBool::new(false)));
        let refreshes: f64 = metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix("dbmirror_token_refreshes_total")?.split_whitespace().last()?.parse().ok())
            .unwrap();
        assert!((1.0..=8.0).contains(&refreshes), "{:?}: {refreshes} refreshes in 4 s", db.kind);
        let report = dbmirror::status::StatusReport::read(db.open(SinkOptions::default()).as_mut(), false).unwrap();
        assert!(report.last_error.is_some_and(|e| e.message.contains("fresh tokens")), "{:?}", db.kind);
        w.cloud.with(|s| s.set_faults(&session_id, Faults::default())).unwrap();
        w.changes(20);
        w.sync_until_idle(&db, &key);
        w.verify(&db, "tokens accepted again");
    }
}

/// Schema lifecycle while the client is behind: a new table, a nullable column added and an
/// incompatible re-create all arrive in one stream with changes before and after them.
#[test]
fn schema_changes_in_the_stream_converge() {
    use dbmirror::cloud::journal::TenantOp;
    for db in fresh_databases() {
        let (w, key) = ready(&db, "schema");
        w.changes(100);
        for op in [
            TenantOp::AddColumn { table: "crm7.person".into(), column: "nickname".into() },
            TenantOp::Change { count: 100 },
            TenantOp::NewTable { table: "crm7.service_extra".into(), rows: 15, extra_columns: 0 },
            TenantOp::IncompatibleChange { table: "crm7.contact".into() },
            TenantOp::Change { count: 100 },
            TenantOp::DropTable { table: "crm7.relations".into() },
        ] {
            w.cloud.with(|s| s.run("e2e1", &op, now_ms())).unwrap();
        }
        w.sync_until_idle(&db, &key);
        let truth = w.cloud.with(|s| s.ground_truth("e2e1")).unwrap();
        let checks = dbmirror::verify::verify(db.open(SinkOptions::default()).as_mut(), &truth).unwrap();
        let bad: Vec<_> = checks.iter().filter(|c| !c.equal).collect();
        assert!(bad.is_empty(), "{bad:?}");
        assert!(checks.iter().any(|c| c.table == "crm7.service_extra"));
        assert!(!checks.iter().any(|c| c.table == "crm7.relations"));
        // The re-created table's fresh snapshot has arrived: it is `ready`, not left pending.
        assert_all_ready(&db);
    }
}

/// The replica refuses writes (a broken table) during a one-shot run (`--until-idle`): the run
/// stops with the database's error, commits no progress past the failed batch, and converges
/// once the replica is fixed. (A service waits instead: see the next test. Transient errors —
/// locks, lost connections — are retried in place either way.)
#[test]
fn a_failing_replica_stops_without_losing_progress_and_converges_after_the_fix() {
    for db in fresh_databases() {
        let (w, key) = ready(&db, "retry");
        let offsets_before = db.open(SinkOptions::default()).offsets().unwrap();
        // Writes to crm7.person fail: a trigger raises (SQLite's `busy` is transient; this error is
        // not, so `sync` stops with the error and keeps its offsets).
        refuse_person_writes(&db);
        w.changes(300);
        let mut state = db.open(SinkOptions::default());
        let session = state.read_facts().unwrap();
        let info = SessionInfo::from_facts(&session).unwrap();
        let tokens = stored_tokens(&session, &key).unwrap();
        let replication = Replication::new(HttpClient::new(&w.url, None).unwrap(), info, tokens).unwrap();
        let options = SyncOptions {
            fetch: dbmirror::pipeline::FetchLimits::waiting(Duration::from_millis(300)),
            until_idle: true,
            ..SyncOptions::default()
        };
        let failed = sync(
            replication,
            db.open(SinkOptions::default()),
            state.as_mut(),
            &key,
            &options,
            Arc::new(AtomicBool::new(false)),
        );
        assert!(failed.unwrap_err().to_string().contains("replica refuses"));
        assert_eq!(
            db.open(SinkOptions::default()).offsets().unwrap(),
            offsets_before,
            "no progress past the failed batch"
        );
        accept_person_writes(&db);
        w.sync_until_idle(&db, &key);
        w.verify(&db, "after the fix");
    }
}

/// Source restored from a backup, and a tenant suspended then resumed: the cloud resets the
/// offsets to a fresh snapshot; the client reloads every table from it with no manual step,
/// and rows the restored source no longer has are gone from the replica too.
#[test]
fn offset_resets_after_a_restore_or_a_resume_converge() {
    for db in fresh_databases() {
        let (w, key) = ready(&db, "reset");
        w.changes(200);
        w.sync_until_idle(&db, &key);
        w.cloud.with(|s| s.reset_offsets("e2e1", now_ms(), true)).unwrap();
        w.changes(50);
        w.sync_until_idle(&db, &key);
        w.verify(&db, "after a source restore");
        w.cloud.with(|s| s.suspend("e2e1", true, now_ms())).unwrap();
        w.cloud.with(|s| s.suspend("e2e1", false, now_ms())).unwrap();
        w.changes(50);
        w.sync_until_idle(&db, &key);
        w.verify(&db, "after suspend and resume");
        // Restarting changes nothing: the handled reset is stored with the data.
        assert_eq!(w.sync_until_idle(&db, &key).records, 0);
    }
}

/// Offline longer than the retention: the purged offset is detected with its own error, and
/// `--auto-resync` reloads every table from a fresh snapshot and converges.
#[test]
fn offline_longer_than_retention_is_detected_and_auto_resync_converges() {
    for db in fresh_databases() {
        let w = world_with(false, Duration::from_millis(1500));
        let key = key(&db);
        w.provision(&db, &key, "away");
        w.sync_until_idle(&db, &key);
        w.changes(200);
        std::thread::sleep(Duration::from_millis(1600));
        w.cloud.with(|s| s.log.enforce_retention(now_ms())).unwrap();
        w.changes(20);
        let error = w.try_sync(&db, &key, false).unwrap_err();
        assert!(
            matches!(&error, dbmirror::pipeline::PipelineError::Source(e)
        if matches!(e.as_ref(), dbmirror::source::client::SourceError::Service { code, .. } if code == "offset_purged")),
            "{error}"
        );
        // `status` says so, and what to do, instead of "lag: none" from the last good cycle.
        let mut replica = db.open(SinkOptions::default());
        let cloud = w.replication(replica.as_mut(), &key).status().unwrap();
        let mut report = dbmirror::status::StatusReport::read(replica.as_mut(), false).unwrap();
        report.cloud = Some(dbmirror::status::CloudView::Reply(Box::new(cloud)));
        let text = report.text();
        assert!(text.contains("past the cloud's retention") && text.contains("--auto-resync"), "{text}");
        assert!(!text.contains("lag: none"), "{text}");
        let resynced = w.try_sync(&db, &key, true).unwrap();
        assert!(resynced.records > 0);
        w.verify(&db, "after auto-resync");
    }
}

/// An incompatible re-create read while the client is behind, then a restart before the old
/// incarnation's records (still in the other partitions) are read: after the restart those
/// records are recognised as older than the re-create (by LSN) and skipped, instead of
/// stopping the client or leaving rows the new table does not have.
#[test]
fn a_restart_between_a_recreate_and_its_stale_records_converges() {
    use dbmirror::cloud::journal::TenantOp;
    use dbmirror::pipeline::ProgressHook;
    use std::sync::atomic::Ordering;
    for db in fresh_databases() {
        let (w, key) = ready(&db, "stale");
        for op in [
            TenantOp::Change { count: 300 },
            TenantOp::IncompatibleChange { table: "crm7.contact".into() },
            TenantOp::Change { count: 50 },
        ] {
            w.cloud.with(|s| s.run("e2e1", &op, now_ms())).unwrap();
        }
        // One small fetch (the schema history comes first), then stop.
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let options = SyncOptions {
            fetch: dbmirror::pipeline::FetchLimits { max_events: 10, ..crate::support::world::World::options().fetch },
            progress: Some(ProgressHook(Arc::new(move |_, _| flag.store(true, Ordering::Relaxed)))),
            ..crate::support::world::World::options()
        };
        let first = w.sync_options(&db, &key, &options, stop).unwrap();
        assert!(first.schema_changes >= 2 && first.records <= 20, "{first:?}");
        w.sync_until_idle(&db, &key);
        w.verify(&db, "after a restart between a re-create and its stale records");
    }
}

/// A caught-up `sync` waits in long-polls of the default length (30 s) while it watches the
/// replica for resync requests; changes made during a wait arrive, and the run ends cleanly
/// when stopped. (On PostgreSQL the request check once ran the blocking driver inside the
/// fetch's runtime and panicked the service two seconds into its first idle long-poll.)
#[test]
fn a_caught_up_sync_waits_through_default_long_polls() {
    for db in fresh_databases() {
        let (w, key) = ready(&db, "idle");
        let options = SyncOptions { database_batch_size: 200, ..SyncOptions::default() };
        assert_eq!(options.fetch.max_wait, Duration::from_secs(30), "the default poll time");
        let summary = w.while_syncing(&db, &key, &options, |_| {
            std::thread::sleep(Duration::from_secs(5));
            w.changes(40);
            std::thread::sleep(Duration::from_secs(5));
        });
        let summary = summary.unwrap_or_else(|e| panic!("{:?}: {e}", db.kind));
        assert!(summary.records > 0, "{:?}: the changes made during the wait arrived", db.kind);
        w.verify(&db, "after idle long-polls");
    }
}

/// The tenant is suspended while `sync` runs: the client waits it out (honouring the cloud's
/// `Retry-After`, saying so in the log and in `status`'s last error) instead of exiting, and
/// after the resume reloads from the fresh snapshot the cloud resets to, by itself.
#[test]
fn a_running_sync_waits_out_a_suspension_and_converges_after_the_resume() {
    for db in fresh_databases() {
        let (w, key) = ready(&db, "suspended");
        w.cloud.with(|s| s.suspended_retry_after_s = 1);
        let options =
            SyncOptions { commit_interval: Duration::from_millis(200), ..crate::support::world::World::options() };
        let options = SyncOptions { until_idle: false, ..options };
        let summary = w.while_syncing(&db, &key, &options, |run| {
            w.changes(100);
            std::thread::sleep(Duration::from_millis(800));
            w.cloud.with(|s| s.suspend("e2e1", true, now_ms())).unwrap();
            std::thread::sleep(Duration::from_secs(3));
            let waiting = db.open(SinkOptions::default()).read_facts().unwrap();
            let last_error = dbmirror::pipeline::facts::last_error(&waiting).map(|(_, m)| m).unwrap_or_default();
            assert!(last_error.contains("tenant to be resumed"), "{:?}: status shows the wait: {last_error}", db.kind);
            assert!(!run.is_finished(), "{:?}: a suspension must not stop a running sync", db.kind);
            w.cloud.with(|s| s.suspend("e2e1", false, now_ms())).unwrap();
            w.changes(100);
            std::thread::sleep(Duration::from_secs(4));
        });
        summary.unwrap_or_else(|e| panic!("{:?}: {e}", db.kind));
        w.sync_until_idle(&db, &key);
        w.verify(&db, "after a suspension during sync");
    }
}

/// The replica refuses writes while `sync` runs as a service (a trigger the owner added): the
/// client keeps the refused batch, applies and acknowledges nothing after it, says why in the
/// log and in `status`'s last error, and resumes by itself once the owner fixes the table.
#[test]
fn a_running_sync_waits_for_the_owner_to_fix_a_refusing_table() {
    for db in fresh_databases() {
        let (w, key) = ready(&db, "refused");
        refuse_person_writes(&db);
        let options = SyncOptions { until_idle: false, ..crate::support::world::World::options() };
        let summary = w.while_syncing(&db, &key, &options, |run| {
            w.changes(300);
            std::thread::sleep(Duration::from_secs(4));
            assert!(!run.is_finished(), "{:?}: a refused write must not stop the service", db.kind);
            let facts = db.open(SinkOptions::default()).read_facts().unwrap();
            let last_error = dbmirror::pipeline::facts::last_error(&facts).map(|(_, m)| m).unwrap_or_default();
            assert!(last_error.contains("replica refuses"), "{:?}: status shows why: {last_error} {facts:?}", db.kind);
            let truth = w.cloud.with(|s| s.ground_truth("e2e1")).unwrap();
            let checks = dbmirror::verify::verify(db.open(SinkOptions::default()).as_mut(), &truth).unwrap();
            assert!(checks.iter().any(|c| c.table == "crm7.person" && !c.equal), "the refused rows are not there yet");
            accept_person_writes(&db);
            std::thread::sleep(Duration::from_secs(6));
        });
        summary.unwrap_or_else(|e| panic!("{:?}: {e}", db.kind));
        w.verify(&db, "after the owner fixed the table");
    }
}

/// A replica provisioned after the tenant's initial snapshot aged out of the retention gets
/// `410 offset_purged` on its very first fetch. It has nothing to lose, so it obtains a fresh
/// snapshot by itself (no flag, no human step) and ends equal to the source.
#[test]
fn a_replica_provisioned_after_the_snapshot_aged_out_bootstraps_by_itself() {
    for db in fresh_databases() {
        let w = world_with(false, Duration::from_millis(1500));
        w.changes(100);
        std::thread::sleep(Duration::from_millis(1600));
        w.cloud.with(|s| s.log.enforce_retention(now_ms())).unwrap();
        w.changes(20);
        let key = key(&db);
        w.provision(&db, &key, "late");
        let first = w.try_sync(&db, &key, false).unwrap_or_else(|e| panic!("{:?}: {e}", db.kind));
        assert!(first.records > 0, "{:?}: the fresh snapshot was applied", db.kind);
        assert_eq!(w.verify_count(&db, "a late replica, one run"), 20);
        assert_eq!(w.sync_until_idle(&db, &key).records, 0, "a second run has nothing left to do");
    }
}

/// Offline past the retention while a table was created at the source: `--auto-resync`
/// reloads the tables the replica had and fills the new one from its fresh snapshot too.
#[test]
fn auto_resync_after_a_long_outage_fills_tables_created_during_it() {
    use dbmirror::cloud::journal::TenantOp;
    for db in fresh_databases() {
        let w = world_with(false, Duration::from_millis(1500));
        let key = key(&db);
        w.provision(&db, &key, "away");
        w.sync_until_idle(&db, &key);
        w.changes(100);
        let op = TenantOp::NewTable { table: "crm7.gap_table".into(), rows: 15, extra_columns: 0 };
        w.cloud.with(|s| s.run("e2e1", &op, now_ms())).unwrap();
        std::thread::sleep(Duration::from_millis(1600));
        w.cloud.with(|s| s.log.enforce_retention(now_ms())).unwrap();
        w.changes(20);
        w.try_sync(&db, &key, true).unwrap_or_else(|e| panic!("{:?}: {e}", db.kind));
        assert_eq!(w.verify_count(&db, "after auto-resync with a table created during the outage"), 21);
        let rows = db.open(SinkOptions::default()).count_rows(&dbmirror::schema::TableId::new("crm7", "gap_table"));
        assert_eq!(rows.unwrap(), 15, "{:?}: the new table is filled", db.kind);
    }
}

/// A replica provisioned after a source restore must not keep rows the restore took away:
/// the log before the restore still holds their inserts. Its session starts at the latest
/// full snapshot, so it reads from there and ends equal to the source.
#[test]
fn a_replica_provisioned_after_a_restore_ends_equal_to_the_source() {
    for db in fresh_databases() {
        let w = world(false);
        w.changes(300);
        w.cloud.with(|s| s.reset_offsets("e2e1", now_ms(), true)).unwrap();
        w.changes(50);
        let key = key(&db);
        w.provision(&db, &key, "after-restore");
        w.sync_until_idle(&db, &key);
        assert_eq!(w.verify_count(&db, "a replica provisioned after a restore"), 20);
        assert_eq!(w.sync_until_idle(&db, &key).records, 0, "{:?}: nothing repeats", db.kind);
    }
}

/// An incompatible `ALTER` in place (a column's type changed): the connector publishes only the
/// schema change, no rows. The client re-creates the table, asks the cloud for a fresh
/// snapshot of just that table, loads it, and the table ends `ready` and equal to the source.
#[test]
fn an_incompatible_alter_gets_its_own_fresh_snapshot() {
    use dbmirror::cloud::journal::TenantOp;
    for db in fresh_databases() {
        let (w, key) = ready(&db, "alter");
        w.changes(50);
        let op = TenantOp::IncompatibleAlter { table: "crm7.contact".into() };
        w.cloud.with(|s| s.run("e2e1", &op, now_ms())).unwrap();
        w.changes(50);
        w.sync_until_idle(&db, &key);
        w.verify(&db, "after an incompatible ALTER");
        assert_all_ready(&db);
    }
}

/// The owner adds a trigger that makes `crm7.person` refuse every write.
fn refuse_person_writes(db: &crate::support::targets::TestDb) {
    db.exec_per_target(
        "CREATE TRIGGER refuse BEFORE INSERT ON crm7_person BEGIN SELECT RAISE(ABORT, 'replica refuses'); END;",
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'replica refuses'; END $$; \
         CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON crm7.person FOR EACH ROW EXECUTE FUNCTION refuse();",
        "CREATE TRIGGER refuse ON [crm7].[person] AFTER INSERT, UPDATE AS THROW 50000, 'replica refuses', 1;",
    );
}

/// The owner removes that trigger again.
fn accept_person_writes(db: &crate::support::targets::TestDb) {
    db.exec_per_target("DROP TRIGGER refuse;", "DROP TRIGGER refuse ON crm7.person;", "DROP TRIGGER [crm7].[refuse];");
}

/// Every replicated table is `ready` (no snapshot still awaited).
fn assert_all_ready(db: &crate::support::targets::TestDb) {
    let pending: Vec<String> = db
        .open(SinkOptions::default())
        .tables()
        .iter()
        .filter(|t| t.state != dbmirror::state::TableState::Ready)
        .map(|t| format!("{} {}", t.schema.id, t.state))
        .collect();
    assert!(pending.is_empty(), "{:?}: {pending:?}", db.kind);
}

/// `resync-tables` after an outage longer than the retention (the documented remedy): the
/// request makes the client reload (every table: the changes of all of them are gone), it
/// converges, and no shadow table is left behind.
#[test]
fn resync_tables_after_an_outage_past_retention_reloads_and_leaves_no_shadow() {
    for db in fresh_databases() {
        let w = world_with(false, Duration::from_millis(1500));
        let key = key(&db);
        w.provision(&db, &key, "remedy");
        w.sync_until_idle(&db, &key);
        w.changes(100);
        std::thread::sleep(Duration::from_millis(1600));
        w.cloud.with(|s| s.log.enforce_retention(now_ms())).unwrap();
        w.changes(20);
        let person = dbmirror::schema::TableId::new("crm7", "person");
        let request = dbmirror::sink::shadow::request_fact(&person);
        db.open(SinkOptions::default()).write_facts(&[(&request, SessionValue::Text(now_ms().to_string()))]).unwrap();
        w.try_sync(&db, &key, false).unwrap_or_else(|e| panic!("{:?}: {e}", db.kind));
        assert_eq!(w.verify_count(&db, "after resync-tables past retention"), 20);
        let shadows: Vec<String> = dbmirror::sink::shadow::shadows(&db.open(SinkOptions::default()))
            .iter()
            .map(|t| t.schema.id.to_string())
            .collect();
        assert!(shadows.is_empty(), "{:?}: {shadows:?}", db.kind);
        assert_all_ready(&db);
    }
}

/// Issue 10 #7, as a customer meets it: while `sync` runs as a service, the source gets a table
/// wider than the replica can hold (SQLite: 2,000 columns; PostgreSQL: 1,600). That table is set
/// aside as failed, with the reason in `_ReplicationState`, the service keeps running and every
/// other table stays current; when the table changes at the source (here: dropped and created
/// again narrower) it is replicated again, and `verify` ends equal.
#[test]
fn a_table_too_wide_for_the_replica_is_set_aside_while_the_rest_goes_on() {
    use dbmirror::cloud::journal::TenantOp;
    use dbmirror::state::{FAILED_REASON, TableState, prefixed_facts};
    for db in fresh_databases() {
        let (w, key) = ready(&db, "wide");
        let options = SyncOptions { until_idle: false, ..crate::support::world::World::options() };
        let summary = w.while_syncing(&db, &key, &options, |run| {
            let wide = TenantOp::NewTable { table: "crm7.wide".into(), rows: 10, extra_columns: 2100 };
            w.cloud.with(|s| s.run("e2e1", &wide, now_ms())).unwrap();
            w.changes(200);
            std::thread::sleep(Duration::from_secs(4));
            assert!(!run.is_finished(), "{:?}: one impossible table must not stop the service", db.kind);
            let mut replica = db.open(SinkOptions::default());
            let failed: Vec<_> = replica
                .tables()
                .into_iter()
                .filter(|t| t.state == TableState::Failed)
                .map(|t| t.schema.id.clone())
                .collect();
            assert_eq!(failed, vec![dbmirror::schema::TableId::new("crm7", "wide")], "{:?}", db.kind);
            let facts = replica.read_facts().unwrap();
            let reasons: Vec<_> = prefixed_facts(&facts, FAILED_REASON).collect();
            assert!(reasons.iter().any(|(t, r)| *t == "crm7.wide" && r.contains("column")), "{reasons:?}");
            let truth = w.cloud.with(|s| s.ground_truth("e2e1")).unwrap();
            let checks = dbmirror::verify::verify(replica.as_mut(), &truth).unwrap();
            let bad: Vec<_> = checks.iter().filter(|c| !c.equal).map(|c| (c.table.as_str(), c.verdict)).collect();
            assert_eq!(
                bad,
                vec![("crm7.wide", dbmirror::verify::Verdict::Failed)],
                "{:?}: every other table is current",
                db.kind
            );
            w.cloud.with(|s| s.run("e2e1", &TenantOp::DropTable { table: "crm7.wide".into() }, now_ms())).unwrap();
            let narrow = TenantOp::NewTable { table: "crm7.wide".into(), rows: 10, extra_columns: 3 };
            w.cloud.with(|s| s.run("e2e1", &narrow, now_ms())).unwrap();
            w.changes(100);
            std::thread::sleep(Duration::from_secs(4));
        });
        summary.unwrap_or_else(|e| panic!("{:?}: {e}", db.kind));
        assert_eq!(w.verify_count(&db, "after the wide table was reshaped at the source"), 21);
        assert_all_ready(&db);
    }
}

/// The cloud goes down while `sync` runs as a service (connections refused and cut): the client
/// waits it out with backoff, says so in `status`'s last error, and catches up after it.
#[test]
fn a_running_sync_rides_out_a_cloud_outage() {
    use std::sync::atomic::Ordering;
    for db in fresh_databases() {
        let (w, key) = ready(&db, "cloud-down");
        let options = SyncOptions { until_idle: false, ..crate::support::world::World::options() };
        let summary = w.while_syncing(&db, &key, &options, |run| {
            w.changes(100);
            std::thread::sleep(Duration::from_millis(800));
            w.cloud.down.store(true, Ordering::Relaxed);
            w.changes(100);
            std::thread::sleep(Duration::from_secs(4));
            assert!(!run.is_finished(), "{:?}: a cloud outage must not stop the service", db.kind);
            let facts = db.open(SinkOptions::default()).read_facts().unwrap();
            let last_error = dbmirror::pipeline::facts::last_error(&facts).map(|(_, m)| m).unwrap_or_default();
            assert!(last_error.contains("retrying"), "{:?}: status shows the wait: {last_error}", db.kind);
            w.cloud.down.store(false, Ordering::Relaxed);
            std::thread::sleep(Duration::from_secs(6));
        });
        summary.unwrap_or_else(|e| panic!("{:?}: {e}", db.kind));
        w.verify(&db, "after a cloud outage during sync");
    }
}

/// The replica becomes unavailable while `sync` runs as a service (PostgreSQL refuses and cuts
/// connections; SQLite is locked by another writer), with tokens rotated on every cycle so a
/// rotation falls into the outage: the client keeps the batch and the new tokens, waits, stores
/// the tokens before using them, and converges once the replica is back.
#[test]
fn a_running_sync_rides_out_a_replica_outage_during_token_rotation() {
    for db in fresh_databases() {
        let (w, key) = ready(&db, "replica-down");
        // Shorter than the client's refresh margin: every cycle rotates the tokens.
        w.cloud.with(|s| s.token_ttl = Duration::from_secs(60));
        let expired = [("access_expires_at_ms", SessionValue::Text("0".into()))];
        db.open(SinkOptions::default()).write_facts(&expired).unwrap();
        let options = SyncOptions { until_idle: false, ..crate::support::world::World::options() };
        let summary = w.while_syncing(&db, &key, &options, |run| {
            w.changes(100);
            std::thread::sleep(Duration::from_millis(800));
            w.changes(100);
            let before = db.open(SinkOptions::default()).read_facts().unwrap()["refresh_token"].clone();
            db.outage(Duration::from_secs(4));
            assert!(!run.is_finished(), "{:?}: a replica outage must not stop the service", db.kind);
            // The token store's retry backs off (0.5 s, 1 s, 2 s, 4 s, …) while the replica is
            // away, so its next attempt may come a few seconds after the outage ends.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let stored = || db.open(SinkOptions::default()).read_facts().unwrap()["refresh_token"].clone();
            while stored() == before && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(250));
            }
            assert_ne!(stored(), before, "{:?}: tokens were rotated and stored meanwhile", db.kind);
            w.changes(100);
            std::thread::sleep(Duration::from_secs(6));
        });
        summary.unwrap_or_else(|e| panic!("{:?}: {e}", db.kind));
        w.verify(&db, "after a replica outage during sync");
        // The stored tokens are the live ones: a restarted client goes on with them.
        w.sync_until_idle(&db, &key);
    }
}

/// GETs `path` from the metrics listener: the status code and the body.
fn scrape(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// One sample's value from a parsed scrape (the first series of `name` with `label`, if given).
fn sample(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .find(|s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .and_then(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
}

/// Issue 14 #3: a running `sync` serves `/metrics` (parsed here with a Prometheus text-format
/// parser) and `/healthz`, which turns 503 with the reason while the cloud is down past the
/// window and 200 again once it is back.
#[test]
fn a_running_sync_serves_metrics_and_health() {
    use std::sync::atomic::Ordering;
    for db in fresh_databases() {
        let (w, key) = ready(&db, "metrics");
        let metrics = Arc::new(dbmirror::metrics::Metrics::new("e2e1"));
        let pages =
            dbmirror::metrics::serve::Pages { metrics: metrics.clone(), window: Duration::from_secs(2), owner: None };
        let address = dbmirror::metrics::serve::start("127.0.0.1:0", pages).unwrap();
        let options = SyncOptions { until_idle: false, metrics, ..crate::support::world::World::options() };
        let summary = w.while_syncing(&db, &key, &options, |_| {
            w.changes(200);
            std::thread::sleep(Duration::from_secs(3));
            let (status, body) = scrape(address, "/metrics");
            assert_eq!(status, 200);
            let lines = body.lines().map(|l| Ok(l.to_owned()));
            let parsed = prometheus_parse::Scrape::parse(lines).unwrap_or_else(|e| panic!("{e}: {body}"));
            assert!(sample(&parsed, "dbmirror_records_applied_total", None).unwrap() > 0.0, "{body}");
            let person = sample(&parsed, "dbmirror_rows_written_total", Some(("table", "crm7.person")));
            assert!(person.unwrap() > 0.0, "{body}");
            assert_eq!(sample(&parsed, "dbmirror_lag_records", None), Some(0.0), "caught up: {body}");
            assert_eq!(sample(&parsed, "dbmirror_lag_seconds", None), Some(0.0), "caught up: {body}");
            assert!(sample(&parsed, "process_resident_memory_bytes", None).unwrap() > 0.0);
            assert!(parsed.samples.iter().any(|s| s.metric == "dbmirror_batch_apply_seconds"), "{body}");
            assert!(parsed.samples.iter().all(|s| s.labels.get("tenant") == Some("e2e1")), "{body}");
            assert_eq!(scrape(address, "/healthz").0, 200);
            w.cloud.down.store(true, Ordering::Relaxed);
            std::thread::sleep(Duration::from_secs(4));
            let (status, reason) = scrape(address, "/healthz");
            assert_eq!(status, 503, "{reason}");
            assert!(reason.contains("waiting for"), "{reason}");
            let errors =
                prometheus_parse::Scrape::parse(scrape(address, "/metrics").1.lines().map(|l| Ok(l.to_owned())));
            assert!(sample(&errors.unwrap(), "dbmirror_retries_total", Some(("waiting_for", "cloud"))).unwrap() > 0.0);
            w.cloud.down.store(false, Ordering::Relaxed);
            std::thread::sleep(Duration::from_secs(4));
            assert_eq!(scrape(address, "/healthz").0, 200, "healthy again once the cloud is back");
        });
        summary.unwrap_or_else(|e| panic!("{:?}: {e}", db.kind));
        w.verify(&db, "after serving metrics");
    }
}

/// Issue 14 #2: `verify` on a tenant that keeps changing while `sync` runs: each table is
/// compared at a point where the replica had applied the table's last change, so a correct
/// replica passes (no DIFFERENT for being behind), and a real difference is still found.
#[test]
fn verify_passes_on_a_changing_tenant_and_still_finds_a_real_difference() {
    use dbmirror::verify::{Verdict, verify_live};
    use std::sync::atomic::Ordering;
    for db in fresh_databases() {
        let (w, key) = ready(&db, "live-verify");
        let options = SyncOptions { until_idle: false, ..crate::support::world::World::options() };
        let summary = w.while_syncing(&db, &key, &options, |_| {
            w.cloud.changes_per_sec.store(40, Ordering::Relaxed);
            std::thread::sleep(Duration::from_secs(2));
            let truth = || w.cloud.with(|s| s.ground_truth("e2e1")).map_err(|e| e.message.to_string());
            let mut replica = db.open(SinkOptions::default());
            let checks =
                verify_live(replica.as_mut(), truth, &SinkOptions::default(), Duration::from_secs(30)).unwrap();
            let bad: Vec<_> = checks.iter().filter(|c| !c.equal).collect();
            assert!(bad.is_empty(), "{:?}: a correct replica of a changing tenant: {bad:?}", db.kind);
            // A row the source never had: a real difference, reported as such while changes stream.
            let columns = "(person_id, contact_id, firstname, lastname, registered, retired)";
            db.exec_per_target(
                &format!("INSERT INTO crm7_person {columns} VALUES (987654321, 1, 'x', 'y', '2020-01-01 00:00:00', 0)"),
                &format!("INSERT INTO crm7.person {columns} VALUES (987654321, 1, 'x', 'y', '2020-01-01', false)"),
                &format!("INSERT INTO [crm7].[person] {columns} VALUES (987654321, 1, 'x', 'y', '2020-01-01', 0)"),
            );
            let checks =
                verify_live(replica.as_mut(), truth, &SinkOptions::default(), Duration::from_secs(30)).unwrap();
            let person = checks.iter().find(|c| c.table == "crm7.person").unwrap();
            assert_eq!(person.verdict, Verdict::Different, "{:?}: {checks:?}", db.kind);
            assert!(checks.iter().filter(|c| c.table != "crm7.person").all(|c| c.equal), "{:?}: {checks:?}", db.kind);
            w.cloud.changes_per_sec.store(0, Ordering::Relaxed);
        });
        summary.unwrap_or_else(|e| panic!("{:?}: {e}", db.kind));
    }
}

/// Issue 14 #5: an operator asks for a fresh snapshot of a table (the Operation Center's
/// "Resync table"): the running client hears of it with its next fetch, reloads the table
/// through a shadow like `resync-tables`, and the request is done in the cloud.
#[test]
fn an_operator_resync_reaches_the_running_client() {
    for db in fresh_databases() {
        let (w, key) = ready(&db, "operator");
        let options = SyncOptions { until_idle: false, ..crate::support::world::World::options() };
        let summary = w.while_syncing(&db, &key, &options, |_| {
            w.changes(50);
            w.cloud.with(|s| s.request_resync("e2e1", &["crm7.person".to_owned()], None)).unwrap();
            let asked = |w: &crate::support::world::World| {
                w.cloud.with(|s| s.overview().sessions.iter().any(|s| !s.resync_requested.is_empty()))
            };
            assert!(asked(&w), "the request is pending until the client takes it up");
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while asked(&w) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
            }
            assert!(!asked(&w), "{:?}: the client asked for the snapshot itself", db.kind);
            w.changes(50);
            std::thread::sleep(Duration::from_secs(3));
        });
        let summary = summary.unwrap_or_else(|e| panic!("{:?}: {e}", db.kind));
        assert!(summary.rows_total["crm7.person"] >= 30, "{:?}: the snapshot was loaded: {summary:?}", db.kind);
        w.verify(&db, "after an operator resync");
        assert_all_ready(&db);
    }
}
