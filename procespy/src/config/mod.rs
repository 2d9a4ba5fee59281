//! The configuration file (`/etc/procespy.toml`): its types, defaults,
//! loading and validation, and `procespy check-config`.
//!
//! Reading goes in three steps: [`raw`] deserializes the TOML into structures
//! that mirror the file, [`validate`] resolves them (units, users, regexes,
//! defaults) into a [`Config`], and [`Config::load`] adds the file-system
//! checks (owner and permissions of the config and of the password file).
//! Every step collects all the problems it can find, so that one run of
//! `check-config` shows them all.
//!
//! Defaults not spelled out by SPEC.md, chosen here:
//! - a missing `[enforce] protect` means `["sshd", "systemd-journald"]`, the
//!   list the example shows; `protect = []` protects only what is always
//!   protected (PID 1, kernel threads, procespy itself, handled elsewhere);
//! - `[notify.email] port` defaults to 587, or 465 with `security = "tls"`;
//! - a `[metrics]` table without `listen` listens on `127.0.0.1:9613`.

mod check;
mod diagnostic;
mod limits;
mod raw;
mod security;
pub(crate) mod units;
mod validate;

#[cfg(test)]
mod tests;

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub(crate) use check::check_config;
pub(crate) use diagnostic::{ConfigError, Diagnostic};
pub(crate) use limits::{Limits, PATTERN_SIZE_LIMIT};
pub(crate) use security::read_trusted;
pub(crate) use units::parse_duration;

/// The largest configuration file read.
pub(crate) const MAX_CONFIG_BYTES: usize = 1 << 20;
/// The largest password file read.
pub(crate) const MAX_SECRET_BYTES: usize = 4096;

/// The diagnostic for a file that is not UTF-8: where the first bad byte is.
fn not_utf8(path: &Path, err: &std::string::FromUtf8Error) -> ConfigError {
    let bytes = err.as_bytes();
    let at = err.utf8_error().valid_up_to();
    let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
    let start = bytes[..at]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let col = String::from_utf8_lossy(&bytes[start..at]).chars().count() + 1;
    Diagnostic {
        path: path.to_path_buf(),
        line,
        col,
        message: format!("the file is not UTF-8 (byte 0x{:02x})", bytes[at]),
    }
    .into()
}

/// Default location of the configuration file.
pub(crate) const DEFAULT_CONFIG: &str = "/etc/procespy.toml";
/// Default `[monitor] scan_interval`.
pub(crate) const DEFAULT_SCAN_INTERVAL: Duration = Duration::from_secs(5);
/// Default `[enforce] grace`.
pub(crate) const DEFAULT_GRACE: Duration = Duration::from_secs(3);
/// Default `[enforce] protect`.
pub(crate) const DEFAULT_PROTECT: &[&str] = &["sshd", "systemd-journald"];
/// Default `[notify] cooldown`.
pub(crate) const DEFAULT_COOLDOWN: Duration = Duration::from_secs(60);
/// Default `[notify.email] port` (with `security = "none"` or `"starttls"`).
pub(crate) const DEFAULT_SMTP_PORT: u16 = 587;
/// Default `[notify.email] port` with `security = "tls"`.
pub(crate) const DEFAULT_SMTPS_PORT: u16 = 465;
/// Default `[notify.email] spool_dir`.
pub(crate) const DEFAULT_SPOOL_DIR: &str = "/var/lib/procespy/outbox";
/// Default `[metrics] listen`, when a `[metrics]` table is present.
pub(crate) const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9613";

/// A validated configuration: every value resolved, every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Config {
    /// `[monitor]`: how processes are followed.
    pub(crate) monitor: Monitor,
    /// `[enforce]`: how breaches are acted on.
    pub(crate) enforce: Enforce,
    /// The `[[limit]]` tables, in file order. Empty: watch only.
    pub(crate) limits: Limits,
    /// `[notify]`: who is told.
    pub(crate) notify: Notify,
    /// `[metrics]`, when present.
    pub(crate) metrics: Option<Metrics>,
    /// `[history]`.
    pub(crate) history: History,
    /// Where this configuration came from.
    pub(crate) origin: Origin,
}

/// Where a [`Config`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Read from this file.
    File(PathBuf),
    /// [`Config::builtin_default`]: no file.
    BuiltIn,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::BuiltIn => f.write_str("built-in default"),
        }
    }
}

/// `[monitor]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Monitor {
    /// `mode`: eBPF, `/proc` polling, or eBPF where it loads.
    pub(crate) mode: Mode,
    /// `scan_interval`: period of the full `/proc` examination (never zero).
    pub(crate) scan_interval: Duration,
}

/// `[monitor] mode` and `--mode`; the daemon reports the mode in use as
/// `ebpf` or `proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// eBPF where it loads, else /proc polling.
    Auto,
    /// eBPF, or refuse to start.
    Ebpf,
    /// /proc polling only.
    Proc,
}

/// `[enforce]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Enforce {
    /// `dry_run`: decide and alert, never signal.
    pub(crate) dry_run: bool,
    /// `grace`: time between SIGTERM and SIGKILL for action `kill`.
    pub(crate) grace: Duration,
    /// `protect`: process names never signalled (besides the ones always
    /// protected: PID 1, kernel threads, procespy itself).
    pub(crate) protect: Vec<String>,
}

/// One `[[limit]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Limit {
    /// 0-based position among the `[[limit]]` tables of the file.
    pub(crate) index: usize,
    /// The name, or the pattern's text: how logs and alerts refer to the limit.
    pub(crate) label: String,
    /// Which processes it covers.
    pub(crate) matcher: Matcher,
    /// `user`, resolved to a uid: only processes of this user.
    pub(crate) user: Option<u32>,
    /// `max_memory` in bytes (percentages resolved against MemTotal).
    pub(crate) max_memory: u64,
    /// `max_memory` as written, e.g. `"1.5GiB"`, `"10%"` or `"1048576"`.
    pub(crate) max_memory_text: String,
    /// `scope`: per process, or summed over the matching processes.
    pub(crate) scope: Scope,
    /// `action`: what is done on a breach.
    pub(crate) action: Action,
    /// `warn_at`: one alert (with the time left at the growth rate) when
    /// the memory passes this many bytes; `None`: no warning.
    pub(crate) warn_at: Option<u64>,
    /// `memory`: what the limit counts.
    pub(crate) memory: Memory,
    /// `kill`: what a signal reaches.
    pub(crate) kill: KillTarget,
}

#[cfg(test)]
impl Limit {
    /// A limit for tests: processes matched by `matcher`, over `max_memory`
    /// bytes, with every other key at its default (index 0).
    pub(crate) fn of(matcher: Matcher, max_memory: u64) -> Limit {
        let label = match &matcher {
            Matcher::Name(name) | Matcher::Pattern(name) => name.clone(),
        };
        Limit {
            index: 0,
            label,
            matcher,
            user: None,
            max_memory,
            max_memory_text: max_memory.to_string(),
            scope: Scope::Process,
            action: Action::Kill,
            warn_at: None,
            memory: Memory::Rss,
            kill: KillTarget::Process,
        }
    }
}

/// How a [`Limit`] picks its processes.
#[derive(Debug, Clone)]
pub(crate) enum Matcher {
    /// `name`: exact match on the process name (comm) or on the file name of
    /// its executable.
    Name(String),
    /// `pattern`: regex searched in the full command line (its source: the
    /// compiled form is in [`Limits`]).
    Pattern(String),
}

impl PartialEq for Matcher {
    /// Names compare as strings, patterns by their source text.
    fn eq(&self, other: &Matcher) -> bool {
        match (self, other) {
            (Matcher::Name(a), Matcher::Name(b)) => a == b,
            (Matcher::Pattern(a), Matcher::Pattern(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Matcher {}

/// `[[limit]] scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Each matching process on its own.
    Process,
    /// All matching processes summed; the largest is killed first.
    Total,
}

/// `[[limit]] action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// SIGTERM, then SIGKILL after the grace period if still over.
    Kill,
    /// SIGKILL at once.
    KillNow,
    /// Notify only.
    Alert,
}

/// `[[limit]] memory`: what a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Memory {
    /// Resident set size: anon + file + shmem pages (VmRSS).
    Rss,
    /// Proportional set size: each shared page divided among its users.
    Pss,
    /// RSS plus the process's pages in swap.
    #[serde(rename = "rss+swap")]
    RssSwap,
}

/// `[[limit]] kill`: what a signal for a breach reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KillTarget {
    /// The process alone.
    Process,
    /// Its process group, member by member through pidfds.
    Group,
    /// Its cgroup (v2), through `cgroup.kill`.
    Cgroup,
}

/// `[history]`: what procespy remembers, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct History {
    /// `enabled`.
    pub(crate) enabled: bool,
    /// `path`: the SQLite database.
    pub(crate) path: PathBuf,
    /// `tiers`: finer samples kept a short while, coarser ones longer;
    /// sorted by `every`.
    pub(crate) tiers: Vec<Tier>,
    /// `max_size`: the database's size bound, in bytes.
    pub(crate) max_size: u64,
}

/// One resolution of the history: a sample every `every`, kept for `keep`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tier {
    /// The spacing of the samples.
    pub(crate) every: Duration,
    /// How long they are kept.
    pub(crate) keep: Duration,
}

/// Default `[history] path`.
pub(crate) const DEFAULT_HISTORY_PATH: &str = "/var/lib/procespy/history.sqlite";
/// Default `[history] max_size`.
pub(crate) const DEFAULT_HISTORY_MAX_SIZE: u64 = 256 << 20;

impl Default for History {
    /// On, in `/var/lib/procespy`: every second for 10 minutes, every 10
    /// seconds for 6 hours, every minute for 7 days, at most 256 MiB.
    fn default() -> Self {
        let tier = |every, keep| Tier {
            every: Duration::from_secs(every),
            keep: Duration::from_secs(keep),
        };
        History {
            enabled: true,
            path: PathBuf::from(DEFAULT_HISTORY_PATH),
            tiers: vec![tier(1, 600), tier(10, 6 * 3600), tier(60, 7 * 86400)],
            max_size: DEFAULT_HISTORY_MAX_SIZE,
        }
    }
}

/// `[notify]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Notify {
    /// `cooldown`: per limit, at most one popup and one email per period.
    pub(crate) cooldown: Duration,
    /// `[notify.desktop]`.
    pub(crate) desktop: Desktop,
    /// `[notify.email]`.
    pub(crate) email: Email,
}

/// `[notify.desktop]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Desktop {
    /// `enabled`.
    pub(crate) enabled: bool,
    /// `users`: user names to notify; empty means every user with a session bus.
    pub(crate) users: Vec<String>,
    /// `urgency` of the popups.
    pub(crate) urgency: Urgency,
}

/// `[notify.desktop] urgency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Urgency {
    /// Low.
    Low,
    /// Normal.
    Normal,
    /// Critical: stays on screen until dismissed.
    Critical,
}

/// `[notify.email]`. When `enabled` is false, the other fields may hold
/// defaults and empty strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Email {
    /// `enabled`.
    pub(crate) enabled: bool,
    /// `server`: SMTP host name.
    pub(crate) server: String,
    /// `port`.
    pub(crate) port: u16,
    /// `security`: how the connection is encrypted.
    pub(crate) security: Security,
    /// `username`, set together with `password_file`.
    pub(crate) username: Option<String>,
    /// `password_file`: absolute path of a file holding the SMTP password.
    pub(crate) password_file: Option<PathBuf>,
    /// `from`: sender address.
    pub(crate) from: String,
    /// `to`: recipient addresses (at least one when enabled).
    pub(crate) to: Vec<String>,
    /// `spool_dir`: absolute path where unsent mail waits.
    pub(crate) spool_dir: PathBuf,
}

/// `[notify.email] security`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Security {
    /// Plain SMTP.
    None,
    /// SMTP upgraded with STARTTLS.
    StartTls,
    /// SMTP inside TLS from the first byte.
    Tls,
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Metrics {
    /// `listen`: address of the Prometheus endpoint.
    pub(crate) listen: SocketAddr,
}

/// What validation needs from the system, so that [`Config::parse`] stays
/// pure and tests can supply their own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Env {
    /// Total memory in bytes (MemTotal), for percentage sizes; 0 if unknown.
    pub(crate) mem_total: u64,
    /// Resolves a user name to its uid.
    pub(crate) lookup_user: fn(&str) -> Option<u32>,
}

impl Env {
    /// The running system: MemTotal from `/proc/meminfo` (0 if it cannot be
    /// read) and the system's user database.
    pub(crate) fn system() -> Env {
        Env {
            mem_total: crate::sys::MemInfo::read().total,
            lookup_user: |name| {
                nix::unistd::User::from_name(name)
                    .ok()
                    .flatten()
                    .map(|user| user.uid.as_raw())
            },
        }
    }
}

/// Gives an enumeration of the file its names: `as_str`, `NAMES`, `Display`,
/// and a `Deserialize` that accepts only those names and lists them when the
/// value is wrong. (`Serialize` is derived, with the same names.)
macro_rules! file_names {
    ($ty:ident { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            /// Every name the file may use, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            /// The name used in the file.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),*
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl serde::de::Visitor<'_> for Visitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(&one_of($ty::NAMES))
                    }
                    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<$ty, E> {
                        match value {
                            $($name => Ok($ty::$variant),)*
                            _ => Err(E::unknown_variant(value, $ty::NAMES)),
                        }
                    }
                }
                deserializer.deserialize_str(Visitor)
            }
        }
    };
}

/// "one of `a`, `b`, `c`", or "`a` or `b`", as serde words it.
fn one_of(names: &[&str]) -> String {
    match names {
        [a, b] => format!("`{a}` or `{b}`"),
        _ => format!(
            "one of {}",
            names
                .iter()
                .map(|name| format!("`{name}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

file_names!(Mode { Auto => "auto", Ebpf => "ebpf", Proc => "proc" });
file_names!(Scope { Process => "process", Total => "total" });
file_names!(Action { Kill => "kill", KillNow => "kill-now", Alert => "alert" });
file_names!(Memory { Rss => "rss", Pss => "pss", RssSwap => "rss+swap" });
file_names!(KillTarget { Process => "process", Group => "group", Cgroup => "cgroup" });
file_names!(Urgency { Low => "low", Normal => "normal", Critical => "critical" });
file_names!(Security { None => "none", StartTls => "starttls", Tls => "tls" });

impl Default for Monitor {
    /// `mode = "auto"`, the default scan interval.
    fn default() -> Monitor {
        Monitor {
            mode: Mode::Auto,
            scan_interval: DEFAULT_SCAN_INTERVAL,
        }
    }
}

impl Default for Enforce {
    /// No dry run, the default grace, the default `protect` list.
    fn default() -> Enforce {
        Enforce {
            dry_run: false,
            grace: DEFAULT_GRACE,
            protect: DEFAULT_PROTECT
                .iter()
                .map(|name| name.to_string())
                .collect(),
        }
    }
}

impl Default for Email {
    /// Disabled, with the defaults of the optional keys.
    fn default() -> Email {
        Email {
            enabled: false,
            server: String::new(),
            port: DEFAULT_SMTP_PORT,
            security: Security::StartTls,
            username: None,
            password_file: None,
            from: String::new(),
            to: Vec::new(),
            spool_dir: PathBuf::from(DEFAULT_SPOOL_DIR),
        }
    }
}

impl Config {
    /// The configuration used when `/etc/procespy.toml` does not exist:
    /// no limits (watch only), desktop popups on, email off, every other
    /// value at its default. The same as an empty file.
    pub(crate) fn builtin_default() -> Config {
        Config {
            monitor: Monitor::default(),
            enforce: Enforce::default(),
            limits: Limits::default(),
            notify: Notify {
                cooldown: DEFAULT_COOLDOWN,
                desktop: Desktop {
                    enabled: true,
                    users: Vec::new(),
                    urgency: Urgency::Critical,
                },
                email: Email::default(),
            },
            metrics: None,
            history: History::default(),
            origin: Origin::BuiltIn,
        }
    }

    /// Parses and validates a configuration text. `path` is only used in
    /// diagnostics and as the [`Origin`]; `env` supplies MemTotal and user
    /// lookups. Touches nothing outside its arguments.
    ///
    /// On error, returns every problem found: a TOML syntax error alone, else
    /// all unknown keys, wrong types and invalid values, sorted by position.
    #[cfg(test)]
    pub(crate) fn parse(text: &str, path: &Path, env: &Env) -> Result<Config, ConfigError> {
        validate::parse(text, path, env).map(|parsed| parsed.config)
    }

    /// Reads, parses and validates a configuration file, refusing it unless
    /// nobody but root can have written it or chosen it
    /// ([`security::read_trusted`]: a root-owned regular file, not writable
    /// by group or others, in directories only root can change), and only
    /// once it has stopped changing. When email is enabled with a
    /// `password_file`, that file is checked the same way (the diagnostic
    /// points at the `password_file` key). Uses [`Env::system`]. It may
    /// block (a file being rewritten is waited for): call it off the
    /// daemon's event loop.
    pub(crate) fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = security::read_trusted(path, "config", MAX_CONFIG_BYTES)
            .map_err(|message| Diagnostic::whole_file(path, message))?;
        let text = String::from_utf8(bytes).map_err(|err| not_utf8(path, &err))?;
        let parsed = validate::parse(&text, path, &Env::system())?;
        let email = &parsed.config.notify.email;
        if let (true, Some(file), Some(at)) = (
            email.enabled,
            &email.password_file,
            &parsed.password_file_at,
        ) && let Err(message) = security::read_trusted(file, "password file", MAX_SECRET_BYTES)
        {
            let mut diagnostic = at.clone();
            diagnostic.message =
                format!("notify.email.password_file {}: {message}", file.display());
            return Err(diagnostic.into());
        }
        Ok(parsed.config)
    }
}
