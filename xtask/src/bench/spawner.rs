//! Short processes: `/bin/true` spawned and reaped (fork, exec, wait) from
//! several threads, at a set rate or as fast as they can.

use std::{
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow};

/// Spawns `/bin/true` from `threads` threads for `span`, at `rate` per
/// second in all (`None`: each thread as fast as it can); returns the PIDs
/// spawned.
pub fn spawn_true(threads: usize, rate: Option<f64>, span: Duration) -> Result<Vec<u32>> {
    let interval = rate.map_or(Duration::ZERO, |rate| {
        Duration::from_secs_f64(threads as f64 / rate)
    });
    let end = Instant::now() + span;
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let first = Instant::now() + interval.mul_f64(t as f64 / threads as f64);
            thread::spawn(move || paced(first, interval, end))
        })
        .collect();
    let mut pids = Vec::new();
    for worker in workers {
        let mine = worker
            .join()
            .map_err(|_| anyhow!("a spawning thread panicked"))??;
        pids.extend(mine);
    }
    Ok(pids)
}

/// One thread's share: a spawn every `interval` from `first` until `end`.
fn paced(first: Instant, interval: Duration, end: Instant) -> Result<Vec<u32>> {
    let mut due = first;
    let mut pids = Vec::new();
    while due < end {
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        } else if now - due > Duration::from_millis(100) {
            // Far behind: do not burst to catch up.
            due = now;
        }
        let mut child = Command::new("/bin/true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning /bin/true")?;
        pids.push(child.id());
        child.wait().context("reaping /bin/true")?;
        due += interval;
    }
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paced_storm_never_runs_ahead_of_its_rate() {
        // Two threads, one spawn every 20 ms each, offset by 10 ms: at most 30 in 300 ms.
        let pids = spawn_true(2, Some(100.0), Duration::from_millis(300)).unwrap();
        assert!((1..=30).contains(&pids.len()), "{} spawned", pids.len());
    }
}
