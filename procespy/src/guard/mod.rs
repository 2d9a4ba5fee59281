//! The processes a limit covers, and what is done when they breach it.
//!
//! The guard keeps, for every covered process, a handle (a pidfd) on it:
//! every signal goes through it, so a PID that was reused meanwhile is
//! never signalled. It tells the kernel which processes to follow and with
//! which limit, and turns breaches (reported by the kernel, or found by an
//! examination in proc mode) into verdicts ([`rules::decide`]) and verdicts
//! into signals and [`ActionRecord`]s.
//!
//! The guard decides; its [`System`] acts. Every effect (opening a handle,
//! confirming and sending a signal, reading PSS, finding a process's group
//! or cgroup, a timer) is asked of the system and comes back as a
//! [`Completion`], so the guard is plain state, unit-tested with a fake
//! system and a fake kernel.
//!
//! What a limit counts: RSS; RSS and swap (`rss+swap`, which the kernel
//! counts too); or PSS, read only once the RSS passed the limit
//! ([`pss`]). What a signal reaches: the process; its process group; or
//! its cgroup ([`reach`]).

mod pss;
mod reach;
mod system;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};

pub(crate) use system::{Completion, NoHandle, Real};
use system::{
    Confirm, Enforced, Enforcement, Found, Measure, PssOf, Purpose, Reaching, System, Timer,
};

use crate::{
    action::{ActionRecord, MemberResult, Outcome},
    config::{Action, Config, KillTarget, Limit, Memory, Scope},
    ebpf::{KernelRss, WatchSpec},
    process::{Rss, Source},
    report::WatchedProcess,
    rules::{self, Subject, Verdict},
    sys::{Delivery, Signal},
    table::{Entry, Table},
};

/// How many action records `procespy status` keeps.
const KEPT_ACTIONS: usize = 100;

/// What the guard needs of the kernel side (eBPF mode): which processes it
/// follows, with which limit, and what its counters say.
pub(crate) trait KernelWatch<H> {
    /// Follows `pid` (whose handle is `handle`) as `spec` says.
    fn watch(&mut self, pid: u32, handle: &H, spec: WatchSpec) -> anyhow::Result<()>;
    /// Stops following `pid`.
    fn unwatch(&mut self, pid: u32);
    /// `pid` exited (the kernel forgot it already): its bookkeeping goes.
    fn exited(&mut self, pid: u32);
    /// The kernel's figures for `pid`, if it follows it and has read them.
    fn rss(&self, pid: u32) -> Option<KernelRss>;
    /// Reports `pid`'s next crossing of `limit_bytes` instead of its
    /// limit's (a PSS limit's next read); its counters stay as they are.
    fn rearm(&mut self, pid: u32, limit_bytes: u64);
}

/// One covered process.
#[derive(Debug)]
struct Guarded<H> {
    /// The limit's index.
    limit: usize,
    /// What the kernel was told about it.
    spec: WatchSpec,
    /// Protected at the last match (a protected process is never signalled).
    protected: bool,
    /// The handle; `None` until the system brings it.
    handle: Option<H>,
    /// Why it cannot be followed (no handle, no room in the kernel's map),
    /// if it cannot: counted in status and metrics, retried at every
    /// examination.
    unfollowed: Option<String>,
    /// What its limit counts, as last heard of (usage events,
    /// examinations): RSS, with swap for `rss+swap`.
    rss: u64,
    /// This crossing of a per-process limit was decided on already; cleared
    /// when the process is seen back under, or its limit changes.
    over: bool,
    /// Its PSS reads (a per-process PSS limit).
    pss: pss::Gate,
    /// A signal was sent or is on its way: no second verdict until it ends.
    acting: bool,
    /// The kernel's SIGKILL stopped it at the faulting page (kill-now).
    killed_by_kernel: bool,
    /// A breach that came before the handle: (RSS, when the kernel saw it).
    pending: Option<(u64, Option<u64>)>,
    /// Above its limit's warning threshold and warned about; cleared when
    /// seen back under it, or its limit changes.
    warned: bool,
    /// Its cgroup's path, read once it had a handle (for the alerts).
    cgroup: Option<String>,
}

/// The covered processes, their groups, and the record of actions.
pub(crate) struct Guard<S: System> {
    sys: S,
    config: Config,
    dry_run: bool,
    own_pid: u32,
    guarded: HashMap<u32, Guarded<S::Handle>>,
    /// Total-scope limits (by index) that are over their sum.
    groups_over: HashMap<usize, bool>,
    /// The PSS reads of total-scope PSS limits (by index).
    groups_pss: HashMap<usize, pss::Gate>,
    actions: VecDeque<ActionRecord>,
    new_actions: Vec<ActionRecord>,
}

impl<S: System> Guard<S> {
    /// A guard for `config` acting through `sys`; `dry_run` withholds every
    /// signal (as `[enforce] dry_run` does).
    pub(crate) fn new(sys: S, config: Config, dry_run: bool) -> Self {
        Guard {
            sys,
            config,
            dry_run,
            own_pid: std::process::id(),
            guarded: HashMap::new(),
            groups_over: HashMap::new(),
            groups_pss: HashMap::new(),
            actions: VecDeque::new(),
            new_actions: Vec::new(),
        }
    }

    /// The configuration in force.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// Whether signals are withheld (`--dry-run` or `[enforce] dry_run`).
    pub(crate) fn dry_run(&self) -> bool {
        self.dry_run || self.config.enforce.dry_run
    }

    /// Puts `config` in force and matches every process again.
    pub(crate) fn replace_config(
        &mut self,
        config: Config,
        table: &Table,
        mut kernel: Option<&mut (dyn KernelWatch<S::Handle> + 'static)>,
    ) {
        self.config = config;
        self.groups_over.clear();
        self.groups_pss.clear();
        let pids: Vec<u32> = table.entries().map(|e| e.pid).collect();
        for pid in pids {
            self.rematch(pid, table, kernel.as_deref_mut(), true, None);
        }
    }

    /// Matches `pid` against the limits again (after exec, rename, an
    /// examination) and tells the kernel when the outcome changed, or when
    /// `force` says the kernel forgot (exec resets the kernel's entry).
    /// `fresh` is a handle opened with the read the table just took in.
    pub(crate) fn rematch(
        &mut self,
        pid: u32,
        table: &Table,
        mut kernel: Option<&mut (dyn KernelWatch<S::Handle> + 'static)>,
        force: bool,
        fresh: Option<S::Handle>,
    ) {
        let Some(entry) = table.get(pid) else {
            self.forget(pid, kernel);
            return;
        };
        let Some(limit) = rules::limit_for(&self.config.limits, &subject(entry)) else {
            self.forget(pid, kernel);
            return;
        };
        let index = limit.index;
        let protected = self.is_protected(entry);
        let spec = self.watch_spec(limit, protected);
        let changed = match self.guarded.get_mut(&pid) {
            Some(guarded) => {
                let changed = guarded.limit != index
                    || guarded.spec != spec
                    || guarded.protected != protected;
                guarded.protected = protected;
                if changed {
                    // A new limit, or the same one newly enforceable (a
                    // rename out of `protect`): decided anew.
                    guarded.over = false;
                    guarded.warned = false;
                }
                if changed || force {
                    // The kernel is told the limit itself again.
                    guarded.pss = pss::Gate::default();
                }
                guarded.limit = index;
                guarded.spec = spec;
                if guarded.handle.is_none()
                    && let Some(handle) = fresh
                {
                    guarded.handle = Some(handle.clone());
                    self.sys.read_cgroup(pid, handle);
                }
                changed
            }
            None => {
                match &fresh {
                    Some(handle) => self.sys.read_cgroup(pid, handle.clone()),
                    None => self.sys.request_handle(pid, entry.start_ticks),
                }
                self.guarded.insert(
                    pid,
                    Guarded {
                        limit: index,
                        spec,
                        protected,
                        handle: fresh,
                        unfollowed: None,
                        rss: entry.rss.total(),
                        over: false,
                        pss: pss::Gate::default(),
                        acting: false,
                        killed_by_kernel: false,
                        pending: None,
                        warned: false,
                        cgroup: None,
                    },
                );
                true
            }
        };
        if changed || force {
            self.tell_kernel(pid, kernel.as_deref_mut());
        }
        if changed {
            self.check_now(pid, table, kernel.as_deref());
        }
    }

    /// Acts on `pid` if it is over its per-process limit already: the kernel
    /// reports only crossings, so a process that was over before it was
    /// matched (running before procespy, grown while procespy was down, over
    /// a limit a reload lowered, renamed out of `protect`) is caught here.
    fn check_now(
        &mut self,
        pid: u32,
        table: &Table,
        kernel: Option<&(dyn KernelWatch<S::Handle> + 'static)>,
    ) {
        let (Some(entry), Some(guarded)) = (table.get(pid), self.guarded.get(&pid)) else {
            return;
        };
        let Some(limit) = self.config.limits.get(guarded.limit) else {
            return;
        };
        let rss = counted(pid, entry, kernel, limit.memory);
        if limit.scope == Scope::Process && rss > limit.max_memory && !guarded.over {
            let index = limit.index;
            self.breach(pid, index, rss, None, table);
        }
    }

    /// Tells the kernel about `pid`, once its handle is there.
    fn tell_kernel(
        &mut self,
        pid: u32,
        kernel: Option<&mut (dyn KernelWatch<S::Handle> + 'static)>,
    ) {
        let (Some(kernel), Some(guarded)) = (kernel, self.guarded.get(&pid)) else {
            return;
        };
        let Some(handle) = &guarded.handle else {
            return; // told when the handle comes
        };
        match kernel.watch(pid, handle, guarded.spec) {
            Ok(()) => {
                if let Some(guarded) = self.guarded.get_mut(&pid) {
                    guarded.unfollowed = None;
                }
            }
            Err(err) => self.unfollowable(pid, format!("the kernel cannot follow it: {err:#}")),
        }
    }

    /// `pid` is covered but cannot be followed: an error that names the
    /// limit, once per reason, and a count in status and metrics.
    fn unfollowable(&mut self, pid: u32, reason: String) {
        let Some(guarded) = self.guarded.get_mut(&pid) else {
            return;
        };
        if guarded.unfollowed.as_ref() != Some(&reason) {
            let rule = self
                .config
                .limits
                .get(guarded.limit)
                .map_or("?", |l| l.label.as_str());
            tracing::error!(
                event = "unfollowed",
                pid,
                rule = %crate::text::escape(rule),
                "process {pid}, covered by the limit {:?}, cannot be followed: {reason}",
                crate::text::escape(rule)
            );
        }
        guarded.unfollowed = Some(reason);
    }

    /// Covered processes that cannot be followed now.
    pub(crate) fn unfollowed(&self) -> usize {
        self.guarded
            .values()
            .filter(|g| g.unfollowed.is_some())
            .count()
    }

    fn is_protected(&self, entry: &Entry) -> bool {
        rules::protection(&subject(entry), &self.config.enforce.protect, self.own_pid).is_some()
    }

    /// What the kernel is told about a process `limit` covers. The kernel
    /// kills at the faulting page only the process alone: a group or
    /// cgroup is signalled from here, all at once.
    fn watch_spec(&self, limit: &Limit, protected: bool) -> WatchSpec {
        let count_swap = limit.memory == Memory::RssSwap;
        match limit.scope {
            Scope::Process => WatchSpec {
                limit_bytes: limit.max_memory,
                kill_now: limit.action == Action::KillNow
                    && limit.kill == KillTarget::Process
                    && !self.dry_run()
                    && !protected,
                report_usage: false,
                count_swap,
                warn_bytes: limit.warn_at,
            },
            Scope::Total => WatchSpec {
                limit_bytes: 0,
                kill_now: false,
                report_usage: true,
                count_swap,
                warn_bytes: None,
            },
        }
    }

    /// Forgets `pid` (it exited, or no limit covers it any more).
    pub(crate) fn forget(
        &mut self,
        pid: u32,
        kernel: Option<&mut (dyn KernelWatch<S::Handle> + 'static)>,
    ) {
        self.left(pid);
        // Also when the guard never knew it: a child may have inherited its
        // parent's entry in the kernel.
        if let Some(kernel) = kernel {
            kernel.unwatch(pid);
        }
    }

    /// `pid` is no longer covered. A total-scope PSS limit it counted in
    /// is decided anew at the next change: its sum, and the others' share
    /// of the pages it shared, changed.
    fn left(&mut self, pid: u32) {
        let Some(guarded) = self.guarded.remove(&pid) else {
            return;
        };
        let pss_total = self
            .config
            .limits
            .get(guarded.limit)
            .is_some_and(|l| l.scope == Scope::Total && l.memory == Memory::Pss);
        if pss_total {
            self.groups_over.remove(&guarded.limit);
            if let Some(gate) = self.groups_pss.get_mut(&guarded.limit) {
                gate.next_at = 0;
            }
        }
    }

    /// `pid` exited: the kernel forgot it by itself.
    pub(crate) fn exited(
        &mut self,
        pid: u32,
        kernel: Option<&mut (dyn KernelWatch<S::Handle> + 'static)>,
    ) {
        self.left(pid);
        if let Some(kernel) = kernel {
            kernel.exited(pid);
        }
    }

    /// Something the system was asked for is done.
    pub(crate) fn complete(
        &mut self,
        completion: Completion<S::Handle>,
        table: &Table,
        kernel: Option<&mut (dyn KernelWatch<S::Handle> + 'static)>,
    ) {
        match completion {
            Completion::Handle { pid, handle } => self.attach(pid, handle, table, kernel),
            Completion::Enforced {
                request,
                result,
                sent_ns,
            } => self.enforced(*request, result, sent_ns),
            Completion::Found { request, found } => self.found(*request, found),
            Completion::Measured { request, pss } => self.measured(request, &pss, table, kernel),
            Completion::Timer(Timer::GraceOver { pid, handle }) => {
                self.grace_over(pid, handle, table)
            }
            Completion::Cgroup { pid, handle, path } => {
                if let Some(guarded) = self
                    .guarded
                    .get_mut(&pid)
                    .filter(|g| g.handle.as_ref().is_some_and(|h| S::same(h, &handle)))
                {
                    guarded.cgroup = path;
                }
            }
        }
    }

    /// A handle asked for has come (or could not be had).
    fn attach(
        &mut self,
        pid: u32,
        handle: Result<S::Handle, NoHandle>,
        table: &Table,
        kernel: Option<&mut (dyn KernelWatch<S::Handle> + 'static)>,
    ) {
        let Some(guarded) = self.guarded.get_mut(&pid) else {
            return; // forgotten meanwhile: the handle is dropped
        };
        if guarded.handle.is_some() {
            return;
        }
        let handle = match handle {
            Ok(handle) => handle,
            Err(NoHandle::Gone) => {
                tracing::debug!(pid, "gone before it could be followed");
                self.guarded.remove(&pid);
                return;
            }
            Err(NoHandle::Failed(reason)) => {
                self.unfollowable(pid, reason);
                return;
            }
        };
        guarded.unfollowed = None;
        guarded.handle = Some(handle.clone());
        self.sys.read_cgroup(pid, handle);
        let pending = guarded.pending.take();
        let limit = guarded.limit;
        self.tell_kernel(pid, kernel);
        if let Some((rss, seen_ns)) = pending {
            self.breach(pid, limit, rss, seen_ns, table);
        }
    }

    /// A breach reported by the kernel at the page that crossed the limit.
    ///
    /// `seen_ns` is when the kernel saw it (CLOCK_MONOTONIC): a signal sent
    /// for it logs how long userspace took, as `breach_to_signal_us`.
    pub(crate) fn on_kernel_breach(
        &mut self,
        pid: u32,
        rss: u64,
        killed: bool,
        seen_ns: u64,
        table: &Table,
    ) {
        let Some(guarded) = self.guarded.get(&pid) else {
            tracing::debug!(
                pid,
                rss,
                seen_ns,
                killed,
                "breach of a process no limit covers any more: ignored"
            );
            return;
        };
        let limit = guarded.limit;
        if killed {
            self.act(pid, limit, rss, Decided::by_kernel(seen_ns), table);
        } else {
            self.breach(pid, limit, rss, Some(seen_ns), table);
        }
    }

    /// `pid` crossed its limit's warning threshold with `rss` (reported by
    /// the kernel, or found by an examination): one warning per crossing,
    /// none once it is over the limit or being stopped. The alerts'
    /// cooldown makes it one per period.
    pub(crate) fn on_warning(&mut self, pid: u32, rss: u64, table: &Table) {
        let Some(guarded) = self.guarded.get(&pid) else {
            return;
        };
        let Some(limit) = self.config.limits.get(guarded.limit) else {
            return;
        };
        let Some(warn_bytes) = limit.warn_at else {
            return;
        };
        if guarded.warned
            || guarded.acting
            || guarded.over
            || rss <= warn_bytes
            || rss > limit.max_memory
            || limit.scope != Scope::Process
        {
            return;
        }
        let mut record = self.record_for(pid, table.get(pid), Some(limit), rss);
        record.outcome = Outcome::Warned { warn_bytes };
        if let Some(guarded) = self.guarded.get_mut(&pid) {
            guarded.warned = true;
        }
        self.record(record);
    }

    /// Whether it follows `pid` (holds a handle on it).
    pub(crate) fn follows(&self, pid: u32) -> bool {
        self.guarded.contains_key(&pid)
    }

    /// The cgroup path of the covered process `pid`, once read.
    pub(crate) fn cgroup(&self, pid: u32) -> Option<&str> {
        self.guarded.get(&pid)?.cgroup.as_deref()
    }

    /// `pid` is over limit `index` by what the kernel or an examination
    /// counts (`rss`): acted on, or, for a PSS limit, its PSS read first.
    fn breach(&mut self, pid: u32, index: usize, rss: u64, seen_ns: Option<u64>, table: &Table) {
        let Some(limit) = self.config.limits.get(index) else {
            return;
        };
        if limit.memory == Memory::Pss {
            self.read_pss(pid, rss, seen_ns, true);
        } else {
            self.act(pid, index, rss, Decided::on(seen_ns), table);
        }
    }

    /// Reads the PSS of `pid`, a process under a per-process PSS limit over
    /// it by RSS, when its gate says so (`interval`: the examination asks).
    fn read_pss(&mut self, pid: u32, rss: u64, seen_ns: Option<u64>, interval: bool) {
        let Some(guarded) = self.guarded.get_mut(&pid) else {
            return;
        };
        if guarded.acting || !guarded.pss.due(rss, interval) {
            return;
        }
        let Some(handle) = guarded.handle.clone() else {
            guarded.pending = Some((rss, seen_ns));
            return; // read when the handle comes
        };
        guarded.pss.reading = true;
        self.sys.measure(Measure {
            of: PssOf::Process(pid),
            pids: vec![(pid, handle)],
            rss,
            seen_ns,
        });
    }

    /// PSS was read: decided on, or the next read armed.
    fn measured(
        &mut self,
        request: Measure<S::Handle>,
        pss: &[(u32, Option<u64>)],
        table: &Table,
        kernel: Option<&mut (dyn KernelWatch<S::Handle> + 'static)>,
    ) {
        match request.of {
            PssOf::Process(pid) => self.measured_process(pid, &request, pss, table, kernel),
            PssOf::Total(index) => self.measured_total(index, &request, pss, table),
        }
    }

    fn measured_process(
        &mut self,
        pid: u32,
        request: &Measure<S::Handle>,
        pss: &[(u32, Option<u64>)],
        table: &Table,
        kernel: Option<&mut (dyn KernelWatch<S::Handle> + 'static)>,
    ) {
        let Some(guarded) = self.guarded.get_mut(&pid) else {
            return;
        };
        let ours = request.pids.first().zip(guarded.handle.as_ref());
        if !ours.is_some_and(|((_, asked), have)| S::same(asked, have)) {
            return; // a read of a process the PID no longer means
        }
        guarded.pss.reading = false;
        let Some(limit) = self.config.limits.get(guarded.limit) else {
            return;
        };
        if limit.memory != Memory::Pss || limit.scope != Scope::Process {
            return; // reloaded meanwhile
        }
        let Some(value) = pss.iter().find(|p| p.0 == pid).and_then(|p| p.1) else {
            return; // it exited first
        };
        let (index, max) = (limit.index, limit.max_memory);
        tracing::debug!(
            event = "pss",
            pid,
            rss = request.rss,
            pss = value,
            limit = max,
            "process {pid}: RSS {} over the limit, PSS {value}",
            request.rss
        );
        if value > max {
            self.act(pid, index, value, Decided::on_read(request.seen_ns), table);
            return;
        }
        let next = pss::next_read_at(request.rss, value, max);
        guarded.pss.next_at = next;
        let Some(kernel) = kernel else {
            return; // proc mode: the examinations read again
        };
        kernel.rearm(pid, next);
        // Grown past it during the read: the crossing is behind already.
        if let Some(now) = kernel.rss(pid).map(|k| k.rss.total())
            && now >= next
        {
            self.read_pss(pid, now, None, false);
        }
    }

    fn measured_total(
        &mut self,
        index: usize,
        request: &Measure<S::Handle>,
        pss: &[(u32, Option<u64>)],
        table: &Table,
    ) {
        self.groups_pss.entry(index).or_default().reading = false;
        let Some(limit) = self.config.limits.get(index) else {
            return;
        };
        if limit.memory != Memory::Pss || limit.scope != Scope::Total {
            return;
        }
        let max = limit.max_memory;
        // Those read that are still covered by it; a newcomer counts at the next read.
        let members: Vec<(u32, u64, bool)> = pss
            .iter()
            .filter_map(|&(pid, value)| {
                let guarded = self.guarded.get(&pid).filter(|g| g.limit == index)?;
                let protected = table.get(pid).is_none_or(|entry| self.is_protected(entry));
                Some((pid, value?, protected || guarded.acting))
            })
            .collect();
        let sum: u64 = members.iter().map(|m| m.1).sum();
        tracing::debug!(
            event = "pss",
            rule = %crate::text::escape(&limit.label),
            rss = request.rss,
            pss = sum,
            limit = max,
            "the RSS sum {} is over the limit, the PSS sum over {} processes is {sum}",
            request.rss,
            members.len()
        );
        if sum <= max {
            self.groups_pss.entry(index).or_default().next_at =
                pss::next_read_at(request.rss, sum, max);
            return;
        }
        self.groups_over.insert(index, true);
        tracing::info!(rule = %crate::text::escape(&limit.label), sum, limit = max, "the PSS sum over {} processes crossed the limit", members.len());
        for pid in rules::total_victims(&members, max) {
            let value = members.iter().find(|m| m.0 == pid).map_or(0, |m| m.1);
            self.act(pid, index, value, Decided::on_read(None), table);
        }
    }

    /// A process of a total-scope limit moved to another MiB.
    pub(crate) fn on_usage(&mut self, pid: u32, rss: u64, table: &Table) {
        let Some(guarded) = self.guarded.get_mut(&pid) else {
            return;
        };
        guarded.rss = rss;
        let limit = guarded.limit;
        self.check_group(limit, table, false);
    }

    /// After an examination: updates RSS figures and finds what is over
    /// its limit. `resident` holds fresh reads of the covered processes'
    /// resident memory (statm) taken with the examination; without one, the
    /// kernel's figure is used where it follows the process, else the
    /// table's. This is the safety net under the kernel's crossings: a
    /// process over its limit is acted on within one scan interval, however
    /// it got there.
    ///
    /// A PSS limit's processes still over it by RSS have their PSS read
    /// again: the minimum interval of those reads.
    pub(crate) fn after_examination(
        &mut self,
        table: &Table,
        resident: &HashMap<u32, u64>,
        mut kernel: Option<&mut (dyn KernelWatch<S::Handle> + 'static)>,
    ) {
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
            let rss = resident
                .get(&pid)
                .copied()
                .unwrap_or_else(|| counted(pid, entry, kernel.as_deref(), limit.memory));
            if kernel.is_none() || limit.scope == Scope::Total || resident.contains_key(&pid) {
                guarded.rss = rss;
            }
            match limit.scope {
                Scope::Total => groups.push(limit.index),
                Scope::Process => {
                    let over = guarded.rss > limit.max_memory;
                    let crossed = over && !guarded.over;
                    let warning = match limit.warn_at {
                        Some(warn) if guarded.rss <= warn => {
                            guarded.warned = false;
                            false
                        }
                        Some(_) => !over && !guarded.warned,
                        None => false,
                    };
                    if !over {
                        guarded.over = false;
                        if guarded.pss.next_at != 0 {
                            // Back under: the next crossing of the limit
                            // itself is the next read.
                            guarded.pss.next_at = 0;
                            if let Some(kernel) = kernel.as_deref_mut() {
                                kernel.rearm(pid, limit.max_memory);
                            }
                        }
                    }
                    if warning {
                        let rss = guarded.rss;
                        self.on_warning(pid, rss, table);
                    } else if crossed {
                        let (index, rss) = (limit.index, guarded.rss);
                        if limit.memory == Memory::Pss {
                            self.read_pss(pid, rss, None, true);
                        } else {
                            self.act(pid, index, rss, Decided::on(None), table);
                        }
                    }
                }
            }
        }
        groups.sort_unstable();
        groups.dedup();
        for index in groups {
            self.check_group(index, table, true);
        }
        self.retry_unfollowed(table);
    }

    /// Asks again for the handles that could not be had.
    fn retry_unfollowed(&mut self, table: &Table) {
        let retry: Vec<(u32, Option<u64>)> = self
            .guarded
            .iter()
            .filter(|(_, g)| g.handle.is_none() && g.unfollowed.is_some())
            .filter_map(|(&pid, _)| Some((pid, table.get(pid)?.start_ticks)))
            .collect();
        for (pid, start_ticks) in retry {
            self.sys.request_handle(pid, start_ticks);
        }
    }

    /// The covered processes, for the examination's fresh reads, each with
    /// what its limit counts.
    pub(crate) fn covered_pids(&self) -> Vec<(u32, Memory)> {
        self.guarded
            .iter()
            .map(|(&pid, g)| {
                let memory = self
                    .config
                    .limits
                    .get(g.limit)
                    .map_or(Memory::Rss, |l| l.memory);
                (pid, memory)
            })
            .collect()
    }

    /// Compares a total-scope limit's sum with it; `interval`: the
    /// examination asks (a PSS limit over it by RSS is read again).
    fn check_group(&mut self, index: usize, table: &Table, interval: bool) {
        let Some(limit) = self.config.limits.get(index) else {
            return;
        };
        let max = limit.max_memory;
        let members: Vec<(u32, u64, bool)> = self
            .guarded
            .iter()
            .filter(|(_, g)| g.limit == index)
            .map(|(&pid, g)| {
                let protected = table.get(pid).is_none_or(|entry| self.is_protected(entry));
                // A member being signalled frees its memory: the rest is
                // judged without it, so that while it drains and another
                // grows, the sum does not cross again and take a second.
                let rss = if g.acting { 0 } else { g.rss };
                (pid, rss, protected || g.acting)
            })
            .collect();
        let sum: u64 = members.iter().map(|m| m.1).sum();
        let was_over = self.groups_over.get(&index).copied().unwrap_or(false);
        if limit.memory == Memory::Pss {
            let gate = self.groups_pss.entry(index).or_default();
            if sum <= max {
                self.groups_over.remove(&index);
                gate.next_at = 0;
                return;
            }
            if was_over || !gate.due(sum, interval) {
                return;
            }
            let pids: Vec<(u32, S::Handle)> = self
                .guarded
                .iter()
                .filter(|(_, g)| g.limit == index)
                .filter_map(|(&pid, g)| Some((pid, g.handle.clone()?)))
                .collect();
            gate.reading = true;
            self.sys.measure(Measure {
                of: PssOf::Total(index),
                pids,
                rss: sum,
                seen_ns: None,
            });
            return;
        }
        self.groups_over.insert(index, sum > max);
        if sum <= max || was_over {
            return;
        }
        tracing::info!(rule = %crate::text::escape(&limit.label), sum, limit = max, "the sum over {} processes crossed the limit", members.len());
        for pid in rules::total_victims(&members, max) {
            let rss = self.guarded.get(&pid).map_or(0, |g| g.rss);
            self.act(pid, index, rss, Decided::on(None), table);
        }
    }

    /// A record of what is about to be done about `pid`.
    fn record_for(
        &self,
        pid: u32,
        entry: Option<&Entry>,
        limit: Option<&Limit>,
        rss: u64,
    ) -> ActionRecord {
        ActionRecord {
            time: self.sys.epoch_secs(),
            pid,
            name: entry.map(Entry::name_lossy).unwrap_or_default(),
            user: self.sys.user_name(entry.and_then(|e| e.uid)),
            rss,
            limit: limit.map_or(0, |l| l.max_memory),
            rule: limit.map(|l| l.label.clone()).unwrap_or_default(),
            outcome: Outcome::Alerted,
        }
    }

    /// Decides about `pid`, over limit `index` with `rss` (what the limit
    /// counts), and acts.
    fn act(&mut self, pid: u32, index: usize, rss: u64, how: Decided, table: &Table) {
        let Decided {
            kernel_killed,
            seen_ns,
            fresh,
        } = how;
        let Some(limit) = self.config.limits.get(index) else {
            return;
        };
        let Some(entry) = table.get(pid) else { return };
        let Some(guarded) = self.guarded.get_mut(&pid) else {
            return;
        };
        if limit.scope == Scope::Process {
            guarded.over = true;
        }
        if guarded.acting && !kernel_killed {
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
        let mut record = self.record_for(pid, Some(entry), Some(limit), rss);
        let signal = match verdict {
            Verdict::KilledByKernel => {
                // The kernel's SIGKILL is final: a crossing it reports
                // while the process dies gets no second verdict.
                if let Some(guarded) = self.guarded.get_mut(&pid) {
                    guarded.acting = true;
                    guarded.killed_by_kernel = true;
                }
                record.outcome = Outcome::KilledByKernel;
                None
            }
            Verdict::Alert => {
                record.outcome = Outcome::Alerted;
                None
            }
            Verdict::Refused(protection) => {
                record.outcome = Outcome::Refused { protection };
                None
            }
            Verdict::DryRun(inner) => {
                let signal = match *inner {
                    Verdict::Kill => Signal::Kill,
                    _ => Signal::Term,
                };
                record.outcome = Outcome::DryRun { signal };
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
        // have shrunk since the event (a figure just read needs no second read).
        let confirm = (limit.scope == Scope::Process && !fresh).then_some(Confirm {
            over: limit.max_memory,
            memory: limit.memory,
        });
        let reaching = reaching(limit);
        let label = limit.label.clone();
        let Some(guarded) = self.guarded.get_mut(&pid) else {
            return;
        };
        let Some(handle) = guarded.handle.clone() else {
            guarded.pending = Some((rss, seen_ns));
            return; // acted on when the handle comes
        };
        guarded.acting = true;
        tracing::info!(event = "decision", pid, action = signal.name(), rule = %crate::text::escape(&label), "decided to send {signal} to {pid}");
        self.sys.enforce(Enforcement {
            pid,
            handle,
            signal,
            confirm,
            purpose: Purpose::Breach,
            reaching,
            seen_ns,
            record,
        });
    }

    /// The other processes of a group or cgroup were found: the rules
    /// choose whom the signal reaches.
    fn found(&mut self, request: Enforcement<S::Handle>, found: Found<S::Handle>) {
        let trigger = reach::Trigger {
            pid: request.pid,
            name: request.record.name.clone(),
            handle: request.handle.clone(),
        };
        let plan = reach::plan(
            trigger,
            request.signal,
            found,
            &self.config.enforce.protect,
            self.own_pid,
        );
        self.sys.enforce(Enforcement {
            confirm: None,
            reaching: Reaching::Chosen(plan),
            ..request
        });
    }

    /// A signal the system was asked to send has gone out (or not).
    fn enforced(
        &mut self,
        request: Enforcement<S::Handle>,
        result: Enforced,
        sent_ns: Option<u64>,
    ) {
        let Enforcement {
            pid,
            handle,
            signal,
            purpose,
            reaching,
            seen_ns,
            mut record,
            ..
        } = request;
        record.outcome = match result {
            Enforced::Reached(mut members) => {
                let Reaching::Chosen(plan) = reaching else {
                    return; // only a plan is reached
                };
                members.extend(plan.left);
                Outcome::Reached {
                    signal,
                    reach: plan.reach,
                    members,
                }
            }
            Enforced::Delivered(Delivery::Sent) => Outcome::Sent { signal },
            Enforced::Delivered(Delivery::Gone) => Outcome::Gone { signal },
            Enforced::Under(rss) => match purpose {
                Purpose::Breach => Outcome::UnderOnConfirmation { rss },
                Purpose::GraceOver => Outcome::BackUnderAfterGrace,
            },
            Enforced::Failed(error) => Outcome::Failed { signal, error },
        };
        if let (Some(seen), Some(sent)) = (seen_ns, sent_ns) {
            let micros = sent.saturating_sub(seen) / 1000;
            tracing::debug!(
                event = "reaction",
                pid,
                signal = signal.name(),
                breach_to_signal_us = micros,
                "{signal} sent {micros} µs after the kernel saw the breach"
            );
        }
        let ours = self
            .guarded
            .get_mut(&pid)
            .filter(|g| g.handle.as_ref().is_some_and(|h| S::same(h, &handle)));
        let outcome = &record.outcome;
        // A signal decided from userspace (an examination that read the
        // process over its limit) whose kernel breach, with the kernel's
        // SIGKILL, was taken meanwhile: its confirmation read the dying
        // process's memory already freed, or found it gone. The kill is
        // recorded once, as the kernel's.
        if ours.as_ref().is_some_and(|g| g.killed_by_kernel)
            && matches!(
                outcome,
                Outcome::UnderOnConfirmation { .. } | Outcome::Gone { .. }
            )
        {
            tracing::debug!(
                pid,
                outcome = %outcome,
                "the kernel's SIGKILL came first: not recorded as a second action"
            );
            return;
        }
        let term_sent = match outcome {
            Outcome::Sent { signal } => *signal == Signal::Term,
            Outcome::Reached {
                signal, members, ..
            } => {
                *signal == Signal::Term
                    && members
                        .first()
                        .is_some_and(|m| m.pid == pid && m.result == MemberResult::Sent)
            }
            _ => false,
        };
        let nothing_on_its_way = match outcome {
            Outcome::UnderOnConfirmation { .. }
            | Outcome::BackUnderAfterGrace
            | Outcome::Failed { .. } => true,
            Outcome::Reached { .. } => !outcome.signalled(),
            _ => false,
        };
        if term_sent {
            self.sys
                .start_timer(self.config.enforce.grace, Timer::GraceOver { pid, handle });
        } else if let (true, Some(guarded)) = (nothing_on_its_way, ours) {
            // Nothing is on its way: the next crossing is decided anew.
            guarded.acting = false;
        }
        self.record(record);
    }

    /// The grace after SIGTERM is over: SIGKILL unless the process exited
    /// or, for a per-process limit, got back under it.
    fn grace_over(&mut self, pid: u32, handle: S::Handle, table: &Table) {
        if self.sys.exited(&handle) {
            return; // it heeded SIGTERM
        }
        let limit = self
            .guarded
            .get(&pid)
            .filter(|g| g.handle.as_ref().is_some_and(|h| S::same(h, &handle)))
            .and_then(|g| self.config.limits.get(g.limit));
        let confirm = limit
            .filter(|l| l.scope == Scope::Process)
            .map(|l| Confirm {
                over: l.max_memory,
                memory: l.memory,
            });
        let reaching = limit.map_or(Reaching::Process, reaching);
        let rss = self.guarded.get(&pid).map_or(0, |g| g.rss);
        let record = self.record_for(pid, table.get(pid), limit, rss);
        self.sys.enforce(Enforcement {
            pid,
            handle,
            signal: Signal::Kill,
            confirm,
            purpose: Purpose::GraceOver,
            reaching,
            seen_ns: None,
            record,
        });
    }

    fn record(&mut self, record: ActionRecord) {
        record.log();
        if self.actions.len() == KEPT_ACTIONS {
            self.actions.pop_front();
        }
        self.actions.push_back(record.clone());
        self.new_actions.push(record);
    }

    /// Actions recorded since the last call (for alerts and metrics).
    pub(crate) fn take_new_actions(&mut self) -> Vec<ActionRecord> {
        std::mem::take(&mut self.new_actions)
    }

    /// The last actions, newest first.
    pub(crate) fn recent_actions(&self, n: usize) -> Vec<ActionRecord> {
        self.actions.iter().rev().take(n).cloned().collect()
    }

    /// The covered processes for `procespy status` and metrics, largest
    /// first: those followed, with their handle (and, in eBPF mode, their
    /// kernel entry); the others are counted in [`Guard::unfollowed`] or
    /// are on their way.
    pub(crate) fn watched(
        &self,
        table: &Table,
        kernel: Option<&(dyn KernelWatch<S::Handle> + 'static)>,
    ) -> Vec<WatchedProcess> {
        let mut list: Vec<WatchedProcess> = self
            .guarded
            .iter()
            .filter(|(_, g)| g.handle.is_some() && g.unfollowed.is_none())
            .filter_map(|(&pid, g)| {
                let entry = table.get(pid)?;
                let limit = self.config.limits.get(g.limit)?;
                let (rss, source) = rss_of(pid, entry, kernel);
                let counted = counted(pid, entry, kernel, limit.memory);
                Some(WatchedProcess {
                    pid,
                    name: entry.name_lossy(),
                    user: self.sys.user_name(entry.uid),
                    rss_bytes: rss.total(),
                    rss,
                    rss_source: source,
                    limit_index: limit.index,
                    limit_bytes: limit.max_memory,
                    limit_percent: counted as f64 * 100.0 / limit.max_memory.max(1) as f64,
                    rule: limit.label.clone(),
                    scope: limit.scope,
                    action: limit.action,
                })
            })
            .collect();
        list.sort_by_key(|p| (std::cmp::Reverse(p.rss_bytes), p.pid));
        list
    }

    /// The system the guard acts through (the tests look at their fake's).
    #[cfg(test)]
    pub(crate) fn system(&mut self) -> &mut S {
        &mut self.sys
    }
}

/// The RSS of a covered process: the kernel's figure where it follows the
/// process, else the last read of `/proc`.
fn rss_of<H>(
    pid: u32,
    entry: &Entry,
    kernel: Option<&(dyn KernelWatch<H> + 'static)>,
) -> (Rss, Source) {
    match kernel.and_then(|k| k.rss(pid)) {
        Some(k) => (k.rss, Source::Ebpf),
        None => (entry.rss, Source::Proc),
    }
}

/// What the kernel-side trigger of `memory` counts of a covered process:
/// its RSS, with its swap for `rss+swap` (a PSS limit's trigger is the RSS).
fn counted<H>(
    pid: u32,
    entry: &Entry,
    kernel: Option<&(dyn KernelWatch<H> + 'static)>,
    memory: Memory,
) -> u64 {
    let swap = memory == Memory::RssSwap;
    match kernel.and_then(|k| k.rss(pid)) {
        Some(k) => k.rss.total() + if swap { k.swap } else { 0 },
        None => entry.rss.total() + if swap { entry.swap } else { 0 },
    }
}

/// What a signal for a breach of `limit` reaches.
fn reaching<H>(limit: &Limit) -> Reaching<H> {
    match limit.kill {
        KillTarget::Process => Reaching::Process,
        kill => Reaching::Find(kill),
    }
}

/// How a decision about a breach came about.
#[derive(Clone, Copy, Debug)]
struct Decided {
    /// The kernel sent SIGKILL already.
    kernel_killed: bool,
    /// When the kernel saw the breach (`CLOCK_MONOTONIC` ns), if it did.
    seen_ns: Option<u64>,
    /// The figure was just read from `/proc` (PSS): no confirming read.
    fresh: bool,
}

impl Decided {
    fn on(seen_ns: Option<u64>) -> Decided {
        Decided {
            kernel_killed: false,
            seen_ns,
            fresh: false,
        }
    }

    fn on_read(seen_ns: Option<u64>) -> Decided {
        Decided {
            fresh: true,
            ..Decided::on(seen_ns)
        }
    }

    fn by_kernel(seen_ns: u64) -> Decided {
        Decided {
            kernel_killed: true,
            ..Decided::on(Some(seen_ns))
        }
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
