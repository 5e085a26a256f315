//! The binary on an instance with no cloud behind it. Secrets never appear in what it prints or
//! logs: a password planted in every connection-string form (ADO for SQL Server, libpq keywords
//! and URL for PostgreSQL) is searched for in the stdout, stderr and log files of the commands
//! that name the replica. And the commands that only look create nothing in the folder.

use std::path::Path;
use std::process::Command;

const PLANTED: &str = "Pl4ntedS3cret";

fn run(instance: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dbmirror"))
        .args(args)
        .arg("--instance")
        .arg(instance)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A fresh instance folder `dir` whose `appsettings.json` names `connection_string`.
fn instance_folder(dir: &Path, connection_string: &str) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let config = serde_json::json!({"ReplicaDatabase": {"ConnectionString": connection_string}});
    std::fs::write(dir.join("appsettings.json"), config.to_string()).unwrap();
}

fn logs(instance: &Path) -> String {
    let Ok(entries) = std::fs::read_dir(instance.join("logs")) else { return String::new() };
    entries.flatten().map(|e| std::fs::read_to_string(e.path()).unwrap_or_default()).collect()
}

#[test]
fn a_planted_password_never_appears_in_output_or_logs() {
    // Nothing listens on port 1: every command fails to reach the replica and says so.
    let forms = [
        format!("host=127.0.0.1 port=1 user=mirror password={PLANTED} dbname=x connect_timeout=2"),
        format!("host=127.0.0.1 port=1 user=mirror password='{PLANTED} with spaces' dbname=x"),
        format!("postgres://mirror:{PLANTED}@127.0.0.1:1/x?connect_timeout=2"),
        format!("Server=tcp:127.0.0.1,1;Database=x;User Id=sa;Password={PLANTED};Encrypt=false"),
    ];
    let dir = std::env::temp_dir().join(format!("dbmirror-secrets-{}", std::process::id()));
    for (i, connection_string) in forms.iter().enumerate() {
        let instance = dir.join(i.to_string());
        instance_folder(&instance, connection_string);
        let mut printed = String::new();
        for args in [&["validate"][..], &["status"], &["info"], &["verify"], &["sync", "--until-idle"]] {
            let out = run(&instance, args);
            assert!(!out.contains(PLANTED), "`{}` printed the password for {connection_string}:\n{out}", args[0]);
            printed.push_str(&out);
        }
        assert!(printed.contains("***") || printed.contains("replica"), "the commands name the replica: {printed}");
        let logged = logs(&instance);
        assert!(!logged.contains(PLANTED), "the log holds the password for {connection_string}:\n{logged}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fatal reason is written to the instance's log file in the format the operator chose:
/// with `--log-format json`, every line of the file is a JSON object.
#[test]
fn the_log_file_follows_the_chosen_format() {
    let instance = std::env::temp_dir().join(format!("dbmirror-logformat-{}", std::process::id()));
    instance_folder(&instance, "host=127.0.0.1 port=1 user=u dbname=x connect_timeout=2");
    let out = Command::new(env!("CARGO_BIN_EXE_dbmirror"))
        .args(["--log-format", "json", "sync", "--until-idle", "--instance"])
        .arg(&instance)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let logged = logs(&instance);
    assert!(!logged.trim().is_empty(), "the reason is in the log file");
    for line in logged.lines().filter(|l| !l.trim().is_empty()) {
        assert!(serde_json::from_str::<serde_json::Value>(line).is_ok(), "not JSON: {line}");
    }
    let _ = std::fs::remove_dir_all(&instance);
}

/// `validate`, `status`, `verify` and `info` on a folder that was configured but never
/// provisioned: each says what to do, and the folder still holds only `appsettings.json` (no
/// replica file, no key, no log folder).
#[test]
fn looking_at_an_unprovisioned_instance_creates_nothing() {
    let instance = std::env::temp_dir().join(format!("dbmirror-look-{}", std::process::id()));
    instance_folder(&instance, &format!("Data Source={}", instance.join("replica.db").display()));
    for args in [&["validate"][..], &["status"], &["verify"], &["info"]] {
        let out = run(&instance, args);
        assert!(out.contains("`dbmirror provision` creates it"), "`{}` says what to do:\n{out}", args[0]);
        let left: Vec<_> = std::fs::read_dir(&instance).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("appsettings.json")], "after `{}`", args[0]);
    }
    let _ = std::fs::remove_dir_all(&instance);
}
