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
/// length: `let Some(_machine) = require_root() else { return };`.
/// Fails under CI when this is not root.
pub fn require_root() -> Option<Machine> {
    as_root().then(Machine::shared)
}

/// [`require_root`] for a test that measures timings: the machine, once no
/// other test of this run uses it, for this test alone.
pub fn require_root_alone() -> Option<Machine> {
    as_root().then(Machine::alone)
}

fn as_root() -> bool {
    if !nix::unistd::geteuid().is_root() {
        skip(
            "root (eBPF, signals, other users' processes)",
            "run the tests as root",
        );
        return false;
    }
    lock::hold_the_run();
    true
}

/// Whether `what`, which the test needs, is `present`.
pub fn require(what: &str, present: bool) -> bool {
    if !present {
        skip(what, "`cargo xtask setup --test` installs it");
    }
    present
}

/// Fails the test under CI, where nothing may be skipped, or else says
/// that it is skipped for want of `what`.
fn skip(what: &str, how: &str) {
    let test = this_test();
    assert!(
        !in_ci(),
        "{test}: needs {what}, and CI=true forbids skipping; {how}"
    );
    eprintln!("SKIPPED {test}: needs {what}; {how}");
}

/// The running test's name: libtest names each test's thread after it.
fn this_test() -> String {
    std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_owned()
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
pub(crate) fn on_path(program: &str) -> bool {
    runs("sh", &["-c", &format!("command -v {program}")])
}
