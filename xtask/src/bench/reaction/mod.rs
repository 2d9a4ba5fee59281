//! `cargo xtask bench reaction`: a process grows at a fixed rate past a
//! 256 MiB limit; how far past the limit does it get, and how long does it
//! live after crossing it, under each watchdog?
//!
//! The test program prints `progress BYTES MONOTONIC_NS` after every MiB.
//! Overshoot is its last progress line minus the limit; crossing-to-death
//! runs from its first line above the limit to the moment a pidfd poll
//! here saw it die, both on CLOCK_MONOTONIC.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    os::unix::process::ExitStatusExt,
    path::Path,
    process::{ChildStdout, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};

use super::{
    daemon::{self, Limit, Procespy},
    plot::{self, Line},
    procs::{self, Group, Pidfd, TempDir, monotonic_ns, release_bin},
    report,
    stats::{Spread, Table, median, quotient, ratio},
};
use crate::{build, cmd, setup};

mod kernel;

const MIB: u64 = 1 << 20;
/// The limit every watchdog enforces.
const LIMIT_MIB: u64 = 256;
/// The program is killed here by the benchmark if no watchdog stopped it.
const CAP_MIB: u64 = 1024;
/// Growth rates, MiB/s: 512 MiB/s and 4 GiB/s.
const RATES: [u64; 2] = [512, 4096];
/// The name the test program runs under, which the watchdogs look for.
const PROG: &str = "bench-grower";
/// The proc-mode polling period.
const PROC_SCAN: &str = "100ms";

/// How the test program grows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Growth {
    /// One thread, by 1 MiB steps at this many MiB/s.
    Rate(u64),
    /// This many threads, each touching 1 MiB after another as fast as it can.
    Threads(usize),
}

impl Growth {
    /// The test program's command.
    fn command(self) -> String {
        match self {
            Growth::Rate(rate) => format!("rate {rate} {CAP_MIB}"),
            Growth::Threads(threads) => format!("threads {threads} {CAP_MIB}"),
        }
    }

    /// What the table's rate column says was asked for.
    fn asked(self) -> String {
        match self {
            Growth::Rate(rate) => rate.to_string(),
            Growth::Threads(threads) => format!("{threads} threads, flat out"),
        }
    }

    /// A short name for files, logs and the guest's lines: `512`, `4threads`.
    fn short(self) -> String {
        match self {
            Growth::Rate(rate) => rate.to_string(),
            Growth::Threads(threads) => format!("{threads}threads"),
        }
    }

    fn parse(text: &str) -> Option<Growth> {
        match text.strip_suffix("threads") {
            Some(threads) => threads.parse().ok().map(Growth::Threads),
            None => text.parse().ok().map(Growth::Rate),
        }
    }
}

/// The growths every watchdog meets; kill-now also meets [`THREADED`].
const RATE_GROWTHS: [Growth; 2] = [Growth::Rate(RATES[0]), Growth::Rate(RATES[1])];
/// Four threads growing at once: on kernels that batch RSS counting per
/// thread (before 6.2), each thread's last 64 pages are seen late.
const THREADED: Growth = Growth::Threads(4);

/// The watchdogs compared, in table order.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Watchdog {
    Floor,
    PsLoop1s,
    PsLoop100ms,
    Monit,
    ProcespyProc,
    ProcespyKill,
    ProcespyPss,
    ProcespyKillNow,
}

impl Watchdog {
    const ALL: [Watchdog; 8] = [
        Watchdog::Floor,
        Watchdog::PsLoop1s,
        Watchdog::PsLoop100ms,
        Watchdog::Monit,
        Watchdog::ProcespyProc,
        Watchdog::ProcespyKill,
        Watchdog::ProcespyPss,
        Watchdog::ProcespyKillNow,
    ];

    /// The row's name in the table.
    fn label(self) -> &'static str {
        match self {
            Watchdog::Floor => "floor: the benchmark's own SIGKILL at the crossing line",
            Watchdog::PsLoop1s => "ps+awk+kill loop, every 1 s",
            Watchdog::PsLoop100ms => "ps+awk+kill loop, every 0.1 s",
            Watchdog::Monit => "monit 5.33, set daemon 1, total memory, exec kill -9",
            Watchdog::ProcespyProc => "procespy proc mode (scan_interval 100ms), kill",
            Watchdog::ProcespyKill => "procespy eBPF, kill",
            Watchdog::ProcespyPss => "procespy eBPF, kill, memory = \"pss\"",
            Watchdog::ProcespyKillNow => "procespy eBPF, kill-now",
        }
    }

    /// A short name for files and the plot's legend.
    fn short(self) -> &'static str {
        match self {
            Watchdog::Floor => "floor",
            Watchdog::PsLoop1s => "ps-loop-1s",
            Watchdog::PsLoop100ms => "ps-loop-0.1s",
            Watchdog::Monit => "monit",
            Watchdog::ProcespyProc => "procespy-proc",
            Watchdog::ProcespyKill => "procespy-ebpf-kill",
            Watchdog::ProcespyPss => "procespy-ebpf-kill-pss",
            Watchdog::ProcespyKillNow => "procespy-ebpf-kill-now",
        }
    }

    /// The watchdog whose [`Self::short`] is `name`.
    fn from_short(name: &str) -> Option<Watchdog> {
        Watchdog::ALL.into_iter().find(|w| w.short() == name)
    }

    /// How the test program grows in this watchdog's rows.
    fn growths(self) -> Vec<Growth> {
        let mut growths = RATE_GROWTHS.to_vec();
        if self == Watchdog::ProcespyKillNow {
            growths.push(THREADED);
        }
        growths
    }

    /// Starts the watchdog; it runs until the returned value is dropped.
    fn start(self) -> Result<Running> {
        match self {
            Watchdog::Floor => Ok(Running::Floor),
            Watchdog::PsLoop1s => ps_loop("1"),
            Watchdog::PsLoop100ms => ps_loop("0.1"),
            Watchdog::Monit => monit(),
            Watchdog::ProcespyProc => procespy("proc", PROC_SCAN, "kill", "rss", true),
            Watchdog::ProcespyKill => procespy("ebpf", "5s", "kill", "rss", true),
            Watchdog::ProcespyPss => procespy("ebpf", "5s", "kill", "pss", true),
            Watchdog::ProcespyKillNow => procespy("ebpf", "5s", "kill-now", "rss", true),
        }
    }

    /// An eBPF procespy row's daemon with its history on or off.
    fn start_ebpf(self, history: bool) -> Result<Running> {
        match self {
            Watchdog::ProcespyKill => procespy("ebpf", "5s", "kill", "rss", history),
            Watchdog::ProcespyPss => procespy("ebpf", "5s", "kill", "pss", history),
            Watchdog::ProcespyKillNow => procespy("ebpf", "5s", "kill-now", "rss", history),
            _ => bail!("{} is not an eBPF procespy row", self.label()),
        }
    }
}

/// A running watchdog. Dropping it stops it (and everything it started).
enum Running {
    /// The benchmark itself is the watchdog.
    Floor,
    Process {
        _group: Group,
        _dir: Option<TempDir>,
    },
    Procespy(Procespy),
}

/// The original tool's way: `ps | awk | xargs kill` every `period` seconds.
fn ps_loop(period: &str) -> Result<Running> {
    let limit_kib = LIMIT_MIB * 1024;
    let script = format!(
        "while :; do ps -eo pid=,rss=,comm= \
         | awk -v name={PROG} -v max={limit_kib} '$3 == name && $2 > max {{ print $1 }}' \
         | xargs -r kill; sleep {period}; done"
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &script]).stdin(Stdio::null());
    Ok(Running::Process {
        _group: Group::spawn(&mut cmd, "the ps loop")?,
        _dir: None,
    })
}

/// monit in the foreground with its own control, state and id files.
fn monit() -> Result<Running> {
    let dir = TempDir::new("monit")?;
    let d = dir.path().display();
    let kill = dir.write(
        "kill.sh",
        "#!/bin/sh\nexec /bin/kill -9 \"$MONIT_PROCESS_PID\"\n",
        0o755,
    )?;
    let rc = format!(
        "set daemon 1\nset logfile {d}/monit.log\nset idfile {d}/monit.id\n\
         set statefile {d}/monit.state\nset pidfile {d}/monit.pid\n\n\
         check process {PROG} matching \"{PROG}\"\n    \
         if total memory > {LIMIT_MIB} MB then exec \"{}\"\n",
        kill.display()
    );
    let rc = dir.write("monitrc", &rc, 0o600)?;
    let mut cmd = Command::new("monit");
    cmd.arg("-I")
        .arg("-c")
        .arg(&rc)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut group = Group::spawn(&mut cmd, "monit")?;
    // Give it time to read its control file and start its first cycle.
    std::thread::sleep(Duration::from_millis(1500));
    if !group.running() {
        let log = fs::read_to_string(dir.path().join("monit.log")).unwrap_or_default();
        bail!("monit exited at start; its log:\n{log}");
    }
    Ok(Running::Process {
        _group: group,
        _dir: Some(dir),
    })
}

fn procespy(mode: &str, scan: &str, action: &str, memory: &str, history: bool) -> Result<Running> {
    let limit = format!("{LIMIT_MIB}MiB");
    let config = daemon::config(
        mode,
        scan,
        &[Limit {
            name: PROG,
            max_memory: &limit,
            action,
            memory,
        }],
    );
    Ok(Running::Procespy(Procespy::start_with_history(
        &config, false, history,
    )?))
}

/// What one run of the test program showed.
struct Run {
    /// Its VmRSS before it grew, in bytes.
    base: u64,
    /// `(bytes grown, CLOCK_MONOTONIC ns)` after every MiB.
    progress: Vec<(u64, u64)>,
    /// When the pidfd poll saw it die.
    death_ns: u64,
    /// The benchmark killed it at the cap: no watchdog stopped it.
    capped: bool,
    /// The signal it died of.
    signal: Option<i32>,
    /// When SIGTERM reached it (it reports the arrival, CLOCK_MONOTONIC ns).
    term_ns: Option<u64>,
}

impl Run {
    /// Its RSS at its last progress line: what it had before plus what it
    /// grew (the most any thread reported, when several print).
    fn last_rss(&self) -> u64 {
        self.base + self.progress.iter().map(|p| p.0).max().unwrap_or(0)
    }

    /// When it printed its last progress line.
    fn last_ns(&self) -> Option<u64> {
        self.progress.iter().map(|p| p.1).max()
    }

    /// MiB of RSS past the limit; 0 when it died at or below it; infinite when capped.
    fn overshoot_mib(&self) -> f64 {
        if self.capped {
            return f64::INFINITY;
        }
        self.last_rss().saturating_sub(LIMIT_MIB * MIB) as f64 / MIB as f64
    }

    /// ms from its first progress line with RSS above the limit to its
    /// death; `None` when it never got above; infinite when capped.
    fn crossing_to_death_ms(&self) -> Option<f64> {
        if self.capped {
            return Some(f64::INFINITY);
        }
        let crossing = self.crossing_ns()?;
        Some(self.death_ns.saturating_sub(crossing) as f64 / 1e6)
    }

    /// When it reported its first MiB above the limit (CLOCK_MONOTONIC ns).
    fn crossing_ns(&self) -> Option<u64> {
        let limit = LIMIT_MIB * MIB;
        Some(self.progress.iter().find(|p| self.base + p.0 > limit)?.1)
    }

    /// ms from its first progress line with RSS above the limit to the
    /// arrival of SIGTERM; `None` without a crossing or a SIGTERM.
    fn crossing_to_term_ms(&self) -> Option<f64> {
        let crossing = self.crossing_ns()?;
        Some(self.term_ns?.saturating_sub(crossing) as f64 / 1e6)
    }

    /// ms from its first progress line with RSS above the limit to its
    /// last line: it grew no more than one step after that.
    fn crossing_to_last_line_ms(&self) -> Option<f64> {
        if self.capped {
            return Some(f64::INFINITY);
        }
        let crossing = self.crossing_ns()?;
        Some(self.last_ns()?.saturating_sub(crossing) as f64 / 1e6)
    }

    /// The growth rate reached, MiB/s.
    fn rate_reached(&self) -> Option<f64> {
        let first = self.progress.first()?;
        let grown = self.last_rss() - self.base;
        let ns = self.last_ns()?.checked_sub(first.1).filter(|&ns| ns > 0)?;
        Some(grown.saturating_sub(first.0) as f64 / MIB as f64 / (ns as f64 / 1e9))
    }

    /// The run as one line of JSON, for a guest to hand to the host: its
    /// progress cut to the lines every figure but the plot's series uses
    /// (the first, the crossing, the last).
    fn to_json(&self) -> String {
        let mut points: Vec<(u64, u64)> = self.progress.first().copied().into_iter().collect();
        let limit = LIMIT_MIB * MIB;
        points.extend(self.progress.iter().find(|p| self.base + p.0 > limit));
        points.extend(self.progress.iter().max_by_key(|p| p.0));
        if let Some(last) = self.last_ns() {
            points.push((0, last));
        }
        serde_json::json!({
            "base": self.base,
            "progress": points,
            "death_ns": self.death_ns,
            "capped": self.capped,
            "signal": self.signal,
            "term_ns": self.term_ns,
        })
        .to_string()
    }

    /// The run [`Self::to_json`] wrote.
    fn from_json(text: &str) -> Result<Run> {
        let value: serde_json::Value = serde_json::from_str(text).context("a run is not JSON")?;
        let number = |key: &str| value[key].as_u64();
        let progress = value["progress"]
            .as_array()
            .context("a run has no progress")?
            .iter()
            .filter_map(|p| Some((p[0].as_u64()?, p[1].as_u64()?)))
            .collect();
        Ok(Run {
            base: number("base").context("a run has no base")?,
            progress,
            death_ns: number("death_ns").context("a run has no death_ns")?,
            capped: value["capped"].as_bool().unwrap_or(false),
            signal: value["signal"].as_i64().and_then(|s| i32::try_from(s).ok()),
            term_ns: number("term_ns"),
        })
    }

    /// `(ms since the first MiB, RSS in MiB)` for each progress line.
    fn series(&self) -> Vec<(f64, f64)> {
        let start = self.progress.first().map_or(0, |p| p.1);
        self.progress
            .iter()
            .map(|&(bytes, ns)| {
                (
                    ns.saturating_sub(start) as f64 / 1e6,
                    (self.base + bytes) as f64 / MIB as f64,
                )
            })
            .collect()
    }

    /// The moment of death on the series' time axis, at the last RSS reported.
    fn death_point(&self) -> Option<(f64, f64)> {
        let start = self.progress.first()?.1;
        Some((
            self.death_ns.saturating_sub(start) as f64 / 1e6,
            self.last_rss() as f64 / MIB as f64,
        ))
    }
}

/// What the progress reader does besides reading.
struct Reader {
    pidfd: Arc<Pidfd>,
    /// Set when the reader killed the program at the cap.
    capped: Arc<AtomicBool>,
    /// For the floor row: SIGKILL at the first line above this many bytes grown.
    kill_above: Option<u64>,
}

impl Reader {
    /// Reads progress lines (and the arrival of SIGTERM) until the program's
    /// output ends; kills it (through its pidfd) once it reports the cap or
    /// finishes growing.
    fn read(self, stdout: BufReader<ChildStdout>) -> (Vec<(u64, u64)>, Option<u64>) {
        let mut progress = Vec::new();
        let mut term = None;
        for line in stdout.lines() {
            let Ok(line) = line else { break };
            let mut words = line.split_whitespace();
            let at_cap = match (words.next(), words.next(), words.next()) {
                (Some("progress"), Some(bytes), Some(ns)) => {
                    if let (Ok(bytes), Ok(ns)) = (bytes.parse::<u64>(), ns.parse()) {
                        if self.kill_above.is_some_and(|above| bytes > above) {
                            self.pidfd.signal(libc::SIGKILL);
                        }
                        progress.push((bytes, ns));
                    }
                    progress.last().is_some_and(|p| p.0 >= CAP_MIB * MIB)
                }
                (Some("term"), Some(ns), _) => {
                    term = ns.parse().ok();
                    false
                }
                // The answer to `rate`: it grew all the way.
                (Some("ok"), ..) => true,
                _ => false,
            };
            if at_cap && !self.capped.swap(true, Ordering::SeqCst) {
                self.pidfd.signal(libc::SIGKILL);
            }
        }
        (progress, term)
    }
}

/// Starts the test program, reads its RSS, makes it grow as `growth` says,
/// and waits for its death. With a procespy daemon, growth starts only once
/// the daemon covers it; other watchdogs have to find it as it grows.
/// `slow` multiplies the waits (a guest under emulation is slower).
fn one_run(exe: &Path, growth: Growth, watchdog: &Running, slow: u32) -> Result<Run> {
    let mut cmd = Command::new(exe);
    cmd.arg("--report-term")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut prog = Group::spawn(&mut cmd, PROG)?;
    let pid = prog.pid();
    let pidfd = Arc::new(Pidfd::open(pid)?);
    let mut stdout = BufReader::new(prog.child().stdout.take().context("no stdout pipe")?);
    // Kept open until it dies: at end of input the program would exit.
    let mut stdin = prog.child().stdin.take().context("no stdin pipe")?;
    writeln!(stdin, "rss").context("asking the program its RSS")?;
    let mut answer = String::new();
    stdout.read_line(&mut answer)?;
    let base: u64 = answer
        .strip_prefix("ok ")
        .and_then(|rss| rss.trim().parse().ok())
        .with_context(|| format!("{PROG} answered `rss` with {answer:?}"))?;
    let capped = Arc::new(AtomicBool::new(false));
    let reader = Reader {
        pidfd: Arc::clone(&pidfd),
        capped: Arc::clone(&capped),
        kill_above: matches!(watchdog, Running::Floor)
            .then(|| (LIMIT_MIB * MIB).saturating_sub(base)),
    };
    let reader = std::thread::spawn(move || reader.read(stdout));
    if let Running::Procespy(daemon) = watchdog {
        daemon.wait_covered(pid, Duration::from_secs(10) * slow)?;
    }
    writeln!(stdin, "{}", growth.command()).context("telling the program to grow")?;
    let patience = Duration::from_secs(30) * slow;
    if !pidfd.wait_death(patience)? {
        bail!("{PROG} (PID {pid}) was still alive {patience:?} after it started growing");
    }
    let death_ns = monotonic_ns();
    let status = prog.child().wait().context("reaping the program")?;
    drop(stdin);
    let (progress, term_ns) = reader
        .join()
        .map_err(|_| anyhow!("the progress reader panicked"))?;
    Ok(Run {
        base,
        progress,
        death_ns,
        capped: capped.load(Ordering::SeqCst),
        signal: status.signal(),
        term_ns,
    })
}

/// All runs of one watchdog with one growth.
struct Row {
    watchdog: Watchdog,
    growth: Growth,
    runs: Vec<Run>,
}

impl Row {
    fn overshoot(&self) -> Option<f64> {
        median(&self.runs.iter().map(Run::overshoot_mib).collect::<Vec<_>>())
    }

    /// The rate column: what was asked, and the median reached.
    fn growth_cell(&self) -> String {
        format!(
            "{} → {}",
            self.growth.asked(),
            self.rate_reached()
                .map_or("?".into(), |r| format!("{r:.0}"))
        )
    }

    /// The last column: runs that died at or below the limit, runs capped.
    fn outcome_cell(&self) -> String {
        let runs = self.runs.len();
        format!("{}/{runs} / {}/{runs}", self.before_limit(), self.capped())
    }

    /// The overshoot's median and range, in MiB: `none` when no run got past
    /// the limit.
    fn overshoot_range(&self) -> String {
        let values: Vec<f64> = self.runs.iter().map(Run::overshoot_mib).collect();
        match Spread::of(&values) {
            None => "—".into(),
            Some(s) if s.max == 0.0 => "none".into(),
            Some(s) if s.max.is_infinite() => fmt_mib(Some(s.median)),
            Some(s) => s.show(1, " MiB"),
        }
    }

    /// `f` of each run that has it.
    fn times(&self, f: fn(&Run) -> Option<f64>) -> Vec<f64> {
        self.runs.iter().filter_map(f).collect()
    }

    fn crossing_to_death(&self) -> Option<f64> {
        median(&self.times(Run::crossing_to_death_ms))
    }

    fn crossing_to_term(&self) -> Option<f64> {
        median(&self.times(Run::crossing_to_term_ms))
    }

    fn crossing_to_last_line(&self) -> Option<f64> {
        median(&self.times(Run::crossing_to_last_line_ms))
    }

    fn rate_reached(&self) -> Option<f64> {
        median(&self.times(Run::rate_reached))
    }

    fn before_limit(&self) -> usize {
        let limit = LIMIT_MIB * MIB;
        self.runs.iter().filter(|r| r.last_rss() <= limit).count()
    }

    fn capped(&self) -> usize {
        self.runs.iter().filter(|r| r.capped).count()
    }

    /// The run with the median overshoot, for the plot.
    fn typical(&self) -> Option<&Run> {
        let mut runs: Vec<&Run> = self.runs.iter().collect();
        runs.sort_by(|a, b| a.overshoot_mib().total_cmp(&b.overshoot_mib()));
        runs.get(runs.len() / 2).copied()
    }
}

/// What the benchmark was asked for.
struct Args {
    runs: usize,
    /// `--kernel LABEL`: the procespy rows on the host and in a guest of that kernel.
    kernel: Option<String>,
    /// `--in-guest`: the guest's half of `--kernel` (what the host starts there).
    in_guest: bool,
}

/// `--runs N` (default 10), `--kernel LABEL`, `--in-guest`.
fn parse_args(args: &[String]) -> Result<Args> {
    let mut parsed = Args {
        runs: 10,
        kernel: None,
        in_guest: false,
    };
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--runs" => {
                parsed.runs = iter
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .context("--runs needs a positive number")?;
            }
            "--kernel" => {
                parsed.kernel = Some(
                    iter.next()
                        .context("--kernel needs a kernel: 5.10, 6.1 or 6.12")?
                        .clone(),
                );
            }
            "--in-guest" => parsed.in_guest = true,
            other => bail!(
                "unknown argument `{other}`; bench reaction takes `--runs N` and `--kernel LABEL`"
            ),
        }
    }
    Ok(parsed)
}

/// The benchmark.
pub fn run(args: &[String]) -> Result<()> {
    let parsed = parse_args(args)?;
    procs::require_root("reaction")?;
    if parsed.in_guest {
        return kernel::in_guest(parsed.runs);
    }
    if let Some(label) = &parsed.kernel {
        return kernel::run(label, parsed.runs, args);
    }
    if procs::which("monit").is_none() {
        setup::run(setup::Set::Test)?;
    }
    build::run(true)?;
    let series_dir = cmd::target_dir().join("bench").join("reaction");
    let _ = fs::remove_dir_all(&series_dir);
    fs::create_dir_all(&series_dir)
        .with_context(|| format!("creating {}", series_dir.display()))?;
    let rows = measure(&Watchdog::ALL, parsed.runs, 1, |row, i, run| {
        save_series(&series_dir, row.watchdog, row.growth, i, run)
    })?;

    let table = table(&rows);
    let verdicts = targets(&rows);
    println!("\n{table}\n{verdicts}");
    fs::create_dir_all(report::bench_dir()).context("creating bench/")?;
    let svg = report::bench_dir().join("reaction.svg");
    plot::rss_over_time(
        &svg,
        &plot_lines(&rows, Growth::Rate(RATES[0])),
        LIMIT_MIB as f64,
    )?;
    println!("bench: wrote {}", svg.display());
    let body = format!(
        "{}\n{}\n{table}\n{verdicts}",
        report::preamble("reaction: stopping a growing process", "reaction", args),
        method(parsed.runs)
    );
    report::save_section("reaction", &body)
}

/// `runs` runs of each of `watchdogs` with each of its growths, here (on
/// this machine's kernel); `slow` multiplies the waits. Each run is printed,
/// then handed to `each` with its row and number.
fn measure(
    watchdogs: &[Watchdog],
    runs: usize,
    slow: u32,
    mut each: impl FnMut(&Row, usize, &Run) -> Result<()>,
) -> Result<Vec<Row>> {
    let scratch = TempDir::new("reaction")?;
    let exe = scratch.copy_exe(&release_bin("procespy-testprog"), PROG)?;
    let mut rows = Vec::new();
    for &watchdog in watchdogs {
        for growth in watchdog.growths() {
            let running = watchdog.start()?;
            let mut row = Row {
                watchdog,
                growth,
                runs: Vec::new(),
            };
            for i in 0..runs {
                let run = one_run(&exe, growth, &running, slow)
                    .with_context(|| format!("{}, growth {}", watchdog.label(), growth.asked()))?;
                print_run(&row, i, runs, &run);
                each(&row, i, &run)?;
                row.runs.push(run);
                std::thread::sleep(Duration::from_millis(300));
            }
            drop(running);
            rows.push(row);
        }
    }
    Ok(rows)
}

/// The eBPF rows with the daemon's history off and on, for `cargo xtask
/// bench history`: per row, `runs` runs of each, alternating, a fresh daemon
/// for each run. Returns the section's text (method and table) and, per
/// row, crossing→death with history on over off.
pub fn history_rows(runs: usize) -> Result<(String, Vec<f64>)> {
    let scratch = TempDir::new("reaction-history")?;
    let exe = scratch.copy_exe(&release_bin("procespy-testprog"), PROG)?;
    let mut table = Table::new(&[
        "watchdog",
        "rate (MiB/s)",
        "history",
        "overshoot (MiB)",
        "crossing→SIGTERM (ms)",
        "crossing→death (ms)",
        "crossing→death vs history off",
    ]);
    let mut verdicts = Vec::new();
    let mut ratios = Vec::new();
    for watchdog in [Watchdog::ProcespyKill, Watchdog::ProcespyKillNow] {
        for rate in RATES {
            let growth = Growth::Rate(rate);
            let mut rows = [false, true].map(|_| Row {
                watchdog,
                growth,
                runs: Vec::new(),
            });
            for i in 0..runs {
                for (row, history) in rows.iter_mut().zip([false, true]) {
                    let running = watchdog.start_ebpf(history)?;
                    let run = one_run(&exe, growth, &running, 1).with_context(|| {
                        format!("{} at {rate} MiB/s, history {history}", watchdog.label())
                    })?;
                    drop(running);
                    print_run(row, i, runs, &run);
                    row.runs.push(run);
                }
            }
            let off = rows[0].crossing_to_death();
            for (row, history) in rows.iter().zip(["off", "on"]) {
                let spread = |f: fn(&Run) -> Option<f64>| {
                    let values: Vec<f64> = row.runs.iter().filter_map(f).collect();
                    Spread::of(&values).map_or("—".into(), |s| s.show(2, ""))
                };
                table.row(vec![
                    watchdog.label().into(),
                    rate.to_string(),
                    history.into(),
                    spread(|r| Some(r.overshoot_mib())),
                    spread(Run::crossing_to_term_ms),
                    spread(Run::crossing_to_death_ms),
                    ratio(row.crossing_to_death(), off),
                ]);
            }
            ratios.extend(quotient(rows[1].crossing_to_death(), off));
            verdicts.push(format!(
                "- {} at {rate} MiB/s, crossing→death with history on vs off: {}",
                watchdog.label(),
                ratio(rows[1].crossing_to_death(), off)
            ));
        }
    }
    let text = format!(
        "{runs} runs per row, history off and on alternating run by run, each with a fresh \
         daemon (`[history]` in its scratch directory; on: the default tiers); otherwise \
         the reaction benchmark's method (`cargo xtask bench reaction`: a copy of \
         procespy-testprog grows past a {LIMIT_MIB} MiB limit at the rate shown). \
         Medians (range).\n\n{}\n{}\n",
        table.render(),
        verdicts.join("\n")
    );
    Ok((text, ratios))
}

/// How the figures were made, for RESULTS.md.
fn method(runs: usize) -> String {
    format!(
        "A copy of procespy-testprog named `{PROG}` is asked its VmRSS, then to grow by 1 MiB \
         steps at a fixed rate up to {CAP_MIB} MiB grown (the benchmark kills it there: \
         \"capped\"), past a {LIMIT_MIB} MiB limit; {runs} runs per row. Its RSS at each \
         `progress` line is the VmRSS it had before growing (about 2 MiB) plus the bytes it \
         reports grown. Overshoot: RSS at its last progress line minus the limit (\"none\": it died \
         at or below the limit). Crossing→SIGTERM: from its first progress line with RSS above \
         the limit to the moment its SIGTERM handler ran (it prints that time; `--report-term`), \
         for the watchdogs that send SIGTERM. Crossing→death: from its first progress line with RSS above the \
         limit to the moment a pidfd poll here saw it die (both CLOCK_MONOTONIC; death includes the \
         kernel freeing its memory), over the runs that crossed. Crossing→last line: from that line \
         to its last one; it grew at most one more MiB after it. Medians; ratios against the \
         procespy eBPF `kill` row at the same rate. The floor row is the benchmark killing the \
         program itself (SIGKILL through a pidfd) as soon as it reads the crossing line: the \
         reporting and teardown delay every row pays. procespy rows (grace 3s) let it grow only \
         once `procespy status` lists it as covered; the other watchdogs must find it while it \
         grows. The rate reached is what the program managed on this machine. RSS over time of \
         the median 512 MiB/s run of each watchdog: [reaction.svg](reaction.svg); every run's \
         series is in target/bench/reaction/. The `pss` row: the kernel's RSS crossing makes \
         procespy read `smaps_rollup` on its blocking pool and decide on the PSS (the grower's \
         memory is its own, so its PSS is its RSS but for its share of the libraries: a first \
         read just under the limit waits for 4 MiB more, a 64th of the limit); its cost is \
         this row's crossing→SIGTERM against the `kill` row's. monit acts on a process only from the second cycle \
         in which it sees it (its log shows \"process is running with pid\" first, the memory \
         test a cycle later), so with `set daemon 1` it often lets the program reach the cap. \
         The kill-now row with 4 threads: the program's `threads 4` command, four threads each \
         touching 1 MiB after another as fast as they can and printing the total after each; on \
         kernels that batch RSS counting per thread (before 6.2: up to 64 pages a thread before \
         the tracepoint fires) each thread's last pages are seen late.\n"
    )
}

fn print_run(row: &Row, i: usize, runs: usize, run: &Run) {
    let overshoot = match run.overshoot_mib() {
        v if v.is_infinite() => format!("capped at {CAP_MIB} MiB"),
        0.0 => "none".into(),
        v => format!("{v:.0} MiB"),
    };
    let time = match run.crossing_to_death_ms() {
        None => "died before the limit".into(),
        Some(ms) if ms.is_infinite() => "never stopped".into(),
        Some(ms) => format!("{ms:.2} ms"),
    };
    println!(
        "reaction: {:<22} {:>8} run {}/{runs}: overshoot {overshoot}, crossing→death {time}, signal {:?}",
        row.watchdog.short(),
        row.growth.short(),
        i + 1,
        run.signal,
    );
}

fn save_series(dir: &Path, watchdog: Watchdog, growth: Growth, i: usize, run: &Run) -> Result<()> {
    let mut text = String::from("ms,mib\n");
    for (ms, mib) in run.series() {
        text.push_str(&format!("{ms:.3},{mib}\n"));
    }
    if let Some((ms, mib)) = run.death_point() {
        text.push_str(&format!("# death,{ms:.3},{mib}\n"));
    }
    let path = dir.join(format!(
        "{}-{}-{}.csv",
        watchdog.short(),
        growth.short(),
        i + 1
    ));
    fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

fn fmt_mib(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(v) if v.is_infinite() => format!("capped (≥ {})", CAP_MIB - LIMIT_MIB),
        Some(0.0) => "none".into(),
        Some(v) => format!("{v:.1}"),
    }
}

fn fmt_ms(v: Option<f64>) -> String {
    match v {
        None => "— (none crossed)".into(),
        Some(v) if v.is_infinite() => "never stopped".into(),
        Some(v) => format!("{v:.2}"),
    }
}

fn table(rows: &[Row]) -> String {
    let mut table = Table::new(&[
        "watchdog",
        "rate asked → reached (MiB/s)",
        "overshoot median (MiB)",
        "crossing→SIGTERM median (ms)",
        "crossing→death median (ms)",
        "crossing→last line median (ms)",
        "overshoot vs eBPF kill",
        "time vs eBPF kill",
        "died ≤ limit / capped",
    ]);
    for row in rows {
        let base = rows
            .iter()
            .find(|r| r.watchdog == Watchdog::ProcespyKill && r.growth == row.growth);
        table.row(vec![
            row.watchdog.label().into(),
            row.growth_cell(),
            fmt_mib(row.overshoot()),
            fmt_ms(row.crossing_to_term()),
            fmt_ms(row.crossing_to_death()),
            fmt_ms(row.crossing_to_last_line()),
            ratio(row.overshoot(), base.and_then(Row::overshoot)),
            ratio(
                row.crossing_to_death(),
                base.and_then(Row::crossing_to_death),
            ),
            row.outcome_cell(),
        ]);
    }
    table.render()
}

/// The two targets, each with its verdict.
fn targets(rows: &[Row]) -> String {
    let find =
        |w: Watchdog, growth: Growth| rows.iter().find(|r| r.watchdog == w && r.growth == growth);
    let verdict = |met: Option<bool>| match met {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not measured",
    };
    let now = find(Watchdog::ProcespyKillNow, Growth::Rate(RATES[1])).and_then(Row::overshoot);
    let kill = find(Watchdog::ProcespyKill, Growth::Rate(RATES[0])).and_then(Row::crossing_to_term);
    let threads = find(Watchdog::ProcespyKillNow, THREADED)
        .map_or_else(|| "not measured".into(), Row::overshoot_range);
    format!(
        "Targets:\n- kill-now overshoot ≤ 1 MiB at 4 GiB/s: {} (median {})\n\
         - eBPF kill crossing→SIGTERM median < 2 ms at 512 MiB/s: {} (median {} ms)\n\
         - kill-now, 4 threads growing at once: overshoot {threads} (no target; the tests allow \
         4 MiB, one per thread)\n",
        verdict(now.map(|v| v <= 1.0)),
        fmt_mib(now),
        verdict(kill.map(|v| v < 2.0)),
        fmt_ms(kill),
    )
}

fn plot_lines(rows: &[Row], growth: Growth) -> Vec<Line> {
    rows.iter()
        .filter(|row| row.growth == growth && row.watchdog != Watchdog::Floor)
        .filter_map(|row| {
            let run = row.typical()?;
            Some(Line {
                label: row.watchdog.label().to_owned(),
                points: run.series(),
                death: (!run.capped).then(|| run.death_point()).flatten(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growths_parse_back_from_their_short_names() {
        for growth in [Growth::Rate(512), Growth::Rate(4096), THREADED] {
            assert_eq!(Growth::parse(&growth.short()), Some(growth));
        }
        assert_eq!(Growth::parse("fast"), None);
    }

    #[test]
    fn a_run_keeps_its_figures_through_json() {
        // Four threads' lines, the largest total not last.
        let progress: Vec<(u64, u64)> = (1..=300)
            .map(|mib| (mib * MIB, 1_000_000 * mib))
            .chain([(299 * MIB, 301_000_000)])
            .collect();
        let run = Run {
            base: 2 * MIB,
            progress,
            death_ns: 310_000_000,
            capped: false,
            signal: Some(libc::SIGKILL),
            term_ns: None,
        };
        let back = Run::from_json(&run.to_json()).unwrap();
        assert_eq!(back.progress.len(), 4);
        assert_eq!(back.last_rss(), 302 * MIB);
        assert_eq!(back.overshoot_mib(), run.overshoot_mib());
        assert_eq!(back.crossing_ns(), run.crossing_ns());
        assert_eq!(back.crossing_to_death_ms(), run.crossing_to_death_ms());
        assert_eq!(back.crossing_to_last_line_ms(), Some(46.0));
        assert_eq!(back.rate_reached(), run.rate_reached());
        assert_eq!((back.signal, back.term_ns), (Some(libc::SIGKILL), None));
    }
}
