//! The guard's decisions, with a fake system and a fake kernel: no root,
//! no processes, no clock.

use std::{collections::HashMap, path::PathBuf, time::Duration, time::Instant};

use super::*;
use crate::{
    config::{Limits, Matcher, Scope},
    guard::system::NoHandle,
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
    timers: Vec<(Duration, Timer<Handle>)>,
    exited: Vec<Handle>,
}

impl System for Fake {
    type Handle = Handle;

    fn request_handle(&mut self, pid: u32, start_ticks: Option<u64>) {
        self.requests.push((pid, start_ticks));
    }

    fn enforce(&mut self, request: Enforcement<Handle>) {
        self.enforcements.push(request);
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

/// What the kernel was told.
#[derive(Default)]
struct FakeKernel {
    watched: HashMap<u32, WatchSpec>,
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

    fn rss(&self, _: u32) -> Option<KernelRss> {
        None
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
            report_usage: false
        }
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
        request.confirm_over,
        Some(64 * MIB),
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
    let victims: Vec<(u32, Option<u64>)> = guard
        .system()
        .enforcements
        .iter()
        .map(|e| (e.pid, e.confirm_over))
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
    let (mut guard, kernel) = guarded(limits, &table, false);
    let over = HashMap::from([(100, 150 * MIB)]);
    guard.after_examination(&table, &over, Some(&kernel));
    guard.after_examination(&table, &over, Some(&kernel));
    assert_eq!(
        outcomes(&mut guard),
        [Outcome::Alerted],
        "once, not every scan"
    );
    guard.after_examination(&table, &HashMap::from([(100, 50 * MIB)]), Some(&kernel));
    guard.after_examination(&table, &over, Some(&kernel));
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
