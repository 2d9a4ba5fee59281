//! Shared pieces of procespy's integration tests: finding the binaries,
//! scratch directories, a running daemon, and child processes to drive.
//!
//! Tests that need root and eBPF call [`require_root`]: under `CI=true` a
//! missing capability fails the test; elsewhere the test is skipped with a
//! printed reason.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

/// Whether this run is CI's (`CI=true`), where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether the tests run inside a guest of the kernel matrix
/// (`PROCESPY_GUEST=1`, set by `cargo xtask test-kernels`): under emulation,
/// where everything takes several times as long.
pub fn in_guest() -> bool {
    std::env::var("PROCESPY_GUEST").is_ok_and(|v| v == "1")
}

/// How long to wait for something that takes up to `host` on the host:
/// eight times as long in a guest. Every wait of this library goes through it.
pub fn patience(host: Duration) -> Duration {
    if in_guest() { host * 8 } else { host }
}

/// Returns whether the test can go on as root; fails under CI when it cannot.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(!in_ci(), "{test}: needs root, and CI=true forbids skipping");
    eprintln!("SKIPPED {test}: needs root (eBPF, signals, other users' processes)");
    false
}

/// The directory holding the test binaries' siblings (`target/debug`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    // target/debug/deps/<test> → target/debug
    exe.parent()
        .and_then(Path::parent)
        .expect("tests run from target/*/deps")
        .to_owned()
}

/// The procespy binary: `$PROCESPY_BIN`, else the one beside the tests.
pub fn procespy_bin() -> PathBuf {
    let path = std::env::var_os("PROCESPY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("procespy"));
    assert!(
        path.exists(),
        "{} does not exist: build it with `cargo xtask build` (or run `cargo xtask test`)",
        path.display()
    );
    path
}

/// The test program (`procespy-testprog`).
pub fn testprog_bin() -> PathBuf {
    let path = target_dir().join("procespy-testprog");
    assert!(
        path.exists(),
        "{} does not exist: run `cargo build -p procespy-tests`",
        path.display()
    );
    path
}

/// A scratch directory, removed on drop, readable by everyone (tests run
/// procespy as an unprivileged user too).
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// Makes a new, empty scratch directory named after `label`.
    pub fn new(label: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("procespy-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a scratch directory");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Scratch { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Copies the test program here as `name` (so limits can match it by a
    /// name no other test uses) and returns its path.
    pub fn testprog_named(&self, name: &str) -> PathBuf {
        let path = self.path.join(name);
        std::fs::copy(testprog_bin(), &path).expect("copy the test program");
        path
    }

    /// Writes `name` with `text`, mode 0644, and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path.join(name);
        std::fs::write(&path, text).expect("write a scratch file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A running `procespy run`, stopped (SIGKILL) on drop if still running.
pub struct Daemon {
    child: Child,
    socket: PathBuf,
    config: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
    _scratch: Scratch,
}

/// How to start a [`Daemon`].
#[derive(Default)]
pub struct DaemonOptions<'a> {
    /// The configuration file's text.
    pub config: &'a str,
    /// Extra arguments after `run`.
    pub args: &'a [&'a str],
    /// Run as this uid/gid instead of root.
    pub user: Option<(u32, u32)>,
    /// Extra environment variables.
    pub env: &'a [(&'a str, &'a str)],
}

impl Daemon {
    /// Starts the daemon with JSON logs at debug level and waits until its
    /// control socket answers.
    pub fn start(options: DaemonOptions<'_>) -> Result<Self> {
        let daemon = Self::spawn(options)?;
        daemon.wait_ready(Duration::from_secs(30))?;
        Ok(daemon)
    }

    /// Starts the daemon without waiting for it.
    pub fn spawn(options: DaemonOptions<'_>) -> Result<Self> {
        let scratch = Scratch::new("daemon");
        let config = scratch.write("procespy.toml", options.config);
        let socket = scratch.path().join("procespy.sock");
        if let Some((uid, gid)) = options.user {
            nix::unistd::chown(scratch.path(), Some(uid.into()), Some(gid.into()))?;
        }
        let mut command = Command::new(procespy_bin());
        command
            .args(["--log-format", "json", "-v", "run", "-c"])
            .arg(&config)
            .arg("--socket")
            .arg(&socket)
            .args(options.args)
            .envs(options.env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = options.user {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(gid);
        }
        let mut child = command.spawn().context("starting procespy")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped");
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().expect("log lock").push(line);
            }
        });
        Ok(Daemon {
            child,
            socket,
            config,
            lines,
            _scratch: scratch,
        })
    }

    /// The daemon's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The control socket's path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The configuration file the daemon was started with.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let timeout = patience(timeout);
        let deadline = Instant::now() + timeout;
        loop {
            if self.status().is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "procespy did not answer within {timeout:?}; its log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `procespy status --json`, parsed.
    pub fn status(&self) -> Result<Value> {
        let output = Command::new(procespy_bin())
            .args(["status", "--json", "--socket"])
            .arg(&self.socket)
            .output()?;
        if !output.status.success() {
            bail!("status failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(serde_json::from_slice(&output.stdout)?)
    }

    /// Waits until the status satisfies `pred`, returning it; fails with the
    /// last status after `timeout`.
    pub fn wait_status(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = Instant::now() + patience(timeout);
        loop {
            let status = self.status()?;
            if pred(&status) {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("status never got there; last: {status:#}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The log lines so far, each parsed as JSON (non-JSON lines are skipped).
    pub fn log(&self) -> Vec<Value> {
        let lines = self.lines.lock().expect("log lock");
        lines
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The log so far, as text.
    pub fn log_text(&self) -> String {
        self.lines.lock().expect("log lock").join("\n")
    }

    /// Log lines (JSON) whose `event` is `event` and `pid` is `pid`.
    pub fn events_for(&self, event: &str, pid: u32) -> Vec<Value> {
        self.log()
            .into_iter()
            .filter(|l| l["event"] == event && l["pid"].as_u64() == Some(u64::from(pid)))
            .collect()
    }

    /// Waits until the log has an `event` line for `pid`, and returns it.
    pub fn wait_event(&self, event: &str, pid: u32, timeout: Duration) -> Result<Value> {
        let timeout = patience(timeout);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.events_for(event, pid).pop() {
                return Ok(line);
            }
            if Instant::now() > deadline {
                bail!(
                    "no {event} line for {pid} within {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(mut self) -> Result<ExitStatus> {
        signal(self.child.id(), libc::SIGTERM)?;
        wait_timeout(&mut self.child, Duration::from_secs(20))
    }

    /// Waits for the daemon to exit by itself.
    pub fn wait(mut self, timeout: Duration) -> Result<(ExitStatus, String)> {
        let status = wait_timeout(&mut self.child, timeout)?;
        // Let the reader thread drain the pipe.
        std::thread::sleep(Duration::from_millis(100));
        Ok((status, self.log_text()))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: i32) -> Result<()> {
    // SAFETY: kill(2) with a pid we started.
    if unsafe { libc::kill(pid as i32, sig) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// Waits for `child` at most `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<ExitStatus> {
    let timeout = patience(timeout);
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("process {} did not exit within {timeout:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `procespy-testprog`, killed on drop.
pub struct TestProg {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl TestProg {
    /// Starts the test program with `args`.
    pub fn start(args: &[&str]) -> Result<Self> {
        Self::start_as(&testprog_bin(), args)
    }

    /// Starts the test program from `exe` (a copy under another name, say).
    pub fn start_as(exe: &Path, args: &[&str]) -> Result<Self> {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        Self::start_os(exe, &args)
    }

    /// Starts the test program from `exe` with arguments that need not be UTF-8.
    pub fn start_os(exe: &Path, args: &[&std::ffi::OsStr]) -> Result<Self> {
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Ok(TestProg {
            child,
            stdin,
            stdout,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a command and returns its answer (without the leading `ok `).
    pub fn command(&mut self, line: &str) -> Result<String> {
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()?;
        self.read_line()
    }

    /// Reads one line of output.
    pub fn read_line(&mut self) -> Result<String> {
        let mut answer = String::new();
        if self.stdout.read_line(&mut answer)? == 0 {
            bail!("the test program closed its output (it died?)");
        }
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

    /// Waits for the program to end; returns the signal that ended it, if any.
    pub fn wait_signal(&mut self, timeout: Duration) -> Result<Option<i32>> {
        use std::os::unix::process::ExitStatusExt;
        Ok(wait_timeout(&mut self.child, timeout)?.signal())
    }

    /// Whether the program is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Reads `progress` lines until the program's output ends; returns the
    /// last byte count reported.
    pub fn last_progress(&mut self) -> u64 {
        let mut last = 0;
        let mut line = String::new();
        while self.stdout.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some(bytes) = line.split_whitespace().nth(1).and_then(|b| b.parse().ok()) {
                last = bytes;
            }
            line.clear();
        }
        last
    }
}

impl Drop for TestProg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmRSS` of `pid` in bytes, from `/proc/PID/status`.
pub fn vm_rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .ok_or_else(|| anyhow!("no VmRSS for {pid}"))
}

/// The entry of `pid` in a status document's process list.
pub fn status_process(status: &Value, pid: u32) -> Option<&Value> {
    status["processes"]
        .as_array()?
        .iter()
        .find(|p| p["pid"].as_u64() == Some(u64::from(pid)))
}
