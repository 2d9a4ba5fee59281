//! The history: what a kill leaves behind, read back with `procespy
//! history` as an operator would, and still there after a restart.

use std::{path::Path, process::Command, time::Duration};

use procespy_tests::{Config, Daemon, Limit, Scratch, TestProg, poll, procespy_bin, require_root};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const SIGTERM: i32 = 15;

/// `procespy history --pid PID --json` with `config`'s `[history]`.
fn history_of(config: &Path, pid: u32) -> Option<Value> {
    let output = Command::new(procespy_bin())
        .args([
            "history",
            "--since",
            "10m",
            "--json",
            "--pid",
            &pid.to_string(),
            "-c",
        ])
        .arg(config)
        .output()
        .expect("procespy history runs");
    if !output.status.success() {
        return None;
    }
    Some(serde_json::from_slice(&output.stdout).expect("history --json prints JSON"))
}

/// The series of the one process in `json`, and the time of its first action.
fn series(json: &Value) -> (Vec<(f64, u64)>, f64) {
    let process = &json["processes"][0];
    let samples = process["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|s| (s["t"].as_f64().unwrap(), s["rss"].as_u64().unwrap()))
        .collect();
    let kill = process["actions"][0]["t"].as_f64().expect("an action");
    (samples, kill)
}

#[test]
fn a_kill_leaves_a_point_a_second_up_to_the_limit_and_a_restart_keeps_it() {
    let Some(_machine) = require_root() else {
        return;
    };
    let name = "tp-history";
    let kept = Scratch::new("history");
    let db = kept.path().join("history.sqlite");
    let config = Config::new("ebpf")
        .limit(Limit::name(name, "64MiB").action("kill"))
        .table(&format!("[history]\npath = \"{}\"\n", db.display()));
    let config_file = kept.write("procespy.toml", &config.to_string());
    let (_scratch, exe) = Scratch::with_testprog(name);
    let daemon = Daemon::with_config(&config).expect("daemon starts");
    let mut prog = TestProg::start_as(&exe, &[]).expect("test program starts");
    daemon.wait_covered(prog.pid()).expect("covered");
    // About five seconds of growth to the limit.
    assert_eq!(prog.ended_by("rate 12 96").expect("dies"), Some(SIGTERM));
    let pid = prog.pid();
    let json = poll(Duration::from_secs(10), Duration::from_millis(200), || {
        history_of(&config_file, pid).filter(|json| json["processes"][0]["actions"][0].is_object())
    })
    .unwrap_or_else(|| {
        panic!(
            "the kill reached the history; the log:\n{}",
            daemon.log_text()
        )
    });
    let process = &json["processes"][0];
    assert_eq!(process["name"], name);
    assert_eq!(process["limit_bytes"], 64 * MIB);
    assert_eq!(process["actions"][0]["action"], "SIGTERM");
    let (samples, kill) = series(&json);
    // Every second of the growth has a sample, up to the kill's second.
    let growing = samples
        .iter()
        .position(|&(_, rss)| rss > 8 * MIB)
        .expect("the growth was recorded");
    let seconds: Vec<i64> = samples[growing..]
        .iter()
        .map(|&(t, _)| t.floor() as i64)
        .collect();
    let (first, last) = (seconds[0], kill.floor() as i64);
    assert!(
        last - first >= 3,
        "about five seconds of growth: {samples:?}"
    );
    for second in first..=last {
        assert!(
            seconds.contains(&second),
            "no sample in second {second}: {json:#}"
        );
    }
    let &(end_t, end_rss) = samples.last().unwrap();
    assert_eq!(
        end_t.floor() as i64,
        last,
        "the series ends at the kill: {samples:?}"
    );
    assert!(
        end_rss.abs_diff(64 * MIB) <= MIB,
        "the series ends within 1 MiB of the limit: {end_rss}"
    );
    daemon.stop().expect("the daemon stops");
    let again = Daemon::with_config(&config).expect("the daemon starts again");
    let after = history_of(&config_file, pid).expect("the history is read after the restart");
    assert_eq!(
        series(&after),
        (samples, kill),
        "the same series after the restart"
    );
    drop(again);
}
