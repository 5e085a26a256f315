//! The client's pipeline end to end against the in-process reference cloud, on every target
//! that runs here: a new customer (provision, snapshot, stream), restarts that resume from
//! the replica's offsets, and a stream full of injected faults (cut connections, truncated
//! bodies, redelivered records, 503s, expired tokens) — after each, `verify` proves the replica
//! equals the source.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use dbmirror::cloud::crm::source_tables;
use dbmirror::cloud::http::{Cloud, now_ms, spawn};
use dbmirror::cloud::log::EventLog;
use dbmirror::cloud::service::{Faults, State};
use dbmirror::cloud::tenant::{Tenant, TenantConfig};
use dbmirror::pipeline::{SyncOptions, SyncSummary, stored_tokens, sync, token_store};
use dbmirror::secrets::SecretKey;
use dbmirror::sink::SinkOptions;
use dbmirror::source::client::HttpClient;
use dbmirror::source::replication::{Replication, SessionInfo, TokenPair};
use dbmirror::state::SessionValue;
use hyper::Method;
use serde_json::json;

use crate::support::targets::{TestDb, fresh_databases};

struct World {
    url: String,
    cloud: Arc<Cloud>,
    runtime: tokio::runtime::Runtime,
}

fn world(with_schema: bool) -> World {
    world_with(with_schema, Duration::from_secs(3600))
}

fn world_with(with_schema: bool, retention: Duration) -> World {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (url, cloud) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut state = State::new(EventLog::in_memory(retention), url.clone());
        let config = TenantConfig { context: "e2e1".into(), seed: 11, rows_per_table: 30, partitions: 3, with_schema };
        state.add_tenant(Tenant::new(config, source_tables()), now_ms()).unwrap();
        let cloud = Cloud::new(state, "adm".into());
        spawn(listener, cloud.clone(), 0);
        (url, cloud)
    });
    World { url, cloud, runtime }
}

impl World {
    /// Provisions a session and stores it in the replica; returns the session id.
    fn provision(&self, db: &TestDb, key: &SecretKey, name: &str) -> String {
        let http = HttpClient::new(&self.url, None).unwrap();
        let request = self.runtime.block_on(http.json(Method::POST, "/api/v1/provisioning", None, None)).unwrap();
        let code = request["user_code"].as_str().unwrap().to_owned();
        self.cloud.with(|s| s.decide_provisioning(&code, "e2e1", name, true, now_ms())).unwrap();
        let grant = self
            .runtime
            .block_on(http.json(
                Method::POST,
                "/api/v1/provisioning/token",
                None,
                Some(&json!({"device_code": request["device_code"]})),
            ))
            .unwrap();
        let info = SessionInfo::from_json(&grant["session"], &self.url).unwrap();
        let tokens = TokenPair::from_json(&grant["tokens"], now_ms()).unwrap();
        let mut state = db.open(SinkOptions::default());
        let facts: Vec<(&str, SessionValue)> = info.to_facts();
        state.write_session(&facts).unwrap();
        token_store(state.as_mut(), key)(&tokens).unwrap();
        info.session_id
    }

    /// One `sync` run until the stream is idle, as a restarted client would do it.
    fn sync_until_idle(&self, db: &TestDb, key: &SecretKey) -> SyncSummary {
        self.try_sync(db, key, false).unwrap()
    }

    fn try_sync(
        &self,
        db: &TestDb,
        key: &SecretKey,
        auto_resync: bool,
    ) -> Result<SyncSummary, dbmirror::pipeline::PipelineError> {
        let mut state = db.open(SinkOptions::default());
        let session = state.read_session().unwrap();
        let info = SessionInfo::from_facts(&session).unwrap();
        let tokens = stored_tokens(&session, key).unwrap();
        let replication = Replication::new(HttpClient::new(&self.url, None).unwrap(), info, tokens);
        let options = SyncOptions {
            max_poll: Duration::from_millis(300),
            until_idle: true,
            database_batch_size: 200,
            auto_resync,
            ..SyncOptions::default()
        };
        sync(
            replication,
            db.open(SinkOptions::default()),
            state.as_mut(),
            key,
            &options,
            Arc::new(AtomicBool::new(false)),
        )
    }

    fn verify(&self, db: &TestDb, phase: &str) {
        let truth = self.cloud.with(|s| s.ground_truth("e2e1")).unwrap();
        let checks = dbmirror::verify::verify(db.open(SinkOptions::default()).as_mut(), &truth).unwrap();
        let bad: Vec<_> = checks.iter().filter(|c| !c.equal).collect();
        assert!(bad.is_empty(), "{:?} {phase}: {bad:?}", db.kind);
        assert_eq!(checks.len(), 20, "{phase}");
    }

    fn changes(&self, count: usize) {
        self.cloud.with(|s| s.run("e2e1", &dbmirror::cloud::journal::TenantOp::Change { count }, now_ms())).unwrap();
    }
}

fn key(db: &TestDb) -> SecretKey {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("dbmirror-e2e-{}-{:?}", std::process::id(), db.kind));
    std::fs::create_dir_all(&dir).unwrap();
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("{n}.key"));
    let _ = std::fs::remove_file(&path);
    SecretKey::load_or_create(&path).unwrap()
}

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
        let before = db.open(SinkOptions::default()).read_session().unwrap()["refresh_token"].clone();
        db.open(SinkOptions::default())
            .write_session(&[("access_expires_at_ms", SessionValue::Text("0".into()))])
            .unwrap();
        w.changes(20);
        w.sync_until_idle(&db, &key);
        let after = db.open(SinkOptions::default()).read_session().unwrap()["refresh_token"].clone();
        assert_ne!(before, after, "{:?}: the rotated refresh token was stored", db.kind);
        w.verify(&db, "token refresh");
    }
}

/// Schema lifecycle while the client is behind: a new table, a nullable column added and an
/// incompatible re-create all arrive in one stream with changes before and after them.
#[test]
fn schema_changes_in_the_stream_converge() {
    use dbmirror::cloud::journal::TenantOp;
    let db = fresh_databases().into_iter().next().unwrap();
    let w = world(false);
    let key = key(&db);
    w.provision(&db, &key, "schema");
    w.sync_until_idle(&db, &key);
    w.changes(100);
    for op in [
        TenantOp::AddColumn { table: "crm7.person".into(), column: "nickname".into() },
        TenantOp::Change { count: 100 },
        TenantOp::NewTable { table: "crm7.service_extra".into(), rows: 15 },
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
}

/// The replica refuses writes (a broken table): the client stops with the database's error,
/// commits no progress past the failed batch, and converges once the replica is fixed.
/// (Transient errors — locks, lost connections — are retried in place: `pipeline::retry`.)
#[test]
fn a_failing_replica_stops_without_losing_progress_and_converges_after_the_fix() {
    let db = fresh_databases().into_iter().next().unwrap();
    let w = world(false);
    let key = key(&db);
    w.provision(&db, &key, "retry");
    w.sync_until_idle(&db, &key);
    let offsets_before = db.open(SinkOptions::default()).offsets().unwrap();
    // Writes to crm7.person fail: a trigger raises (SQLite's `busy` is transient; this error is
    // not, so `sync` stops with the error and keeps its offsets).
    db.exec("CREATE TRIGGER refuse BEFORE INSERT ON crm7_person BEGIN SELECT RAISE(ABORT, 'replica refuses'); END;");
    w.changes(300);
    let mut state = db.open(SinkOptions::default());
    let session = state.read_session().unwrap();
    let info = SessionInfo::from_facts(&session).unwrap();
    let tokens = stored_tokens(&session, &key).unwrap();
    let replication = Replication::new(HttpClient::new(&w.url, None).unwrap(), info, tokens);
    let options = SyncOptions { max_poll: Duration::from_millis(300), until_idle: true, ..SyncOptions::default() };
    let failed = sync(
        replication,
        db.open(SinkOptions::default()),
        state.as_mut(),
        &key,
        &options,
        Arc::new(AtomicBool::new(false)),
    );
    assert!(failed.unwrap_err().to_string().contains("replica refuses"));
    assert_eq!(db.open(SinkOptions::default()).offsets().unwrap(), offsets_before, "no progress past the failed batch");
    db.exec("DROP TRIGGER refuse;");
    w.sync_until_idle(&db, &key);
    w.verify(&db, "after the fix");
}

/// Source restored from a backup, and a tenant suspended then resumed: the cloud resets the
/// offsets to a fresh snapshot; the client reloads every table from it with no manual step,
/// and rows the restored source no longer has are gone from the replica too.
#[test]
fn offset_resets_after_a_restore_or_a_resume_converge() {
    for db in fresh_databases() {
        let w = world(false);
        let key = key(&db);
        w.provision(&db, &key, "reset");
        w.sync_until_idle(&db, &key);
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
    let db = fresh_databases().into_iter().next().unwrap();
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
    let resynced = w.try_sync(&db, &key, true).unwrap();
    assert!(resynced.records > 0);
    w.verify(&db, "after auto-resync");
}
