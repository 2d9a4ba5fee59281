//! Entry point: parses the command line, runs the subcommand, maps its
//! error to an exit code. The one place that knows both the command line's
//! types and the modules that do the work: each subcommand gets its options
//! as the module's own types, and returns an error or nothing.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::{
    cli::{Cli, Command},
    config::ConfigError,
    logging::{self, Priority, Settings},
};

/// Exit code for success.
const EXIT_OK: u8 = 0;
/// Exit code for an invalid configuration or bad arguments.
const EXIT_USAGE: u8 = 1;
/// Exit code for a runtime failure.
const EXIT_RUNTIME: u8 = 2;

/// How a subcommand failed, and so how procespy exits.
enum Failure {
    /// The configuration or the arguments are wrong (exit 1): the message.
    Usage(String),
    /// Something failed at run time (exit 2).
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    /// A [`ConfigError`] anywhere in the chain is the user's to fix; its top
    /// message says it (the diagnostics themselves, or their count).
    fn from(err: anyhow::Error) -> Self {
        if err.chain().any(|cause| cause.is::<ConfigError>()) {
            Failure::Usage(err.to_string())
        } else {
            Failure::Runtime(err)
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
    logging::init(&Settings {
        verbose: cli.log.verbose,
        quiet: cli.log.quiet,
        format: cli.log.log_format,
    });
    match run(cli.command, cli.run).map_err(Failure::from) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(failure) => {
            let priority = logging::stderr_prefix(Priority::Error);
            let (text, code) = match failure {
                Failure::Usage(message) => (message, EXIT_USAGE),
                Failure::Runtime(err) => (format!("{err:#}"), EXIT_RUNTIME),
            };
            eprintln!("{priority}procespy: {text}");
            ExitCode::from(code)
        }
    }
}

/// Runs one subcommand (the daemon when none is given).
fn run(command: Option<Command>, default_run: crate::cli::RunArgs) -> anyhow::Result<()> {
    match command.unwrap_or(Command::Run(default_run)) {
        Command::Run(args) => crate::daemon::run(crate::daemon::Options {
            config: args.config,
            dry_run: args.dry_run,
            mode: args.mode,
            socket: args.socket,
        }),
        Command::Ps(args) => crate::ps::run(&crate::ps::Options {
            json: args.json,
            top: args.top,
            name: args.name,
            config: args.config,
            pss: args.pss,
        }),
        Command::History(args) => crate::history::show::run(&crate::history::show::Options {
            name: args.name,
            pid: args.pid,
            limit: args.limit,
            since: args.since,
            format: if args.json {
                crate::history::show::Format::Json
            } else if args.csv {
                crate::history::show::Format::Csv
            } else {
                crate::history::show::Format::Table
            },
            plot: args.plot,
            config: args.config,
        }),
        Command::Top(args) => crate::top::run(&crate::top::Options {
            interval: args.interval,
            top: args.top,
            config: args.config,
            pss: args.pss,
            socket: args.socket.socket,
        }),
        Command::CheckConfig(args) => crate::config::check_config(args.path.as_deref()),
        Command::Status(args) => crate::control::status_command(&args.socket.socket, args.json),
        Command::Reload(args) => crate::control::reload_command(&args.socket),
        Command::NotifyPopup(args) => crate::alerts::popup::run(&crate::alerts::popup::Popup {
            bus: args.bus,
            urgency: args.urgency,
            summary: args.summary,
            body: args.body,
        }),
        Command::Generate(args) => crate::generate::run(&args.out, Cli::command()),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn pages_and_completions_are_written_without_hidden_commands() {
        let out =
            std::env::temp_dir().join(format!("procespy-generate-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let written = crate::generate::generate(&out, Cli::command()).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.strip_prefix(&out).unwrap().to_string_lossy().into_owned())
            .collect();
        for expected in [
            "man/procespy.1",
            "man/procespy-run.1",
            "man/procespy-ps.1",
            "man/procespy-history.1",
            "man/procespy-top.1",
            "man/procespy-check-config.1",
            "man/procespy-status.1",
            "man/procespy-reload.1",
            "completions/procespy.bash",
            "completions/_procespy",
            "completions/procespy.fish",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
        assert!(
            !names
                .iter()
                .any(|n| n.contains("popup") || n.contains("generate"))
        );
        let page = std::fs::read_to_string(out.join("man/procespy.1")).unwrap();
        assert!(page.contains("\n.TH procespy 1 "), "{page}");
        assert_eq!(page.matches(".el .ds Aq").count(), 1, "{page}");
        for section in [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "OPTIONS",
            "SUBCOMMANDS",
            "FILES",
            "SIGNALS",
            "EXIT STATUS",
            "SEE ALSO",
        ] {
            assert!(page.contains(&format!(".SH {section}")), "{section}");
        }
        assert!(page.contains("check\\-config"));
        assert!(!page.contains("notify\\-popup"));
        let bash = std::fs::read_to_string(out.join("completions/procespy.bash")).unwrap();
        assert!(bash.contains("check-config") && !bash.contains("notify-popup"));
        assert!(!bash.contains("generate"));
        let fish = std::fs::read_to_string(out.join("completions/procespy.fish")).unwrap();
        assert!(fish.contains("complete -c procespy"));
        std::fs::remove_dir_all(&out).unwrap();
    }
}
