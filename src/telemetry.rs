//! Logging setup for the binaries; the library itself only emits `tracing` events.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Colour escape codes only for a person at a terminal that understands them: journald,
/// files, pipes and a Windows console without virtual-terminal processing get plain text
/// (`NO_COLOR` turns them off everywhere).
fn colours() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() && escape_codes_work()
}

#[cfg(not(windows))]
fn escape_codes_work() -> bool {
    true
}

/// A Windows console shows escape codes only with virtual-terminal processing, which Windows
/// 10 and later turn on when asked; older consoles (and some hosts) refuse, and get plain text.
#[cfg(windows)]
#[allow(unsafe_code)] // FFI to the console API.
fn escape_codes_work() -> bool {
    use windows_sys::Win32::System::Console::{
        ENABLE_VIRTUAL_TERMINAL_PROCESSING, GetConsoleMode, GetStdHandle, STD_ERROR_HANDLE, SetConsoleMode,
    };
    // SAFETY: the handle is the process's own stderr; `mode` is a valid out-pointer.
    unsafe {
        let handle = GetStdHandle(STD_ERROR_HANDLE);
        let mut mode = 0;
        if GetConsoleMode(handle, &mut mode) == 0 {
            return false;
        }
        mode & ENABLE_VIRTUAL_TERMINAL_PROCESSING != 0
            || SetConsoleMode(handle, mode | ENABLE_VIRTUAL_TERMINAL_PROCESSING) != 0
    }
}

/// Installs the global subscriber writing to stderr. `RUST_LOG` overrides `default_level`.
/// Calling it twice is harmless (the second call changes nothing).
pub fn init(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(Scrubbed(std::io::stderr)).with_ansi(colours());
    let _ = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Keeps the log file writer flushing; drop it last (at the end of `main`).
pub type FileGuard = tracing_appender::non_blocking::WorkerGuard;

/// Days of log files kept in an instance folder.
pub const KEEP_DAYS: usize = 30;

/// Like [`init`], plus a daily rolling log file `dir/dbmirror.log.<date>` in the same format
/// as stderr (text without colours, or JSON lines), so a service leaves a history next to its
/// configuration that log collectors can read; the last [`KEEP_DAYS`] files are kept.
pub fn init_with_file(format: LogFormat, default_level: &str, dir: &std::path::Path) -> Option<FileGuard> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    if std::fs::create_dir_all(dir).is_err() {
        init(format, default_level);
        return None;
    }
    // A service runs for months: the last 30 days are kept, older files removed.
    let appender = match tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("dbmirror.log")
        .max_log_files(KEEP_DAYS)
        .build(dir)
    {
        Ok(appender) => appender,
        Err(_) => {
            init(format, default_level);
            return None;
        }
    };
    let (file, guard) = tracing_appender::non_blocking(appender);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    use tracing_subscriber::Layer as _;
    let file_layer = match format {
        LogFormat::Text => {
            tracing_subscriber::fmt::layer().with_writer(Scrubbed(file)).with_ansi(false).with_target(false).boxed()
        }
        LogFormat::Json => tracing_subscriber::fmt::layer().json().with_writer(Scrubbed(file)).boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(file_layer);
    let _ = match format {
        LogFormat::Text => {
            let stderr = tracing_subscriber::fmt::layer().with_writer(Scrubbed(std::io::stderr)).with_ansi(colours());
            registry.with(stderr.with_target(false)).try_init()
        }
        LogFormat::Json => {
            registry.with(tracing_subscriber::fmt::layer().json().with_writer(Scrubbed(std::io::stderr))).try_init()
        }
    };
    Some(guard)
}

/// A log writer that hides every secret the configuration holds (see
/// [`crate::redact::scrub_known`]) in each line before it is written: whatever quoted a
/// secret (a driver's message, an error chain), it never reaches the terminal or a log file.
#[derive(Clone)]
struct Scrubbed<M>(M);

impl<'a, M: tracing_subscriber::fmt::MakeWriter<'a>> tracing_subscriber::fmt::MakeWriter<'a> for Scrubbed<M> {
    type Writer = ScrubWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubWriter(self.0.make_writer())
    }
}

/// One event's writer: the formatter writes each line in one call, so a secret is never
/// split between two.
struct ScrubWriter<W>(W);

impl<W: std::io::Write> std::io::Write for ScrubWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        match crate::redact::scrub_known(&text) {
            std::borrow::Cow::Borrowed(_) => self.0.write_all(buf)?,
            std::borrow::Cow::Owned(clean) => self.0.write_all(clean.as_bytes())?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
