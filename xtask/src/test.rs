//! `cargo xtask test`: everything CI checks, in order, stopping at the
//! first step that fails.

use anyhow::{Context, Result};

use crate::{cmd, ebpf, setup};

/// The steps, each behind a heading; extra `args` go to `cargo test`.
pub fn run(args: &[String]) -> Result<()> {
    let steps: [(&str, &dyn Fn() -> Result<()>); 7] = [
        ("setup (with test packages)", &|| {
            setup::run(setup::Set::Test)
        }),
        ("build the eBPF object", &|| ebpf::build().map(drop)),
        ("rustfmt", &fmt),
        ("clippy (userspace)", &clippy),
        ("clippy (eBPF crate)", &clippy_ebpf),
        ("build the binaries (debug)", &build_bins),
        ("cargo test", &|| cargo_test(args)),
    ];
    let total = steps.len();
    for (number, (name, step)) in steps.iter().enumerate() {
        println!("==> [{}/{total}] {name}", number + 1);
        step().with_context(|| format!("xtask test: step `{name}` failed"))?;
    }
    println!("==> all {total} steps passed");
    Ok(())
}

fn fmt() -> Result<()> {
    cmd::run(
        cmd::cargo().args(["fmt", "--all", "--check"]),
        "run `cargo fmt --all` to format the code",
    )
}

fn clippy() -> Result<()> {
    cmd::run(
        cmd::cargo()
            .args(["clippy", "--workspace", "--exclude", ebpf::PACKAGE])
            .args(["--all-targets", "--", "-D", "warnings"]),
        "fix the lints above",
    )
}

fn clippy_ebpf() -> Result<()> {
    cmd::run(
        ebpf::nightly_cargo("clippy").args(["--", "-D", "warnings"]),
        "fix the lints above in procespy-ebpf",
    )
}

/// The debug binaries the integration tests start.
fn build_bins() -> Result<()> {
    cmd::run(
        cmd::cargo().args(["build", "--workspace", "--exclude", ebpf::PACKAGE, "--bins"]),
        "fix the compile errors above",
    )
}

/// `cargo test --workspace` with PROCESPY_BIN pointing at the debug daemon.
fn cargo_test(args: &[String]) -> Result<()> {
    let binary = cmd::target_dir().join("debug").join("procespy");
    cmd::run(
        cmd::cargo()
            .env("PROCESPY_BIN", &binary)
            .args(["test", "--workspace", "--exclude", ebpf::PACKAGE])
            .args(args),
        "see the failing tests above",
    )
}
