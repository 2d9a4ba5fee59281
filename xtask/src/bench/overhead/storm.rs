//! Part `storm`: `/bin/true` spawned at up to 5,000 a second. What the
//! lifecycle programs cost per event under that load (BPF statistics),
//! what the daemon's CPU is per 1,000 exec/s, and, in a run with the
//! daemon logging every event, whether it saw every exec and exit.

use std::{thread, time::Duration, time::Instant};

use anyhow::Result;

use super::{
    Env, Part,
    goals::{Bound, Goal},
    seen::{self, Seen},
};
use crate::{
    bench::{
        bpfstats::{BpfStats, Snapshot},
        daemon::Procespy,
        procs,
        spawner::spawn_true,
        stats::{Spread, Table, show_spread},
    },
    ebpf,
};

const THREADS: usize = 12;
const RATE: f64 = 5000.0;
/// How long the daemon gets after a storm to drain its ring buffer.
const DRAIN: Duration = Duration::from_secs(1);
/// The lifecycle programs the goal is about: exec, fork and exit (either
/// exit program, whichever the daemon loaded).
const LIFECYCLE: [&str; 3] = ["procespy_exec", "procespy_fork", "procespy_exit"];

/// What the daemon of a storm covers.
#[derive(Clone, Copy)]
enum Coverage {
    /// Its limit covers the bystander: the storm's processes are not covered.
    Uncovered,
    /// Its limit covers `true`: each storm process is matched, gets a pidfd
    /// and a kernel entry.
    Covered,
}

impl Coverage {
    const ALL: [Coverage; 2] = [Coverage::Uncovered, Coverage::Covered];

    fn label(self) -> &'static str {
        match self {
            Coverage::Uncovered => "a limit covering another process",
            Coverage::Covered => "a limit covering `true` (1GiB, alert)",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Coverage::Uncovered => "uncovered",
            Coverage::Covered => "covered",
        }
    }

    fn daemon(self, env: &Env, verbose: bool) -> Result<Procespy> {
        match self {
            Coverage::Uncovered => env.daemon(None, verbose),
            Coverage::Covered => env.daemon(Some(("true", "1GiB")), verbose),
        }
    }
}

/// One storm.
struct Storm {
    pids: Vec<u32>,
    seconds: f64,
    /// The daemon's CPU seconds from the storm's start to [`DRAIN`] after its end.
    cpu: f64,
    /// The daemon's programs' runs over the same window.
    runs: Snapshot,
    lost: Option<u64>,
}

impl Storm {
    fn rate(&self) -> f64 {
        self.pids.len() as f64 / self.seconds
    }

    /// The daemon's CPU, in % of one core.
    fn cpu_share(&self) -> f64 {
        self.cpu / self.seconds * 100.0
    }

    /// [`Self::cpu_share`] per 1,000 exec/s.
    fn cpu_per_kilo_exec(&self) -> f64 {
        self.cpu_share() / (self.rate() / 1000.0)
    }
}

fn storm(stats: &BpfStats, daemon: &Procespy, span: Duration) -> Result<Storm> {
    let pids = [daemon.pid()];
    let before = stats.snapshot(&pids)?;
    let cpu_before = procs::cpu_seconds(daemon.pid())?;
    let start = Instant::now();
    let spawned = spawn_true(THREADS, Some(RATE), span)?;
    let seconds = start.elapsed().as_secs_f64();
    thread::sleep(DRAIN);
    let cpu = procs::cpu_seconds(daemon.pid())? - cpu_before;
    let runs = stats.snapshot(&pids)?.since(&before);
    let lost = daemon.status()?["lost_events"].as_u64();
    Ok(Storm {
        pids: spawned,
        seconds,
        cpu,
        runs,
        lost,
    })
}

/// The program of `runs` that `name` stands for: `procespy_exit` also
/// finds `procespy_exit_live`.
fn program<'a>(runs: &'a Snapshot, name: &str) -> Option<&'a str> {
    runs.names()
        .filter(|n| n.starts_with(name))
        .min_by_key(|n| n.len())
}

pub fn run(env: &Env) -> Result<Part> {
    let settings = &env.settings;
    let stats = BpfStats::enable(&ebpf::object_path())?;
    let mut storms: [Vec<Storm>; 2] = Default::default();
    for run in 0..settings.storm_runs {
        for (i, coverage) in Coverage::ALL.into_iter().enumerate() {
            let daemon = coverage.daemon(env, false)?;
            let s = storm(&stats, &daemon, settings.storm)?;
            println!(
                "overhead: storm run {}/{}, {:<9}: {} spawned ({:.0}/s), daemon {:.2}% of a core, \
                 {:.2}% per 1,000 exec/s, lost {:?}",
                run + 1,
                settings.storm_runs,
                coverage.short(),
                s.pids.len(),
                s.rate(),
                s.cpu_share(),
                s.cpu_per_kilo_exec(),
                s.lost
            );
            storms[i].push(s);
        }
    }
    let check = completeness(env, &stats)?;

    let mut daemon_table = Table::new(&[
        "procespy eBPF, quiet log",
        "spawned per run",
        "reached (/s)",
        "daemon CPU (% of a core)",
        "per 1,000 exec/s (% of a core)",
        "lost_events",
    ]);
    for (coverage, storms) in Coverage::ALL.into_iter().zip(&storms) {
        let column = |f: fn(&Storm) -> f64| storms.iter().map(f).collect::<Vec<_>>();
        daemon_table.row(vec![
            coverage.label().into(),
            show_spread(&column(|s| s.pids.len() as f64), 0),
            show_spread(&column(Storm::rate), 0),
            show_spread(&column(Storm::cpu_share), 2),
            show_spread(&column(Storm::cpu_per_kilo_exec), 2),
            storms
                .iter()
                .map(|s| s.lost.map_or("?".into(), |l| l.to_string()))
                .collect::<Vec<_>>()
                .join(", "),
        ]);
    }

    let mut names: Vec<&str> = storms
        .iter()
        .flatten()
        .flat_map(|s| s.runs.names())
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut header = vec!["program".to_owned()];
    for coverage in Coverage::ALL {
        header.push(format!("{}: runs per spawn", coverage.short()));
        header.push(format!("{}: ns per run", coverage.short()));
    }
    let mut programs = Table::new(&header.iter().map(String::as_str).collect::<Vec<_>>());
    for name in &names {
        let mut row = vec![(*name).to_owned()];
        for storms in &storms {
            let per_spawn: Vec<f64> = storms
                .iter()
                .map(|s| s.runs.get(name).count as f64 / s.pids.len() as f64)
                .collect();
            let ns: Vec<f64> = storms
                .iter()
                .filter_map(|s| s.runs.get(name).ns_per_run())
                .collect();
            row.push(show_spread(&per_spawn, 2));
            row.push(show_spread(&ns, 0));
        }
        programs.row(row);
    }

    let goals = vec![lifecycle_goal(&storms), cpu_goal(&storms)];
    let text = format!(
        "\n### Exec storm\n\n\
         `/bin/true` spawned and reaped from {THREADS} threads at up to {RATE:.0} a second in all, \
         for {span} s per run; {runs} runs per row, rows alternating run by run, a fresh daemon \
         (default log level) each run. Daemon CPU: its CPU clock (all threads, to the \
         nanosecond) from the storm's start to {drain} s after its end (the ring buffer drained), \
         over the storm's duration. Programs: the kernel's BPF statistics over the same window; \
         the runs include the rest of the machine's events (`procespy_rss` runs at every RSS \
         change of every process). Medians (range).\n\n{}\n{}{check}",
        daemon_table.render(),
        programs.render(),
        span = settings.storm.as_secs(),
        runs = settings.storm_runs,
        drain = DRAIN.as_secs(),
    );
    Ok(Part { goals, text })
}

/// Exec, fork and exit: each one's median ns per run in the worse of the
/// two configurations; the goal holds for the costliest of the three.
fn lifecycle_goal(storms: &[Vec<Storm>; 2]) -> Goal {
    let mut parts = Vec::new();
    let mut worst: Option<f64> = Some(0.0);
    for name in LIFECYCLE {
        let medians: Vec<f64> = storms
            .iter()
            .filter_map(|storms| {
                let ns: Vec<f64> = storms
                    .iter()
                    .filter_map(|s| s.runs.get(program(&s.runs, name)?).ns_per_run())
                    .collect();
                Spread::of(&ns).map(|s| s.median / 1000.0)
            })
            .collect();
        let value = medians.iter().copied().reduce(f64::max);
        let short = name.trim_start_matches("procespy_");
        parts.push(value.map_or(format!("{short} ?"), |v| format!("{short} {v:.2}")));
        worst = worst.zip(value).map(|(w, v)| w.max(v));
    }
    Goal::new(
        "exec, fork and exit programs under the exec storm",
        Bound::AtMost(1.0),
        " µs per event",
        worst,
        format!("{} µs", parts.join(", ")),
    )
}

/// The daemon's CPU per 1,000 exec/s, in the worse of the two configurations.
fn cpu_goal(storms: &[Vec<Storm>; 2]) -> Goal {
    let worst = Coverage::ALL
        .into_iter()
        .zip(storms)
        .filter_map(|(coverage, storms)| {
            let values: Vec<f64> = storms.iter().map(Storm::cpu_per_kilo_exec).collect();
            Some((coverage, Spread::of(&values)?))
        })
        .max_by(|a, b| a.1.median.total_cmp(&b.1.median));
    Goal::new(
        "daemon CPU per 1,000 exec/s",
        Bound::AtMost(2.0),
        "% of a core",
        worst.map(|(_, s)| s.median),
        worst.map_or("?".into(), |(coverage, s)| {
            format!("{}: {}", coverage.short(), s.show(2, "%"))
        }),
    )
}

/// One more storm with a covered-`true` daemon at `-v`, which logs every
/// exec and exit: are all the spawned PIDs there?
fn completeness(env: &Env, stats: &BpfStats) -> Result<String> {
    let daemon = Coverage::Covered.daemon(env, true)?;
    let s = storm(stats, &daemon, env.settings.storm)?;
    // Let the daemon write the rest of its log.
    thread::sleep(Duration::from_secs(2));
    let seen = Seen::read(daemon.log_path())?;
    drop(daemon);
    let execs = seen.missed_execs(&s.pids);
    let exits = seen.missed_exits(&s.pids);
    let reused = seen::reused(&s.pids);
    println!(
        "overhead: storm check: {} spawned ({:.0}/s), missed exec {}, missed exit {}, lost {:?}, \
         PIDs reused {reused}",
        s.pids.len(),
        s.rate(),
        execs.count,
        exits.count,
        s.lost
    );
    let mut table = Table::new(&[
        "spawned",
        "reached (/s)",
        "exec lines missed",
        "exit lines missed",
        "lost_events",
        "daemon CPU at -v (% of a core)",
    ]);
    table.row(vec![
        s.pids.len().to_string(),
        format!("{:.0}", s.rate()),
        execs.count.to_string(),
        exits.count.to_string(),
        s.lost.map_or("?".into(), |l| l.to_string()),
        format!("{:.2}", s.cpu_share()),
    ]);
    Ok(format!(
        "\nEvery process seen? One more storm of {} s with the covering daemon at \
         `-v --log-format json`, which logs every exec and exit: spawned PIDs without an `exec` \
         (or `exit`) line, read 3 s after the storm. PIDs spawned more than once (the PID space \
         wrapped): {reused}. First PIDs without an `exec` line: {:?}; without an `exit` line: \
         {:?}.\n\n{}",
        env.settings.storm.as_secs(),
        execs.first,
        exits.first,
        table.render()
    ))
}
