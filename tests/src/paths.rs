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

/// The procespy binary: `$PROCESPY_BIN`, else the one beside the tests.
pub fn procespy_bin() -> PathBuf {
    let path = std::env::var_os("PROCESPY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("procespy"));
    assert!(
        path.exists(),
        "{} does not exist: build it with `cargo xtask build` (or run `cargo xtask test`)",
        path.display()
    );
    path
}

/// The test program (`procespy-testprog`).
pub fn testprog_bin() -> PathBuf {
    let path = target_dir().join("procespy-testprog");
    assert!(
        path.exists(),
        "{} does not exist: run `cargo build -p procespy-tests`",
        path.display()
    );
    path
}
