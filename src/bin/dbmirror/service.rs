//! Running an instance as a service: a systemd unit on Linux (below), and a native Windows
//! service on Windows (`windows.rs`). The per-folder lock is in `instance.rs`.

use std::path::Path;

use anyhow::Result;

use crate::instance::{Instance, service_name};

/// `install`: registers the instance as a service (`--start` also starts it). Several
/// instances coexist: each service is named after its Replication ID and runs from its folder.
pub fn install(instance: &Instance, unit_dir: &Path, start: bool) -> Result<()> {
    let (name, info) = service_name(instance)?;
    let dir = std::fs::canonicalize(instance.dir())?;
    let exe = std::env::current_exe()?;
    #[cfg(windows)]
    {
        let _ = (unit_dir, &info);
        crate::windows::install(&name, &exe, &dir, start)
    }
    #[cfg(not(windows))]
    systemd::install(&name, &info, &exe, &dir, unit_dir, start)
}

/// `uninstall`: stops and removes the instance's service.
pub fn uninstall(instance: &Instance, unit_dir: &Path) -> Result<()> {
    let (name, _) = service_name(instance)?;
    #[cfg(windows)]
    {
        let _ = unit_dir;
        crate::windows::uninstall(&name)
    }
    #[cfg(not(windows))]
    systemd::uninstall(&name, unit_dir)
}

/// The systemd unit of an instance, and `systemctl`.
#[cfg(not(windows))]
mod systemd {
    use std::path::Path;

    use anyhow::{Context as _, Result, bail};
    use dbmirror::source::replication::SessionInfo;

    /// The systemd unit for an instance: `dbmirror-<replication-id>.service`, running `sync`
    /// from the instance folder, restarted when it fails (a clean stop stays stopped), stopped
    /// with SIGTERM (the current batch finishes).
    pub fn unit(exe: &Path, instance: &Path, info: &SessionInfo) -> String {
        format!(
            "[Unit]\nDescription=dbmirror replication {rid} (tenant {ctx})\nAfter=network-online.target\nWants=network-online.target\n\n\
             [Service]\nType=simple\nWorkingDirectory={dir}\nExecStart={exe} sync --instance {dir}\nRestart=on-failure\nRestartSec=10\n\
             KillSignal=SIGTERM\nTimeoutStopSec=90\n\n[Install]\nWantedBy=multi-user.target\n",
            rid = info.replication_id,
            ctx = info.tenant_context_id,
            dir = instance.display(),
            exe = exe.display(),
        )
    }

    /// The instance folder a unit written by [`unit`] runs in.
    fn unit_folder(unit: &str) -> Option<&str> {
        unit.lines().find_map(|l| l.strip_prefix("WorkingDirectory="))
    }

    fn systemctl(args: &[&str]) -> Result<()> {
        let status = std::process::Command::new("systemctl").args(args).status().context("running systemctl")?;
        if !status.success() {
            bail!("systemctl {} failed ({status})", args.join(" "));
        }
        Ok(())
    }

    fn running() -> bool {
        Path::new("/run/systemd/system").exists()
    }

    pub fn install(name: &str, info: &SessionInfo, exe: &Path, dir: &Path, unit_dir: &Path, start: bool) -> Result<()> {
        let file = format!("{name}.service");
        let path = unit_dir.join(&file);
        let existing = std::fs::read_to_string(&path).ok();
        if let Some(other) = existing.as_deref().and_then(unit_folder).filter(|d| Path::new(d) != dir) {
            bail!(
                "{} runs the instance in {other}, which uses the same Replication ID {} (a copied folder?). Two \
                 folders must never share a session: run `dbmirror uninstall` there, or provision this folder anew",
                path.display(),
                info.replication_id
            );
        }
        std::fs::write(&path, unit(exe, dir, info)).with_context(|| format!("writing {}", path.display()))?;
        match existing {
            Some(_) => println!("Already installed: {} updated", path.display()),
            None => println!("Installed {}", path.display()),
        }
        if running() {
            systemctl(&["daemon-reload"])?;
            systemctl(&["enable", &file])?;
            if start {
                systemctl(&["start", &file])?;
                println!("Started {file}");
            } else {
                println!("Start it with: systemctl start {file}");
            }
        } else {
            println!("systemd is not running here: enable it later with `systemctl enable --now {file}`");
        }
        Ok(())
    }

    pub fn uninstall(name: &str, unit_dir: &Path) -> Result<()> {
        let file = format!("{name}.service");
        let path = unit_dir.join(&file);
        if running() {
            let _ = systemctl(&["disable", "--now", &file]);
        }
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        if running() {
            systemctl(&["daemon-reload"])?;
        }
        println!("Removed {}", path.display());
        Ok(())
    }
}
