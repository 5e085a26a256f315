//! Lifecycle actions operators (and tests) fire: offset resets after a restore or a resume,
//! suspensions, and the workload's random changes.

use super::*;

impl State {
    /// Resets every session of a tenant to a fresh full snapshot (`reset-offsets`, or a
    /// source restore): a new snapshot is appended and sessions must continue from its start.
    pub fn reset_offsets(&mut self, ctx: &str, now_ms: i64, restore: bool) -> Result<Json, ApiError> {
        if restore && let Some(journal) = &mut self.journal {
            journal.record(ctx, now_ms, &TenantOp::Restore)?;
        }
        let (tenant, log) = self.tenant_mut(ctx)?;
        let topic = tenant.cdc_topic();
        let starts = if restore {
            tenant.restore(log, now_ms)?
        } else {
            let starts = log.ends(&topic);
            let ids: Vec<TableId> = tenant.schemas().iter().map(|s| s.id.clone()).collect();
            tenant.resnapshot(log, now_ms, &ids)?;
            starts
        };
        let reset: BTreeMap<(String, i32), i64> = starts.iter().map(|(p, o)| ((topic.clone(), *p), *o)).collect();
        for s in self.sessions.values_mut().filter(|s| s.ctx == ctx) {
            s.reset = Some(reset.clone());
            s.reset_epoch += 1;
            s.committed.retain(|(t, _), _| *t != topic);
        }
        self.last_reset.insert(ctx.to_owned(), reset.clone());
        tracing::info!(tenant = ctx, restore, "offsets reset to a fresh snapshot");
        self.save();
        Ok(json!({"positions": to_list(&reset)}))
    }

    /// Suspends or resumes a tenant; resuming resets offsets to a fresh snapshot.
    pub fn suspend(&mut self, ctx: &str, suspended: bool, now_ms: i64) -> Result<Json, ApiError> {
        self.tenant(ctx)?;
        self.tenants.get_mut(ctx).expect("checked").1 = suspended;
        tracing::info!(tenant = ctx, suspended, "tenant suspension changed");
        self.save();
        if suspended { Ok(json!({"suspended": true})) } else { self.reset_offsets(ctx, now_ms, false) }
    }

    /// Applies `count` random changes to every running tenant.
    pub fn tick(&mut self, count: usize, now_ms: i64) -> Result<(), ApiError> {
        let running: Vec<String> = self.tenants.iter().filter(|(_, (_, s))| !*s).map(|(k, _)| k.clone()).collect();
        for ctx in running {
            self.run(&ctx, &TenantOp::Change { count }, now_ms)?;
        }
        Ok(())
    }
}

/// One tenant as the Operation Center shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TenantView {
    /// Context id.
    pub tenant: String,
    /// Suspended by an operator.
    pub suspended: bool,
    /// Published tables.
    pub tables: Vec<String>,
    /// The next offset to be written, per CDC partition.
    pub ends: Vec<i64>,
}

/// One session as the Operation Center shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionView {
    /// Session id.
    pub session_id: String,
    /// Tenant.
    pub tenant: String,
    /// Replication ID.
    pub replication_id: String,
    /// Revoked (its tokens no longer work).
    pub revoked: bool,
    /// Acknowledged offsets, per CDC partition (`-1`: nothing yet).
    pub committed: Vec<i64>,
    /// Records after the acknowledged offsets, over every CDC partition.
    pub lag: i64,
    /// When it last fetched (ms since the epoch).
    pub last_fetch_ms: Option<i64>,
    /// Tables an operator asked a fresh snapshot of, not yet taken up by the client.
    pub resync_requested: Vec<String>,
}

/// Everything the Operation Center lists.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// Every tenant.
    pub tenants: Vec<TenantView>,
    /// Every session.
    pub sessions: Vec<SessionView>,
    /// The oldest accepted client version.
    pub minimum_client_version: String,
}

impl State {
    /// Asks the client of every live session of `ctx` (or only `session`) for a fresh snapshot
    /// of `tables`: announced with its next fetches until it requests the snapshot itself.
    pub fn request_resync(&mut self, ctx: &str, tables: &[String], session: Option<&str>) -> Result<Json, ApiError> {
        let tenant = self.tenant(ctx)?;
        let published: BTreeSet<String> = tenant.schemas().iter().map(|s| s.id.to_string()).collect();
        if let Some(unknown) = tables.iter().find(|t| !published.contains(*t)) {
            return Err(ApiError::new(
                404,
                ErrorCode::TableNotFound,
                format!("tenant {ctx} publishes no table {unknown}"),
            ));
        }
        let mut asked = Vec::new();
        for s in self.sessions.values_mut().filter(|s| s.ctx == ctx && !s.revoked) {
            if session.is_none_or(|id| id == s.id) {
                s.resync_requested.extend(tables.iter().cloned());
                asked.push(s.id.clone());
            }
        }
        tracing::info!(tenant = ctx, ?tables, sessions = ?asked, "operator asked for a fresh snapshot");
        self.save();
        Ok(json!({"resync_requested": tables, "sessions": asked}))
    }

    /// The client of `session` asked for these tables' fresh snapshot: the operator's request
    /// for them is done.
    pub fn resync_taken_up(&mut self, session: &str, tables: &[String]) {
        if let Some(s) = self.sessions.get_mut(session)
            && tables.iter().any(|t| s.resync_requested.remove(t))
        {
            self.save();
        }
    }

    /// Tenants, sessions, offsets and lag, for the Operation Center.
    pub fn overview(&self) -> Overview {
        let tenants = self
            .tenants
            .iter()
            .map(|(ctx, (tenant, suspended))| {
                let topic = tenant.cdc_topic();
                TenantView {
                    tenant: ctx.clone(),
                    suspended: *suspended,
                    tables: tenant.schemas().iter().map(|s| s.id.to_string()).collect(),
                    ends: self.log.ends(&topic).into_values().collect(),
                }
            })
            .collect();
        let sessions = self
            .sessions
            .values()
            .map(|s| {
                let topic = self.tenant(&s.ctx).map(Tenant::cdc_topic).unwrap_or_default();
                let ends = self.log.ends(&topic);
                let committed: Vec<i64> =
                    ends.keys().map(|p| s.committed.get(&(topic.clone(), *p)).copied().unwrap_or(-1)).collect();
                let lag = ends.iter().zip(&committed).map(|((_, end), c)| (end - c - 1).max(0)).sum();
                SessionView {
                    session_id: s.id.clone(),
                    tenant: s.ctx.clone(),
                    replication_id: s.replication_id.clone(),
                    revoked: s.revoked,
                    committed,
                    lag,
                    last_fetch_ms: s.last_fetch_ms,
                    resync_requested: s.resync_requested.iter().cloned().collect(),
                }
            })
            .collect();
        Overview { tenants, sessions, minimum_client_version: self.min_client_version.clone() }
    }
}
