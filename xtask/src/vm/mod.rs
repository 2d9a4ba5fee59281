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

/// `cargo xtask vm`: runs `argv` as root in a guest booted with kernel
/// `label`, in the current directory, with `env` (`KEY=VALUE`) added to PATH
/// and HOME; prints its output and fails unless it exits 0.
pub fn cli(label: &str, argv: &[String], env: &[String], timeout: Duration) -> Result<()> {
    setup::vm()?;
    let kernel = prepare(label)?;
    let mut command = GuestCommand::new(argv.iter().cloned());
    for pair in env {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("--env {pair:?}: it must be KEY=VALUE");
        };
        command = command.env(key, value);
    }
    command.cwd = env::current_dir().context("cannot read the current directory")?;
    command.timeout = timeout;
    command.echo = true;
    let run = run(&kernel, &command)?;
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
