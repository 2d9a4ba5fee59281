//! Choosing between eBPF and /proc polling.

use std::time::Duration;

use procespy_tests::{Daemon, DaemonOptions, require_root};

/// A daemon with `config`, run as nobody.
fn as_nobody(config: &str) -> DaemonOptions<'_> {
    DaemonOptions {
        config,
        user: Some((65534, 65534)),
        ..Default::default()
    }
}

#[test]
fn ebpf_mode_without_privileges_exits_2_with_a_reason() {
    let Some(_machine) = require_root() else {
        return;
    };
    let daemon = Daemon::spawn(as_nobody("[monitor]\nmode = \"ebpf\"\n")).expect("procespy starts");
    let (status, log) = daemon
        .wait(Duration::from_secs(20))
        .expect("procespy exits");
    assert_eq!(status.code(), Some(2), "exit code; log:\n{log}");
    assert!(
        log.contains("mode = \\\"ebpf\\\"") || log.contains("mode = \"ebpf\""),
        "names the mode: {log}"
    );
    assert!(log.contains("cannot be loaded"), "says why: {log}");
}

#[test]
fn auto_mode_without_privileges_polls_proc_and_says_so() {
    let Some(_machine) = require_root() else {
        return;
    };
    let daemon = Daemon::start(as_nobody(
        "[monitor]\nmode = \"auto\"\nscan_interval = \"1s\"\n",
    ))
    .expect("procespy starts as nobody");
    let status = daemon.status().expect("status");
    assert_eq!(status["mode"], "proc");
    assert!(
        status["mode_reason"]
            .as_str()
            .is_some_and(|r| r.contains("eBPF cannot be loaded")),
        "status says why: {status}"
    );
    let warnings: Vec<_> = daemon
        .log()
        .into_iter()
        .filter(|line| line["level"] == "WARN")
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "exactly one warning saying why: {warnings:?}"
    );
    assert!(
        warnings[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("polling /proc"))
    );
    let stopped = daemon.stop().expect("stops");
    assert!(stopped.success());
}

#[test]
fn ebpf_mode_as_root_runs_on_ebpf() {
    let Some(_machine) = require_root() else {
        return;
    };
    let daemon = Daemon::with_config("[monitor]\nmode = \"auto\"\n").expect("procespy starts");
    let status = daemon.status().expect("status");
    assert_eq!(status["mode"], "ebpf", "{status}");
    daemon.stop().expect("stops");
}
