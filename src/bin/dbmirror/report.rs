//! The commands that look without changing anything: `info`, `status`, `verify`, `validate`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use dbmirror::clock::now_ms;
use dbmirror::pipeline::refresh_tokens;
use dbmirror::source::replication::SessionInfo;
use dbmirror::state::SessionValue;
use dbmirror::status::{CloudView, StatusReport};
use std::sync::atomic::AtomicBool;

use crate::instance::Instance;
use crate::instance::InstanceLock;

/// `info`: the session, token expiry, URLs and client version (never the tokens).
pub fn info(instance: &Instance) -> Result<()> {
    let mut state = instance.open_existing()?;
    let session = state.read_facts()?;
    let info =
        SessionInfo::from_facts(&session).context("the replica holds no session: run `dbmirror provision` first")?;
    let expires = match session.get("access_expires_at_ms") {
        Some(SessionValue::Text(t)) => t.parse::<i64>().unwrap_or(0),
        _ => 0,
    };
    println!("Tenant ID:        {}", info.tenant_context_id);
    println!("Replication ID:   {}", info.replication_id);
    println!("Session ID:       {}", info.session_id);
    println!("Cloud URL:        {}", info.cloud_url);
    println!("Service URL:      {}/api/v1/replication/{}", info.cloud_url, info.tenant_context_id);
    println!(
        "Access token:     {}",
        if expires > now_ms() {
            format!("valid for {} s", (expires - now_ms()) / 1000)
        } else {
            "expired (refreshed on the next request)".into()
        }
    );
    println!("Client version:   {}", env!("CARGO_PKG_VERSION"));
    println!("Replica:          {}", dbmirror::redact::connection_string(&instance.config.replica.connection_string));
    Ok(())
}

/// `status`: tables, rows and state; offsets; lag; the last error; the cloud's view.
pub fn status(instance: &Instance, as_json: bool) -> Result<()> {
    let mut state = instance.open_existing()?;
    let running = InstanceLock::holder(&instance.lock_path()).is_some();
    let mut report = StatusReport::read(state.as_mut(), running)?;
    report.cloud = Some(cloud_view(instance, state.as_mut()));
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.text());
    }
    Ok(())
}

/// The cloud's own view of the session (`GET status`), or the reason it is not available:
/// optional, so local facts are shown even when the cloud is unreachable or the session revoked.
fn cloud_view(instance: &Instance, state: &mut dyn dbmirror::sink::Replica) -> CloudView {
    let mut replication = match instance.replication(state) {
        Ok(replication) => replication,
        Err(e) => return CloudView::Error { error: e.to_string() },
    };
    let refreshed = if replication.needs_refresh() {
        refresh_tokens(&mut replication, state, &instance.key, &AtomicBool::new(false)).map_err(|e| e.to_string())
    } else {
        Ok(())
    };
    match refreshed.and_then(|()| replication.status().map_err(|e| e.to_string())) {
        Ok(status) => CloudView::Reply(Box::new(status)),
        Err(error) => CloudView::Error { error },
    }
}

/// `errors`: the changes the replica refused, kept in `_ReplicationErrors`.
pub fn errors(instance: &Instance, as_json: bool) -> Result<usize> {
    let rows = instance.open_existing()?.read_refused()?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(rows.len());
    }
    if rows.is_empty() {
        println!("no refused changes");
    }
    for r in &rows {
        println!("#{} {} {} key {} at {}\n  {}", r.id, r.table, r.operation, r.key, r.refused_at, r.error);
    }
    Ok(rows.len())
}

/// `retry-errors`: applies the refused changes again; returns how many are still refused.
pub fn retry_errors(instance: &Instance) -> Result<usize> {
    let mut replica = instance.open_existing()?;
    let outcome = dbmirror::pipeline::refused::retry(replica.as_mut())?;
    println!("applied {} refused change(s)", outcome.applied);
    for r in &outcome.forgotten {
        println!("forgot #{} ({} key {}): superseded, or its table is no longer replicated", r.id, r.table, r.key);
    }
    for (r, error) in &outcome.still_refused {
        println!("still refused #{} ({} key {}): {error}", r.id, r.table, r.key);
    }
    Ok(outcome.still_refused.len())
}

/// How long `verify` waits for tables that changed at the source to be applied, while a
/// `sync` is running (without one, they cannot catch up).
const VERIFY_PATIENCE: Duration = Duration::from_secs(60);

/// `verify`: every table against the cloud's ground truth, exactly even while the tenant
/// changes and `sync` runs (see [`dbmirror::verify`]); false unless every table is equal or
/// skipped on purpose.
pub fn verify(instance: &Instance) -> Result<bool> {
    let mut state = instance.open_existing()?;
    let mut replication = instance.replication(state.as_mut())?;
    if replication.needs_refresh() {
        refresh_tokens(&mut replication, state.as_mut(), &instance.key, &AtomicBool::new(false))?;
    }
    let running = InstanceLock::holder(&instance.lock_path()).is_some();
    let patience = if running { VERIFY_PATIENCE } else { Duration::ZERO };
    let truth = || replication.ground_truth().map_err(|e| e.to_string());
    let checks = dbmirror::verify::verify_live(state.as_mut(), truth, &instance.options(), patience)?;
    let mut held = std::collections::BTreeMap::<String, usize>::new();
    for row in state.read_refused()? {
        *held.entry(row.table).or_default() += 1;
    }
    let applied = state.offsets()?;
    let past_retention =
        replication.status().is_ok_and(|cloud| !dbmirror::status::past_retention(&applied, &cloud).is_empty());
    print_checks(&checks, &Notes { running, held, past_retention });
    Ok(checks.iter().all(|c| c.equal))
}

/// `validate`: checks configuration, the replica connection, the stored session, the cloud
/// (reachable, session valid with the stored tokens) and the clock. It changes nothing, except
/// refreshing an expired access token as `sync` would. Returns whether everything passed.
pub fn validate(dir: &Path) -> Result<bool> {
    let mut ok = true;
    let mut check = |name: &str, result: Result<String>| match result {
        Ok(detail) => println!("ok    {name}: {detail}"),
        Err(e) => {
            ok = false;
            println!("FAIL  {name}: {}", crate::instance::describe(&e));
        }
    };
    let instance = match Instance::load_to_look(dir) {
        Ok(i) => i,
        Err(e) => {
            check("configuration", Err(e));
            return Ok(false);
        }
    };
    check(
        "configuration",
        Ok(format!(
            "{} (replica {})",
            dir.join("appsettings.json").display(),
            dbmirror::redact::connection_string(&instance.config.replica.connection_string)
        )),
    );
    if instance.config.partner.is_some() {
        crate::partner::validate(&instance, &mut check);
        return Ok(ok);
    }
    let mut state = match instance.open_existing() {
        Ok(s) => s,
        Err(e) => {
            check("replica connection", Err(e));
            return Ok(false);
        }
    };
    check("replica connection", Ok(format!("{} replicated tables", state.tables().len())));
    check(
        "replica permissions",
        state
            .check_writable()
            .map(|()| "may create, fill and drop tables (checked, rolled back)".into())
            .map_err(Into::into),
    );
    let mut replication = match instance.replication(state.as_mut()) {
        Ok(r) => r,
        Err(e) => {
            check("session", Err(e));
            return Ok(false);
        }
    };
    let started = now_ms();
    if replication.needs_refresh() {
        // An expired access token is normal between runs; refreshing is what `sync` would do.
        let refreshed = refresh_tokens(&mut replication, state.as_mut(), &instance.key, &AtomicBool::new(false));
        check("token refresh", refreshed.map(|()| "new tokens issued and stored".to_owned()).map_err(Into::into));
    }
    let session = replication.session();
    check(
        "cloud session",
        session.map(|s| format!("tenant {} as {}", s.tenant_context_id, s.replication_id)).map_err(Into::into),
    );
    let skew = replication.server_time().map(|server_ms| {
        let local = (started + now_ms()) / 2;
        (server_ms - local) / 1000
    });
    check(
        "clock",
        skew.map_err(anyhow::Error::from).and_then(|s| {
            if s.abs() > 120 {
                bail!("this host's clock is {s} s off the cloud's; tokens will be refused: synchronize the time")
            }
            Ok(format!("within {} s of the cloud", s.abs().max(1)))
        }),
    );
    Ok(ok)
}

/// The `verify` table: source and replica rows per table, and whether they are equal.
/// What `verify` knows besides the comparison, for its advice.
#[derive(Default)]
pub struct Notes {
    /// A `sync` is running (a table behind is being caught up).
    pub running: bool,
    /// Changes per table held in `_ReplicationErrors`.
    pub held: std::collections::BTreeMap<String, usize>,
    /// The replica is past the cloud's retention: a plain `sync` cannot catch it up.
    pub past_retention: bool,
}

pub fn print_checks(checks: &[dbmirror::verify::TableCheck], notes: &Notes) {
    use dbmirror::verify::Verdict;
    println!("{:<32} {:>10} {:>10}  verify", "table", "source", "replica");
    for c in checks {
        let n = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
        let held = notes.held.get(&c.table).map(|k| {
            format!(
                "DIFFERENT: {k} change(s) the replica refused wait in _ReplicationErrors (`dbmirror errors` lists \
                 them; fix the cause, then `dbmirror retry-errors`)"
            )
        });
        let verdict = match c.verdict {
            Verdict::Equal => "ok",
            Verdict::Skipped => "skipped (SkipTables)",
            Verdict::Behind | Verdict::Different if notes.past_retention => {
                "behind, past the cloud's retention: run `dbmirror sync --auto-resync` to reload every table"
            }
            Verdict::Behind if notes.running => "behind: changed at the source, not applied yet (sync is catching up)",
            Verdict::Behind => "behind: changed at the source since the last sync; run `dbmirror sync`",
            Verdict::Failed => "FAILED: the replica cannot hold it (see `dbmirror status`)",
            Verdict::Different => held.as_deref().unwrap_or("DIFFERENT"),
            Verdict::Masked => "ok, rows counted (columns excluded or masked by Columns)",
        };
        println!("{:<32} {:>10} {:>10}  {verdict}", c.table, n(c.source_rows), n(c.replica_rows));
    }
}
