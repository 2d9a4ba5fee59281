//! The programs' own diagnostics (aya-log), forwarded to procespy's log.
//!
//! The programs log only on rare paths: a counter they do not know, a
//! `bpf_send_signal` the kernel refused, a crossing the confirmation read
//! undid. Their lines are at debug level, so they show with `procespy -v`;
//! at the daemon's usual level the verifier drops those statements from the
//! programs altogether (the level is a frozen global).

use anyhow::{Context, Result};
use aya::Ebpf;
use aya_log::{EbpfLogger, Level};
use tokio::io::{Interest, unix::AsyncFd};
use tracing::level_filters::LevelFilter;

/// The aya-log level that matches the daemon's log level.
pub(super) fn kernel_level() -> u8 {
    let level = match LevelFilter::current() {
        LevelFilter::OFF => return 0,
        LevelFilter::ERROR => Level::Error,
        LevelFilter::WARN => Level::Warn,
        LevelFilter::INFO => Level::Info,
        LevelFilter::DEBUG => Level::Debug,
        LevelFilter::TRACE => Level::Trace,
    };
    level as u8
}

/// Reads the programs' log records as they come and logs them, on a task of
/// its own.
pub(super) fn forward(ebpf: &mut Ebpf) -> Result<()> {
    let logger =
        EbpfLogger::init_with_logger(ebpf, Forward).context("opening the eBPF programs' log")?;
    // SAFETY: the logger owns its ring buffer's descriptor and keeps it
    // open, unchanged, until it is dropped with this `AsyncFd`.
    let mut logger = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
        .context("registering the eBPF programs' log with tokio")?;
    tokio::spawn(async move {
        while let Ok(mut ready) = logger.readable_mut().await {
            ready.get_inner_mut().flush();
            ready.clear_ready();
        }
    });
    Ok(())
}

/// A `log` sink that hands records to `tracing`, marked as the kernel's.
struct Forward;

impl log::Log for Forward {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let text = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(source = "kernel", "eBPF: {text}"),
            log::Level::Warn => tracing::warn!(source = "kernel", "eBPF: {text}"),
            log::Level::Info => tracing::info!(source = "kernel", "eBPF: {text}"),
            log::Level::Debug => tracing::debug!(source = "kernel", "eBPF: {text}"),
            log::Level::Trace => tracing::trace!(source = "kernel", "eBPF: {text}"),
        }
    }

    fn flush(&self) {}
}
