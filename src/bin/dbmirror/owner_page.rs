//! The status page's data and actions for an instance folder (the page itself is
//! [`dbmirror::metrics::page`]): what `status --json` reports, read from the replica on each
//! request, and resync requests stored as `resync-tables` stores them.

use std::path::PathBuf;

use dbmirror::metrics::serve::OwnerPage;

use crate::instance::{Instance, describe};

/// An instance folder's status page.
pub struct InstancePage {
    dir: PathBuf,
    actions: bool,
}

impl InstancePage {
    /// The page of the instance in `dir`; `actions`: `Metrics.StatusPageActions`.
    pub fn new(instance: &Instance) -> Self {
        InstancePage { dir: instance.dir().to_owned(), actions: instance.config.metrics.status_page_actions }
    }
}

impl OwnerPage for InstancePage {
    fn status(&self) -> Result<serde_json::Value, String> {
        let instance = Instance::load_to_look(&self.dir).map_err(|e| describe(&e))?;
        crate::report::status_report(&instance, false).map_err(|e| describe(&e))
    }

    fn actions(&self) -> bool {
        self.actions
    }

    fn resync(&self, table: &str) -> Result<(), String> {
        let instance = Instance::load_to_look(&self.dir).map_err(|e| describe(&e))?;
        let mut state = instance.open_existing().map_err(|e| describe(&e))?;
        crate::commands::request_resyncs(state.as_mut(), &[table.to_owned()]).map_err(|e| describe(&e))?;
        tracing::info!(table, "resync requested from the status page");
        Ok(())
    }
}
