//! The command line: `procespy [run] | ps | check-config | status | reload`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Default location of the configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/procespy.toml";
/// Default location of the daemon's control socket.
pub const DEFAULT_SOCKET: &str = "/run/procespy.sock";

/// Keeps named processes inside their memory limits.
#[derive(Debug, Parser)]
#[command(name = "procespy", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do; without one, run the daemon.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of the daemon, when no subcommand is given.
    #[command(flatten)]
    pub run: RunArgs,
    /// Logging options.
    #[command(flatten)]
    pub log: LogArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (the default).
    Run(RunArgs),
    /// Print a table of processes, largest memory first.
    Ps(PsArgs),
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
pub struct RunArgs {
    /// Configuration file [default: /etc/procespy.toml, or the built-in default when absent].
    #[arg(short, long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Decide and alert, but never send a signal.
    #[arg(long)]
    pub dry_run: bool,
    /// Override `[monitor] mode`.
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Path of the control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

/// `--mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// eBPF where it loads, else /proc polling.
    Auto,
    /// eBPF or refuse to start.
    Ebpf,
    /// /proc polling only.
    Proc,
}

/// Logging options shared by all commands.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Less log output (-q: warnings and errors only, -qq: errors only).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    pub quiet: u8,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Options of `procespy ps`.
#[derive(Debug, Clone, Args)]
pub struct PsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Show only the N largest processes.
    #[arg(short = 'n', value_name = "N")]
    pub top: Option<usize>,
    /// Show only processes with this name (comm or executable file name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Configuration whose limits are shown beside the processes they cover.
    #[arg(short, long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// Options of `procespy check-config`.
#[derive(Debug, Clone, Args)]
pub struct CheckConfigArgs {
    /// The file to check [default: /etc/procespy.toml].
    pub path: Option<PathBuf>,
}

/// Options of the hidden `procespy notify-popup`.
#[derive(Debug, Clone, Args)]
pub struct NotifyPopupArgs {
    /// The session bus's socket (`/run/user/UID/bus`).
    #[arg(long, value_name = "PATH")]
    pub bus: PathBuf,
    /// The popup's urgency: low, normal or critical.
    #[arg(long, default_value = "critical",
          value_parser = clap::builder::PossibleValuesParser::new(crate::config::Urgency::NAMES))]
    pub urgency: String,
    /// The one-line summary.
    #[arg(long)]
    pub summary: String,
    /// The body.
    #[arg(long)]
    pub body: String,
}

/// Options of the hidden `procespy generate`.
#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// Where to write `man/` and `completions/` (created when missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Options of `procespy status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Path of the control socket.
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// The control socket's path.
#[derive(Debug, Clone, Args)]
pub struct SocketArgs {
    /// Path of the control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}
