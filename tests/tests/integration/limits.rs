//! Limits that fit real programs (issue 14), with real processes: PSS for
//! processes that share memory, swap counted with RSS, and a signal that
//! reaches a whole process group or cgroup.

use std::time::Duration;

use procespy_tests::{
    Config, Daemon, Limit, Scratch, Swap, TestCgroup, TestProg, Watched, require, require_root,
    vm_rss,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;

/// How many processes share the mapping, and how large it is.
const SHARERS: usize = 12;
const SHARED_MIB: u64 = 256;

/// A dozen test programs named `name` that share one 256 MiB mapping of a
/// file in /dev/shm (removed with the returned file); the first has 16 MiB
/// more of its own, which makes it the largest by RSS.
fn sharers(name: &str) -> (Scratch, Vec<TestProg>, tempfile::TempPath) {
    let (scratch, exe) = Scratch::with_testprog(name);
    let file = tempfile::Builder::new()
        .prefix("procespy-shared-")
        .tempfile_in("/dev/shm")
        .expect("a file in /dev/shm")
        .into_temp_path();
    let share = format!("share {} {SHARED_MIB}", file.display());
    let mut procs: Vec<TestProg> = (0..SHARERS)
        .map(|_| TestProg::start_as(&exe, &[]).expect("test program starts"))
        .collect();
    for prog in &mut procs {
        let rss: u64 = prog.command(&share).unwrap().parse().unwrap();
        assert!(rss >= SHARED_MIB * MIB, "RSS {rss} after sharing");
    }
    procs[0].grow(16).unwrap();
    (scratch, procs, file)
}

/// The total-scope limit of 400 MiB on `name`, counting `memory`.
fn sharers_config(name: &str, memory: &str) -> Config {
    Config::new("ebpf").no_popups().limit(
        Limit::name(name, "400MiB")
            .action("kill")
            .scope("total")
            .memory(memory),
    )
}

/// The daemon's `pss` lines for the limit `rule`.
fn pss_lines(daemon: &Daemon, rule: &str) -> Vec<Value> {
    daemon
        .log()
        .into_iter()
        .filter(|l| l["event"] == "pss" && l["rule"] == rule)
        .collect()
}

/// Waits until the daemon has examined the processes `count` more times.
fn examinations(daemon: &Daemon, count: u64) {
    let now = daemon.status().unwrap()["examinations"].as_u64().unwrap();
    daemon
        .wait_status(Duration::from_secs(10), |s| {
            s["examinations"].as_u64().is_some_and(|n| n >= now + count)
        })
        .expect("the daemon examines");
}

/// The `action` lines of the log.
fn actions(daemon: &Daemon) -> Vec<Value> {
    daemon
        .log()
        .into_iter()
        .filter(|l| l["event"] == "action")
        .collect()
}

#[test]
fn pss_counts_a_shared_mapping_once_and_kills_the_one_that_grows() {
    let Some(_machine) = require_root() else {
        return;
    };
    let name = "tp-pss";
    let (_scratch, mut procs, _file) = sharers(name);
    let rss_sum: u64 = procs.iter().map(|p| vm_rss(p.pid()).unwrap()).sum();
    assert!(rss_sum > 3000 * MIB, "RSS sum {rss_sum}");
    let daemon = Daemon::with_config(sharers_config(name, "pss")).expect("daemon starts");
    // The daemon read the PSS of all twelve: the RSS sum is far over the
    // limit, the PSS sum under it.
    let looked = daemon_poll(|| {
        pss_lines(&daemon, name).into_iter().find(|l| {
            l["message"]
                .as_str()
                .unwrap_or("")
                .contains("over 12 processes")
        })
    })
    .unwrap_or_else(|| {
        panic!(
            "no PSS decision over the 12 processes; log:\n{}",
            daemon.log_text()
        )
    });
    let pss = looked["pss"].as_u64().unwrap();
    assert!(looked["rss"].as_u64().unwrap() > 3000 * MIB, "{looked}");
    assert!(
        (SHARED_MIB * MIB..400 * MIB).contains(&pss),
        "PSS sum {} MiB",
        pss / MIB
    );
    // And again at later examinations, still killing none.
    let before = pss_lines(&daemon, name).len();
    examinations(&daemon, 3);
    assert!(pss_lines(&daemon, name).len() > before, "PSS read again");
    assert!(procs.iter_mut().all(|p| p.alive()), "none is killed");
    assert_eq!(actions(&daemon), [] as [Value; 0]);

    // One grows 300 MiB of its own, 100 MiB a second: the PSS sum passes
    // the limit on the way, and it, not the largest by RSS, is the one
    // killed. (How soon a PSS read catches a process growing flat out is
    // the reaction benchmark's: a loaded machine reads twelve processes'
    // page tables slowly, and a test bound on it would time the machine.)
    let grower = procs[5].pid();
    assert_eq!(procs[5].ended_by("rate 100 300").unwrap(), Some(SIGTERM));
    let action = daemon
        .wait_event("action", grower, Duration::from_secs(5))
        .unwrap();
    // Caught as the sum crossed, long before the 300 MiB: its PSS then
    // (the record's figure) is its growth and its share of the mapping.
    assert_eq!(action["action"], "SIGTERM");
    let its_pss = action["rss"].as_u64().unwrap();
    assert!(
        its_pss > 64 * MIB && its_pss < 300 * MIB,
        "its PSS {} MiB",
        its_pss / MIB
    );
    let over = pss_lines(&daemon, name)
        .into_iter()
        .filter_map(|l| l["pss"].as_u64())
        .max()
        .unwrap();
    // A PSS read walks the page tables of twelve processes that map 256 MiB
    // each: the sum acted on is past the limit by what it grew meanwhile,
    // a few MiB, and under 128 MiB while a read takes less than 1.28 s.
    assert!(
        over > 400 * MIB && over < 528 * MIB,
        "the PSS sum acted on: {} MiB",
        over / MIB
    );
    examinations(&daemon, 3);
    for (i, prog) in procs.iter_mut().enumerate() {
        if i != 5 {
            assert!(prog.alive(), "process {i} ({}) lives", prog.pid());
        }
    }
    let signalled: Vec<u64> = actions(&daemon)
        .iter()
        .filter_map(|a| a["pid"].as_u64())
        .collect();
    assert_eq!(signalled, [u64::from(grower)]);
}

#[test]
fn rss_counts_a_shared_mapping_in_every_process_and_kills_the_largest() {
    let Some(_machine) = require_root() else {
        return;
    };
    let name = "tp-pss-rss";
    let (_scratch, mut procs, _file) = sharers(name);
    let daemon = Daemon::with_config(sharers_config(name, "rss")).expect("daemon starts");
    // 12 × 256 MiB of RSS over 400 MiB: the largest goes first, then all
    // but one, though the memory they use fits under the limit.
    assert_eq!(
        procs[0].wait_signal(Duration::from_secs(10)).unwrap(),
        Some(SIGTERM)
    );
    let killed = daemon_poll(|| {
        let ended = procs
            .iter_mut()
            .map(|p| !p.alive())
            .filter(|&dead| dead)
            .count();
        (ended == SHARERS - 1).then_some(ended)
    });
    assert_eq!(killed, Some(SHARERS - 1), "{}", daemon.log_text());
    examinations(&daemon, 3);
    assert_eq!(
        procs
            .iter_mut()
            .map(|p| p.alive())
            .filter(|&alive| alive)
            .count(),
        1
    );
    let first = actions(&daemon);
    assert!(
        first
            .iter()
            .any(|a| a["pid"].as_u64() == Some(u64::from(procs[0].pid()))),
        "the largest was signalled"
    );
}

/// Polls `probe` every 50 ms for 10 s.
fn daemon_poll<T>(probe: impl FnMut() -> Option<T>) -> Option<T> {
    procespy_tests::poll(Duration::from_secs(10), Duration::from_millis(50), probe)
}

/// `VmSwap` of `pid` in bytes.
fn vm_swap(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmSwap:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Grows `prog` by 8 MiB at a time up to `mib` more, or until it dies;
/// returns the largest VmRSS it answered.
fn grow_in_steps(prog: &mut TestProg, mib: u64) -> u64 {
    let mut largest = 0;
    for _ in 0..mib / 8 {
        match prog.grow(8) {
            Ok(rss) => largest = largest.max(rss),
            Err(_) => break, // killed
        }
    }
    largest
}

#[test]
fn rss_plus_swap_kills_a_process_pushed_to_swap_that_rss_alone_misses() {
    let Some(_machine) = require_root() else {
        return;
    };
    let swap = Swap::on(512);
    if !require(
        &format!(
            "swap space: {}",
            swap.as_ref().err().map_or("", String::as_str)
        ),
        swap.is_ok(),
    ) {
        return;
    }
    let (scratch, both) = Scratch::with_testprog("tp-swap-both");
    let rss_only = scratch.testprog_named("tp-swap-rss");
    let config = Config::new("ebpf")
        .no_popups()
        .limit(
            Limit::name("tp-swap-both", "128MiB")
                .action("kill")
                .memory("rss+swap"),
        )
        .limit(Limit::name("tp-swap-rss", "128MiB").action("kill"));
    let daemon = Daemon::with_config(config).expect("daemon starts");
    // Each in a memory cgroup that keeps 64 MiB resident.
    let cgroups: Vec<TestCgroup> = (0..2)
        .map(|_| TestCgroup::memory("swap", 64 * MIB).expect("a memory cgroup"))
        .collect();
    let mut counted = TestProg::start_as(&both, &[]).unwrap();
    let mut missed = TestProg::start_as(&rss_only, &[]).unwrap();
    for (prog, cgroup) in [&counted, &missed].into_iter().zip(&cgroups) {
        daemon.wait_covered(prog.pid()).unwrap();
        cgroup.add(prog.pid()).unwrap();
    }

    // Under `rss` alone: 200 MiB, most of it in swap, and never killed.
    let largest = grow_in_steps(&mut missed, 200);
    examinations(&daemon, 3);
    assert!(
        missed.alive(),
        "rss alone kills it; log:\n{}",
        daemon.log_text()
    );
    let (rss, swap_used) = (vm_rss(missed.pid()).unwrap(), vm_swap(missed.pid()));
    assert!(
        largest < 128 * MIB && rss + swap_used > 128 * MIB,
        "VmRSS at most {} MiB, now {} MiB + {} MiB of swap",
        largest / MIB,
        rss / MIB,
        swap_used / MIB
    );
    assert_eq!(daemon.events_for("action", missed.pid()), [] as [Value; 0]);

    // Under `rss+swap`: killed once RSS and swap pass 128 MiB, while its
    // RSS stayed under it.
    let largest = grow_in_steps(&mut counted, 200);
    assert_eq!(
        counted.wait_signal(Duration::from_secs(10)).unwrap(),
        Some(SIGTERM)
    );
    assert!(largest < 128 * MIB, "VmRSS reached {} MiB", largest / MIB);
    let action = daemon
        .wait_event("action", counted.pid(), Duration::from_secs(5))
        .unwrap();
    assert_eq!(action["action"], "SIGTERM");
    assert!(action["rss"].as_u64().unwrap() > 128 * MIB, "{action}");
}

/// The `action` line for `pid`'s breach.
fn action_for(daemon: &Daemon, pid: u32) -> Value {
    daemon
        .wait_event("action", pid, Duration::from_secs(5))
        .unwrap()
}

#[test]
fn kill_group_signals_the_parent_and_its_children_and_spares_a_protected_one() {
    let Some(_machine) = require_root() else {
        return;
    };
    let (scratch, parent_exe) = Scratch::with_testprog("tp-grp");
    let kid = scratch.testprog_named("tp-grp-kid");
    let guard = scratch.testprog_named("tp-grp-guard");
    let config = Config::new("ebpf")
        .no_popups()
        .protect("tp-grp-guard")
        .limit(Limit::name("tp-grp", "64MiB").action("kill").kill("group"));
    let daemon = Daemon::with_config(config).expect("daemon starts");
    let mut parent = TestProg::start_as(&parent_exe, &["--own-group"]).unwrap();
    let mut spawn = |exe: &std::path::Path| {
        let pid: u32 = parent
            .command(&format!("spawn {}", exe.display()))
            .unwrap()
            .parse()
            .unwrap();
        Watched::open(pid).unwrap()
    };
    let kids: Vec<Watched> = (0..3).map(|_| spawn(&kid)).collect();
    let spared = spawn(&guard);
    daemon.wait_covered(parent.pid()).unwrap();

    assert_eq!(parent.ended_by("grow 96").unwrap(), Some(SIGTERM));
    for kid in &kids {
        assert!(kid.wait_end(Duration::from_secs(5)), "{} ended", kid.pid());
    }
    let action = action_for(&daemon, parent.pid());
    let result = action["result"].as_str().unwrap();
    assert!(
        result.starts_with(&format!(
            "sent to process group {}: signalled",
            parent.pid()
        )),
        "{result}"
    );
    for kid in &kids {
        assert!(
            result.contains(&format!("{} tp-grp-kid", kid.pid())),
            "{result}"
        );
    }
    assert!(
        result.contains(&format!(
            "spared {} tp-grp-guard (\"tp-grp-guard\" is in [enforce] protect)",
            spared.pid()
        )),
        "{result}"
    );
    // Past the grace: the protected one still runs.
    examinations(&daemon, 8);
    assert!(!spared.ended(), "the protected member lives");
}

#[test]
fn kill_cgroup_empties_the_cgroup_at_once_with_cgroup_kill() {
    let Some(_machine) = require_root() else {
        return;
    };
    let cgroup = TestCgroup::v2("kill").expect("a cgroup v2");
    let below = cgroup.child("below").unwrap();
    let (scratch, exe) = Scratch::with_testprog("tp-cg");
    let mate = scratch.testprog_named("tp-cg-mate");
    let config = Config::new("ebpf")
        .no_popups()
        .limit(Limit::name("tp-cg", "64MiB").action("kill").kill("cgroup"));
    let daemon = Daemon::with_config(config).expect("daemon starts");
    // All of them ignore SIGTERM: only the SIGKILL of cgroup.kill ends them.
    let mut trigger = TestProg::start_as(&exe, &["--ignore-term"]).unwrap();
    let mut mates: Vec<TestProg> = (0..3)
        .map(|_| TestProg::start_as(&mate, &["--ignore-term"]).unwrap())
        .collect();
    cgroup.add(trigger.pid()).unwrap();
    for (i, prog) in mates.iter().enumerate() {
        let at = if i == 0 { &below } else { &cgroup };
        at.add(prog.pid()).unwrap();
    }
    daemon.wait_covered(trigger.pid()).unwrap();

    assert_eq!(trigger.ended_by("grow 96").unwrap(), Some(SIGKILL));
    for prog in &mut mates {
        assert_eq!(
            prog.wait_signal(Duration::from_secs(5)).unwrap(),
            Some(SIGKILL)
        );
    }
    assert_eq!(cgroup.procs().unwrap(), [] as [u32; 0]);
    assert_eq!(below.procs().unwrap(), [] as [u32; 0]);
    let records = daemon.events_for("action", trigger.pid());
    let results: Vec<&str> = records
        .iter()
        .map(|a| a["result"].as_str().unwrap())
        .collect();
    assert_eq!(records.len(), 2, "{results:?}");
    assert_eq!(records[0]["action"], "SIGTERM");
    assert!(
        results[0].starts_with(&format!(
            "sent to each process of cgroup {} (cgroup.kill after the grace)",
            cgroup.path()
        )),
        "{results:?}"
    );
    assert_eq!(records[1]["action"], "SIGKILL (cgroup.kill)");
    assert!(
        results[1].starts_with(&format!("cgroup.kill of {}: signalled", cgroup.path())),
        "{results:?}"
    );
    for prog in &mates {
        assert!(results[1].contains(&prog.pid().to_string()), "{results:?}");
    }
}

#[test]
fn kill_cgroup_refuses_a_cgroup_that_holds_a_protected_process() {
    let Some(_machine) = require_root() else {
        return;
    };
    let cgroup = TestCgroup::v2("refuse").expect("a cgroup v2");
    let (scratch, exe) = Scratch::with_testprog("tp-cgr");
    let mate = scratch.testprog_named("tp-cgr-mate");
    let guard = scratch.testprog_named("tp-cgr-guard");
    let config = Config::new("ebpf")
        .no_popups()
        .protect("tp-cgr-guard")
        .limit(Limit::name("tp-cgr", "64MiB").action("kill").kill("cgroup"));
    let daemon = Daemon::with_config(config).expect("daemon starts");
    let mut trigger = TestProg::start_as(&exe, &[]).unwrap();
    let mut mate = TestProg::start_as(&mate, &[]).unwrap();
    let mut guard = TestProg::start_as(&guard, &[]).unwrap();
    for prog in [&trigger, &mate, &guard] {
        cgroup.add(prog.pid()).unwrap();
    }
    daemon.wait_covered(trigger.pid()).unwrap();

    // The process over its limit is signalled alone; the cgroup is not
    // emptied, and the log says why.
    assert_eq!(trigger.ended_by("grow 96").unwrap(), Some(SIGTERM));
    let action = action_for(&daemon, trigger.pid());
    assert_eq!(
        action["result"].as_str().unwrap(),
        format!(
            "sent to the process alone (its cgroup {} holds {} tp-cgr-guard, which is \
             protected: \"tp-cgr-guard\" is in [enforce] protect): signalled {} tp-cgr",
            cgroup.path(),
            guard.pid(),
            trigger.pid()
        )
    );
    examinations(&daemon, 8);
    assert!(
        mate.alive() && guard.alive(),
        "the rest of the cgroup lives"
    );
    let mut left = cgroup.procs().unwrap();
    left.sort_unstable();
    let mut expected = vec![mate.pid(), guard.pid()];
    expected.sort_unstable();
    assert_eq!(left, expected);
}
