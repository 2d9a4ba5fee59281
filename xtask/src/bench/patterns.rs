//! `cargo xtask bench patterns`: what one exec costs the daemon when its
//! config has 10,000 limits (issue 11: "with 10,000 pattern limits, an exec
//! costs the daemon under 100 µs"), against one limit.
//!
//! Each run starts a fresh daemon, waits for its start-up work to end, and
//! spawns `/bin/true` at a steady rate; the daemon's CPU clock over the
//! storm (and a drain after it), over the execs spawned, is its cost per
//! exec. Configurations alternate run by run.

use std::{
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{
    daemon::{self, Limit, Procespy},
    procs, report,
    spawner::spawn_true,
    stats::{Spread, Table, quotient},
};
use crate::build;

/// Limits in the large configurations.
const LIMITS: usize = 10_000;
const THREADS: usize = 12;
/// Execs asked for per second, in all.
const RATE: f64 = 2000.0;
/// How long the daemon gets after a storm to drain its ring buffer.
const DRAIN: Duration = Duration::from_secs(1);
/// The goal of issue 11, per exec with 10,000 pattern limits.
const GOAL_US: f64 = 100.0;

/// The configurations compared, in table order.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Limits {
    /// One pattern limit: the baseline.
    OnePattern,
    /// 10,000 pattern limits, none of which matches `/bin/true`.
    Patterns,
    /// 10,000 name limits, none of which matches `true`.
    Names,
}

impl Limits {
    const ALL: [Limits; 3] = [Limits::OnePattern, Limits::Patterns, Limits::Names];

    fn label(self) -> &'static str {
        match self {
            Limits::OnePattern => "1 pattern limit (baseline)",
            Limits::Patterns => "10,000 pattern limits",
            Limits::Names => "10,000 name limits",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Limits::OnePattern => "1 pattern",
            Limits::Patterns => "10,000 patterns",
            Limits::Names => "10,000 names",
        }
    }

    /// The daemon's config: eBPF mode, the limits, none covering the storm.
    fn config(self) -> String {
        let count = match self {
            Limits::OnePattern => 1,
            Limits::Patterns | Limits::Names => LIMITS,
        };
        match self {
            Limits::OnePattern | Limits::Patterns => {
                (0..count).fold(daemon::config("ebpf", "5s", &[]), |mut text, i| {
                    text.push_str(&daemon::pattern_limit(&pattern(i), "1GiB", "alert"));
                    text
                })
            }
            Limits::Names => {
                let names: Vec<String> = (0..count).map(|i| format!("bench-name-{i:05}")).collect();
                let limits: Vec<Limit> = names
                    .iter()
                    .map(|name| Limit {
                        name,
                        max_memory: "1GiB",
                        action: "alert",
                        memory: "rss",
                    })
                    .collect();
                daemon::config("ebpf", "5s", &limits)
            }
        }
    }
}

/// The `i`th pattern: anchored, distinct, matching no command line.
fn pattern(i: usize) -> String {
    format!("^/nonexistent/bench-pattern-{i:05} --never$")
}

/// One storm against one daemon.
struct Storm {
    execs: usize,
    seconds: f64,
    /// The daemon's CPU seconds from the storm's start to [`DRAIN`] after its end.
    cpu: f64,
    lost: Option<u64>,
    /// How long the daemon took to answer after it was started.
    start_s: f64,
}

impl Storm {
    fn rate(&self) -> f64 {
        self.execs as f64 / self.seconds
    }

    /// The daemon's CPU per exec, µs.
    fn us_per_exec(&self) -> f64 {
        self.cpu / self.execs.max(1) as f64 * 1e6
    }
}

fn storm(limits: Limits, span: Duration) -> Result<Storm> {
    let started = Instant::now();
    let daemon = Procespy::start(&limits.config(), false)?;
    let start_s = started.elapsed().as_secs_f64();
    daemon.wait_idle()?;
    let cpu_before = procs::cpu_seconds(daemon.pid())?;
    let start = Instant::now();
    let execs = spawn_true(THREADS, Some(RATE), span)?.len();
    let seconds = start.elapsed().as_secs_f64();
    thread::sleep(DRAIN);
    let cpu = procs::cpu_seconds(daemon.pid())? - cpu_before;
    let lost = daemon.status()?["lost_events"].as_u64();
    Ok(Storm {
        execs,
        seconds,
        cpu,
        lost,
        start_s,
    })
}

/// `--runs N` (default 5) and `--span SECONDS` (default 10).
fn parse_args(args: &[String]) -> Result<(usize, Duration)> {
    let mut runs = 5;
    let mut span = Duration::from_secs(10);
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let mut number = |what: &str| {
            iter.next()
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|&n| n > 0)
                .with_context(|| format!("{what} needs a positive number"))
        };
        match arg.as_str() {
            "--runs" => runs = number("--runs")? as usize,
            "--span" => span = Duration::from_secs(number("--span")?),
            other => {
                bail!("unknown argument `{other}`; bench patterns takes `--runs N --span SECONDS`")
            }
        }
    }
    Ok((runs, span))
}

/// The benchmark.
pub fn run(args: &[String]) -> Result<()> {
    let (runs, span) = parse_args(args)?;
    procs::require_root("patterns")?;
    build::run(true)?;
    let mut storms: [Vec<Storm>; 3] = Default::default();
    for run in 0..runs {
        for (i, limits) in Limits::ALL.into_iter().enumerate() {
            let s = storm(limits, span)?;
            println!(
                "patterns: run {}/{runs}, {:<15}: {} execs ({:.0}/s), daemon {:.1} µs per exec, \
                 started in {:.1} s, lost {:?}",
                run + 1,
                limits.short(),
                s.execs,
                s.rate(),
                s.us_per_exec(),
                s.start_s,
                s.lost
            );
            storms[i].push(s);
        }
    }
    let table = table(&storms);
    let verdict = verdict(&storms);
    println!("\n{table}\n{verdict}");
    let body = format!(
        "{}\n{}\n{table}\n{verdict}",
        report::preamble("patterns: an exec with 10,000 limits", "patterns", args),
        method(runs, span)
    );
    report::save_section("patterns", &body)
}

fn spread(storms: &[Storm], f: fn(&Storm) -> f64) -> Option<Spread> {
    Spread::of(&storms.iter().map(f).collect::<Vec<_>>())
}

fn table(storms: &[Vec<Storm>; 3]) -> String {
    let mut table = Table::new(&[
        "procespy eBPF, limits (none covers the storm)",
        "execs per run",
        "reached (/s)",
        "daemon CPU per exec (µs)",
        "vs 1 limit",
        "more than 1 limit (µs per exec)",
        "daemon ready after (s)",
        "lost_events",
    ]);
    let base = spread(&storms[0], Storm::us_per_exec).map(|s| s.median);
    for (limits, storms) in Limits::ALL.into_iter().zip(storms) {
        let per_exec = spread(storms, Storm::us_per_exec);
        let show = |f: fn(&Storm) -> f64, decimals| {
            spread(storms, f).map_or("?".into(), |s| s.show(decimals, ""))
        };
        let more = per_exec
            .zip(base)
            .map_or("?".into(), |(s, b)| format!("{:+.1}", s.median - b));
        table.row(vec![
            limits.label().into(),
            show(|s| s.execs as f64, 0),
            show(Storm::rate, 0),
            per_exec.map_or("?".into(), |s| s.show(1, "")),
            quotient(per_exec.map(|s| s.median), base).map_or("—".into(), |q| format!("{q:.2}×")),
            if limits == Limits::OnePattern {
                "—".into()
            } else {
                more
            },
            show(|s| s.start_s, 1),
            storms
                .iter()
                .map(|s| s.lost.map_or("?".into(), |l| l.to_string()))
                .collect::<Vec<_>>()
                .join(", "),
        ]);
    }
    table.render()
}

/// Issue 11's goal, on the 10,000-pattern row.
fn verdict(storms: &[Vec<Storm>; 3]) -> String {
    let patterns = spread(&storms[1], Storm::us_per_exec);
    let met = match patterns {
        Some(s) if s.median < GOAL_US => "met",
        Some(_) => "NOT met",
        None => "not measured",
    };
    format!(
        "Target: with 10,000 pattern limits, an exec costs the daemon under {GOAL_US:.0} µs: \
         {met} (median {})\n",
        patterns.map_or("?".into(), |s| s.show(1, " µs"))
    )
}

/// How the figures were made, for RESULTS.md.
fn method(runs: usize, span: Duration) -> String {
    format!(
        "A fresh eBPF-mode daemon per run, whose limits cover none of the storm's processes (so \
         every exec is matched against all of them and refused): 1 pattern limit, {LIMITS} \
         pattern limits (`^/nonexistent/bench-pattern-NNNNN --never$`, distinct), or {LIMITS} \
         name limits. Once its start-up work is over (its CPU grew by less than 2 ms in a second), \
         `/bin/true` is spawned and reaped from {THREADS} threads at up to {RATE:.0} a second in \
         all, for {} s. Daemon CPU: its CPU clock (all threads, to the nanosecond) from the \
         storm's start to {} s after its end (the ring buffer drained), over the execs spawned: \
         everything an exec, its fork and its exit cost the daemon. {runs} runs per row, rows \
         alternating run by run. Medians (range); the ratio and the difference are of the medians.\n",
        span.as_secs(),
        DRAIN.as_secs()
    )
}
