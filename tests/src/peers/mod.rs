//! Real peers for the alert tests, each a guard that stops what it started
//! when dropped: an SMTP server ([`smtp`]) and a desktop session with a
//! session bus and a notification server ([`desktop`]).
//!
//! Included by the test files that need them (`#[path]`), not by the
//! library: only those tests depend on Debian's packages.

pub mod desktop;
pub mod smtp;

/// Whether a peer the test needs is there: under `CI=true` a missing peer
/// fails the test; elsewhere the test is skipped with a printed reason.
pub fn require_peer(test: &str, peer: &str, present: bool) -> bool {
    if present {
        return true;
    }
    assert!(
        !procespy_tests::in_ci(),
        "{test}: {peer} is missing, and CI=true forbids skipping (`cargo xtask setup --test` installs it)"
    );
    eprintln!("SKIPPED {test}: {peer} is missing (`cargo xtask setup --test` installs it)");
    false
}

/// Whether `program` is on the PATH.
pub fn have_program(program: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}
