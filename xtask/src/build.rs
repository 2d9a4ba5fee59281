//! `cargo xtask build`: the eBPF object, then the userspace workspace.

use anyhow::Result;

use crate::{cmd, ebpf};

/// Builds the eBPF object (after setup), then every userspace crate.
pub fn run(release: bool) -> Result<()> {
    ebpf::setup_and_build()?;
    userspace(release)
}

/// `cargo build --workspace --exclude procespy-ebpf [--release]`.
///
/// The eBPF crate is excluded by name: `--workspace` ignores
/// `default-members`, and that crate only builds for bpfel-unknown-none.
pub fn userspace(release: bool) -> Result<()> {
    let mut cargo = cmd::cargo();
    cargo.args(["build", "--workspace", "--exclude", ebpf::PACKAGE]);
    if release {
        cargo.arg("--release");
    }
    cmd::run(&mut cargo, "fix the compile errors above")
}
