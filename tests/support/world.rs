//! An in-process reference cloud with one simulated tenant (`e2e1`), and the client's side:
//! provisioning into a replica, `sync` runs until idle, and `verify` against ground truth.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use dbmirror::clock::now_ms;
use dbmirror::cloud::crm::source_tables;
use dbmirror::cloud::http::{Cloud, spawn};
use dbmirror::cloud::log::EventLog;
use dbmirror::cloud::service::State;
use dbmirror::cloud::tenant::{Tenant, TenantConfig};
use dbmirror::pipeline::{SyncOptions, SyncSummary, store_tokens, stored_tokens, sync};
use dbmirror::secrets::SecretKey;
use dbmirror::sink::{Replica, SinkOptions};
use dbmirror::source::client::HttpClient;
use dbmirror::source::dispatcher::{Dispatcher, GrantState};
use dbmirror::source::replication::{Replication, SessionInfo, TokenPair};

use super::targets::TestDb;

pub struct World {
    pub url: String,
    pub cloud: Arc<Cloud>,
    /// Drives the in-process cloud: dropping it stops the server.
    _runtime: tokio::runtime::Runtime,
}

pub fn world(with_schema: bool) -> World {
    world_with(with_schema, Duration::from_secs(3600))
}

pub fn world_with(with_schema: bool, retention: Duration) -> World {
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
    World { url, cloud, _runtime: runtime }
}

impl World {
    /// A session granted through the Dispatcher, as `provision` does it, with the browser
    /// step approved in-process.
    pub fn grant(&self, name: &str) -> (SessionInfo, TokenPair) {
        let dispatcher = Dispatcher::new(HttpClient::new(&self.url, None).unwrap()).unwrap();
        let request = dispatcher.start(None).unwrap();
        self.cloud.with(|s| s.decide_provisioning(&request.user_code, "e2e1", name, true, now_ms())).unwrap();
        let GrantState::Granted(grant) = dispatcher.poll(&request.device_code).unwrap() else { panic!("pending") };
        let info = SessionInfo::from_reply(grant.session.as_ref().unwrap(), &self.url);
        (info, TokenPair::issued(grant.tokens, now_ms()))
    }

    /// Provisions a session and stores it in the replica; returns the session id.
    pub fn provision(&self, db: &TestDb, key: &SecretKey, name: &str) -> String {
        store_session(db.open(SinkOptions::default()).as_mut(), key, self.grant(name))
    }

    /// One `sync` run until the stream is idle, as a restarted client would do it.
    pub fn sync_until_idle(&self, db: &TestDb, key: &SecretKey) -> SyncSummary {
        self.try_sync(db, key, false).unwrap()
    }

    pub fn try_sync(
        &self,
        db: &TestDb,
        key: &SecretKey,
        auto_resync: bool,
    ) -> Result<SyncSummary, dbmirror::pipeline::PipelineError> {
        self.sync_with(db, key, auto_resync, Arc::new(AtomicBool::new(false)))
    }

    /// A `sync` run until idle or until `stop` is set (Ctrl-C).
    pub fn run_sync(
        &self,
        db: &TestDb,
        key: &SecretKey,
        stop: Arc<AtomicBool>,
    ) -> Result<SyncSummary, dbmirror::pipeline::PipelineError> {
        self.sync_with(db, key, false, stop)
    }

    fn sync_with(
        &self,
        db: &TestDb,
        key: &SecretKey,
        auto_resync: bool,
        stop: Arc<AtomicBool>,
    ) -> Result<SyncSummary, dbmirror::pipeline::PipelineError> {
        let options = SyncOptions { auto_resync, ..Self::options() };
        self.sync_options(db, key, &options, stop)
    }

    /// The options of the runs above: short long-polls, small transactions, until idle.
    pub fn options() -> SyncOptions {
        SyncOptions {
            fetch: dbmirror::pipeline::FetchLimits::waiting(Duration::from_millis(300)),
            until_idle: true,
            database_batch_size: 200,
            ..SyncOptions::default()
        }
    }

    /// A `sync` run with the stored session and these options.
    pub fn sync_options(
        &self,
        db: &TestDb,
        key: &SecretKey,
        options: &SyncOptions,
        stop: Arc<AtomicBool>,
    ) -> Result<SyncSummary, dbmirror::pipeline::PipelineError> {
        self.sync_shaped(db, key, options, &SinkOptions::default(), stop)
    }

    /// [`World::sync_options`] into a replica shaped by `sink` (prefix, skip list, column rules).
    pub fn sync_shaped(
        &self,
        db: &TestDb,
        key: &SecretKey,
        options: &SyncOptions,
        sink: &SinkOptions,
        stop: Arc<AtomicBool>,
    ) -> Result<SyncSummary, dbmirror::pipeline::PipelineError> {
        let mut state = db.open(SinkOptions::default());
        let replication = self.replication(state.as_mut(), key);
        sync(replication, db.open(sink.clone()), state.as_mut(), key, options, stop)
    }

    /// The session `state` holds, connected to this cloud.
    pub fn replication(&self, state: &mut dyn Replica, key: &SecretKey) -> Replication {
        let session = state.read_facts().unwrap();
        let info = SessionInfo::from_facts(&session).unwrap();
        let tokens = stored_tokens(&session, key).unwrap();
        Replication::new(HttpClient::new(&self.url, None).unwrap(), info, tokens).unwrap()
    }

    pub fn verify(&self, db: &TestDb, phase: &str) {
        assert_eq!(self.verify_count(db, phase), 20, "{phase}");
    }

    /// Asserts the replica equals the source whatever the number of tables; returns it.
    pub fn verify_count(&self, db: &TestDb, phase: &str) -> usize {
        self.verify_replica(db.open(SinkOptions::default()).as_mut(), &format!("{:?} {phase}", db.kind))
    }

    /// Asserts `replica` equals the source; returns the number of tables compared.
    pub fn verify_replica(&self, replica: &mut dyn Replica, phase: &str) -> usize {
        let truth = self.cloud.with(|s| s.ground_truth("e2e1")).unwrap();
        let checks = dbmirror::verify::verify(replica, &truth).unwrap();
        let bad: Vec<_> = checks.iter().filter(|c| !c.equal).collect();
        assert!(bad.is_empty(), "{phase}: {bad:?}");
        checks.len()
    }

    /// Runs `sync` with `options` on another thread while `during` acts on the world (the event
    /// at the worst moment), then stops it and returns the run; a failed assertion in `during`
    /// stops the run too, so the test fails instead of waiting for it forever.
    pub fn while_syncing(
        &self,
        db: &TestDb,
        key: &SecretKey,
        options: &SyncOptions,
        during: impl FnOnce(&std::thread::ScopedJoinHandle<'_, SyncResult>),
    ) -> SyncResult {
        let stop = Arc::new(AtomicBool::new(false));
        std::thread::scope(|s| {
            let run = s.spawn(|| self.sync_options(db, key, options, stop.clone()));
            let _stop_on_exit = StopOnDrop(&stop);
            during(&run);
            drop(_stop_on_exit);
            run.join().expect("a running sync must not panic")
        })
    }

    pub fn changes(&self, count: usize) {
        self.cloud.with(|s| s.run("e2e1", &dbmirror::cloud::journal::TenantOp::Change { count }, now_ms())).unwrap();
    }
}

pub fn key(db: &TestDb) -> SecretKey {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("dbmirror-e2e-{}-{:?}", std::process::id(), db.kind));
    std::fs::create_dir_all(&dir).unwrap();
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("{n}.key"));
    let _ = std::fs::remove_file(&path);
    SecretKey::load_or_create(&path).unwrap()
}

/// A cloud, and a replica provisioned against it (nothing loaded yet).
pub fn provisioned(db: &TestDb, session_name: &str) -> (World, SecretKey) {
    let w = world(false);
    let key = key(db);
    w.provision(db, &key, session_name);
    (w, key)
}

/// A cloud, and a replica provisioned against it that has loaded the initial snapshot.
pub fn ready(db: &TestDb, session_name: &str) -> (World, SecretKey) {
    let (w, key) = provisioned(db, session_name);
    w.sync_until_idle(db, &key);
    (w, key)
}

/// What a `sync` run returns.
pub type SyncResult = Result<SyncSummary, dbmirror::pipeline::PipelineError>;

/// Stores a granted session and its sealed tokens in a replica, as `provision` does.
pub fn store_session(state: &mut dyn Replica, key: &SecretKey, (info, tokens): (SessionInfo, TokenPair)) -> String {
    state.write_facts(&info.to_facts()).unwrap();
    store_tokens(state, key, &tokens).unwrap();
    info.session_id
}

/// Sets a stop flag when dropped (also while a failed assertion unwinds).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
