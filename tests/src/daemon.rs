//! A running `procespy run`, its log, and its control socket.

use std::{
    fmt,
    io::{BufRead, BufReader, Write},
    os::unix::{fs::MetadataExt, net::UnixStream, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use crate::{
    paths::procespy_bin,
    process::{signal, wait_timeout},
    run::{patience, poll},
    scratch::Scratch,
};

/// A running `procespy run`, stopped (SIGKILL) on drop if still running;
/// a test that panics prints its log then.
pub struct Daemon {
    child: Child,
    socket: PathBuf,
    config: PathBuf,
    log: Log,
    /// The thread reading the log pipe, which ends at the pipe's end.
    reader: Option<JoinHandle<()>>,
    scratch: Scratch,
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
    /// A command that runs procespy (its path and arguments are added to
    /// this one): `setpriv …`, `unshare …`.
    pub wrapper: &'a [&'a str],
    /// Where the log goes.
    pub log: LogTo,
}

/// Where a [`Daemon`]'s log goes.
#[derive(Default)]
pub enum LogTo {
    /// JSON lines at debug level on a pipe the test reads.
    #[default]
    Pipe,
    /// Text lines (`--log-format text`, what a person reads) at debug
    /// level on a pipe the test reads.
    Text,
    /// Text (procespy's default format) on stderr, which is this file and
    /// is named by `$JOURNAL_STREAM`: the journal stream systemd gives a
    /// service.
    Journal(PathBuf),
}

/// What the daemon logged: lines read from the pipe, or the journal file.
enum Log {
    Lines(Arc<Mutex<Vec<String>>>),
    File(PathBuf),
}

impl Daemon {
    /// Starts the daemon with `config` and nothing else of
    /// [`DaemonOptions`], and waits until its control socket answers.
    pub fn with_config(config: impl fmt::Display) -> Result<Self> {
        Self::start(DaemonOptions {
            config: &config.to_string(),
            ..Default::default()
        })
    }

    /// Starts the daemon and waits until its control socket answers; fails
    /// at once, with its log, if it exits first.
    pub fn start(options: DaemonOptions<'_>) -> Result<Self> {
        let mut daemon = Self::spawn(options)?;
        let exited = poll(Duration::from_secs(30), Duration::from_millis(50), || {
            if daemon.status().is_ok() {
                return Some(None);
            }
            daemon.child.try_wait().ok().flatten().map(Some)
        })
        .with_context(|| {
            format!(
                "procespy did not answer within {:?}; its log:\n{}",
                patience(Duration::from_secs(30)),
                daemon.log_text()
            )
        })?;
        match exited {
            None => Ok(daemon),
            Some(status) => {
                let (_, log) = daemon.wait(Duration::from_secs(1))?;
                bail!("procespy exited ({status}) before it answered; its log:\n{log}")
            }
        }
    }

    /// Starts the daemon without waiting for it.
    pub fn spawn(options: DaemonOptions<'_>) -> Result<Self> {
        let scratch = Scratch::new("daemon");
        let config = scratch.write(
            "procespy.toml",
            &with_history(options.config, scratch.path()),
        );
        let socket = scratch.path().join("procespy.sock");
        if let Some((uid, gid)) = options.user {
            nix::unistd::chown(scratch.path(), Some(uid.into()), Some(gid.into()))?;
        }
        let mut command = match options.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(procespy_bin());
                command
            }
            None => Command::new(procespy_bin()),
        };
        match options.log {
            LogTo::Pipe => command.args(["--log-format", "json", "-v"]),
            LogTo::Text => command.args(["--log-format", "text", "-v"]),
            LogTo::Journal(_) => &mut command,
        };
        command
            .args(["run", "-c"])
            .arg(&config)
            .arg("--socket")
            .arg(&socket)
            .args(options.args)
            .envs(options.env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if let Some((uid, gid)) = options.user {
            command.uid(uid).gid(gid);
        }
        let log = match options.log {
            LogTo::Pipe | LogTo::Text => {
                command.stderr(Stdio::piped());
                Log::Lines(Arc::new(Mutex::new(Vec::new())))
            }
            LogTo::Journal(path) => {
                let stream = std::fs::File::create(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
                let meta = stream.metadata()?;
                command
                    .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
                    .stderr(stream);
                Log::File(path)
            }
        };
        let mut child = command.spawn().context("starting procespy")?;
        let reader = match (&log, child.stderr.take()) {
            (Log::Lines(lines), Some(stderr)) => {
                let sink = Arc::clone(lines);
                Some(std::thread::spawn(move || {
                    // Bytes that are not UTF-8 are kept (replaced), not an end.
                    for line in BufReader::new(stderr).split(b'\n') {
                        let Ok(line) = line else { break };
                        let line = String::from_utf8_lossy(&line).into_owned();
                        sink.lock().expect("log lock").push(line);
                    }
                }))
            }
            _ => None,
        };
        Ok(Daemon {
            child,
            socket,
            config,
            log,
            reader,
            scratch,
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

    /// `procespy SUBCOMMAND --socket SOCKET`: a client of this daemon.
    pub fn client(&self, subcommand: &str) -> Command {
        let mut command = Command::new(procespy_bin());
        command.arg(subcommand).arg("--socket").arg(&self.socket);
        command
    }

    /// Writes `config` over the configuration file and runs `procespy
    /// reload`; returns what it printed and how it exited.
    pub fn reload(&self, config: impl fmt::Display) -> Output {
        let text = with_history(&config.to_string(), self.scratch.path());
        std::fs::write(&self.config, text).expect("rewrite the configuration");
        self.client("reload")
            .output()
            .expect("procespy reload runs")
    }

    /// Sends `request` as it is over the control socket, as a root client,
    /// and returns the reply line, parsed. The request is written by a
    /// thread of its own while the reply is awaited, so a large one may be
    /// cut short by the daemon.
    pub fn ask(&self, request: Vec<u8>) -> Result<Value> {
        let stream = UnixStream::connect(&self.socket)
            .with_context(|| format!("connecting to {}", self.socket.display()))?;
        stream.set_read_timeout(Some(patience(Duration::from_secs(30))))?;
        let mut writing = stream.try_clone()?;
        let writer = std::thread::spawn(move || {
            // The daemon may close the connection before reading it all.
            let _ = writing.write_all(&request);
        });
        let mut reply = String::new();
        BufReader::new(stream)
            .read_line(&mut reply)
            .context("reading the daemon's reply")?;
        writer.join().expect("the writing thread");
        serde_json::from_str(&reply).with_context(|| format!("the reply {reply:?} is not JSON"))
    }

    /// `procespy status --json`, parsed.
    pub fn status(&self) -> Result<Value> {
        let output = self.client("status").arg("--json").output()?;
        if !output.status.success() {
            bail!("status failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(serde_json::from_slice(&output.stdout)?)
    }

    /// Waits until the status satisfies `pred`, returning it; fails with the
    /// last status after `timeout`.
    pub fn wait_status(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        let mut last = Err(anyhow!("no status yet"));
        let found = poll(timeout, Duration::from_millis(50), || {
            last = self.status();
            last.as_ref().ok().filter(|status| pred(status)).cloned()
        });
        found.ok_or_else(|| match last {
            Ok(status) => anyhow!("status never got there; last: {status:#}"),
            Err(err) => err.context("status never got there"),
        })
    }

    /// Waits until a limit covers `pid` (matched at exec, at a rename or by
    /// an examination), and returns the status that lists it.
    pub fn wait_covered(&self, pid: u32) -> Result<Value> {
        self.wait_status(Duration::from_secs(10), |s| {
            status_process(s, pid).is_some()
        })
        .with_context(|| format!("no limit covers {pid}"))
    }

    /// The log lines so far, each parsed as JSON (non-JSON lines are skipped).
    pub fn log(&self) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The log so far, as text.
    pub fn log_text(&self) -> String {
        match &self.log {
            Log::Lines(lines) => lines.lock().expect("log lock").join("\n"),
            Log::File(path) => std::fs::read_to_string(path).unwrap_or_default(),
        }
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
        poll(timeout, Duration::from_millis(20), || {
            self.events_for(event, pid).pop()
        })
        .with_context(|| {
            format!(
                "no {event} line for {pid} within {:?}; log:\n{}",
                patience(timeout),
                self.log_text()
            )
        })
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(mut self) -> Result<ExitStatus> {
        signal(self.child.id(), libc::SIGTERM)?;
        wait_timeout(&mut self.child, Duration::from_secs(20))
    }

    /// Waits for the daemon to exit by itself; returns its status and its
    /// whole log.
    pub fn wait(mut self, timeout: Duration) -> Result<(ExitStatus, String)> {
        let status = wait_timeout(&mut self.child, timeout)?;
        if let Some(reader) = self.reader.take() {
            poll(Duration::from_secs(5), Duration::from_millis(10), || {
                reader.is_finished().then_some(())
            })
            .context("procespy exited, but its log pipe stayed open")?;
        }
        Ok((status, self.log_text()))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("procespy's log:\n{}", self.log_text());
        }
    }
}

/// The entry of `pid` in a status document's process list.
pub fn status_process(status: &Value, pid: u32) -> Option<&Value> {
    status["processes"]
        .as_array()?
        .iter()
        .find(|p| p["pid"].as_u64() == Some(u64::from(pid)))
}

/// `config` with its history in `dir` (the daemon's own), unless it says
/// where: daemons side by side never share one, nor write the host's.
fn with_history(config: &str, dir: &Path) -> String {
    if config
        .lines()
        .any(|line| line.trim_start().starts_with("[history]"))
    {
        return config.to_owned();
    }
    let path = dir.join("history.sqlite");
    format!("{config}\n[history]\npath = \"{}\"\n", path.display())
}
