//! The binary on an instance with no cloud behind it. Secrets never appear in what it prints or
//! logs: a password planted in every connection-string form (ADO for SQL Server, libpq keywords
//! and URL for PostgreSQL) is searched for in the stdout, stderr and log files of the commands
//! that name the replica. And the commands that only look create nothing in the folder.

use std::path::Path;
use std::process::Command;

use proptest::prelude::*;

const PLANTED: &str = "Pl4ntedS3cret";

fn run(instance: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dbmirror"))
        .args(args)
        .arg("--instance")
        .arg(instance)
        .env("RUST_LOG", "debug")
        .env("DBMIRROR_TEST_PARTNER_SECRET", "partner-secret-value")
        .output()
        .unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A fresh instance folder `dir` whose `appsettings.json` names `connection_string`.
fn instance_folder(dir: &Path, connection_string: &str) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    instance_settings(dir, &serde_json::json!({"ReplicaDatabase": {"ConnectionString": connection_string}}));
}

fn instance_settings(dir: &Path, settings: &serde_json::Value) {
    std::fs::write(dir.join("appsettings.json"), settings.to_string()).unwrap();
}

fn logs(instance: &Path) -> String {
    let Ok(entries) = std::fs::read_dir(instance.join("logs")) else { return String::new() };
    entries.flatten().map(|e| std::fs::read_to_string(e.path()).unwrap_or_default()).collect()
}

/// The planted secret inside `pw`, written into every connection-string syntax of every
/// target: as the syntax quotes it, and as a user might paste it unquoted (which a driver may
/// refuse: the strings that fail to parse are the ones error messages quote).
fn forms(pw: &str) -> Vec<String> {
    let libpq_quoted = format!("'{}'", pw.replace('\\', "\\\\").replace('\'', "\\'"));
    let libpq_escaped: String = pw.chars().flat_map(|c| if c == ' ' { vec!['\\', ' '] } else { vec![c] }).collect();
    let percent: String = pw
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    let braced = format!("{{{}}}", pw.replace('}', "}}"));
    let quoted = format!("\"{}\"", pw.replace('"', "\"\""));
    let pg = "host=127.0.0.1 port=1 user=mirror";
    let ms = "Server=tcp:127.0.0.1,1;Database=x;User Id=sa";
    vec![
        format!("{pg} password={pw} dbname=x connect_timeout=2"),
        format!("{pg} password={libpq_quoted} dbname=x connect_timeout=2"),
        format!("{pg} password={libpq_escaped} dbname=x"),
        format!("{pg} sslpassword={pw} dbname=x"),
        format!("postgres://mirror:{pw}@127.0.0.1:1/x?connect_timeout=2"),
        format!("postgres://mirror:{percent}@127.0.0.1:1/x?connect_timeout=2"),
        format!("postgres://mirror@127.0.0.1:1/x?password={percent}&connect_timeout=2"),
        format!("{ms};Password={pw};Encrypt=false"),
        format!("{ms};Password={braced};Encrypt=false"),
        format!("{ms};Password={quoted};Encrypt=false"),
        format!("Data Source=x.db;Password={pw}"),
    ]
}

/// The secret must not show; the commands still say which replica they mean.
fn assert_hidden(instance: &Path, what: &str, commands: &[&[&str]]) -> Result<(), TestCaseError> {
    for args in commands {
        let out = run(instance, args);
        prop_assert!(!out.contains(PLANTED), "`{}` printed the secret for {what}:\n{out}", args.join(" "));
    }
    let logged = logs(instance);
    prop_assert!(!logged.contains(PLANTED), "the log holds the secret for {what}:\n{logged}");
    Ok(())
}

const COMMANDS: &[&[&str]] = &[&["validate"], &["status"], &["info"], &["verify"], &["sync", "--until-idle"]];

fn around() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-z0-9 '\"{};=\\\\@/?&:]{0,6}").unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// The redaction itself, over many more passwords than the binaries can be run for: no
    /// form of any of them shows the planted secret, and a text quoting the whole string
    /// (as a driver's message might) is scrubbed of it.
    #[test]
    fn redaction_hides_the_planted_password_in_every_form(before in around(), after in around()) {
        let pw = format!("{before}{PLANTED}{after}");
        for conn in forms(&pw) {
            let shown = dbmirror::redact::connection_string(&conn);
            prop_assert!(!shown.contains(PLANTED), "{conn} shown as {shown}");
            let message = format!("cannot parse `{conn}`");
            let scrubbed = dbmirror::redact::scrub(&message, &conn);
            prop_assert!(!scrubbed.contains(PLANTED), "{conn} scrubbed as {scrubbed}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// A password with quotes, braces, semicolons, spaces, backslashes and `=` around the
    /// planted secret, in every syntax (quoted as it should be, and pasted as it is), as the
    /// replica's connection string and as a partner's server: not one command prints it, not
    /// one log line holds it.
    #[test]
    fn a_planted_password_never_appears_in_output_or_logs(before in around(), after in around()) {
        let pw = format!("{before}{PLANTED}{after}");
        let dir = std::env::temp_dir().join(format!("dbmirror-secrets-{}", std::process::id()));
        for (i, connection_string) in forms(&pw).iter().enumerate() {
            let instance = dir.join(i.to_string());
            instance_folder(&instance, connection_string);
            assert_hidden(&instance, connection_string, COMMANDS)?;
            let partner = serde_json::json!({"Partner": {
                "Id": "acme", "Secret": "env:DBMIRROR_TEST_PARTNER_SECRET", "Cloud": "https://127.0.0.1:1",
                "ServerConnectionString": connection_string,
            }});
            instance_settings(&instance, &partner);
            assert_hidden(&instance, &format!("the partner server {connection_string}"), &COMMANDS[..3])?;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
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
