//! A terminal for programs that draw on one (`procespy top`): a private
//! tmux server with one 200 × 50 pane, typed into with `send-keys` and read
//! with `capture-pane`, as a person would use it.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{
    needs::{on_path, require},
    run::{patience, poll},
    scratch::Scratch,
};

/// The pane's size.
const COLUMNS: u16 = 200;
const LINES: u16 = 50;

/// A tmux server of this test's own, with one pane running a shell; the
/// server is killed on drop.
pub struct Tmux {
    socket: PathBuf,
    _scratch: Scratch,
}

impl Tmux {
    /// Whether tmux is installed; otherwise the test is skipped (fails under
    /// CI).
    pub fn present() -> bool {
        require("tmux", on_path("tmux"))
    }

    /// Starts a server whose one pane runs `shell` (`sh`, or a wrapper
    /// that runs it), in a UTF-8 locale.
    pub fn start(shell: &[&str]) -> Result<Tmux> {
        let scratch = Scratch::new("tmux");
        let tmux = Tmux {
            socket: scratch.path().join("tmux.sock"),
            _scratch: scratch,
        };
        tmux.run(
            &[
                "new-session",
                "-d",
                "-x",
                &COLUMNS.to_string(),
                "-y",
                &LINES.to_string(),
            ],
            shell,
        )?;
        Ok(tmux)
    }

    /// Types `line` and Enter.
    pub fn type_line(&self, line: &str) -> Result<()> {
        self.run(&["send-keys", "-l"], &[line])?;
        self.keys(&["Enter"])
    }

    /// Presses `keys`, in tmux's names (`q`, `Enter`, `C-c`, `Escape`).
    pub fn keys(&self, keys: &[&str]) -> Result<()> {
        self.run(&["send-keys"], keys).map(drop)
    }

    /// The screen's text, a line per row.
    pub fn capture(&self) -> Result<String> {
        self.run(&["capture-pane", "-p"], &[])
    }

    /// Waits, 30 s at most, until the screen satisfies `pred`; returns it.
    /// Fails with the last screen and what was awaited.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> Result<String> {
        let mut last = String::new();
        let found = poll(Duration::from_secs(30), Duration::from_millis(100), || {
            last = self.capture().ok()?;
            pred(&last).then(|| last.clone())
        });
        found.with_context(|| {
            format!(
                "the screen did not show {what} within {:?}; it shows:\n{last}",
                patience(Duration::from_secs(30))
            )
        })
    }

    /// Whether the pane shows the alternate screen (a program holds it).
    pub fn alternate_screen(&self) -> Result<bool> {
        Ok(self
            .run(&["display-message", "-p"], &["#{alternate_on}"])?
            .trim()
            == "1")
    }

    /// Runs `tmux -S SOCKET COMMAND ARGS…` and returns its output.
    fn run(&self, command: &[&str], args: &[&str]) -> Result<String> {
        let output = Command::new("tmux")
            .arg("-u")
            .arg("-S")
            .arg(&self.socket)
            .args(command)
            .args(args)
            .env("LC_ALL", "C.UTF-8")
            .env("TERM", "xterm-256color")
            .stdin(Stdio::null())
            .output()
            .context("running tmux")?;
        if !output.status.success() {
            bail!(
                "tmux {command:?} {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"], &[]);
    }
}
