//! The configuration as users meet it (check-config, reload) and the
//! control socket (status, root only).

use std::{
    os::unix::{fs::PermissionsExt, process::CommandExt},
    process::Command,
    time::Duration,
};

use procespy_tests::{
    Config, Daemon, Limit, Scratch, TestProg, kill_one, procespy_bin, require_root, status_process,
    workspace,
};

/// Runs `procespy check-config PATH`; returns (exit code, stdout, stderr).
fn check_config(path: &std::path::Path) -> (i32, String, String) {
    let output = Command::new(procespy_bin())
        .arg("check-config")
        .arg(path)
        .output()
        .expect("runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// (config text, expected "LINE:COL", message fragment)
const BAD: &[(&str, &str, &str)] = &[
    (
        "[[limit]]\nname = \"x\"\nmax_memory = \"12 parsecs\"\n",
        "3:14",
        "unit",
    ),
    ("[[limit]]\nname = \"x\"\nmax_memory = 0\n", "3:14", "0"),
    (
        "[[limit]]\nname = \"x\"\nmax_memory = \"150%\"\n",
        "3:14",
        "100%",
    ),
    (
        "[[limit]]\nname = \"x\"\nmax_memory = -5\n",
        "3:14",
        "negative",
    ),
    (
        "[[limit]]\nname = \"x\"\nmax_memory = \"1GiB\"\ncolour = \"red\"\n",
        "4:1",
        "colour",
    ),
    ("[monitor]\nmode = \"turbo\"\n", "2:8", "auto"),
    (
        "[monitor]\nscan_interval = \"5 fortnights\"\n",
        "2:17",
        "duration",
    ),
    ("[monitor]\nscan_interval = 5\n", "2:17", ""),
    ("[enforce]\ngrace = true\n", "2:9", ""),
    ("[enforce]\nprotect = \"sshd\"\n", "2:11", ""),
    (
        "[[limit]]\npattern = \"([unclosed\"\nmax_memory = \"1GiB\"\n",
        "2:11",
        "regex",
    ),
    (
        "[[limit]]\nname = \"x\"\npattern = \"y\"\nmax_memory = \"1GiB\"\n",
        "1:1",
        "name",
    ),
    ("[[limit]]\nmax_memory = \"1GiB\"\n", "1:1", "name"),
    (
        "[[limit]]\nname = \"x\"\nuser = \"no-such-user-here\"\nmax_memory = \"1GiB\"\n",
        "3:8",
        "no-such-user-here",
    ),
    (
        "[[limit]]\nname = \"x\"\nmax_memory = \"1GiB\"\naction = \"nuke\"\n",
        "4:10",
        "kill",
    ),
    (
        "[[limit]]\nname = \"x\"\nmax_memory = \"1GiB\"\nscope = \"galaxy\"\n",
        "4:9",
        "total",
    ),
    ("[notify.email]\nenabled = true\n", "1:1", "server"),
    ("unknown_top = 1\n", "1:1", "unknown_top"),
    ("[monitor\nmode = \"auto\"\n", "1:", ""),
];

#[test]
fn check_config_reports_each_bad_config_with_its_position() {
    let scratch = Scratch::new("badconfig");
    let mut failures = Vec::new();
    for (i, (text, position, fragment)) in BAD.iter().enumerate() {
        let path = scratch.write(&format!("bad{i}.toml"), text);
        let (code, _, stderr) = check_config(&path);
        let expected = format!("{}:{position}", path.display());
        let ok = code == 1
            && stderr
                .lines()
                .any(|l| l.starts_with(&expected) && l.contains(fragment));
        if !ok {
            failures.push(format!(
                "config {i} ({text:?}): exit {code}, wanted {expected}…{fragment}; got:\n{stderr}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn check_config_accepts_the_example_and_refuses_an_insecure_file() {
    let example = workspace().join("config/procespy.toml");
    let scratch = Scratch::new("goodconfig");
    let copy = scratch.write(
        "example.toml",
        &std::fs::read_to_string(&example).expect("the example config"),
    );
    let (code, stdout, stderr) = check_config(&copy);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("ok"), "{stdout}");

    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, _, stderr) = check_config(&copy);
    assert_eq!(code, 1);
    assert!(stderr.contains("writable by group or others"), "{stderr}");
}

#[test]
fn a_missing_config_given_with_c_is_an_error() {
    let output = Command::new(procespy_bin())
        .args([
            "run",
            "-c",
            "/nonexistent/procespy.toml",
            "--socket",
            "/tmp/procespy-never.sock",
        ])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/procespy.toml"));
}

#[test]
fn a_bad_reload_keeps_the_old_rules_in_force() {
    let Some(_machine) = require_root() else {
        return;
    };
    let name = "tp-reload";
    let good = Config::new("ebpf").limit(Limit::name(name, "48MiB").action("kill"));
    let scratch = Scratch::new("reload");
    let daemon = Daemon::with_config(&good).expect("starts");

    let output = daemon.reload("[[limit]]\nname = \"x\"\nmax_memory = \"lots\"\n");
    assert_eq!(
        output.status.code(),
        Some(2),
        "a refused reload is a failure"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("old configuration stays") && stderr.contains(":3:14"),
        "{stderr}"
    );

    // The old limit still holds.
    kill_one(&daemon, &scratch.testprog_named(name)).expect("stopped by the old rule");

    // A good reload takes effect: the limit is gone.
    let output = daemon.reload("[monitor]\nmode = \"ebpf\"\n");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(daemon.status().unwrap()["limits"], 0);
}

#[test]
fn status_shows_mode_watched_processes_and_actions() {
    let Some(_machine) = require_root() else {
        return;
    };
    let scratch = Scratch::new("status");
    let config = Config::new("ebpf")
        .limit(Limit::name("tp-status-live", "1GiB"))
        .limit(Limit::name("tp-status-dies", "32MiB").action("kill-now"));
    let daemon = Daemon::with_config(&config).expect("starts");
    let mut live = TestProg::start_as(&scratch.testprog_named("tp-status-live"), &[]).unwrap();
    let mut dies = TestProg::start_as(&scratch.testprog_named("tp-status-dies"), &[]).unwrap();
    live.grow(16).unwrap();
    daemon.wait_covered(dies.pid()).expect("covered");
    assert_eq!(dies.ended_by("grow 64").unwrap(), Some(9));

    let status = daemon
        .wait_status(Duration::from_secs(5), |s| {
            s["actions"].as_array().is_some_and(|a| !a.is_empty())
        })
        .expect("the action shows");
    assert_eq!(status["mode"], "ebpf");
    let entry = status_process(&status, live.pid()).expect("the live process is watched");
    assert_eq!(entry["limit_bytes"], 1u64 << 30);
    assert_eq!(entry["rule"], "tp-status-live");
    let action = &status["actions"][0];
    assert_eq!(action["pid"], dies.pid());
    assert_eq!(action["action"], "SIGKILL (kernel)");
    assert_eq!(action["rule"], "tp-status-dies");

    // Text form, for people.
    let output = daemon.client("status").output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("mode:") && text.contains("ebpf") && text.contains("tp-status-live"),
        "{text}"
    );
}

#[test]
fn the_control_socket_refuses_a_non_root_client() {
    let Some(_machine) = require_root() else {
        return;
    };
    let daemon = Daemon::with_config("[monitor]\nmode = \"proc\"\n").expect("starts");
    let output = daemon
        .client("status")
        .uid(65534)
        .gid(65534)
        .output()
        .expect("runs as nobody");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("permission denied") && stderr.contains("only root"),
        "{stderr}"
    );
}

#[test]
fn status_without_a_daemon_exits_2() {
    let output = Command::new(procespy_bin())
        .args(["status", "--socket", "/tmp/procespy-no-such.sock"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is it running?"));
}

#[test]
fn the_readme_config_examples_are_valid() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).expect("README.md");
    let section = readme
        .split("\n## Configuration")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a Configuration section");
    let blocks: Vec<&str> = section
        .split("```toml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .collect();
    assert!(blocks.len() >= 2, "the desktop and the server examples");
    let scratch = Scratch::new("readme");
    for (i, block) in blocks.iter().enumerate() {
        let path = scratch.write(&format!("readme{i}.toml"), block);
        let (code, _, stderr) = check_config(&path);
        assert_eq!(code, 0, "README example {i} does not validate:\n{stderr}");
    }
}
