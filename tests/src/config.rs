//! Configuration files for the daemons the tests start.

use std::fmt;

/// The text of a `procespy.toml`: `[monitor]` with a mode and a scan
/// interval (200 ms unless told), `[enforce]` with a 1 s grace, then the
/// tables and limits added, in that order.
#[derive(Clone, Debug)]
pub struct Config {
    mode: String,
    scan_interval: String,
    protect: Vec<String>,
    tables: Vec<String>,
    limits: Vec<Limit>,
}

impl Config {
    /// A configuration in `mode` (`ebpf`, `proc` or `auto`).
    pub fn new(mode: &str) -> Config {
        Config {
            mode: mode.to_owned(),
            scan_interval: "200ms".to_owned(),
            protect: Vec::new(),
            tables: Vec::new(),
            limits: Vec::new(),
        }
    }

    /// Sets `[monitor] scan_interval`.
    pub fn scan_interval(mut self, interval: &str) -> Config {
        self.scan_interval = interval.to_owned();
        self
    }

    /// Adds `name` to `[enforce] protect`.
    pub fn protect(mut self, name: &str) -> Config {
        self.protect.push(name.to_owned());
        self
    }

    /// Adds a table, as TOML text (`"[notify.email]\nenabled = false\n"`).
    pub fn table(mut self, text: &str) -> Config {
        self.tables.push(text.to_owned());
        self
    }

    /// Turns desktop popups off (they are on by default).
    pub fn no_popups(self) -> Config {
        self.table("[notify.desktop]\nenabled = false\n")
    }

    /// Adds a `[[limit]]`.
    pub fn limit(mut self, limit: Limit) -> Config {
        self.limits.push(limit);
        self
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let protect: Vec<String> = self.protect.iter().map(|name| quote(name)).collect();
        writeln!(f, "[monitor]\nmode = {}", quote(&self.mode))?;
        writeln!(f, "scan_interval = {}\n", quote(&self.scan_interval))?;
        writeln!(f, "[enforce]\ngrace = \"1s\"")?;
        if !protect.is_empty() {
            writeln!(f, "protect = [{}]", protect.join(", "))?;
        }
        for table in &self.tables {
            write!(f, "\n{table}")?;
        }
        for limit in &self.limits {
            write!(f, "\n{limit}")?;
        }
        Ok(())
    }
}

/// One `[[limit]]`.
#[derive(Clone, Debug)]
pub struct Limit {
    matcher: String,
    /// The value as TOML text: a quoted size, or a bare byte count.
    max_memory: String,
    action: Option<String>,
    scope: Option<String>,
    memory: Option<String>,
    kill: Option<String>,
    warn_at: Option<String>,
}

impl Limit {
    /// Processes named `name`, up to `max_memory` (`"64MiB"`), with the
    /// default action.
    pub fn name(name: &str, max_memory: &str) -> Limit {
        Limit::matching(format!("name = {}", quote(name)), quote(max_memory))
    }

    /// Processes named `name`, up to `bytes` written as a bare integer: the
    /// table's last line, which a file cut short in the middle of the
    /// number reads as a smaller limit.
    pub fn name_in_bytes(name: &str, bytes: u64) -> Limit {
        Limit::matching(format!("name = {}", quote(name)), bytes.to_string())
    }

    /// Processes whose command line matches `regex` (written as a TOML
    /// literal string: no escapes), up to `max_memory`.
    pub fn pattern(regex: &str, max_memory: &str) -> Limit {
        Limit::matching(format!("pattern = '{regex}'"), quote(max_memory))
    }

    /// The limit most tests use: `kill` processes named `name` past 64 MiB.
    pub fn kill_past_64mib(name: &str) -> Limit {
        Limit::name(name, "64MiB").action("kill")
    }

    fn matching(matcher: String, max_memory: String) -> Limit {
        Limit {
            matcher,
            max_memory,
            action: None,
            scope: None,
            memory: None,
            kill: None,
            warn_at: None,
        }
    }

    /// Sets the action (`kill`, `kill-now`, `alert`).
    pub fn action(mut self, action: &str) -> Limit {
        self.action = Some(action.to_owned());
        self
    }

    /// Sets `warn_at` (`"80%"`, `"50MiB"`).
    pub fn warn_at(mut self, warn_at: &str) -> Limit {
        self.warn_at = Some(warn_at.to_owned());
        self
    }

    /// Sets the scope (`process`, `total`).
    pub fn scope(mut self, scope: &str) -> Limit {
        self.scope = Some(scope.to_owned());
        self
    }

    /// Sets what the limit counts (`rss`, `pss`, `rss+swap`).
    pub fn memory(mut self, memory: &str) -> Limit {
        self.memory = Some(memory.to_owned());
        self
    }

    /// Sets what a signal reaches (`process`, `group`, `cgroup`).
    pub fn kill(mut self, kill: &str) -> Limit {
        self.kill = Some(kill.to_owned());
        self
    }
}

/// `max_memory` comes last (see [`Limit::name_in_bytes`]).
impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[[limit]]\n{}", self.matcher)?;
        if let Some(action) = &self.action {
            writeln!(f, "action = {}", quote(action))?;
        }
        if let Some(scope) = &self.scope {
            writeln!(f, "scope = {}", quote(scope))?;
        }
        if let Some(memory) = &self.memory {
            writeln!(f, "memory = {}", quote(memory))?;
        }
        if let Some(kill) = &self.kill {
            writeln!(f, "kill = {}", quote(kill))?;
        }
        if let Some(warn_at) = &self.warn_at {
            writeln!(f, "warn_at = {}", quote(warn_at))?;
        }
        writeln!(f, "max_memory = {}", self.max_memory)
    }
}

/// `text` as a TOML basic string.
fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}
