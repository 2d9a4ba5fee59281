//! Limits enforced for real: test programs grow past their limits and
//! procespy stops them, in eBPF mode and in proc mode.
//!
//! Every test copies the test program under a name of its own, so the
//! daemons of tests running side by side never cover each other's children.

use std::{os::unix::ffi::OsStrExt, process::Command, time::Duration};

use procespy_tests::{
    Config, Daemon, DaemonOptions, Limit, Scratch, TestProg, require_root, signal,
};

const MIB: u64 = 1 << 20;
const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;

/// `mode`, a 1 s grace, and `tp-protected` protected.
fn config(mode: &str) -> Config {
    Config::new(mode).protect("tp-protected")
}

fn limit(name: &str, max: &str, action: &str) -> Limit {
    Limit::name(name, max).action(action)
}

/// Starts a daemon with `config`, and the test program copied as `name`.
fn setup(config: &Config, name: &str, args: &[&str]) -> (Daemon, TestProg, Scratch) {
    let (scratch, exe) = Scratch::with_testprog(name);
    let daemon = Daemon::with_config(config).expect("daemon starts");
    let prog = TestProg::start_as(&exe, args).expect("test program starts");
    (daemon, prog, scratch)
}

/// [`setup`] with one limit on `name`, waiting until it covers the program.
fn covered(mode: &str, limit: Limit, name: &str, args: &[&str]) -> (Daemon, TestProg, Scratch) {
    let (daemon, prog, scratch) = setup(&config(mode).limit(limit), name, args);
    daemon.wait_covered(prog.pid()).expect("covered");
    (daemon, prog, scratch)
}

fn kill_grows_past(mode: &str, name: &str) {
    let Some(_machine) = require_root() else {
        return;
    };
    let (daemon, mut prog, _scratch) = covered(mode, limit(name, "64MiB", "kill"), name, &[]);
    assert_eq!(prog.ended_by("grow 96").expect("dies"), Some(SIGTERM));
    let action = daemon
        .wait_event("action", prog.pid(), Duration::from_secs(5))
        .expect("logged");
    assert_eq!(action["action"], "SIGTERM");
    assert_eq!(action["result"], "sent");
    assert_eq!(action["rule"], name);
    assert_eq!(action["limit"], 64 * MIB);
    assert!(action["rss"].as_u64().unwrap() > 64 * MIB);
}

#[test]
fn kill_sends_sigterm_ebpf() {
    kill_grows_past("ebpf", "tp-kill-ebpf");
}

#[test]
fn kill_sends_sigterm_proc() {
    kill_grows_past("proc", "tp-kill-proc");
}

fn kill_escalates_after_grace(mode: &str, name: &str) {
    let Some(_machine) = require_root() else {
        return;
    };
    let (daemon, mut prog, _scratch) =
        covered(mode, limit(name, "64MiB", "kill"), name, &["--ignore-term"]);
    let start = std::time::Instant::now();
    assert_eq!(prog.ended_by("grow 96").expect("dies"), Some(SIGKILL));
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "SIGKILL came before the 1 s grace"
    );
    let actions: Vec<String> = daemon
        .events_for("action", prog.pid())
        .iter()
        .map(|a| a["action"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(actions, ["SIGTERM", "SIGKILL"]);
}

#[test]
fn kill_escalates_to_sigkill_after_grace_ebpf() {
    kill_escalates_after_grace("ebpf", "tp-grace-ebpf");
}

#[test]
fn kill_escalates_to_sigkill_after_grace_proc() {
    kill_escalates_after_grace("proc", "tp-grace-proc");
}

/// Starts the test program as `name` under a 256 MiB `kill-now` limit,
/// sends it `growth` (which reports every MiB) and waits for SIGKILL;
/// returns the daemon, the program and the last size it reported.
fn kill_now_during(name: &str, growth: &str) -> (Daemon, TestProg, u64) {
    let (daemon, mut prog, _scratch) =
        covered("ebpf", limit(name, "256MiB", "kill-now"), name, &[]);
    prog.send(growth).expect("start growing");
    let last = prog.last_progress().expect("the output ends");
    assert_eq!(
        prog.wait_signal(Duration::from_secs(10)).expect("dies"),
        Some(SIGKILL)
    );
    (daemon, prog, last)
}

#[test]
fn kill_now_dies_in_the_kernel_before_limit_plus_1mib() {
    let Some(_machine) = require_root() else {
        return;
    };
    // Grow as fast as it can (4 GiB/s), reporting every MiB.
    let (daemon, prog, last) = kill_now_during("tp-killnow-ebpf", "rate 4096 512");
    assert!(
        last <= 256 * MIB + MIB,
        "reported {} MiB before dying",
        last / MIB
    );
    let action = daemon
        .wait_event("action", prog.pid(), Duration::from_secs(5))
        .expect("logged");
    assert_eq!(action["action"], "SIGKILL (kernel)");
}

/// Four threads grow at once: on kernels that batch page counts per thread
/// (before 6.2) each can hold up to 64 pages the mm has not seen yet, so
/// the kernel may see the crossing up to 1 MiB late. The overshoot is
/// printed for the record (`cargo xtask test-kernels` shows it per kernel).
#[test]
fn kill_now_stops_four_growing_threads_within_limit_plus_4mib() {
    let Some(_machine) = require_root() else {
        return;
    };
    let (_daemon, _prog, last) = kill_now_during("tp-killnow-mt", "threads 4 512");
    let overshoot = last.saturating_sub(256 * MIB);
    println!(
        "kill-now, 4 threads: last reported {:.1} MiB, {:.1} MiB past the 256 MiB limit",
        last as f64 / MIB as f64,
        overshoot as f64 / MIB as f64
    );
    assert!(
        last <= 256 * MIB + 4 * MIB,
        "reported {} MiB before dying",
        last / MIB
    );
}

#[test]
fn kill_now_in_proc_mode_sends_sigkill() {
    let Some(_machine) = require_root() else {
        return;
    };
    let name = "tp-killnow-proc";
    let (_daemon, mut prog, _scratch) =
        covered("proc", limit(name, "64MiB", "kill-now"), name, &[]);
    assert_eq!(prog.ended_by("grow 96").expect("dies"), Some(SIGKILL));
}

#[test]
fn under_limit_other_names_and_protected_are_never_signalled() {
    let Some(_machine) = require_root() else {
        return;
    };
    let scratch = Scratch::new("never");
    let config = config("ebpf")
        .limit(limit("tp-under", "512MiB", "kill-now"))
        .limit(limit("tp-protected", "16MiB", "kill-now"));
    let daemon = Daemon::with_config(&config).expect("daemon starts");
    let mut under = TestProg::start_as(&scratch.testprog_named("tp-under"), &[]).unwrap();
    let mut other = TestProg::start_as(&scratch.testprog_named("tp-other"), &[]).unwrap();
    let mut protected = TestProg::start_as(&scratch.testprog_named("tp-protected"), &[]).unwrap();
    daemon.wait_covered(under.pid()).expect("covered");
    daemon.wait_covered(protected.pid()).expect("covered");
    under.grow(64).expect("under its limit");
    other.grow(64).expect("no limit covers it");
    protected.grow(64).expect("protected");
    std::thread::sleep(Duration::from_millis(800));
    assert!(under.alive() && other.alive() && protected.alive());
    let refusal = daemon
        .wait_event("action", protected.pid(), Duration::from_secs(5))
        .expect("logged");
    assert_eq!(refusal["action"], "none");
    assert!(
        refusal["result"].as_str().unwrap().contains("refused"),
        "{refusal}"
    );
    assert!(daemon.events_for("action", under.pid()).is_empty());
    assert!(daemon.events_for("action", other.pid()).is_empty());
}

#[test]
fn pid_1_is_refused_even_when_over_its_limit() {
    let Some(_machine) = require_root() else {
        return;
    };
    // Dry run, so that other processes sharing PID 1's name are safe too:
    // protection is decided before dry run, so the refusal shows either way.
    let init = std::fs::read_to_string("/proc/1/comm").expect("PID 1's name");
    let config = config("proc").limit(limit(init.trim(), "1B", "kill-now"));
    let daemon = dry_run(&config);
    let pid1 = daemon
        .wait_event("action", 1, Duration::from_secs(10))
        .expect("PID 1's breach is logged");
    assert_eq!(pid1["action"], "none");
    assert!(
        pid1["result"]
            .as_str()
            .unwrap()
            .contains("PID 1 is never signalled"),
        "{pid1}"
    );
}

#[test]
fn dry_run_logs_the_decision_and_never_signals() {
    let Some(_machine) = require_root() else {
        return;
    };
    let name = "tp-dryrun";
    let config = config("ebpf").limit(limit(name, "32MiB", "kill-now"));
    let scratch = Scratch::new("dryrun");
    let daemon = dry_run(&config);
    let mut prog = TestProg::start_as(&scratch.testprog_named(name), &[]).unwrap();
    daemon.wait_covered(prog.pid()).expect("covered");
    prog.grow(64).expect("grows past the limit and lives");
    let action = daemon
        .wait_event("action", prog.pid(), Duration::from_secs(5))
        .expect("logged");
    assert_eq!(action["action"], "SIGKILL");
    assert_eq!(action["result"], "dry-run: not sent");
    std::thread::sleep(Duration::from_millis(300));
    assert!(prog.alive());
}

/// A daemon with `config` that only logs what it would do (`--dry-run`).
fn dry_run(config: &Config) -> Daemon {
    Daemon::start(DaemonOptions {
        config: &config.to_string(),
        args: &["--dry-run"],
        ..Default::default()
    })
    .expect("daemon starts")
}

/// Makes the next fork get `pid` (via `ns_last_pid`) and starts `sleep` there.
fn respawn_at(pid: u32) -> Option<std::process::Child> {
    for _ in 0..20 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", pid - 1)).ok()?;
        let child = Command::new("sleep").arg("30").spawn().ok()?;
        if child.id() == pid {
            return Some(child);
        }
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
    }
    None
}

/// The breach is decided after the process died and another took its PID:
/// the daemon is stopped (SIGSTOP) while the process crosses its limit, is
/// killed, and a newcomer gets the PID; then the daemon goes on and meets
/// the breach. Its pidfd says the process is gone: nothing is signalled.
#[test]
fn a_reused_pid_is_never_signalled() {
    let Some(_machine) = require_root() else {
        return;
    };
    let name = "tp-reuse";
    let (daemon, mut prog, _scratch) = covered("ebpf", limit(name, "32MiB", "kill"), name, &[]);
    let pid = prog.pid();
    signal(daemon.pid(), libc::SIGSTOP).unwrap();
    let grown = prog.grow(64);
    signal(pid, SIGKILL).unwrap();
    let died = prog.wait_signal(Duration::from_secs(5));
    let newcomer = respawn_at(pid);
    signal(daemon.pid(), libc::SIGCONT).unwrap();
    grown.expect("grew while the daemon was stopped");
    assert_eq!(died.unwrap(), Some(SIGKILL));
    let mut newcomer = newcomer.expect("a new process gets the PID");
    let action = daemon
        .wait_event("action", pid, Duration::from_secs(5))
        .expect("logged");
    assert!(
        action["result"].as_str().unwrap().starts_with("gone"),
        "{action}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        newcomer.try_wait().unwrap().is_none(),
        "the newcomer was signalled"
    );
    let _ = newcomer.kill();
    let _ = newcomer.wait();
}

#[test]
fn total_scope_kills_the_largest_and_spares_the_rest() {
    let Some(_machine) = require_root() else {
        return;
    };
    let name = "tp-total";
    let (_scratch, exe) = Scratch::with_testprog(name);
    let config = config("ebpf").limit(limit(name, "180MiB", "kill").scope("total"));
    let daemon = Daemon::with_config(&config).expect("daemon starts");
    let mut procs: Vec<TestProg> = (0..3)
        .map(|_| TestProg::start_as(&exe, &[]).unwrap())
        .collect();
    for p in &procs {
        daemon.wait_covered(p.pid()).expect("covered");
    }
    procs[0].grow(100).unwrap();
    procs[1].grow(50).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        procs.iter_mut().all(|p| p.alive()),
        "150 MiB in all is under 180 MiB"
    );
    procs[2].send("grow 40").unwrap();
    assert_eq!(
        procs[0].wait_signal(Duration::from_secs(10)).unwrap(),
        Some(SIGTERM)
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        procs[1].alive() && procs[2].alive(),
        "only the largest dies"
    );
}

#[test]
fn a_twenty_char_name_matches_through_the_executable() {
    let Some(_machine) = require_root() else {
        return;
    };
    let name = "tp-twenty-char-namex";
    assert_eq!(name.len(), 20);
    let (_daemon, mut prog, _scratch) = covered("ebpf", limit(name, "32MiB", "kill"), name, &[]);
    assert_eq!(prog.ended_by("grow 64").unwrap(), Some(SIGTERM));
}

#[test]
fn a_name_with_spaces_and_parentheses_matches_after_rename() {
    let Some(_machine) = require_root() else {
        return;
    };
    let odd = "tp (odd) name";
    let (daemon, mut prog, _scratch) = setup(
        &config("ebpf").limit(limit(odd, "32MiB", "kill")),
        "tp-renamer",
        &[],
    );
    prog.command(&format!("rename {odd}")).unwrap();
    daemon.wait_covered(prog.pid()).expect("covered");
    assert_eq!(prog.ended_by("grow 64").unwrap(), Some(SIGTERM));
}

#[test]
fn non_utf8_command_lines_match_byte_patterns_and_crash_nothing() {
    let Some(_machine) = require_root() else {
        return;
    };
    let (_scratch, exe) = Scratch::with_testprog("tp-bytes");
    let config =
        config("ebpf").limit(Limit::pattern(r"tp-bytes -- (?-u:\xff)", "32MiB").action("kill"));
    let daemon = Daemon::with_config(&config).expect("daemon starts");
    let odd = std::ffi::OsStr::from_bytes(b"\xff\xfe(x)\n");
    let spare = std::ffi::OsStr::from_bytes(b"\xfe");
    let mut matching = TestProg::start_os(&exe, &["--".as_ref(), odd]).unwrap();
    let mut sparing = TestProg::start_os(&exe, &["--".as_ref(), spare]).unwrap();
    daemon.wait_covered(matching.pid()).expect("covered");
    sparing.grow(64).unwrap();
    assert_eq!(matching.ended_by("grow 64").unwrap(), Some(SIGTERM));
    assert!(sparing.alive());
    assert!(daemon.status().is_ok(), "the daemon is still answering");
}

/// `protect` names executables: a process that takes a protected name for
/// itself (prctl PR_SET_NAME, which anyone may call) but runs another
/// executable is enforced all the same, at the page that crosses its limit.
#[test]
fn a_process_named_like_a_protected_one_is_still_enforced() {
    let Some(_machine) = require_root() else {
        return;
    };
    let name = "tp-impostor";
    let (daemon, mut prog, _scratch) = covered("ebpf", limit(name, "32MiB", "kill-now"), name, &[]);
    prog.command("rename tp-protected").unwrap();
    daemon
        .wait_event("rename", prog.pid(), Duration::from_secs(5))
        .expect("the rename reaches the daemon");
    assert_eq!(prog.ended_by("grow 64").unwrap(), Some(SIGKILL));
    let action = daemon
        .wait_event("action", prog.pid(), Duration::from_secs(5))
        .expect("logged");
    assert_eq!(action["action"], "SIGKILL (kernel)", "{action}");
}
