//! Process handles: a pidfd always means the one process it was opened
//! for, so a signal sent through it never reaches a process that got the
//! PID later.

use std::{
    fmt, io,
    os::fd::OwnedFd,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use rustix::{
    event::{PollFd, PollFlags, poll},
    process::{Pid, PidfdFlags, pidfd_open, pidfd_send_signal},
};
use serde::{Deserialize, Serialize};

/// A signal procespy sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Signal {
    /// Asks the process to exit.
    #[serde(rename = "SIGTERM")]
    Term,
    /// Ends the process.
    #[serde(rename = "SIGKILL")]
    Kill,
}

impl Signal {
    /// `"SIGTERM"` or `"SIGKILL"`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Term => "SIGTERM",
            Signal::Kill => "SIGKILL",
        }
    }

    fn to_rustix(self) -> rustix::process::Signal {
        match self {
            Signal::Term => rustix::process::Signal::TERM,
            Signal::Kill => rustix::process::Signal::KILL,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What became of a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// The kernel took it.
    Sent,
    /// The process had exited already (its PID may belong to another now).
    Gone,
}

/// File descriptors pidfds may never take: kept for procespy's own work
/// (listing `/proc`, the control socket, the history, alerts), however many
/// processes it follows. Without them, an examination that cannot list
/// `/proc` would follow nothing at all.
pub(crate) const FD_RESERVE: u64 = 64;

/// The open-file limit in force (see [`super::raise_fd_limit`]).
static FD_LIMIT: AtomicU64 = AtomicU64::new(u64::MAX);
/// Pidfds open now.
static OPEN: AtomicU64 = AtomicU64::new(0);

/// Tells the pidfds the open-file limit in force.
pub(crate) fn set_fd_limit(limit: u64) {
    FD_LIMIT.store(limit, Ordering::Relaxed);
}

/// An open pidfd, counted while it is open.
#[derive(Debug)]
struct Counted(OwnedFd);

impl Drop for Counted {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A pidfd, shared between the guard and the timers that act on it later.
#[derive(Clone, Debug)]
pub(crate) struct Pidfd(Arc<Counted>);

impl Pidfd {
    /// Opens a pidfd for `pid`, unless that would leave fewer than
    /// [`FD_RESERVE`] descriptors under the open-file limit.
    pub(crate) fn open(pid: u32) -> io::Result<Pidfd> {
        let pid = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let limit = FD_LIMIT.load(Ordering::Relaxed);
        if OPEN.fetch_add(1, Ordering::Relaxed) + FD_RESERVE >= limit {
            OPEN.fetch_sub(1, Ordering::Relaxed);
            return Err(io::Error::other(format!(
                "the open-file limit ({limit}) is reached, less {FD_RESERVE} kept for \
                 procespy's own work; raise LimitNOFILE"
            )));
        }
        match pidfd_open(pid, PidfdFlags::empty()) {
            Ok(fd) => Ok(Pidfd(Arc::new(Counted(fd)))),
            Err(err) => {
                OPEN.fetch_sub(1, Ordering::Relaxed);
                Err(err.into())
            }
        }
    }

    /// Sends `signal` to the process (`pidfd_send_signal`).
    pub(crate) fn send(&self, signal: Signal) -> io::Result<Delivery> {
        match pidfd_send_signal(&self.0.0, signal.to_rustix()) {
            Ok(()) => Ok(Delivery::Sent),
            Err(rustix::io::Errno::SRCH) => Ok(Delivery::Gone),
            Err(err) => Err(err.into()),
        }
    }

    /// Whether the process has exited (its pidfd polls readable).
    pub(crate) fn exited(&self) -> bool {
        let mut fds = [PollFd::new(&self.0.0, PollFlags::IN)];
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
            && fds[0].revents().contains(PollFlags::IN)
    }

    /// Whether both handles are the same one (not merely the same process).
    pub(crate) fn same(&self, other: &Pidfd) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn a_signal_to_an_exited_process_is_reported_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pidfd = Pidfd::open(child.id()).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(pidfd.exited());
        assert_eq!(pidfd.send(Signal::Term).unwrap(), Delivery::Gone);
    }

    #[test]
    fn a_signal_reaches_the_live_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pidfd = Pidfd::open(child.id()).unwrap();
        assert!(!pidfd.exited());
        assert_eq!(pidfd.send(Signal::Term).unwrap(), Delivery::Sent);
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGTERM));
    }

    #[test]
    fn pid_zero_and_huge_pids_are_refused() {
        assert!(Pidfd::open(0).is_err());
        assert!(Pidfd::open(u32::MAX).is_err());
    }
}
