//! `cargo xtask build-ebpf`: builds procespy's eBPF object with nightly
//! for bpfel-unknown-none, then checks it for code the verifier refuses.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{cmd, setup};

/// The eBPF crate's package name.
pub const PACKAGE: &str = "procespy-ebpf";
/// The target the eBPF crate is built for.
pub const TARGET: &str = "bpfel-unknown-none";
/// Debug info and BTF: tp_btf programs and bpf_loop callbacks need BTF.
const RUSTFLAGS: &str = "-Cdebuginfo=2 -Clink-arg=--btf";
const LLVM_OBJDUMP: &str = "/usr/lib/llvm-22/bin/llvm-objdump";

/// Where `build-ebpf` leaves the eBPF object.
pub fn object_path() -> PathBuf {
    cmd::target_dir()
        .join(TARGET)
        .join("release")
        .join("procespy")
}

/// `cargo +nightly SUBCOMMAND -p procespy-ebpf --release --target
/// bpfel-unknown-none -Z build-std=core`, with the eBPF RUSTFLAGS and the
/// right bpf-linker first on PATH.
pub fn nightly_cargo(subcommand: &str) -> Command {
    let mut cargo = cmd::nightly_cargo();
    cargo
        .env("RUSTFLAGS", RUSTFLAGS)
        .args([subcommand, "-p", PACKAGE, "--release", "--target", TARGET])
        .args(["-Z", "build-std=core"]);
    if let Some(dir) = setup::find_bpf_linker().as_deref().and_then(Path::parent) {
        let path = env::var_os("PATH").unwrap_or_default();
        let dirs = [dir.to_path_buf()]
            .into_iter()
            .chain(env::split_paths(&path));
        if let Ok(path) = env::join_paths(dirs) {
            cargo.env("PATH", path);
        }
    }
    cargo
}

/// The `build-ebpf` command: setup (build set), then [`build`].
pub fn setup_and_build() -> Result<PathBuf> {
    setup::run(setup::Set::Build)?;
    build()
}

/// Builds the eBPF object, checks it, and returns its path.
pub fn build() -> Result<PathBuf> {
    cmd::run(
        &mut nightly_cargo("build"),
        "fix the errors above (missing toolchain pieces: `cargo xtask setup`)",
    )?;
    let object = object_path();
    check_object(&object)?;
    let size = fs::metadata(&object)
        .with_context(|| format!("the eBPF build left no object at {}", object.display()))?
        .len();
    println!("build-ebpf: {} ({size} bytes)", object.display());
    Ok(object)
}

/// Fails if the object has a `.text.unlikely*` section: panicking code,
/// which the verifier rejects ("last insn is not an exit or jmp").
fn check_object(object: &Path) -> Result<()> {
    let output = cmd::output(Command::new(LLVM_OBJDUMP).arg("-h").arg(object)).context(
        "llvm-objdump checks the eBPF object; `cargo xtask setup` installs it (llvm-22)",
    )?;
    if !output.status.success() {
        bail!(
            "`{LLVM_OBJDUMP} -h {}` failed: {}",
            object.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let sections = unlikely_sections(&String::from_utf8_lossy(&output.stdout));
    if !sections.is_empty() {
        bail!(
            "{} has panicking code in section(s) {}: the verifier refuses it \
             (\"last insn is not an exit or jmp\"). Remove the panic paths in {PACKAGE}: \
             use get()/get_mut() instead of indexing, masks, unwrap_or, wrapping or checked arithmetic",
            object.display(),
            sections.join(", ")
        );
    }
    Ok(())
}

/// Names of `.text.unlikely*` sections in `llvm-objdump -h` output.
fn unlikely_sections(objdump: &str) -> Vec<String> {
    objdump
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.next()?.parse::<u32>().ok()?;
            words.next()
        })
        .filter(|name| name.starts_with(".text.unlikely"))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panicking_sections_are_found() {
        let objdump = "\
Sections:
Idx Name                         Size     VMA              Type
  0                              00000000 0000000000000000
  2 .text                        00000260 0000000000000000 TEXT
  3 tp_btf/rss_stat              00000988 0000000000000000 TEXT
  4 .text.unlikely._ZN4core9panicking5panic 00000010 0000000000000000 TEXT
";
        assert_eq!(
            unlikely_sections(objdump),
            [".text.unlikely._ZN4core9panicking5panic"]
        );
        assert!(unlikely_sections("  2 .text 00000260 0 TEXT\n").is_empty());
    }
}
