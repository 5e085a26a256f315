//! The commands that create or repair the session: `provision` (device grant through an
//! administrator's browser) and `reconnect` (the same session re-authorized).

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use dbmirror::clock::now_ms;
use dbmirror::pipeline::{refresh_tokens, store_tokens};
use dbmirror::protocol::Grant;
use dbmirror::source::client::HttpClient;
use dbmirror::source::dispatcher::{Dispatcher, GrantState};
use dbmirror::source::replication::{SessionInfo, TokenPair};
use dbmirror::source::tls::Trust;

use crate::instance::Instance;

/// Where to provision and how: the cloud, how it is trusted, and whether a session the
/// replica already holds may be replaced.
pub struct ProvisionArgs<'a> {
    pub cloud: &'a str,
    pub fingerprint: Option<&'a str>,
    pub ca_file: Option<&'a Path>,
    pub replace: bool,
}

/// `provision`: the device grant, then the session and sealed tokens stored in the replica.
///
/// A replica that already holds a session is refused before the grant starts (so no
/// administrator approves a session that is then thrown away), unless `replace` is given.
pub fn provision(instance: &Instance, args: &ProvisionArgs<'_>) -> Result<()> {
    let ProvisionArgs { cloud, fingerprint, ca_file, replace } = *args;
    let mut state = instance.open()?;
    let held = SessionInfo::from_facts(&state.read_facts()?);
    if let Some(existing) = &held
        && !replace
    {
        bail!(
            "this replica already holds tenant {}'s session (Replication ID {}). To mirror another tenant, use an \
             empty database; to provision the same tenant again, run `provision --replace` (the old session is \
             ended in the cloud first); after a revocation, `reconnect` keeps the session",
            existing.tenant_context_id,
            existing.replication_id
        );
    }
    let trust = Trust::from_settings(fingerprint, ca_file)?;
    if held.is_some() {
        end_held_session(instance, state.as_mut());
    }
    let http = HttpClient::new(cloud, trust.as_ref())?;
    let grant = device_grant(http, None)?;
    let session = grant.session.as_ref().context("the cloud's grant has no session")?;
    let info = SessionInfo::from_reply(session, cloud);
    let tokens = TokenPair::issued(grant.tokens, now_ms());
    if let Some(existing) = held
        && existing.tenant_context_id != info.tenant_context_id
    {
        bail!(
            "this replica already holds tenant {}'s session ({}); use an empty database for tenant {}",
            existing.tenant_context_id,
            existing.replication_id,
            info.tenant_context_id
        );
    }
    let mut facts = info.to_facts();
    facts.extend(trust.as_ref().and_then(Trust::fact));
    // One transaction: an interrupted provision never leaves a session without its tokens.
    facts.extend(dbmirror::pipeline::token_facts(&instance.key, &tokens));
    state.write_facts(&facts)?;
    println!("Provisioning completed successfully!");
    println!("Tenant ID:      {}", info.tenant_context_id);
    println!("Replication ID: {}", info.replication_id);
    println!("Service URL:    {}/api/v1/replication/{}", info.cloud_url, info.tenant_context_id);
    Ok(())
}

/// Ends the session a replica holds before it is replaced, so no live session is left behind
/// in the cloud (and its Replication ID is free for the new one). Best effort: a session that
/// cannot be ended (revoked already, the cloud unreachable) is reported, and an operator can
/// revoke it.
fn end_held_session(instance: &Instance, state: &mut dyn dbmirror::sink::Replica) {
    let session_id = state.read_facts().ok().and_then(|f| SessionInfo::from_facts(&f)).map(|i| i.session_id);
    let ended = instance.replication(state).and_then(|mut replication| {
        if replication.needs_refresh() {
            refresh_tokens(&mut replication, state, &instance.key, &AtomicBool::new(false))?;
        }
        Ok(replication.end_session()?)
    });
    let id = session_id.unwrap_or_default();
    match ended {
        Ok(()) => println!("The replaced session {id} was ended in the cloud."),
        Err(e) => eprintln!(
            "warning: the replaced session {id} could not be ended ({}); an operator can revoke it",
            crate::instance::describe(&e)
        ),
    }
}

/// Opens the approval page when this host has a desktop; on a server the printed URL is
/// opened on any other machine.
fn open_browser(uri: &str) {
    let command = if cfg!(windows) {
        Some(("cmd", vec!["/C", "start", "", uri]))
    } else if cfg!(target_os = "macos") {
        Some(("open", vec![uri]))
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some() {
        Some(("xdg-open", vec![uri]))
    } else {
        None
    };
    if let Some((program, args)) = command {
        let _ = std::process::Command::new(program)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
}

/// The device grant: start a request, show where to approve it, poll until decided.
fn device_grant(http: HttpClient, session_id: Option<&str>) -> Result<Grant> {
    let dispatcher = Dispatcher::new(http)?;
    let request = dispatcher.start(session_id)?;
    let uri = &request.verification_uri_complete;
    println!("Open {uri} in a browser, sign in as an administrator and approve code {}.", request.user_code);
    open_browser(uri);
    let interval = Duration::from_secs(request.interval.max(1));
    loop {
        std::thread::sleep(interval);
        match dispatcher.poll(&request.device_code).context("the administrator's approval did not complete")? {
            GrantState::Pending => {}
            GrantState::Granted(grant) => return Ok(*grant),
        }
    }
}

/// `reconnect`: re-authorizes the stored session (after revocation or lost tokens) through
/// the browser, without a new session or a new snapshot.
pub fn reconnect(instance: &Instance) -> Result<()> {
    // Only the session and its trust setting are needed: the stored tokens may be revoked or
    // unreadable (another host's key).
    let mut state = instance.open()?;
    let session = state.read_facts()?;
    let info = SessionInfo::from_facts(&session).context("the replica holds no session: run `dbmirror provision`")?;
    let http = HttpClient::new(&info.cloud_url, Trust::from_facts(&session)?.as_ref())?;
    let grant = device_grant(http, Some(&info.session_id))?;
    store_tokens(state.as_mut(), &instance.key, &TokenPair::issued(grant.tokens, now_ms()))?;
    println!("Reconnected: session {} of tenant {} has new tokens.", info.replication_id, info.tenant_context_id);
    Ok(())
}
