//! Where the workspace and the binaries under test are.

use std::path::{Path, PathBuf};

/// The workspace's root directory.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_owned()
}

/// The directory of the binaries the tests were built with (`target/debug`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    // target/debug/deps/<test> → target/debug
    exe.parent()
        .and_then(Path::parent)
        .expect("tests run from target/*/deps")
        .to_owned()
}

/// Keeps `bytes` as `target/NAME`, where the README's captures are taken
/// from; returns the path.
pub fn keep_for_readme(name: &str, bytes: &[u8]) -> PathBuf {
    let target = target_dir();
    let path = target.parent().unwrap_or(Path::new(".")).join(name);
    std::fs::write(&path, bytes).expect("write the capture");
    println!("kept for the README: {}", path.display());
    path
}

/// The procespy binary: `$PROCESPY_BIN`, else the one beside the tests.
pub fn procespy_bin() -> PathBuf {
    let path = std::env::var_os("PROCESPY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("procespy"));
    built(
        path,
        "build it with `cargo xtask build` (or run `cargo xtask test`)",
    )
}

/// The test program (`procespy-testprog`).
pub(crate) fn testprog_bin() -> PathBuf {
    built(
        target_dir().join("procespy-testprog"),
        "run `cargo build -p procespy-tests`",
    )
}

/// The eBPF object, as `cargo xtask build-ebpf` leaves it.
pub fn ebpf_object() -> PathBuf {
    built(
        workspace().join("target/bpfel-unknown-none/release/procespy"),
        "run `cargo xtask build-ebpf`",
    )
}

/// `path`, which a build makes; fails the test, saying `how` to make it,
/// when it is missing.
fn built(path: PathBuf, how: &str) -> PathBuf {
    assert!(path.exists(), "{} does not exist: {how}", path.display());
    path
}
