//! What the operating system answers: page size, clocks, memory and CPU figures,
//! the host name, process handles and systemd's notification socket.
//!
//! Everything here is a thin, safe wrapper (rustix, sd-notify, std); the
//! deciding code above takes these answers as plain values, so it stays
//! pure and testable without root.

pub(crate) mod cgroup;
mod pidfd;
pub(crate) mod systemd;

use std::{path::Path, time::SystemTime};

pub use pidfd::Signal;
pub(crate) use pidfd::{Delivery, Pidfd};

/// The system's page size in bytes.
pub(crate) fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of the kernel's event times.
pub(crate) fn monotonic_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}

/// Seconds since the Unix epoch, now.
pub(crate) fn epoch_secs() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The host's name (`uname -n`; `localhost` when it has none).
pub(crate) fn hostname() -> String {
    let name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    if name.is_empty() {
        "localhost".to_owned()
    } else {
        name
    }
}

/// The kernel's release (`uname -r`).
pub(crate) fn kernel_release() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

/// What `/proc/meminfo` says about the whole machine, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MemInfo {
    /// `MemTotal`.
    pub(crate) total: u64,
    /// `MemAvailable`.
    pub(crate) available: u64,
}

impl MemInfo {
    /// Reads `/proc/meminfo`; zeros where it cannot be read.
    pub(crate) fn read() -> MemInfo {
        parse_file("/proc/meminfo", MemInfo::parse)
    }

    /// Parses the text of `/proc/meminfo`.
    pub(crate) fn parse(text: &str) -> MemInfo {
        let kib = |key: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
                .and_then(|rest| rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
                .and_then(|kib| kib.checked_mul(1024))
                .unwrap_or(0)
        };
        MemInfo {
            total: kib("MemTotal"),
            available: kib("MemAvailable"),
        }
    }
}

/// The machine's CPU time since boot, all CPUs together, from the first
/// line of `/proc/stat`, in clock ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CpuTimes {
    /// Time in every state (user, nice, system, idle, iowait, irq, softirq,
    /// steal; guest time is already in user and nice).
    pub(crate) total: u64,
    /// The part of it neither idle nor waiting for I/O.
    pub(crate) busy: u64,
}

impl CpuTimes {
    /// Reads `/proc/stat`; zeros where it cannot be read.
    pub(crate) fn read() -> CpuTimes {
        parse_file("/proc/stat", CpuTimes::parse)
    }

    /// Parses the text of `/proc/stat`: its `cpu` line.
    pub(crate) fn parse(text: &str) -> CpuTimes {
        let Some(fields) = text.lines().find_map(|line| line.strip_prefix("cpu ")) else {
            return CpuTimes::default();
        };
        let ticks: Vec<u64> = fields
            .split_ascii_whitespace()
            .take(8)
            .map_while(|field| field.parse().ok())
            .collect();
        let total = ticks.iter().sum();
        let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
        CpuTimes {
            total,
            busy: total - idle,
        }
    }
}

/// `parse` of the text of `path`; the default where it cannot be read.
fn parse_file<T: Default>(path: &str, parse: fn(&str) -> T) -> T {
    std::fs::read_to_string(path)
        .map(|text| parse(&text))
        .unwrap_or_default()
}

/// Resident bytes of `pid` from `/proc/PID/statm`: the precise figure a
/// breach is confirmed with before acting from userspace.
pub(crate) fn statm_rss(pid: u32) -> Option<u64> {
    let text =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("statm")).ok()?;
    let pages: u64 = text.split_ascii_whitespace().nth(1)?.parse().ok()?;
    pages.checked_mul(page_size())
}

/// Lowers the calling thread's CPU priority to `nice` (on Linux, a thread
/// id given to setpriority changes that thread only).
pub(crate) fn lower_thread_priority(nice: i32) -> std::io::Result<()> {
    rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice)?;
    Ok(())
}

/// Raises the limit on open files as far as it goes: a pidfd is kept for
/// every covered process. Root (CAP_SYS_RESOURCE) may raise the hard limit
/// to the kernel's `fs.nr_open`; anyone may raise the soft one to the hard
/// one. Returns the soft limit now in force, which pidfds then keep under.
pub(crate) fn raise_fd_limit() -> u64 {
    let limit = fd_limit_raised();
    pidfd::set_fd_limit(limit);
    limit
}

fn fd_limit_raised() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    let (Some(soft), Some(hard)) = (now.current, now.maximum) else {
        return u64::MAX; // unlimited
    };
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    for target in [nr_open.max(hard), hard] {
        if soft >= target {
            return soft;
        }
        let raised = Rlimit {
            current: Some(target),
            maximum: Some(target),
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            tracing::debug!("open-file limit raised from {soft} to {target}");
            return target;
        }
    }
    tracing::info!("the open-file limit stays at {soft}");
    soft
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_is_parsed_in_bytes() {
        let text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(
            MemInfo::parse(text),
            MemInfo {
                total: 24_000_000 * 1024,
                available: 20_000_000 * 1024
            }
        );
        assert_eq!(MemInfo::parse("garbage"), MemInfo::default());
        assert!(MemInfo::read().total > 0);
    }

    #[test]
    fn cpu_times_count_idle_and_iowait_as_not_busy() {
        let text = "cpu  100 5 50 800 40 3 2 0 7 0\ncpu0 50 2 25 400 20 1 1 0 3 0\nintr 1\n";
        assert_eq!(
            CpuTimes::parse(text),
            CpuTimes {
                total: 1000,
                busy: 160
            }
        );
        assert_eq!(CpuTimes::parse("garbage"), CpuTimes::default());
        let now = CpuTimes::read();
        assert!(now.total > 0 && now.busy <= now.total);
    }

    #[test]
    fn statm_reads_our_own_rss_and_nothing_for_strangers() {
        assert!(statm_rss(std::process::id()).unwrap() > 0);
        assert!(statm_rss(u32::MAX).is_none());
    }

    #[test]
    fn clocks_and_names_answer() {
        let a = monotonic_ns();
        assert!(monotonic_ns() >= a);
        assert!(epoch_secs() > 1.7e9);
        assert!(!hostname().is_empty());
        assert!(page_size() >= 4096);
    }
}
