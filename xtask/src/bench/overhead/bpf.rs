//! Part `bpf`: what `procespy_rss` costs per `rss_stat` event, by the
//! kernel's BPF statistics, against the floor program attached beside it:
//! both run at every fault of the same runs.

use std::time::Duration;

use anyhow::{Result, bail};

use super::{
    Env, Part,
    goals::{Bound, Goal},
    start_daemon,
};
use crate::{
    bench::{
        bpfstats::{BpfStats, Runs},
        faulter::{self, Faulter},
        floor::{self, Floor},
        procs::TempDir,
        stats::{Spread, Table, show_spread},
    },
    ebpf,
};

/// procespy's program on `rss_stat`.
const RSS: &str = "procespy_rss";

/// Whether the daemon covers the faulter.
#[derive(Clone, Copy, PartialEq)]
enum Coverage {
    Uncovered,
    Covered,
}

impl Coverage {
    const ALL: [Coverage; 2] = [Coverage::Uncovered, Coverage::Covered];

    fn label(self) -> &'static str {
        match self {
            Coverage::Uncovered => "uncovered: the limit covers another process",
            Coverage::Covered => "covered: the faulter, 8GiB, alert",
        }
    }
}

/// The two programs' runs over one 2 GiB touch.
struct Sample {
    floor: Runs,
    rss: Runs,
}

impl Sample {
    /// `procespy_rss`'s ns per event over the floor's.
    fn ratio(&self) -> Option<f64> {
        Some(self.rss.ns_per_run()? / self.floor.ns_per_run()?)
    }
}

fn sample(
    env: &Env,
    stats: &BpfStats,
    exe: &std::path::Path,
    coverage: Coverage,
) -> Result<Sample> {
    let daemon = match coverage {
        Coverage::Uncovered => env.uncovered_daemon()?,
        Coverage::Covered => start_daemon(faulter::NAME, "8GiB", false)?,
    };
    let mut faulter = Faulter::start(exe)?;
    if coverage == Coverage::Covered {
        daemon.wait_covered(faulter.pid(), Duration::from_secs(10))?;
    }
    let pids = [std::process::id(), daemon.pid()];
    let before = stats.snapshot(&pids)?;
    faulter.touch()?;
    let runs = stats.snapshot(&pids)?.since(&before);
    let sample = Sample {
        floor: runs.get(floor::PROGRAM),
        rss: runs.get(RSS),
    };
    if sample.rss.count == 0 || sample.floor.count == 0 {
        bail!(
            "{RSS} ran {} times and {} {} times: are both attached?",
            sample.rss.count,
            floor::PROGRAM,
            sample.floor.count
        );
    }
    Ok(sample)
}

pub fn run(env: &Env) -> Result<Part> {
    let runs = env.settings.bpf_runs;
    let stats = BpfStats::enable(&ebpf::object_path())?;
    let _floor = Floor::attach()?;
    let scratch = TempDir::new("bpf")?;
    let exe = faulter::install(&scratch)?;
    let mut samples: [Vec<Sample>; 2] = Default::default();
    for run in 0..runs {
        for (i, coverage) in Coverage::ALL.into_iter().enumerate() {
            let s = sample(env, &stats, &exe, coverage)?;
            println!(
                "overhead: bpf run {}/{runs}, {:<44} {} events, floor {:.1} ns, {RSS} {:.1} ns: {:.2}×",
                run + 1,
                coverage.label(),
                s.rss.count,
                s.floor.ns_per_run().unwrap_or(f64::NAN),
                s.rss.ns_per_run().unwrap_or(f64::NAN),
                s.ratio().unwrap_or(f64::NAN),
            );
            samples[i].push(s);
        }
    }

    let mut table = Table::new(&[
        "procespy's daemon",
        "events per run",
        "of which the faulter's pages",
        "floor (ns/event)",
        "procespy_rss (ns/event)",
        "procespy_rss − floor (ns)",
        "procespy_rss vs floor",
    ]);
    let mut goals = Vec::new();
    for (coverage, samples) in Coverage::ALL.into_iter().zip(&samples) {
        let column = |f: &dyn Fn(&Sample) -> Option<f64>| -> Vec<f64> {
            samples.iter().filter_map(f).collect()
        };
        let events = column(&|s| Some(s.rss.count as f64));
        let ratios = column(&Sample::ratio);
        table.row(vec![
            coverage.label().into(),
            show_spread(&events, 0),
            show_spread(
                &column(&|s| Some(faulter::PAGES as f64 / s.rss.count as f64 * 100.0)),
                1,
            ) + "%",
            show_spread(&column(&|s| s.floor.ns_per_run()), 1),
            show_spread(&column(&|s| s.rss.ns_per_run()), 1),
            show_spread(
                &column(&|s| Some(s.rss.ns_per_run()? - s.floor.ns_per_run()?)),
                1,
            ),
            show_spread(&ratios, 2) + "×",
        ]);
        let (figure, limit) = match coverage {
            Coverage::Uncovered => ("rss_stat program, uncovered, vs the empty floor", 1.15),
            Coverage::Covered => ("rss_stat program, covered, vs the empty floor", 2.0),
        };
        let spread = Spread::of(&ratios);
        goals.push(Goal::new(
            figure,
            Bound::AtMost(limit),
            "×",
            spread.map(|s| s.median),
            show_spread(&ratios, 2) + "×",
        ));
    }
    let text = format!(
        "\n### BPF statistics: the rss_stat program\n\n\
         The kernel's own accounting (`kernel.bpf_stats_enabled` on for this part, put back \
         after): each program's run count and run time, read through aya before and after the \
         faulter touches {mib} MiB ({pages} pages); {runs} runs per row, rows alternating run by \
         run, a fresh daemon each run. The floor is `procespy_floor`, an empty tp_btf program on \
         `rss_stat` from the same eBPF object, which the bench attaches itself for the whole part: \
         it runs at every fault beside `procespy_rss`, so each run's ratio compares the two on the \
         very same events. Its time is the kernel's own clock reads around a run plus entering the \
         program. Events are counted machine-wide: the other processes' faults are in them too \
         (uncovered for both daemons); the third column says how much of them the faulter made. \
         Uncovered: the daemon's one limit covers `bench-bystander`, a sleeping process, so the \
         kernel's map of covered processes is not empty. Medians, with the range over the runs in \
         brackets.\n\n{}",
        table.render(),
        mib = faulter::TOUCHED_MIB,
        pages = faulter::PAGES,
    );
    Ok(Part { goals, text })
}
