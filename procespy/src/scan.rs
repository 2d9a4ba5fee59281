//! The full examination of `/proc`.
//!
//! The daemon runs [`Scanner::examine`] every few seconds and `procespy ps`
//! runs [`examine`] once. Each process is read through a file descriptor on
//! its `/proc/PID` directory, so every file read for one [`ProcInfo`] comes
//! from the same process even if its PID is reused meanwhile. All files of a
//! scan are read into one reused buffer.
//!
//! Per process:
//! - `stat`, parsed here byte by byte: pid, comm (the bytes between the first
//!   `(` and the last `)`, which may hold spaces, parentheses, newlines and
//!   non-UTF-8 bytes), state, ppid, flags (`PF_KTHREAD`), utime + stime and
//!   starttime;
//! - `status`: the real uid and `RssAnon`/`RssFile`/`RssShmem`;
//! - `cmdline` and the `exe` link, left empty when unreadable (other users'
//!   processes without root) and not read for kernel threads and zombies.
//!
//! A process that disappears while it is read is counted in
//! [`Examination::vanished`] and left out; nothing here panics on a racing
//! `/proc`.

use std::collections::{HashMap, HashSet};
use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, readlinkat};
use nix::sys::stat::Mode;

use crate::{
    config::Memory,
    process::{ProcInfo, Rss},
    sys::Pidfd,
};

/// The `PF_KTHREAD` bit of the `flags` field of `/proc/PID/stat`.
pub(crate) const PF_KTHREAD: u32 = 0x0020_0000;
/// The `PF_EXITING` bit: set as `do_exit` begins, before the exit event.
const PF_EXITING: u32 = 0x0000_0004;

/// Initial size of the read buffer: `status` is about 1.5 KiB.
const MIN_BUF: usize = 8192;

/// Why one process could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The process exited (or its PID was never there) before it was read.
    #[error("process {0} vanished")]
    Vanished(u32),
    /// `/proc/PID` is there but may not be read (e.g. `hidepid`).
    #[error("reading /proc/{0}: permission denied")]
    PermissionDenied(u32),
    /// A file did not look as the kernel writes it.
    #[error("/proc/{pid}/{file}: {what}")]
    Malformed {
        /// The process.
        pid: u32,
        /// The file under `/proc/PID`.
        file: &'static str,
        /// What was wrong.
        what: &'static str,
    },
    /// Any other I/O error.
    #[error("reading /proc/{pid}/{file}: {source}")]
    Io {
        /// The process.
        pid: u32,
        /// The file under `/proc/PID`, or `""` for the directory.
        file: &'static str,
        /// The error.
        source: io::Error,
    },
}

/// The result of one full examination of `/proc`.
#[derive(Clone, Debug)]
pub(crate) struct Examination {
    /// Every process that could be read, in `/proc` directory order.
    pub(crate) procs: Vec<ProcInfo>,
    /// When the examination started.
    pub(crate) started: Instant,
    /// Entries that disappeared while they were read.
    pub(crate) vanished: usize,
    /// For a partial examination ([`Scanner::examine_unknown`]): every PID
    /// listed in `/proc`, read or not. `None`: `procs` is every process.
    pub(crate) listed: Option<Vec<u32>>,
    /// Processes listed but not read, for a reason other than their exit
    /// (out of file descriptors, hidepid): the table keeps them as they were.
    pub(crate) unread: Vec<u32>,
    /// Resident bytes (statm, with swap for `rss+swap` limits) of the
    /// processes asked for with [`Examination::with_resident`]: the covered
    /// ones.
    pub(crate) resident: HashMap<u32, u64>,
}

impl Examination {
    /// Adds fresh reads of the memory of `pids`, each as its limit counts
    /// it (a PSS limit's trigger is the RSS: its PSS is read only past it).
    pub(crate) fn with_resident(mut self, pids: &[(u32, Memory)]) -> Self {
        self.resident = pids
            .iter()
            .filter_map(|&(pid, memory)| {
                let memory = if memory == Memory::Pss {
                    Memory::Rss
                } else {
                    memory
                };
                Some((pid, read_memory(pid, memory)?))
            })
            .collect();
        self
    }
}

/// The fields of `/proc/PID/stat` procespy uses, borrowed from the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stat<'a> {
    /// Field 1: the process id.
    pub(crate) pid: u32,
    /// Field 2: `comm`, without its parentheses.
    pub(crate) comm: &'a [u8],
    /// Field 3: the state letter.
    pub(crate) state: u8,
    /// Field 4: the parent's pid.
    pub(crate) ppid: u32,
    /// Field 5: the process group.
    pub(crate) pgrp: u32,
    /// Field 9: the kernel's `PF_*` flags.
    pub(crate) flags: u32,
    /// Fields 14 + 15: user + system time, in clock ticks.
    pub(crate) cpu_ticks: u64,
    /// Field 22: start time, in clock ticks after boot.
    pub(crate) start_ticks: u64,
}

/// Why a `stat` line did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StatError {
    /// Nothing was read: the process is gone.
    Empty,
    /// The line is not as the kernel writes it; the text says what is wrong.
    Malformed(&'static str),
}

/// Parses the contents of `/proc/PID/stat`.
///
/// `comm` is everything between the first `(` and the last `)`: the kernel
/// does not escape it, and a name may itself contain `)`.
pub(crate) fn parse_stat(buf: &[u8]) -> Result<Stat<'_>, StatError> {
    if buf.is_empty() {
        return Err(StatError::Empty);
    }
    let open = memchr(b'(', buf).ok_or(StatError::Malformed("no '('"))?;
    let close = buf
        .iter()
        .rposition(|&b| b == b')')
        .ok_or(StatError::Malformed("no ')'"))?;
    if close < open {
        return Err(StatError::Malformed("')' before '('"));
    }
    let pid = parse_u64(buf[..open].trim_ascii())
        .and_then(|n| u32::try_from(n).ok())
        .ok_or(StatError::Malformed("bad pid"))?;
    let comm = &buf[open + 1..close];

    // After ")": " S ppid pgrp session tty tpgid flags minflt cminflt majflt
    // cmajflt utime stime cutime cstime priority nice threads itreal start …"
    let mut fields = buf[close + 1..]
        .split(|&b| b == b' ' || b == b'\n')
        .filter(|f| !f.is_empty());
    let mut next = |what: &'static str| fields.next().ok_or(StatError::Malformed(what));
    let state = match next("no state")? {
        [letter] => *letter,
        _ => return Err(StatError::Malformed("bad state")),
    };
    let num = |field: &[u8], what: &'static str| parse_u64(field).ok_or(StatError::Malformed(what));
    let ppid = u32::try_from(num(next("no ppid")?, "bad ppid")?)
        .map_err(|_| StatError::Malformed("bad ppid"))?;
    let pgrp = u32::try_from(num(next("no pgrp")?, "bad pgrp")?)
        .map_err(|_| StatError::Malformed("bad pgrp"))?;
    for what in ["no session", "no tty", "no tpgid"] {
        next(what)?;
    }
    let flags = u32::try_from(num(next("no flags")?, "bad flags")?)
        .map_err(|_| StatError::Malformed("bad flags"))?;
    for what in ["no minflt", "no cminflt", "no majflt", "no cmajflt"] {
        next(what)?;
    }
    let utime = num(next("no utime")?, "bad utime")?;
    let stime = num(next("no stime")?, "bad stime")?;
    for what in [
        "no cutime",
        "no cstime",
        "no priority",
        "no nice",
        "no num_threads",
        "no itrealvalue",
    ] {
        next(what)?;
    }
    let start_ticks = num(next("no starttime")?, "bad starttime")?;
    Ok(Stat {
        pid,
        comm,
        state,
        ppid,
        pgrp,
        flags,
        cpu_ticks: utime.saturating_add(stime),
        start_ticks,
    })
}

/// The fields of `/proc/PID/status` procespy uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Status {
    /// Real user id (first number of `Uid:`).
    pub(crate) uid: Option<u32>,
    /// `RssAnon`, `RssFile`, `RssShmem` in bytes; zero when absent (kernel
    /// threads, zombies).
    pub(crate) rss: Rss,
    /// `VmSwap` in bytes; zero when absent.
    pub(crate) swap: u64,
}

/// Parses the contents of `/proc/PID/status`.
pub(crate) fn parse_status(buf: &[u8]) -> Status {
    let mut status = Status::default();
    for line in buf.split(|&b| b == b'\n') {
        let Some(colon) = memchr(b':', line) else {
            continue;
        };
        let (key, value) = (&line[..colon], &line[colon + 1..]);
        let first_number = || {
            value
                .split(|b| b.is_ascii_whitespace())
                .find(|f| !f.is_empty())
                .and_then(parse_u64)
        };
        match key {
            b"Uid" => status.uid = first_number().and_then(|n| u32::try_from(n).ok()),
            b"RssAnon" => status.rss.anon = first_number().unwrap_or(0).saturating_mul(1024),
            b"RssFile" => status.rss.file = first_number().unwrap_or(0).saturating_mul(1024),
            b"RssShmem" => status.rss.shmem = first_number().unwrap_or(0).saturating_mul(1024),
            b"VmSwap" => {
                status.swap = first_number().unwrap_or(0).saturating_mul(1024);
                // The last line we need: the others come earlier.
                break;
            }
            _ => {}
        }
    }
    status
}

/// Turns the raw `cmdline` (NUL-separated arguments) into arguments joined by
/// single spaces. Trailing NULs are dropped (processes that rewrite their
/// title often pad it with NULs); other bytes are kept as they are.
pub(crate) fn join_cmdline(raw: &[u8]) -> Vec<u8> {
    let end = raw.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    raw[..end]
        .iter()
        .map(|&b| if b == 0 { b' ' } else { b })
        .collect()
}

/// Reads processes from `/proc`, reusing its read buffers and one `/proc`
/// directory descriptor across reads. Keep one for repeated examinations.
#[derive(Debug)]
pub(crate) struct Scanner {
    proc_dir: OwnedFd,
    /// One read buffer per worker; the first serves [`Scanner::read`].
    bufs: Vec<Vec<u8>>,
}

/// Below this many processes per worker, one thread reads them all.
const PER_WORKER: usize = 1024;
/// At most this many threads read `/proc` at once.
const MAX_WORKERS: usize = 4;

impl Scanner {
    /// Opens `/proc`.
    pub(crate) fn new() -> io::Result<Scanner> {
        let proc_dir = openat(
            nix::fcntl::AT_FDCWD,
            c"/proc",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)?;
        Ok(Scanner {
            proc_dir,
            bufs: vec![vec![0; MIN_BUF]],
        })
    }

    /// Reads every numeric entry of `/proc`. Fails only when `/proc` cannot
    /// be listed; processes that cannot be read are counted and skipped.
    ///
    /// With many processes the reads are shared among a few threads (at most
    /// one per CPU, at most 4), each with its own buffer; the result keeps
    /// `/proc`'s order either way.
    pub(crate) fn examine(&mut self) -> io::Result<Examination> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.examine_with(|procs| (procs / PER_WORKER).clamp(1, cpus.min(MAX_WORKERS)))
    }

    /// [`Scanner::examine`] with `workers(number of pids)` threads.
    fn examine_with(&mut self, workers: impl Fn(usize) -> usize) -> io::Result<Examination> {
        let started = Instant::now();
        let pids = list_pids()?;
        Ok(self.read_pids(started, &pids, workers))
    }

    /// Lists `/proc` and reads only the processes not in `known`: for a
    /// table that kernel events keep current, this finds what they missed
    /// (processes that predate procespy, exits whose events were lost) at a
    /// fraction of a full examination's cost.
    pub(crate) fn examine_unknown(&mut self, known: &HashSet<u32>) -> io::Result<Examination> {
        let started = Instant::now();
        let listed = list_pids()?;
        let unknown: Vec<u32> = listed
            .iter()
            .copied()
            .filter(|pid| !known.contains(pid))
            .collect();
        let mut exam = self.read_pids(started, &unknown, |n| {
            n.div_ceil(PER_WORKER).min(MAX_WORKERS)
        });
        exam.listed = Some(listed);
        Ok(exam)
    }

    fn read_pids(
        &mut self,
        started: Instant,
        pids: &[u32],
        workers: impl Fn(usize) -> usize,
    ) -> Examination {
        let workers = workers(pids.len()).clamp(1, pids.len().max(1));
        if self.bufs.len() < workers {
            self.bufs.resize_with(workers, || vec![0; MIN_BUF]);
        }
        let proc_dir = &self.proc_dir;
        let parts: Vec<Part> = if workers == 1 {
            vec![read_all(proc_dir, &mut self.bufs[0], pids)]
        } else {
            let chunk = pids.len().div_ceil(workers);
            std::thread::scope(|scope| {
                let handles: Vec<_> = pids
                    .chunks(chunk)
                    .zip(self.bufs.iter_mut())
                    .map(|(pids, buf)| scope.spawn(move || read_all(proc_dir, buf, pids)))
                    .collect();
                handles
                    .into_iter()
                    .map(|handle| {
                        handle
                            .join()
                            .unwrap_or_else(|p| std::panic::resume_unwind(p))
                    })
                    .collect()
            })
        };
        let mut exam = Examination {
            procs: Vec::with_capacity(pids.len()),
            started,
            vanished: 0,
            listed: None,
            unread: Vec::new(),
            resident: HashMap::new(),
        };
        let mut denied = 0;
        let mut failed = None;
        for part in parts {
            exam.procs.extend(part.procs);
            exam.vanished += part.vanished;
            exam.unread.extend(part.unread);
            denied += part.denied;
            failed = failed.or(part.failed);
        }
        if denied > 0 {
            tracing::debug!("{denied} processes in /proc could not be read (hidepid?)");
        }
        if let Some((pid, err)) = failed {
            tracing::warn!(
                "{} processes could not be read (process {pid}: {err}); they are kept as \
                 they were until an examination reads them",
                exam.unread.len() - denied
            );
        }
        exam
    }

    /// Reads one process.
    pub(crate) fn read(&mut self, pid: u32) -> Result<ProcInfo, ReadError> {
        read_one(&self.proc_dir, &mut self.bufs[0], pid)
    }
}

/// What one worker of an examination found.
struct Part {
    procs: Vec<ProcInfo>,
    vanished: usize,
    denied: usize,
    /// Every process not read, but for those that vanished.
    unread: Vec<u32>,
    /// The first failure other than a denial.
    failed: Option<(u32, ReadError)>,
}

/// Reads `pids` one after the other into `buf`.
fn read_all(proc_dir: &OwnedFd, buf: &mut Vec<u8>, pids: &[u32]) -> Part {
    let mut part = Part {
        procs: Vec::with_capacity(pids.len()),
        vanished: 0,
        denied: 0,
        unread: Vec::new(),
        failed: None,
    };
    for &pid in pids {
        match read_one(proc_dir, buf, pid) {
            Ok(info) => part.procs.push(info),
            Err(ReadError::Vanished(_)) => part.vanished += 1,
            Err(ReadError::PermissionDenied(_)) => {
                part.denied += 1;
                part.unread.push(pid);
            }
            Err(err) => {
                part.unread.push(pid);
                part.failed.get_or_insert((pid, err));
            }
        }
    }
    part
}

/// The PIDs (thread-group ids) listed in `/proc`.
fn list_pids() -> io::Result<Vec<u32>> {
    let mut pids = Vec::with_capacity(1024);
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        if let Some(pid) = parse_u64(name.as_bytes()).and_then(|n| u32::try_from(n).ok()) {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// Reads one process through `/proc/PID`, opened relative to `proc_dir`.
fn read_one(proc_dir: &OwnedFd, buf: &mut Vec<u8>, pid: u32) -> Result<ProcInfo, ReadError> {
    let mut name = PidName::default();
    let dir = openat(
        proc_dir,
        name.format(pid),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| classify(pid, "", errno.into()))?;

    let len = read_file(&dir, c"stat", buf).map_err(|e| classify(pid, "stat", e))?;
    let stat = match parse_stat(&buf[..len]) {
        Ok(stat) => stat,
        Err(StatError::Empty) => return Err(ReadError::Vanished(pid)),
        Err(StatError::Malformed(what)) => {
            return Err(ReadError::Malformed {
                pid,
                file: "stat",
                what,
            });
        }
    };
    let mut info = ProcInfo {
        pid,
        ppid: stat.ppid,
        pgrp: stat.pgrp,
        comm: stat.comm.to_vec(),
        state: stat.state,
        kernel_thread: stat.flags & PF_KTHREAD != 0,
        exiting: stat.flags & PF_EXITING != 0,
        cpu_ticks: stat.cpu_ticks,
        start_ticks: stat.start_ticks,
        ..ProcInfo::default()
    };

    let len = read_file(&dir, c"status", buf).map_err(|e| classify(pid, "status", e))?;
    if len == 0 {
        return Err(ReadError::Vanished(pid));
    }
    let status = parse_status(&buf[..len]);
    info.uid = status.uid.ok_or(ReadError::Malformed {
        pid,
        file: "status",
        what: "no Uid line",
    })?;
    info.rss = status.rss;
    info.swap = status.swap;
    if info.kernel_thread {
        // Kernel threads have no memory of their own, no command line
        // and no executable.
        info.rss = Rss::default();
        info.swap = 0;
        return Ok(info);
    }
    if info.state == b'Z' {
        // A zombie's memory, command line and executable are gone.
        return Ok(info);
    }

    // Both may be refused (exe: to other users' processes without root)
    // or be gone if the process exits now: it was alive at `stat`, so it
    // is listed with what could be read.
    if let Ok(len) = read_file(&dir, c"cmdline", buf) {
        info.cmdline = join_cmdline(&buf[..len]);
    }
    info.exe = readlinkat(&dir, c"exe").ok().map(PathBuf::from);
    Ok(info)
}

/// Reads one process with a fresh [`Scanner`]. For many, use
/// [`Scanner::read`] or [`examine`].
pub(crate) fn read_process(pid: u32) -> Result<ProcInfo, ReadError> {
    let mut scanner = Scanner::new().map_err(|source| ReadError::Io {
        pid,
        file: "",
        source,
    })?;
    scanner.read(pid)
}

/// Reads one process and opens a handle on it, such that the read is
/// known to describe the handle's process: the pidfd is opened first, the
/// process read next, and the pidfd checked to be alive last (a PID is
/// reused only after its process is gone).
///
/// A process whose pidfd cannot be opened for another reason than its exit
/// (out of file descriptors, say) is read without one.
pub(crate) fn read_with_handle(pid: u32) -> Result<(ProcInfo, Option<Pidfd>), ReadError> {
    let handle = match Pidfd::open(pid) {
        Ok(handle) => Some(handle),
        Err(err) if err.raw_os_error() == Some(libc::ESRCH) => {
            return Err(ReadError::Vanished(pid));
        }
        Err(_) => None,
    };
    let info = read_process(pid)?;
    if handle.as_ref().is_some_and(Pidfd::exited) {
        return Err(ReadError::Vanished(pid));
    }
    Ok((info, handle))
}

/// The start time of `pid` (`/proc/PID/stat` field 22, clock ticks after boot).
pub(crate) fn read_start_ticks(pid: u32) -> Result<u64, ReadError> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read(&path).map_err(|err| classify(pid, "stat", err))?;
    match parse_stat(&text) {
        Ok(stat) => Ok(stat.start_ticks),
        Err(StatError::Empty) => Err(ReadError::Vanished(pid)),
        Err(StatError::Malformed(what)) => Err(ReadError::Malformed {
            pid,
            file: "stat",
            what,
        }),
    }
}

/// What `memory` counts of `pid`, read afresh: the resident pages of
/// `statm` (the precise figure a breach is confirmed with), plus `VmSwap`
/// for `rss+swap`, or the PSS of `smaps_rollup`.
pub(crate) fn read_memory(pid: u32, memory: Memory) -> Option<u64> {
    match memory {
        Memory::Rss => crate::sys::statm_rss(pid),
        Memory::RssSwap => crate::sys::statm_rss(pid)?.checked_add(read_swap(pid)?),
        Memory::Pss => read_pss(pid),
    }
}

/// The processes of process group `pgid` now, but `except`: every entry
/// of `/proc` whose `stat` names that group.
pub(crate) fn group_members(pgid: u32, except: u32) -> Vec<u32> {
    let Ok(pids) = list_pids() else {
        return Vec::new();
    };
    let Ok(scanner) = Scanner::new() else {
        return Vec::new();
    };
    let mut buf = Vec::new();
    let mut name = PidName::default();
    pids.into_iter()
        .filter(|&pid| pid != except)
        .filter(|&pid| {
            let Ok(dir) = openat(
                &scanner.proc_dir,
                name.format(pid),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) else {
                return false;
            };
            read_file(&dir, c"stat", &mut buf)
                .ok()
                .and_then(|len| parse_stat(&buf[..len]).ok().map(|stat| stat.pgrp))
                == Some(pgid)
        })
        .collect()
}

/// The bytes of `pid` in swap (`VmSwap` of `/proc/PID/status`).
pub(crate) fn read_swap(pid: u32) -> Option<u64> {
    let text = std::fs::read(format!("/proc/{pid}/status")).ok()?;
    Some(parse_status(&text).swap)
}

/// The proportional set size of `pid` (`Pss` of `/proc/PID/smaps_rollup`),
/// in bytes. The kernel walks the process's page tables to make it: a read
/// costs about a millisecond per GiB mapped.
pub(crate) fn read_pss(pid: u32) -> Option<u64> {
    let text = std::fs::read(format!("/proc/{pid}/smaps_rollup")).ok()?;
    parse_pss(&text)
}

/// The `Pss:` line of `smaps_rollup`, in bytes.
pub(crate) fn parse_pss(buf: &[u8]) -> Option<u64> {
    buf.split(|&b| b == b'\n').find_map(|line| {
        let value = line.strip_prefix(b"Pss:")?.trim_ascii();
        let kib = parse_u64(value.strip_suffix(b"kB")?.trim_ascii())?;
        kib.checked_mul(1024)
    })
}

/// Reads every numeric entry of `/proc` once; an error when `/proc` itself
/// cannot be listed (then nothing is known to have exited).
pub(crate) fn examine() -> io::Result<Examination> {
    Scanner::new().and_then(|mut scanner| scanner.examine())
}

/// The `n` processes with the most resident memory now.
///
/// Cheaper than [`examine`] when only a few are wanted (an email's list of
/// the largest): one small read of `/proc/PID/statm` per process, then a
/// full read of the largest few. Kernel threads have no resident memory and
/// never make the list.
pub(crate) fn largest(n: usize) -> Vec<ProcInfo> {
    let Ok(pids) = list_pids() else {
        return Vec::new();
    };
    let Ok(mut scanner) = Scanner::new() else {
        return Vec::new();
    };
    let mut buf = Vec::new();
    let mut sizes: Vec<(u64, u32)> = pids
        .into_iter()
        .filter_map(|pid| {
            let path = format!("{pid}/statm\0");
            let name = CStr::from_bytes_with_nul(path.as_bytes()).ok()?;
            let len = read_file(&scanner.proc_dir, name, &mut buf).ok()?;
            let resident = buf[..len]
                .split(|&b| b == b' ')
                .nth(1)
                .and_then(parse_u64)?;
            (resident > 0).then_some((resident, pid))
        })
        .collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    // Down the list until `n` are read: some exit (or die, when procespy
    // just killed a few large ones) before their full read.
    let mut chosen: Vec<ProcInfo> = sizes
        .iter()
        .filter_map(|&(_, pid)| scanner.read(pid).ok())
        .filter(|p| !p.kernel_thread && p.state != b'Z')
        .take(n)
        .collect();
    chosen.sort_by_key(|p| std::cmp::Reverse(p.rss.total()));
    chosen.truncate(n);
    chosen
}

/// [`Scanner::examine_unknown`] with a fresh scanner.
pub(crate) fn examine_unknown(known: &HashSet<u32>) -> io::Result<Examination> {
    Scanner::new().and_then(|mut scanner| scanner.examine_unknown(known))
}

/// Clock ticks since boot, on the clock of `/proc/PID/stat`'s starttime
/// (`CLOCK_BOOTTIME`, in `sysconf(_SC_CLK_TCK)` units).
pub(crate) fn uptime_ticks() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let hz = procfs::ticks_per_second();
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(hz) + nanos * hz / 1_000_000_000
}

/// Reads `dir/name` into `buf`, growing it when needed, and returns the
/// length read: the contents are `buf[..len]`.
///
/// `buf` stays initialised to its full length so it is reused across files
/// without clearing, and without the size probes (`statx`, `lseek`) that
/// `read_to_end` makes, which `/proc` files cannot answer anyway.
fn read_file(dir: &OwnedFd, name: &CStr, buf: &mut Vec<u8>) -> io::Result<usize> {
    let fd = openat(dir, name, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())?;
    let mut file = File::from(fd);
    let mut len = 0;
    loop {
        if len == buf.len() {
            let grown = (buf.len() * 2).max(MIN_BUF);
            buf.resize(grown, 0);
        }
        match file.read(&mut buf[len..]) {
            Ok(0) => return Ok(len),
            Ok(n) => len += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

/// Maps an I/O error on `/proc/PID/file` to what it means for the process.
fn classify(pid: u32, file: &'static str, err: io::Error) -> ReadError {
    match err.raw_os_error().map(Errno::from_raw) {
        Some(Errno::ENOENT | Errno::ESRCH) => ReadError::Vanished(pid),
        Some(Errno::EACCES | Errno::EPERM) => ReadError::PermissionDenied(pid),
        _ => ReadError::Io {
            pid,
            file,
            source: err,
        },
    }
}

/// A PID written as a NUL-terminated decimal string, without allocating.
#[derive(Default)]
struct PidName([u8; 12]);

impl PidName {
    fn format(&mut self, pid: u32) -> &CStr {
        let mut digits = [0u8; 10];
        let mut n = pid;
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for i in 0..len {
            self.0[i] = digits[len - 1 - i];
        }
        self.0[len] = 0;
        CStr::from_bytes_with_nul(&self.0[..=len]).expect("digits and one NUL")
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

/// Parses a non-empty run of ASCII digits; `None` on anything else or on
/// overflow.
fn parse_u64(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_lists_the_biggest_first_and_finds_a_big_one() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let all = examine().unwrap().procs;
        let top = largest(3);
        assert_eq!(
            top.len(),
            3.min(all.iter().filter(|p| p.rss.total() > 0).count())
        );
        assert!(top.windows(2).all(|w| w[0].rss.total() >= w[1].rss.total()));
        let biggest = all.iter().map(|p| p.rss.total()).max().unwrap_or(0);
        // Processes change between the two reads: the first is near the biggest.
        assert!(
            top[0].rss.total() * 2 >= biggest,
            "{} vs {biggest}",
            top[0].rss.total()
        );
        let _ = child.kill();
        let _ = child.wait();
    }

    /// A stat line as the kernel writes it, with the given comm.
    fn stat_line(pid: u32, comm: &[u8]) -> Vec<u8> {
        let mut line = format!("{pid} (").into_bytes();
        line.extend_from_slice(comm);
        line.extend_from_slice(
            b") S 1 1234 1234 0 -1 4194560 100 0 0 0 25 17 0 0 20 0 3 0 98765 \
              1000000 500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n",
        );
        line
    }

    #[test]
    fn stat_plain() {
        let line = stat_line(42, b"bash");
        let stat = parse_stat(&line).unwrap();
        assert_eq!(
            stat,
            Stat {
                pid: 42,
                comm: b"bash",
                state: b'S',
                ppid: 1,
                pgrp: 1234,
                flags: 4194560,
                cpu_ticks: 42,
                start_ticks: 98765,
            }
        );
    }

    #[test]
    fn stat_tricky_comms() {
        let comms: [&[u8]; 8] = [
            b"a) (b",
            b"with spaces",
            b"new\nline",
            b"\xff\xfe bad utf8",
            b"",
            b")",
            b"((",
            b") S 9 9 9",
        ];
        for comm in comms {
            let line = stat_line(7, comm);
            let stat = parse_stat(&line).unwrap_or_else(|e| panic!("{comm:?}: {e:?}"));
            assert_eq!(stat.comm, comm);
            assert_eq!(stat.pid, 7);
            assert_eq!(stat.state, b'S');
            assert_eq!(stat.ppid, 1);
            assert_eq!(stat.cpu_ticks, 42);
            assert_eq!(stat.start_ticks, 98765);
        }
    }

    #[test]
    fn stat_kernel_thread_flags() {
        let line = b"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 3 0 0 20 0 1 0 2 0 0 \
                     18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 17 1 0 0 0 0 0\n";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.ppid, 0);
        assert_ne!(stat.flags & PF_KTHREAD, 0);
        assert_eq!(stat.cpu_ticks, 3);
    }

    #[test]
    fn stat_bad_inputs() {
        assert_eq!(parse_stat(b""), Err(StatError::Empty));
        assert!(matches!(
            parse_stat(b"12 bash S 1"),
            Err(StatError::Malformed(_))
        ));
        assert!(matches!(
            parse_stat(b"12 (bash) S 1 2"),
            Err(StatError::Malformed(_))
        ));
        assert!(matches!(
            parse_stat(b"12 )bash( S"),
            Err(StatError::Malformed(_))
        ));
        assert!(matches!(
            parse_stat(b"x (bash) S 1"),
            Err(StatError::Malformed(_))
        ));
    }

    #[test]
    fn status_fields() {
        let status =
            b"Name:\tbash\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t1001\t1002\t1003\n\
                       Gid:\t100\t100\t100\t100\nVmRSS:\t    5000 kB\nRssAnon:\t    1000 kB\n\
                       RssFile:\t    3000 kB\nRssShmem:\t    1000 kB\nThreads:\t1\n";
        let parsed = parse_status(status);
        assert_eq!(parsed.uid, Some(1000));
        assert_eq!(
            parsed.rss,
            Rss {
                anon: 1000 * 1024,
                file: 3000 * 1024,
                shmem: 1000 * 1024
            }
        );
        assert_eq!(parsed.swap, 0, "no VmSwap line");
        let swapped =
            parse_status(b"Uid:\t0\t0\t0\t0\nRssShmem:\t 0 kB\nVmPTE:\t 8 kB\nVmSwap:\t 300 kB\n");
        assert_eq!(swapped.swap, 300 * 1024);
        let kthread = parse_status(b"Name:\tkthreadd\nUid:\t0\t0\t0\t0\nThreads:\t1\n");
        assert_eq!(kthread.uid, Some(0));
        assert_eq!(kthread.rss, Rss::default());
    }

    #[test]
    fn our_own_group_lists_its_members() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let me = std::process::id();
        let own = read_process(me).unwrap().pgrp;
        assert!(group_members(own, me).iter().all(|&pid| pid != me));
        assert!(!group_members(own, me).contains(&child.id()));
        assert_eq!(group_members(child.id(), 0), [child.id()]);
        assert_eq!(group_members(child.id(), child.id()), Vec::<u32>::new());
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn pss_comes_from_its_own_line() {
        let rollup = b"00400000-7ffc0000 ---p 00000000 00:00 0    [rollup]\n\
            Rss:               9000 kB\nPss:               1500 kB\nPss_Anon:  1000 kB\n\
            SwapPss:              0 kB\n";
        assert_eq!(parse_pss(rollup), Some(1500 * 1024));
        assert_eq!(parse_pss(b"Rss: 5 kB\n"), None);
        assert_eq!(parse_pss(b"Pss: x kB\n"), None);
        let own = read_pss(std::process::id()).expect("our own smaps_rollup");
        assert!(own > 0 && own <= crate::sys::statm_rss(std::process::id()).unwrap() * 2);
        assert_eq!(read_swap(std::process::id()).map(|_| ()), Some(()));
        assert_eq!(read_pss(u32::MAX), None);
    }

    #[test]
    fn cmdline_joined() {
        assert_eq!(join_cmdline(b"ls\0-l\0/tmp\0"), b"ls -l /tmp");
        assert_eq!(join_cmdline(b"title rewritten\0\0\0"), b"title rewritten");
        assert_eq!(join_cmdline(b"a\0\xff\0"), b"a \xff");
        assert_eq!(join_cmdline(b""), b"");
        assert_eq!(join_cmdline(b"\0"), b"");
    }

    #[test]
    fn pid_names() {
        let mut name = PidName::default();
        assert_eq!(name.format(0), c"0");
        assert_eq!(name.format(1), c"1");
        assert_eq!(name.format(4194304), c"4194304");
        assert_eq!(name.format(u32::MAX), c"4294967295");
    }

    #[test]
    fn read_own_process() {
        let me = std::process::id();
        let info = read_process(me).unwrap();
        assert_eq!(info.pid, me);
        assert_eq!(info.ppid, std::os::unix::process::parent_id());
        assert_eq!(info.uid, nix::unistd::getuid().as_raw());
        assert!(!info.kernel_thread);
        assert!(matches!(info.state, b'R' | b'S'));
        assert!(info.rss.total() > 0);
        assert!(info.rss.anon > 0);
        assert!(info.start_ticks > 0);
        assert!(!info.comm.is_empty() && info.comm.len() <= 15);
        let exe = std::env::current_exe().unwrap();
        assert_eq!(info.exe.as_deref(), Some(exe.as_path()));
        let arg0 = std::env::args_os().next().unwrap();
        assert!(info.cmdline.starts_with(arg0.as_bytes()));
    }

    #[test]
    fn read_vanished_process() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        match read_process(pid) {
            Err(ReadError::Vanished(p)) => assert_eq!(p, pid),
            // The PID may have been reused in between: then it is another
            // process, not `true`'s zombie.
            Ok(info) => assert_ne!(info.state, b'Z'),
            Err(other) => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn read_zombie_keeps_state() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not waited for: once `true` exits it stays a zombie until reaped.
        let mut info = read_process(pid).unwrap();
        for _ in 0..500 {
            if info.state == b'Z' {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
            info = read_process(pid).unwrap();
        }
        assert_eq!(info.state, b'Z');
        assert_eq!(info.rss, Rss::default());
        assert_eq!(info.exe, None);
        drop(child.wait());
    }

    #[test]
    fn examine_finds_own_process() {
        let exam = examine().unwrap();
        let me = std::process::id();
        let mine = exam.procs.iter().find(|p| p.pid == me).expect("own pid");
        assert!(mine.rss.total() > 0);
        assert!(exam.procs.iter().any(|p| p.pid == 1));
        assert!(uptime_ticks() >= mine.start_ticks);
        let mut pids: Vec<u32> = exam.procs.iter().map(|p| p.pid).collect();
        pids.sort_unstable();
        pids.dedup();
        assert_eq!(pids.len(), exam.procs.len());
    }

    #[test]
    fn examine_in_parallel_keeps_order() {
        let mut scanner = Scanner::new().unwrap();
        let exam = scanner.examine_with(|_| 3).unwrap();
        let me = std::process::id();
        assert!(exam.procs.iter().any(|p| p.pid == me));
        assert!(exam.procs.iter().any(|p| p.pid == 1));
        // /proc lists PIDs in increasing order; the parts are joined in order.
        assert!(exam.procs.windows(2).all(|w| w[0].pid < w[1].pid));
        // The buffers are kept for the next examination.
        assert!(scanner.bufs.len() >= 3.min(exam.procs.len()));
    }
}
