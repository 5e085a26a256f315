//! The native Windows service (the original client is one). `install` registers
//! `dbmirror-<replication-id>` with the Service Control Manager to run
//! `dbmirror service-run --instance <folder>` as LocalSystem, started automatically; the SCM's
//! Stop and Shutdown requests end `sync` as Ctrl-C does (the current batch finishes).
//!
//! Compiled for Windows and linted in CI (`windows/build.sh`), and run under Wine 8 there
//! (`windows/wine_day.sh`): installed, started, syncing, stopped and removed through Wine's
//! Service Control Manager. It has not run on a real Windows machine.

// `define_windows_service!` expands to the FFI entry point the SCM calls.
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, Result};
use windows_service::service::{
    ServiceAccess, ServiceControl, ServiceControlAccept, ServiceErrorControl, ServiceExitCode, ServiceInfo,
    ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};

/// Registers the service; `start` also starts it.
pub fn install(name: &str, exe: &Path, dir: &Path, start: bool) -> Result<()> {
    let manager = ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )
    .context("opening the Service Control Manager (run as Administrator)")?;
    let info = ServiceInfo {
        name: OsString::from(name),
        display_name: OsString::from(format!("dbmirror replication ({name})")),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: exe.to_owned(),
        launch_arguments: vec!["service-run".into(), "--instance".into(), dir.as_os_str().to_owned()],
        dependencies: vec![],
        account_name: None,
        account_password: None,
    };
    let service = manager
        .create_service(&info, ServiceAccess::CHANGE_CONFIG | ServiceAccess::START)
        .with_context(|| format!("creating the service {name} (does another instance use this Replication ID?)"))?;
    service.set_description("Keeps a local SQL replica in sync with the cloud CRM tenant")?;
    // Restart after a failure, as systemd's `Restart=on-failure` does on Linux.
    let recovery = std::process::Command::new("sc.exe")
        .args(["failure", name, "reset=", "86400", "actions=", "restart/10000/restart/10000/restart/60000"])
        .status();
    if !recovery.is_ok_and(|s| s.success()) {
        println!("warning: could not set restart-on-failure; set it with `sc failure {name} actions= restart/10000`");
    }
    println!("Installed the Windows service {name}");
    if start {
        service.start::<&str>(&[]).context("starting the service")?;
        println!("Started {name}");
    } else {
        println!("Start it with: sc start {name}");
    }
    Ok(())
}

/// Stops (waiting up to 90 s for the current batch) and removes the service.
pub fn uninstall(name: &str) -> Result<()> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .context("opening the Service Control Manager (run as Administrator)")?;
    let service = manager
        .open_service(name, ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE)
        .with_context(|| format!("opening the service {name}"))?;
    if service.query_status()?.current_state != ServiceState::Stopped {
        service.stop()?;
        for _ in 0..90 {
            if service.query_status()?.current_state == ServiceState::Stopped {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    service.delete()?;
    println!("Removed the Windows service {name}");
    Ok(())
}

static INSTANCE: OnceLock<PathBuf> = OnceLock::new();

define_windows_service!(ffi_service_main, service_main);

/// `dbmirror service-run`: called by the SCM; blocks until the service stops.
pub fn run(instance: &Path) -> Result<()> {
    let _ = INSTANCE.set(instance.to_owned());
    let name = crate::instance::service_name(&crate::instance::Instance::load(instance)?)?.0;
    service_dispatcher::start(name, ffi_service_main).context("not started by the Service Control Manager")?;
    Ok(())
}

fn service_main(_arguments: Vec<OsString>) {
    if let Err(e) = serve() {
        tracing::error!(error = %e, "the service stopped with an error");
    }
}

fn serve() -> Result<()> {
    let dir = INSTANCE.get().context("no instance folder")?;
    let instance = crate::instance::Instance::load(dir)?;
    let name = crate::instance::service_name(&instance)?.0;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let status = service_control_handler::register(&name, move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            tracing::info!("the Service Control Manager stops the service: finishing the current batch");
            flag.store(true, Ordering::Relaxed);
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    })?;
    let report = |state, accept, code| {
        status.set_service_status(ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: accept,
            exit_code: ServiceExitCode::Win32(code),
            checkpoint: 0,
            wait_hint: Duration::from_secs(90),
            process_id: None,
        })
    };
    report(ServiceState::Running, ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN, 0)?;
    let result = crate::commands::run_sync_with(&instance, false, false, stop).map(|_| ());
    // A failure makes the SCM apply its recovery actions (restart), like `Restart=on-failure`.
    report(ServiceState::Stopped, ServiceControlAccept::empty(), u32::from(result.is_err()))?;
    result
}
