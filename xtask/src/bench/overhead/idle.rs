//! Part `idle`: the daemon's CPU and RSS beside 1,000 sleeping processes,
//! when nothing happens but its scheduled examinations.

use std::{
    thread,
    time::{Duration, Instant},
};

use anyhow::Result;

use super::{
    Env, Part,
    goals::{Bound, Goal},
};
use crate::bench::{
    daemon::Procespy,
    procs,
    stats::{Table, show_spread},
};

const SLEEPERS: usize = 1000;
/// One slice of the window: the daemon's scan_interval, so that each slice
/// holds one examination.
pub(in crate::bench) const SLICE: Duration = Duration::from_secs(5);

/// One daemon's idle window.
pub(in crate::bench) struct Idle {
    /// % of one core over the whole window.
    pub(in crate::bench) share: f64,
    /// % of one core in each slice.
    pub(in crate::bench) slices: Vec<f64>,
    /// VmRSS, RssAnon, RssFile, RssShmem at the end, in MiB.
    pub(in crate::bench) rss: [f64; 4],
}

/// Measures `daemon` over `window`, from one [`SLICE`] after its start-up.
pub(in crate::bench) fn measure(daemon: &Procespy, window: Duration) -> Result<Idle> {
    let pid = daemon.pid();
    thread::sleep(SLICE);
    let start = Instant::now();
    let first = procs::cpu_seconds(pid)?;
    let (mut last, mut last_at) = (first, start);
    let mut slices = Vec::new();
    while last_at - start < window {
        thread::sleep(SLICE.saturating_sub(last_at.elapsed()));
        let (now, now_at) = (procs::cpu_seconds(pid)?, Instant::now());
        slices.push((now - last) / (now_at - last_at).as_secs_f64() * 100.0);
        (last, last_at) = (now, now_at);
    }
    let share = (last - first) / (last_at - start).as_secs_f64() * 100.0;
    let mut rss = [0.0; 4];
    for (slot, key) in rss
        .iter_mut()
        .zip(["VmRSS", "RssAnon", "RssFile", "RssShmem"])
    {
        *slot = procs::status_bytes(pid, key)? as f64 / f64::from(1 << 20);
    }
    Ok(Idle { share, slices, rss })
}

pub fn run(env: &Env) -> Result<Part> {
    let window = env.settings.idle;
    let _sleepers = procs::sleepers(SLEEPERS)?;
    let mut table = Table::new(&[
        "procespy eBPF, scan_interval 5s",
        "CPU over the window (% of one core)",
        "per 5 s slice (% of one core)",
        "VmRSS (MiB)",
        "anon / file / shmem (MiB)",
    ]);
    let mut worst: Option<(f64, &str)> = None;
    for covers_sleeps in [false, true] {
        let (label, daemon) = if covers_sleeps {
            (
                "a limit covering the 1,000 sleeps",
                env.daemon(Some(("sleep", "1GiB")), false)?,
            )
        } else {
            ("a limit covering another process", env.daemon(None, false)?)
        };
        let idle = measure(&daemon, window)?;
        drop(daemon);
        let [vm, anon, file, shmem] = idle.rss;
        println!(
            "overhead: idle, {label}: {:.4}% of a core, VmRSS {vm:.1} MiB",
            idle.share
        );
        table.row(vec![
            label.into(),
            format!("{:.4}", idle.share),
            show_spread(&idle.slices, 4),
            format!("{vm:.1}"),
            format!("{anon:.1} / {file:.1} / {shmem:.1}"),
        ]);
        if worst.is_none_or(|(share, _)| idle.share > share) {
            worst = Some((idle.share, label));
        }
    }
    let goal = Goal::new(
        "idle CPU with 1,000 processes",
        Bound::AtMost(0.05),
        "% of a core",
        worst.map(|(share, _)| share),
        worst.map_or("?".into(), |(share, label)| format!("{label}: {share:.3}%")),
    );
    let text = format!(
        "\n### Idle\n\n\
         {SLEEPERS} extra `sleep` processes; one daemon per row, measured one after the other, \
         from 5 s after its start-up work is over (its CPU grew by less than 2 ms in a second). CPU: its CPU clock (`clock_getcpuclockid`: \
         the scheduler's runtime of all its threads, to the nanosecond, not /proc/PID/stat's 10 ms \
         ticks) over {} s, read every {} s (one scheduled examination per slice: median (range) \
         of the slices); VmRSS at the end.\n\n{}",
        window.as_secs(),
        SLICE.as_secs(),
        table.render()
    );
    Ok(Part {
        goals: vec![goal],
        text,
    })
}
