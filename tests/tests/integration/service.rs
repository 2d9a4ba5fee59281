//! procespy as a Linux service: the systemd unit, the Debian package, and
//! the Prometheus endpoint.
//!
//! - `systemd-analyze verify` accepts the unit, without a single warning;
//! - the daemon enforces a limit with nothing but the unit's capability
//!   bounding set (and no new privileges);
//! - `cargo xtask dist` builds the .deb, which installs with `dpkg -i`,
//!   validates its own /etc/procespy.toml, and purges without a trace;
//! - under systemd (stderr is `$JOURNAL_STREAM`), log entries reach the
//!   journal socket with their priority and the action's fields;
//! - /metrics, scraped after a kill and parsed by the Prometheus client
//!   library's own OpenMetrics parser, counts that kill; with the kernel's
//!   BPF statistics on, it shows each program's run time growing.

use std::{
    collections::HashMap,
    io::Write,
    net::SocketAddr,
    os::unix::{
        fs::{MetadataExt, PermissionsExt},
        net::UnixDatagram,
        process::ExitStatusExt,
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use procespy_tests::{
    Config, Daemon, DaemonOptions, Limit, LogTo, Scratch, TestProg, in_ci, kill_one,
    peers::{free_port, http_get},
    procespy_bin, require, require_root, require_root_alone, run, runs, workspace,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// The unit as shipped.
fn unit_text() -> String {
    std::fs::read_to_string(workspace().join("packaging/procespy.service"))
        .expect("the unit exists")
}

/// Whether `program` runs (`program args` exits 0); under CI a missing one
/// fails the test.
fn have(program: &str, args: &[&str]) -> bool {
    require(&format!("`{program}`"), runs(program, args))
}

/// Runs `systemd-analyze verify` on `unit`; fails on any complaint, which it
/// prints without failing itself (an unknown value is only "ignored").
fn verify(unit: &Path, man: bool) {
    let mut command = Command::new("systemd-analyze");
    command.arg("verify");
    if !man {
        command.arg("--man=no");
    }
    let output = command.arg(unit).output().expect("systemd-analyze runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "systemd-analyze verify {} failed:\n{text}",
        unit.display()
    );
    let complaints: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("procespy"))
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify {} complained:\n{text}",
        unit.display()
    );
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    if !have("systemd-analyze", &["--version"]) {
        return;
    }
    // verify checks that ExecStart= exists: point it at the binary under test.
    let scratch = Scratch::new("unit");
    let unit = unit_text().replace(
        "ExecStart=/usr/bin/procespy",
        &format!("ExecStart={}", procespy_bin().display()),
    );
    assert!(unit.contains(&procespy_bin().display().to_string()));
    let path = scratch.write("procespy.service", &unit);
    verify(&path, false);
    // The settings the service relies on.
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "StateDirectory=procespy",
        "ReadWritePaths=/run",
        "ProtectHome=read-only",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line}");
    }
}

/// The unit's `CapabilityBoundingSet=`, as setpriv's `-all,+bpf,+kill,…`.
fn unit_bounding_set() -> String {
    let unit = unit_text();
    let caps: Vec<String> = unit
        .lines()
        .find_map(|line| line.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit has a CapabilityBoundingSet")
        .split_whitespace()
        .map(|cap| format!("+{}", cap.trim_start_matches("CAP_").to_ascii_lowercase()))
        .collect();
    assert!(caps.len() >= 5, "{caps:?}");
    format!("-all,{}", caps.join(","))
}

/// procespy started through `wrapper` (as systemd would start it: see
/// the tests), in `mode`, with popups off and a 64 MiB `kill` limit on the
/// test program, copied as `name` to the path returned.
fn wrapped(wrapper: &[&str], mode: &str, name: &str, log: LogTo) -> (Daemon, PathBuf, Scratch) {
    let (scratch, exe) = Scratch::with_testprog(name);
    let config = Config::new(mode)
        .no_popups()
        .limit(Limit::kill_past_64mib(name));
    let daemon = Daemon::start(DaemonOptions {
        config: &config.to_string(),
        wrapper,
        log,
        ..Default::default()
    })
    .unwrap_or_else(|err| panic!("{} starts procespy: {err:#}", wrapper[0]));
    (daemon, exe, scratch)
}

#[test]
fn the_units_capabilities_are_enough_to_enforce() {
    let Some(_machine) = require_root().filter(|_| have("setpriv", &["--version"])) else {
        return;
    };
    // As systemd starts it: root, the unit's bounding set, no new privileges.
    let bounding_set = unit_bounding_set();
    let setpriv = [
        "setpriv",
        "--no-new-privs",
        "--inh-caps",
        "-all",
        "--bounding-set",
        &bounding_set,
    ];
    let (daemon, exe, _scratch) = wrapped(&setpriv, "ebpf", "tp-svc-caps", LogTo::Pipe);
    let up = daemon.status().expect("status");
    assert_eq!(
        up["mode"], "ebpf",
        "eBPF must load with the unit's capabilities: {up}"
    );
    kill_one(&daemon, &exe).expect("stopped with the unit's capabilities");
    let exit = daemon.stop().expect("stops");
    assert!(exit.success(), "exit {exit:?}");
}

/// One journal entry in the native protocol: `KEY=value` lines, or `KEY`, a
/// newline, a little-endian u64 length, the value and a newline.
fn journal_entry(mut data: &[u8]) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    while !data.is_empty() {
        let Some(end) = data.iter().position(|&b| b == b'\n') else {
            break;
        };
        let line = &data[..end];
        data = &data[end + 1..];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            fields.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
        } else if data.len() >= 8 {
            let len = u64::from_le_bytes(data[..8].try_into().expect("8 bytes")) as usize;
            let value = &data[8..(8 + len).min(data.len())];
            fields.insert(
                String::from_utf8_lossy(line).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            );
            data = data.get(8 + len + 1..).unwrap_or_default();
        } else {
            break;
        }
    }
    fields
}

/// A directory this test made where none was, removed on drop.
struct MadeDir(Option<&'static Path>);

impl MadeDir {
    fn ensure(path: &'static Path) -> MadeDir {
        if path.exists() {
            return MadeDir(None);
        }
        std::fs::create_dir_all(path).expect("mkdir");
        MadeDir(Some(path))
    }
}

impl Drop for MadeDir {
    fn drop(&mut self) {
        if let Some(path) = self.0 {
            let _ = std::fs::remove_dir(path);
        }
    }
}

/// The journal entries that reach `journal` within 10 s, up to the action
/// entry for `pid`.
fn journal_entries_until_action(journal: &UnixDatagram, pid: &str) -> Vec<HashMap<String, String>> {
    let mut entries = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buffer = vec![0u8; 1 << 16];
    while Instant::now() < deadline {
        let Ok(n) = journal.recv(&mut buffer) else {
            continue;
        };
        let entry = journal_entry(&buffer[..n]);
        let done = entry.get("EVENT").is_some_and(|e| e == "action")
            && entry.get("PID").is_some_and(|p| p == pid);
        entries.push(entry);
        if done {
            break;
        }
    }
    entries
}

#[test]
fn under_systemd_actions_reach_the_journal_with_priority_and_fields() {
    let Some(_machine) = require_root().filter(|_| have("unshare", &["--version"])) else {
        return;
    };
    let name = "tp-svc-journal";
    // journald's socket, seen by the daemon through a bind mount in a mount
    // namespace of its own.
    let scratch = Scratch::new("journal");
    let journal_dir = scratch.path().join("journal");
    std::fs::create_dir(&journal_dir).expect("mkdir");
    let journal = UnixDatagram::bind(journal_dir.join("socket")).expect("bind the journal socket");
    journal
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let _made = MadeDir::ensure(Path::new("/run/systemd/journal"));
    let unshare = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        r#"mount --bind "$1" /run/systemd/journal && shift && exec "$@""#,
        "sh",
        journal_dir.to_str().expect("a UTF-8 path"),
    ];
    // stderr is the stream systemd would have connected to the journal.
    let stderr_path = scratch.path().join("stderr");
    let (daemon, exe, _scratch) =
        wrapped(&unshare, "auto", name, LogTo::Journal(stderr_path.clone()));
    let pid = kill_one(&daemon, &exe).expect("killed").to_string();
    let entries = journal_entries_until_action(&journal, &pid);
    let action = entries
        .iter()
        .find(|e| e.get("EVENT").is_some_and(|v| v == "action"))
        .unwrap_or_else(|| panic!("no action entry in the journal: {entries:#?}"));
    for (key, value) in [
        ("PRIORITY", "4"),
        ("SYSLOG_IDENTIFIER", "procespy"),
        ("PID", pid.as_str()),
        ("NAME", name),
        ("USER", "root"),
        ("RULE", name),
        ("ACTION", "SIGTERM"),
        ("RESULT", "sent"),
        ("LIMIT", &(64 * MIB).to_string()),
    ] {
        assert_eq!(
            action.get(key).map(String::as_str),
            Some(value),
            "{key} in {action:#?}"
        );
    }
    assert!(action["MESSAGE"].contains(name), "{action:#?}");
    assert!(action["RSS"].parse::<u64>().expect("RSS") > 64 * MIB);
    assert!(
        entries
            .iter()
            .any(|e| e.get("PRIORITY").is_some_and(|p| p == "5")
                && e.get("MESSAGE")
                    .is_some_and(|m| m.contains("control socket"))),
        "info lines are priority 5: {entries:#?}"
    );
    assert!(daemon.stop().expect("stops").success());
    let text = std::fs::read_to_string(&stderr_path).expect("read");
    assert!(
        !text.contains("control socket"),
        "log lines went to the journal, not stderr:\n{text}"
    );

    // A fatal error printed straight to stderr carries "<3>" there.
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let meta = stderr.metadata().expect("stat");
    let status = Command::new(procespy_bin())
        .args(["run", "-c", "/nonexistent/procespy.toml"])
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stderr(stderr)
        .status()
        .expect("runs");
    assert_eq!(status.code(), Some(1));
    let text = std::fs::read_to_string(&stderr_path).expect("read");
    assert!(
        text.lines()
            .any(|l| l.starts_with("<3>procespy: ") && l.contains("/nonexistent/procespy.toml")),
        "{text}"
    );
}

/// Whether dpkg knows `package` as installed.
fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "install ok installed")
}

/// Purges the package on drop, so a failing test leaves the machine clean.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if installed("procespy") {
            let _ = Command::new("dpkg").args(["--purge", "procespy"]).status();
        }
    }
}

/// What the package installs, besides directories.
const PACKAGED: &[&str] = &[
    "/usr/bin/procespy",
    "/usr/lib/systemd/system/procespy.service",
    "/etc/procespy.toml",
    "/usr/share/man/man1/procespy.1.gz",
    "/usr/share/man/man1/procespy-run.1.gz",
    "/usr/share/man/man1/procespy-check-config.1.gz",
    "/usr/share/man/man5/procespy.toml.5.gz",
    "/usr/share/bash-completion/completions/procespy",
    "/usr/share/zsh/vendor-completions/_procespy",
    "/usr/share/fish/vendor_completions.d/procespy.fish",
    "/usr/share/doc/procespy/copyright",
];

/// `cargo xtask dist`: the release build and the .deb, whose path it returns.
fn dist() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let dist = run(Command::new(cargo)
        .args(["xtask", "dist"])
        .current_dir(workspace())
        .stderr(Stdio::inherit()));
    let deb = PathBuf::from(dist.lines().last().expect("dist prints the .deb").trim());
    assert!(
        deb.extension().is_some_and(|e| e == "deb") && deb.is_file(),
        "{}",
        deb.display()
    );
    deb
}

/// Its release build takes minutes of both CPUs, which the other tests,
/// going on meanwhile, would miss (kills timed against deadlines, PSS reads
/// racing a process's growth): it has the machine alone.
#[test]
fn the_deb_installs_checks_its_config_and_purges_cleanly() {
    let Some(_machine) = require_root_alone()
        .filter(|_| have("dpkg", &["--version"]) && have("cargo", &["deb", "--version"]))
    else {
        return;
    };
    if installed("procespy") {
        if !in_ci() {
            // Never replace someone's installation.
            eprintln!("SKIPPED: a procespy package is installed; purge it first");
            return;
        }
        // On CI's machine only this test installs it: a run that was killed
        // before its purge left it behind.
        run(Command::new("dpkg").args(["--purge", "procespy"]));
    }
    let deb = dist();
    let contents = run(Command::new("dpkg-deb").arg("-c").arg(&deb));

    let guard = Installed;
    run(Command::new("dpkg").arg("-i").arg(&deb));
    assert!(installed("procespy"));
    for path in PACKAGED {
        assert!(
            Path::new(path).is_file(),
            "{path} is not installed\n{contents}"
        );
    }
    let conffiles = run(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "procespy"]));
    assert!(conffiles.contains("/etc/procespy.toml"), "{conffiles}");
    let config = std::fs::metadata("/etc/procespy.toml").expect("installed");
    assert_eq!(config.permissions().mode() & 0o777, 0o644);
    let checked =
        run(Command::new("/usr/bin/procespy").args(["check-config", "/etc/procespy.toml"]));
    assert!(checked.contains("ok (0 limits)"), "{checked}");
    let version = run(Command::new("/usr/bin/procespy").arg("--version"));
    assert!(version.starts_with("procespy "), "{version}");
    // The installed unit, with its Documentation= pages now installed too.
    if Path::new("/usr/bin/man").exists() {
        verify(Path::new("/usr/lib/systemd/system/procespy.service"), true);
    }

    run(Command::new("dpkg").args(["--purge", "procespy"]));
    drop(guard);
    assert!(!installed("procespy"));
    for path in PACKAGED
        .iter()
        .copied()
        .chain(["/var/lib/procespy", "/usr/share/doc/procespy"])
    {
        assert!(
            !Path::new(path).exists(),
            "{path} is still there after purge"
        );
    }
}

/// Parses OpenMetrics text with prometheus_client's own parser (Debian's
/// python3-prometheus-client); returns every sample as
/// `{"name", "labels", "value"}`.
fn parse_exposition(text: &str) -> Vec<Value> {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        samples.append({"family": family.name, "type": family.type,
                        "name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(samples))
"#;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())
        .expect("write the exposition");
    let output = child.wait_with_output().expect("python3 ends");
    assert!(
        output.status.success(),
        "prometheus_client refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice::<Value>(&output.stdout)
        .expect("JSON")
        .as_array()
        .expect("a list")
        .clone()
}

/// The value of the sample `name` whose labels include `labels`.
fn sample(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .and_then(|s| s["value"].as_f64())
}

#[test]
fn metrics_count_a_kill() {
    let Some(_machine) = require_root().filter(|_| {
        have(
            "/usr/bin/python3",
            &["-c", "import prometheus_client.openmetrics.parser"],
        )
    }) else {
        return;
    };
    let name = "tp-svc-metrics";
    let port = free_port();
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let config = Config::new("ebpf")
        .no_popups()
        .table(&format!("[metrics]\nlisten = \"{address}\"\n"))
        .limit(Limit::kill_past_64mib(name))
        .to_string();
    let (_scratch, exe) = Scratch::with_testprog(name);
    let daemon = Daemon::with_config(&config).expect("daemon starts");

    // Before: the limit is listed, nothing was done.
    let (status, headers, body) = http_get(address, "/metrics").expect("the endpoint answers");
    assert_eq!(status, "HTTP/1.1 200 OK", "{headers}");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{headers}"
    );
    let before = parse_exposition(&body);
    assert_eq!(
        sample(&before, "procespy_mode", &[("mode", "ebpf")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&before, "procespy_limit_bytes", &[("rule", name)]),
        Some((64 * MIB) as f64)
    );
    assert_eq!(
        sample(&before, "procespy_actions_total", &[("rule", name)]),
        None,
        "no action yet"
    );

    let mut prog = TestProg::start_as(&exe, &[]).expect("test program starts");
    daemon.wait_covered(prog.pid()).expect("covered");
    let body = http_get(address, "/metrics").expect("scrape").2;
    let covered = parse_exposition(&body);
    assert_eq!(
        sample(&covered, "procespy_watched_processes", &[("rule", name)]),
        Some(1.0),
        "{body}"
    );

    assert_eq!(prog.ended_by("grow 96").expect("dies"), Some(libc::SIGTERM));
    daemon
        .wait_event("action", prog.pid(), Duration::from_secs(5))
        .expect("the action is logged");

    let body = http_get(address, "/metrics").expect("scrape").2;
    let after = parse_exposition(&body);
    let kills = sample(
        &after,
        "procespy_actions_total",
        &[("rule", name), ("action", "SIGTERM"), ("result", "sent")],
    );
    assert_eq!(kills, Some(1.0), "the kill is counted:\n{body}");
    let family = after
        .iter()
        .find(|s| s["name"] == "procespy_actions_total")
        .expect("the sample");
    assert_eq!(family["type"], "counter");
    assert!(
        sample(&after, "procespy_examinations_total", &[]).is_some_and(|n| n >= 1.0),
        "{body}"
    );

    let (status, _, _) = http_get(address, "/").expect("the endpoint answers");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let exit = daemon.stop().expect("stops");
    assert_eq!(exit.signal(), None);
    assert!(exit.success());
}

/// Turns the kernel's BPF statistics on while it lives, and back to what
/// they were on drop.
struct BpfStats(String);

impl BpfStats {
    const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";

    fn on() -> BpfStats {
        let before = std::fs::read_to_string(Self::PATH).expect("bpf_stats_enabled");
        std::fs::write(Self::PATH, "1").expect("turn the BPF statistics on");
        BpfStats(before.trim().to_owned())
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, &self.0);
    }
}

#[test]
fn metrics_show_each_programs_run_time_while_bpf_statistics_are_on() {
    let Some(_machine) = require_root().filter(|_| {
        have(
            "/usr/bin/python3",
            &["-c", "import prometheus_client.openmetrics.parser"],
        )
    }) else {
        return;
    };
    let name = "tp-svc-bpfstats";
    let address: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let config = Config::new("ebpf")
        .no_popups()
        .table(&format!("[metrics]\nlisten = \"{address}\"\n"))
        .limit(Limit::name(name, "4GiB").action("alert"))
        .to_string();
    let (_scratch, exe) = Scratch::with_testprog(name);
    let daemon = Daemon::with_config(&config).expect("daemon starts");
    let _stats = BpfStats::on();
    let run_time = || {
        let body = http_get(address, "/metrics").expect("scrape").2;
        let samples = parse_exposition(&body);
        let time = sample(
            &samples,
            "procespy_bpf_program_run_time_nanoseconds_total",
            &[("program", "procespy_rss")],
        );
        let runs = sample(
            &samples,
            "procespy_bpf_program_runs_total",
            &[("program", "procespy_rss")],
        );
        (
            time.unwrap_or_else(|| panic!("no run time in\n{body}")),
            runs.unwrap_or(0.0),
        )
    };
    let (time_before, runs_before) = run_time();
    let mut prog = TestProg::start_as(&exe, &[]).expect("test program starts");
    daemon.wait_covered(prog.pid()).expect("covered");
    prog.grow(64).expect("a burst of page faults");
    let (time_after, runs_after) = run_time();
    assert!(
        runs_after >= runs_before + 16_000.0,
        "64 MiB is 16,384 faults: runs {runs_before} → {runs_after}"
    );
    assert!(
        time_after > time_before,
        "run time {time_before} → {time_after}"
    );
}
