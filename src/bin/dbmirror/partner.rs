//! A partner instance (a `Partner` section in `appsettings.json`): `sync` mirrors every
//! approving tenant (see `dbmirror::partner`), `status` shows one line per tenant, and
//! `--tenant <ctx>` turns any single-tenant command on that tenant's database.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context as _, Result, bail};
use dbmirror::partner::databases::Databases;
use dbmirror::partner::{Partner, passes};
use dbmirror::status::{StatusReport, TenantLine};

use crate::instance::{Instance, InstanceLock};

/// Runs the partner instance until `stop` is set.
pub fn run(instance: &Instance, until_idle: bool, stop: Arc<AtomicBool>) -> Result<()> {
    if until_idle {
        bail!(
            "a partner instance mirrors its tenants until stopped: `sync --until-idle` is for one tenant (`--tenant`)"
        );
    }
    let config = instance.config.partner.clone().context("not a partner instance")?;
    let _guard = InstanceLock::take(&instance.lock_path())?;
    let partner = Partner::new(config, instance.key.clone(), instance.config.sync_options(), instance.options())?;
    tracing::info!(host = partner.host(), "partner instance: mirroring every tenant that approves the app");
    if let Some(address) = &instance.config.metrics.listen {
        let pages = dbmirror::metrics::serve::Pages {
            metrics: partner.board(),
            window: instance.config.metrics.health_window,
            owner: Some(Arc::new(dbmirror::partner::page::PartnerPage::new(partner.board()))),
        };
        let bound = dbmirror::metrics::serve::start(address, pages)?;
        tracing::info!("the partner instance's status page: http://{bound}/status");
    }
    partner.run(stop)?;
    Ok(())
}

fn databases(instance: &Instance) -> Result<Databases> {
    let config = instance.config.partner.as_ref().context("not a partner instance")?;
    Ok(Databases::new(&config.server, &config.database_name)?)
}

/// `validate` of a partner instance: the server and the login's right to create databases,
/// and the partner's credentials (the tenants approving now).
pub fn validate(instance: &Instance, check: &mut dyn FnMut(&str, Result<String>)) {
    let config = match instance.config.partner.as_ref() {
        Some(c) => c,
        None => return,
    };
    match databases(instance) {
        Ok(dbs) => check("partner server", dbs.check_rights().map_err(Into::into)),
        Err(e) => check("partner server", Err(e)),
    }
    check("partner API", approving(config).map(|n| format!("{n} tenant(s) approve the app")));
}

/// How many tenants approve the app now, asking the partner API with the configured credentials.
fn approving(config: &dbmirror::partner::PartnerConfig) -> Result<usize> {
    let http = dbmirror::source::client::HttpClient::new(&config.cloud_url, config.trust.as_ref())?;
    let api = dbmirror::source::partner::PartnerApi::new(http, &config.id, config.secret.expose())?;
    Ok(api.tenants()?.len())
}

/// `status` of a partner instance: one line per tenant with a database on the server.
pub fn status(instance: &Instance, as_json: bool) -> Result<()> {
    let databases = databases(instance)?;
    let mut lines = Vec::new();
    for ctx in databases.existing()? {
        let tenant = instance.for_tenant(&ctx)?;
        let line = tenant.open_existing().and_then(|mut replica| {
            let report = StatusReport::read(replica.as_mut(), false)?;
            let pass = passes::summary(&replica.read_facts()?);
            Ok(TenantLine::of(&ctx, Some(databases.name(&ctx)?), &report, pass))
        });
        lines.push(line.unwrap_or_else(|e| TenantLine::unreadable(&ctx, crate::instance::describe(&e))));
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
    } else {
        println!("{}", TenantLine::text(&lines));
    }
    Ok(())
}
