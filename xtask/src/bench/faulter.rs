//! The fault-path workload: a copy of procespy-testprog (named
//! `bench-faulter`, or as the caller likes) touches 2 GiB in 1 MiB mappings
//! as fast as it can, one page fault (and one `rss_stat` event) per 4 KiB
//! page.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{ChildStdin, ChildStdout, Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use super::procs::{Group, TempDir, release_bin};

/// The faulter's usual name (its comm): what a limit names to cover it.
pub const NAME: &str = "bench-faulter";
/// MiB touched by one [`Faulter::touch`].
pub const TOUCHED_MIB: u64 = 2048;
/// Pages touched by one [`Faulter::touch`].
pub const PAGES: u64 = TOUCHED_MIB * 256;

/// Copies procespy-testprog into `dir` as `name`.
pub fn install(dir: &TempDir, name: &str) -> Result<PathBuf> {
    dir.copy_exe(&release_bin("procespy-testprog"), name)
}

/// A running faulter, answering commands on its stdin; killed on drop.
pub struct Faulter {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    group: Group,
}

impl Faulter {
    /// Starts `exe` (from [`install`]) and waits until it answers.
    pub fn start(exe: &Path) -> Result<Self> {
        let mut cmd = Command::new(exe);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut group = Group::spawn(&mut cmd, "the faulter")?;
        let stdin = group.child().stdin.take().context("no stdin pipe")?;
        let stdout = BufReader::new(group.child().stdout.take().context("no stdout pipe")?);
        let mut faulter = Faulter {
            stdin,
            stdout,
            group,
        };
        faulter.ask("rss")?;
        Ok(faulter)
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.group.pid()
    }

    /// Touches [`TOUCHED_MIB`] more MiB; returns the seconds from the
    /// command to its answer.
    pub fn touch(&mut self) -> Result<f64> {
        let start = Instant::now();
        self.ask(&format!("rate 1000000 {TOUCHED_MIB}"))?;
        Ok(start.elapsed().as_secs_f64())
    }

    /// Sends `command` and waits for its `ok` line (skipping `progress` lines).
    fn ask(&mut self, command: &str) -> Result<()> {
        writeln!(self.stdin, "{command}")?;
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line)? == 0 {
                bail!("the faulter died during `{command}`");
            }
            if line.starts_with("ok") {
                return Ok(());
            }
        }
    }
}
