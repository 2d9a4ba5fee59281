//! Whether the daemon saw every process of a storm: its `-v --log-format
//! json` log has an `exec` and an `exit` line for each PID spawned.

use std::{
    collections::HashMap,
    fs,
    io::{BufRead, BufReader},
    path::Path,
};

use anyhow::{Context, Result};
use serde_json::Value;

/// How many `exec` and `exit` lines the log has for each PID.
#[derive(Debug, Default)]
pub struct Seen {
    exec: HashMap<u32, usize>,
    exit: HashMap<u32, usize>,
}

impl Seen {
    /// Reads the daemon's log.
    pub fn read(log: &Path) -> Result<Self> {
        let file = fs::File::open(log).with_context(|| format!("opening {}", log.display()))?;
        let mut seen = Seen::default();
        for line in BufReader::new(file).lines() {
            seen.add(&line?);
        }
        Ok(seen)
    }

    /// Counts one log line (JSON; other lines are ignored).
    fn add(&mut self, line: &str) {
        let Ok(value) = serde_json::from_str::<Value>(line) else {
            return;
        };
        // tracing's JSON puts an event's fields under `fields`.
        let field = |name: &str| {
            value
                .get(name)
                .or_else(|| value.get("fields").and_then(|f| f.get(name)))
        };
        let counts = match field("event").and_then(Value::as_str) {
            Some("exec") => &mut self.exec,
            Some("exit") => &mut self.exit,
            _ => return,
        };
        if let Some(pid) = field("pid").and_then(Value::as_u64) {
            *counts.entry(pid as u32).or_default() += 1;
        }
    }

    /// The spawned PIDs without an `exec` line: how many, and the first ten.
    pub fn missed_execs(&self, spawned: &[u32]) -> Missed {
        missed(spawned, &self.exec)
    }

    /// The spawned PIDs without an `exit` line: how many, and the first ten.
    pub fn missed_exits(&self, spawned: &[u32]) -> Missed {
        missed(spawned, &self.exit)
    }
}

/// Spawned processes without their line.
#[derive(Debug, PartialEq, Eq)]
pub struct Missed {
    pub count: usize,
    pub first: Vec<u32>,
}

/// A PID spawned n times (PIDs wrap) needs n lines.
fn missed(spawned: &[u32], lines: &HashMap<u32, usize>) -> Missed {
    let mut times: HashMap<u32, usize> = HashMap::new();
    for &pid in spawned {
        *times.entry(pid).or_default() += 1;
    }
    let mut lacking: Vec<(u32, usize)> = times
        .into_iter()
        .map(|(pid, n)| (pid, n.saturating_sub(lines.get(&pid).copied().unwrap_or(0))))
        .filter(|&(_, lacking)| lacking > 0)
        .collect();
    lacking.sort_unstable();
    Missed {
        count: lacking.iter().map(|&(_, n)| n).sum(),
        first: lacking.into_iter().take(10).map(|(pid, _)| pid).collect(),
    }
}

/// PIDs spawned more than once (the PID space wrapped during the storm).
pub fn reused(spawned: &[u32]) -> usize {
    let mut times: HashMap<u32, usize> = HashMap::new();
    for &pid in spawned {
        *times.entry(pid).or_default() += 1;
    }
    times.values().filter(|&&n| n > 1).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_and_exit_lines_are_counted_by_pid() {
        let mut seen = Seen::default();
        for line in [
            r#"{"level":"DEBUG","fields":{"event":"exec","pid":10,"name":"true","message":"exec"}}"#,
            r#"{"level":"DEBUG","fields":{"event":"exit","pid":10,"message":"exit"}}"#,
            r#"{"level":"DEBUG","event":"exec","pid":11}"#,
            r#"{"level":"DEBUG","fields":{"event":"fork","pid":12}}"#,
            "not json",
        ] {
            seen.add(line);
        }
        let spawned = [10, 11, 12, 10];
        assert_eq!(
            seen.missed_execs(&spawned),
            Missed {
                count: 2,
                first: vec![10, 12]
            }
        );
        assert_eq!(
            seen.missed_exits(&spawned),
            Missed {
                count: 3,
                first: vec![10, 11, 12]
            }
        );
        assert_eq!(reused(&spawned), 1);
    }
}
