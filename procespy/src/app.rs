//! Entry point: parses the command line, runs a command, maps errors to exit codes.

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

/// Exit code for success.
pub const EXIT_OK: u8 = 0;
/// Exit code for an invalid configuration or bad arguments.
pub const EXIT_USAGE: u8 = 1;
/// Exit code for a runtime failure.
pub const EXIT_RUNTIME: u8 = 2;

/// A failure, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The configuration or the arguments are wrong (exit 1).
    #[error("{0}")]
    Usage(String),
    /// Something failed at run time (exit 2).
    #[error(transparent)]
    Runtime(#[from] anyhow::Error),
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => EXIT_USAGE,
            Failure::Runtime(_) => EXIT_RUNTIME,
        }
    }
}

/// Runs procespy with the process's arguments and returns its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() {
                EXIT_USAGE
            } else {
                EXIT_OK
            });
        }
    };
    crate::logging::init(&cli.log);
    let result = match cli.command {
        None => crate::daemon::run(cli.run),
        Some(Command::Run(args)) => crate::daemon::run(args),
        Some(Command::Ps(args)) => crate::ps::run(&args),
        Some(Command::CheckConfig(args)) => crate::config::check_config_command(&args),
        Some(Command::Status(args)) => crate::control::status_command(&args),
        Some(Command::Reload(args)) => crate::control::reload_command(&args),
        Some(Command::NotifyPopup(args)) => crate::alerts::popup::run(&args),
        Some(Command::Generate(args)) => crate::generate::run(&args),
    };
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(failure) => {
            let priority = crate::logging::stderr_prefix(crate::logging::Priority::Error);
            eprintln!("{priority}procespy: {}", render(&failure));
            ExitCode::from(failure.exit_code())
        }
    }
}

fn render(failure: &Failure) -> String {
    match failure {
        Failure::Usage(message) => message.clone(),
        Failure::Runtime(err) => format!("{err:#}"),
    }
}
