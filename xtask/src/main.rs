//! `cargo xtask`: procespy's developer tasks.
//!
//! Every subcommand does what it needs first (setup, eBPF build), so
//! `cargo xtask run` and `cargo xtask test` work on a fresh machine.

mod bench;
mod build;
mod cmd;
mod dist;
mod ebpf;
mod run;
mod setup;
mod test;
mod vm;

use std::{process::ExitCode, time::Duration};

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
    /// Build everything, then run procespy as root on config/procespy.toml.
    Run {
        /// Extra arguments for `procespy run`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Setup, build, fmt, clippy, then every test of the workspace.
    Test {
        /// Extra arguments for `cargo test` (e.g. `-- --test lifecycle`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build the Debian package: release binary, man pages, completions, .deb
    /// (its path is the last line on stdout).
    Dist,
    /// Run one command as root in a guest booted with a Debian kernel under
    /// qemu, in this directory of the host's root (read-only); print its
    /// output and exit code.
    Vm {
        /// The kernel: 5.10, 6.1 or 6.12.
        #[arg(long, default_value = "6.1")]
        kernel: String,
        /// Seconds before the guest is killed, boot included.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// A variable for the command, besides PATH and HOME (repeatable).
        #[arg(long = "env", short, value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Also print the guest's serial console (kernel and init messages).
        #[arg(long)]
        console: bool,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Run the guest tests on Debian kernels under qemu and print the matrix;
    /// fails if any kernel fails.
    TestKernels {
        /// Kernels: 5.10, 6.1, 6.12, or host (the host's own); default: the three guests.
        versions: Vec<String>,
    },
    /// Run a benchmark; without NAME, list them.
    Bench {
        /// The benchmark to run.
        name: Option<String>,
        /// Extra arguments for the benchmark (`--runs 3`, or after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup { test } => setup::run(setup::Set::from_test_flag(test)),
        Command::BuildEbpf => ebpf::setup_and_build().map(|_| ()),
        Command::Build { release } => build::run(release),
        Command::Run { args } => run::run(&args),
        Command::Test { args } => test::run(&args),
        Command::Dist => dist::run().map(drop),
        Command::Vm {
            kernel,
            timeout,
            env,
            console,
            command,
        } => vm::cli(&vm::CliArgs {
            kernel: &kernel,
            argv: &command,
            env: &env,
            timeout: Duration::from_secs(timeout),
            console,
        }),
        Command::TestKernels { versions } => vm::matrix::run(&versions).and_then(|matrix| {
            print!("\n{}", matrix.table());
            matrix.check()
        }),
        Command::Bench { name, args } => bench::run(name.as_deref(), &args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
