//! `cargo xtask test`: everything CI checks, in order, stopping at the
//! first step that fails: setup, the eBPF build, fmt, clippy, every test
//! on the host, then the eBPF tests on each kernel of the matrix (Debian's
//! 5.10, 6.1 and 6.12 under qemu), closing with the matrix of results.

use std::{
    cell::RefCell,
    io::{BufRead, BufReader},
    process::Stdio,
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::{
    cmd, ebpf, setup,
    vm::{self, matrix::Row},
};

/// One step of the run: its heading and what it does.
type Step<'a> = (&'static str, Box<dyn Fn() -> Result<()> + 'a>);

/// The steps, each behind a heading; extra `args` go to `cargo test` (and
/// then the kernel matrix is left out: a partial run is a developer's).
pub fn run(args: &[String]) -> Result<()> {
    let host = RefCell::new(None);
    let mut steps: Vec<Step<'_>> = vec![
        (
            "setup (with test packages)",
            Box::new(|| setup::run(setup::Set::Test)),
        ),
        (
            "build the eBPF object",
            Box::new(|| ebpf::build().map(drop)),
        ),
        ("rustfmt", Box::new(fmt)),
        ("clippy (userspace)", Box::new(clippy)),
        ("clippy (eBPF crate)", Box::new(clippy_ebpf)),
        ("build the binaries (debug)", Box::new(build_bins)),
        (
            "cargo test",
            Box::new(|| {
                *host.borrow_mut() = Some(cargo_test(args)?);
                Ok(())
            }),
        ),
    ];
    if args.is_empty() {
        steps.push((
            "the kernel matrix (5.10, 6.1, 6.12 under qemu)",
            Box::new(|| kernel_matrix(host.borrow_mut().take())),
        ));
    }
    let total = steps.len();
    for (number, (name, step)) in steps.iter().enumerate() {
        println!("==> [{}/{total}] {name}", number + 1);
        step().with_context(|| format!("xtask test: step `{name}` failed"))?;
    }
    println!("==> all {total} steps passed");
    Ok(())
}

/// Runs the guest tests on every kernel of the matrix and prints the
/// matrix, with the host's row from the whole test run; fails when a row
/// did not pass.
fn kernel_matrix(host: Option<Row>) -> Result<()> {
    let mut matrix = vm::matrix::run(&[])?;
    matrix.rows.extend(host);
    print!("\n{}", matrix.table());
    matrix.check()
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

/// `cargo test --workspace` with PROCESPY_BIN pointing at the debug daemon;
/// returns the host's row of the kernel matrix.
///
/// The output passes through as it comes; the `test result:` lines of every
/// test binary are added up into one closing line, so the last line says
/// what the whole run did (the doc-test binaries that close cargo's output
/// often hold no tests).
fn cargo_test(args: &[String]) -> Result<Row> {
    let started = Instant::now();
    let binary = cmd::target_dir().join("debug").join("procespy");
    let mut command = cmd::cargo();
    command
        .env("PROCESPY_BIN", &binary)
        .args(["test", "--workspace", "--exclude", ebpf::PACKAGE])
        .args(args)
        .stdout(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start `{}`", cmd::describe(&command)))?;
    let mut tally = Tally::default();
    let stdout = child.stdout.take().context("cargo test's stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test's output")?;
        println!("{line}");
        tally.add(&line);
    }
    let status = child.wait().context("waiting for cargo test")?;
    println!(
        "\ntests: {} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.ignored
    );
    if !status.success() {
        bail!(
            "`{}` failed ({status}); see the failing tests above",
            cmd::describe(&command)
        );
    }
    if tally.passed == 0 {
        bail!("cargo test ran no test");
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    Ok(Row::from_tally(
        vm::matrix::HOST,
        release.trim(),
        tally.passed,
        tally.failed,
        started.elapsed(),
    ))
}

/// Sums of cargo's `test result:` lines.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) passed: u64,
    pub(crate) failed: u64,
    pub(crate) ignored: u64,
}

impl Tally {
    /// Adds a line like `test result: ok. 7 passed; 0 failed; 1 ignored; …`.
    pub(crate) fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match what {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_adds_result_lines() {
        let mut tally = Tally::default();
        tally.add("test result: ok. 7 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 1.61s");
        tally.add("test result: FAILED. 2 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out");
        tally.add("test something ... ok");
        assert_eq!(
            tally,
            Tally {
                passed: 9,
                failed: 3,
                ignored: 1
            }
        );
    }
}
