//! Acting on a verdict: signals go through a pidfd, so a PID that was reused
//! by another process is never signalled. Every action becomes a record that
//! is logged and kept for `procespy status`.

use std::{
    os::fd::{AsRawFd, OwnedFd},
    time::SystemTime,
};

use serde::Serialize;

pub use crate::ebpf::{has_exited, pidfd_open};

/// A signal procespy sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Signal {
    /// Asks the process to exit.
    #[serde(rename = "SIGTERM")]
    Term,
    /// Ends the process.
    #[serde(rename = "SIGKILL")]
    Kill,
}

impl Signal {
    fn number(self) -> i32 {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
        }
    }

    /// `"SIGTERM"` or `"SIGKILL"`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Term => "SIGTERM",
            Signal::Kill => "SIGKILL",
        }
    }
}

/// What became of a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The kernel took it.
    Sent,
    /// The process had exited already (its PID may belong to another now).
    Gone,
}

/// Sends `signal` to the process behind `pidfd` (`pidfd_send_signal`).
pub fn send(pidfd: &OwnedFd, signal: Signal) -> std::io::Result<Delivery> {
    // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal.number(),
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc == 0 {
        return Ok(Delivery::Sent);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ESRCH) => Ok(Delivery::Gone),
        _ => Err(err),
    }
}

/// Resident bytes of `pid` from `/proc/PID/statm` (the precise figure to
/// confirm a breach with before acting from userspace).
pub fn statm_rss(pid: u32, page_size: u64) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = text.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size)
}

/// One thing procespy did (or decided not to do) about a process.
#[derive(Clone, Debug, Serialize)]
pub struct ActionRecord {
    /// When, as seconds since the Unix epoch.
    pub time: f64,
    /// The process.
    pub pid: u32,
    /// Its name.
    pub name: String,
    /// Its user (name, or uid when the name is unknown).
    pub user: String,
    /// Its RSS in bytes when the action was decided.
    pub rss: u64,
    /// The limit in bytes.
    pub limit: u64,
    /// The rule: the limit's name or pattern.
    pub rule: String,
    /// What was done: `SIGTERM`, `SIGKILL`, `alert`, `kernel SIGKILL`, `none`.
    pub action: String,
    /// How it went: `sent`, `gone`, `refused: …`, `dry-run`, `under limit`, `failed: …`.
    pub result: String,
}

impl ActionRecord {
    /// Logs the record: a warning for a signal, info otherwise.
    pub fn log(&self) {
        let Self {
            pid,
            name,
            user,
            rss,
            limit,
            rule,
            action,
            result,
            ..
        } = self;
        let message = format!("{action} {name} (pid {pid}, user {user}): {result}");
        // One set of fields, at either level.
        macro_rules! emit {
            ($level:ident) => {
                tracing::$level!(
                    event = "action",
                    pid,
                    name,
                    user,
                    rss,
                    limit,
                    rule,
                    action,
                    result,
                    "{message}"
                )
            };
        }
        if action.contains("SIG") && result == "sent" {
            emit!(warn);
        } else {
            emit!(info);
        }
    }
}

/// Raises the soft limit on open files to the hard limit: the guard keeps a
/// pidfd for every covered process.
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(err) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!("cannot raise the open-file limit from {soft} to {hard}: {err}");
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of the kernel's event times.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |ts| {
        ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
    })
}

/// Seconds since the Unix epoch, now.
pub fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_to_an_exited_process_is_reported_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pidfd = pidfd_open(child.id()).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(has_exited(&pidfd));
        assert_eq!(send(&pidfd, Signal::Term).unwrap(), Delivery::Gone);
    }

    #[test]
    fn a_signal_reaches_the_live_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pidfd = pidfd_open(child.id()).unwrap();
        assert!(!has_exited(&pidfd));
        assert_eq!(send(&pidfd, Signal::Term).unwrap(), Delivery::Sent);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGTERM));
    }

    #[test]
    fn statm_reads_our_own_rss() {
        let rss = statm_rss(std::process::id(), 4096).unwrap();
        assert!(rss > 0);
        assert!(statm_rss(u32::MAX, 4096).is_none());
    }
}
