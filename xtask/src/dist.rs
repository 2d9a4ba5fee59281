//! `cargo xtask dist`: the Debian package.
//!
//! 1. setup (build set, plus cargo-deb) and the eBPF object;
//! 2. the release binary (`cargo build --release -p procespy`);
//! 3. its man pages (then gzipped) and shell completions, written by the
//!    hidden `procespy generate --out <target>/release/dist` (xtask does not
//!    depend on the procespy crate: that crate's build needs the eBPF object);
//! 4. `cargo deb -p procespy --no-build`, which packs what
//!    `[package.metadata.deb]` in procespy/Cargo.toml lists, with the unit
//!    and maintainer scripts of `packaging/`.
//!
//! The last line printed on stdout is the path of the .deb.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context, Result, bail};

use crate::{cmd, ebpf, setup};

/// Builds the .deb and returns its path.
pub fn run() -> Result<PathBuf> {
    ebpf::setup_and_build()?;
    setup::cargo_deb()?;
    cmd::run(
        cmd::cargo().args(["build", "--release", "-p", "procespy", "--bin", "procespy"]),
        "fix the compile errors above",
    )?;
    let release = cmd::target_dir().join("release");
    let dist = release.join("dist");
    generate(&release.join("procespy"), &dist)?;
    let deb = cargo_deb(&cmd::target_dir().join("debian"))?;
    println!("{}", deb.display());
    Ok(deb)
}

/// `procespy generate --out DIR`, into a fresh DIR.
fn generate(procespy: &Path, dist: &Path) -> Result<()> {
    if dist.exists() {
        std::fs::remove_dir_all(dist).with_context(|| format!("removing {}", dist.display()))?;
    }
    let mut command = std::process::Command::new(procespy);
    command.args(["generate", "--out"]).arg(dist);
    cmd::run(
        &mut command,
        "the release binary could not write its man pages and completions",
    )?;
    // Debian ships man pages gzipped; cargo-deb compresses only the assets
    // it did not build, which these are not taken for.
    let man = dist.join("man");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&man)
        .with_context(|| format!("reading {}", man.display()))?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "1"))
        .collect();
    pages.sort();
    let mut gzip = std::process::Command::new("gzip");
    gzip.args(["-9", "-n"]).args(&pages);
    cmd::run(&mut gzip, "gzip is needed to compress the man pages")
}

/// `cargo deb -p procespy --no-build --output DIR`; returns the .deb's path
/// (the last line cargo-deb prints on stdout).
fn cargo_deb(output: &Path) -> Result<PathBuf> {
    let mut command = cmd::cargo();
    command
        .args(["deb", "-p", "procespy", "--no-build", "--output"])
        .arg(output)
        .stdout(Stdio::piped());
    eprintln!("$ {}", cmd::describe(&command));
    let out = command
        .output()
        .with_context(|| format!("could not start `{}`", cmd::describe(&command)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}); see cargo-deb's messages above",
            cmd::describe(&command),
            out.status
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = stdout
        .lines()
        .map(str::trim)
        .rfind(|line| line.ends_with(".deb"))
        .map(PathBuf::from)
        .with_context(|| format!("cargo-deb printed no .deb path: {stdout}"))?;
    if !path.is_file() {
        bail!("cargo-deb named {}, which does not exist", path.display());
    }
    Ok(path)
}
