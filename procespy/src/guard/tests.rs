//! The guard's decisions, with a fake system and a fake kernel: no root,
//! no processes, no clock.

use std::{collections::HashMap, path::PathBuf, time::Duration, time::Instant};

use super::*;
use crate::{
    action::{CgroupRefusal, Member, MemberResult, Reach},
    config::{KillTarget, Limits, Matcher, Memory, Scope},
    guard::system::{Chosen, NoHandle, Whole},
    process::ProcInfo,
    rules::Protection,
    scan::Examination,
};

const MIB: u64 = 1 << 20;
const GRACE: Duration = Duration::from_secs(3);

/// A handle of the fake: which process it was opened for, and its number.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Handle {
    pid: u32,
    serial: u32,
}

/// Records what the guard asks for; the tests answer.
#[derive(Default)]
struct Fake {
    requests: Vec<(u32, Option<u64>)>,
    enforcements: Vec<Enforcement<Handle>>,
    measures: Vec<Measure<Handle>>,
    timers: Vec<(Duration, Timer<Handle>)>,
    exited: Vec<Handle>,
    cgroups: Vec<(u32, Handle)>,
}

impl System for Fake {
    type Handle = Handle;

    fn request_handle(&mut self, pid: u32, start_ticks: Option<u64>) {
        self.requests.push((pid, start_ticks));
    }

    fn enforce(&mut self, request: Enforcement<Handle>) {
        self.enforcements.push(request);
    }

    fn measure(&mut self, request: Measure<Handle>) {
        self.measures.push(request);
    }

    fn read_cgroup(&mut self, pid: u32, handle: Handle) {
        self.cgroups.push((pid, handle));
    }

    fn exited(&self, handle: &Handle) -> bool {
        self.exited.contains(handle)
    }

    fn same(a: &Handle, b: &Handle) -> bool {
        a == b
    }

    fn start_timer(&mut self, delay: Duration, timer: Timer<Handle>) {
        self.timers.push((delay, timer));
    }

    fn epoch_secs(&self) -> f64 {
        1_700_000_000.0
    }

    fn user_name(&self, uid: Option<u32>) -> String {
        uid.map_or_else(|| "?".into(), |uid| format!("user{uid}"))
    }
}

/// What the kernel was told, and the figures it shows.
#[derive(Default)]
struct FakeKernel {
    watched: HashMap<u32, WatchSpec>,
    rearmed: Vec<(u32, u64)>,
    figures: HashMap<u32, KernelRss>,
}

impl KernelWatch<Handle> for FakeKernel {
    fn watch(&mut self, pid: u32, _: &Handle, spec: WatchSpec) -> anyhow::Result<()> {
        self.watched.insert(pid, spec);
        Ok(())
    }

    fn unwatch(&mut self, pid: u32) {
        self.watched.remove(&pid);
    }

    fn exited(&mut self, pid: u32) {
        self.watched.remove(&pid);
    }

    fn rss(&self, pid: u32) -> Option<KernelRss> {
        self.figures.get(&pid).copied()
    }

    fn rearm(&mut self, pid: u32, limit_bytes: u64) {
        self.rearmed.push((pid, limit_bytes));
    }
}

fn limit(index: usize, name: &str, max_mib: u64, scope: Scope, action: Action) -> Limit {
    Limit {
        index,
        scope,
        action,
        ..Limit::of(Matcher::Name(name.into()), max_mib * MIB)
    }
}

fn config(limits: Vec<Limit>) -> Config {
    let mut config = Config::builtin_default();
    config.enforce.grace = GRACE;
    config.enforce.protect = vec!["sshd".into()];
    config.limits = Limits::from(limits);
    config
}

fn process(pid: u32, name: &str, rss_mib: u64) -> ProcInfo {
    ProcInfo {
        pid,
        ppid: 1,
        comm: name.as_bytes().to_vec(),
        exe: Some(PathBuf::from(format!("/usr/bin/{name}"))),
        cmdline: name.as_bytes().to_vec(),
        uid: 1000,
        start_ticks: u64::from(pid) * 10,
        rss: Rss {
            file: 0,
            anon: rss_mib * MIB,
            shmem: 0,
        },
        state: b'S',
        ..ProcInfo::default()
    }
}

fn table(procs: &[ProcInfo]) -> Table {
    let mut table = Table::new();
    table.merge(&Examination {
        procs: procs.to_vec(),
        started: Instant::now(),
        vanished: 0,
        listed: None,
        unread: Vec::new(),
        resident: Default::default(),
    });
    table
}

/// A guard over `limits` with every process of `table` matched and its
/// handle delivered.
fn guarded(limits: Vec<Limit>, table: &Table, dry_run: bool) -> (Guard<Fake>, FakeKernel) {
    let mut guard = Guard::new(Fake::default(), config(limits), dry_run);
    let mut kernel = FakeKernel::default();
    let pids: Vec<u32> = table.entries().map(|e| e.pid).collect();
    for pid in pids {
        guard.rematch(pid, table, Some(&mut kernel), false, None);
    }
    let requests = std::mem::take(&mut guard.system().requests);
    for (pid, _) in requests {
        let handle = Ok(Handle { pid, serial: 1 });
        guard.complete(Completion::Handle { pid, handle }, table, Some(&mut kernel));
    }
    (guard, kernel)
}

/// Answers the oldest enforcement the guard asked for with `result`.
fn answer(guard: &mut Guard<Fake>, table: &Table, result: Enforced) -> Enforcement<Handle> {
    let request = guard.system().enforcements.remove(0);
    let sent_ns = matches!(result, Enforced::Delivered(Delivery::Sent)).then_some(2_000);
    guard.complete(
        Completion::Enforced {
            request: Box::new(request.clone()),
            result,
            sent_ns,
        },
        table,
        None,
    );
    request
}

fn outcomes(guard: &mut Guard<Fake>) -> Vec<Outcome> {
    guard
        .take_new_actions()
        .into_iter()
        .map(|record| record.outcome)
        .collect()
}

/// The system's answer for a signal that went out.
fn sent(_: Signal) -> Enforced {
    Enforced::Delivered(Delivery::Sent)
}

#[test]
fn a_covered_process_is_followed_in_the_kernel_once_its_handle_comes() {
    let table = table(&[process(100, "grower", 10), process(101, "other", 10)]);
    let mut guard = Guard::new(
        Fake::default(),
        config(vec![limit(
            0,
            "grower",
            64,
            Scope::Process,
            Action::KillNow,
        )]),
        false,
    );
    let mut kernel = FakeKernel::default();
    guard.rematch(100, &table, Some(&mut kernel), false, None);
    guard.rematch(101, &table, Some(&mut kernel), false, None);
    assert_eq!(guard.system().requests, [(100, Some(1000))]);
    assert!(kernel.watched.is_empty(), "no handle yet, nothing told");
    let handle = Ok(Handle {
        pid: 100,
        serial: 1,
    });
    guard.complete(
        Completion::Handle { pid: 100, handle },
        &table,
        Some(&mut kernel),
    );
    assert_eq!(
        kernel.watched[&100],
        WatchSpec {
            limit_bytes: 64 * MIB,
            kill_now: true,
            report_usage: false,
            count_swap: false,
            warn_bytes: None,
        }
    );
}

fn warned_at(mib: u64) -> Vec<Limit> {
    vec![Limit {
        warn_at: Some(mib * MIB),
        ..limit(0, "grower", 64, Scope::Process, Action::Kill)
    }]
}

#[test]
fn the_kernel_is_told_the_warning_threshold_and_the_cgroup_is_read_once_followed() {
    let table = table(&[process(100, "grower", 10)]);
    let (mut guard, kernel) = guarded(warned_at(51), &table, false);
    assert_eq!(kernel.watched[&100].warn_bytes, Some(51 * MIB));
    let (pid, handle) = guard.system().cgroups.remove(0);
    assert_eq!(pid, 100);
    assert_eq!(guard.cgroup(100), None);
    guard.complete(
        Completion::Cgroup {
            pid,
            handle,
            path: Some("/system.slice/grow.service".into()),
        },
        &table,
        None,
    );
    assert_eq!(guard.cgroup(100), Some("/system.slice/grow.service"));
}

#[test]
fn a_warning_is_one_per_crossing_and_the_kill_waits_for_the_limit() {
    let table = table(&[process(100, "grower", 10)]);
    let (mut guard, _kernel) = guarded(warned_at(51), &table, false);
    guard.on_warning(100, 50 * MIB, &table);
    assert!(outcomes(&mut guard).is_empty(), "under the threshold");
    guard.on_warning(100, 52 * MIB, &table);
    guard.on_warning(100, 53 * MIB, &table);
    assert_eq!(
        outcomes(&mut guard),
        [Outcome::Warned {
            warn_bytes: 51 * MIB
        }]
    );
    assert!(guard.system().enforcements.is_empty(), "nothing signalled");
    guard.on_kernel_breach(100, 65 * MIB, false, 1_000, &table);
    assert_eq!(
        answer(&mut guard, &table, sent(Signal::Term)).signal,
        Signal::Term
    );
}

#[test]
fn an_examination_warns_once_and_again_after_the_process_fell_back() {
    let resident = |mib: u64| HashMap::from([(100, mib * MIB)]);
    let table = table(&[process(100, "grower", 10)]);
    let (mut guard, _kernel) = guarded(warned_at(51), &table, false);
    guard.after_examination(&table, &resident(55), None);
    guard.after_examination(&table, &resident(56), None);
    assert_eq!(outcomes(&mut guard).len(), 1, "one warning");
    guard.after_examination(&table, &resident(40), None);
    guard.after_examination(&table, &resident(60), None);
    assert_eq!(
        outcomes(&mut guard),
        [Outcome::Warned {
            warn_bytes: 51 * MIB
        }],
        "warned again after falling back under"
    );
    guard.after_examination(&table, &resident(70), None);
    assert!(outcomes(&mut guard).is_empty(), "decided, not warned");
    assert_eq!(
        guard.system().enforcements.len(),
        1,
        "over the limit: acted on"
    );
}

#[test]
fn a_breach_is_confirmed_then_sigterm_then_sigkill_after_grace() {
    let table = table(&[process(100, "grower", 10)]);
    let limits = vec![limit(0, "grower", 64, Scope::Process, Action::Kill)];
    let (mut guard, _kernel) = guarded(limits, &table, false);
    guard.on_kernel_breach(100, 65 * MIB, false, 1_000, &table);
    let request = answer(&mut guard, &table, sent(Signal::Term));
    assert_eq!(request.signal, Signal::Term);
    assert_eq!(
        request.confirm,
        Some(Confirm {
            over: 64 * MIB,
            memory: Memory::Rss
        }),
        "confirmed before acting"
    );
    assert_eq!(
        outcomes(&mut guard),
        [Outcome::Sent {
            signal: Signal::Term
        }]
    );
    let (delay, timer) = guard.system().timers.remove(0);
    assert_eq!(delay, GRACE);
    guard.complete(Completion::Timer(timer), &table, None);
    let request = answer(&mut guard, &table, sent(Signal::Kill));
    assert_eq!(
        (request.signal, request.purpose),
        (Signal::Kill, Purpose::GraceOver)
    );
    assert_eq!(
        outcomes(&mut guard),
        [Outcome::Sent {
            signal: Signal::Kill
        }]
    );
}

#[test]
fn a_process_that_heeds_sigterm_gets_no_sigkill() {
    let table = table(&[process(100, "grower", 10)]);
    let limits = vec![limit(0, "grower", 64, Scope::Process, Action::Kill)];
    let (mut guard, _kernel) = guarded(limits, &table, false);
    guard.on_kernel_breach(100, 65 * MIB, false, 1_000, &table);
    let request = answer(&mut guard, &table, sent(Signal::Term));
    guard.system().exited.push(request.handle);
    let (_, timer) = guard.system().timers.remove(0);
    guard.complete(Completion::Timer(timer), &table, None);
    assert!(guard.system().enforcements.is_empty());
}

#[test]
fn back_under_the_limit_when_grace_ends_means_no_sigkill() {
    let table = table(&[process(100, "grower", 10)]);
    let limits = vec![limit(0, "grower", 64, Scope::Process, Action::Kill)];
    let (mut guard, _kernel) = guarded(limits, &table, false);
    guard.on_kernel_breach(100, 65 * MIB, false, 1_000, &table);
    answer(&mut guard, &table, sent(Signal::Term));
    let (_, timer) = guard.system().timers.remove(0);
    guard.complete(Completion::Timer(timer), &table, None);
    answer(&mut guard, &table, Enforced::Under(30 * MIB));
    assert_eq!(
        outcomes(&mut guard),
        [
            Outcome::Sent {
                signal: Signal::Term
            },
            Outcome::BackUnderAfterGrace
        ]
    );
    guard.on_kernel_breach(100, 70 * MIB, false, 5_000, &table);
    assert_eq!(
        guard.system().enforcements.len(),
        1,
        "the next crossing is decided anew"
    );
}

#[test]
fn under_the_limit_on_confirmation_sends_nothing_and_rearms() {
    let table = table(&[process(100, "grower", 10)]);
    let limits = vec![limit(0, "grower", 64, Scope::Process, Action::Kill)];
    let (mut guard, _kernel) = guarded(limits, &table, false);
    guard.on_kernel_breach(100, 65 * MIB, false, 1_000, &table);
    answer(&mut guard, &table, Enforced::Under(63 * MIB));
    assert_eq!(
        outcomes(&mut guard),
        [Outcome::UnderOnConfirmation { rss: 63 * MIB }]
    );
    assert!(guard.system().timers.is_empty());
    guard.on_kernel_breach(100, 65 * MIB, false, 2_000, &table);
    assert_eq!(guard.system().enforcements.len(), 1);
}

#[test]
fn a_reused_pid_is_reported_gone_and_gets_no_grace_timer() {
    let table = table(&[process(100, "grower", 10)]);
    let limits = vec![limit(0, "grower", 64, Scope::Process, Action::Kill)];
    let (mut guard, _kernel) = guarded(limits, &table, false);
    guard.on_kernel_breach(100, 65 * MIB, false, 1_000, &table);
    answer(&mut guard, &table, Enforced::Delivered(Delivery::Gone));
    assert_eq!(
        outcomes(&mut guard),
        [Outcome::Gone {
            signal: Signal::Term
        }]
    );
    assert!(guard.system().timers.is_empty());
}

#[test]
fn a_stale_handles_timer_does_not_touch_the_newcomer_at_its_pid() {
    let table = table(&[process(100, "grower", 10)]);
    let limits = vec![limit(0, "grower", 64, Scope::Process, Action::Kill)];
    let (mut guard, mut kernel) = guarded(limits, &table, false);
    guard.on_kernel_breach(100, 65 * MIB, false, 1_000, &table);
    let old = answer(&mut guard, &table, sent(Signal::Term)).handle;
    guard.system().exited.push(old);
    // The process exits; a newcomer at the same PID is matched anew.
    guard.forget(100, Some(&mut kernel));
    guard.rematch(100, &table, Some(&mut kernel), false, None);
    let handle = Ok(Handle {
        pid: 100,
        serial: 2,
    });
    guard.complete(
        Completion::Handle { pid: 100, handle },
        &table,
        Some(&mut kernel),
    );
    let (_, timer) = guard.system().timers.remove(0);
    guard.complete(Completion::Timer(timer), &table, None);
    assert!(
        guard.system().enforcements.is_empty(),
        "the old handle's process is gone: nothing is sent"
    );
}

#[test]
fn total_scope_stops_the_largest_first_until_the_sum_is_under() {
    let procs = [
        process(100, "worker", 10),
        process(101, "worker", 10),
        process(102, "worker", 10),
    ];
    let table = table(&procs);
    let limits = vec![limit(0, "worker", 100, Scope::Total, Action::Kill)];
    let (mut guard, kernel) = guarded(limits, &table, false);
    assert!(
        kernel
            .watched
            .values()
            .all(|spec| spec.report_usage && spec.limit_bytes == 0)
    );
    guard.on_usage(100, 30 * MIB, &table);
    guard.on_usage(101, 50 * MIB, &table);
    assert!(
        guard.system().enforcements.is_empty(),
        "80 MiB is under 100"
    );
    guard.on_usage(102, 40 * MIB, &table);
    let victims: Vec<(u32, Option<Confirm>)> = guard
        .system()
        .enforcements
        .iter()
        .map(|e| (e.pid, e.confirm))
        .collect();
    assert_eq!(victims, [(101, None)], "120 - 50 is under 100");
    guard.on_usage(102, 41 * MIB, &table);
    assert_eq!(
        guard.system().enforcements.len(),
        1,
        "one decision per crossing"
    );
}

#[test]
fn protected_processes_and_pid_1_are_refused() {
    let table = table(&[process(1, "grower", 10), process(200, "sshd", 10)]);
    let limits = vec![
        limit(0, "grower", 64, Scope::Process, Action::Kill),
        limit(1, "sshd", 64, Scope::Process, Action::Kill),
    ];
    let (mut guard, kernel) = guarded(limits, &table, false);
    assert!(!kernel.watched[&200].kill_now);
    guard.on_kernel_breach(1, 65 * MIB, false, 1_000, &table);
    guard.on_kernel_breach(200, 65 * MIB, false, 1_000, &table);
    assert!(guard.system().enforcements.is_empty());
    assert_eq!(
        outcomes(&mut guard),
        [
            Outcome::Refused {
                protection: Protection::Init
            },
            Outcome::Refused {
                protection: Protection::Listed("sshd".into())
            }
        ]
    );
}

#[test]
fn a_dry_run_decides_and_sends_nothing() {
    let table = table(&[process(100, "grower", 10)]);
    let limits = vec![limit(0, "grower", 64, Scope::Process, Action::KillNow)];
    let (mut guard, kernel) = guarded(limits, &table, true);
    assert!(
        !kernel.watched[&100].kill_now,
        "no kill-now in the kernel either"
    );
    guard.on_kernel_breach(100, 65 * MIB, false, 1_000, &table);
    assert!(guard.system().enforcements.is_empty());
    assert_eq!(
        outcomes(&mut guard),
        [Outcome::DryRun {
            signal: Signal::Kill
        }]
    );
}

#[test]
fn a_kill_by_the_kernel_is_recorded_and_not_repeated() {
    let table = table(&[process(100, "grower", 10)]);
    let limits = vec![limit(0, "grower", 64, Scope::Process, Action::KillNow)];
    let (mut guard, _kernel) = guarded(limits, &table, false);
    guard.on_kernel_breach(100, 65 * MIB, true, 1_000, &table);
    assert!(guard.system().enforcements.is_empty());
    assert_eq!(outcomes(&mut guard), [Outcome::KilledByKernel]);
    // A later crossing of the dying process (its threads' cached pages
    // synced at exit, on kernels that batch them) asks for nothing more.
    guard.on_kernel_breach(100, 66 * MIB, false, 2_000, &table);
    assert!(guard.system().enforcements.is_empty());
    assert_eq!(outcomes(&mut guard), [] as [Outcome; 0]);
}

#[test]
fn a_userspace_kill_overtaken_by_the_kernels_is_not_recorded_twice() {
    let table = table(&[process(100, "grower", 10)]);
    let limits = vec![limit(0, "grower", 64, Scope::Process, Action::KillNow)];
    let (mut guard, _kernel) = guarded(limits, &table, false);
    // An examination read it over its limit before its kernel breach came.
    guard.after_examination(&table, &HashMap::from([(100, 65 * MIB)]), None);
    assert_eq!(
        guard.system().enforcements.len(),
        1,
        "SIGKILL, confirmed first"
    );
    guard.on_kernel_breach(100, 65 * MIB, true, 1_000, &table);
    assert_eq!(outcomes(&mut guard), [Outcome::KilledByKernel]);
    // The confirmation read the dying process's memory, already freed.
    answer(&mut guard, &table, Enforced::Under(0));
    assert_eq!(outcomes(&mut guard), [] as [Outcome; 0]);
}

#[test]
fn alert_only_limits_signal_nothing() {
    let table = table(&[process(100, "grower", 10)]);
    let limits = vec![limit(0, "grower", 64, Scope::Process, Action::Alert)];
    let (mut guard, _kernel) = guarded(limits, &table, false);
    guard.on_kernel_breach(100, 65 * MIB, false, 1_000, &table);
    assert!(guard.system().enforcements.is_empty());
    assert_eq!(outcomes(&mut guard), [Outcome::Alerted]);
}

#[test]
fn a_breach_before_the_handle_is_acted_on_when_it_comes() {
    let table = table(&[process(100, "grower", 10)]);
    let mut guard = Guard::new(
        Fake::default(),
        config(vec![limit(0, "grower", 64, Scope::Process, Action::Kill)]),
        false,
    );
    guard.rematch(100, &table, None, false, None);
    guard.on_kernel_breach(100, 65 * MIB, false, 1_000, &table);
    assert!(guard.system().enforcements.is_empty());
    let handle = Ok(Handle {
        pid: 100,
        serial: 1,
    });
    guard.complete(Completion::Handle { pid: 100, handle }, &table, None);
    assert_eq!(guard.system().enforcements.len(), 1);
    assert_eq!(guard.system().enforcements[0].seen_ns, Some(1_000));
}

#[test]
fn proc_mode_acts_on_an_examination_that_finds_a_crossing() {
    let before = table(&[process(100, "grower", 10)]);
    let limits = vec![limit(0, "grower", 64, Scope::Process, Action::Kill)];
    let (mut guard, _kernel) = guarded(limits, &before, false);
    guard.after_examination(&before, &HashMap::new(), None);
    assert!(guard.system().enforcements.is_empty());
    let after = table(&[process(100, "grower", 80)]);
    guard.after_examination(&after, &HashMap::new(), None);
    assert_eq!(guard.system().enforcements.len(), 1);
    assert_eq!(guard.system().enforcements[0].record.rss, 80 * MIB);
}

#[test]
fn watched_processes_are_reported_largest_first() {
    let table = table(&[process(100, "grower", 10), process(101, "grower", 30)]);
    let limits = vec![limit(0, "grower", 64, Scope::Process, Action::Kill)];
    let (guard, _kernel) = guarded(limits, &table, false);
    let watched = guard.watched(&table, None);
    let pids: Vec<u32> = watched.iter().map(|p| p.pid).collect();
    assert_eq!(pids, [101, 100]);
    assert_eq!(watched[0].user, "user1000");
    assert_eq!(watched[0].rss_source, Source::Proc);
}

#[test]
fn a_process_over_its_limit_when_matched_is_acted_on_at_once() {
    let table = table(&[process(100, "grower", 300)]);
    let limits = vec![limit(0, "grower", 100, Scope::Process, Action::Kill)];
    let (mut guard, _kernel) = guarded(limits, &table, false);
    assert_eq!(
        guard.system().enforcements.len(),
        1,
        "acted on when its handle came"
    );
    assert_eq!(guard.system().enforcements[0].record.rss, 300 * MIB);
}

#[test]
fn a_reload_that_lowers_the_limit_below_the_rss_acts() {
    let table = table(&[process(100, "grower", 300)]);
    let limits = vec![limit(0, "grower", 1024, Scope::Process, Action::Kill)];
    let (mut guard, mut kernel) = guarded(limits, &table, false);
    assert!(guard.system().enforcements.is_empty());
    let lower = config(vec![limit(0, "grower", 100, Scope::Process, Action::Kill)]);
    guard.replace_config(lower, &table, Some(&mut kernel));
    assert_eq!(guard.system().enforcements.len(), 1);
    assert_eq!(kernel.watched[&100].limit_bytes, 100 * MIB);
}

#[test]
fn a_rename_back_from_a_protected_name_is_acted_on() {
    // An executable that cannot be read, named like a protected one: in
    // doubt, protected; renamed back, enforced at once.
    let mut grower = process(100, "sshd", 300);
    grower.exe = None;
    grower.cmdline = b"/opt/grower --big".to_vec();
    let mut table = table(&[grower]);
    let mut by_pattern = limit(0, "grower", 100, Scope::Process, Action::Kill);
    by_pattern.matcher = Matcher::Pattern("grower".into());
    let (mut guard, mut kernel) = guarded(vec![by_pattern], &table, false);
    assert!(
        guard.system().enforcements.is_empty(),
        "protected while in doubt"
    );
    assert!(matches!(
        outcomes(&mut guard)[..],
        [Outcome::Refused {
            protection: Protection::Unverified(_)
        }]
    ));
    table.apply_event(
        &crate::ebpf::events::KernelEvent {
            kind: procespy_common::EventKind::Rename,
            pid: 100,
            ppid: 0,
            comm: b"grower".to_vec(),
            rss_bytes: 0,
            killed: false,
            foreign: false,
            ktime_ns: 0,
        },
        Instant::now(),
    );
    guard.rematch(100, &table, Some(&mut kernel), false, None);
    assert_eq!(guard.system().enforcements.len(), 1);
}

#[test]
fn an_examination_catches_what_no_event_reported_once_per_crossing() {
    let table = table(&[process(100, "grower", 10)]);
    let limits = vec![limit(0, "grower", 100, Scope::Process, Action::Alert)];
    let (mut guard, mut kernel) = guarded(limits, &table, false);
    let over = HashMap::from([(100, 150 * MIB)]);
    guard.after_examination(&table, &over, Some(&mut kernel));
    guard.after_examination(&table, &over, Some(&mut kernel));
    assert_eq!(
        outcomes(&mut guard),
        [Outcome::Alerted],
        "once, not every scan"
    );
    guard.after_examination(&table, &HashMap::from([(100, 50 * MIB)]), Some(&mut kernel));
    guard.after_examination(&table, &over, Some(&mut kernel));
    assert_eq!(
        outcomes(&mut guard),
        [Outcome::Alerted],
        "again after going under"
    );
}

#[test]
fn a_process_without_a_handle_is_counted_and_retried() {
    let table = table(&[process(100, "grower", 10)]);
    let mut guard = Guard::new(
        Fake::default(),
        config(vec![limit(0, "grower", 64, Scope::Process, Action::Kill)]),
        false,
    );
    guard.rematch(100, &table, None, false, None);
    guard.system().requests.clear();
    let failed = Err(NoHandle::Failed(
        "cannot open a pidfd: Too many open files".into(),
    ));
    guard.complete(
        Completion::Handle {
            pid: 100,
            handle: failed,
        },
        &table,
        None,
    );
    assert_eq!(guard.unfollowed(), 1);
    guard.after_examination(&table, &HashMap::new(), None);
    assert_eq!(guard.system().requests, [(100, Some(1000))], "asked again");
    let handle = Ok(Handle {
        pid: 100,
        serial: 1,
    });
    guard.complete(Completion::Handle { pid: 100, handle }, &table, None);
    assert_eq!(guard.unfollowed(), 0);
}

/// A limit on `name` counting `memory` and reaching `kill`.
fn limit_of(scope: Scope, max_mib: u64, memory: Memory, kill: KillTarget) -> Limit {
    Limit {
        memory,
        kill,
        ..limit(0, "app", max_mib, scope, Action::Kill)
    }
}

/// Answers the oldest PSS read the guard asked for with `pss` (MiB, by PID).
fn answer_pss(
    guard: &mut Guard<Fake>,
    table: &Table,
    kernel: &mut FakeKernel,
    pss: &[(u32, u64)],
) -> Measure<Handle> {
    let request = guard.system().measures.remove(0);
    let pss = pss
        .iter()
        .map(|&(pid, mib)| (pid, Some(mib * MIB)))
        .collect();
    guard.complete(
        Completion::Measured {
            request: request.clone(),
            pss,
        },
        table,
        Some(kernel),
    );
    request
}

#[test]
fn a_pss_limit_reads_pss_past_the_rss_and_decides_on_it() {
    let table = table(&[process(100, "app", 10)]);
    let limits = vec![limit_of(
        Scope::Process,
        400,
        Memory::Pss,
        KillTarget::Process,
    )];
    let (mut guard, mut kernel) = guarded(limits, &table, false);
    assert_eq!(
        kernel.watched[&100].limit_bytes,
        400 * MIB,
        "RSS is the trigger"
    );
    guard.on_kernel_breach(100, 450 * MIB, false, 1_000, &table);
    assert!(guard.system().enforcements.is_empty(), "PSS first");
    // Another crossing while the read is on its way: no second read.
    guard.on_kernel_breach(100, 460 * MIB, false, 1_100, &table);
    assert_eq!(guard.system().measures.len(), 1);
    let request = answer_pss(&mut guard, &table, &mut kernel, &[(100, 300)]);
    assert_eq!((request.rss, request.seen_ns), (450 * MIB, Some(1_000)));
    assert!(
        guard.system().enforcements.is_empty(),
        "300 MiB of PSS is under 400"
    );
    assert!(outcomes(&mut guard).is_empty());
    // The PSS can pass 400 MiB only once the RSS grew by the 100 MiB left.
    assert_eq!(kernel.rearmed, [(100, 550 * MIB)]);
    guard.on_kernel_breach(100, 551 * MIB, false, 2_000, &table);
    answer_pss(&mut guard, &table, &mut kernel, &[(100, 401)]);
    let enforcement = &guard.system().enforcements[0];
    assert_eq!(enforcement.record.rss, 401 * MIB, "the record has the PSS");
    assert_eq!(enforcement.confirm, None, "just read: no second read");
    assert_eq!(enforcement.seen_ns, Some(2_000));
}

#[test]
fn a_pss_read_of_a_process_that_grew_past_the_next_trigger_reads_again() {
    let table = table(&[process(100, "app", 10)]);
    let limits = vec![limit_of(
        Scope::Process,
        400,
        Memory::Pss,
        KillTarget::Process,
    )];
    let (mut guard, mut kernel) = guarded(limits, &table, false);
    guard.on_kernel_breach(100, 450 * MIB, false, 1_000, &table);
    kernel.figures.insert(
        100,
        KernelRss {
            rss: Rss {
                anon: 600 * MIB,
                ..Rss::default()
            },
            swap: 0,
            breaches: 1,
        },
    );
    answer_pss(&mut guard, &table, &mut kernel, &[(100, 300)]);
    assert_eq!(
        guard.system().measures.len(),
        1,
        "600 MiB is past 550: read again"
    );
}

#[test]
fn the_examination_reads_pss_again_while_the_rss_stays_over() {
    let table = table(&[process(100, "app", 10)]);
    let limits = vec![limit_of(
        Scope::Process,
        400,
        Memory::Pss,
        KillTarget::Process,
    )];
    let (mut guard, mut kernel) = guarded(limits, &table, false);
    let over = HashMap::from([(100, 450 * MIB)]);
    guard.after_examination(&table, &over, Some(&mut kernel));
    answer_pss(&mut guard, &table, &mut kernel, &[(100, 100)]);
    // Others sharing its pages may have exited: no RSS shows it.
    guard.after_examination(&table, &over, Some(&mut kernel));
    assert_eq!(
        guard.system().measures.len(),
        1,
        "read again at the interval"
    );
    guard.after_examination(&table, &over, Some(&mut kernel));
    assert_eq!(guard.system().measures.len(), 1, "one read at a time");
    answer_pss(&mut guard, &table, &mut kernel, &[(100, 100)]);
    kernel.rearmed.clear();
    guard.after_examination(&table, &HashMap::from([(100, 50 * MIB)]), Some(&mut kernel));
    assert_eq!(
        kernel.rearmed,
        [(100, 400 * MIB)],
        "back under: the limit is the trigger again"
    );
    assert!(guard.system().enforcements.is_empty());
}

#[test]
fn a_total_pss_limit_spares_shared_pages_and_stops_the_one_that_grows() {
    // Twelve processes, each with 256 MiB of shared memory resident.
    let procs: Vec<ProcInfo> = (100..112).map(|pid| process(pid, "app", 258)).collect();
    let table = table(&procs);
    let limits = vec![limit_of(
        Scope::Total,
        400,
        Memory::Pss,
        KillTarget::Process,
    )];
    let (mut guard, mut kernel) = guarded(limits, &table, false);
    assert!(guard.system().measures.is_empty());
    guard.on_usage(100, 258 * MIB, &table);
    assert_eq!(
        guard.system().measures.len(),
        1,
        "the RSS sum is over 400 MiB"
    );
    guard.on_usage(101, 259 * MIB, &table);
    assert_eq!(guard.system().measures.len(), 1, "one read at a time");
    let shared: Vec<(u32, u64)> = (100..112).map(|pid| (pid, 23)).collect();
    let request = answer_pss(&mut guard, &table, &mut kernel, &shared);
    assert_eq!(request.pids.len(), 12);
    assert!(
        guard.system().enforcements.is_empty(),
        "12 x 23 MiB is under 400"
    );
    // The sum must grow by the 124 MiB left before a read can matter.
    guard.on_usage(105, 357 * MIB, &table);
    assert!(guard.system().measures.is_empty());
    guard.on_usage(105, 558 * MIB, &table);
    assert_eq!(guard.system().measures.len(), 1);
    let mut grown = shared.clone();
    grown[5] = (105, 323);
    answer_pss(&mut guard, &table, &mut kernel, &grown);
    let victims: Vec<(u32, u64)> = guard
        .system()
        .enforcements
        .iter()
        .map(|e| (e.pid, e.record.rss))
        .collect();
    assert_eq!(victims, [(105, 323 * MIB)], "the largest PSS goes");
}

#[test]
fn a_total_rss_limit_counts_shared_pages_once_per_process() {
    let procs: Vec<ProcInfo> = (100..112).map(|pid| process(pid, "app", 10)).collect();
    let table = table(&procs);
    let limits = vec![limit_of(
        Scope::Total,
        400,
        Memory::Rss,
        KillTarget::Process,
    )];
    let (mut guard, _kernel) = guarded(limits, &table, false);
    for pid in 100..112 {
        guard.on_usage(pid, (258 + u64::from(pid - 100)) * MIB, &table);
    }
    assert!(guard.system().measures.is_empty());
    assert_eq!(
        guard.system().enforcements[0].pid,
        101,
        "the largest at the crossing"
    );
}

#[test]
fn a_swap_limit_has_the_kernel_count_swap_and_confirms_with_it() {
    let table = table(&[process(100, "app", 10)]);
    let limits = vec![limit_of(
        Scope::Process,
        64,
        Memory::RssSwap,
        KillTarget::Process,
    )];
    let (mut guard, mut kernel) = guarded(limits, &table, false);
    assert!(kernel.watched[&100].count_swap);
    guard.after_examination(&table, &HashMap::from([(100, 80 * MIB)]), Some(&mut kernel));
    assert_eq!(
        guard.system().enforcements[0].confirm,
        Some(Confirm {
            over: 64 * MIB,
            memory: Memory::RssSwap
        })
    );
}

#[test]
fn proc_mode_counts_the_swap_the_examination_read() {
    let mut swapped = process(100, "app", 10);
    swapped.swap = 100 * MIB;
    let table = table(&[swapped]);
    let limits = vec![limit_of(
        Scope::Process,
        64,
        Memory::RssSwap,
        KillTarget::Process,
    )];
    let (mut guard, _kernel) = guarded(limits.clone(), &table, false);
    assert_eq!(
        guard.system().enforcements.len(),
        1,
        "10 MiB resident + 100 MiB in swap"
    );
    let only_rss = limit_of(Scope::Process, 64, Memory::Rss, KillTarget::Process);
    let (mut guard, _kernel) = guarded(vec![only_rss], &table, false);
    assert!(guard.system().enforcements.is_empty(), "RSS alone is under");
}

/// The fake's answer to a [`Reaching::Find`]: `members` (PID, name) of
/// `whole`, each with a handle.
fn answer_found(guard: &mut Guard<Fake>, table: &Table, whole: Whole, members: &[(u32, &str)]) {
    let request = guard.system().enforcements.remove(0);
    assert!(
        matches!(request.reaching, Reaching::Find(_)),
        "{:?}",
        request.reaching
    );
    let members = members
        .iter()
        .map(|&(pid, name)| (process(pid, name, 1), Ok(Handle { pid, serial: 1 })))
        .collect();
    guard.complete(
        Completion::Found {
            request: Box::new(request),
            found: Found { whole, members },
        },
        table,
        None,
    );
}

/// The plan the guard chose, as (PIDs chosen, reach, cgroup.kill).
fn chosen(guard: &mut Guard<Fake>) -> (Vec<u32>, Reach, bool) {
    let Reaching::Chosen(plan) = &guard.system().enforcements[0].reaching else {
        panic!("no plan");
    };
    let pids = plan.chosen.iter().map(|c: &Chosen<Handle>| c.pid).collect();
    (pids, plan.reach.clone(), plan.cgroup_kill.is_some())
}

/// Answers the plan: every process chosen was signalled.
fn answer_reached(guard: &mut Guard<Fake>, table: &Table) {
    let request = guard.system().enforcements.remove(0);
    let Reaching::Chosen(plan) = &request.reaching else {
        panic!("no plan");
    };
    let members = plan
        .chosen
        .iter()
        .map(|c| Member {
            pid: c.pid,
            name: c.name.clone(),
            result: MemberResult::Sent,
        })
        .collect();
    guard.complete(
        Completion::Enforced {
            request: Box::new(request),
            result: Enforced::Reached(members),
            sent_ns: Some(2_000),
        },
        table,
        None,
    );
}

#[test]
fn a_group_is_signalled_but_its_protected_member_and_sigkill_follows_the_grace() {
    let table = table(&[process(100, "app", 10)]);
    let limits = vec![Limit {
        action: Action::KillNow,
        ..limit_of(Scope::Process, 64, Memory::Rss, KillTarget::Group)
    }];
    let (_guard, kernel) = guarded(limits, &table, false);
    assert!(
        !kernel.watched[&100].kill_now,
        "the group goes at once, from userspace"
    );
    let limits = vec![limit_of(Scope::Process, 64, Memory::Rss, KillTarget::Group)];
    let (mut guard, _kernel) = guarded(limits, &table, false);
    guard.on_kernel_breach(100, 65 * MIB, false, 1_000, &table);
    assert!(
        guard.system().enforcements[0].confirm.is_some(),
        "confirmed first"
    );
    let members = [(101, "app"), (102, "sshd"), (103, "app")];
    answer_found(&mut guard, &table, Whole::Group { pgid: 100 }, &members);
    assert_eq!(
        chosen(&mut guard),
        (vec![100, 101, 103], Reach::Group { pgid: 100 }, false)
    );
    answer_reached(&mut guard, &table);
    let outcome = outcomes(&mut guard).remove(0);
    assert!(outcome.signalled());
    assert_eq!(outcome.action(), "SIGTERM");
    assert_eq!(
        outcome.to_string(),
        "sent to process group 100: signalled 100 app, 101 app, 103 app; \
         spared 102 sshd (\"sshd\" is in [enforce] protect)"
    );
    let (delay, timer) = guard.system().timers.remove(0);
    assert_eq!(delay, GRACE);
    guard.complete(Completion::Timer(timer), &table, None);
    let request = &guard.system().enforcements[0];
    assert_eq!(request.signal, Signal::Kill);
    assert!(
        matches!(request.reaching, Reaching::Find(KillTarget::Group)),
        "the group is found anew for SIGKILL"
    );
}

#[test]
fn a_cgroup_is_killed_whole_and_refused_when_it_holds_a_protected_process() {
    let cgroup = |path: &str| Whole::Cgroup {
        cgroup: crate::sys::cgroup::Cgroup {
            path: path.into(),
            dir: PathBuf::from("/sys/fs/cgroup").join(path.trim_start_matches('/')),
            v2: true,
        },
        kill_file: true,
    };
    let table = table(&[process(100, "app", 10)]);
    let kill_now = || {
        vec![Limit {
            action: Action::KillNow,
            ..limit_of(Scope::Process, 64, Memory::Rss, KillTarget::Cgroup)
        }]
    };
    let (mut guard, _kernel) = guarded(kill_now(), &table, false);
    guard.on_kernel_breach(100, 65 * MIB, false, 1_000, &table);
    answer_found(&mut guard, &table, cgroup("/test"), &[(101, "app")]);
    assert_eq!(
        chosen(&mut guard),
        (
            vec![100, 101],
            Reach::Cgroup {
                cgroup: "/test".into()
            },
            true
        )
    );
    answer_reached(&mut guard, &table);
    let outcome = outcomes(&mut guard).remove(0);
    assert_eq!(outcome.action(), "SIGKILL (cgroup.kill)");
    assert_eq!(
        outcome.to_string(),
        "cgroup.kill of /test: signalled 100 app, 101 app"
    );

    let (mut guard, _kernel) = guarded(kill_now(), &table, false);
    guard.on_kernel_breach(100, 65 * MIB, false, 1_000, &table);
    answer_found(
        &mut guard,
        &table,
        cgroup("/test"),
        &[(101, "app"), (102, "sshd")],
    );
    let (pids, reach, cgroup_kill) = chosen(&mut guard);
    assert_eq!((pids, cgroup_kill), (vec![100], false), "the process alone");
    assert!(matches!(
        reach,
        Reach::ProcessAlone {
            why: CgroupRefusal::Protected { pid: 102, .. }
        }
    ));
}
