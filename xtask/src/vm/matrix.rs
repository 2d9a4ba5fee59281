//! `cargo xtask test-kernels`: the guest tests on each kernel (and on the
//! host, when asked for), reported as one matrix.

use std::{
    collections::HashMap,
    ffi::OsStr,
    fs,
    io::{BufRead, BufReader},
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{GuestCommand, GuestRun, KERNELS, Kernel, PreparedKernel};
use crate::{cmd, ebpf, setup, test::Tally};

/// Tests of one procespy-tests target to run in the guests: libtest name
/// filters, matched as substrings, or as whole names with `exact`.
pub struct GuestTests {
    /// The test target (`tests/tests/NAME/main.rs` or `tests/tests/NAME.rs`).
    pub target: &'static str,
    /// A test runs when its name matches any of these.
    pub filters: &'static [&'static str],
    /// Match whole test names (libtest's `--exact`).
    pub exact: bool,
}

/// What runs on every kernel of the matrix: what proves the programs load
/// and do their work there (the kernel-independent rest runs on the host).
pub const GUEST_TESTS: &[GuestTests] = &[GuestTests {
    target: "integration",
    filters: &[
        // Tracking: the kernel's RSS figure, every short process, renames.
        "tracking::rss_from_the_kernel_map_tracks_vmrss_step_by_step",
        "tracking::every_exec_and_exit_of_2000_short_processes_reaches_the_table",
        "tracking::a_process_that_renames_itself_shows_its_new_name",
        // Enforcement: kill, grace, kill-now (one thread and four), protected,
        // PID reuse, total scope.
        "enforce::kill_sends_sigterm_ebpf",
        "enforce::kill_escalates_to_sigkill_after_grace_ebpf",
        "enforce::kill_now_dies_in_the_kernel_before_limit_plus_1mib",
        "enforce::kill_now_stops_four_growing_threads_within_limit_plus_4mib",
        "enforce::under_limit_other_names_and_protected_are_never_signalled",
        "enforce::a_reused_pid_is_never_signalled",
        "enforce::total_scope_kills_the_largest_and_spares_the_rest",
        // Nothing stays loaded.
        "tracking::sigterm_detaches_every_program",
    ],
    exact: true,
}];

/// The label that puts the host's own kernel in the matrix.
pub const HOST: &str = "host";
/// How long one guest may take, boot and every test included.
const GUEST_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Host variables the tests see too, when set.
const PASSED_THROUGH: &[&str] = &["CI", "RUST_BACKTRACE"];

/// Builds release procespy and the tests, then runs [`GUEST_TESTS`] on each
/// of `versions` ("5.10", "6.1", "6.12", or [`HOST`]; none: every guest
/// kernel), one after the other. Fails only when nothing could be built:
/// a kernel that fails is a row of the matrix (see [`Matrix::check`]).
pub fn run(versions: &[String]) -> Result<Matrix> {
    let labels: Vec<&str> = if versions.is_empty() {
        KERNELS.iter().map(|kernel| kernel.label).collect()
    } else {
        versions.iter().map(String::as_str).collect()
    };
    for label in labels.iter().filter(|label| **label != HOST) {
        Kernel::find(label)?;
    }
    if labels.iter().any(|label| *label != HOST) {
        setup::vm()?;
    }
    let plan = Plan::build()?;
    let mut matrix = Matrix::default();
    for label in labels {
        println!("==> test-kernels: {label}");
        let row = if label == HOST {
            plan.on_host()?
        } else {
            plan.in_guest(label)
        };
        println!("test-kernels: {}", row.summary());
        matrix.rows.push(row);
    }
    Ok(matrix)
}

/// The test run every kernel gets: one shell script, with its environment
/// and directory.
struct Plan {
    command: GuestCommand,
}

impl Plan {
    /// Builds the eBPF object, release procespy and the test executables.
    fn build() -> Result<Plan> {
        ebpf::build()?;
        cmd::run(
            cmd::cargo().args(["build", "--release", "-p", "procespy"]),
            "fix the compile errors above",
        )?;
        let executables = build_tests()?;
        let script = script(GUEST_TESTS, &executables)?;
        let cwd = executables
            .values()
            .next()
            .map(|test| test.package_dir.clone())
            .context("procespy-tests has no test executable")?;
        let procespy = cmd::target_dir().join("release").join("procespy");
        let mut command = GuestCommand::new(["sh", "-c", &script])
            .env("PROCESPY_BIN", procespy.to_string_lossy())
            .env("PROCESPY_GUEST", "1");
        for var in PASSED_THROUGH {
            if let Ok(value) = std::env::var(var) {
                command = command.env(*var, value);
            }
        }
        command.cwd = cwd;
        command.timeout = GUEST_TIMEOUT;
        command.echo = true;
        Ok(Plan { command })
    }

    fn in_guest(&self, label: &str) -> Row {
        match super::prepare(label) {
            Ok(kernel) => self.on_kernel(&kernel),
            Err(err) => Row::broken(label, "", format!("{err:#}"), Duration::ZERO),
        }
    }

    fn on_kernel(&self, kernel: &PreparedKernel) -> Row {
        match super::run(kernel, &self.command) {
            Ok(run) => Row::from_run(kernel.label, &kernel.release, &run),
            Err(err) => Row::broken(
                kernel.label,
                &kernel.release,
                format!("{err:#}"),
                Duration::ZERO,
            ),
        }
    }

    /// The same script on the host, as the user running xtask.
    fn on_host(&self) -> Result<Row> {
        let release = fs::read_to_string("/proc/sys/kernel/osrelease")
            .context("cannot read the host's kernel release")?;
        let command = &self.command;
        let mut sh = Command::new(&command.argv[0]);
        sh.args(&command.argv[1..])
            .env_clear()
            .envs(command.env.iter().cloned())
            .current_dir(&command.cwd)
            .stdout(Stdio::piped());
        let start = Instant::now();
        let mut child = sh.spawn().context("cannot start sh for the host's tests")?;
        let stdout = child.stdout.take().context("the host tests' stdout")?;
        let mut output = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading the host tests' output")?;
            println!("{line}");
            output.push_str(&line);
            output.push('\n');
        }
        let status = child.wait().context("waiting for the host's tests")?;
        // Killed by signal N: 128+N, as the guest's shell would report it.
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or_default());
        Ok(Row::from_output(
            HOST,
            release.trim(),
            code,
            &output,
            start.elapsed(),
        ))
    }
}

/// A test executable cargo built.
#[derive(Debug, PartialEq, Eq)]
struct TestExecutable {
    path: PathBuf,
    /// Its package's directory, where cargo test runs it.
    package_dir: PathBuf,
}

/// `cargo test -p procespy-tests --no-run`: the test executables by target.
fn build_tests() -> Result<HashMap<String, TestExecutable>> {
    let mut cargo = cmd::cargo();
    cargo
        .args([
            "test",
            "-p",
            "procespy-tests",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit());
    eprintln!("$ {}", cmd::describe(&cargo));
    let output = cmd::output(&mut cargo)?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}); fix the compile errors above",
            cmd::describe(&cargo),
            output.status
        );
    }
    Ok(test_executables(&String::from_utf8_lossy(&output.stdout)))
}

/// The test executables in cargo's JSON messages, by target name.
fn test_executables(messages: &str) -> HashMap<String, TestExecutable> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter(|message| {
            message["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|kind| kind == "test"))
        })
        .filter_map(|message| {
            let name = message["target"]["name"].as_str()?;
            let path = PathBuf::from(message["executable"].as_str()?);
            let manifest = Path::new(message["manifest_path"].as_str()?);
            let package_dir = manifest.parent()?.to_path_buf();
            Some((name.to_owned(), TestExecutable { path, package_dir }))
        })
        .collect()
}

/// The shell script that runs each of `tests` one test at a time, and
/// exits 1 when any of them fails.
fn script(tests: &[GuestTests], executables: &HashMap<String, TestExecutable>) -> Result<String> {
    let quote = |word: &str| cmd::quote(OsStr::new(word));
    let mut script = String::from("status=0\n");
    for test in tests {
        let Some(executable) = executables.get(test.target) else {
            let mut known: Vec<&str> = executables.keys().map(String::as_str).collect();
            known.sort_unstable();
            bail!(
                "GUEST_TESTS names the test target {:?}, but procespy-tests has only {}",
                test.target,
                known.join(", ")
            );
        };
        let mut line = vec![
            cmd::quote(executable.path.as_os_str()),
            "--test-threads=1".to_owned(),
        ];
        if test.exact {
            line.push("--exact".to_owned());
        }
        line.extend(test.filters.iter().map(|filter| quote(filter)));
        script.push_str(&format!(
            "echo {}\n",
            quote(&format!("==> {}", test.target))
        ));
        script.push_str(&format!("{} || status=1\n", line.join(" ")));
    }
    script.push_str("exit $status\n");
    Ok(script)
}

/// How a kernel's tests went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Tests ran, and every one passed.
    Passed,
    /// A test failed, or the test run exited non-zero.
    Failed,
    /// The run exited 0 but no test ran: filters that match nothing?
    NoTests,
    /// The tests did not finish: the kernel could not be fetched or booted,
    /// or the guest timed out. Why, with the console's last lines.
    Broken(String),
}

impl Outcome {
    fn word(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "FAILED",
            Outcome::NoTests => "NO TESTS",
            Outcome::Broken(_) => "BROKEN",
        }
    }
}

/// One kernel's line of the matrix.
#[derive(Debug, Clone)]
pub struct Row {
    /// "5.10", "6.1", "6.12", or "host".
    pub kernel: String,
    /// `uname -r`.
    pub release: String,
    pub outcome: Outcome,
    /// The tests' exit code, when they finished.
    pub exit_code: Option<i32>,
    pub passed: u64,
    pub failed: u64,
    /// Boot and tests (the tests alone on the host).
    pub wall: Duration,
    /// The guest's uptime when the tests started.
    pub booted_in: Option<Duration>,
}

impl Row {
    /// The row of a test run that exited with `exit_code` after printing
    /// `output`, whose libtest `test result:` lines are counted.
    pub fn from_output(
        kernel: &str,
        release: &str,
        exit_code: i32,
        output: &str,
        wall: Duration,
    ) -> Row {
        let tally = tally(output);
        let outcome = match (exit_code, tally.failed, tally.passed) {
            (0, 0, 0) => Outcome::NoTests,
            (0, 0, _) => Outcome::Passed,
            _ => Outcome::Failed,
        };
        Row {
            kernel: kernel.to_owned(),
            release: release.to_owned(),
            outcome,
            exit_code: Some(exit_code),
            passed: tally.passed,
            failed: tally.failed,
            wall,
            booted_in: None,
        }
    }

    /// The row of a test run that passed with these counts.
    pub fn from_tally(
        kernel: &str,
        release: &str,
        passed: u64,
        failed: u64,
        wall: Duration,
    ) -> Row {
        Row {
            kernel: kernel.to_owned(),
            release: release.to_owned(),
            outcome: if failed == 0 {
                Outcome::Passed
            } else {
                Outcome::Failed
            },
            exit_code: Some(0),
            passed,
            failed,
            wall,
            booted_in: None,
        }
    }

    /// The row of a guest's run of the tests.
    fn from_run(kernel: &str, release: &str, run: &GuestRun) -> Row {
        let release = if run.uname_r.is_empty() {
            release
        } else {
            &run.uname_r
        };
        let mut row = match (run.exit_code, run.failure()) {
            (Some(code), _) => Row::from_output(kernel, release, code, &run.output, run.wall),
            (None, failure) => {
                let tally = tally(&run.output);
                let mut row = Row::broken(kernel, release, failure.unwrap_or_default(), run.wall);
                row.passed = tally.passed;
                row.failed = tally.failed;
                row
            }
        };
        row.booted_in = run.booted_in;
        row
    }

    fn broken(kernel: &str, release: &str, why: String, wall: Duration) -> Row {
        Row {
            kernel: kernel.to_owned(),
            release: release.to_owned(),
            outcome: Outcome::Broken(why),
            exit_code: None,
            passed: 0,
            failed: 0,
            wall,
            booted_in: None,
        }
    }

    /// One line (and, for a broken row, the reason under it).
    fn summary(&self) -> String {
        let mut line = format!(
            "{} ({}): {}, {} passed, {} failed",
            self.kernel,
            if self.release.is_empty() {
                "?"
            } else {
                &self.release
            },
            self.outcome.word(),
            self.passed,
            self.failed
        );
        if let Some(code) = self.exit_code.filter(|code| *code != 0) {
            line.push_str(&format!(" (exit code {code})"));
        }
        line.push_str(&format!(", {:.1} s", self.wall.as_secs_f64()));
        if let Some(boot) = self.booted_in {
            line.push_str(&format!(", booted in {:.1} s", boot.as_secs_f64()));
        }
        if let Outcome::Broken(why) = &self.outcome {
            line.push_str(&format!("\n{why}"));
        }
        line
    }
}

fn tally(output: &str) -> Tally {
    let mut tally = Tally::default();
    for line in output.lines() {
        tally.add(line);
    }
    tally
}

/// Every kernel's row, in the order they ran.
#[derive(Debug, Default)]
pub struct Matrix {
    pub rows: Vec<Row>,
}

impl Matrix {
    /// The table: kernel | release | result | tests passed/failed | wall
    /// time, then the first line of each broken row's reason.
    pub fn table(&self) -> String {
        let header = [
            "kernel",
            "release",
            "result",
            "tests passed/failed",
            "wall time",
        ];
        let cells: Vec<[String; 5]> = self
            .rows
            .iter()
            .map(|row| {
                [
                    row.kernel.clone(),
                    row.release.clone(),
                    row.outcome.word().to_owned(),
                    format!("{}/{}", row.passed, row.failed),
                    format!("{:.1} s", row.wall.as_secs_f64()),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &cells {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.len());
            }
        }
        let line = |cells: [&str; 5]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            format!("| {} |\n", padded.join(" | "))
        };
        let mut table = line(header);
        table.push_str(&line(
            widths
                .map(|width| "-".repeat(width))
                .each_ref()
                .map(String::as_str),
        ));
        for row in &cells {
            table.push_str(&line(row.each_ref().map(String::as_str)));
        }
        for row in &self.rows {
            if let Outcome::Broken(why) = &row.outcome {
                table.push_str(&format!(
                    "{}: {}\n",
                    row.kernel,
                    why.lines().next().unwrap_or("")
                ));
            }
        }
        table
    }

    /// Fails, naming them, when any row did not pass.
    pub fn check(&self) -> Result<()> {
        let failing: Vec<String> = self
            .rows
            .iter()
            .filter(|row| row.outcome != Outcome::Passed)
            .map(|row| format!("{} ({})", row.kernel, row.outcome.word()))
            .collect();
        if failing.is_empty() {
            return Ok(());
        }
        bail!(
            "{} of {} kernels did not pass: {}",
            failing.len(),
            self.rows.len(),
            failing.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGES: &str = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/tests#procespy-tests@0.1.0","manifest_path":"/w/tests/Cargo.toml","target":{"kind":["bin"],"crate_types":["bin"],"name":"procespy-testprog","src_path":"/w/tests/src/bin/testprog.rs","test":true},"profile":{"test":false},"filenames":["/w/target/debug/procespy-testprog"],"executable":"/w/target/debug/procespy-testprog","fresh":true}
{"reason":"compiler-artifact","package_id":"path+file:///w/tests#procespy-tests@0.1.0","manifest_path":"/w/tests/Cargo.toml","target":{"kind":["test"],"crate_types":["bin"],"name":"tracking","src_path":"/w/tests/tests/tracking.rs","test":true},"profile":{"test":true},"filenames":["/w/target/debug/deps/tracking-506d"],"executable":"/w/target/debug/deps/tracking-506d","fresh":true}
{"reason":"compiler-artifact","package_id":"path+file:///w/tests#procespy-tests@0.1.0","manifest_path":"/w/tests/Cargo.toml","target":{"kind":["lib"],"crate_types":["lib"],"name":"procespy_tests","src_path":"/w/tests/src/lib.rs","test":true},"profile":{"test":false},"filenames":["/w/target/debug/deps/libprocespy_tests.rlib"],"executable":null,"fresh":true}
{"reason":"build-finished","success":true}
"#;

    #[test]
    fn test_executables_come_from_cargo_messages() {
        let found = test_executables(MESSAGES);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found["tracking"],
            TestExecutable {
                path: PathBuf::from("/w/target/debug/deps/tracking-506d"),
                package_dir: PathBuf::from("/w/tests"),
            }
        );
    }

    #[test]
    fn the_script_runs_each_target_one_test_at_a_time() {
        let tests = [
            GuestTests {
                target: "tracking",
                filters: &["rss", "a b"],
                exact: false,
            },
            GuestTests {
                target: "tracking",
                filters: &["exit"],
                exact: true,
            },
        ];
        let script = script(&tests, &test_executables(MESSAGES)).unwrap();
        assert_eq!(
            script,
            "status=0\n\
             echo '==> tracking'\n\
             /w/target/debug/deps/tracking-506d --test-threads=1 rss 'a b' || status=1\n\
             echo '==> tracking'\n\
             /w/target/debug/deps/tracking-506d --test-threads=1 --exact exit || status=1\n\
             exit $status\n"
        );
        let missing = [GuestTests {
            target: "lifecycle",
            filters: &[],
            exact: false,
        }];
        let err = super::script(&missing, &test_executables(MESSAGES)).unwrap_err();
        assert!(err.to_string().contains("has only tracking"), "{err}");
    }

    #[test]
    fn outcomes_follow_the_exit_code_and_the_result_lines() {
        let ok = "test a ... ok\ntest result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 9 filtered out\n";
        let bad =
            "test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 9 filtered out\n";
        let none = "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 12 filtered out\n";
        let second = Duration::from_secs(1);
        let row = |code: i32, output: &str| {
            Row::from_output("6.1", "6.1.0-57-amd64", code, output, second)
        };
        assert_eq!(row(0, ok).outcome, Outcome::Passed);
        assert_eq!(row(0, ok).passed, 3);
        let failed = row(1, &format!("{ok}{bad}"));
        assert_eq!(
            (failed.outcome, failed.passed, failed.failed),
            (Outcome::Failed, 4, 2)
        );
        assert_eq!(row(0, none).outcome, Outcome::NoTests);
        assert_eq!(
            row(101, "thread 'main' panicked\n").outcome,
            Outcome::Failed
        );
    }

    #[test]
    fn the_table_aligns_columns_and_check_names_what_failed() {
        let second = Duration::from_millis(1500);
        let ok = "test result: ok. 5 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n";
        let mut matrix = Matrix::default();
        matrix
            .rows
            .push(Row::from_output("host", "6.18.0", 0, ok, second));
        matrix.rows.push(Row::broken(
            "5.10",
            "",
            "the guest timed out after 1800 s; the console's last lines:\n…".into(),
            second,
        ));
        assert_eq!(
            matrix.table(),
            "\
| kernel | release | result | tests passed/failed | wall time |
| ------ | ------- | ------ | ------------------- | --------- |
| host   | 6.18.0  | passed | 5/0                 | 1.5 s     |
| 5.10   |         | BROKEN | 0/0                 | 1.5 s     |
5.10: the guest timed out after 1800 s; the console's last lines:
"
        );
        let err = matrix.check().unwrap_err().to_string();
        assert_eq!(err, "1 of 2 kernels did not pass: 5.10 (BROKEN)");
        matrix.rows.pop();
        assert!(matrix.check().is_ok());
    }
}
