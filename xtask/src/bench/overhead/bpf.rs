//! Part `bpf`: what `procespy_rss` costs per `rss_stat` event, by the
//! kernel's BPF statistics, against the floor program attached beside it:
//! both run at every fault of the same runs.

use std::{thread, time::Duration};

use anyhow::{Result, bail};

use super::{
    Env, Part,
    goals::{Bound, Goal},
};
use crate::{
    bench::{
        bpfstats::{BpfStats, Runs},
        daemon::Procespy,
        faulter::{self, Faulter},
        floor::{self, Floor},
        procs::TempDir,
        stats::{Spread, Table, show_spread},
    },
    ebpf,
};

/// procespy's program on `rss_stat`.
const RSS: &str = "procespy_rss";
/// The name of the faulter's copy that no limit covers.
const STRANGER: &str = "bench-stranger";

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
            Coverage::Uncovered => "uncovered: `bench-stranger`",
            Coverage::Covered => "covered: `bench-faulter` (8GiB, alert)",
        }
    }
}

/// How long the background is watched before and after each touch.
const BACKGROUND: Duration = Duration::from_secs(1);

/// One program's runs over one sample.
#[derive(Clone, Copy)]
struct Program {
    /// While the faulter touched its memory: its faults and the machine's.
    touch: Runs,
    /// The second before and the second after: the machine's alone.
    background: Runs,
}

impl Program {
    /// ns per event of the faulter's own faults: one per page touched.
    fn faulter_ns(self) -> Option<f64> {
        self.touch.ns_per_own_run(faulter::PAGES, self.background)
    }
}

/// The floor's and `procespy_rss`'s runs over one 2 GiB touch.
struct Sample {
    floor: Program,
    rss: Program,
}

impl Sample {
    /// `procespy_rss`'s ns per fault of the faulter over the floor's.
    fn ratio(&self) -> Option<f64> {
        Some(self.rss.faulter_ns()? / self.floor.faulter_ns()?)
    }

    /// The same, over all the events of the touch (the machine's included).
    fn raw_ratio(&self) -> Option<f64> {
        Some(self.rss.touch.ns_per_run()? / self.floor.touch.ns_per_run()?)
    }

    /// The share of the touch's events that were the faulter's, in %.
    fn faulter_share(&self) -> f64 {
        faulter::PAGES as f64 / self.rss.touch.count.max(1) as f64 * 100.0
    }
}

/// One touch by the faulter `exe` beside `daemon`, whose limits cover it
/// or not.
fn sample(
    daemon: &Procespy,
    stats: &BpfStats,
    exe: &std::path::Path,
    coverage: Coverage,
) -> Result<Sample> {
    let mut faulter = Faulter::start(exe)?;
    if coverage == Coverage::Covered {
        daemon.wait_covered(faulter.pid(), Duration::from_secs(10))?;
    }
    let pids = [std::process::id(), daemon.pid()];
    let first = stats.snapshot(&pids)?;
    thread::sleep(BACKGROUND);
    let before = stats.snapshot(&pids)?;
    faulter.touch()?;
    let after = stats.snapshot(&pids)?;
    thread::sleep(BACKGROUND);
    let last = stats.snapshot(&pids)?;
    let (touch, quiet) = (
        after.since(&before),
        [before.since(&first), last.since(&after)],
    );
    let program = |name: &str| Program {
        touch: touch.get(name),
        background: quiet[0].get(name) + quiet[1].get(name),
    };
    let sample = Sample {
        floor: program(floor::PROGRAM),
        rss: program(RSS),
    };
    for (name, runs) in [
        (floor::PROGRAM, sample.floor.touch),
        (RSS, sample.rss.touch),
    ] {
        if runs.count < faulter::PAGES {
            bail!(
                "{name} ran {} times while the faulter touched {} pages: is it attached?",
                runs.count,
                faulter::PAGES
            );
        }
    }
    Ok(sample)
}

pub fn run(env: &Env) -> Result<Part> {
    let runs = env.settings.bpf_runs;
    let stats = BpfStats::enable(&ebpf::object_path())?;
    let _floor = Floor::attach()?;
    let scratch = TempDir::new("bpf")?;
    let exes = [
        faulter::install(&scratch, STRANGER)?,
        faulter::install(&scratch, faulter::NAME)?,
    ];
    let daemon = env.daemon(Some((faulter::NAME, "8GiB")), false)?;
    let mut samples: [Vec<Sample>; 2] = Default::default();
    for run in 0..runs {
        for (i, coverage) in Coverage::ALL.into_iter().enumerate() {
            let s = sample(&daemon, &stats, &exes[i], coverage)?;
            println!(
                "overhead: bpf run {}/{runs}, {:<44} {} events ({:.1}% the faulter's), \
                 floor {:.1} ns, {RSS} {:.1} ns: {:.2}× ({:.2}× uncorrected)",
                run + 1,
                coverage.label(),
                s.rss.touch.count,
                s.faulter_share(),
                s.floor.faulter_ns().unwrap_or(f64::NAN),
                s.rss.faulter_ns().unwrap_or(f64::NAN),
                s.ratio().unwrap_or(f64::NAN),
                s.raw_ratio().unwrap_or(f64::NAN),
            );
            samples[i].push(s);
        }
    }

    let mut table = Table::new(&[
        "procespy's daemon",
        "events in the touch",
        "the faulter's share (%)",
        "floor (ns/event)",
        "procespy_rss (ns/event)",
        "procespy_rss − floor (ns)",
        "procespy_rss vs floor (×)",
        "uncorrected (×)",
        "other processes' events: floor / procespy_rss (ns)",
    ]);
    let mut goals = Vec::new();
    for (coverage, samples) in Coverage::ALL.into_iter().zip(&samples) {
        let column = |f: &dyn Fn(&Sample) -> Option<f64>| -> Vec<f64> {
            samples.iter().filter_map(f).collect()
        };
        let ratios = column(&Sample::ratio);
        let background =
            |f: fn(&Sample) -> Program| show_spread(&column(&|s| f(s).background.ns_per_run()), 0);
        table.row(vec![
            coverage.label().into(),
            show_spread(&column(&|s| Some(s.rss.touch.count as f64)), 0),
            show_spread(&column(&|s| Some(s.faulter_share())), 1),
            show_spread(&column(&|s| s.floor.faulter_ns()), 1),
            show_spread(&column(&|s| s.rss.faulter_ns()), 1),
            show_spread(
                &column(&|s| Some(s.rss.faulter_ns()? - s.floor.faulter_ns()?)),
                1,
            ),
            show_spread(&ratios, 2),
            show_spread(&column(&Sample::raw_ratio), 2),
            format!("{} / {}", background(|s| s.floor), background(|s| s.rss)),
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
            spread.map_or("?".into(), |s| s.show(2, "×")),
        ));
    }
    let text = format!(
        "\n### BPF statistics: the rss_stat program\n\n\
         The kernel's own accounting (`kernel.bpf_stats_enabled` on for this part, put back \
         after): each program's run count and run time, read through aya before and after the \
         faulter touches {mib} MiB ({pages} pages, one `rss_stat` event each); {runs} runs per \
         row, rows alternating run by run. One daemon for the part, whose limits cover \
         `bench-faulter` (8GiB, alert) and `bench-bystander`, a sleeping process (so that the \
         kernel's map of covered processes is never empty); the uncovered rows run the same \
         faulter as `bench-stranger`. The floor is \
         `procespy_floor`, an empty tp_btf program on `rss_stat` from the same eBPF object, which \
         the bench attaches itself for the whole part: it runs at every event beside \
         `procespy_rss`, so each run compares the two on the very same faults. Its time is the \
         kernel's clock reads around a run plus entering the program.\n\n\
         The statistics count every process's events, and the rest of this shared machine makes \
         many (tens of thousands a second when others build), each dearer than the faulter's \
         (other caches, other maps: the last column). So the faulter's cost is told apart: of \
         the touch's events, all but its {pages} are the machine's, and those are charged at \
         what each program cost per event in the second before and the second after the touch \
         (the faulter idle); the rest of the run time, over {pages}, is the faulter's ns per \
         event. \"uncorrected\" is the ratio over all the touch's events. Medians (range over \
         the runs).\n\n{}",
        table.render(),
        mib = faulter::TOUCHED_MIB,
        pages = faulter::PAGES,
    );
    Ok(Part { goals, text })
}
