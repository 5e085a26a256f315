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

/// Which tenants an overview shows (the Operation Center's paging and filter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverviewPage {
    /// Tenants skipped (those before the page).
    pub offset: usize,
    /// Tenants on the page at most.
    pub limit: usize,
    /// Only tenants whose id contains this.
    pub text: String,
}

impl Default for OverviewPage {
    /// Every tenant.
    fn default() -> Self {
        OverviewPage { offset: 0, limit: usize::MAX, text: String::new() }
    }
}

/// What the Operation Center lists: a page of tenants and their sessions.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// The tenants on the page asked for.
    pub tenants: Vec<TenantView>,
    /// Their sessions.
    pub sessions: Vec<SessionView>,
    /// Tenants in all.
    pub total_tenants: usize,
    /// Tenants that match the page's filter (the pages to go through).
    pub matching_tenants: usize,
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

    /// Every tenant, its sessions, offsets and lag (tests, the CLI's `overview`).
    pub fn overview(&self) -> Overview {
        self.overview_page(&OverviewPage::default())
    }

    /// One page of tenants (those whose id contains `page.text`, in id order) with their
    /// sessions, offsets and lag, for the Operation Center: at 10,000 tenants the page shows
    /// a few dozen at a time, and builds only those.
    pub fn overview_page(&self, page: &OverviewPage) -> Overview {
        let matching: Vec<&String> = self.tenants.keys().filter(|ctx| ctx.contains(page.text.as_str())).collect();
        let shown: BTreeSet<&String> = matching.iter().skip(page.offset).take(page.limit).copied().collect();
        let tenants = self
            .tenants
            .iter()
            .filter(|(ctx, _)| shown.contains(ctx))
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
            .filter(|s| shown.contains(&s.ctx))
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
        Overview {
            tenants,
            sessions,
            total_tenants: self.tenants.len(),
            matching_tenants: matching.len(),
            minimum_client_version: self.min_client_version.clone(),
        }
    }
}
