//! `procespy top` in a real terminal (tmux), used as a person would: keys
//! typed, the screen read. With the daemon (its limits, history and
//! actions) and without it, as an unprivileged user, from `/proc` alone.

use procespy_tests::{
    Config, Daemon, Limit, Scratch, TestProg, Tmux, keep_for_readme, kill_one, procespy_bin,
    require_root,
};

const MIB: f64 = (1u64 << 20) as f64;
/// The characters a trend is drawn with.
const BARS: &str = "▁▂▃▄▅▆▇█";

#[test]
fn top_shows_a_covered_process_grow_sorts_by_cpu_and_quits_with_q() {
    let Some(_machine) = require_root() else {
        return;
    };
    if !Tmux::present() {
        return;
    }
    let scratch = Scratch::new("top");
    let config = Config::new("ebpf")
        .no_popups()
        .limit(Limit::name("tp-top-grow", "256MiB").action("kill"))
        .limit(Limit::kill_past_64mib("tp-top-leak"));
    let daemon = Daemon::with_config(&config).expect("daemon starts");
    // An action for the panel.
    let leaked = kill_one(&daemon, &scratch.testprog_named("tp-top-leak")).expect("stopped");
    let mut grower = TestProg::start_as(&scratch.testprog_named("tp-top-grow"), &[]).unwrap();
    grower.grow(32).unwrap();
    daemon.wait_covered(grower.pid()).expect("covered");
    let mut spinner = TestProg::start_as(&scratch.testprog_named("tp-top-spin"), &[]).unwrap();
    spinner.send("spin 600").unwrap();

    let tmux = Tmux::start(&["sh"]).unwrap();
    tmux.type_line(&top_command(&format!(
        "--socket {}",
        daemon.socket().display()
    )))
    .unwrap();
    tmux.wait_for("the daemon's figures", |s| s.contains("daemon: pid"))
        .unwrap();
    tmux.keys(&["/"]).unwrap();
    tmux.type_line("tp-top").unwrap();
    // Its trend, three steps long before it grows.
    let before = tmux
        .wait_for("the test programs, a trend and the kill", |s| {
            row(s, grower.pid()).is_some_and(|row| newest_run(&row) >= 3)
                && row(s, spinner.pid()).is_some()
                && s.contains(&format!(
                    "SIGTERM tp-top-leak (pid {leaked}, user root): sent"
                ))
        })
        .unwrap();
    let first = rss(&row(&before, grower.pid()).unwrap());

    // Twice, three steps apart: a staircase on the trend.
    let mut last = first;
    for step in 1..=2 {
        grower.grow(64).unwrap();
        let risen = tmux
            .wait_for("the grower's RSS rise, and its trend with it", |s| {
                row(s, grower.pid()).is_some_and(|row| {
                    rss(&row) >= last + 60.0 * MIB
                        && trend_levels(&row) > step
                        && newest_run(&row) >= 3
                })
            })
            .unwrap();
        let row = row(&risen, grower.pid()).unwrap();
        assert!(row.join(" ").contains("256 MiB"), "its limit: {row:?}");
        last = rss(&row);
    }

    tmux.keys(&["c"]).unwrap();
    tmux.wait_for("the spinner first by CPU", |s| {
        first_pid(s) == Some(spinner.pid())
    })
    .unwrap();
    tmux.keys(&["m"]).unwrap();
    let screen = tmux
        .wait_for("the grower first by memory", |s| {
            s.contains("Processes by memory") && first_pid(s) == Some(grower.pid())
        })
        .unwrap();
    save(&screen);

    tmux.keys(&["q"]).unwrap();
    gave_back(&tmux);
}

#[test]
fn top_without_a_daemon_reads_proc_alone_unprivileged_and_quits_on_ctrl_c() {
    let Some(_machine) = require_root() else {
        return;
    };
    if !Tmux::present() {
        return;
    }
    let (scratch, exe) = Scratch::with_testprog("tp-top-alone");
    let mut idle = TestProg::start_as(&exe, &[]).unwrap();
    idle.grow(16).unwrap();
    let mut spinner = TestProg::start_as(&exe, &[]).unwrap();
    spinner.send("spin 600").unwrap();

    let tmux = Tmux::start(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "sh",
    ])
    .unwrap();
    let absent = scratch.path().join("absent.sock");
    tmux.type_line(&top_command(&format!(
        "--interval 500ms --socket {}",
        absent.display()
    )))
    .unwrap();
    tmux.wait_for("/proc alone", |s| s.contains("no daemon: /proc only"))
        .unwrap();
    tmux.keys(&["/"]).unwrap();
    tmux.type_line("tp-top-alone").unwrap();
    tmux.wait_for("the larger first by memory", |s| {
        first_pid(s) == Some(idle.pid()) && row(s, spinner.pid()).is_some()
    })
    .unwrap();
    tmux.keys(&["c"]).unwrap();
    tmux.wait_for("the spinner first by CPU", |s| {
        first_pid(s) == Some(spinner.pid())
    })
    .unwrap();

    tmux.keys(&["C-c"]).unwrap();
    gave_back(&tmux);
}

/// The shell line that runs `procespy top ARGS` and then prints its exit
/// code.
fn top_command(args: &str) -> String {
    format!("{} top {args}; echo EXIT=$?", procespy_bin().display())
}

/// Checks that top has ended with 0 and given the terminal back: the
/// alternate screen left, and lines typed reaching the shell whole (out of
/// raw mode, where Enter would not end a line).
fn gave_back(tmux: &Tmux) {
    tmux.wait_for("EXIT=0, back in the shell", |s| s.contains("EXIT=0"))
        .unwrap();
    assert!(
        !tmux.alternate_screen().unwrap(),
        "still on the alternate screen"
    );
    tmux.type_line("echo cooked-$((6 * 7))").unwrap();
    tmux.wait_for("the shell's answer", |s| s.contains("cooked-42"))
        .unwrap();
}

/// The words of the process list's row of `pid` on `screen`.
fn row(screen: &str, pid: u32) -> Option<Vec<&str>> {
    let pid = pid.to_string();
    screen
        .lines()
        .map(words)
        .find(|words| words.first() == Some(&pid.as_str()))
}

/// The PID of the process list's first row.
fn first_pid(screen: &str) -> Option<u32> {
    let mut lines = screen.lines().map(words);
    lines.find(|words| words.first() == Some(&"PID"))?;
    lines.next()?.first()?.parse().ok()
}

/// A line's words, without the borders.
fn words(line: &str) -> Vec<&str> {
    line.trim_matches('│').split_whitespace().collect()
}

/// The RSS of a row, in bytes: the first size in it.
fn rss(row: &[&str]) -> f64 {
    let unit = row
        .iter()
        .position(|word| ["B", "KiB", "MiB", "GiB"].contains(word))
        .unwrap_or_else(|| panic!("no size in {row:?}"));
    let scale = match row[unit] {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => MIB,
        _ => MIB * 1024.0,
    };
    row[unit - 1]
        .parse::<f64>()
        .expect("a number before the unit")
        * scale
}

/// The row's trend: its last word when that is drawn in bars.
fn trend<'a>(row: &[&'a str]) -> &'a str {
    row.last()
        .copied()
        .filter(|word| word.chars().all(|c| BARS.contains(c)))
        .unwrap_or_default()
}

/// How many bar heights the row's trend shows.
fn trend_levels(row: &[&str]) -> usize {
    let mut levels: Vec<char> = trend(row).chars().collect();
    levels.sort_unstable();
    levels.dedup();
    levels.len()
}

/// How many steps the row's trend has shown its newest height.
fn newest_run(row: &[&str]) -> usize {
    let mut bars = trend(row).chars().rev();
    let newest = bars.next();
    newest.map_or(0, |newest| 1 + bars.take_while(|&c| c == newest).count())
}

/// Keeps the screen as `target/procespy-top.txt`, for the README.
fn save(screen: &str) {
    keep_for_readme("procespy-top.txt", screen.as_bytes());
}
