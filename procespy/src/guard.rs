//! The processes a limit covers, and what is done when they breach it.
//!
//! The guard keeps, for every covered process, a pidfd opened when the
//! process was matched: every signal goes through it, so a PID that was
//! reused meanwhile is never signalled. It tells the kernel which processes
//! to follow and with which limit, and turns breaches (reported by the
//! kernel, or found by an examination in proc mode) into verdicts
//! ([`rules::decide`]) and verdicts into signals and [`ActionRecord`]s.

use std::{
    collections::{HashMap, VecDeque},
    os::fd::OwnedFd,
    sync::Arc,
    time::Duration,
};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::{
    config::{Action, Config, Limit, Scope},
    ebpf::{Kernel, WatchSpec},
    enforce::{self, ActionRecord, Delivery, Signal},
    process::Rss,
    rules::{self, Subject, Verdict},
    table::{Entry, Table},
    users::UserNames,
};

/// How many action records `procespy status` keeps.
const KEPT_ACTIONS: usize = 100;

/// A signal whose time has come: sent by the timer tasks back to the loop.
#[derive(Debug)]
pub struct Deferred {
    /// The process.
    pub pid: u32,
    /// Its pidfd, from when it was matched.
    pub pidfd: Arc<OwnedFd>,
    /// What to do now.
    pub step: Step,
}

/// The steps of an action that wait for a timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this signal (deferred only by the test delay).
    Send(Signal),
    /// The grace after SIGTERM is over: SIGKILL if still over the limit.
    GraceOver,
}

/// One covered process.
struct Guarded {
    limit: usize,
    /// What the kernel was told about it.
    spec: WatchSpec,
    pidfd: Arc<OwnedFd>,
    /// Last RSS the guard heard of (Usage events, examinations).
    rss: u64,
    /// Over the limit since the last crossing (proc mode and total scope).
    over: bool,
    /// A signal was sent or scheduled: no second verdict until it exits.
    acting: bool,
}

/// The covered processes, their groups, and the record of actions.
pub struct Guard {
    config: Config,
    dry_run: bool,
    own_pid: u32,
    page_size: u64,
    guarded: HashMap<u32, Guarded>,
    /// Total-scope limits (by index) that are over their sum.
    groups_over: HashMap<usize, bool>,
    actions: VecDeque<ActionRecord>,
    deferred: mpsc::UnboundedSender<Deferred>,
    /// Delay between a verdict and its signal; only for tests of PID reuse.
    act_delay: Option<Duration>,
    users: UserNames,
    new_actions: Vec<ActionRecord>,
}

impl Guard {
    /// A guard for `config`; deferred steps are sent to `deferred`.
    pub fn new(config: Config, dry_run: bool, deferred: mpsc::UnboundedSender<Deferred>) -> Self {
        let act_delay = std::env::var("PROCESPY_TEST_ACT_DELAY_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(Duration::from_millis);
        enforce::raise_fd_limit();
        if let Some(delay) = act_delay {
            tracing::warn!("PROCESPY_TEST_ACT_DELAY_MS is set: every signal waits {delay:?}");
        }
        Guard {
            config,
            dry_run,
            own_pid: std::process::id(),
            page_size: page_size(),
            guarded: HashMap::new(),
            groups_over: HashMap::new(),
            actions: VecDeque::new(),
            deferred,
            act_delay,
            users: UserNames::default(),
            new_actions: Vec::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Puts `config` in force and matches every process again.
    pub fn replace_config(&mut self, config: Config, table: &Table, kernel: Option<&mut Kernel>) {
        self.config = config;
        self.groups_over.clear();
        let pids: Vec<u32> = table.entries().map(|e| e.pid).collect();
        let mut kernel = kernel;
        for pid in pids {
            self.rematch(pid, table, kernel.as_deref_mut(), true);
        }
    }

    /// Matches `pid` against the limits again (after exec, rename, an
    /// examination) and tells the kernel when the outcome changed, or when
    /// `force` says the kernel forgot (exec resets the kernel's entry).
    pub fn rematch(&mut self, pid: u32, table: &Table, kernel: Option<&mut Kernel>, force: bool) {
        let Some(entry) = table.get(pid) else {
            self.forget(pid, kernel);
            return;
        };
        let Some(limit) = rules::limit_for(&self.config.limits, &subject(entry)) else {
            self.forget(pid, kernel);
            return;
        };
        let index = limit.index;
        let spec = self.watch_spec(limit, entry);
        // A new name can change the spec without changing the limit (a
        // rename into `protect` must drop kill-now in the kernel).
        let (pidfd, changed) = match self.guarded.get_mut(&pid) {
            Some(guarded) if guarded.limit == index && guarded.spec == spec => {
                (Arc::clone(&guarded.pidfd), false)
            }
            Some(guarded) => {
                if guarded.limit != index {
                    guarded.over = false;
                }
                guarded.limit = index;
                guarded.spec = spec;
                (Arc::clone(&guarded.pidfd), true)
            }
            None => {
                let Some(pidfd) = open_verified(entry) else {
                    return; // gone already; its exit event follows
                };
                let pidfd = Arc::new(pidfd);
                self.guarded.insert(
                    pid,
                    Guarded {
                        limit: index,
                        spec,
                        pidfd: Arc::clone(&pidfd),
                        rss: entry.rss.total(),
                        over: false,
                        acting: false,
                    },
                );
                (pidfd, true)
            }
        };
        if (changed || force)
            && let Some(kernel) = kernel
            && let Err(err) = kernel.watch(pid, &pidfd, spec)
        {
            tracing::warn!("cannot follow {pid} in the kernel: {err:#}");
        }
    }

    fn watch_spec(&self, limit: &Limit, entry: &Entry) -> WatchSpec {
        let protected =
            rules::protection(&subject(entry), &self.config.enforce.protect, self.own_pid)
                .is_some();
        match limit.scope {
            Scope::Process => WatchSpec {
                limit_bytes: limit.max_memory,
                kill_now: limit.action == Action::KillNow && !self.dry_run() && !protected,
                report_usage: false,
            },
            Scope::Total => WatchSpec {
                limit_bytes: 0,
                kill_now: false,
                report_usage: true,
            },
        }
    }

    /// Whether signals are withheld (`--dry-run` or `[enforce] dry_run`).
    pub fn dry_run(&self) -> bool {
        self.dry_run || self.config.enforce.dry_run
    }

    /// Forgets `pid` (it exited, or no limit covers it any more).
    pub fn forget(&mut self, pid: u32, kernel: Option<&mut Kernel>) {
        if self.guarded.remove(&pid).is_some()
            && let Some(kernel) = kernel
        {
            kernel.unwatch(pid);
        }
    }

    /// A breach reported by the kernel at the page that crossed the limit.
    ///
    /// `ktime_ns` is when the kernel saw it (CLOCK_MONOTONIC): a signal sent
    /// for it logs how long userspace took, as `breach_to_signal_us`.
    pub fn on_kernel_breach(
        &mut self,
        pid: u32,
        rss: u64,
        killed: bool,
        ktime_ns: u64,
        table: &Table,
    ) {
        let Some(guarded) = self.guarded.get(&pid) else {
            tracing::debug!(pid, "breach of a process no limit covers any more: ignored");
            return;
        };
        let limit = guarded.limit;
        self.act(pid, limit, rss, killed, Some(ktime_ns), table);
    }

    /// A process of a total-scope limit moved to another MiB.
    pub fn on_usage(&mut self, pid: u32, rss: u64, table: &Table) {
        let Some(guarded) = self.guarded.get_mut(&pid) else {
            return;
        };
        guarded.rss = rss;
        let limit = guarded.limit;
        self.check_group(limit, table);
    }

    /// After an examination: updates RSS figures (the kernel's where it
    /// follows the process, else the table's) and, in proc mode (no
    /// `kernel`), finds the breaches.
    pub fn after_examination(&mut self, table: &Table, kernel: Option<&Kernel>) {
        let polling = kernel.is_none();
        let pids: Vec<u32> = self.guarded.keys().copied().collect();
        let mut groups = Vec::new();
        for pid in pids {
            let Some(entry) = table.get(pid) else {
                continue;
            };
            let Some(guarded) = self.guarded.get_mut(&pid) else {
                continue;
            };
            let Some(limit) = self.config.limits.get(guarded.limit) else {
                continue;
            };
            if polling || limit.scope == Scope::Total {
                guarded.rss = Self::rss_of(pid, entry, kernel).0.total();
            }
            match limit.scope {
                Scope::Total => groups.push(limit.index),
                Scope::Process if polling => {
                    let over = guarded.rss > limit.max_memory;
                    let crossed = over && !guarded.over;
                    guarded.over = over;
                    if crossed {
                        let (index, rss) = (limit.index, guarded.rss);
                        self.act(pid, index, rss, false, None, table);
                    }
                }
                Scope::Process => {}
            }
        }
        groups.sort_unstable();
        groups.dedup();
        for index in groups {
            self.check_group(index, table);
        }
    }

    fn check_group(&mut self, index: usize, table: &Table) {
        let Some(limit) = self.config.limits.get(index) else {
            return;
        };
        let max = limit.max_memory;
        let members: Vec<(u32, u64, bool)> = self
            .guarded
            .iter()
            .filter(|(_, g)| g.limit == index)
            .map(|(&pid, g)| {
                let protected = table.get(pid).is_none_or(|entry| {
                    rules::protection(&subject(entry), &self.config.enforce.protect, self.own_pid)
                        .is_some()
                });
                (pid, g.rss, protected || g.acting)
            })
            .collect();
        let sum: u64 = members.iter().map(|m| m.1).sum();
        let was_over = self.groups_over.get(&index).copied().unwrap_or(false);
        self.groups_over.insert(index, sum > max);
        if sum <= max || was_over {
            return;
        }
        tracing::info!(rule = %limit.label, sum, limit = max, "the sum over {} processes crossed the limit", members.len());
        for pid in rules::total_victims(&members, max) {
            let rss = self.guarded.get(&pid).map_or(0, |g| g.rss);
            self.act(pid, index, rss, false, None, table);
        }
    }

    /// Decides about `pid`, over limit `index` with `rss`, and acts.
    /// `seen_ns`: when the kernel saw the breach (CLOCK_MONOTONIC), if it did.
    fn act(
        &mut self,
        pid: u32,
        index: usize,
        rss: u64,
        kernel_killed: bool,
        seen_ns: Option<u64>,
        table: &Table,
    ) {
        let Some(limit) = self.config.limits.get(index) else {
            return;
        };
        let Some(entry) = table.get(pid) else { return };
        if self.guarded.get(&pid).is_some_and(|g| g.acting) && !kernel_killed {
            return;
        }
        let mut enforce = self.config.enforce.clone();
        enforce.dry_run = self.dry_run();
        let verdict = rules::decide(
            limit,
            &enforce,
            &subject(entry),
            self.own_pid,
            kernel_killed,
        );
        let mut record = ActionRecord {
            time: enforce::now_epoch(),
            pid,
            name: entry.name_lossy(),
            user: self.users.name(entry.uid),
            rss,
            limit: limit.max_memory,
            rule: limit.label.clone(),
            action: String::new(),
            result: String::new(),
        };
        let signal = match &verdict {
            Verdict::KilledByKernel => {
                (record.action, record.result) = ("SIGKILL (kernel)".into(), "sent".into());
                None
            }
            Verdict::Alert => {
                (record.action, record.result) = ("alert".into(), "over the limit".into());
                None
            }
            Verdict::Refused(protection) => {
                (record.action, record.result) = ("none".into(), format!("refused: {protection}"));
                None
            }
            Verdict::DryRun(inner) => {
                let would = match **inner {
                    Verdict::Kill => "SIGKILL",
                    _ => "SIGTERM",
                };
                (record.action, record.result) = (would.into(), "dry-run: not sent".into());
                None
            }
            Verdict::Terminate { .. } => Some(Signal::Term),
            Verdict::Kill => Some(Signal::Kill),
        };
        let Some(signal) = signal else {
            self.record(record);
            return;
        };
        // From userspace, confirm with /proc before acting: the process may
        // have shrunk since the event.
        if limit.scope == Scope::Process
            && let Some(now) = enforce::statm_rss(pid, self.page_size)
            && now <= limit.max_memory
        {
            (record.action, record.result) = (
                "none".into(),
                format!("under the limit on confirmation ({now} bytes)"),
            );
            self.record(record);
            return;
        }
        let Some(guarded) = self.guarded.get_mut(&pid) else {
            return;
        };
        guarded.acting = true;
        let pidfd = Arc::clone(&guarded.pidfd);
        tracing::info!(event = "decision", pid, action = signal.name(), rule = %limit.label, "decided to send {} to {pid}", signal.name());
        match self.act_delay {
            Some(delay) => self.schedule(pid, pidfd, Step::Send(signal), delay),
            None => self.send(pid, &pidfd, signal, record, seen_ns),
        }
    }

    /// Sends `signal` and records how it went; `seen_ns` as for [`Guard::act`].
    fn send(
        &mut self,
        pid: u32,
        pidfd: &Arc<OwnedFd>,
        signal: Signal,
        mut record: ActionRecord,
        seen_ns: Option<u64>,
    ) {
        record.action = signal.name().into();
        record.result = match enforce::send(pidfd, signal) {
            Ok(Delivery::Sent) => "sent".into(),
            Ok(Delivery::Gone) => "gone: the process exited first".into(),
            Err(err) => format!("failed: {err}"),
        };
        let sent = record.result == "sent";
        if let Some(seen) = seen_ns.filter(|_| sent) {
            let micros = enforce::monotonic_ns().saturating_sub(seen) / 1000;
            tracing::debug!(
                event = "reaction",
                pid,
                signal = signal.name(),
                breach_to_signal_us = micros,
                "{} sent {micros} µs after the kernel saw the breach",
                signal.name()
            );
        }
        self.record(record);
        if sent && signal == Signal::Term {
            self.schedule(
                pid,
                Arc::clone(pidfd),
                Step::GraceOver,
                self.config.enforce.grace,
            );
        }
    }

    fn schedule(&self, pid: u32, pidfd: Arc<OwnedFd>, step: Step, after: Duration) {
        let tx = self.deferred.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(Deferred { pid, pidfd, step });
        });
    }

    /// A timer fired: send the deferred signal, or end the grace.
    pub fn on_deferred(&mut self, deferred: Deferred, table: &Table) {
        let Deferred { pid, pidfd, step } = deferred;
        let index = self
            .guarded
            .get(&pid)
            .filter(|g| Arc::ptr_eq(&g.pidfd, &pidfd))
            .map(|g| g.limit);
        let limit = index.and_then(|i| self.config.limits.get(i));
        let mut record = ActionRecord {
            time: enforce::now_epoch(),
            pid,
            name: table.get(pid).map(Entry::name_lossy).unwrap_or_default(),
            user: self.users.name(table.get(pid).and_then(|e| e.uid)),
            rss: enforce::statm_rss(pid, self.page_size).unwrap_or(0),
            limit: limit.map_or(0, |l| l.max_memory),
            rule: limit.map(|l| l.label.clone()).unwrap_or_default(),
            action: String::new(),
            result: String::new(),
        };
        match step {
            Step::Send(signal) => self.send(pid, &pidfd, signal, record, None),
            Step::GraceOver => {
                if enforce::has_exited(&pidfd) {
                    return; // it heeded SIGTERM
                }
                if record.limit > 0
                    && record.rss <= record.limit
                    && limit.is_some_and(|l| l.scope == Scope::Process)
                {
                    (record.action, record.result) =
                        ("none".into(), "back under the limit after grace".into());
                    if let Some(g) = self.guarded.get_mut(&pid) {
                        g.acting = false;
                    }
                    self.record(record);
                    return;
                }
                self.send(pid, &pidfd, Signal::Kill, record, None);
            }
        }
    }

    fn record(&mut self, record: ActionRecord) {
        record.log();
        if self.actions.len() == KEPT_ACTIONS {
            self.actions.pop_front();
        }
        self.actions.push_back(record.clone());
        self.new_actions.push(record);
    }

    /// Actions recorded since the last call (for alerts).
    pub fn take_new_actions(&mut self) -> Vec<ActionRecord> {
        std::mem::take(&mut self.new_actions)
    }

    /// The last actions, oldest first.
    pub fn actions(&self) -> impl DoubleEndedIterator<Item = &ActionRecord> {
        self.actions.iter()
    }

    /// The RSS of a covered process: the kernel's figure where it follows
    /// the process, else the last read of `/proc`.
    fn rss_of(pid: u32, entry: &Entry, kernel: Option<&Kernel>) -> (Rss, &'static str) {
        match kernel.and_then(|k| k.rss(pid)) {
            Some(k) => (k.rss, "ebpf"),
            None => (entry.rss, "proc"),
        }
    }

    /// Every covered process as (limit index, RSS in bytes), for metrics.
    pub fn covered(&self, table: &Table, kernel: Option<&Kernel>) -> Vec<(usize, u64)> {
        self.guarded
            .iter()
            .filter_map(|(&pid, g)| {
                let entry = table.get(pid)?;
                Some((g.limit, Self::rss_of(pid, entry, kernel).0.total()))
            })
            .collect()
    }

    /// The covered processes for `procespy status`, largest first.
    pub fn watched_status(&self, table: &Table, kernel: Option<&Kernel>) -> Vec<Value> {
        let mut list: Vec<Value> = self
            .guarded
            .iter()
            .filter_map(|(&pid, g)| {
                let entry = table.get(pid)?;
                let limit = self.config.limits.get(g.limit)?;
                let (rss, source) = Self::rss_of(pid, entry, kernel);
                let percent = rss.total() as f64 * 100.0 / limit.max_memory.max(1) as f64;
                Some(json!({
                    "pid": pid,
                    "name": entry.name_lossy(),
                    "user": self.users.name(entry.uid),
                    "rss_bytes": rss.total(),
                    "rss": rss,
                    "rss_source": source,
                    "limit_bytes": limit.max_memory,
                    "limit_percent": percent,
                    "rule": limit.label,
                    "scope": limit.scope,
                    "action": limit.action,
                }))
            })
            .collect();
        list.sort_by_key(|p| std::cmp::Reverse(p["rss_bytes"].as_u64().unwrap_or(0)));
        list
    }
}

/// The rules' view of a table entry.
fn subject(entry: &Entry) -> Subject<'_> {
    Subject {
        pid: entry.pid,
        comm: &entry.comm,
        exe: entry.exe.as_deref(),
        cmdline: &entry.cmdline,
        uid: entry.uid,
        kernel_thread: false,
    }
}

/// Opens a pidfd for the entry's process and checks that the PID still
/// belongs to it (same start time), so the pidfd cannot pin another process.
fn open_verified(entry: &Entry) -> Option<OwnedFd> {
    let pidfd = enforce::pidfd_open(entry.pid).ok()?;
    if let Some(start) = entry.start_ticks {
        let now = crate::scan::read_process(entry.pid).ok()?;
        if now.start_ticks != start {
            tracing::debug!(
                pid = entry.pid,
                "PID reused before it could be matched: skipped"
            );
            return None;
        }
    }
    Some(pidfd)
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|size| u64::try_from(size).ok())
        .unwrap_or(4096)
}
