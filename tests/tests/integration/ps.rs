//! `procespy ps`: one read of /proc, largest memory first.

use std::{os::unix::process::CommandExt, process::Command};

use procespy_tests::{Scratch, TestProg, procespy_bin, run, vm_rss};
use serde_json::Value;

const MIB: u64 = 1 << 20;

fn ps_json(args: &[&str]) -> Vec<Value> {
    let output = run(Command::new(procespy_bin())
        .args(["ps", "--json"])
        .args(args));
    let value: Value = serde_json::from_str(&output).expect("ps --json prints JSON");
    value.as_array().expect("a JSON array").clone()
}

#[test]
fn ps_json_is_sorted_and_shows_the_right_rss() {
    let mut prog = TestProg::start(&[]).expect("test program starts");
    prog.grow(64).expect("grow 64 MiB");
    let expected = vm_rss(prog.pid()).expect("VmRSS");

    let procs = ps_json(&[]);
    let rss: Vec<u64> = procs
        .iter()
        .map(|p| p["rss_bytes"].as_u64().expect("rss_bytes"))
        .collect();
    assert!(
        rss.windows(2).all(|w| w[0] >= w[1]),
        "not sorted by RSS, largest first: {rss:?}"
    );

    let me = u64::from(std::process::id());
    assert!(
        procs.iter().any(|p| p["pid"] == me),
        "the test's own process is missing"
    );
    let entry = procs
        .iter()
        .find(|p| p["pid"] == u64::from(prog.pid()))
        .expect("the test program is listed");
    let seen = entry["rss_bytes"].as_u64().unwrap();
    assert!(
        seen.abs_diff(expected) <= MIB,
        "ps says {seen} bytes, VmRSS says {expected}"
    );
    assert_eq!(entry["name"], "procespy-testpr", "comm keeps 15 bytes");
}

#[test]
fn ps_top_n_and_name_filter() {
    let prog = TestProg::start(&[]).expect("test program starts");
    let top = ps_json(&["-n", "3"]);
    assert_eq!(top.len(), 3);
    let named = ps_json(&["--name", "procespy-testprog"]);
    assert!(
        named.iter().any(|p| p["pid"] == u64::from(prog.pid())),
        "--name matches the executable's file name"
    );
    assert!(
        named.iter().all(|p| p["name"] == "procespy-testpr"),
        "only that name: {named:?}"
    );
}

#[test]
fn ps_works_without_root() {
    if !nix::unistd::geteuid().is_root() {
        return; // already unprivileged: the other tests cover it
    }
    let text = run(Command::new(procespy_bin())
        .args(["ps", "-n", "5"])
        .uid(65534)
        .gid(65534));
    assert!(
        text.lines()
            .next()
            .is_some_and(|h| h.contains("PID") && h.contains("RSS")),
        "{text}"
    );
    assert_eq!(text.lines().count(), 6, "a header and five rows: {text}");
}

/// Four test programs share one 64 MiB mapping: `ps --pss` shows each a
/// quarter of it as PSS beside the whole of it as RSS, and only on request.
#[test]
fn ps_pss_shows_a_shared_mapping_divided_among_its_users() {
    let (scratch, exe) = Scratch::with_testprog("tp-ps-pss");
    let file = scratch.path().join("shared");
    let mut procs: Vec<TestProg> = (0..4)
        .map(|_| TestProg::start_as(&exe, &[]).expect("test program starts"))
        .collect();
    for prog in &mut procs {
        prog.command(&format!("share {} 64", file.display()))
            .expect("share 64 MiB");
    }
    let shown = ps_json(&["--pss", "--name", "tp-ps-pss"]);
    assert_eq!(shown.len(), 4, "{shown:?}");
    for entry in &shown {
        let (rss, pss) = (
            entry["rss_bytes"].as_u64().unwrap(),
            entry["pss_bytes"].as_u64().unwrap(),
        );
        assert!(rss >= 64 * MIB, "RSS {rss}");
        assert!(
            (16 * MIB..24 * MIB).contains(&pss),
            "PSS {} MiB of a 64 MiB mapping shared by 4",
            pss / MIB
        );
    }
    let text = run(Command::new(procespy_bin()).args(["ps", "--pss", "--name", "tp-ps-pss"]));
    let header = text.lines().next().unwrap();
    let columns: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(
        &columns[..5],
        ["PID", "USER", "NAME", "RSS", "PSS"],
        "{text}"
    );
    let plain = ps_json(&["--name", "tp-ps-pss"]);
    assert!(
        plain.iter().all(|p| p.get("pss_bytes").is_none()),
        "{plain:?}"
    );
}
