//! Boots a prepared kernel under qemu and runs one command in it: the
//! host's `/` is the guest's root (read-only, 9p), and a writable 9p share
//! per run carries the command in and its output and exit code out.

use std::{
    env,
    ffi::{OsStr, OsString},
    fs::{self, File},
    io::{self, Read, Write},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::kernels::PreparedKernel;
use crate::cmd;

const QEMU: &str = "qemu-system-x86_64";
/// The guest's memory and CPUs.
const MEMORY: &str = "2G";
const CPUS: &str = "2";
/// How often the wait for qemu looks at it (and copies new output).
const POLL: Duration = Duration::from_millis(100);
/// Console lines shown when a guest fails.
const CONSOLE_TAIL: usize = 30;

/// A command to run as root in a guest.
#[derive(Debug, Clone)]
pub struct GuestCommand {
    /// The program and its arguments; the program is looked up in `env`'s PATH.
    pub argv: Vec<String>,
    /// The command's whole environment.
    pub env: Vec<(String, String)>,
    /// Its working directory, a path of the host's (seen read-only).
    pub cwd: PathBuf,
    /// How long the guest may take, boot included, before it is killed.
    pub timeout: Duration,
    /// Whether to copy the command's output to stdout as it comes.
    pub echo: bool,
}

impl GuestCommand {
    /// `argv` in `/`, with PATH and HOME set, 5 minutes, output not echoed.
    pub fn new<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> Self {
        GuestCommand {
            argv: argv.into_iter().map(Into::into).collect(),
            env: vec![
                (
                    "PATH".into(),
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                ),
                ("HOME".into(), "/root".into()),
            ],
            cwd: PathBuf::from("/"),
            timeout: Duration::from_secs(300),
            echo: false,
        }
    }

    /// Sets one variable of the environment, replacing an earlier value.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        self.env.retain(|(existing, _)| *existing != key);
        self.env.push((key, value.into()));
        self
    }
}

/// What a guest did with a [`GuestCommand`].
#[derive(Debug, Clone)]
pub struct GuestRun {
    /// The command's exit code (128+N after signal N); `None` when it did not
    /// finish: see [`GuestRun::failure`].
    pub exit_code: Option<i32>,
    /// The command's stdout and stderr, interleaved as written; what it had
    /// written so far when it did not finish.
    pub output: String,
    /// The serial console (kernel messages and init's `procespy-init:`
    /// lines), then qemu's own messages.
    pub console: String,
    /// From starting qemu to its exit.
    pub wall: Duration,
    /// `uname -r` in the guest; empty when init did not get that far.
    pub uname_r: String,
    /// The guest's uptime when the command started.
    pub booted_in: Option<Duration>,
    /// Whether the timeout ended the guest.
    pub timed_out: bool,
}

impl GuestRun {
    /// Why the command has no exit code, with the console's last lines;
    /// `None` when it finished.
    pub fn failure(&self) -> Option<String> {
        if self.exit_code.is_some() {
            return None;
        }
        let why = if self.timed_out {
            format!("the guest timed out after {:.0} s", self.wall.as_secs_f64())
        } else if self.uname_r.is_empty() {
            "the guest stopped before its init had mounted the host's root".to_owned()
        } else {
            "the guest stopped before the command finished".to_owned()
        };
        Some(format!(
            "{why}; the console's last lines:\n{}",
            tail(&self.console, CONSOLE_TAIL)
        ))
    }
}

/// How qemu runs the guest's CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accel {
    Tcg,
    Kvm,
}

impl Accel {
    /// TCG, unless `PROCESPY_VM_ACCEL=kvm`. A `/dev/kvm` is no proof that
    /// KVM boots a stock kernel (this project's build machine has one that
    /// does not), so KVM is used only when asked for.
    fn from_env() -> Result<Accel> {
        match env::var("PROCESPY_VM_ACCEL").as_deref() {
            Err(_) | Ok("" | "tcg") => Ok(Accel::Tcg),
            Ok("kvm") => Ok(Accel::Kvm),
            Ok(other) => bail!("PROCESPY_VM_ACCEL={other}: it must be tcg (the default) or kvm"),
        }
    }

    /// TCG runs both vCPUs on one host thread: with `thread=multi`, qemu 7.2
    /// (Debian 12's) lets a vCPU run code the kernel has just patched
    /// (static keys, as tracepoints are attached), and the guests oopsed
    /// ("int3", 6.12) or hung (5.10, 6.1) within seconds of toggling
    /// `kmem:rss_stat` while processes ran; single-threaded, none did.
    fn args(self) -> [&'static str; 4] {
        match self {
            Accel::Tcg => ["-accel", "tcg,thread=single", "-cpu", "max"],
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
        }
    }
}

/// Boots `kernel`, runs `command` in it and powers the guest off.
///
/// An `Err` means the guest could not be started; a guest that started
/// but did not finish the command is an `Ok` whose `exit_code` is `None`.
pub fn run(kernel: &PreparedKernel, command: &GuestCommand) -> Result<GuestRun> {
    let accel = Accel::from_env()?;
    let dir = RunDir::create()?;
    let share = dir.path.join("share");
    fs::create_dir(&share).with_context(|| format!("cannot create {}", share.display()))?;
    let script = share.join("command.sh");
    fs::write(&script, command_script(command))
        .with_context(|| format!("cannot write {}", script.display()))?;
    let console_path = dir.path.join("console");
    let console = File::create(&console_path)
        .with_context(|| format!("cannot create {}", console_path.display()))?;

    let mut qemu = Command::new(QEMU);
    qemu.args(qemu_args(kernel, &share, accel))
        .stdin(Stdio::null())
        .stdout(
            console
                .try_clone()
                .context("cannot share the console file")?,
        )
        .stderr(console);
    // SAFETY: prctl is async-signal-safe and touches no memory; the guest
    // must not outlive an xtask that is killed while waiting for it.
    unsafe {
        qemu.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
    let start = Instant::now();
    let mut child = qemu.spawn().with_context(|| {
        format!("cannot start {QEMU}: `cargo xtask setup` installs it (qemu-system-x86)")
    })?;
    let mut echo = Echo::new(share.join("output"), command.echo);
    let (status, timed_out) = loop {
        if let Some(status) = child.try_wait().context("waiting for qemu")? {
            break (status, false);
        }
        if start.elapsed() >= command.timeout {
            child.kill().context("cannot kill qemu after the timeout")?;
            break (child.wait().context("waiting for the killed qemu")?, true);
        }
        echo.forward()?;
        thread::sleep(POLL);
    };
    let wall = start.elapsed();
    echo.forward()?;

    let read = |name: &str| fs::read(share.join(name)).ok().map(|bytes| text(&bytes));
    let mut console = text(&fs::read(&console_path).unwrap_or_default());
    if !status.success() && !timed_out {
        console.push_str(&format!("\n[xtask] {QEMU} exited: {status}\n"));
    }
    Ok(GuestRun {
        exit_code: read("exit-code").and_then(|code| code.trim().parse().ok()),
        output: read("output").unwrap_or_default(),
        console,
        wall,
        uname_r: read("uname").unwrap_or_default().trim().to_owned(),
        booted_in: read("ready")
            .and_then(|uptime| uptime.trim().parse::<f64>().ok())
            .map(Duration::from_secs_f64),
        timed_out,
    })
}

/// qemu's arguments: no display, serial console on stdout, the host's root
/// and the share as 9p, and a kernel that powers off (or, on panic, exits
/// at once) instead of rebooting.
fn qemu_args(kernel: &PreparedKernel, share: &Path, accel: Accel) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["-nographic", "-no-reboot", "-nic", "none"]
        .into_iter()
        .chain(["-m", MEMORY, "-smp", CPUS])
        .chain(accel.args())
        .map(OsString::from)
        .collect();
    args.push("-kernel".into());
    args.push(kernel.vmlinuz.clone().into());
    args.push("-initrd".into());
    args.push(kernel.initramfs.clone().into());
    args.push("-append".into());
    args.push("console=ttyS0 panic=-1 quiet".into());
    args.push("-virtfs".into());
    args.push(virtfs(
        Path::new("/"),
        "hostroot",
        &["readonly=on", "multidevs=remap"],
    ));
    args.push("-virtfs".into());
    args.push(virtfs(share, "results", &[]));
    args
}

/// One `-virtfs` value; a comma in the path is doubled, as qemu escapes it.
fn virtfs(path: &Path, tag: &str, options: &[&str]) -> OsString {
    let path = path.to_string_lossy().replace(',', ",,");
    let mut value = format!("local,path={path},mount_tag={tag},security_model=none");
    for option in options {
        value.push(',');
        value.push_str(option);
    }
    value.into()
}

/// The script init runs in the host's root: into the directory, then the
/// command with exactly its environment.
fn command_script(command: &GuestCommand) -> String {
    let quote = |word: &str| cmd::quote(OsStr::new(word));
    let env: Vec<String> = command
        .env
        .iter()
        .map(|(key, value)| quote(&format!("{key}={value}")))
        .collect();
    let argv: Vec<String> = command.argv.iter().map(|word| quote(word)).collect();
    format!(
        "cd {} || exit 127\nexec env -i -- {} {}\n",
        cmd::quote(command.cwd.as_os_str()),
        env.join(" "),
        argv.join(" ")
    )
}

/// Serial and 9p text, without carriage returns and terminal escapes
/// (SeaBIOS clears the screen with them).
fn text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut clean = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // ESC [ parameters final-letter, or ESC and one character.
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => clean.push(c),
        }
    }
    clean
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Copies what the guest appends to its output file to stdout.
struct Echo {
    path: PathBuf,
    file: Option<File>,
    enabled: bool,
}

impl Echo {
    fn new(path: PathBuf, enabled: bool) -> Self {
        Echo {
            path,
            file: None,
            enabled,
        }
    }

    fn forward(&mut self) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let Some(file) = &mut self.file else {
            return Ok(());
        };
        let mut new = Vec::new();
        file.read_to_end(&mut new)
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        let mut stdout = io::stdout().lock();
        stdout.write_all(&new).context("cannot write to stdout")?;
        stdout.flush().context("cannot write to stdout")
    }
}

/// A run's host directory (the share and the console), removed on drop.
struct RunDir {
    path: PathBuf,
}

impl RunDir {
    fn create() -> Result<RunDir> {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let path = env::temp_dir().join(format!("procespy-vm-{}-{n}", std::process::id()));
        if path.exists() {
            fs::remove_dir_all(&path)
                .with_context(|| format!("cannot remove the stale {}", path.display()))?;
        }
        fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(RunDir { path })
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_dir_all(&self.path) {
            eprintln!("vm: cannot remove {}: {err}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_changes_directory_and_sets_exactly_the_environment() {
        let mut command = GuestCommand::new(["sh", "-c", "echo 'hi' $X"]).env("X", "a b");
        command.cwd = PathBuf::from("/work/main/tests");
        assert_eq!(
            command_script(&command),
            "cd /work/main/tests || exit 127\n\
             exec env -i -- PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
             HOME=/root 'X=a b' sh -c 'echo '\\''hi'\\'' $X'\n"
        );
    }

    #[test]
    fn a_variable_set_twice_keeps_the_last_value() {
        let command = GuestCommand::new(["true"])
            .env("HOME", "/tmp")
            .env("CI", "true");
        assert_eq!(
            command.env[1..],
            [
                ("HOME".to_owned(), "/tmp".to_owned()),
                ("CI".to_owned(), "true".to_owned())
            ]
        );
    }

    #[test]
    fn console_text_loses_escapes_and_carriage_returns() {
        let serial = b"\x1bc\x1b[?7l\x1b[2JSeaBIOS\r\nBooting\x1b[0m from ROM\r\n";
        assert_eq!(text(serial), "SeaBIOS\nBooting from ROM\n");
    }

    #[test]
    fn virtfs_paths_escape_commas() {
        assert_eq!(
            virtfs(Path::new("/tmp/a,b"), "results", &["readonly=on"]),
            OsString::from(
                "local,path=/tmp/a,,b,mount_tag=results,security_model=none,readonly=on"
            )
        );
    }

    #[test]
    fn a_run_without_exit_code_says_why_with_the_console_tail() {
        let console: String = (1..=40).map(|n| format!("line {n}\n")).collect();
        let run = GuestRun {
            exit_code: None,
            output: String::new(),
            console,
            wall: Duration::from_secs(60),
            uname_r: String::new(),
            booted_in: None,
            timed_out: true,
        };
        let failure = run.failure().unwrap();
        assert!(
            failure.starts_with("the guest timed out after 60 s"),
            "{failure}"
        );
        assert!(failure.ends_with("line 40") && failure.contains("line 11\n"));
        assert!(!failure.contains("line 10\n"));
        let finished = GuestRun {
            exit_code: Some(0),
            ..run
        };
        assert_eq!(finished.failure(), None);
    }
}
