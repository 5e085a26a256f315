//! Where an instance folder's status page (see [`dbmirror::status::page`]) gets its data: the
//! instance's replica, opened on each request, so the page shows what is stored.

use std::path::PathBuf;

use dbmirror::status::StatusReport;
use dbmirror::status::page::{SourceError, StatusPage, StatusSource};

use crate::instance::{Instance, InstanceLock, describe};

/// An instance folder, as the status page reads it.
pub struct InstanceSource {
    dir: PathBuf,
}

/// The status page of `instance` (actions as `Metrics.StatusPageActions` says).
pub fn page(instance: &Instance) -> StatusPage<InstanceSource> {
    StatusPage::new(InstanceSource { dir: instance.dir().to_owned() }, instance.config.metrics.status_page_actions)
}

impl InstanceSource {
    fn open(&self) -> anyhow::Result<(Instance, Box<dyn dbmirror::sink::Replica>)> {
        let instance = Instance::load_to_look(&self.dir)?;
        let replica = instance.open_existing()?;
        Ok((instance, replica))
    }
}

impl StatusSource for InstanceSource {
    fn report(&self) -> Result<StatusReport, SourceError> {
        let (instance, mut replica) = self.open().map_err(|e| describe(&e))?;
        let running = InstanceLock::holder(&instance.lock_path()).is_some();
        Ok(StatusReport::read(replica.as_mut(), running)?)
    }

    fn request_resync(&self, table: &str) -> Result<(), SourceError> {
        let (_, mut replica) = self.open().map_err(|e| describe(&e))?;
        dbmirror::pipeline::resync::request(replica.as_mut(), &[table.to_owned()])?;
        Ok(())
    }
}
