//! `cargo xtask`: procespy's developer tasks.
//!
//! Every subcommand does what it needs first (setup before a build), so it
//! works on a fresh machine.

mod build;
mod cmd;
mod ebpf;
mod setup;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "procespy's developer tasks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building (and with --test, testing) needs; idempotent.
    Setup {
        /// Also the packages the integration tests use (dbus, dunst, Xvfb, SMTP, ...).
        #[arg(long)]
        test: bool,
    },
    /// Build the eBPF object (nightly, bpfel-unknown-none) and check it.
    BuildEbpf,
    /// Build the eBPF object, then the userspace workspace.
    Build {
        /// Build userspace in release mode.
        #[arg(long)]
        release: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup { test } => setup::run(setup::Set::from_test_flag(test)),
        Command::BuildEbpf => ebpf::setup_and_build().map(|_| ()),
        Command::Build { release } => build::run(release),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
