//! Partner mode against the in-process cloud, on SQLite and PostgreSQL: every approving
//! tenant gets its own database and converges; a tenant approving mid-run gets its mirror, one
//! withdrawing stops (its database kept); one tenant's broken replica fails alone while the
//! others converge, and recovers once fixed; and no two passes of a tenant ever overlapped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dbmirror::clock::now_ms;
use dbmirror::cloud::crm::source_tables;
use dbmirror::cloud::http::{Cloud, spawn};
use dbmirror::cloud::journal::TenantOp;
use dbmirror::cloud::log::EventLog;
use dbmirror::cloud::service::State;
use dbmirror::cloud::tenant::{Tenant, TenantConfig};
use dbmirror::partner::databases::Databases;
use dbmirror::partner::{Partner, PartnerConfig, Secret, passes};
use dbmirror::pipeline::SyncOptions;
use dbmirror::secrets::SecretKey;
use dbmirror::sink::{SinkOptions, TargetKind};

use crate::support::targets::postgres_admin;

const PARTNER: (&str, &str) = ("acme", "partner secret for tests");

/// An in-process cloud with `count` tenants (`t0001` …), all approving the partner but the
/// last.
struct Clouds {
    url: String,
    cloud: Arc<Cloud>,
    tenants: Vec<String>,
    _runtime: tokio::runtime::Runtime,
}

fn clouds(count: usize) -> Clouds {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let tenants: Vec<String> = (1..=count).map(|i| format!("t{i:04}")).collect();
    let (url, cloud) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut state = State::new(EventLog::in_memory(Duration::from_secs(3600)), url.clone());
        for (i, ctx) in tenants.iter().enumerate() {
            let config = TenantConfig {
                context: ctx.clone(),
                seed: i as u64 + 1,
                rows_per_table: 3,
                partitions: 2,
                with_schema: false,
            };
            state.add_tenant(Tenant::new(config, source_tables()), now_ms()).unwrap();
        }
        state.add_partner(PARTNER.0, PARTNER.1, tenants[..count - 1].to_vec());
        let cloud = Cloud::new(state, "adm".into());
        spawn(listener, cloud.clone(), 0);
        (url, cloud)
    });
    Clouds { url, cloud, tenants, _runtime: runtime }
}

impl Clouds {
    fn changes(&self, ctx: &str, count: usize) {
        self.cloud.with(|s| s.run(ctx, &TenantOp::Change { count }, now_ms())).unwrap();
    }

    fn approve(&self, ctx: &str, approved: bool) {
        self.cloud.with(|s| s.set_approval(PARTNER.0, ctx, approved)).unwrap();
    }

    /// Whether `ctx`'s mirror equals its source now.
    fn equal(&self, databases: &Databases, ctx: &str) -> bool {
        let Ok(truth) = self.cloud.with(|s| s.ground_truth(ctx)) else { return false };
        let Ok(mut replica) = dbmirror::sink::open(&databases.connection_string(ctx).unwrap(), SinkOptions::default())
        else {
            return false;
        };
        let Ok(checks) = dbmirror::verify::verify(replica.as_mut(), &truth) else { return false };
        checks.len() == 20 && checks.iter().all(|c| c.equal)
    }

    fn wait_equal(&self, databases: &Databases, tenants: &[String], what: &str) {
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut pending: Vec<&String> = tenants.iter().collect();
        while !pending.is_empty() {
            pending.retain(|ctx| !self.equal(databases, ctx));
            assert!(Instant::now() < deadline, "{what}: not converged: {pending:?}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

fn facts(databases: &Databases, ctx: &str) -> dbmirror::state::Session {
    let mut replica = dbmirror::sink::open(&databases.connection_string(ctx).unwrap(), SinkOptions::default()).unwrap();
    replica.read_facts().unwrap()
}

/// Partner servers available here: a SQLite folder, and the test PostgreSQL cluster.
fn servers(label: &str) -> Vec<(TargetKind, String, String)> {
    let dir = std::env::temp_dir().join(format!("dbmirror-partner-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pattern = format!("p{}_{label}_{{contextId}}", std::process::id());
    let mut out = vec![(TargetKind::Sqlite, format!("Data Source={}", dir.display()), "Mirror_{contextId}".to_owned())];
    if let Some(admin) = postgres_admin() {
        out.push((TargetKind::Postgres, format!("{admin} dbname=postgres"), pattern));
    }
    out
}

/// Breaks one tenant's replica for good (until undone): every write to its `person` table is refused.
fn break_replica(kind: TargetKind, databases: &Databases, ctx: &str, broken: bool) {
    let conn = databases.connection_string(ctx).unwrap();
    match kind {
        TargetKind::Sqlite => {
            let path = dbmirror::sink::sqlite::parse_connection_string(&conn).unwrap();
            let db = rusqlite::Connection::open(path).unwrap();
            db.execute_batch(if broken {
                "CREATE TRIGGER refuse_all BEFORE UPDATE ON crm7_person BEGIN SELECT RAISE(ABORT, 'broken by the test'); END;"
            } else {
                "DROP TRIGGER refuse_all"
            })
            .unwrap();
        }
        _ => {
            let mut db = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
            db.batch_execute(if broken {
                "CREATE FUNCTION refuse_all() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'broken by the test'; END $$; \
                 CREATE TRIGGER refuse_all BEFORE UPDATE ON crm7.person FOR EACH ROW EXECUTE FUNCTION refuse_all()"
            } else {
                "DROP TRIGGER refuse_all ON crm7.person"
            })
            .unwrap();
        }
    }
}

#[test]
fn every_approving_tenant_is_mirrored_alone_in_its_own_database() {
    for (kind, server, pattern) in servers("many") {
        let w = clouds(50);
        let mut config = PartnerConfig::new(PARTNER.0, Secret::new(PARTNER.1.into()), &w.url, &server);
        config.database_name = pattern;
        config.poll = Duration::from_millis(500);
        config.idle = Duration::from_millis(300);
        config.slice = Duration::from_secs(2);
        let partner =
            Partner::new(config, SecretKey::ephemeral(), SyncOptions::default(), SinkOptions::default()).unwrap();
        let databases = partner.databases().clone();
        let stop = Arc::new(AtomicBool::new(false));
        std::thread::scope(|scope| {
            let run = scope.spawn(|| partner.run(stop.clone()));
            let (approving, late) = (&w.tenants[..49], &w.tenants[49]);
            for ctx in approving.iter().step_by(3) {
                w.changes(ctx, 30);
            }
            w.wait_equal(&databases, approving, &format!("{kind:?}: 49 approving tenants"));

            // A tenant approving mid-run gets its database and converges; one withdrawing is
            // recorded and left as it is.
            w.approve(late, true);
            let gone = &w.tenants[1];
            w.approve(gone, false);
            w.wait_equal(&databases, std::slice::from_ref(late), &format!("{kind:?}: the late tenant"));
            let deadline = Instant::now() + Duration::from_secs(30);
            while passes::summary(&facts(&databases, gone)).0.as_deref() != Some("withdrawn") {
                assert!(Instant::now() < deadline, "{kind:?}: the withdrawal is recorded");
                std::thread::sleep(Duration::from_millis(200));
            }
            w.changes(gone, 50);

            // One tenant's replica broken: it fails alone, the others go on; fixed, it converges.
            let broken = &w.tenants[2];
            break_replica(kind, &databases, broken, true);
            for ctx in &w.tenants[2..12] {
                w.changes(ctx, 40);
            }
            w.wait_equal(&databases, &w.tenants[3..12], &format!("{kind:?}: the others, beside a broken one"));
            assert!(!w.equal(&databases, broken), "{kind:?}: the broken replica cannot converge");
            let error = facts(&databases, broken).get(dbmirror::pipeline::facts::LAST_ERROR).cloned();
            assert!(format!("{error:?}").contains("broken by the test"), "{kind:?}: {error:?}");
            break_replica(kind, &databases, broken, false);
            w.wait_equal(&databases, std::slice::from_ref(broken), &format!("{kind:?}: the fixed tenant"));
            assert!(!w.equal(&databases, gone), "{kind:?}: a withdrawn tenant is no longer mirrored");

            stop.store(true, Ordering::Relaxed);
            run.join().unwrap().unwrap();
        });
        // One process: its passes of a tenant never overlapped, and every pass ended.
        for ctx in &w.tenants {
            let recorded = passes::read(&facts(&databases, ctx));
            assert!(!recorded.is_empty(), "{kind:?} {ctx}");
            for pair in recorded.windows(2) {
                assert!(pair[0].end_ms.is_some_and(|end| end <= pair[1].start_ms), "{kind:?} {ctx}: {pair:?}");
            }
        }
    }
}

/// A process killed between creating a tenant's session and storing its tokens left the
/// session without them (before they were stored in one transaction): the next pass must not
/// stay stuck on it, but make the tenant a new session and converge.
#[test]
fn a_tenant_whose_session_lost_its_tokens_gets_a_new_one() {
    let (kind, server, _) = servers("lost").remove(0);
    let w = clouds(3);
    let mut config = PartnerConfig::new(PARTNER.0, Secret::new(PARTNER.1.into()), &w.url, &server);
    config.poll = Duration::from_millis(300);
    config.idle = Duration::from_millis(200);
    let partner = Partner::new(config, SecretKey::ephemeral(), SyncOptions::default(), SinkOptions::default()).unwrap();
    let databases = partner.databases().clone();
    let ctx = &w.tenants[0];
    databases.ensure(ctx).unwrap();
    let api = dbmirror::source::partner::PartnerApi::new(
        dbmirror::source::client::HttpClient::new(&w.url, None).unwrap(),
        PARTNER.0,
        PARTNER.1,
    )
    .unwrap();
    let grant = api.create_session(ctx, "orphan").unwrap();
    let info = dbmirror::source::replication::SessionInfo::from_reply(grant.session.as_ref().unwrap(), &w.url);
    let mut replica = dbmirror::sink::open(&databases.connection_string(ctx).unwrap(), SinkOptions::default()).unwrap();
    replica.write_facts(&info.to_facts()).unwrap();
    drop(replica);

    let stop = Arc::new(AtomicBool::new(false));
    std::thread::scope(|scope| {
        let run = scope.spawn(|| partner.run(stop.clone()));
        w.wait_equal(&databases, &w.tenants[..2], &format!("{kind:?}: a session without tokens is replaced"));
        stop.store(true, Ordering::Relaxed);
        run.join().unwrap().unwrap();
    });
}
