//! Debian's own kernels booted under qemu, with the host's root shared
//! read-only over 9p, to run commands (and the integration tests) on
//! kernels other than the host's.
//!
//! [`prepare`] fetches a kernel once into the cache (outside the work tree)
//! and builds its initramfs; [`run`] boots it and runs one [`GuestCommand`].
//! `cargo xtask vm` runs one command; `cargo xtask test-kernels` runs the
//! guest tests of [`matrix::GUEST_TESTS`] on each kernel.

mod apt;
mod cache;
mod initramfs;
mod kernels;
pub mod matrix;
mod modules;
mod qemu;

use std::{env, time::Duration};

use anyhow::{Context, Result, bail};

pub use kernels::{KERNELS, Kernel, PreparedKernel, prepare};
pub use qemu::{GuestCommand, GuestRun, run};

use crate::setup;

/// What `cargo xtask vm` was asked for.
pub struct CliArgs<'a> {
    /// The kernel's label.
    pub kernel: &'a str,
    pub argv: &'a [String],
    /// `KEY=VALUE` pairs, added to PATH and HOME.
    pub env: &'a [String],
    pub timeout: Duration,
    /// Print the serial console after the output.
    pub console: bool,
}

/// `cargo xtask vm`: runs a command as root in a guest, in the current
/// directory; prints its output and fails unless it exits 0.
pub fn cli(args: &CliArgs) -> Result<()> {
    setup::vm()?;
    let kernel = prepare(args.kernel)?;
    let mut command = GuestCommand::new(args.argv.iter().cloned());
    for pair in args.env {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("--env {pair:?}: it must be KEY=VALUE");
        };
        command = command.env(key, value);
    }
    command.cwd = env::current_dir().context("cannot read the current directory")?;
    command.timeout = args.timeout;
    command.echo = true;
    let run = run(&kernel, &command)?;
    if args.console {
        println!("vm: the guest's console:\n{}", run.console.trim_end());
    }
    if let Some(failure) = run.failure() {
        bail!("{} ({}): {failure}", kernel.label, kernel.package);
    }
    let code = run.exit_code.unwrap_or_default();
    println!(
        "vm: {} ({}): exit code {code} after {:.1} s, booted in {}",
        kernel.label,
        run.uname_r,
        run.wall.as_secs_f64(),
        seconds(run.booted_in)
    );
    if code != 0 {
        bail!("the command exited with {code} in the guest");
    }
    Ok(())
}

/// "5.2 s", or "?" when unknown.
fn seconds(duration: Option<Duration>) -> String {
    duration.map_or_else(|| "?".into(), |d| format!("{:.1} s", d.as_secs_f64()))
}
