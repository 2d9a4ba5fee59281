//! `cargo xtask bench history`: what the daemon's history costs, against
//! the budgets of issue 12, in one run. Parts:
//!
//! - idle: 1,000 covered sleeping processes, the daemon with its history
//!   off and on, alternating: CPU (its CPU clock) and VmRSS;
//! - churn: 1,000 covered processes whose RSS moves every second, the most
//!   the history writes: the daemon off and on, and the database's rows
//!   per table and tier over the window, with their bytes (`dbstat`),
//!   extrapolated to a day and to the 7 days the default tiers keep;
//! - reaction: the reaction benchmark's eBPF rows, history off and on;
//! - kill: a process grows past its limit and is killed, then
//!   `procespy history --plot` draws it into `bench/history.png`.
//!
//! `--quick` shortens everything and writes nothing.

use std::{
    collections::BTreeMap,
    io::Write,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{
    daemon::{self, Limit, Procespy},
    overhead::idle::{self, Idle},
    procs::{self, Group, Pidfd, TempDir, release_bin},
    reaction, report,
    stats::{Spread, Table, median, quotient, show_spread},
};
use crate::{build, cmd};

/// Covered processes in the idle and churn parts.
const PROCESSES: usize = 1000;
/// The name the churning processes run under.
const BREATHER: &str = "bench-breather";
/// KiB each churning process touches and gives back, a second each.
const BREATH_KIB: u64 = 256;
/// The killed process's name and limit in the kill part.
const LEAKER: &str = "bench-leaker";
const LEAKER_LIMIT_MIB: u64 = 200;
/// How long each default tier keeps its rows, in seconds (1 s for 10
/// minutes, 10 s for 6 hours, 1 min for 7 days).
const TIER_KEEP: [f64; 3] = [600.0, 6.0 * 3600.0, 7.0 * 86400.0];
/// What the tables without tiers keep: the longest tier's time.
const KEEP_ALL: f64 = 7.0 * 86400.0;
const DAY: f64 = 86400.0;
const MIB: f64 = (1u64 << 20) as f64;

/// The benchmark's settings.
struct Settings {
    /// Off/on pairs in the idle part.
    rounds: usize,
    /// Each idle window.
    idle: Duration,
    /// Each churn window.
    churn: Duration,
    /// Runs per reaction row.
    reaction_runs: usize,
    quick: bool,
}

impl Settings {
    fn parse(args: &[String]) -> Result<Self> {
        let mut settings = Settings {
            rounds: 3,
            idle: Duration::from_secs(60),
            churn: Duration::from_secs(180),
            reaction_runs: 8,
            quick: false,
        };
        for arg in args {
            match arg.as_str() {
                "--quick" => {
                    settings = Settings {
                        rounds: 1,
                        idle: Duration::from_secs(10),
                        churn: Duration::from_secs(30),
                        reaction_runs: 2,
                        quick: true,
                    }
                }
                other => bail!("unknown argument `{other}`; bench history takes --quick"),
            }
        }
        Ok(settings)
    }
}

/// A daemon in eBPF mode (scan_interval 5s, the default) whose one limit,
/// `action = "alert"`, covers the processes named `name`, with its history
/// on or off; returned once its start-up work is over.
fn daemon(name: &str, history: bool) -> Result<Procespy> {
    let config = daemon::config(
        "ebpf",
        "5s",
        &[Limit {
            name,
            max_memory: "1GiB",
            action: "alert",
            memory: "rss",
        }],
    );
    let daemon = Procespy::start_with_history(&config, false, history)?;
    wait_covering(&daemon, PROCESSES)?;
    daemon.wait_idle()?;
    Ok(daemon)
}

/// Waits until the daemon's status lists `n` covered processes.
fn wait_covering(daemon: &Procespy, n: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let covered = daemon.status()?["processes"].as_array().map_or(0, Vec::len);
        if covered >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("procespy covers {covered} of {n} processes after 60 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One off/on pair of daemon measurements, printed as a table row each.
fn row(table: &mut Table, label: &str, history: &str, runs: &[Idle]) {
    let shares: Vec<f64> = runs.iter().map(|r| r.share).collect();
    let slices: Vec<f64> = runs.iter().flat_map(|r| r.slices.clone()).collect();
    let rss: Vec<f64> = runs.iter().map(|r| r.rss[0]).collect();
    let anon: Vec<f64> = runs.iter().map(|r| r.rss[1]).collect();
    table.row(vec![
        label.into(),
        history.into(),
        show_spread(&shares, 4),
        show_spread(&slices, 4),
        show_spread(&rss, 1),
        show_spread(&anon, 1),
    ]);
}

fn daemon_table() -> Table {
    Table::new(&[
        "1,000 covered processes",
        "history",
        "CPU over each window (% of one core)",
        "per 5 s slice (% of one core)",
        "VmRSS at the end (MiB)",
        "RssAnon (MiB)",
    ])
}

/// A budget: what, the bound, the figure measured, and whether it holds.
struct Budget {
    what: &'static str,
    bound: &'static str,
    figure: String,
    met: Option<bool>,
}

fn render_budgets(budgets: &[Budget]) -> String {
    let mut table = Table::new(&["budget (issue 12)", "bound", "measured", "verdict"]);
    for budget in budgets {
        table.row(vec![
            budget.what.into(),
            budget.bound.into(),
            budget.figure.clone(),
            match budget.met {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "not measured",
            }
            .into(),
        ]);
    }
    table.render()
}

/// Part idle: off and on alternating, `rounds` times.
fn idle_part(settings: &Settings, budgets: &mut Vec<Budget>) -> Result<String> {
    let _sleepers = procs::sleepers(PROCESSES)?;
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..settings.rounds {
        for history in [false, true] {
            let daemon = daemon("sleep", history)?;
            let idle = idle::measure(&daemon, settings.idle)?;
            println!(
                "history: idle, round {}, history {history}: {:.4}% of a core, VmRSS {:.1} MiB",
                round + 1,
                idle.share,
                idle.rss[0]
            );
            let runs = if history { &mut on } else { &mut off };
            runs.push(idle);
        }
    }
    let mut table = daemon_table();
    row(&mut table, "sleeping", "off", &off);
    row(&mut table, "sleeping", "on", &on);
    let share = |runs: &[Idle]| median(&runs.iter().map(|r| r.share).collect::<Vec<_>>());
    let ratios: Vec<f64> = off
        .iter()
        .zip(&on)
        .filter_map(|(off, on)| quotient(Some(on.share), Some(off.share)))
        .collect();
    let ratio = quotient(share(&on), share(&off));
    budgets.push(Budget {
        what: "idle CPU, history on / off",
        bound: "≤ 1.2×",
        figure: format!(
            "{} (ratio of the medians; per round: {})",
            ratio.map_or("?".into(), |r| format!("{r:.2}×")),
            show_spread(&ratios, 2)
        ),
        met: ratio.map(|r| r <= 1.2),
    });
    let rss = median(&on.iter().map(|r| r.rss[0]).collect::<Vec<_>>());
    budgets.push(rss_budget("daemon VmRSS, history on, 1,000 sleeping", rss));
    Ok(format!(
        "\n### Idle\n\n{PROCESSES} `sleep` processes, all covered by one limit \
         (`action = \"alert\"`); eBPF mode, scan_interval 5s. One daemon at a time, history off \
         then on, {} rounds; each measured from 5 s after its start-up work is over, over {} s, \
         on its CPU clock (`clock_getcpuclockid`), read every {} s. Medians (range) over the \
         rounds; slices pooled.\n\n{}",
        settings.rounds,
        settings.idle.as_secs(),
        idle::SLICE.as_secs(),
        table.render()
    ))
}

fn rss_budget(what: &'static str, rss: Option<f64>) -> Budget {
    Budget {
        what,
        bound: "< 24 MiB",
        figure: rss.map_or("?".into(), |r| format!("{r:.1} MiB")),
        met: rss.map(|r| r < 24.0),
    }
}

/// What the history database holds at one moment.
#[derive(Debug, Default)]
struct DbState {
    /// Rows per (table, tier); tier `None` for the tables without tiers.
    rows: BTreeMap<(String, Option<u32>), u64>,
    /// Bytes of each table with its indexes (`dbstat`).
    bytes: BTreeMap<String, u64>,
    /// Bytes of the pages in use.
    used: u64,
}

impl DbState {
    /// Reads `path` with `sqlite3` (read-only, beside the writing daemon).
    fn read(path: &Path) -> Result<DbState> {
        let mut state = DbState::default();
        let counts = sqlite(
            path,
            "SELECT 'sample', tier, count(*) FROM sample GROUP BY tier \
             UNION ALL SELECT 'total', tier, count(*) FROM total GROUP BY tier \
             UNION ALL SELECT 'system', tier, count(*) FROM system GROUP BY tier \
             UNION ALL SELECT 'largest', '-', count(*) FROM largest \
             UNION ALL SELECT 'action', '-', count(*) FROM action \
             UNION ALL SELECT 'process', '-', count(*) FROM process;",
        )?;
        for line in counts.lines() {
            let [table, tier, n] = fields(line)?;
            state
                .rows
                .insert((table.into(), tier.parse().ok()), n.parse()?);
        }
        let bytes = sqlite(
            path,
            "SELECT m.tbl_name, '-', sum(d.pgsize) FROM dbstat d \
             JOIN sqlite_master m ON m.name = d.name GROUP BY m.tbl_name;",
        )?;
        for line in bytes.lines() {
            let [table, _, n] = fields(line)?;
            state.bytes.insert(table.into(), n.parse()?);
        }
        state.used = sqlite(
            path,
            "SELECT (page_count - freelist_count) * page_size \
             FROM pragma_page_count, pragma_freelist_count, pragma_page_size;",
        )?
        .trim()
        .parse()?;
        Ok(state)
    }

    fn rows(&self, table: &str) -> u64 {
        self.rows
            .iter()
            .filter(|((t, _), _)| t == table)
            .map(|(_, n)| n)
            .sum()
    }

    /// Bytes per row of `table`, its indexes included.
    fn row_bytes(&self, table: &str) -> Option<f64> {
        let rows = self.rows(table);
        (rows > 0).then(|| *self.bytes.get(table).unwrap_or(&0) as f64 / rows as f64)
    }
}

fn fields(line: &str) -> Result<[&str; 3]> {
    let parts: Vec<&str> = line.split('|').collect();
    parts
        .try_into()
        .map_err(|_| anyhow::anyhow!("sqlite3 printed {line:?}"))
}

/// `sqlite3 -readonly PATH SQL`'s output.
fn sqlite(path: &Path, sql: &str) -> Result<String> {
    let output = Command::new("sqlite3")
        .args(["-readonly", "-batch", "-noheader"])
        .arg(path)
        .arg(sql)
        .output()
        .context("running sqlite3 (apt-get install sqlite3)")?;
    if !output.status.success() {
        bail!(
            "sqlite3 failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// The database's growth, from two readings `seconds` apart.
struct Growth {
    table: Table,
    per_day: f64,
    at_7_days: f64,
    measured: f64,
}

/// Extrapolates: each (table, tier)'s rows a second over the window times
/// its bytes a row, kept as long as its tier keeps them.
fn growth(before: &DbState, after: &DbState, seconds: f64) -> Growth {
    let mut table = Table::new(&[
        "table",
        "tier",
        "rows at the start → end",
        "rows/s",
        "bytes/row (with indexes)",
        "kept",
        "MiB a day",
        "MiB at 7 days",
    ]);
    let (mut per_day, mut at_7_days) = (0.0, 0.0);
    for ((name, tier), &end) in &after.rows {
        let start = before
            .rows
            .get(&(name.clone(), *tier))
            .copied()
            .unwrap_or(0);
        let rate = end.saturating_sub(start) as f64 / seconds;
        let bytes = after.row_bytes(name).unwrap_or(0.0);
        let keep = tier.map_or(KEEP_ALL, |t| {
            TIER_KEEP.get(t as usize).copied().unwrap_or(0.0)
        });
        // A day's worth, once the tiers that keep less than a day are full.
        let day = if keep >= KEEP_ALL {
            rate * DAY * bytes
        } else {
            0.0
        };
        let week = rate * keep.min(KEEP_ALL) * bytes;
        per_day += day;
        at_7_days += week;
        table.row(vec![
            name.clone(),
            tier.map_or("—".into(), |t| t.to_string()),
            format!("{start} → {end}"),
            format!("{rate:.2}"),
            format!("{bytes:.0}"),
            match keep {
                k if k >= DAY => format!("{:.0} d", k / DAY),
                k if k >= 3600.0 => format!("{:.0} h", k / 3600.0),
                k => format!("{:.0} min", k / 60.0),
            },
            format!("{:.2}", day / MIB),
            format!("{:.1}", week / MIB),
        ]);
    }
    Growth {
        table,
        per_day,
        at_7_days,
        measured: after.used.saturating_sub(before.used) as f64 / seconds * DAY,
    }
}

/// Part churn: `PROCESSES` processes that touch and give back
/// `BREATH_KIB` KiB a second each.
fn churn_part(settings: &Settings, budgets: &mut Vec<Budget>) -> Result<String> {
    let scratch = TempDir::new("breathers")?;
    let exe = scratch.copy_exe(&release_bin("procespy-testprog"), BREATHER)?;
    let _breathers = procs::many(
        PROCESSES,
        &format!("{} --breathe {BREATH_KIB}", exe.display()),
        "churning processes",
    )?;
    let mut table = daemon_table();
    let off = {
        let daemon = daemon(BREATHER, false)?;
        idle::measure(&daemon, settings.churn)?
    };
    row(&mut table, "churning", "off", std::slice::from_ref(&off));
    let daemon = daemon(BREATHER, true)?;
    std::thread::sleep(idle::SLICE);
    let start = Instant::now();
    let before = DbState::read(daemon.history_path())?;
    let on = idle::measure(&daemon, settings.churn)?;
    let after = DbState::read(daemon.history_path())?;
    let seconds = start.elapsed().as_secs_f64();
    drop(daemon);
    row(&mut table, "churning", "on", std::slice::from_ref(&on));
    println!(
        "history: churn: off {:.3}%, on {:.3}% of a core; VmRSS on {:.1} MiB",
        off.share, on.share, on.rss[0]
    );
    let growth = growth(&before, &after, seconds);
    budgets.push(rss_budget(
        "daemon VmRSS, history on, 1,000 churning",
        Some(on.rss[0]),
    ));
    budgets.push(Budget {
        what: "database growth a day, 1,000 churning (the worst case)",
        bound: "< 50 MiB",
        figure: format!(
            "{:.1} MiB (extrapolated; {:.0} MiB at 7 days)",
            growth.per_day / MIB,
            growth.at_7_days / MIB
        ),
        met: Some(growth.per_day < 50.0 * MIB),
    });
    Ok(format!(
        "\n### Churn: the most the history writes\n\n{PROCESSES} copies of procespy-testprog \
         (`--breathe {BREATH_KIB}`) each touch {BREATH_KIB} KiB, hold them a second, give \
         them back, and again: every covered process's RSS moves every second, so every \
         process gets a row in every bucket of every tier (in the coarser tiers the move \
         exceeds the {} KiB noise). One limit covers them all (`alert` at 1 GiB); the default \
         tiers (1 s for 10 min, 10 s for 6 h, 1 min for 7 days). The daemon with its history \
         off, then on, each over {} s as in the idle part:\n\n{}\n\
         **Database growth.** Over the history-on window ({seconds:.0} s), the rows of each \
         table and tier are counted with `sqlite3` at its start and end, and each table's \
         bytes (its pages, indexes included, from `dbstat`) divided by its rows at the end. \
         Extrapolated: rows a second × bytes a row × how long the tier keeps them. What a day \
         adds, once the 1 s and 10 s tiers are full (after 6 h): the rows kept 7 days. The \
         pages in use grew at {:.0} MiB a day over the window itself, the 1 s tier (kept 10 \
         minutes) included.\n\n{}\n\
         Extrapolated: **{:.1} MiB a day**; **{:.0} MiB after 7 days** (every tier full).\n",
        64,
        settings.churn.as_secs(),
        table.render(),
        growth.measured / MIB,
        growth.table.render(),
        growth.per_day / MIB,
        growth.at_7_days / MIB,
    ))
}

/// Part kill: a leaker killed at its limit, its history read back and
/// plotted.
fn kill_part(quick: bool) -> Result<String> {
    let scratch = TempDir::new("leaker")?;
    let exe = scratch.copy_exe(&release_bin("procespy-testprog"), LEAKER)?;
    let limit = format!("{LEAKER_LIMIT_MIB}MiB");
    let config = daemon::config(
        "ebpf",
        "5s",
        &[Limit {
            name: LEAKER,
            max_memory: &limit,
            action: "kill",
            memory: "rss",
        }],
    );
    let daemon = Procespy::start(&config, false)?;
    let mut cmd = Command::new(&exe);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut leaker = Group::spawn(&mut cmd, LEAKER)?;
    let pid = leaker.pid();
    let pidfd = Pidfd::open(pid)?;
    let mut stdin = leaker.child().stdin.take().context("no stdin pipe")?;
    daemon.wait_covered(pid, Duration::from_secs(10))?;
    // Flat for a few seconds, then 8 MiB/s: killed about 25 s later.
    std::thread::sleep(Duration::from_secs(5));
    writeln!(stdin, "rate 8 400").context("telling the leaker to grow")?;
    if !pidfd.wait_death(Duration::from_secs(90))? {
        bail!("{LEAKER} (PID {pid}) was not killed within 90 s");
    }
    let history = |extra: &[&str]| -> Result<String> {
        let output = Command::new(release_bin("procespy"))
            .args(["history", "--pid", &pid.to_string(), "--since", "10m", "-c"])
            .arg(daemon.config_path())
            .args(extra)
            .output()
            .context("running procespy history")?;
        if !output.status.success() {
            bail!(
                "procespy history failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !history(&["--json"]).is_ok_and(|json| json.contains("SIGTERM")) {
        if Instant::now() > deadline {
            bail!("the history holds no SIGTERM for PID {pid} 20 s after its death");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let out = cmd::target_dir().join("bench");
    std::fs::create_dir_all(&out)?;
    let png = if quick {
        out.join("history.png")
    } else {
        report::bench_dir().join("history.png")
    };
    let table = history(&["--plot", &png.display().to_string()])?;
    let table_path = out.join("history-table.txt");
    std::fs::write(&table_path, &table)?;
    println!(
        "history: the leaker's history:\n{table}\nbench: wrote {} and {}",
        png.display(),
        table_path.display()
    );
    Ok(format!(
        "\n### A kill, read back\n\nA copy of procespy-testprog named `{LEAKER}`, covered by \
         a {LEAKER_LIMIT_MIB} MiB limit (`action = \"kill\"`), stays flat for 5 s, then grows \
         at 8 MiB/s until procespy kills it; then \
         `procespy history --pid PID --since 10m --plot bench/history.png` draws \
         [history.png](history.png) from the daemon's database (its table is in \
         target/bench/history-table.txt).\n"
    ))
}

/// The benchmark.
pub fn run(args: &[String]) -> Result<()> {
    let settings = Settings::parse(args)?;
    procs::require_root("history")?;
    if procs::which("sqlite3").is_none() {
        bail!("bench history reads the database with sqlite3: apt-get install sqlite3");
    }
    build::run(true)?;
    // The kill first: the shortest part, so that a failure shows early.
    let kill = kill_part(settings.quick).context("part kill")?;
    let mut budgets = Vec::new();
    let mut details = String::new();
    details.push_str(&idle_part(&settings, &mut budgets).context("part idle")?);
    details.push_str(&churn_part(&settings, &mut budgets).context("part churn")?);
    let (reaction, ratios) =
        reaction::history_rows(settings.reaction_runs).context("part reaction")?;
    details.push_str(&format!("\n### Reaction, history off and on\n\n{reaction}"));
    budgets.push(Budget {
        what: "reaction, eBPF rows, crossing→death history on / off",
        bound: "not slower",
        figure: Spread::of(&ratios).map_or("?".into(), |s| {
            format!(
                "{} over the {} rows (median, range)",
                s.show(2, "×"),
                ratios.len()
            )
        }),
        met: None,
    });
    details.push_str(&kill);
    let budgets = render_budgets(&budgets);
    println!("\n{budgets}");
    if settings.quick {
        println!("bench: --quick: bench/RESULTS.md left as it was");
        return Ok(());
    }
    let preamble = report::preamble("history: what remembering costs", "history", args);
    let body = format!(
        "{preamble}\n### Budgets (issue 12)\n\nMeasured in this run; the parts below say how. \
         The reaction row has no verdict: read its ratios against the spread of the runs \
         below.\n\n{budgets}{details}"
    );
    report::save_section("history", &body)
}
