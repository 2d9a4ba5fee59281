//! The guard's side effects, behind one small trait: process handles,
//! signals (with the confirming read before them), reads of PSS, finding a
//! process's group or cgroup, `cgroup.kill`, clocks and timers. [`Real`]
//! does them; the unit tests use a fake that records them.
//!
//! Anything that reads `/proc` or may block runs on tokio's blocking pool
//! and comes back to the daemon's loop as a [`Completion`], which the
//! daemon hands to [`super::Guard::complete`]. The loop itself only makes
//! syscalls that cannot block.

use std::{path::PathBuf, time::Duration};

use tokio::sync::mpsc;

use crate::{
    action::{ActionRecord, Member, MemberResult, Reach},
    config::{KillTarget, Memory},
    process::ProcInfo,
    scan,
    sys::{
        self, Delivery, Pidfd, Signal,
        cgroup::{self, Cgroup},
    },
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
    /// over `request.confirm` when that is set; the result comes back as
    /// [`Completion::Enforced`]. For a [`Reaching::Find`], nothing is sent:
    /// the processes found come back as [`Completion::Found`].
    fn enforce(&mut self, request: Enforcement<Self::Handle>);

    /// Reads the PSS of `request.pids`; it comes back as
    /// [`Completion::Measured`].
    fn measure(&mut self, request: Measure<Self::Handle>);

    /// Reads the cgroup of the process behind `handle` (for the alerts'
    /// story, while it is there to be read); it comes back as
    /// [`Completion::Cgroup`].
    fn read_cgroup(&mut self, pid: u32, handle: Self::Handle);

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
    /// Send only if the process is still above this.
    pub(crate) confirm: Option<Confirm>,
    /// Why.
    pub(crate) purpose: Purpose,
    /// What the signal reaches.
    pub(crate) reaching: Reaching<H>,
    /// When the kernel saw the breach (`CLOCK_MONOTONIC` ns), if it did.
    pub(crate) seen_ns: Option<u64>,
    /// The record to complete and log.
    pub(crate) record: ActionRecord,
}

/// The read that confirms a breach before a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Confirm {
    /// The limit, in bytes.
    pub(crate) over: u64,
    /// What it counts.
    pub(crate) memory: Memory,
}

/// What a signal reaches.
#[derive(Clone, Debug)]
pub(crate) enum Reaching<H> {
    /// The process alone.
    Process,
    /// Its process group or cgroup: the system finds its processes
    /// ([`Completion::Found`]) and the guard chooses among them.
    Find(KillTarget),
    /// The processes the guard chose.
    Chosen(Plan<H>),
}

/// The other processes of a group or cgroup, as the system found them.
#[derive(Clone, Debug)]
pub(crate) struct Found<H> {
    /// What holds them.
    pub(crate) whole: Whole,
    /// Each (but the process over its limit) as read with its handle, or
    /// with why no handle could be opened.
    pub(crate) members: Vec<(ProcInfo, Result<H, String>)>,
}

/// What holds the processes a signal is to reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Whole {
    /// A process group.
    Group {
        /// Its id.
        pgid: u32,
    },
    /// A cgroup.
    Cgroup {
        /// Where it is.
        cgroup: Cgroup,
        /// It has `cgroup.kill`.
        kill_file: bool,
    },
    /// The process's cgroup could not be found: why.
    NoCgroup(String),
}

/// One process the guard chose to signal.
#[derive(Clone, Debug)]
pub(crate) struct Chosen<H> {
    /// The process.
    pub(crate) pid: u32,
    /// Its name, for the record.
    pub(crate) name: String,
    /// Its handle; `None` only where `cgroup.kill` reaches it.
    pub(crate) handle: Option<H>,
}

/// How the guard chose to signal a group or cgroup.
#[derive(Clone, Debug)]
pub(crate) struct Plan<H> {
    /// How they are reached, for the record.
    pub(crate) reach: Reach,
    /// Who is signalled, the process over its limit first.
    pub(crate) chosen: Vec<Chosen<H>>,
    /// Empty this cgroup at once with `cgroup.kill` instead of signalling
    /// each (SIGKILL only).
    pub(crate) cgroup_kill: Option<PathBuf>,
    /// Who is not signalled, and why.
    pub(crate) left: Vec<Member>,
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
    /// A [`Plan`] was carried out: what became of each one chosen.
    Reached(Vec<Member>),
}

/// Whose PSS is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PssOf {
    /// A process under a per-process limit.
    Process(u32),
    /// The processes of a total-scope limit (by index).
    Total(usize),
}

/// PSS to read.
#[derive(Clone, Debug)]
pub(crate) struct Measure<H> {
    /// For what.
    pub(crate) of: PssOf,
    /// The processes, with their handles.
    pub(crate) pids: Vec<(u32, H)>,
    /// The RSS (or the sum) that made the read needed.
    pub(crate) rss: u64,
    /// When the kernel saw the crossing (`CLOCK_MONOTONIC` ns), if it did.
    pub(crate) seen_ns: Option<u64>,
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
    /// The processes of a group or cgroup were found
    /// ([`Reaching::Find`]); nothing was sent yet.
    Found {
        /// What was asked.
        request: Box<Enforcement<H>>,
        /// What was found.
        found: Found<H>,
    },
    /// PSS was read.
    Measured {
        /// What was asked.
        request: Measure<H>,
        /// Each process's PSS in bytes; `None` when it exited first.
        pss: Vec<(u32, Option<u64>)>,
    },
    /// A timer fired.
    Timer(Timer<H>),
    /// The cgroup of a process was read ([`System::read_cgroup`]).
    Cgroup {
        /// The process.
        pid: u32,
        /// Its handle when asked.
        handle: H,
        /// The cgroup's path in its hierarchy, if it could be read.
        path: Option<String>,
    },
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
            let completion = match carry_out(&request) {
                Step::Done(result, sent_ns) => Completion::Enforced {
                    request: Box::new(request),
                    result,
                    sent_ns,
                },
                Step::Found(found) => Completion::Found {
                    request: Box::new(request),
                    found,
                },
            };
            let _ = done.send(completion);
        });
    }

    fn read_cgroup(&mut self, pid: u32, handle: Pidfd) {
        let done = self.done.clone();
        tokio::task::spawn_blocking(move || {
            // Read first, then check the pidfd: a reused PID's file is not taken.
            let path = cgroup::path_of(pid).filter(|_| !handle.exited());
            let _ = done.send(Completion::Cgroup { pid, handle, path });
        });
    }

    fn measure(&mut self, request: Measure<Pidfd>) {
        let done = self.done.clone();
        tokio::task::spawn_blocking(move || {
            let pss = request
                .pids
                .iter()
                .map(|(pid, handle)| {
                    // Read first, then check the pidfd, as for a confirmation.
                    let pss = scan::read_pss(*pid);
                    (*pid, pss.filter(|_| !handle.exited()))
                })
                .collect();
            let _ = done.send(Completion::Measured { request, pss });
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

/// Where carrying out an [`Enforcement`] ended.
enum Step {
    /// Done: how it went, and when the signal left.
    Done(Enforced, Option<u64>),
    /// The processes to reach were found; the guard chooses.
    Found(Found<Pidfd>),
}

/// Confirms (when asked), then sends, finds the processes to reach, or
/// carries out the guard's plan; runs on the blocking pool.
fn carry_out(request: &Enforcement<Pidfd>) -> Step {
    if let Some(confirm) = request.confirm {
        // Read first, then check the pidfd: a live pidfd after the read
        // means the read was of its process, not of a newcomer at the PID.
        let now = scan::read_memory(request.pid, confirm.memory);
        if request.handle.exited() {
            return Step::Done(Enforced::Delivered(Delivery::Gone), None);
        }
        if let Some(now) = now.filter(|&now| now <= confirm.over) {
            return Step::Done(Enforced::Under(now), None);
        }
    }
    match &request.reaching {
        Reaching::Process => match request.handle.send(request.signal) {
            Ok(delivery) => Step::Done(Enforced::Delivered(delivery), Some(sys::monotonic_ns())),
            Err(err) => Step::Done(Enforced::Failed(err.to_string()), None),
        },
        Reaching::Find(kill) => match find(*kill, request.pid, &request.handle) {
            Some(found) => Step::Found(found),
            None => Step::Done(Enforced::Delivered(Delivery::Gone), None),
        },
        Reaching::Chosen(plan) => {
            let members = reach(plan, request.signal);
            let sent = members.iter().any(|m| m.result == MemberResult::Sent);
            Step::Done(Enforced::Reached(members), sent.then(sys::monotonic_ns))
        }
    }
}

/// The other processes of `pid`'s group or cgroup, each read with a
/// handle opened before the read; `None` when `pid` is gone.
fn find(kill: KillTarget, pid: u32, handle: &Pidfd) -> Option<Found<Pidfd>> {
    let (whole, others) = match kill {
        KillTarget::Group | KillTarget::Process => {
            let pgid = scan::read_process(pid).ok()?.pgrp;
            (Whole::Group { pgid }, scan::group_members(pgid, pid))
        }
        KillTarget::Cgroup => match cgroup::of(pid) {
            Ok(found) => {
                let others = cgroup::processes(&found.dir)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|&other| other != pid)
                    .collect();
                let kill_file = found.has_kill();
                (
                    Whole::Cgroup {
                        cgroup: found,
                        kill_file,
                    },
                    others,
                )
            }
            Err(reason) => (Whole::NoCgroup(reason), Vec::new()),
        },
    };
    // Read before this check: the group or cgroup was the live process's.
    if handle.exited() {
        return None;
    }
    let members = others
        .into_iter()
        .filter_map(|other| {
            let (info, handle) = scan::read_with_handle(other).ok()?;
            // It may have moved to another group since it was listed.
            if let Whole::Group { pgid } = whole
                && info.pgrp != pgid
            {
                return None;
            }
            let handle = handle.ok_or_else(|| "no pidfd could be opened".to_owned());
            Some((info, handle))
        })
        .collect();
    Some(Found { whole, members })
}

/// Signals every process `plan` chose, or empties its cgroup.
fn reach(plan: &Plan<Pidfd>, signal: Signal) -> Vec<Member> {
    let member = |chosen: &Chosen<Pidfd>, result| Member {
        pid: chosen.pid,
        name: chosen.name.clone(),
        result,
    };
    if let Some(dir) = &plan.cgroup_kill {
        let gone: Vec<bool> = plan
            .chosen
            .iter()
            .map(|c| c.handle.as_ref().is_some_and(Pidfd::exited))
            .collect();
        let result = cgroup::kill(dir);
        return plan
            .chosen
            .iter()
            .zip(gone)
            .map(|(chosen, gone)| {
                let result = match (&result, gone) {
                    (Err(err), _) => MemberResult::Failed {
                        error: format!("writing cgroup.kill: {err}"),
                    },
                    (Ok(()), true) => MemberResult::Gone,
                    (Ok(()), false) => MemberResult::Sent,
                };
                member(chosen, result)
            })
            .collect();
    }
    plan.chosen
        .iter()
        .map(|chosen| {
            let result = match chosen.handle.as_ref().map(|h| h.send(signal)) {
                Some(Ok(Delivery::Sent)) => MemberResult::Sent,
                Some(Ok(Delivery::Gone)) => MemberResult::Gone,
                Some(Err(err)) => MemberResult::Failed {
                    error: err.to_string(),
                },
                None => MemberResult::Failed {
                    error: "no pidfd".to_owned(),
                },
            };
            member(chosen, result)
        })
        .collect()
}
