//! The eBPF programs, loaded into this kernel, keep the daemon's process
//! table in step with what `/proc` shows.

use std::{
    collections::HashSet,
    process::{Child, Command, Stdio},
    time::Duration,
};

use procespy_tests::{
    Daemon, TestProg, in_guest, poll, require_root, run, signal, status_process, vm_rss,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// eBPF mode; the test program and `true` are covered by limits they never
/// reach, so the kernel follows them.
const EBPF_WATCH_ONLY: &str = r#"
[monitor]
mode = "ebpf"
scan_interval = "2s"

[[limit]]
name = "procespy-testprog"
max_memory = "8GiB"
action = "alert"

[[limit]]
name = "true"
max_memory = "8GiB"
action = "alert"
"#;

/// Starts `/bin/true`, its output dropped.
fn spawn_true() -> Child {
    Command::new("/bin/true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn /bin/true")
}

/// A daemon with [`EBPF_WATCH_ONLY`].
fn watching() -> Daemon {
    Daemon::with_config(EBPF_WATCH_ONLY).expect("daemon starts")
}

/// A daemon with [`EBPF_WATCH_ONLY`], and the test program, once the
/// daemon's table has it.
fn watched_testprog() -> (Daemon, TestProg) {
    let daemon = watching();
    let prog = TestProg::start(&[]).expect("test program starts");
    daemon
        .wait_covered(prog.pid())
        .expect("the new process enters the table");
    (daemon, prog)
}

#[test]
fn rss_from_the_kernel_map_tracks_vmrss_step_by_step() {
    let Some(_machine) = require_root() else {
        return;
    };
    let (daemon, mut prog) = watched_testprog();
    let pid = prog.pid();

    for step in 1..=16u64 {
        prog.grow(16).expect("grow 16 MiB");
        let expected = vm_rss(pid).expect("VmRSS");
        let status = daemon
            .wait_status(Duration::from_secs(5), |s| {
                status_process(s, pid).is_some_and(|p| p["rss_source"] == "ebpf")
            })
            .expect("the kernel follows the process");
        let entry = status_process(&status, pid).expect("listed");
        let seen = entry["rss_bytes"].as_u64().expect("rss_bytes");
        let diff = seen.abs_diff(expected);
        assert!(
            diff <= MIB,
            "step {step}: the kernel map says {seen} bytes, VmRSS says {expected} ({diff} apart)"
        );
        assert!(
            seen >= step * 16 * MIB,
            "step {step}: {seen} bytes is less than what was touched"
        );
    }
    daemon.stop().expect("daemon stops");
}

/// The PIDs a JSON log has lines for, by `event` field.
fn logged_pids(log: &[Value], event: &str) -> HashSet<u32> {
    log.iter()
        .filter(|line| line["event"] == event)
        .filter_map(|line| line["pid"].as_u64())
        .map(|pid| pid as u32)
        .collect()
}

#[test]
fn every_exec_and_exit_of_2000_short_processes_reaches_the_table() {
    let Some(_machine) = require_root() else {
        return;
    };
    let daemon = watching();

    // As fast as possible: up to 64 in flight at once. Under emulation a
    // guest spawns about a tenth as fast, so it runs a quarter as many.
    let count = if in_guest() { 500 } else { 2000 };
    let mut spawned = HashSet::new();
    let mut running = Vec::new();
    while spawned.len() < count {
        let child = spawn_true();
        spawned.insert(child.id());
        running.push(child);
        if running.len() >= 64 {
            for mut child in running.drain(..) {
                child.wait().expect("wait");
            }
        }
    }
    for mut child in running {
        child.wait().expect("wait");
    }

    let (mut missing_exec, mut missing_exit) = (Vec::new(), Vec::new());
    poll(Duration::from_secs(30), Duration::from_millis(100), || {
        let log = daemon.log();
        let execs = logged_pids(&log, "exec");
        let exits = logged_pids(&log, "exit");
        missing_exec = spawned.difference(&execs).copied().collect();
        missing_exit = spawned.difference(&exits).copied().collect();
        (missing_exec.is_empty() && missing_exit.is_empty()).then_some(())
    });
    assert!(
        missing_exec.is_empty(),
        "{} execs never reached the table: {:?}",
        missing_exec.len(),
        &missing_exec[..missing_exec.len().min(10)]
    );
    assert!(
        missing_exit.is_empty(),
        "{} exits never reached the table: {:?}",
        missing_exit.len(),
        &missing_exit[..missing_exit.len().min(10)]
    );

    let status = daemon.status().expect("status");
    let left: Vec<u32> = spawned
        .iter()
        .copied()
        .filter(|&pid| status_process(&status, pid).is_some())
        .collect();
    assert!(
        left.is_empty(),
        "exited processes left in the table: {left:?}"
    );
    assert_eq!(status["lost_events"], 0, "the ring buffer lost events");
    daemon.stop().expect("daemon stops");
}

#[test]
fn a_process_that_renames_itself_shows_its_new_name() {
    let Some(_machine) = require_root() else {
        return;
    };
    let (daemon, mut prog) = watched_testprog();
    let pid = prog.pid();
    prog.command("rename renamed-by-test").expect("rename");
    // comm keeps 15 bytes.
    let status = daemon
        .wait_status(Duration::from_secs(5), |s| {
            status_process(s, pid).is_some_and(|p| p["name"] == "renamed-by-test")
        })
        .expect("the new name reaches the table");
    assert_eq!(
        status_process(&status, pid).unwrap()["name"],
        "renamed-by-test"
    );
    daemon.stop().expect("daemon stops");
}

/// The ids of the BPF programs `pid` holds, from the `prog_id` lines of its
/// descriptors' fdinfo.
fn programs_held_by(pid: u32) -> Vec<u64> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("fdinfo") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).unwrap_or_default();
        ids.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("prog_id:")?.trim().parse::<u64>().ok()),
        );
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The ids of every loaded BPF program named `procespy_*`, from bpftool.
fn loaded_procespy_programs() -> Vec<u64> {
    let output = run(Command::new("bpftool").args(["prog", "show", "--json"]));
    let progs: Value = serde_json::from_str(&output).expect("bpftool prints JSON");
    progs
        .as_array()
        .expect("a list")
        .iter()
        .filter(|p| {
            p["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("procespy_"))
        })
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

#[test]
fn sigterm_detaches_every_program() {
    let Some(_machine) = require_root() else {
        return;
    };
    let daemon = watching();
    let ours = programs_held_by(daemon.pid());
    let loaded = loaded_procespy_programs();
    assert_eq!(
        ours.len(),
        5,
        "the running daemon should hold five programs: {ours:?}"
    );
    assert!(
        ours.iter().all(|id| loaded.contains(id)),
        "bpftool lists {loaded:?}, ours are {ours:?}"
    );

    let status = daemon.stop().expect("daemon stops");
    assert!(
        status.success(),
        "procespy exits 0 on SIGTERM, got {status}"
    );
    // The kernel frees a program after an RCU grace period once its last
    // descriptor is closed: give it a moment on a busy machine.
    let mut left = Vec::new();
    poll(Duration::from_secs(5), Duration::from_millis(100), || {
        left = loaded_procespy_programs()
            .into_iter()
            .filter(|id| ours.contains(id))
            .collect();
        left.is_empty().then_some(())
    });
    assert!(
        left.is_empty(),
        "programs still loaded after exit: {left:?}"
    );
}

#[test]
fn a_full_ring_buffer_is_counted_and_healed_by_an_examination() {
    let Some(_machine) = require_root() else {
        return;
    };
    // A long scan interval: healing must come from the loss, not the schedule.
    let cfg = EBPF_WATCH_ONLY.replace("scan_interval = \"2s\"", "scan_interval = \"10m\"");
    let daemon = Daemon::with_config(&cfg).expect("daemon starts");
    let before = daemon
        .wait_status(Duration::from_secs(10), |s| {
            s["examinations"].as_u64() >= Some(1)
        })
        .expect("the first examination is done")["examinations"]
        .as_u64()
        .unwrap();
    signal(daemon.pid(), libc::SIGSTOP).unwrap();
    // While the daemon sleeps, overflow its 1 MiB ring (three events a process).
    for _ in 0..8000 {
        spawn_true().wait().expect("wait");
    }
    let prog = TestProg::start(&[]).expect("test program starts");
    signal(daemon.pid(), libc::SIGCONT).unwrap();

    // The program's own events may have fitted (other tests' processes
    // fill the ring too, in any order): the examination is waited for too.
    daemon
        .wait_status(Duration::from_secs(20), |s| {
            s["lost_events"].as_u64().is_some_and(|lost| lost > 0)
                && status_process(s, prog.pid()).is_some()
                && s["examinations"].as_u64().is_some_and(|n| n > before)
        })
        .expect("losses are counted, an examination runs after them, and the table heals");
    let warned = daemon
        .log()
        .iter()
        .any(|l| l["level"] == "WARN" && l["message"].as_str().is_some_and(|m| m.contains("lost")));
    assert!(warned, "the loss is logged");
    daemon.stop().expect("daemon stops");
}
