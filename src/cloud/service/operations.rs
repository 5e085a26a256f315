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
