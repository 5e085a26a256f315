//! The pipeline against the in-process cloud and an in-memory replica: every lifecycle the
//! database tests cover, without a database, so the pipeline's own logic (cursor, resets,
//! retries, resyncs) is checked in milliseconds and the replica's state is read directly.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use dbmirror::clock::now_ms;
use dbmirror::cloud::journal::TenantOp;
use dbmirror::cloud::service::Faults;
use dbmirror::pipeline::{FetchLimits, SyncOptions, SyncSummary, stored_tokens, sync};
use dbmirror::secrets::SecretKey;
use dbmirror::sink::SinkOptions;
use dbmirror::sink::memory::MemoryReplica;
use dbmirror::source::client::HttpClient;
use dbmirror::source::replication::{Replication, SessionInfo};
use dbmirror::state::StateStore;

use crate::support::world::{World, store_session, world};

fn key() -> SecretKey {
    let path = std::env::temp_dir().join(format!("dbmirror-memory-{}-{}.key", std::process::id(), now_ms()));
    let _ = std::fs::remove_file(&path);
    SecretKey::load_or_create(&path).unwrap()
}

/// Provisions a session into `replica`, as `provision` does.
fn provision(w: &World, replica: &mut MemoryReplica, key: &SecretKey) -> String {
    store_session(replica, key, w.grant("memory"))
}

fn run(w: &World, replica: &MemoryReplica, key: &SecretKey, options: &SyncOptions) -> SyncSummary {
    run_until(w, replica, key, options, Arc::new(AtomicBool::new(false))).unwrap()
}

/// A `sync` run on the replica's stored session until `stop` is set (or idle, per `options`).
fn run_until(
    w: &World,
    replica: &MemoryReplica,
    key: &SecretKey,
    options: &SyncOptions,
    stop: Arc<AtomicBool>,
) -> Result<SyncSummary, dbmirror::pipeline::PipelineError> {
    let mut state = replica.clone();
    let facts = state.read_facts().unwrap();
    let info = SessionInfo::from_facts(&facts).unwrap();
    let replication =
        Replication::new(HttpClient::new(&w.url, None).unwrap(), info, stored_tokens(&facts, key).unwrap()).unwrap();
    sync(replication, Box::new(replica.clone()), &mut state, key, options, stop)
}

/// A world and a replica shaped by `options`, provisioned and synced until idle.
fn synced(options: SinkOptions) -> (World, SecretKey, MemoryReplica) {
    let w = world(false);
    let key = key();
    let mut replica = MemoryReplica::new(options);
    provision(&w, &mut replica, &key);
    until_idle(&w, &replica, &key);
    (w, key, replica)
}

fn until_idle(w: &World, replica: &MemoryReplica, key: &SecretKey) -> SyncSummary {
    run(w, replica, key, &World::options())
}

fn verify(w: &World, replica: &MemoryReplica, phase: &str) {
    assert_eq!(w.verify_replica(&mut replica.clone(), phase), 20, "{phase}");
}

#[test]
fn snapshot_streaming_faults_and_resets_converge_in_memory() {
    let w = world(false);
    let key = key();
    let mut replica = MemoryReplica::new(SinkOptions::default());
    let session = provision(&w, &mut replica, &key);
    let first = until_idle(&w, &replica, &key);
    assert_eq!(first.schema_changes, 20);
    verify(&w, &replica, "snapshot");
    for faults in [
        Faults { drop_mid_body_next: 2, ..Faults::default() },
        Faults { truncate_next: 2, redeliver: 30, ..Faults::default() },
        Faults { fail_next: 1, rate_limit_next: 1, ..Faults::default() },
    ] {
        w.cloud.with(|s| s.set_faults(&session, faults.clone())).unwrap();
        w.changes(150);
        until_idle(&w, &replica, &key);
        verify(&w, &replica, &format!("{faults:?}"));
    }
    // A source restore resets the offsets: every table reloads through its shadow.
    w.cloud.with(|s| s.reset_offsets("e2e1", now_ms(), true)).unwrap();
    w.changes(50);
    until_idle(&w, &replica, &key);
    verify(&w, &replica, "after a restore");
    let epoch = replica.clone().checkpoint().unwrap().reset_epoch;
    assert_eq!(epoch, 1, "the handled reset is stored with the data");
    assert_eq!(until_idle(&w, &replica, &key).records, 0, "a restart repeats nothing");
    assert!(dbmirror::sink::shadow::shadows(&replica).is_empty());
}

#[test]
fn transient_replica_failures_are_retried_in_place_without_losing_a_batch() {
    let (w, key, replica) = synced(SinkOptions::default());
    let before = replica.clone().offsets().unwrap();
    replica.fail_next_applies(3);
    w.changes(200);
    let summary = until_idle(&w, &replica, &key);
    assert!(summary.records > 0);
    assert!(replica.clone().offsets().unwrap() != before);
    verify(&w, &replica, "after three failed writes");
}

/// A replica provisioned after a table was dropped reads that table's old records from the
/// start of the log and skips them; with small fetches, some fetches hold nothing else. Those
/// are progress, not an idle stream: `sync --until-idle` must not stop there.
#[test]
fn a_fetch_of_only_skipped_records_is_progress_not_idle() {
    let w = world(false);
    let key = key();
    w.changes(200);
    w.cloud.with(|s| s.run("e2e1", &TenantOp::DropTable { table: "crm7.address".into() }, now_ms())).unwrap();
    let mut replica = MemoryReplica::new(SinkOptions::default());
    provision(&w, &mut replica, &key);
    let options = SyncOptions { fetch: FetchLimits { max_events: 3, ..World::options().fetch }, ..World::options() };
    run(&w, &replica, &key, &options);
    assert_eq!(w.verify_replica(&mut replica.clone(), "one run until idle, after a drop"), 19);
}

/// The replica is unreachable when rotated tokens must be stored: the cloud has already
/// rotated, so the new refresh token exists only in memory. The client keeps retrying the store
/// before it uses the new token, goes on once it is stored, and the stored pair stays the live
/// one (a later rotation is not refused as a reused token).
#[test]
fn rotated_tokens_are_stored_once_the_replica_is_back_before_they_are_used() {
    use dbmirror::state::SessionValue;
    let (w, key, replica) = synced(SinkOptions::default());
    let before = replica.clone().read_facts().unwrap()["refresh_token"].clone();
    for round in 0..2 {
        replica.clone().write_facts(&[("access_expires_at_ms", SessionValue::Text("0".into()))]).unwrap();
        replica.fail_next_fact_writes(3);
        w.changes(50);
        until_idle(&w, &replica, &key);
        verify(&w, &replica, &format!("round {round}"));
    }
    assert_ne!(replica.clone().read_facts().unwrap()["refresh_token"], before, "the rotated tokens were stored");
}

/// A replica that holds at most 100 columns per table, synced, then a 150-column table and
/// changes of the others arrive and are synced (a one-shot run: a refused write would stop it,
/// a table set aside must not).
fn a_table_too_wide_arrives() -> (World, SecretKey, MemoryReplica) {
    let (w, key, replica) = synced(SinkOptions::default());
    replica.refuse_tables_wider_than(100);
    let wide = TenantOp::NewTable { table: "crm7.wide".into(), rows: 30, extra_columns: 150 };
    w.cloud.with(|s| s.run("e2e1", &wide, now_ms())).unwrap();
    w.changes(200);
    until_idle(&w, &replica, &key);
    (w, key, replica)
}

/// Issue 10 #7: one table the replica cannot hold (too wide) must not stop every table. It is
/// marked failed with the reason, its records are consumed unapplied, the other tables stay
/// current, and once the owner fixes the cause `resync-tables` brings it back equal.
#[test]
fn a_table_the_replica_cannot_hold_is_set_aside_and_the_rest_goes_on() {
    use dbmirror::schema::TableId;
    use dbmirror::state::{FAILED_REASON, SessionValue, TableState, prefixed_facts};
    let (w, key, replica) = a_table_too_wide_arrives();
    let id = TableId::new("crm7", "wide");
    let record = replica.tables().into_iter().find(|r| r.schema.id == id).expect("the failed table is recorded");
    assert_eq!(record.state, TableState::Failed);
    let facts = replica.clone().read_facts().unwrap();
    let reason: Vec<_> = prefixed_facts(&facts, FAILED_REASON).collect();
    assert!(reason.iter().any(|(t, r)| *t == "crm7.wide" && r.contains("too many columns")), "{reason:?}");
    let truth = w.cloud.with(|s| s.ground_truth("e2e1")).unwrap();
    let checks = dbmirror::verify::verify(&mut replica.clone(), &truth).unwrap();
    let bad: Vec<_> = checks.iter().filter(|c| !c.equal).map(|c| (c.table.as_str(), c.verdict)).collect();
    assert_eq!(bad, vec![("crm7.wide", dbmirror::verify::Verdict::Failed)], "every other table is current");
    // Nothing is held back: a second run has nothing to do.
    assert_eq!(until_idle(&w, &replica, &key).records, 0);
    // The owner fixes the cause; resync-tables brings the table back.
    replica.refuse_tables_wider_than(usize::MAX);
    let request = dbmirror::sink::shadow::request_fact(&id);
    replica.clone().write_facts(&[(&request, SessionValue::Text(now_ms().to_string()))]).unwrap();
    w.changes(50);
    until_idle(&w, &replica, &key);
    assert_eq!(w.verify_replica(&mut replica.clone(), "after the fix and resync-tables"), 21);
    let facts = replica.clone().read_facts().unwrap();
    assert_eq!(prefixed_facts(&facts, FAILED_REASON).count(), 0, "the reason is cleared");
    assert!(replica.tables().iter().all(|t| t.state == TableState::Ready), "{:?}", replica.tables());
}

/// A failed table is tried again when its schema changes at the source: re-created (the cause
/// is gone meanwhile) and filled from a fresh snapshot the client asks for.
#[test]
fn a_failed_table_is_tried_again_when_its_schema_changes() {
    let (w, key, replica) = a_table_too_wide_arrives();
    replica.refuse_tables_wider_than(usize::MAX);
    let alter = TenantOp::AddColumn { table: "crm7.wide".into(), column: "later".into() };
    w.cloud.with(|s| s.run("e2e1", &alter, now_ms())).unwrap();
    w.changes(50);
    until_idle(&w, &replica, &key);
    assert_eq!(w.verify_replica(&mut replica.clone(), "after the table's schema changed at the source"), 21);
}

/// Issue 14 #2: tables left out on purpose (`SkipTables`) are reported as skipped, not
/// DIFFERENT, so `verify` can pass on such an instance.
#[test]
fn verify_leaves_skipped_tables_out() {
    use dbmirror::verify::{Verdict, verify_live};
    let options = SinkOptions { skip_tables: vec!["crm7.person".into()], ..SinkOptions::default() };
    let (w, _key, replica) = synced(options.clone());
    let truth = || w.cloud.with(|s| s.ground_truth("e2e1")).map_err(|e| e.message.to_string());
    let checks = verify_live(&mut replica.clone(), truth, &options, std::time::Duration::ZERO).unwrap();
    assert!(checks.iter().all(|c| c.equal), "{checks:?}");
    let person = checks.iter().find(|c| c.table == "crm7.person").unwrap();
    assert_eq!(person.verdict, Verdict::Skipped);
}

/// Issue 13: `sync --until-idle` means "caught up with what the cloud had when the run began":
/// with the default 30 s long-poll it returns as soon as it is caught up, and under a steady
/// change rate it still ends (it used to wait a full poll, and never end under load).
#[test]
fn until_idle_returns_promptly_and_ends_under_a_steady_change_rate() {
    use std::sync::atomic::Ordering;
    let w = world(false);
    let key = key();
    let mut replica = MemoryReplica::new(SinkOptions::default());
    provision(&w, &mut replica, &key);
    let options = SyncOptions { fetch: FetchLimits::waiting(std::time::Duration::from_secs(30)), ..World::options() };
    let started = std::time::Instant::now();
    run(&w, &replica, &key, &options);
    assert!(started.elapsed() < std::time::Duration::from_secs(15), "caught up: no full long-poll wait");
    verify(&w, &replica, "caught up");
    w.cloud.changes_per_sec.store(500, Ordering::Relaxed);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let summary = run(&w, &replica, &key, &options);
            let _ = done_tx.send(summary.records);
        });
        let records = done_rx.recv_timeout(std::time::Duration::from_secs(60));
        w.cloud.changes_per_sec.store(0, Ordering::Relaxed);
        assert!(records.is_ok(), "a one-shot run ends under a steady change rate");
    });
}

/// A suspension while a long-poll waits (30 s here) is told to the client at once, so the wait
/// shows in `status` right away instead of at the end of the poll.
#[test]
fn a_suspension_ends_a_waiting_long_poll_at_once() {
    let (w, key, replica) = synced(SinkOptions::default());
    w.cloud.with(|s| s.suspended_retry_after_s = 1);
    let options = SyncOptions {
        until_idle: false,
        fetch: FetchLimits::waiting(std::time::Duration::from_secs(30)),
        ..World::options()
    };
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        let run = s.spawn(|| run_until(&w, &replica, &key, &options, stop.clone()));
        std::thread::sleep(std::time::Duration::from_secs(1));
        w.cloud.with(|s| s.suspend("e2e1", true, now_ms())).unwrap();
        std::thread::sleep(std::time::Duration::from_secs(3));
        let facts = replica.clone().read_facts().unwrap();
        let last_error = dbmirror::pipeline::facts::last_error(&facts).map(|(_, m)| m).unwrap_or_default();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        w.cloud.with(|s| s.suspend("e2e1", false, now_ms())).unwrap();
        assert!(last_error.contains("tenant to be resumed"), "seen within seconds: {last_error:?}");
        run.join().unwrap().unwrap();
    });
}
