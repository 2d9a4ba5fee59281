//! The command line: `procespy [run] | ps | top | history | check-config | status | reload`.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{config::Mode, control::DEFAULT_SOCKET, logging::LogFormat};

/// Keeps named processes inside their memory limits.
#[derive(Debug, Parser)]
#[command(name = "procespy", version, about, propagate_version = true)]
pub(crate) struct Cli {
    /// What to do; without one, run the daemon.
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    /// Options of the daemon, when no subcommand is given.
    #[command(flatten)]
    pub(crate) run: RunArgs,
    /// Logging options.
    #[command(flatten)]
    pub(crate) log: LogArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the daemon (the default).
    Run(RunArgs),
    /// Print a table of processes, largest memory first.
    Ps(PsArgs),
    /// Show what the history holds: a process's memory over time, or a limit's total.
    ///
    /// Reads the database that the daemon writes (`[history] path` of the
    /// configuration: `-c PATH`, else /etc/procespy.toml, else
    /// /var/lib/procespy/history.sqlite); the daemon need not run. The
    /// database is root's: run it with sudo. A process's table has its
    /// user, limit, command line and when it was first seen and exited,
    /// then one row per sample (TIME, RSS and its ANON, FILE and SHMEM
    /// parts, %LIMIT) with the actions (SIGTERM, SIGKILL, alert, ...) in
    /// time order. Recent stretches come from the finest tier, older ones
    /// from the coarser tiers. With NAME, every process of that name since
    /// --since is shown, newest first.
    History(HistoryArgs),
    /// Watch processes live: memory, CPU, limits and the daemon's actions.
    ///
    /// A header with the machine's CPU and memory, as gauges and as
    /// sparklines of the last minutes; the processes, largest memory first
    /// (PID, USER, NAME, RSS, %MEM, CPU% over the refresh interval, LIMIT,
    /// %LIMIT and a trend of each covered process's RSS); the daemon's last
    /// actions. Keys: `m` sorts by memory, `c` by CPU, `/` filters by name
    /// (Enter keeps the filter, Esc clears it), `q` or Ctrl-C quits. It
    /// needs neither root nor the daemon: without them the figures are
    /// /proc's alone, the limits those of the configuration, and the
    /// trends start when top does. As root with the daemon running, the
    /// limits and actions come from the daemon over its control socket,
    /// and the trends reach back over its last 10 minutes. The terminal is
    /// restored on quit, on SIGINT, SIGTERM or SIGHUP, and on a panic.
    Top(TopArgs),
    /// Validate a configuration file.
    CheckConfig(CheckConfigArgs),
    /// Ask the running daemon what it is doing.
    Status(StatusArgs),
    /// Ask the running daemon to re-read its configuration.
    Reload(SocketArgs),
    /// Show one desktop popup on a session bus (run by the daemon, as the
    /// bus's user).
    #[command(hide = true)]
    NotifyPopup(NotifyPopupArgs),
    /// Write the man pages and shell completions (for packaging).
    #[command(hide = true)]
    Generate(GenerateArgs),
}

/// Options of `procespy run`.
#[derive(Debug, Clone, Args)]
pub(crate) struct RunArgs {
    /// Configuration file [default: /etc/procespy.toml, or the built-in default when absent].
    #[arg(short, long, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// Decide and alert, but never send a signal.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Override `[monitor] mode`.
    #[arg(long, value_enum)]
    pub(crate) mode: Option<Mode>,
    /// Path of the control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub(crate) socket: PathBuf,
}

/// Logging options shared by all commands.
#[derive(Debug, Clone, Args)]
pub(crate) struct LogArgs {
    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    /// Less log output (-q: warnings and errors only, -qq: errors only).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: u8,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub(crate) log_format: LogFormat,
}

/// Options of `procespy ps`.
#[derive(Debug, Clone, Args)]
pub(crate) struct PsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Show only the N largest processes.
    #[arg(short = 'n', value_name = "N")]
    pub(crate) top: Option<usize>,
    /// Show only processes with this name (comm or executable file name).
    #[arg(long, value_name = "NAME")]
    pub(crate) name: Option<String>,
    /// Configuration whose limits are shown beside the processes they cover.
    #[arg(short, long, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// Also show each process's PSS (shared pages divided among the processes
    /// that map them); reads /proc/PID/smaps_rollup of every process shown.
    #[arg(long)]
    pub(crate) pss: bool,
}

/// Options of `procespy history`.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["name", "pid", "limit"])))]
pub(crate) struct HistoryArgs {
    /// The processes with this name.
    #[arg(value_name = "NAME")]
    pub(crate) name: Option<String>,
    /// The process with this PID (the latest, if the PID was reused).
    #[arg(long, value_name = "PID")]
    pub(crate) pid: Option<u32>,
    /// The total of a limit: its name or pattern, or its position among the
    /// `[[limit]]` tables (from 0).
    #[arg(long, value_name = "LIMIT")]
    pub(crate) limit: Option<String>,
    /// How far back, e.g. `10m`, `6h`, `7d`.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub(crate) since: String,
    /// Print JSON.
    #[arg(long, conflicts_with = "csv")]
    pub(crate) json: bool,
    /// Print CSV.
    #[arg(long)]
    pub(crate) csv: bool,
    /// Also draw the RSS over time, with the limit and the actions, into
    /// FILE (`.png` or `.svg`).
    #[arg(long, value_name = "FILE")]
    pub(crate) plot: Option<PathBuf>,
    /// Configuration whose `[history]` says where the history is.
    #[arg(short, long, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
}

/// Options of `procespy top`.
#[derive(Debug, Clone, Args)]
pub(crate) struct TopArgs {
    /// Time between two refreshes (at least 100ms).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = refresh_interval)]
    pub(crate) interval: Duration,
    /// Show at most N processes.
    #[arg(short = 'n', value_name = "N")]
    pub(crate) top: Option<usize>,
    /// Configuration whose limits are shown when no daemon answers.
    #[arg(short, long, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// Also show each process's PSS (shared pages divided among the processes
    /// that map them); reads /proc/PID/smaps_rollup of every process at each refresh.
    #[arg(long)]
    pub(crate) pss: bool,
    /// The daemon's control socket, asked for limits, history and actions.
    #[command(flatten)]
    pub(crate) socket: SocketArgs,
}

/// A refresh interval: a duration (`500ms`, `2s`) of at least
/// [`crate::top::MIN_INTERVAL`].
fn refresh_interval(text: &str) -> Result<Duration, String> {
    let interval = crate::config::parse_duration(text)?;
    if interval < crate::top::MIN_INTERVAL {
        return Err(format!(
            "{text} is too short: the least is {:?}",
            crate::top::MIN_INTERVAL
        ));
    }
    Ok(interval)
}

/// Options of `procespy check-config`.
#[derive(Debug, Clone, Args)]
pub(crate) struct CheckConfigArgs {
    /// The file to check [default: /etc/procespy.toml].
    pub(crate) path: Option<PathBuf>,
}

/// Options of the hidden `procespy notify-popup`.
#[derive(Debug, Clone, Args)]
pub(crate) struct NotifyPopupArgs {
    /// The session bus's socket (`/run/user/UID/bus`).
    #[arg(long, value_name = "PATH")]
    pub(crate) bus: PathBuf,
    /// The popup's urgency: low, normal or critical.
    #[arg(long, default_value = "critical",
          value_parser = clap::builder::PossibleValuesParser::new(crate::config::Urgency::NAMES))]
    pub(crate) urgency: String,
    /// The one-line summary.
    #[arg(long)]
    pub(crate) summary: String,
    /// The body.
    #[arg(long)]
    pub(crate) body: String,
}

/// Options of the hidden `procespy generate`.
#[derive(Debug, Clone, Args)]
pub(crate) struct GenerateArgs {
    /// Where to write `man/` and `completions/` (created when missing).
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
}

/// Options of `procespy status`.
#[derive(Debug, Clone, Args)]
pub(crate) struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Path of the control socket.
    #[command(flatten)]
    pub(crate) socket: SocketArgs,
}

/// The control socket's path.
#[derive(Debug, Clone, Args)]
pub(crate) struct SocketArgs {
    /// Path of the control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub(crate) socket: PathBuf,
}
