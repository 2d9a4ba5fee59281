//! `cargo xtask bench reaction --kernel LABEL`: the procespy eBPF rows on
//! this machine's kernel, then the same in a qemu guest of Debian's kernel
//! LABEL (the project's VM harness: the host's root read-only over 9p),
//! side by side in a section of their own.
//!
//! The guest runs this xtask again with `--in-guest`; it measures the rows
//! there and prints each run as one `reaction-run` line, which the host
//! reads back from the guest's output.

use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{Growth, LIMIT_MIB, Row, Run, Watchdog, fmt_mib, fmt_ms, measure};
use crate::{
    bench::{
        report,
        stats::{Spread, Table},
    },
    build, cmd, setup,
    vm::{self, GuestCommand},
};

/// The rows measured on both kernels.
const WATCHDOGS: [Watchdog; 2] = [Watchdog::ProcespyKill, Watchdog::ProcespyKillNow];
/// How much longer than on the host a guest's waits may take: under TCG
/// every instruction is translated and both vCPUs share one host thread.
const GUEST_SLOW: u32 = 6;
/// The whole guest run, boot included.
const GUEST_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// The prefix of the lines that carry a guest's runs.
const RUN_LINE: &str = "reaction-run ";

/// The guest's half: measures [`WATCHDOGS`] here and prints every run as a
/// [`RUN_LINE`] for the host.
pub(super) fn in_guest(runs: usize) -> Result<()> {
    measure(&WATCHDOGS, runs, GUEST_SLOW, |row, _, run| {
        println!(
            "{RUN_LINE}{} {} {}",
            row.watchdog.short(),
            row.growth.short(),
            run.to_json()
        );
        Ok(())
    })?;
    Ok(())
}

/// The host's half: builds, measures [`WATCHDOGS`] on the host, boots
/// kernel `label` to measure them there, and writes both to the section
/// `reaction-kernel-LABEL`.
pub(super) fn run(label: &str, runs: usize, args: &[String]) -> Result<()> {
    vm::Kernel::find(label)?;
    setup::vm()?;
    build::run(true)?;
    let kernel = vm::prepare(label)?;
    println!("==> reaction: the host's kernel");
    let host = measure(&WATCHDOGS, runs, 1, |_, _, _| Ok(()))?;

    println!(
        "==> reaction: kernel {label} ({}) under qemu",
        kernel.release
    );
    let xtask = std::env::current_exe().context("cannot find this xtask's executable")?;
    let mut command = GuestCommand::new([
        xtask.to_string_lossy().into_owned(),
        "bench".into(),
        "reaction".into(),
        "--".into(),
        "--in-guest".into(),
        "--runs".into(),
        runs.to_string(),
    ])
    .env("PROCESPY_GUEST", "1");
    command.cwd = cmd::root();
    command.timeout = GUEST_TIMEOUT;
    command.echo = true;
    let guest = vm::run(&kernel, &command)?;
    if let Some(failure) = guest.failure() {
        bail!("{label} ({}): {failure}", kernel.package);
    }
    if guest.exit_code != Some(0) {
        bail!(
            "the benchmark exited with {:?} in the guest of {label}",
            guest.exit_code
        );
    }
    let guest_rows = parse_runs(&guest.output)?;

    let table = table(&host, &guest_rows, label, &guest.uname_r);
    let verdicts = verdicts(&guest_rows, label);
    println!("\n{table}\n{verdicts}");
    let name = format!("reaction-kernel-{label}");
    let body = format!(
        "{}\n{}\n{table}\n{verdicts}",
        report::preamble(
            &format!("reaction on Debian's {label} kernel, under qemu, beside the host's"),
            "reaction",
            args
        ),
        method(runs, label, &guest.uname_r)
    );
    report::save_section(&name, &body)
}

/// The rows a guest's [`RUN_LINE`]s describe, in the order they came.
fn parse_runs(output: &str) -> Result<Vec<Row>> {
    let mut rows: Vec<Row> = Vec::new();
    for line in output.lines() {
        let Some(rest) = line.strip_prefix(RUN_LINE) else {
            continue;
        };
        let mut words = rest.splitn(3, ' ');
        let (Some(watchdog), Some(growth), Some(json)) = (words.next(), words.next(), words.next())
        else {
            bail!("a guest's run line is cut short: {line:?}");
        };
        let watchdog = Watchdog::from_short(watchdog)
            .with_context(|| format!("a guest's run names no watchdog: {line:?}"))?;
        let growth = Growth::parse(growth)
            .with_context(|| format!("a guest's run names no growth: {line:?}"))?;
        let run = Run::from_json(json)?;
        match rows
            .iter_mut()
            .find(|row| row.watchdog == watchdog && row.growth == growth)
        {
            Some(row) => row.runs.push(run),
            None => rows.push(Row {
                watchdog,
                growth,
                runs: vec![run],
            }),
        }
    }
    if rows.is_empty() {
        bail!("the guest printed no `{}` line", RUN_LINE.trim_end());
    }
    Ok(rows)
}

/// A median and range of `values` in ms, or what [`fmt_ms`] says.
fn ms_range(values: &[f64]) -> String {
    match Spread::of(values) {
        Some(s) if s.max.is_finite() => s.show(2, ""),
        spread => fmt_ms(spread.map(|s| s.median)),
    }
}

/// Host and guest rows interleaved: each watchdog and growth on the host,
/// then in the guest.
fn table(host: &[Row], guest: &[Row], label: &str, release: &str) -> String {
    let mut table = Table::new(&[
        "kernel",
        "watchdog",
        "growth asked → reached (MiB/s)",
        "overshoot median (range) (MiB)",
        "crossing→SIGTERM median (range) (ms)",
        "crossing→death median (range) (ms)",
        "died ≤ limit / capped",
    ]);
    let host_kernel = format!(
        "host, {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_else(|_| "?".into())
            .trim()
    );
    let guest_kernel = format!("{label} ({release}), TCG: times not comparable");
    for row in host {
        let twin = guest
            .iter()
            .find(|g| g.watchdog == row.watchdog && g.growth == row.growth);
        for (kernel, row) in [(&host_kernel, Some(row)), (&guest_kernel, twin)] {
            let Some(row) = row else { continue };
            table.row(vec![
                kernel.clone(),
                row.watchdog.label().into(),
                row.growth_cell(),
                row.overshoot_range(),
                ms_range(&row.times(Run::crossing_to_term_ms)),
                ms_range(&row.times(Run::crossing_to_death_ms)),
                row.outcome_cell(),
            ]);
        }
    }
    table.render()
}

/// What issue 9 asks of kill-now on the guest's kernel.
fn verdicts(guest: &[Row], label: &str) -> String {
    let kill_now = |growth: Growth| {
        guest
            .iter()
            .find(|r| r.watchdog == Watchdog::ProcespyKillNow && r.growth == growth)
    };
    let worst = |row: Option<&Row>| {
        row.and_then(|row| row.runs.iter().map(Run::overshoot_mib).reduce(f64::max))
    };
    let mut text = format!("On {label}:\n");
    for growth in super::RATE_GROWTHS {
        let max = worst(kill_now(growth));
        let met = match max {
            Some(v) if v < 1.0 => "met",
            Some(_) => "NOT met",
            None => "not measured",
        };
        text.push_str(&format!(
            "- kill-now stops one growing thread before limit + 1 MiB at {} MiB/s asked: {met} \
             (largest overshoot of the runs {})\n",
            growth.asked(),
            fmt_mib(max)
        ));
    }
    text.push_str(&format!(
        "- kill-now, 4 threads growing at once: overshoot {} (the tests allow 4 MiB)\n",
        kill_now(super::THREADED).map_or_else(|| "not measured".into(), Row::overshoot_range)
    ));
    text
}

/// How the figures were made, for RESULTS.md.
fn method(runs: usize, label: &str, release: &str) -> String {
    format!(
        "The procespy eBPF rows of `cargo xtask bench reaction` (the same test program, \
         {LIMIT_MIB} MiB limit, {runs} runs per row; see the reaction section for the figures' \
         definitions), first on this machine's kernel, then in a qemu guest of Debian's {label} \
         kernel ({release}) booted by the project's VM harness (`cargo xtask vm`: the host's root \
         read-only over 9p, 2 vCPUs, 2 GiB), which runs the same release binaries. The guest runs \
         under qemu's software emulation (TCG, both vCPUs on one host thread): **its times are \
         not comparable with the host's**, and neither is the growth rate it reaches; its \
         overshoots are what the kernel's accounting lets through (on {label}, before 6.2, a \
         thread counts up to 64 pages in its own counters before the mm, and the tracepoint, \
         see them). Overshoot: median (range) over the runs, \"none\" when every run died at or \
         below the limit; the program reports each whole MiB (each thread its own), so what it \
         touched after its last line, less than 1 MiB a thread, is not counted.\n"
    )
}
