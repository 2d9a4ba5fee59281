//! `cargo xtask bench scale`: with 10,000 extra processes, how long does
//! one full `/proc` examination take, in `procespy ps` and in the daemon,
//! against `ps -eo pid,comm,rss --sort=-rss`?

use std::{
    fs,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{
    daemon::{self, Limit, Procespy},
    procs::{self, release_bin},
    report,
    stats::{Table, median, ratio},
    sysctl::{self, Sysctl},
};
use crate::build;

const PROCESSES: usize = 10_000;
const PID_MAX: &str = "kernel/pid_max";

/// Raises `kernel.pid_max` to at least `needed` for as long as the guard lives.
fn raise_pid_max(needed: u64) -> Result<Option<Sysctl>> {
    let current: u64 = sysctl::read(PID_MAX)?
        .parse()
        .context("pid_max is not a number")?;
    if current >= needed {
        return Ok(None);
    }
    let guard = Sysctl::set(PID_MAX, &needed.to_string())?;
    println!("scale: raised pid_max from {current} to {needed} (restored at the end)");
    Ok(guard)
}

fn process_count() -> usize {
    fs::read_dir("/proc").map_or(0, |dir| {
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .count()
    })
}

/// One command whose output goes to /dev/null, timed.
struct Timed {
    label: &'static str,
    program: std::path::PathBuf,
    args: &'static [&'static str],
}

impl Timed {
    fn run(&self) -> Result<f64> {
        let start = Instant::now();
        let status = Command::new(&self.program)
            .args(self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("running {}", self.label))?;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        if !status.success() {
            bail!("{} failed ({status})", self.label);
        }
        Ok(ms)
    }
}

/// `last_examination_ms` of `runs` successive examinations of a proc-mode daemon.
fn daemon_examinations(runs: usize) -> Result<Vec<f64>> {
    let config = daemon::config(
        "proc",
        "1s",
        &[Limit {
            name: "bench-nobody",
            max_memory: "8GiB",
            action: "alert",
            memory: "rss",
        }],
    );
    let daemon = Procespy::start(&config, false)?;
    let mut times = Vec::new();
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(60 + 5 * runs as u64);
    while times.len() < runs {
        let status = daemon.status()?;
        let count = status["examinations"].as_u64().unwrap_or(0);
        // The first examination also fills the table from nothing: skip it.
        if count > seen.max(1) {
            seen = count;
            if let Some(ms) = status["last_examination_ms"].as_f64() {
                println!("scale: daemon examination {count}: {ms:.1} ms");
                times.push(ms);
            }
        }
        if Instant::now() > deadline {
            bail!("the daemon made only {} examinations in time", times.len());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(times)
}

fn parse_runs(args: &[String]) -> Result<usize> {
    match args {
        [] => Ok(7),
        [flag, n] if flag == "--runs" => n
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .context("--runs needs a positive number"),
        _ => bail!("bench scale takes `--runs N`"),
    }
}

/// The benchmark.
pub fn run(args: &[String]) -> Result<()> {
    let runs = parse_runs(args)?;
    procs::require_root("scale")?;
    build::run(true)?;
    let _pid_max = raise_pid_max((process_count() + PROCESSES) as u64 * 2)?;
    println!("scale: starting {PROCESSES} sleeping processes");
    let sleepers = procs::sleepers(PROCESSES)?;
    let total = process_count();
    println!("scale: {total} processes now");

    let procespy = release_bin("procespy");
    let commands = [
        Timed {
            label: "ps -eo pid,comm,rss --sort=-rss",
            program: "ps".into(),
            args: &["-eo", "pid,comm,rss", "--sort=-rss"],
        },
        Timed {
            label: "procespy ps",
            program: procespy.clone(),
            args: &["ps"],
        },
        Timed {
            label: "procespy ps --json",
            program: procespy,
            args: &["ps", "--json"],
        },
    ];
    let mut times = vec![Vec::new(); commands.len()];
    for run in 0..runs {
        for (i, command) in commands.iter().enumerate() {
            let ms = command.run()?;
            println!(
                "scale: run {}/{runs} {:<32} {ms:.1} ms",
                run + 1,
                command.label
            );
            times[i].push(ms);
        }
    }
    let exams = daemon_examinations(runs)?;
    drop(sleepers);

    let base = median(&times[0]);
    let mut table = Table::new(&["what (output to /dev/null)", "median (ms)", "vs ps"]);
    for (command, times) in commands.iter().zip(&times) {
        let m = median(times);
        table.row(vec![
            format!("`{}`", command.label),
            m.map_or("?".into(), |m| format!("{m:.1}")),
            ratio(m, base),
        ]);
    }
    let m = median(&exams);
    table.row(vec![
        "daemon (proc mode) examination, `last_examination_ms`".into(),
        m.map_or("?".into(), |m| format!("{m:.1}")),
        ratio(m, base),
    ]);
    let rendered = table.render();
    println!("\n{rendered}");
    let body = format!(
        "{}\n{PROCESSES} extra `sleep` processes ({total} in all); each command run {runs} times, \
         interleaved, wall time from spawn to exit (start-up included). The daemon row is the \
         duration of {runs} successive scheduled examinations (after the first) of a procespy \
         daemon in proc mode, as `procespy status` reports it, measured after the commands.\n\n{rendered}",
        report::preamble("scale: 10,000 processes", "scale", args)
    );
    report::save_section("scale", &body)
}
