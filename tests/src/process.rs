//! Processes: running commands, signals, exits, VmRSS, the clock.

use std::{
    process::{Child, Command, ExitStatus},
    time::Duration,
};

use anyhow::{Result, anyhow, bail};

use crate::run::{patience, poll};

/// Runs `command` and returns its standard output; fails the test, with
/// everything it printed, unless it exits 0.
pub fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("{command:?} does not start: {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: i32) -> Result<()> {
    // SAFETY: kill(2) with a pid we started.
    if unsafe { libc::kill(pid as i32, sig) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// Waits for `child` at most [`patience`]`(timeout)`; kills it after that.
pub(crate) fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<ExitStatus> {
    let mut waited = Ok(None);
    poll(timeout, Duration::from_millis(20), || {
        waited = child.try_wait();
        (!matches!(waited, Ok(None))).then_some(())
    });
    match waited? {
        Some(exit) => Ok(exit),
        None => {
            let _ = child.kill();
            bail!(
                "process {} did not exit within {:?}",
                child.id(),
                patience(timeout)
            )
        }
    }
}

/// Stops `child`: SIGTERM, and SIGKILL when it has not exited within 5 s.
pub(crate) fn terminate(child: &mut Child) {
    let _ = signal(child.id(), libc::SIGTERM);
    if wait_timeout(child, Duration::from_secs(5)).is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `VmRSS` of `pid` in bytes, from `/proc/PID/status`.
pub fn vm_rss(pid: u32) -> Result<u64> {
    status_bytes(pid, "VmRSS")
}

/// `VmHWM` of `pid` in bytes: the largest its RSS has been since it started,
/// or since [`reset_vm_hwm`].
pub fn vm_hwm(pid: u32) -> Result<u64> {
    status_bytes(pid, "VmHWM")
}

/// `RssFile` of `pid` in bytes: its resident pages of mapped files (its
/// executable's among them).
pub fn rss_file(pid: u32) -> Result<u64> {
    status_bytes(pid, "RssFile")
}

/// Makes `pid`'s `VmHWM` its RSS now (`5` into `/proc/PID/clear_refs`).
pub fn reset_vm_hwm(pid: u32) -> Result<()> {
    Ok(std::fs::write(format!("/proc/{pid}/clear_refs"), "5")?)
}

/// A `FIELD:  N kB` line of `/proc/PID/status`, in bytes.
fn status_bytes(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .ok_or_else(|| anyhow!("no {field} for {pid}"))
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of the test program's
/// `progress` and `term` lines. Async-signal-safe (clock_gettime(2) only):
/// the test program's SIGTERM handler calls it.
pub fn monotonic_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is there");
    now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64
}
