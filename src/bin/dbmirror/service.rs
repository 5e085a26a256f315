//! Running an instance as a service: a systemd unit on Linux, and a native Windows service
//! (`windows.rs`, compiled only on Windows). The per-folder lock is in `instance.rs`.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use dbmirror::source::replication::SessionInfo;

use crate::instance::{Instance, service_name};

/// The systemd unit for an instance: `dbmirror-<replication-id>.service`, running `sync` from
/// the instance folder, restarted on failure, stopped with SIGTERM (a clean stop).
#[cfg(not(windows))]
pub fn systemd_unit(exe: &Path, instance: &Path, info: &SessionInfo) -> String {
    format!(
        "[Unit]\nDescription=dbmirror replication {rid} (tenant {ctx})\nAfter=network-online.target\nWants=network-online.target\n\n\
         [Service]\nType=simple\nWorkingDirectory={dir}\nExecStart={exe} sync --instance {dir}\nRestart=always\nRestartSec=10\n\
         KillSignal=SIGTERM\nTimeoutStopSec=90\n\n[Install]\nWantedBy=multi-user.target\n",
        rid = info.replication_id,
        ctx = info.tenant_context_id,
        dir = instance.display(),
        exe = exe.display(),
    )
}

/// The instance folder a unit written by [`systemd_unit`] runs in.
#[cfg(not(windows))]
fn unit_folder(unit: &str) -> Option<&str> {
    unit.lines().find_map(|l| l.strip_prefix("WorkingDirectory="))
}

#[cfg(not(windows))]
fn systemctl(args: &[&str]) -> Result<()> {
    let status = std::process::Command::new("systemctl").args(args).status().context("running systemctl")?;
    if !status.success() {
        bail!("systemctl {} failed ({status})", args.join(" "));
    }
    Ok(())
}

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
    install_systemd(&name, &info, &exe, &dir, unit_dir, start)
}

#[cfg(not(windows))]
fn install_systemd(name: &str, info: &SessionInfo, exe: &Path, dir: &Path, unit_dir: &Path, start: bool) -> Result<()> {
    let unit = format!("{name}.service");
    let path = unit_dir.join(&unit);
    let existing = std::fs::read_to_string(&path).ok();
    if let Some(other) = existing.as_deref().and_then(unit_folder).filter(|d| Path::new(d) != dir) {
        bail!(
            "{} runs the instance in {other}, which uses the same Replication ID {} (a copied folder?). Two \
             folders must never share a session: run `dbmirror uninstall` there, or provision this folder anew",
            path.display(),
            info.replication_id
        );
    }
    std::fs::write(&path, systemd_unit(exe, dir, info)).with_context(|| format!("writing {}", path.display()))?;
    match existing {
        Some(_) => println!("Already installed: {} updated", path.display()),
        None => println!("Installed {}", path.display()),
    }
    if Path::new("/run/systemd/system").exists() {
        systemctl(&["daemon-reload"])?;
        systemctl(&["enable", &unit])?;
        if start {
            systemctl(&["start", &unit])?;
            println!("Started {unit}");
        } else {
            println!("Start it with: systemctl start {unit}");
        }
    } else {
        println!("systemd is not running here: enable it later with `systemctl enable --now {unit}`");
    }
    Ok(())
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
    {
        let unit = format!("{name}.service");
        let path = unit_dir.join(&unit);
        if Path::new("/run/systemd/system").exists() {
            let _ = systemctl(&["disable", "--now", &unit]);
        }
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        if Path::new("/run/systemd/system").exists() {
            systemctl(&["daemon-reload"])?;
        }
        println!("Removed {}", path.display());
        Ok(())
    }
}
