//! `cargo xtask bench overhead`: what procespy costs the rest of the
//! machine, measured in one run against the goals of issue 13. Parts:
//!
//! - bpf: the kernel's BPF statistics of `procespy_rss` while one process
//!   touches 2 GiB, beside the empty floor program on the same faults;
//! - faults: the wall time of that workload;
//! - storm: short processes at thousands a second: the lifecycle programs'
//!   cost, the daemon's CPU, and whether every exec and exit was seen;
//! - idle: the daemon's CPU and RSS beside 1,000 sleeping processes;
//! - spawn: the most fork+exec+wait a second, with and without procespy;
//! - make: `make -j2` of a generated C project, with and without procespy.
//!
//! Configurations alternate run by run: the machine is shared and noisy.
//! `--quick` shortens everything for development and writes no results;
//! `--only PART` runs one part and writes it to a section of its own.

mod bpf;
mod faults;
mod goals;
pub(super) mod idle;
mod make;
mod seen;
mod spawn;
mod storm;

use std::{process::Command, time::Duration};

use anyhow::{Context, Result, bail};

use super::{
    daemon::{self, Limit, Procespy},
    procs::{self, Group, TempDir},
    report,
};
use crate::build;
use goals::Goal;

/// A part of the benchmark.
type PartFn = fn(&Env) -> Result<Part>;

/// The parts, by name, in the order they run and their goals are listed.
const PARTS: [(&str, PartFn); 6] = [
    ("bpf", bpf::run),
    ("faults", faults::run),
    ("storm", storm::run),
    ("idle", idle::run),
    ("spawn", spawn::run),
    ("make", make::run),
];

/// The parts' names, for messages.
fn part_names() -> String {
    PARTS.map(|(name, _)| name).join("|")
}

/// The benchmark's settings: runs per configuration, and durations.
pub struct Settings {
    bpf_runs: usize,
    fault_runs: usize,
    storm_runs: usize,
    /// One storm.
    storm: Duration,
    /// The idle window of each daemon.
    idle: Duration,
    spawn_runs: usize,
    /// One spawn-throughput run.
    spawn: Duration,
    make_runs: usize,
    /// `--quick`: short, and nothing written.
    quick: bool,
    /// `--only PART`.
    only: Option<String>,
}

impl Settings {
    fn parse(args: &[String]) -> Result<Self> {
        let mut settings = Settings {
            bpf_runs: 3,
            fault_runs: 7,
            storm_runs: 3,
            storm: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            spawn_runs: 5,
            spawn: Duration::from_secs(5),
            make_runs: 10,
            quick: false,
            only: None,
        };
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            match arg.as_str() {
                "--quick" => {
                    settings = Settings {
                        bpf_runs: 1,
                        fault_runs: 2,
                        storm_runs: 1,
                        storm: Duration::from_secs(3),
                        idle: Duration::from_secs(10),
                        spawn_runs: 2,
                        spawn: Duration::from_secs(2),
                        make_runs: 2,
                        quick: true,
                        ..settings
                    };
                }
                "--only" => {
                    let part = iter.next().context("--only needs a part")?;
                    if !PARTS.iter().any(|(name, _)| name == part) {
                        bail!("unknown part `{part}`; parts: {}", part_names());
                    }
                    settings.only = Some(part.clone());
                }
                other => bail!(
                    "unknown argument `{other}`; bench overhead takes --quick and --only {}",
                    part_names()
                ),
            }
        }
        Ok(settings)
    }

    fn wants(&self, part: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == part)
    }

    /// The RESULTS.md section this run writes.
    fn section(&self) -> String {
        match &self.only {
            Some(part) => format!("overhead-{part}"),
            None => "overhead".into(),
        }
    }
}

/// What one part measured: its rows of the goals table and its details.
pub struct Part {
    goals: Vec<Goal>,
    text: String,
}

/// What every part shares.
pub struct Env {
    settings: Settings,
    bystander: Bystander,
}

impl Env {
    /// A daemon in eBPF mode (scan_interval 5s) whose limits, all
    /// `action = "alert"`, cover the bystander (1GiB) and, with `workload`,
    /// the processes of that name (NAME, MAX_MEMORY). It is returned once
    /// it covers the bystander and its start-up work is over.
    fn daemon(&self, workload: Option<(&str, &str)>, verbose: bool) -> Result<Procespy> {
        let alert = |name, max_memory| Limit {
            name,
            max_memory,
            action: "alert",
            memory: "rss",
        };
        let mut limits = vec![alert(BYSTANDER, "1GiB")];
        limits.extend(workload.map(|(name, max)| alert(name, max)));
        let daemon = Procespy::start(&daemon::config("ebpf", "5s", &limits), verbose)?;
        daemon.wait_covered(self.bystander.pid(), Duration::from_secs(10))?;
        daemon.wait_idle()?;
        Ok(daemon)
    }
}

/// The name of [`Bystander`].
const BYSTANDER: &str = "bench-bystander";

/// A sleeping process, a `sleep` named `bench-bystander`, that every
/// daemon covers: with the workload uncovered, the kernel's map of covered
/// processes is not empty.
struct Bystander {
    group: Group,
    _dir: TempDir,
}

impl Bystander {
    fn start() -> Result<Self> {
        let dir = TempDir::new("bystander")?;
        let sleep = procs::which("sleep").context("no `sleep` on PATH")?;
        let exe = dir.copy_exe(&sleep, BYSTANDER)?;
        let mut cmd = Command::new(exe);
        cmd.arg("100000");
        let group = Group::spawn(&mut cmd, BYSTANDER)?;
        Ok(Bystander { group, _dir: dir })
    }

    fn pid(&self) -> u32 {
        self.group.pid()
    }
}

/// The benchmark.
pub fn run(args: &[String]) -> Result<()> {
    let settings = Settings::parse(args)?;
    procs::require_root("overhead")?;
    build::run(true)?;
    let env = Env {
        settings,
        bystander: Bystander::start()?,
    };
    let mut goals = Vec::new();
    let mut details = String::new();
    for (name, run) in PARTS
        .into_iter()
        .filter(|(name, _)| env.settings.wants(name))
    {
        let part = run(&env).with_context(|| format!("bench overhead, part {name}"))?;
        println!("\n{}", part.text);
        goals.extend(part.goals);
        details.push_str(&part.text);
    }
    let goals = if goals.is_empty() {
        String::new()
    } else {
        let table = goals::render(&goals);
        println!("\n{table}");
        format!(
            "\n### Goals (issue 13)\n\nEach figure measured in this run; the parts below say \
             how. Medians (range over the runs); where a part measures a figure with the \
             workload covered and uncovered, the goal takes the worse.\n\n{table}"
        )
    };
    if env.settings.quick {
        println!("bench: --quick: bench/RESULTS.md left as it was");
        return Ok(());
    }
    let title = match &env.settings.only {
        Some(part) => format!("overhead, part {part} alone"),
        None => "overhead: what procespy costs the machine".into(),
    };
    let preamble = report::preamble(&title, "overhead", args);
    let body = format!("{preamble}{goals}{details}");
    report::save_section(&env.settings.section(), &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn settings_take_quick_and_one_part() {
        let settings = Settings::parse(&args(&["--only", "bpf", "--quick"])).unwrap();
        assert!(settings.quick && settings.wants("bpf") && !settings.wants("make"));
        assert_eq!(settings.section(), "overhead-bpf");
        assert_eq!(Settings::parse(&[]).unwrap().section(), "overhead");
        assert!(Settings::parse(&args(&["--only", "nothing"])).is_err());
        assert!(Settings::parse(&args(&["--slow"])).is_err());
    }
}
