//! Workspace paths and helpers to run child processes with clear errors.

use std::{
    env,
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{Context, Result, bail};

/// The workspace root (the directory holding the top-level Cargo.toml).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the root) or `<root>/target`.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root().join(dir),
        _ => root().join("target"),
    }
}

/// Whether this process runs as root (effective uid 0), read from
/// `/proc/self/status` ("Uid: real effective saved fs").
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|status| effective_uid(&status) == Some(0))
}

fn effective_uid(status: &str) -> Option<u32> {
    let uids = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}

/// `cargo` of the toolchain running xtask (stable), started in the workspace root.
pub fn cargo() -> Command {
    let program = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.current_dir(root());
    cmd
}

/// Variables cargo and rustup set for xtask that would pull a nightly child
/// back onto the stable toolchain or its flags.
const TOOLCHAIN_VARS: &[&str] = &[
    "RUSTUP_TOOLCHAIN",
    "RUSTUP_TOOLCHAIN_SOURCE",
    "CARGO",
    "RUSTC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTDOC",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
];

/// `rustup run nightly cargo`, started in the workspace root, with the
/// inherited toolchain and flag variables removed.
pub fn nightly_cargo() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo"]).current_dir(root());
    for var in TOOLCHAIN_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// The command line as a shell would show it, with the variables set for it
/// (except PATH, long and only ever reordered here).
pub fn describe(cmd: &Command) -> String {
    let mut words: Vec<String> = cmd
        .get_envs()
        .filter(|(key, _)| *key != "PATH")
        .filter_map(|(key, value)| Some((key, value?)))
        .map(|(key, value)| format!("{}={}", key.display(), quote(value)))
        .collect();
    let program = cmd.get_program();
    // cargo() runs $CARGO, a long toolchain path; it is the `cargo` the user ran.
    if env::var_os("CARGO").is_some_and(|cargo| cargo == program) {
        words.push("cargo".into());
    } else {
        words.push(quote(program));
    }
    words.extend(cmd.get_args().map(quote));
    words.join(" ")
}

/// `word` as one shell word: bare when it is safe, else single-quoted.
pub fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=+./:@,".contains(c))
    {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Prints the command, runs it with inherited stdio, and fails unless it
/// exits 0. `fix` tells the user what to do when it fails.
pub fn run(cmd: &mut Command, fix: &str) -> Result<()> {
    let line = describe(cmd);
    eprintln!("$ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{line}`; {fix}"))?;
    if !status.success() {
        bail!("`{line}` failed ({status}); {fix}");
    }
    Ok(())
}

/// Runs a command quietly and returns its output; fails only if it cannot start.
pub fn output(cmd: &mut Command) -> Result<Output> {
    cmd.output()
        .with_context(|| format!("could not start `{}`", describe(cmd)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_uid_is_the_second() {
        let status = "Name:\txtask\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Name:\txtask\n"), None);
    }

    #[test]
    fn commands_are_shown_quoted() {
        let mut cmd = Command::new("cargo");
        cmd.env("RUSTFLAGS", "-Cdebuginfo=2 -Clink-arg=--btf")
            .env("PATH", "/x")
            .args(["build", "-Z", "build-std=core"]);
        assert_eq!(
            describe(&cmd),
            "RUSTFLAGS='-Cdebuginfo=2 -Clink-arg=--btf' cargo build -Z build-std=core"
        );
    }
}
