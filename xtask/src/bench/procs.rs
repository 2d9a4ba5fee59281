//! Process helpers: children in process groups of their own that are
//! always stopped, pidfds to see a death the moment it happens, the
//! monotonic clock, scratch directories and `/proc` readings.

use std::{
    fs,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{fs::PermissionsExt, process::CommandExt},
    },
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::cmd;

/// Fails unless xtask runs as root (eBPF, signals, other users' processes).
pub fn require_root(bench: &str) -> Result<()> {
    if !cmd::is_root() {
        bail!(
            "`cargo xtask bench {bench}` must run as root (eBPF, signals, /proc of every process); try `sudo -E cargo xtask bench {bench}`"
        );
    }
    Ok(())
}

/// A release binary of the workspace (`target/release/NAME`).
pub fn release_bin(name: &str) -> PathBuf {
    cmd::target_dir().join("release").join(name)
}

/// The first `program` on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// CLOCK_MONOTONIC, in nanoseconds: the clock the test program prints.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A child that leads a process group of its own. On drop the whole group
/// (the child, its children, their children) is stopped: SIGTERM first
/// when asked for, SIGKILL after a grace, then the child is reaped.
pub struct Group {
    child: Child,
    what: String,
    term_first: bool,
    stopped: bool,
}

impl Group {
    /// Starts `cmd` as the leader of a new process group; `what` names it in errors.
    pub fn spawn(cmd: &mut Command, what: &str) -> Result<Self> {
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("could not start {what} (`{}`)", cmd::describe(cmd)))?;
        Ok(Group {
            child,
            what: what.to_owned(),
            term_first: false,
            stopped: false,
        })
    }

    /// Stop the group with SIGTERM first (a daemon that cleans up), not SIGKILL at once.
    pub fn terminate_gently(mut self) -> Self {
        self.term_first = true;
        self
    }

    /// The leader's PID (also the group's id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The leader.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Whether the leader is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the group now (see the type's doc) and reaps the leader.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let pgid = self.child.id() as libc::pid_t;
        if self.term_first && self.running() {
            // SAFETY: signalling our own process group.
            unsafe { libc::killpg(pgid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if self.running() {
                eprintln!("bench: {} ignored SIGTERM for 10 s; killing it", self.what);
            }
        }
        // SAFETY: as above; the leader is not reaped yet, so its id is still ours.
        unsafe { libc::killpg(pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A pidfd: tells when one precise process dies, and signals only it.
pub struct Pidfd(OwnedFd);

impl Pidfd {
    /// `pidfd_open(pid)`.
    pub fn open(pid: u32) -> Result<Self> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("pidfd_open({pid})"));
        }
        // SAFETY: a fresh fd that nothing else owns.
        Ok(Pidfd(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Waits until the process has died (true) or `timeout` passed (false).
    pub fn wait_death(&self, timeout: Duration) -> Result<bool> {
        let mut pollfd = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut pollfd, 1, ms) };
            if ready > 0 {
                return Ok(true);
            }
            if ready == 0 {
                return Ok(false);
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err).context("poll on a pidfd");
            }
        }
    }

    /// Sends `signal` to the process (a no-op once it is gone).
    pub fn signal(&self, signal: i32) {
        // SAFETY: pidfd_send_signal with no siginfo and no flags.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
}

/// A scratch directory (mode 0755, so programs run as anyone can use it),
/// removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A new, empty directory under the system's temp dir.
    pub fn new(label: &str) -> Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("procespy-bench-{label}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `name` with `text` and `mode`, and returns its path.
    pub fn write(&self, name: &str, text: &str, mode: u32) -> Result<PathBuf> {
        let path = self.path.join(name);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        Ok(path)
    }

    /// Copies `from` here as `name` (mode 0755) and returns its path.
    pub fn copy_exe(&self, from: &Path, name: &str) -> Result<PathBuf> {
        let path = self.path.join(name);
        fs::copy(from, &path)
            .with_context(|| format!("copying {} to {}", from.display(), path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        Ok(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// CPU time of `pid` (user + system, every thread, those gone included),
/// in seconds, to the nanosecond: the kernel's scheduler clock of the whole
/// process (`clock_getcpuclockid`), not the 10 ms ticks of /proc/PID/stat.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: clock_getcpuclockid fills the clock id it is given.
    let err = unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) };
    if err != 0 {
        return Err(std::io::Error::from_raw_os_error(err))
            .with_context(|| format!("clock_getcpuclockid({pid})"));
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a timespec to fill.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("reading the CPU clock of PID {pid}"));
    }
    Ok(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
}

/// A `kB` line of `/proc/PID/status` (`VmRSS`, `RssAnon`, ...), in bytes.
pub fn status_bytes(pid: u32, key: &str) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .with_context(|| format!("no {key} in /proc/{pid}/status"))
}

/// Number of live processes in process group `pgid`.
pub fn group_size(pgid: u32) -> usize {
    let Ok(dir) = fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat.rsplit_once(')')?.1.to_owned();
                    let mut fields = rest.split_whitespace();
                    let state = fields.next()?;
                    // Field 5 (pgrp) is the third after the name.
                    let pgrp = fields.nth(1)?.parse::<u32>().ok()?;
                    Some(state != "Z" && pgrp == pgid)
                })
                .unwrap_or(false)
        })
        .count()
}

/// `n` sleeping processes (`sleep 100000` children of one bash, all in
/// one process group), killed together when the group is dropped. Returns
/// once they all run.
pub fn sleepers(n: usize) -> Result<Group> {
    many(n, "sleep 100000", "sleeping processes")
}

/// `n` processes running the shell command `command` (children of one
/// bash, all in one process group, stdin /dev/null), killed together when
/// the group is dropped. Returns once they all run.
pub fn many(n: usize, command: &str, what: &str) -> Result<Group> {
    let script = format!("for i in $(seq {n}); do {command} & done; wait");
    let mut bash = Command::new("bash");
    bash.args(["-c", &script])
        .stdin(std::process::Stdio::null());
    let mut group = Group::spawn(&mut bash, &format!("the {what}"))?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let running = group_size(group.pid());
        if running > n {
            return Ok(group);
        }
        if !group.running() {
            bail!("the bash starting {n} {what} died after {running}");
        }
        if Instant::now() > deadline {
            bail!("only {running} of {n} {what} started within 5 minutes");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_and_rss_are_readable() {
        let me = std::process::id();
        let before = cpu_seconds(me).unwrap();
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(20) {}
        // Nanoseconds: a 20 ms spin shows (how much of it ran depends on the machine's load).
        assert!(cpu_seconds(me).unwrap() > before);
        let mut sleep = Command::new("sleep");
        sleep.arg("100");
        let other = Group::spawn(&mut sleep, "sleep").unwrap();
        assert!(cpu_seconds(other.pid()).unwrap() >= 0.0);
        assert!(status_bytes(me, "VmRSS").unwrap() > 0);
    }

    #[test]
    fn a_group_is_stopped_on_drop_and_a_pidfd_sees_it() {
        let mut sleep = Command::new("sleep");
        sleep.arg("100");
        let group = Group::spawn(&mut sleep, "sleep").unwrap();
        let pidfd = Pidfd::open(group.pid()).unwrap();
        assert!(!pidfd.wait_death(Duration::from_millis(10)).unwrap());
        drop(group);
        assert!(pidfd.wait_death(Duration::from_secs(5)).unwrap());
    }
}
