//! A procespy daemon for one benchmark row: its own config, socket, log
//! and history in a scratch directory, stopped (SIGTERM, then SIGKILL) on
//! drop.

use std::{
    fs::File,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::procs::{self, Group, TempDir, release_bin};

/// One `[[limit]]` of a config.
pub struct Limit<'a> {
    pub name: &'a str,
    pub max_memory: &'a str,
    pub action: &'a str,
    /// What it counts: `rss`, `pss` or `rss+swap`.
    pub memory: &'a str,
}

/// A config: `mode`, `scan_interval`, a 3 s grace, and `limits`.
pub fn config(mode: &str, scan_interval: &str, limits: &[Limit<'_>]) -> String {
    let mut text = format!(
        "[monitor]\nmode = \"{mode}\"\nscan_interval = \"{scan_interval}\"\n\n\
         [enforce]\ngrace = \"3s\"\n\n[notify.desktop]\nenabled = false\n"
    );
    for limit in limits {
        text.push_str(&format!(
            "\n[[limit]]\nname = \"{}\"\nmax_memory = \"{}\"\naction = \"{}\"\nmemory = \"{}\"\n",
            limit.name, limit.max_memory, limit.action, limit.memory
        ));
    }
    text
}

/// One `[[limit]]` matching command lines with `pattern` (a regex without
/// single quotes: it goes into a TOML literal string), to append to a
/// [`config`].
pub fn pattern_limit(pattern: &str, max_memory: &str, action: &str) -> String {
    format!(
        "\n[[limit]]\npattern = '{pattern}'\nmax_memory = \"{max_memory}\"\naction = \"{action}\"\n"
    )
}

/// A running `procespy run`.
pub struct Procespy {
    group: Group,
    config: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    history: PathBuf,
    _dir: TempDir,
}

impl Procespy {
    /// Starts `procespy [-v] --log-format json run -c CONFIG --socket S`
    /// with `config` (root-owned, 0644) and its history on, and waits until
    /// its socket answers.
    pub fn start(config: &str, verbose: bool) -> Result<Self> {
        Self::start_with_history(config, verbose, true)
    }

    /// [`Procespy::start`] with `[history] enabled = history`, the database
    /// in the scratch directory. `config` must have no `[history]` table.
    pub fn start_with_history(config: &str, verbose: bool, history: bool) -> Result<Self> {
        if config.contains("[history]") {
            bail!("the bench daemon's config sets [history] itself");
        }
        let dir = TempDir::new("daemon")?;
        let history_path = dir.path().join("history.sqlite");
        let config = format!(
            "{config}\n[history]\nenabled = {history}\npath = \"{}\"\n",
            history_path.display()
        );
        let config_path = dir.write("procespy.toml", &config, 0o644)?;
        let socket = dir.path().join("procespy.sock");
        let log = dir.path().join("procespy.log");
        let log_file = File::create(&log).context("creating the daemon's log")?;
        let mut cmd = Command::new(release_bin("procespy"));
        if verbose {
            cmd.arg("-v");
        }
        cmd.args(["--log-format", "json", "run", "-c"])
            .arg(&config_path)
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let group = Group::spawn(&mut cmd, "procespy")?.terminate_gently();
        let mut daemon = Procespy {
            group,
            config: config_path,
            socket,
            log,
            history: history_path,
            _dir: dir,
        };
        daemon.wait_ready(Duration::from_secs(120))?;
        Ok(daemon)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.status().is_err() {
            if !self.group.running() {
                bail!("procespy exited at start; its log:\n{}", self.log_text());
            }
            if Instant::now() > deadline {
                bail!(
                    "procespy did not answer within {timeout:?}; its log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The daemon's PID.
    pub fn pid(&self) -> u32 {
        self.group.pid()
    }

    /// Its config file.
    pub fn config_path(&self) -> &std::path::Path {
        &self.config
    }

    /// Its history database (absent while the history is off).
    pub fn history_path(&self) -> &std::path::Path {
        &self.history
    }

    /// The log file (JSON lines).
    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `procespy status --json`, parsed.
    pub fn status(&self) -> Result<Value> {
        let output = Command::new(release_bin("procespy"))
            .args(["status", "--json", "--socket"])
            .arg(&self.socket)
            .output()
            .context("running `procespy status`")?;
        if !output.status.success() {
            bail!(
                "`procespy status` failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        serde_json::from_slice(&output.stdout).context("`procespy status --json` is not JSON")
    }

    /// Waits until the start-up work is done: the daemon's CPU time grew by
    /// less than 2 ms (0.2% of a core) over the last second. After 15 s it
    /// says so and returns.
    pub fn wait_idle(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last = procs::cpu_seconds(self.pid())?;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(1));
            let now = procs::cpu_seconds(self.pid())?;
            if now - last < 0.002 {
                return Ok(());
            }
            last = now;
        }
        eprintln!("bench: procespy is still busy 15 s after it answered; going on");
        Ok(())
    }

    /// Waits until the status lists `pid` among the covered processes.
    pub fn wait_covered(&self, pid: u32, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status()?;
            let covered = status["processes"]
                .as_array()
                .is_some_and(|list| list.iter().any(|p| p["pid"].as_u64() == Some(pid.into())));
            if covered {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("procespy did not cover PID {pid} within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
