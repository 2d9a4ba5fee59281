//! What kind of run this is (CI's or not, on the host or in a guest), and
//! waiting for something to happen within it.

use std::time::{Duration, Instant};

/// Whether this run is CI's (`CI=true`), where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether the tests run inside a guest of the kernel matrix
/// (`PROCESPY_GUEST=1`, set by `cargo xtask test-kernels`): under emulation,
/// where everything takes several times as long.
pub fn in_guest() -> bool {
    std::env::var("PROCESPY_GUEST").is_ok_and(|v| v == "1")
}

/// How long to wait for something that takes up to `host` on the host:
/// eight times as long in a guest. Every wait of this library goes through it.
pub fn patience(host: Duration) -> Duration {
    if in_guest() { host * 8 } else { host }
}

/// Asks `probe` every `every` until it answers `Some`, for at most
/// [`patience`]`(timeout)`; `None` when time ran out first. `probe` is
/// asked at least once, and once more after the deadline.
pub fn poll<T>(
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + patience(timeout);
    loop {
        let past = Instant::now() > deadline;
        if let Some(found) = probe() {
            return Some(found);
        }
        if past {
            return None;
        }
        std::thread::sleep(every);
    }
}
