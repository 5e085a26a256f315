//! Real replica databases for the cross-target tests: SQLite always; PostgreSQL from
//! `DBMIRROR_PG_URL`, or a private cluster this test process starts (and a watchdog stops
//! when the process ends); SQL Server only when `DBMIRROR_MSSQL_URL` is set.

use dbmirror::sink::Replica;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dbmirror::sink::mssql::MssqlSink;
use dbmirror::sink::postgres::PgSink;
use dbmirror::sink::sqlite::SqliteSink;
use dbmirror::sink::{SinkOptions, TargetKind};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh, empty database on one target; open it (again) as often as a test needs.
#[derive(Debug, Clone)]
pub struct TestDb {
    pub kind: TargetKind,
    pub connection_string: String,
}

impl TestDb {
    pub fn open(&self, options: SinkOptions) -> Box<dyn Replica> {
        dbmirror::sink::open(&self.connection_string, options)
            .unwrap_or_else(|e| panic!("opening {:?} replica: {e}", self.kind))
    }

    /// Runs target-specific SQL (tests use it to break a table on purpose).
    pub fn exec(&self, sql: &str) {
        match self.kind {
            TargetKind::Sqlite => SqliteSink::open(&self.connection_string, SinkOptions::default())
                .unwrap()
                .connection()
                .execute_batch(sql)
                .unwrap(),
            TargetKind::Postgres => {
                PgSink::open(&self.connection_string, SinkOptions::default()).unwrap().execute_batch(sql).unwrap()
            }
            TargetKind::SqlServer => {
                MssqlSink::open(&self.connection_string, SinkOptions::default()).unwrap().execute_batch(sql).unwrap()
            }
        }
    }

    /// One integer read back (tests check what hooks built), spelled per target.
    pub fn scalar(&self, sqlite: &str, postgres: &str) -> i64 {
        self.one(sqlite, postgres)
    }

    /// One text value read back, spelled per target.
    pub fn text(&self, sqlite: &str, postgres: &str) -> String {
        self.one(sqlite, postgres)
    }

    fn one<T>(&self, sqlite: &str, postgres: &str) -> T
    where
        T: rusqlite::types::FromSql + for<'a> postgres::types::FromSql<'a>,
    {
        match self.kind {
            TargetKind::Sqlite => SqliteSink::open(&self.connection_string, SinkOptions::default())
                .unwrap()
                .connection()
                .query_row(sqlite, [], |row| row.get(0))
                .unwrap_or_else(|e| panic!("{sqlite}: {e}")),
            TargetKind::Postgres => postgres::Client::connect(&self.connection_string, postgres::NoTls)
                .unwrap()
                .query_one(postgres, &[])
                .unwrap_or_else(|e| panic!("{postgres}: {e}"))
                .get::<_, T>(0),
            TargetKind::SqlServer => panic!("reading back is not spelled for SQL Server"),
        }
    }

    /// Picks one of three spellings of the same statement.
    pub fn exec_per_target(&self, sqlite: &str, postgres: &str, mssql: &str) {
        self.exec(match self.kind {
            TargetKind::Sqlite => sqlite,
            TargetKind::Postgres => postgres,
            TargetKind::SqlServer => mssql,
        });
    }
}

impl TestDb {
    /// Makes the replica unavailable to the client for `period`, as it meets that: PostgreSQL
    /// refuses new connections and cuts the open ones (a server restart or failover); SQLite,
    /// which has no server, is locked by another writer (a backup or an owner's long job).
    pub fn outage(&self, period: std::time::Duration) {
        match self.kind {
            TargetKind::Sqlite => {
                let path = dbmirror::sink::sqlite::parse_connection_string(&self.connection_string).unwrap();
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
                std::thread::sleep(period);
                conn.execute_batch("COMMIT").unwrap();
            }
            TargetKind::Postgres => {
                let name = self.connection_string.rsplit("dbname=").next().unwrap().to_owned();
                let mut admin = postgres::Client::connect(postgres_admin().unwrap(), postgres::NoTls).unwrap();
                admin.batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).unwrap();
                let cut = format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'");
                let until = std::time::Instant::now() + period;
                while std::time::Instant::now() < until {
                    admin.batch_execute(&cut).unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                admin.batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).unwrap();
            }
            TargetKind::SqlServer => std::thread::sleep(period),
        }
    }
}

/// One fresh database per available target.
pub fn fresh_databases() -> Vec<TestDb> {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("dbm_{}_{n}", std::process::id());
    let mut out = Vec::new();
    let dir = std::env::temp_dir().join("dbmirror-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.db"));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    out.push(TestDb { kind: TargetKind::Sqlite, connection_string: format!("Data Source={}", file.display()) });
    if let Some(admin) = postgres_admin() {
        let mut client = postgres::Client::connect(admin, postgres::NoTls).unwrap();
        client.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        out.push(TestDb { kind: TargetKind::Postgres, connection_string: format!("{admin} dbname={name}") });
    }
    if let Ok(url) = std::env::var("DBMIRROR_MSSQL_URL") {
        let mut admin = MssqlSink::open(&url, SinkOptions::default()).unwrap();
        admin.execute_batch(&format!("CREATE DATABASE [{name}]")).unwrap();
        out.push(TestDb { kind: TargetKind::SqlServer, connection_string: format!("{url};Database={name}") });
    }
    out
}

/// The certificate the test cluster serves (to trust as `sslrootcert`), when this process
/// started the cluster itself.
pub fn postgres_root_cert() -> Option<PathBuf> {
    postgres_admin()?;
    let path = std::env::temp_dir().join(format!("dbmirror-pg-{}", std::process::id())).join("root.crt");
    path.exists().then_some(path)
}

/// The admin connection string of the test PostgreSQL, if one is available.
pub fn postgres_admin() -> Option<&'static str> {
    static ADMIN: OnceLock<Option<String>> = OnceLock::new();
    ADMIN
        .get_or_init(|| {
            if let Ok(url) = std::env::var("DBMIRROR_PG_URL") {
                return Some(url);
            }
            match start_cluster() {
                Ok(url) => Some(url),
                Err(reason) if std::env::var_os("CI").is_some() => panic!("PostgreSQL is required in CI: {reason}"),
                Err(reason) => {
                    eprintln!("skipping PostgreSQL targets: {reason}");
                    None
                }
            }
        })
        .as_deref()
}

fn pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> =
        std::fs::read_dir("/usr/lib/postgresql").ok()?.flatten().map(|e| e.path()).collect();
    versions.sort();
    versions.into_iter().rev().map(|v| v.join("bin")).find(|b| b.join("initdb").exists())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

/// A command run as the `postgres` user when we are root (the server refuses to run as root).
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// Starts a throwaway cluster on 127.0.0.1 with trust auth and no fsync; a watchdog shell
/// stops it and removes its directory once this test process has exited.
fn start_cluster() -> Result<String, String> {
    let bin = pg_bin().ok_or("no initdb under /usr/lib/postgresql (apt-get install postgresql)")?;
    let dir = std::env::temp_dir().join(format!("dbmirror-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    if is_root() {
        Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().map_err(|e| e.to_string())?;
    }
    let data = dir.join("data");
    let status = as_postgres(&bin.join("initdb"))
        .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "-D"])
        .arg(&data)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("initdb: {e}"))?;
    if !status.success() {
        return Err(format!("initdb failed: {status}"));
    }
    // TLS on, with a self-signed certificate for 127.0.0.1 (plain connections still work).
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .map_err(|e| format!("generating a certificate: {e}"))?;
    let (crt, key) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&crt, cert.cert.pem()).map_err(|e| e.to_string())?;
    std::fs::write(&key, cert.signing_key.serialize_pem()).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("root.crt"), cert.cert.pem()).map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())?;
    if is_root() {
        Command::new("chown").args(["postgres:postgres"]).arg(&crt).arg(&key).status().map_err(|e| e.to_string())?;
    }
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
    let server = format!(
        "{} -D {} -p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
         -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
        bin.join("postgres").display(),
        data.display(),
        dir.display(),
        crt.display(),
        key.display()
    );
    let watchdog = format!(
        "{server} >{log} 2>&1 & pg=$!; while [ -d /proc/{me} ]; do sleep 1; done; kill -INT $pg; wait $pg; rm -rf {dir}",
        log = dir.join("server.log").display(),
        me = std::process::id(),
        dir = dir.display()
    );
    as_postgres(Path::new("/bin/sh"))
        .args(["-c", &watchdog])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting postgres: {e}"))?;
    let url = format!("host=127.0.0.1 port={port} user=postgres");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match postgres::Client::connect(&format!("{url} dbname=postgres"), postgres::NoTls) {
            Ok(_) => return Ok(url),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => return Err(format!("postgres did not start: {e}; see {}", dir.join("server.log").display())),
        }
    }
}
