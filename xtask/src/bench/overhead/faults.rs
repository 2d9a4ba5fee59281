//! Part `faults`: the wall time of the faulter's 2 GiB, with nothing
//! attached, with the floor program alone, and with procespy. Wall time on
//! this machine is noise-bound; the `bpf` part measures the programs
//! themselves.

use std::time::Duration;

use anyhow::Result;

use super::{Env, Part};
use crate::bench::{
    faulter::{self, Faulter},
    floor::Floor,
    procs::TempDir,
    stats::{Table, median, ratio, show_spread},
};

/// What is attached while the faulter runs.
#[derive(Clone, Copy)]
enum Attached {
    Nothing,
    Floor,
    Uncovered,
    Covered,
}

impl Attached {
    const ALL: [Attached; 4] = [
        Attached::Nothing,
        Attached::Floor,
        Attached::Uncovered,
        Attached::Covered,
    ];

    fn label(self) -> &'static str {
        match self {
            Attached::Nothing => "nothing attached",
            Attached::Floor => "the floor program alone",
            Attached::Uncovered => "procespy, its limit covers another process",
            Attached::Covered => "procespy covering the faulter (8GiB, alert)",
        }
    }
}

/// Seconds the faulter takes to touch its 2 GiB under `attached`.
fn run_once(env: &Env, exe: &std::path::Path, attached: Attached) -> Result<f64> {
    let _floor = matches!(attached, Attached::Floor)
        .then(Floor::attach)
        .transpose()?;
    let daemon = match attached {
        Attached::Nothing | Attached::Floor => None,
        Attached::Uncovered => Some(env.daemon(None, false)?),
        Attached::Covered => Some(env.daemon(Some((faulter::NAME, "8GiB")), false)?),
    };
    let mut faulter = Faulter::start(exe)?;
    if let (Attached::Covered, Some(daemon)) = (attached, &daemon) {
        daemon.wait_covered(faulter.pid(), Duration::from_secs(10))?;
    }
    faulter.touch()
}

pub fn run(env: &Env) -> Result<Part> {
    let runs = env.settings.fault_runs;
    let scratch = TempDir::new("faults")?;
    let exe = faulter::install(&scratch, faulter::NAME)?;
    let mut times = vec![Vec::new(); Attached::ALL.len()];
    for run in 0..runs {
        for (i, attached) in Attached::ALL.into_iter().enumerate() {
            let seconds = run_once(env, &exe, attached)?;
            println!(
                "overhead: faults run {}/{runs}: {:<44} {seconds:.3} s",
                run + 1,
                attached.label()
            );
            times[i].push(seconds);
        }
    }
    let base = median(&times[0]);
    let mut table = Table::new(&["attached", "wall (s)", "vs nothing"]);
    for (attached, times) in Attached::ALL.into_iter().zip(&times) {
        table.row(vec![
            attached.label().into(),
            show_spread(times, 3),
            ratio(median(times), base),
        ]);
    }
    let text = format!(
        "\n### Page-fault path, wall time\n\n\
         The faulter touches {} MiB in 1 MiB mappings as fast as it can; wall time from its \
         `rate` command to its answer, {runs} runs per row, rows alternating run by run. Medians \
         (range); ratios of medians. BPF statistics off.\n\n{}",
        faulter::TOUCHED_MIB,
        table.render()
    );
    Ok(Part {
        goals: Vec::new(),
        text,
    })
}
