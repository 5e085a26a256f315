//! The `dbmirror-cloud` binary as an operator runs it: HTTPS with a self-signed certificate
//! trusted by its printed fingerprint (and refused with another), lifecycle actions from the
//! CLI, and a durable event log and certificate that survive a restart.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use dbmirror::source::client::{HttpClient, SourceError};
use dbmirror::source::tls::{Trust, parse_fingerprint};
use hyper::Method;

struct Server {
    child: Child,
    url: String,
    fingerprint: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data_dir: &Path) -> Server {
    start_with(data_dir, &["--rows", "3"])
}

fn start_with(data_dir: &Path, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dbmirror-cloud"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-token", "adm", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut url, mut fingerprint) = (String::new(), String::new());
    while url.is_empty() || fingerprint.is_empty() {
        let line = lines.next().expect("the server printed its address and fingerprint").unwrap();
        if let Some(rest) = line.strip_prefix("dbmirror-cloud listening on ") {
            url = rest.to_owned();
        }
        if let Some(rest) = line.strip_prefix("certificate SHA-256 fingerprint: ") {
            fingerprint = rest.to_owned();
        }
    }
    Server { child, url, fingerprint }
}

fn cli_action(server: &Server, action: &str, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dbmirror-cloud"))
        .args(["action", "--url", &server.url, "--fingerprint", &server.fingerprint, "--admin-token", "adm", action])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_pinned_certificate_cli_actions_and_a_durable_restart() {
    let dir = std::env::temp_dir().join(format!("dbmirror-cloud-bin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let server = start(&dir);
    assert!(server.url.starts_with("https://"));
    let trust = Trust::Fingerprint(parse_fingerprint(&server.fingerprint).unwrap());
    let client = HttpClient::new(&server.url, Some(&trust)).unwrap();
    assert_eq!(client.json(Method::GET, "/healthz", None, None).await.unwrap()["status"], "ok");
    // ALPN picks HTTP/2 over TLS (HTTP/1.1 stays available to clients that only speak it).
    let response = client.send(Method::GET, "/healthz", None, None).await.unwrap();
    assert_eq!(response.version(), hyper::Version::HTTP_2);

    // Another fingerprint: the TLS handshake is refused.
    let wrong = HttpClient::new(&server.url, Some(&Trust::Fingerprint([7; 32]))).unwrap();
    assert!(matches!(wrong.json(Method::GET, "/healthz", None, None).await, Err(SourceError::Request { .. })));
    let none = HttpClient::new(&server.url, None).unwrap();
    assert!(none.json(Method::GET, "/healthz", None, None).await.is_err());

    // Lifecycle actions from the command line.
    assert!(cli_action(&server, "changes", &["--count", "7"]).contains("changes: 7"));
    assert!(cli_action(&server, "changes", &["--count", "1", "--json"]).contains("\"changes\":1"));
    assert!(cli_action(&server, "add-column", &["--table", "crm7.person"]).contains("crm7.person"));
    let ops = HttpClient::new(&server.url, Some(&trust)).unwrap();
    let refused = ops.json(Method::POST, "/admin/cust1234/actions/nope", Some("adm"), None).await.unwrap_err();
    assert!(matches!(refused, SourceError::Service { status: 404, ref code, .. } if code == "unknown_action"));

    // Provision through the device grant, then read the tenant's status.
    let request = client.json(Method::POST, "/api/v1/provisioning", None, None).await.unwrap();
    let form =
        format!("user_code={}&tenant=cust1234&session_name=ci&action=approve", request["user_code"].as_str().unwrap());
    let page = reqwest_like_form(&server, &trust, &form).await;
    assert!(page.contains("Provisioning complete"));
    let grant = client
        .json(
            Method::POST,
            "/api/v1/provisioning/token",
            None,
            Some(&serde_json::json!({"device_code": request["device_code"]})),
        )
        .await
        .unwrap();
    let token = grant["tokens"]["access_token"].as_str().unwrap().to_owned();
    let refresh = grant["tokens"]["refresh_token"].as_str().unwrap().to_owned();

    // Operations: the sessions list, the change rate, the minimum client version, the page.
    let listed = cli_action(&server, "sessions", &[]);
    assert!(listed.contains("ci") && listed.contains("live"), "{listed}");
    let listed: serde_json::Value = serde_json::from_str(&cli_action(&server, "sessions", &["--json"])).unwrap();
    assert_eq!(listed[0]["replication_id"], "ci");
    assert!(cli_action(&server, "workload", &["--changes-per-sec", "0"]).contains("changes_per_sec: 0"));
    assert!(cli_action(&server, "min-client-version", &["--version", "0.0.9"]).contains("0.0.9"));
    let page = client.send(Method::GET, "/ops", None, None).await.unwrap();
    let page = String::from_utf8(http_body_util::BodyExt::collect(page.into_body()).await.unwrap().to_bytes().to_vec());
    assert!(page.unwrap().contains("Operation Center"));
    let anonymous = client.json(Method::GET, "/admin/overview", None, None).await.unwrap_err();
    assert!(matches!(anonymous, SourceError::Service { status: 401, .. }), "{anonymous}");
    let status = client.json(Method::GET, "/api/v1/replication/cust1234/status", Some(&token), None).await.unwrap();
    let ends: Vec<i64> = status["partitions"].as_array().unwrap().iter().map(|p| p["end"].as_i64().unwrap()).collect();
    let truth =
        client.json(Method::GET, "/api/v1/replication/cust1234/ground-truth", Some(&token), None).await.unwrap();
    let fingerprint = server.fingerprint.clone();
    drop(server);

    // Restart on the same data directory: same certificate, same log (nothing re-published).
    let server = start(&dir);
    assert_eq!(server.fingerprint, fingerprint);
    let client = HttpClient::new(&server.url, Some(&trust)).unwrap();
    // The session, its tokens and its signing key survived: no re-provisioning needed.
    let status = client.json(Method::GET, "/api/v1/replication/cust1234/status", Some(&token), None).await.unwrap();
    assert_eq!(status["session"]["replication_id"], "ci");
    assert_eq!(status["minimum_client_version"], "0.0.9", "the minimum client version survived the restart");
    let rotated = client
        .json(Method::POST, "/api/v1/token", None, Some(&serde_json::json!({"refresh_token": refresh})))
        .await
        .unwrap();
    let token = rotated["tokens"]["access_token"].as_str().unwrap().to_owned();
    let status = client.json(Method::GET, "/api/v1/replication/cust1234/status", Some(&token), None).await.unwrap();
    let again: Vec<i64> = status["partitions"].as_array().unwrap().iter().map(|p| p["end"].as_i64().unwrap()).collect();
    assert_eq!(again, ends, "the restarted cloud serves the same log");
    let truth_again =
        client.json(Method::GET, "/api/v1/replication/cust1234/ground-truth", Some(&token), None).await.unwrap();
    // Rows and checksums are rebuilt from the journal; where each table last changed is not
    // (every table is taken as changed at the log's ends, so `verify` waits for a replica to
    // have applied everything).
    let strip = |t: &serde_json::Value| {
        let tables = t["tables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["table"].clone(), t["rows"].clone(), t["checksum"].clone()));
        tables.collect::<Vec<_>>()
    };
    assert_eq!(strip(&truth_again), strip(&truth), "the ground truth is rebuilt from the journal");
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}

/// An instance folder with a SQLite replica and these extra settings.
fn instance_folder(dir: &Path, settings: serde_json::Value) -> std::path::PathBuf {
    named_instance_folder(dir, "instance", settings)
}

/// Like [`instance_folder`], in `dir/<name>`.
fn named_instance_folder(dir: &Path, name: &str, settings: serde_json::Value) -> std::path::PathBuf {
    let instance = dir.join(name);
    std::fs::create_dir_all(&instance).unwrap();
    let mut config = serde_json::json!({
        "ReplicaDatabase": {"ConnectionString": format!("Data Source={}", instance.join("replica.db").display())},
        "MaxPollTimeSeconds": 1
    });
    for (k, v) in settings.as_object().unwrap() {
        config[k] = v.clone();
    }
    std::fs::write(instance.join("appsettings.json"), config.to_string()).unwrap();
    instance
}

/// Runs a `dbmirror` command that waits for a browser approval (`provision`, `reconnect`),
/// approves it through the page as an administrator would, and returns the rest of its output.
async fn with_browser_approval(server: &Server, args: &[&str], instance: &Path, session_name: &str) -> Vec<String> {
    with_browser_approval_env(server, args, instance, session_name, &[]).await
}

/// [`with_browser_approval`] with extra environment variables for the client.
async fn with_browser_approval_env(
    server: &Server,
    args: &[&str],
    instance: &Path,
    session_name: &str,
    env: &[(&str, &Path)],
) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dbmirror"))
        .args(args)
        .envs(env.iter().copied())
        .arg("--instance")
        .arg(instance)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Lines before the prompt (e.g. a replaced session ended) are kept with the rest.
    let mut before = Vec::new();
    let prompt = loop {
        let line = lines.next().unwrap().unwrap();
        if line.contains("approve code ") {
            break line;
        }
        before.push(line);
    };
    let code = prompt.split("approve code ").nth(1).unwrap().trim_end_matches('.').to_owned();
    let trust = Trust::Fingerprint(parse_fingerprint(&server.fingerprint).unwrap());
    let form = format!("user_code={code}&tenant=cust1234&session_name={session_name}&action=approve");
    let page = reqwest_like_form(server, &trust, &form).await;
    assert!(page.contains("Provisioning complete"), "{page}");
    // Read everything: closing the pipe early would fail the child's next print.
    let rest: Vec<String> = before.into_iter().chain(lines.map(Result::unwrap)).collect();
    assert!(child.wait().unwrap().success(), "{rest:?}");
    rest
}

/// A fresh cloud (started with `serve_args`) and an instance provisioned against it with
/// the CLI; returns the scratch folder, the server, the instance folder and `provision`'s output.
async fn provisioned(
    label: &str,
    serve_args: &[&str],
    settings: serde_json::Value,
    session_name: &str,
) -> (std::path::PathBuf, Server, std::path::PathBuf, Vec<String>) {
    let dir = std::env::temp_dir().join(format!("dbmirror-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("cloud")).unwrap();
    let server = start_with(&dir.join("cloud"), serve_args);
    let instance = instance_folder(&dir, settings);
    let provision = ["provision", "--cloud", server.url.as_str(), "--fingerprint", server.fingerprint.as_str()];
    let rest = with_browser_approval(&server, &provision, &instance, session_name).await;
    (dir, server, instance, rest)
}

/// Posts the provisioning form as a browser would (form-encoded, over the pinned TLS).
async fn reqwest_like_form(server: &Server, trust: &Trust, form: &str) -> String {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    let config = dbmirror::source::tls::client_config(trust).unwrap();
    let connector =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config).https_only().enable_http1().build();
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
    let req = hyper::Request::post(format!("{}/provision", server.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form.to_owned())))
        .unwrap();
    let body = client.request(req).await.unwrap().into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// The customer's commands against the real cloud binary: `provision` (the admin approves in
/// the browser page), `sync --until-idle`, `info`, `status --json` and `verify`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_customer_commands_provision_sync_and_verify() {
    let (dir, server, instance, rest) = provisioned("cli", &["--rows", "3"], serde_json::json!({}), "BI").await;
    let dbmirror = env!("CARGO_BIN_EXE_dbmirror");
    let trust = Trust::Fingerprint(parse_fingerprint(&server.fingerprint).unwrap());
    assert!(rest.iter().any(|l| l == "Provisioning completed successfully!"), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("Replication ID: bi")));

    let run = |args: &[&str]| {
        let out = Command::new(dbmirror).args(args).arg("--instance").arg(&instance).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, _) = run(&["sync", "--until-idle"]);
    assert_eq!(code, Some(0));
    // Logs that are not read on a terminal carry no colour escape codes; the start and the
    // tables' creation are logged at Information.
    let piped = Command::new(dbmirror).args(["sync", "--until-idle", "--instance"]).arg(&instance).output().unwrap();
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(!stderr.contains('\u{1b}'), "no escape codes when not a terminal: {stderr:?}");
    assert!(stderr.contains("sync starting"), "{stderr}");
    // The instance keeps a rolling log file with one line per commit cycle, rows per table.
    let logs: String = std::fs::read_dir(instance.join("logs"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(logs.contains("commit cycle") && logs.contains("crm7.person="), "{logs}");
    assert!(logs.contains("schema change applied to the replica") && logs.contains("Created"), "{logs}");
    assert!(!logs.contains("eyJ"), "no token in the log");
    let (code, info) = run(&["info"]);
    assert_eq!(code, Some(0));
    assert!(info.contains("cust1234") && !info.to_lowercase().contains("eyj"), "no token in the output: {info}");
    let (_, status) = run(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(status["tables"].as_array().unwrap().iter().all(|t| t["state"] == "ready"), "{status}");
    assert!(status["last_commit_cycle_ms"].is_i64(), "{status}");
    assert_eq!(status["lag"]["records"], 0, "caught up, by the replica's own offsets: {status}");
    assert_eq!(status["lag"]["seconds"], 0, "{status}");
    assert!(
        status["tables"].as_array().unwrap().iter().all(|t| t["last_change_ms"].is_i64() && t["rows"] == 3),
        "{status}"
    );
    let (code, verify) = run(&["verify"]);
    assert_eq!(code, Some(0), "{verify}");
    assert!(!verify.contains("DIFFERENT"));
    let (code, validated) = run(&["validate"]);
    assert_eq!(code, Some(0), "{validated}");
    assert!(validated.contains("ok    clock") && !validated.contains("FAIL"), "{validated}");
    assert!(validated.contains("ok    replica permissions"), "{validated}");

    // As a service: a unit named after the Replication ID; a second install is refused.
    let units = dir.join("units");
    std::fs::create_dir_all(&units).unwrap();
    let unit_dir = units.to_str().unwrap();
    let (code, _) = run(&["install", "--unit-dir", unit_dir]);
    assert_eq!(code, Some(0));
    let unit = std::fs::read_to_string(units.join("dbmirror-bi.service")).unwrap();
    assert!(
        unit.contains("ExecStart=")
            && unit.contains(" sync --instance ")
            && unit.contains("KillSignal=SIGTERM")
            && unit.contains("Restart=on-failure"),
        "{unit}"
    );
    let (code, again) = run(&["install", "--unit-dir", unit_dir]);
    assert_eq!(code, Some(0), "installing twice from one folder updates the unit: {again}");
    assert!(again.contains("Already installed"), "{again}");
    // A copy of the folder holds the same session: it must not get a second unit.
    let copy = dir.join("bi-copy");
    std::fs::create_dir_all(&copy).unwrap();
    for file in ["appsettings.json", "dbmirror.key"] {
        std::fs::copy(instance.join(file), copy.join(file)).unwrap();
    }
    let copied = Command::new(dbmirror)
        .args(["install", "--unit-dir", unit_dir, "--instance"])
        .arg(&copy)
        .current_dir(&instance)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&copied.stderr);
    assert!(!copied.status.success() && said.contains("same Replication ID"), "{said}");
    assert_eq!(run(&["uninstall", "--unit-dir", unit_dir]).0, Some(0));
    assert!(!units.join("dbmirror-bi.service").exists());

    // An operator revokes the session: sync stops and says what to do; `reconnect`
    // re-authorizes the same session through the browser, and sync carries on.
    let ops = HttpClient::new(&server.url, Some(&trust)).unwrap();
    let session_id = status["cloud"]["session"]["session_id"].as_str().unwrap().to_owned();
    ops.json(Method::POST, &format!("/admin/sessions/{session_id}/revoke"), Some("adm"), None).await.unwrap();
    let out = Command::new(dbmirror).args(["sync", "--until-idle", "--instance"]).arg(&instance).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("dbmirror reconnect"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, after) = run(&["status", "--json"]);
    let after: serde_json::Value = serde_json::from_str(&after).unwrap();
    assert!(after["last_error"]["message"].as_str().unwrap().contains("dbmirror reconnect"), "{after}");
    // `validate` names the session as the problem, and the clock as fine.
    let (code, validated) = run(&["validate"]);
    assert_ne!(code, Some(0));
    assert!(validated.contains("FAIL  cloud session") && validated.contains("ok    clock"), "{validated}");
    let rest = with_browser_approval(&server, &["reconnect"], &instance, "bi").await;
    assert!(rest.iter().any(|l| l.starts_with("Reconnected")), "{rest:?}");
    // A host clock 10 minutes off the cloud's: sync warns (and still works).
    let faults = format!("/admin/sessions/{session_id}/faults");
    ops.json(Method::POST, &faults, Some("adm"), Some(&serde_json::json!({"clock_skew_secs": 600}))).await.unwrap();
    let skewed = Command::new(dbmirror).args(["sync", "--until-idle", "--instance"]).arg(&instance).output().unwrap();
    assert!(skewed.status.success());
    assert!(
        String::from_utf8_lossy(&skewed.stderr).contains("clock is off"),
        "{}",
        String::from_utf8_lossy(&skewed.stderr)
    );
    ops.json(Method::POST, &faults, Some("adm"), Some(&serde_json::json!({}))).await.unwrap();
    assert_eq!(run(&["sync", "--until-idle"]).0, Some(0));
    assert_eq!(run(&["verify"]).0, Some(0));
    // The stop reason was true until a run got through again; not after.
    let (_, after) = run(&["status", "--json"]);
    let after: serde_json::Value = serde_json::from_str(&after).unwrap();
    assert!(after["last_error"].is_null(), "a past stop reason is not shown as the last error: {after}");

    // A new table at the source: `update-schema` creates it now, `sync` fills it.
    ops.json(
        Method::POST,
        "/admin/cust1234/actions/new-table",
        Some("adm"),
        Some(&serde_json::json!({"table": "crm7.service_x", "count": 5})),
    )
    .await
    .unwrap();
    let (code, updated) = run(&["update-schema"]);
    assert_eq!(code, Some(0));
    assert!(updated.contains("new table: crm7.service_x"), "{updated}");
    assert_eq!(run(&["sync", "--until-idle"]).0, Some(0));
    let (code, verified) = run(&["verify"]);
    assert_eq!(code, Some(0), "{verified}");
    assert!(verified.contains("crm7.service_x"));

    // `resync-tables`: with no service running the command does it and returns when done;
    // with one running, the service picks the request up. An unknown table is refused.
    let (code, resynced) = run(&["resync-tables", "person"]);
    assert_eq!(code, Some(0), "{resynced}");
    assert!(resynced.contains("Resync complete: crm7.person"), "{resynced}");
    assert_ne!(run(&["resync-tables", "crm7.nope"]).0, Some(0));
    let mut service = Command::new(dbmirror).args(["sync", "--instance"]).arg(&instance).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (code, requested) = run(&["resync-tables", "crm7.contact"]);
    assert_eq!(code, Some(0), "{requested}");
    assert!(requested.contains("The running dbmirror"), "{requested}");
    // One sync per instance folder: a second one is refused and names the first.
    let second = Command::new(dbmirror).args(["sync", "--until-idle", "--instance"]).arg(&instance).output().unwrap();
    assert!(!second.status.success());
    let why = String::from_utf8_lossy(&second.stderr);
    assert!(why.contains(&format!("another dbmirror (process {})", service.id())), "{why}");
    let contact_state = || {
        let status: serde_json::Value = serde_json::from_str(&run(&["status", "--json"]).1).unwrap();
        let tables = status["tables"].as_array().unwrap().clone();
        tables.into_iter().find(|t| t["table"] == "crm7.contact").unwrap()["state"].as_str().unwrap().to_owned()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while contact_state() != "ready" {
        assert!(std::time::Instant::now() < deadline, "the service did not finish the resync");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let _ = Command::new("kill").arg(service.id().to_string()).status();
    assert!(service.wait().unwrap().success(), "SIGTERM stops the service cleanly");
    assert_eq!(run(&["verify"]).0, Some(0));
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}

/// `dbmirror sync` killed with SIGKILL at random moments during the snapshot and while
/// streaming: every restart resumes from the replica's own offsets and `verify` passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_killed_at_random_moments_converges() {
    for db in tokio::task::block_in_place(crate::support::targets::fresh_databases) {
        let mut settings = serde_json::json!({"DatabaseBatchSize": 500, "CommitIntervalSeconds": 1});
        if db.kind != dbmirror::sink::TargetKind::Sqlite {
            settings["ReplicaDatabase"] = serde_json::json!({"ConnectionString": db.connection_string});
        }
        killed_at_random_moments(&format!("kill-{:?}", db.kind), settings, |_| {}).await;
    }
}

/// The same with the owner's delete modes (SQLite): after the kills, the soft table holds its
/// deleted rows flagged and timed, and the history replays to the table's current rows — no
/// change lost or doubled by a batch redone after a kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_killed_at_random_moments_keeps_soft_deletes_and_history_exact() {
    let settings = serde_json::json!({
        "DatabaseBatchSize": 500, "CommitIntervalSeconds": 1,
        "DeleteModes": { "crm7.person": "Soft", "crm7.contact": "History" }
    });
    killed_at_random_moments("kill-modes", settings, |instance| {
        let replica = rusqlite::Connection::open(instance.join("replica.db")).unwrap();
        let count = |sql: &str| -> i64 { replica.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert!(count("SELECT count(*) FROM crm7_person WHERE _deleted = 1") > 0, "deleted people stay, flagged");
        assert_eq!(count("SELECT count(*) FROM crm7_person WHERE _deleted = 1 AND _deleted_at IS NULL"), 0);
        let latest = "SELECT h.* FROM crm7_contact_history h WHERE NOT EXISTS (SELECT 1 FROM crm7_contact_history n \
             WHERE n.contact_id = h.contact_id AND (n._commit_lsn, n._change_lsn, n._seq) > (h._commit_lsn, h._change_lsn, h._seq))";
        let live = count("SELECT count(*) FROM crm7_contact");
        let alive = count(&format!("SELECT count(*) FROM ({latest}) l WHERE l._op <> 'd'"));
        let same = count(&format!(
            "SELECT count(*) FROM ({latest}) l JOIN crm7_contact c ON c.contact_id = l.contact_id \
             WHERE l._op <> 'd' AND c.name IS l.name AND c.updated IS l.updated"
        ));
        assert!(live > 0);
        assert_eq!((alive, same), (live, live), "the history replays to the table");
    })
    .await;
}

async fn killed_at_random_moments(label: &str, settings: serde_json::Value, check: impl FnOnce(&Path)) {
    let (dir, server, instance, rest) =
        provisioned(label, &["--rows", "400", "--changes-per-sec", "300"], settings, "kill").await;
    let dbmirror = env!("CARGO_BIN_EXE_dbmirror");
    let trust = Trust::Fingerprint(parse_fingerprint(&server.fingerprint).unwrap());
    assert!(rest.iter().any(|l| l.starts_with("Provisioning completed")), "{rest:?}");

    // The replica, as the instance's configuration names it.
    let replica = || {
        let (config, _) = dbmirror::config::Config::load(&instance.join("appsettings.json")).unwrap();
        dbmirror::sink::open(&config.replica.connection_string, dbmirror::sink::SinkOptions::default()).unwrap()
    };
    let mut seed = std::process::id() as u64 | 1;
    for round in 0..6 {
        if round == 2 {
            // Resyncs requested mid-way: the kills also land inside shadow loads and swaps.
            let facts: Vec<(String, dbmirror::state::SessionValue)> = ["crm7.person", "crm7.contact"]
                .iter()
                .map(|t| (format!("resync_request:{t}"), dbmirror::state::SessionValue::Text("1".into())))
                .collect();
            let facts: Vec<(&str, dbmirror::state::SessionValue)> =
                facts.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
            tokio::task::block_in_place(|| replica().write_facts(&facts).unwrap());
        }
        let mut child = Command::new(dbmirror)
            .args(["sync", "--instance"])
            .arg(&instance)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let after = 150 + seed % 900;
        tokio::time::sleep(std::time::Duration::from_millis(after)).await;
        child.kill().unwrap(); // SIGKILL: no cleanup, mid-batch or mid-fetch
        child.wait().unwrap();
        // The lock file is left behind, as after any crash; the next run takes it over.
        assert!(instance.join("dbmirror.lock").exists() || round == 0 || after < 200);
    }
    // Stop the source, let the client catch up once, then compare.
    let ops = HttpClient::new(&server.url, Some(&trust)).unwrap();
    ops.json(Method::POST, "/admin/workload", Some("adm"), Some(&serde_json::json!({"changes_per_sec": 0})))
        .await
        .unwrap();
    let out = Command::new(dbmirror).args(["sync", "--until-idle", "--instance"]).arg(&instance).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let verify = Command::new(dbmirror).args(["verify", "--instance"]).arg(&instance).output().unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    tokio::task::block_in_place(|| {
        let mut replica = replica();
        let session = replica.read_facts().unwrap();
        assert!(dbmirror::sink::shadow::requested(&session).is_empty());
        assert!(dbmirror::sink::shadow::running(&session).is_empty());
        assert!(dbmirror::sink::shadow::shadows(&replica).is_empty(), "no shadow");
    });
    tokio::task::block_in_place(|| check(&instance));
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}

/// Test and Prod side by side: two instance folders, two sessions of one tenant, two services
/// running at once; each keeps its own lock, log, key and replica, and both converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_run_side_by_side() {
    let (dir, server, prod, _) =
        provisioned("sidebyside", &["--rows", "20", "--changes-per-sec", "100"], serde_json::json!({}), "Prod").await;
    let test = named_instance_folder(&dir, "test-instance", serde_json::json!({}));
    let provision = ["provision", "--cloud", server.url.as_str(), "--fingerprint", server.fingerprint.as_str()];
    with_browser_approval(&server, &provision, &test, "Test").await;
    let dbmirror = env!("CARGO_BIN_EXE_dbmirror");
    let mut services: Vec<_> = [&prod, &test]
        .iter()
        .map(|i| Command::new(dbmirror).args(["sync", "--instance"]).arg(i).stderr(Stdio::null()).spawn().unwrap())
        .collect();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let trust = Trust::Fingerprint(parse_fingerprint(&server.fingerprint).unwrap());
    let ops = HttpClient::new(&server.url, Some(&trust)).unwrap();
    ops.json(Method::POST, "/admin/workload", Some("adm"), Some(&serde_json::json!({"changes_per_sec": 0})))
        .await
        .unwrap();
    for service in &mut services {
        let _ = Command::new("kill").arg(service.id().to_string()).status();
        assert!(service.wait().unwrap().success(), "each service stops cleanly on SIGTERM");
    }
    let units = dir.join("units");
    std::fs::create_dir_all(&units).unwrap();
    for (instance, unit) in [(&prod, "dbmirror-prod.service"), (&test, "dbmirror-test.service")] {
        let run = |args: &[&str]| Command::new(dbmirror).args(args).arg("--instance").arg(instance).output().unwrap();
        assert!(run(&["sync", "--until-idle"]).status.success());
        let verified = run(&["verify"]);
        assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stdout));
        assert!(run(&["install", "--unit-dir", units.to_str().unwrap()]).status.success());
        assert!(units.join(unit).exists(), "{unit}");
        assert!(instance.join("logs").read_dir().unwrap().next().is_some(), "each instance logs in its own folder");
    }
    assert_ne!(std::fs::read(prod.join("dbmirror.key")).unwrap(), std::fs::read(test.join("dbmirror.key")).unwrap());
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}

/// An https cloud is trusted like a browser trusts a site: against the operating system's
/// roots, with no fingerprint or CA file given. The system's roots here are the cloud's own
/// certificate (`SSL_CERT_FILE`, which the platform's trust store honours), so the check is
/// real: the same command without it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_cloud_is_verified_against_the_system_roots_by_default() {
    use base64::Engine as _;
    let dir = std::env::temp_dir().join(format!("dbmirror-roots-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("cloud")).unwrap();
    let server = start(&dir.join("cloud"));
    let der = std::fs::read(dir.join("cloud").join("cloud-cert.der")).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    let pem = format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"));
    let roots = dir.join("roots.pem");
    std::fs::write(&roots, pem).unwrap();

    let refused = instance_folder_named(&dir, "refused");
    let out = Command::new(env!("CARGO_BIN_EXE_dbmirror"))
        .args(["provision", "--cloud", server.url.as_str(), "--instance"])
        .arg(&refused)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a self-signed certificate is not among the system's roots: refused");

    let instance = instance_folder_named(&dir, "trusted");
    let provision = ["provision", "--cloud", server.url.as_str()];
    let rest = with_browser_approval_env(&server, &provision, &instance, "roots", &[("SSL_CERT_FILE", &roots)]).await;
    assert!(rest.iter().any(|l| l == "Provisioning completed successfully!"), "{rest:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn instance_folder_named(dir: &Path, name: &str) -> std::path::PathBuf {
    named_instance_folder(dir, name, serde_json::json!({}))
}

/// `provision` into a replica that already holds a session is refused before any grant starts
/// (nothing for an administrator to approve, no orphan session in the cloud) unless `--replace`,
/// which ends the old session in the cloud before the new grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_refuses_a_replica_that_holds_a_session_before_the_grant() {
    let (dir, server, instance, _) = provisioned("again", &["--rows", "3"], serde_json::json!({}), "first").await;
    let out = Command::new(env!("CARGO_BIN_EXE_dbmirror"))
        .args(["provision", "--cloud", server.url.as_str(), "--fingerprint", server.fingerprint.as_str()])
        .arg("--instance")
        .arg(&instance)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success());
    assert!(!stdout.contains("approve code"), "no grant was started: {stdout}");
    assert!(stderr.contains("cust1234") && stderr.contains("--replace"), "{stderr}");
    // `--replace` ends the old session in the cloud first: its Replication ID is free again
    // (the cloud refuses a second live session under one name), and no live orphan is left.
    let rest = with_browser_approval(
        &server,
        &["provision", "--replace", "--cloud", server.url.as_str(), "--fingerprint", server.fingerprint.as_str()],
        &instance,
        "first",
    )
    .await;
    assert!(rest.iter().any(|l| l.contains("Replication ID: first")), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("was ended in the cloud")), "{rest:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A child process killed when this is dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `check` holds, polling every 200 ms, for at most `timeout`.
fn eventually(timeout: std::time::Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !check() {
        assert!(std::time::Instant::now() < deadline, "waited {timeout:?} for {what}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Issue 24 #6: the Operation Center at a partner's size lists tenants a page at a time, pages
/// on, and filters by tenant id, in a real browser against the cloud binary.
#[test]
fn the_operation_center_pages_through_many_tenants() {
    let Some(browser) = crate::support::browser::Browser::start() else { return };
    let dir = std::env::temp_dir().join(format!("dbmirror-ops-paging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let server = start_with(&dir, &["--rows", "1", "--many-tenants", "120"]);
    browser.open(&format!("{}/ops", server.url));
    browser.type_into("#token", "adm");
    browser.click("//form[@id='login']//button");
    let rows = "document.querySelectorAll('#tenants tr')";
    let first = format!("{rows}[0]?.dataset.tenant");
    browser.wait_for(&format!("return {rows}.length === 50"), std::time::Duration::from_secs(20), "a page of 50");
    // `cust1234` and the 120 of `--many-tenants`, in id order.
    assert_eq!(browser.text("#shown"), "tenants 1–50 of 121");
    assert_eq!(browser.run(&format!("return {first}")), "cust1234");
    browser.click("//button[@id='next']");
    browser.wait_for(&format!("return {first} === 't0050'"), std::time::Duration::from_secs(10), "the second page");
    browser.click("//button[@id='next']");
    browser.wait_for(&format!("return {rows}.length === 21"), std::time::Duration::from_secs(10), "the last page");
    assert_eq!(browser.text("#shown"), "tenants 101–121 of 121");
    assert_eq!(browser.run("return String(document.getElementById('next').disabled)"), "true");
    browser.type_into("#tenant-filter", "t011");
    browser.wait_for(&format!("return {rows}.length === 10"), std::time::Duration::from_secs(10), "the filter");
    assert_eq!(browser.text("#shown"), "tenants 1–10 of 10 matching (121 in all)");
    assert_eq!(browser.console_errors(), Vec::<String>::new(), "the Operation Center logs no errors");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 14 #4–#6, in a real (headless) browser against the real binaries: the replica owner's
/// status page lists every table while `sync` runs, with no console errors; the cloud's
/// Operation Center lists the tenant and the session, and its "Resync table" button reaches the
/// running client, which reloads the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_and_the_operation_center_in_a_real_browser() {
    use crate::support::browser::{Browser, free_port};
    let Some(browser) = Browser::start() else { return };
    let (dir, server, instance, _) = provisioned("browser", &["--rows", "3"], serde_json::json!({}), "web").await;
    let port = free_port();
    // Stopped when the test ends, also when an assertion fails.
    let _sync = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_dbmirror"))
            .args(["sync", "--metrics-listen", &format!("127.0.0.1:{port}"), "--instance"])
            .arg(&instance)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let status_json = || {
        let out = Command::new(env!("CARGO_BIN_EXE_dbmirror"))
            .args(["status", "--json", "--instance"])
            .arg(&instance)
            .output();
        serde_json::from_slice::<serde_json::Value>(&out.unwrap().stdout).unwrap_or_default()
    };
    eventually(std::time::Duration::from_secs(60), "the snapshot", || {
        let tables = status_json()["tables"].as_array().cloned().unwrap_or_default();
        tables.len() >= 18 && tables.iter().all(|t| t["state"] == "ready")
    });
    let tables = status_json()["tables"].as_array().unwrap().len();

    // The owner's status page.
    browser.open(&format!("http://127.0.0.1:{port}/status"));
    browser.wait_for(
        &format!("return document.querySelectorAll('#tables tr').length === {tables}"),
        std::time::Duration::from_secs(20),
        "one row per table",
    );
    assert_eq!(browser.text("#tenant"), "cust1234");
    assert_eq!(browser.text("#running"), "running");
    assert!(browser.text("tr[data-table='crm7.person']").contains("ready"), "{}", browser.text("#tables"));
    assert_eq!(browser.text("#refused"), "none");
    // The last hour, drawn by the page: the records this run applied, and a lag known already.
    browser.wait_for(
        "const svgs = document.querySelectorAll('#charts svg'); \
         return svgs.length === 2 && svgs[0].querySelectorAll('rect').length >= 1",
        std::time::Duration::from_secs(20),
        "the charts",
    );
    assert!(browser.text("#charts").contains("records applied per minute"), "{}", browser.text("#charts"));
    assert!(!browser.text("#lag").contains("not known"), "lag: {}", browser.text("#lag"));
    let history = || serde_json::from_str::<serde_json::Value>(&local_get(port, "/history.json").1).unwrap();
    let applied: u64 = history()["records"].as_array().unwrap().iter().filter_map(serde_json::Value::as_u64).sum();
    assert!(applied > 0, "the records this run applied, in the last hour: {}", history());
    // The lag in seconds is charted once known: at the first change with a source time, or
    // once a fetch finds the replica current (its long-poll returns).
    eventually(std::time::Duration::from_secs(90), "a lag in the chart", || {
        history()["lag_seconds"].as_array().unwrap().iter().any(serde_json::Value::is_number)
    });
    assert_eq!(browser.console_errors(), Vec::<String>::new(), "the status page logs no errors");

    // The Operation Center: sign in with the admin token, see the tenant and the session.
    browser.open(&format!("{}/ops", server.url));
    browser.type_into("#token", "adm");
    browser.click("//form[@id='login']//button");
    browser.wait_for(
        "return document.querySelectorAll('#tenants tr').length === 1 && document.querySelectorAll('#sessions tr').length >= 1",
        std::time::Duration::from_secs(20),
        "the tenant and its session",
    );
    assert!(browser.text("#sessions").contains("web"), "{}", browser.text("#sessions"));
    browser.run("document.querySelector(\"tr[data-tenant='cust1234'] select\").value = 'crm7.person'; return true;");
    browser.click("//tr[@data-tenant='cust1234']//button[text()='Resync table']");
    browser.wait_for(
        "return document.getElementById('message').textContent.startsWith('Resync table:')",
        std::time::Duration::from_secs(10),
        "the action's answer",
    );
    // The running client hears of it with its next fetch and resyncs the table.
    let logs = instance.join("logs");
    eventually(std::time::Duration::from_secs(30), "the client to resync crm7.person", || {
        let text: String = std::fs::read_dir(&logs)
            .map(|d| d.flatten().map(|e| std::fs::read_to_string(e.path()).unwrap_or_default()).collect())
            .unwrap_or_default();
        text.contains("operators asked for a fresh snapshot") && text.contains("resync complete")
    });
    browser.wait_for(
        "return !document.getElementById('sessions').textContent.includes('crm7.person')",
        std::time::Duration::from_secs(20),
        "the request to be taken up",
    );
    assert_eq!(browser.console_errors(), Vec::<String>::new(), "the Operation Center logs no errors");
    drop(_sync);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The owner's controls as a customer meets them, with the binaries: `ErrorPolicy: Isolate`
/// and a `BatchCommitted` hook in appsettings.json, a trigger that refuses some rows, `sync`
/// going on anyway, `status` and `errors` naming the refused rows, `retry-errors` after the
/// fix, and `verify` proving the replica equals the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_rows_are_isolated_listed_and_retried_with_the_binaries() {
    let settings = serde_json::json!({
        "Hooks": {"BatchCommitted": [{"Sql": "CREATE TABLE IF NOT EXISTS commits (n INTEGER); INSERT INTO commits VALUES (1)"}]}
    });
    let (dir, server, instance, _) = provisioned("isolate", &["--rows", "40"], settings, "Isolated").await;
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(instance.join("appsettings.json")).unwrap()).unwrap();
    config["ReplicaDatabase"]["ErrorPolicy"] = "Isolate".into();
    std::fs::write(instance.join("appsettings.json"), config.to_string()).unwrap();
    let run = |args: &[&str]| {
        let out =
            Command::new(env!("CARGO_BIN_EXE_dbmirror")).args(args).arg("--instance").arg(&instance).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(run(&["sync", "--until-idle"]).0, Some(0));
    let replica = rusqlite::Connection::open(instance.join("replica.db")).unwrap();
    replica
        .execute_batch(
            "CREATE TRIGGER refuse_u BEFORE UPDATE ON crm7_person WHEN NEW.person_id % 3 = 0 \
               BEGIN SELECT RAISE(ABORT, 'owner refuses this person'); END;",
        )
        .unwrap();
    cli_action(&server, "changes", &["--count", "600"]);
    let (code, _, stderr) = run(&["sync", "--until-idle"]);
    assert_eq!(code, Some(0), "isolated refusals do not stop sync: {stderr}");
    assert!(
        stderr.contains("the replica refused a change") && stderr.contains("owner refuses this person"),
        "{stderr}"
    );
    let (code, status, _) = run(&["status"]);
    assert_eq!(code, Some(0));
    assert!(status.contains("refused changes:") && status.contains("retry-errors"), "{status}");
    let (code, listed, _) = run(&["errors", "--json"]);
    assert_eq!(code, Some(1), "errors exits 1 while refusals exist");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    assert!(!listed.is_empty() && listed.iter().all(|r| r["table"] == "crm7.person"), "{listed:?}");
    let (code, verified, _) = run(&["verify"]);
    assert_eq!(code, Some(1), "the replica misses the refused rows until the fix");
    let person = verified.lines().find(|l| l.starts_with("crm7.person")).unwrap_or_default();
    assert!(person.contains("wait in _ReplicationErrors") && person.contains("retry-errors"), "{verified}");
    let commits: i64 = replica.query_row("SELECT count(*) FROM commits", [], |r| r.get(0)).unwrap();
    assert!(commits >= 2, "the hook ran after the commits");

    replica.execute_batch("DROP TRIGGER refuse_u").unwrap();
    let (code, out, stderr) = run(&["retry-errors"]);
    assert_eq!(code, Some(0), "{out}{stderr}");
    assert!(out.contains(&format!("applied {} refused change(s)", listed.len())), "{out}");
    assert_eq!(run(&["errors"]).0, Some(0));
    let (code, out, _) = run(&["verify"]);
    assert_eq!(code, Some(0), "{out}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An owner's job holds the SQLite replica's write lock for a while: `sync` says within
/// seconds that it waits for the replica (it used to wait half a minute in silence), then
/// applies everything once the lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_sqlite_replica_is_logged_and_waited_out() {
    let (dir, server, instance, _) = provisioned("locked", &["--rows", "3"], serde_json::json!({}), "Locked").await;
    let dbmirror = env!("CARGO_BIN_EXE_dbmirror");
    let folder = instance.clone();
    let sync =
        move || Command::new(dbmirror).args(["sync", "--until-idle", "--instance"]).arg(&folder).output().unwrap();
    assert!(sync().status.success());
    cli_action(&server, "changes", &["--count", "50"]);
    let holder = rusqlite::Connection::open(instance.join("replica.db")).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE; UPDATE \"_ReplicationState\" SET name = name WHERE 0").unwrap();
    let run = std::thread::spawn(sync.clone());
    std::thread::sleep(std::time::Duration::from_secs(9));
    holder.execute_batch("COMMIT").unwrap();
    let out = run.join().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("waiting for the replica database") && said.contains("locked"), "{said}");
    let verified = Command::new(dbmirror).args(["verify", "--instance"]).arg(&instance).output().unwrap();
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stdout));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tenant id that would climb out of the data directory is refused, naming the rule, and
/// nothing is written anywhere (it used to write the topics' files two folders up).
#[test]
fn a_tenant_id_that_is_a_path_is_refused() {
    let dir = std::env::temp_dir().join(format!("dbmirror-cloud-traversal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("a/b")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dbmirror-cloud"))
        .args(["serve", "--listen", "127.0.0.1:0", "--http", "--data-dir", "data", "--tenant", "../../x"])
        .current_dir(dir.join("a/b"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("is not a tenant context id"), "{said}");
    let left: Vec<_> = walk(&dir);
    assert_eq!(left, vec![dir.join("a"), dir.join("a/b")], "nothing was written");
    let _ = std::fs::remove_dir_all(&dir);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        out.push(entry.path());
        if entry.path().is_dir() {
            out.extend(walk(&entry.path()));
        }
    }
    out.sort();
    out
}

/// Partner mode as a partner meets it, with the binaries: one cloud with 31 tenants approving
/// the partner's app, three `dbmirror sync` processes of one partner instance (three folders,
/// one key, one server — a folder of SQLite files here), one of them SIGKILLed mid-run while
/// the tenants keep changing. Every tenant converges (`verify --tenant`), every process took a
/// share, `status` lists every tenant, and no tenant was ever held by two processes at once:
/// each tenant's recorded passes follow one another, the killed process's unfinished pass
/// ending when it was killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_partner_processes_share_the_tenants_and_survive_a_kill() {
    let mut servers = vec![("sqlite", None)];
    if let Some(admin) = tokio::task::block_in_place(crate::support::targets::postgres_admin) {
        servers.push(("postgres", Some(format!("{admin} dbname=postgres"))));
    }
    for (label, server) in servers {
        three_partner_processes(label, server).await;
    }
}

/// The partner's server: a folder of SQLite files (`None`), or a PostgreSQL server.
async fn three_partner_processes(label: &str, server_conn: Option<String>) {
    let dir = std::env::temp_dir().join(format!("dbmirror-partner-bin-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("cloud")).unwrap();
    let server = start_with(
        &dir.join("cloud"),
        &["--rows", "3", "--many-tenants", "30", "--changes-per-sec", "5", "--partner", "acme:partner-pw:*"],
    );
    let server_conn = server_conn.unwrap_or_else(|| format!("Data Source={}", dir.join("mirrors").display()));
    let pattern = format!("b{}_{{contextId}}", std::process::id());
    let databases = dbmirror::partner::databases::Databases::new(&server_conn, &pattern).unwrap();
    let settings = serde_json::json!({
        "Partner": {
            "Id": "acme", "Secret": "env:ACME_SECRET", "Cloud": server.url, "Fingerprint": server.fingerprint,
            "ServerConnectionString": server_conn, "DatabaseName": pattern,
            "Workers": 3, "PollSeconds": 1, "IdleSeconds": 1, "SliceSeconds": 2
        },
        "MaxPollTimeSeconds": 1
    });
    let folders: Vec<_> = (0..3).map(|i| named_instance_folder(&dir, &format!("host{i}"), settings.clone())).collect();
    dbmirror::secrets::SecretKey::load_or_create(&folders[0].join("dbmirror.key")).unwrap();
    for f in &folders[1..] {
        std::fs::copy(folders[0].join("dbmirror.key"), f.join("dbmirror.key")).unwrap();
    }
    let dbmirror = env!("CARGO_BIN_EXE_dbmirror");
    let spawn = |folder: &Path| {
        Command::new(dbmirror)
            .args(["sync", "--instance"])
            .arg(folder)
            .env("ACME_SECRET", "partner-pw")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut services = Services(folders.iter().map(|f| spawn(f)).collect());
    let services = &mut services.0;
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    // Taken before the kill: a pass of another process that starts earlier than this while
    // the killed one's pass is open would be an overlap.
    let killed_ms = dbmirror::clock::now_ms();
    services[1].kill().unwrap(); // SIGKILL: its claims end with its connections and locks
    services[1].wait().unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let trust = Trust::Fingerprint(parse_fingerprint(&server.fingerprint).unwrap());
    let ops = HttpClient::new(&server.url, Some(&trust)).unwrap();
    ops.json(Method::POST, "/admin/workload", Some("adm"), Some(&serde_json::json!({"changes_per_sec": 0})))
        .await
        .unwrap();
    let mut tenants: Vec<String> = (1..=30).map(|i| format!("t{i:04}")).collect();
    tenants.push("cust1234".into());
    // A command on the partner instance, as its operator runs it.
    let cli = |args: &[&str]| {
        Command::new(dbmirror)
            .args(args)
            .arg("--instance")
            .arg(&folders[0])
            .env("ACME_SECRET", "partner-pw")
            .output()
            .unwrap()
    };
    let verify = |ctx: &str| cli(&["verify", "--tenant", ctx]).status.success();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let mut pending = tenants.clone();
    while !pending.is_empty() {
        pending = tokio::task::block_in_place(|| pending.iter().filter(|ctx| !verify(ctx)).cloned().collect());
        assert!(std::time::Instant::now() < deadline, "{label}: not converged: {pending:?}");
    }
    let status = cli(&["status"]);
    let said = String::from_utf8_lossy(&status.stderr).into_owned();
    assert!(!said.contains("NOTICE"), "{label}: a server's notices are not news: {said}");
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.contains("31 tenant(s)") && status.contains("t0017") && status.contains("mirroring"), "{status}");
    let validate = cli(&["validate"]);
    let report = String::from_utf8_lossy(&validate.stdout).into_owned();
    assert!(validate.status.success() && report.contains("31 tenant(s) approve the app"), "{label}: {report}");
    for (i, s) in services.iter_mut().enumerate().filter(|(i, _)| *i != 1) {
        let _ = Command::new("kill").arg(s.id().to_string()).status();
        assert!(s.wait().unwrap().success(), "process {i} stops cleanly on SIGTERM");
    }

    let killed_host = |host: &str| host.ends_with(&format!("/{}", services[1].id()));
    let mut hosts = std::collections::BTreeSet::new();
    let check = || {
        for ctx in &tenants {
            let conn = databases.connection_string(ctx).unwrap();
            let mut replica = dbmirror::sink::open(&conn, dbmirror::sink::SinkOptions::default()).unwrap();
            let passes = dbmirror::partner::passes::read(&replica.read_facts().unwrap());
            assert!(!passes.is_empty(), "{label} {ctx}");
            for pair in passes.windows(2) {
                let end = pair[0].end_ms.or_else(|| killed_host(&pair[0].host).then_some(killed_ms));
                assert!(end.is_some_and(|end| end <= pair[1].start_ms), "{label} {ctx}: passes overlap: {pair:?}");
            }
            hosts.extend(passes.iter().map(|p| p.host.clone()));
        }
    };
    tokio::task::block_in_place(check);
    assert_eq!(hosts.len(), 3, "{label}: every process took a share: {hosts:?}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Child processes killed when the test ends, however it ends (a failed assertion included).
struct Services(Vec<std::process::Child>);

impl Drop for Services {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `GET path` on a local listener: the status and the body.
fn local_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return (0, String::new()) };
    let _ = write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Issue 24 #1, #4 and #5 with the binaries: a partner instance whose tenants are caught up
/// applies a change at one of them (a watched tenant gets a pass when records arrive); its
/// listener serves `/status.json`, `/metrics` and `/healthz` (503 naming the one tenant whose
/// database cannot be opened), the status page lists the failing tenant first and filters in
/// a real browser; the log names the failure once, not once per pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_instance_is_watched_through_its_listener_and_page() {
    let dir = std::env::temp_dir().join(format!("dbmirror-partner-page-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("cloud")).unwrap();
    let server =
        start_with(&dir.join("cloud"), &["--rows", "3", "--many-tenants", "8", "--partner", "acme:partner-pw:*"]);
    // A tenant whose database cannot be opened: a folder where its file would be.
    std::fs::create_dir_all(dir.join("mirrors").join("Mirror_t0003.db")).unwrap();
    let port = crate::support::browser::free_port();
    let settings = serde_json::json!({
        "Partner": {
            "Id": "acme", "Secret": "env:ACME_SECRET", "Cloud": server.url, "Fingerprint": server.fingerprint,
            "ServerConnectionString": format!("Data Source={}", dir.join("mirrors").display()),
            "Workers": 2, "PollSeconds": 1, "IdleSeconds": 1, "SliceSeconds": 2
        },
        "Metrics": {"Listen": format!("127.0.0.1:{port}"), "HealthWindowSeconds": 5}
    });
    let instance = named_instance_folder(&dir, "partner", settings);
    let dbmirror = env!("CARGO_BIN_EXE_dbmirror");
    let _sync = KillOnDrop(
        Command::new(dbmirror)
            .args(["sync", "--instance"])
            .arg(&instance)
            .env("ACME_SECRET", "partner-pw")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let page = || serde_json::from_str::<serde_json::Value>(&local_get(port, "/status.json").1).unwrap_or_default();
    let count = |page: &serde_json::Value, state: &str| {
        page["counts"].as_array().into_iter().flatten().find(|c| c[0] == state).and_then(|c| c[1].as_u64())
    };
    tokio::task::block_in_place(|| {
        eventually(std::time::Duration::from_secs(60), "8 tenants watched and one failing", || {
            let p = page();
            count(&p, "watching") == Some(8) && count(&p, "failing") == Some(1)
        })
    });
    let p = page();
    assert_eq!((p["total"].as_u64(), p["tenants"][0]["tenant"].as_str()), (Some(9), Some("t0003")), "{p}");
    // A change at a caught-up tenant reaches its replica.
    cli_action(&server, "changes", &["--tenant", "t0005", "--count", "5"]);
    let verify = || {
        Command::new(dbmirror)
            .args(["verify", "--tenant", "t0005", "--instance"])
            .arg(&instance)
            .env("ACME_SECRET", "partner-pw")
            .output()
            .unwrap()
            .status
            .success()
    };
    tokio::task::block_in_place(|| eventually(std::time::Duration::from_secs(20), "the change at t0005", verify));
    tokio::task::block_in_place(|| {
        eventually(std::time::Duration::from_secs(20), "/healthz to name the failing tenant", || {
            let (status, body) = local_get(port, "/healthz");
            status == 503 && body.starts_with("1 tenant(s) failing") && body.contains("t0003")
        })
    });
    let (_, metrics) = local_get(port, "/metrics");
    for series in [
        "dbmirror_partner_tenants{state=\"failing\"} 1",
        "dbmirror_partner_tenants{state=\"watching\"} 8",
        "dbmirror_lag_seconds{tenant=\"t0005\"} 0.000",
    ] {
        assert!(metrics.contains(series), "{series} in:\n{metrics}");
    }
    let logs: String = std::fs::read_dir(instance.join("logs"))
        .map(|d| d.flatten().map(|e| std::fs::read_to_string(e.path()).unwrap_or_default()).collect())
        .unwrap_or_default();
    let failures = logs.lines().filter(|l| l.contains("t0003") && l.contains("replication fails")).count();
    assert_eq!(failures, 1, "a failing tenant is logged when it starts failing, not at every pass:\n{logs}");
    // Every tenant's passes feed the instance's one chart: the snapshots and t0005's change.
    let history: serde_json::Value = serde_json::from_str(&local_get(port, "/history.json").1).unwrap();
    let applied: u64 = history["records"].as_array().unwrap().iter().filter_map(serde_json::Value::as_u64).sum();
    assert!(applied >= 8 * 18 * 3 + 5, "records applied in the last hour: {history}");

    if let Some(browser) = crate::support::browser::Browser::start() {
        browser.open(&format!("http://127.0.0.1:{port}/status"));
        let rows = "document.querySelectorAll('#tenants tr')";
        browser.wait_for(&format!("return {rows}.length === 9"), std::time::Duration::from_secs(20), "9 tenants");
        assert_eq!(browser.run(&format!("return {rows}[0].dataset.tenant")), "t0003", "problems first");
        assert!(browser.text("#tenants tr:first-child").contains("failing"), "{}", browser.text("#tenants"));
        browser.type_into("#filter", "t0005");
        browser.wait_for(
            &format!("return {rows}.length === 1 && {rows}[0].dataset.tenant === 't0005'"),
            std::time::Duration::from_secs(10),
            "the filter",
        );
        browser.click("//div[@id='counts']/button[@data-state='failing']");
        browser.wait_for(&format!("return {rows}.length === 0"), std::time::Duration::from_secs(10), "both filters");
        browser.wait_for(
            "return document.querySelectorAll('#charts svg')[0]?.querySelectorAll('rect').length >= 1",
            std::time::Duration::from_secs(20),
            "the instance's chart of records applied",
        );
        assert_eq!(browser.console_errors(), Vec::<String>::new(), "the partner page logs no errors");
    }
    drop(_sync);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
