//! Driving `procespy-testprog` (`src/bin/testprog.rs` lists its commands).

use std::{
    ffi::OsStr,
    io::{BufRead, BufReader, Write},
    os::unix::process::ExitStatusExt,
    path::Path,
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::mpsc::{Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};

use crate::{daemon::Daemon, paths::testprog_bin, process::wait_timeout, run::patience};

/// How long the test program may take to answer a command.
const ANSWER: Duration = Duration::from_secs(30);

/// A running `procespy-testprog`, killed on drop.
pub struct TestProg {
    child: Child,
    stdin: ChildStdin,
    /// Its output, line by line, read by a thread of its own; closed at the
    /// output's end.
    lines: Receiver<String>,
}

impl TestProg {
    /// Starts the test program with `args`.
    pub fn start(args: &[&str]) -> Result<Self> {
        Self::start_as(&testprog_bin(), args)
    }

    /// Starts the test program from `exe` (a copy under another name, say).
    pub fn start_as(exe: &Path, args: &[&str]) -> Result<Self> {
        let args: Vec<&OsStr> = args.iter().map(|a| a.as_ref()).collect();
        Self::start_os(exe, &args)
    }

    /// Starts the test program from `exe` with arguments that need not be UTF-8.
    pub fn start_os(exe: &Path, args: &[&OsStr]) -> Result<Self> {
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(TestProg {
            child,
            stdin,
            lines,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a command and returns its answer (without the leading `ok `).
    pub fn command(&mut self, line: &str) -> Result<String> {
        self.send(line)?;
        self.read_line()
    }

    /// Reads one line of output: an answer (without `ok`), or a `progress`
    /// line as it is.
    pub fn read_line(&mut self) -> Result<String> {
        let answer = match self.lines.recv_timeout(patience(ANSWER)) {
            Ok(answer) => answer,
            Err(RecvTimeoutError::Timeout) => bail!("the test program did not answer"),
            Err(RecvTimeoutError::Disconnected) => {
                bail!("the test program closed its output (it died?)")
            }
        };
        let answer = answer.trim_end();
        match answer.strip_prefix("ok") {
            Some(rest) => Ok(rest.trim().to_owned()),
            None if answer.starts_with("progress") => Ok(answer.to_owned()),
            None => Err(anyhow!("test program: {answer}")),
        }
    }

    /// Grows by `mib` MiB and returns the program's VmRSS in bytes.
    pub fn grow(&mut self, mib: usize) -> Result<u64> {
        Ok(self.command(&format!("grow {mib}"))?.parse()?)
    }

    /// Sends a command without waiting for an answer (the program may die).
    pub fn send(&mut self, line: &str) -> Result<()> {
        writeln!(self.stdin, "{line}")?;
        Ok(self.stdin.flush()?)
    }

    /// Sends `command` (a growth past a limit, say) and waits, 10 s at the
    /// most, for the program to end; returns the signal that ended it.
    pub fn ended_by(&mut self, command: &str) -> Result<Option<i32>> {
        self.send(command)?;
        self.wait_signal(Duration::from_secs(10))
    }

    /// Waits for the program to end; returns how it ended.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        wait_timeout(&mut self.child, timeout)
    }

    /// Waits for the program to end; returns the signal that ended it, if any.
    pub fn wait_signal(&mut self, timeout: Duration) -> Result<Option<i32>> {
        Ok(self.wait_exit(timeout)?.signal())
    }

    /// Whether the program is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The lines not read yet, up to the end of the program's output (once
    /// it has died, say).
    pub fn rest(&mut self) -> Result<Vec<String>> {
        let deadline = Instant::now() + patience(ANSWER);
        let mut rest = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => rest.push(line),
                Err(RecvTimeoutError::Disconnected) => return Ok(rest),
                Err(RecvTimeoutError::Timeout) => bail!("the test program's output did not end"),
            }
        }
    }

    /// The last byte count in the `progress` lines up to the end of the
    /// program's output (0 without one).
    pub fn last_progress(&mut self) -> Result<u64> {
        Ok(progress(&self.rest()?)
            .last()
            .map_or(0, |&(bytes, _)| bytes))
    }
}

impl Drop for TestProg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `progress BYTES NANOS` lines among `lines`, as (bytes, nanoseconds).
pub fn progress(lines: &[String]) -> Vec<(u64, u64)> {
    lines
        .iter()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("progress")).then_some(())?;
            Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
        })
        .collect()
}

/// Starts the test program from `exe`, waits until `daemon` covers it, grows
/// it by 96 MiB (past a limit of 64 MiB, say) and waits for the SIGTERM that
/// stops it; returns its PID.
pub fn kill_one(daemon: &Daemon, exe: &Path) -> Result<u32> {
    let mut prog = TestProg::start_as(exe, &[])?;
    let pid = prog.pid();
    daemon.wait_covered(pid)?;
    match prog.ended_by("grow 96")? {
        Some(libc::SIGTERM) => Ok(pid),
        other => bail!("{pid} ended by {other:?}, not SIGTERM"),
    }
}
