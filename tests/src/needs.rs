//! What a test needs before it can go on: root, programs, peers. Under
//! `CI=true` a missing need fails the test; elsewhere the test is skipped
//! with a printed reason.

use std::process::{Command, Stdio};

use crate::{
    lock::{self, Machine},
    run::in_ci,
};

/// Whether the test can go on as root: then the machine, shared with the
/// other tests of this run (and with no other run), to hold for the test's
/// length: `let Some(_machine) = require_root(test) else { return };`.
/// Fails under CI when this is not root.
pub fn require_root(test: &str) -> Option<Machine> {
    as_root(test).then(Machine::shared)
}

/// [`require_root`] for a test that measures timings: the machine, once no
/// other test of this run uses it, for this test alone.
pub fn require_root_alone(test: &str) -> Option<Machine> {
    as_root(test).then(Machine::alone)
}

fn as_root(test: &str) -> bool {
    if !nix::unistd::geteuid().is_root() {
        assert!(!in_ci(), "{test}: needs root, and CI=true forbids skipping");
        eprintln!("SKIPPED {test}: needs root (eBPF, signals, other users' processes)");
        return false;
    }
    lock::hold_the_run();
    true
}

/// Whether `what`, which `test` needs, is `present`; says how to get it when
/// it is not.
pub fn require(test: &str, what: &str, present: bool) -> bool {
    if present {
        return true;
    }
    assert!(
        !in_ci(),
        "{test}: {what} is missing, and CI=true forbids skipping (`cargo xtask setup --test` installs it)"
    );
    eprintln!("SKIPPED {test}: {what} is missing (`cargo xtask setup --test` installs it)");
    false
}

/// Whether `program args` runs and exits 0 (its output dropped).
pub fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `program` is on the PATH.
pub fn on_path(program: &str) -> bool {
    runs("sh", &["-c", &format!("command -v {program}")])
}
