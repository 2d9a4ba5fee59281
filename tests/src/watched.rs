//! Processes a test did not start itself (a test program's children),
//! watched through a pidfd.

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

use anyhow::{Result, bail};

use crate::run::poll;

/// A process watched through a pidfd, which keeps meaning that process
/// however its PID is reused; SIGKILLed on drop if it still runs.
pub struct Watched {
    pid: u32,
    fd: OwnedFd,
}

impl Watched {
    /// Opens a pidfd on `pid`.
    pub fn open(pid: u32) -> Result<Watched> {
        // SAFETY: pidfd_open(2) returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
        if fd < 0 {
            bail!("pidfd_open({pid}): {}", std::io::Error::last_os_error());
        }
        // SAFETY: the descriptor was just opened and is ours alone.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Watched { pid, fd })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process has ended (a zombie not reaped yet has).
    pub fn ended(&self) -> bool {
        let mut pollfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, no waiting.
        unsafe { libc::poll(&mut pollfd, 1, 0) == 1 }
    }

    /// Waits, at most `timeout` (see [`crate::patience`]), for the process
    /// to end; whether it did.
    pub fn wait_end(&self, timeout: Duration) -> bool {
        poll(timeout, Duration::from_millis(10), || {
            self.ended().then_some(())
        })
        .is_some()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        // SAFETY: pidfd_send_signal(2) on our descriptor; an ended process
        // is not signalled.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
}
