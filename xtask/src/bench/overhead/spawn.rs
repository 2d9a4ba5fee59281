//! Part `spawn`: the most fork+exec+wait a second this machine reaches,
//! with and without procespy.

use anyhow::Result;

use super::{
    Env, Part,
    goals::{Bound, Goal},
};
use crate::bench::{
    spawner::spawn_true,
    stats::{Table, median, quotient, ratio, show_spread},
};

/// Spawns per second, `/bin/true` from two threads per CPU as fast as they
/// go (while one thread waits for its child, another spawns).
fn spawns_per_second(span: std::time::Duration) -> Result<f64> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let start = std::time::Instant::now();
    let pids = spawn_true(2 * cpus, None, span)?;
    Ok(pids.len() as f64 / start.elapsed().as_secs_f64())
}

pub fn run(env: &Env) -> Result<Part> {
    let (runs, span) = (env.settings.spawn_runs, env.settings.spawn);
    let mut rates = [Vec::new(), Vec::new()];
    for run in 0..runs {
        for (with, rates) in [false, true].into_iter().zip(&mut rates) {
            let daemon = with.then(|| env.daemon(None, false)).transpose()?;
            let rate = spawns_per_second(span)?;
            drop(daemon);
            println!(
                "overhead: spawn run {}/{runs} {}: {rate:.0}/s",
                run + 1,
                if with { "with procespy" } else { "without" }
            );
            rates.push(rate);
        }
    }
    let (without, with) = (median(&rates[0]), median(&rates[1]));
    let mut table = Table::new(&["", "spawns per second", "vs without"]);
    table.row(vec![
        "without procespy".into(),
        show_spread(&rates[0], 0),
        "—".into(),
    ]);
    table.row(vec![
        "procespy eBPF, a limit covering another process".into(),
        show_spread(&rates[1], 0),
        ratio(with, without),
    ]);
    let value = quotient(with, without);
    let goal = Goal::new(
        "spawn throughput with / without procespy, interleaved",
        Bound::AtLeast(0.97),
        "",
        value,
        value.map_or("?".into(), |v| format!("{v:.3}")),
    );
    let text = format!(
        "\n### Spawn throughput\n\n\
         `/bin/true` spawned and reaped (fork, exec, wait) from two threads per CPU as fast as \
         they go, for {} s per run; {runs} runs each, with and without alternating run by run, a \
         fresh daemon each run. Medians (range); the ratio is of the medians.\n\n{}",
        span.as_secs(),
        table.render()
    );
    Ok(Part {
        goals: vec![goal],
        text,
    })
}
