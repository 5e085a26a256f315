//! Running an instance as a service: the per-folder lock, a systemd unit on Linux, and a
//! native Windows service (`windows.rs`, compiled only on Windows).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use dbmirror::source::replication::SessionInfo;

use crate::commands::Instance;

/// One `sync` at a time per instance folder: an OS file lock on `dbmirror.lock`, which also
/// holds the owner's process id for messages. The operating system releases the lock when the
/// process ends, however it ends, so a crash never leaves a stale lock behind.
pub struct InstanceLock(#[allow(dead_code)] File);

fn open_lock(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)
}

impl InstanceLock {
    /// The process id of a live holder of the lock, if any.
    pub fn holder(path: &Path) -> Option<String> {
        let mut file = open_lock(path).ok()?;
        match file.try_lock() {
            Ok(()) => {
                let _ = file.unlock();
                None
            }
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                Some(if pid.trim().is_empty() { "?".into() } else { pid.trim().to_owned() })
            }
            Err(TryLockError::Error(_)) => None,
        }
    }

    /// Takes the lock, or says which process holds it.
    pub fn take(path: &Path) -> Result<Self> {
        let mut file = open_lock(path).with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let pid = Self::holder(path).unwrap_or_else(|| "?".into());
                bail!("another dbmirror (process {pid}) is running in {}", path.parent().unwrap_or(path).display());
            }
            Err(TryLockError::Error(e)) => return Err(e).context(format!("locking {}", path.display())),
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        file.flush()?;
        Ok(InstanceLock(file))
    }
}

/// The service name of an instance: `dbmirror-<replication-id>`.
pub fn service_name(instance: &Instance) -> Result<(String, SessionInfo)> {
    let mut state = instance.open()?;
    let info = SessionInfo::from_facts(&state.read_facts()?)
        .context("the replica holds no session: run `dbmirror provision` first")?;
    Ok((format!("dbmirror-{}", info.replication_id), info))
}

/// The systemd unit for an instance: `dbmirror-<replication-id>.service`, running `sync` from
/// the instance folder, restarted on failure, stopped with SIGTERM (a clean stop).
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
        return crate::windows::install(&name, &exe, &dir, start);
    }
    #[cfg(not(windows))]
    install_systemd(&name, &info, &exe, &dir, unit_dir, start)
}

#[cfg(not(windows))]
fn install_systemd(name: &str, info: &SessionInfo, exe: &Path, dir: &Path, unit_dir: &Path, start: bool) -> Result<()> {
    let unit = format!("{name}.service");
    let path = unit_dir.join(&unit);
    if path.exists() {
        bail!(
            "{} exists: another instance uses Replication ID {} (run `uninstall` there first)",
            path.display(),
            info.replication_id
        );
    }
    std::fs::write(&path, systemd_unit(exe, dir, info)).with_context(|| format!("writing {}", path.display()))?;
    println!("Installed {}", path.display());
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
        return crate::windows::uninstall(&name);
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
