//! The guard's side effects, behind one small trait: process handles,
//! signals (with the confirming read before them), clocks and timers.
//! [`Real`] does them; the unit tests use a fake that records them.
//!
//! Anything that reads `/proc` or may block runs on tokio's blocking pool
//! and comes back to the daemon's loop as a [`Completion`], which the
//! daemon hands to [`super::Guard::complete`]. The loop itself only makes
//! syscalls that cannot block.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::{
    action::ActionRecord,
    sys::{self, Delivery, Pidfd, Signal},
    users::UserNames,
};

/// What the guard asks of the system.
pub(crate) trait System {
    /// A handle that always means one process (a pidfd).
    type Handle: Clone + std::fmt::Debug;

    /// Asks for a handle on `pid`, checked to be the process that started at
    /// `start_ticks` when that is known; it comes back as
    /// [`Completion::Handle`] (with `None` when the process is gone, or the
    /// PID belongs to another one now).
    fn request_handle(&mut self, pid: u32, start_ticks: Option<u64>);

    /// Sends `request.signal`, after confirming that the process is still
    /// over `request.confirm_over` bytes when that is set; the result comes
    /// back as [`Completion::Enforced`].
    fn enforce(&mut self, request: Enforcement<Self::Handle>);

    /// Whether the process behind `handle` has exited.
    fn exited(&self, handle: &Self::Handle) -> bool;

    /// Whether two handles are the same handle.
    fn same(a: &Self::Handle, b: &Self::Handle) -> bool;

    /// Calls back with [`Completion::Timer`] after `delay`.
    fn start_timer(&mut self, delay: Duration, timer: Timer<Self::Handle>);

    /// Seconds since the Unix epoch.
    fn epoch_secs(&self) -> f64;

    /// The name of user `uid` (its number when it has none; `?` when unknown).
    fn user_name(&self, uid: Option<u32>) -> String;
}

/// Why a signal is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A breach (from the kernel, an examination or a total's sum).
    Breach,
    /// The grace after SIGTERM ended with the process still there.
    GraceOver,
}

/// A signal to send, and what to check first.
#[derive(Clone, Debug)]
pub(crate) struct Enforcement<H> {
    /// The process.
    pub(crate) pid: u32,
    /// Its handle.
    pub(crate) handle: H,
    /// The signal.
    pub(crate) signal: Signal,
    /// Send only if the process is still above this many bytes.
    pub(crate) confirm_over: Option<u64>,
    /// Why.
    pub(crate) purpose: Purpose,
    /// When the kernel saw the breach (`CLOCK_MONOTONIC` ns), if it did.
    pub(crate) seen_ns: Option<u64>,
    /// The record to complete and log.
    pub(crate) record: ActionRecord,
}

/// How an [`Enforcement`] went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Enforced {
    /// The signal was sent (or the process had exited).
    Delivered(Delivery),
    /// The confirming read found the process at or under the limit.
    Under(u64),
    /// The signal could not be sent.
    Failed(String),
}

/// A timer the guard started.
#[derive(Clone, Debug)]
pub(crate) enum Timer<H> {
    /// The grace after SIGTERM is over.
    GraceOver {
        /// The process.
        pid: u32,
        /// Its handle.
        handle: H,
    },
}

/// Why a handle could not be had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum NoHandle {
    /// The process is gone (or its PID belongs to another one now).
    Gone,
    /// The process is there, but no handle could be opened (out of file
    /// descriptors, say): it cannot be followed.
    Failed(String),
}

/// What comes back to the guard from the system.
#[derive(Debug)]
pub(crate) enum Completion<H> {
    /// A handle asked for with [`System::request_handle`].
    Handle {
        /// The process.
        pid: u32,
        /// The handle, or why there is none.
        handle: Result<H, NoHandle>,
    },
    /// An [`Enforcement`] was carried out.
    Enforced {
        /// What was asked.
        request: Box<Enforcement<H>>,
        /// How it went.
        result: Enforced,
        /// `CLOCK_MONOTONIC` ns when the signal left, when it did.
        sent_ns: Option<u64>,
    },
    /// A timer fired.
    Timer(Timer<H>),
}

/// The real system: pidfds, `/proc` on the blocking pool, tokio timers.
pub(crate) struct Real {
    done: mpsc::UnboundedSender<Completion<Pidfd>>,
    users: UserNames,
}

impl Real {
    /// A system whose completions arrive on `done`.
    pub(crate) fn new(done: mpsc::UnboundedSender<Completion<Pidfd>>) -> Self {
        Real {
            done,
            users: UserNames::default(),
        }
    }
}

impl System for Real {
    type Handle = Pidfd;

    fn request_handle(&mut self, pid: u32, start_ticks: Option<u64>) {
        let done = self.done.clone();
        tokio::task::spawn_blocking(move || {
            let handle = open_verified(pid, start_ticks);
            let _ = done.send(Completion::Handle { pid, handle });
        });
    }

    fn enforce(&mut self, request: Enforcement<Pidfd>) {
        let done = self.done.clone();
        tokio::task::spawn_blocking(move || {
            let (result, sent_ns) = carry_out(&request);
            let _ = done.send(Completion::Enforced {
                request: Box::new(request),
                result,
                sent_ns,
            });
        });
    }

    fn exited(&self, handle: &Pidfd) -> bool {
        handle.exited()
    }

    fn same(a: &Pidfd, b: &Pidfd) -> bool {
        a.same(b)
    }

    fn start_timer(&mut self, delay: Duration, timer: Timer<Pidfd>) {
        let done = self.done.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = done.send(Completion::Timer(timer));
        });
    }

    fn epoch_secs(&self) -> f64 {
        sys::epoch_secs()
    }

    fn user_name(&self, uid: Option<u32>) -> String {
        self.users.name(uid)
    }
}

/// Opens a pidfd for `pid` and checks that it is the process that started
/// at `start_ticks`: the pidfd is opened first, `/proc/PID/stat` read next,
/// and the pidfd checked to be alive last, so the read describes the
/// pidfd's process.
fn open_verified(pid: u32, start_ticks: Option<u64>) -> Result<Pidfd, NoHandle> {
    let pidfd = Pidfd::open(pid).map_err(|err| match err.raw_os_error() {
        Some(libc::ESRCH) => NoHandle::Gone,
        _ => NoHandle::Failed(format!("cannot open a pidfd: {err}")),
    })?;
    if let Some(start) = start_ticks {
        let now = crate::scan::read_start_ticks(pid).map_err(|_| NoHandle::Gone)?;
        if now != start || pidfd.exited() {
            tracing::debug!(pid, "PID reused before it could be matched: skipped");
            return Err(NoHandle::Gone);
        }
    }
    Ok(pidfd)
}

/// Confirms (when asked) and sends; runs on the blocking pool.
fn carry_out(request: &Enforcement<Pidfd>) -> (Enforced, Option<u64>) {
    if let Some(limit) = request.confirm_over {
        // Read first, then check the pidfd: a live pidfd after the read
        // means the read was of its process, not of a newcomer at the PID.
        let rss = sys::statm_rss(request.pid);
        if request.handle.exited() {
            return (Enforced::Delivered(Delivery::Gone), None);
        }
        if let Some(rss) = rss.filter(|&rss| rss <= limit) {
            return (Enforced::Under(rss), None);
        }
    }
    match request.handle.send(request.signal) {
        Ok(delivery) => (Enforced::Delivered(delivery), Some(sys::monotonic_ns())),
        Err(err) => (Enforced::Failed(err.to_string()), None),
    }
}
