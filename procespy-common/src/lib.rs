//! Types shared by procespy's eBPF programs and its userspace agent.
//!
//! Everything here is `#[repr(C)]` plain data: the kernel writes it into maps
//! and the ring buffer, userspace reads it back byte for byte. Field order is
//! chosen so that no type has implicit padding.
#![no_std]

/// Length of a task's `comm`, including the terminating NUL.
pub const COMM_LEN: usize = 16;

/// Index of file-backed pages in `mm_struct.rss_stat` (`MM_FILEPAGES`).
pub const MM_FILEPAGES: u32 = 0;
/// Index of anonymous pages in `mm_struct.rss_stat` (`MM_ANONPAGES`).
pub const MM_ANONPAGES: u32 = 1;
/// Index of swapped-out entries in `mm_struct.rss_stat` (`MM_SWAPENTS`).
pub const MM_SWAPENTS: u32 = 2;
/// Index of shared-memory pages in `mm_struct.rss_stat` (`MM_SHMEMPAGES`).
pub const MM_SHMEMPAGES: u32 = 3;
/// Number of counters in `mm_struct.rss_stat` (`NR_MM_COUNTERS`).
pub const NR_MM_COUNTERS: usize = 4;

/// Slots of per-process state (`STATE`); slot 0 means "not watched", so
/// at most `MAX_WATCHED - 1` processes are followed at once.
pub const MAX_WATCHED: u32 = 65_535;

/// PIDs per element of the slot table (`SLOTS`): each element is an array
/// of this many `u16` slot numbers (128 KiB).
pub const SLOT_CHUNK: usize = 1 << 16;
/// Elements of the slot table needed for every tgid below `pid_max`.
pub const fn slot_chunks(pid_max: u32) -> u32 {
    pid_max.div_ceil(SLOT_CHUNK as u32)
}
/// The most elements the slot table has: every possible tgid (the kernel's
/// `PID_MAX_LIMIT` is 4,194,304).
pub const MAX_SLOT_CHUNKS: u32 = slot_chunks(4_194_304);
/// The slot of a new child of a watched process, until userspace gives it
/// one: its state waits in `FORKED`, keyed by tgid.
pub const SLOT_FORKED: u16 = u16::MAX;
/// Children of watched processes waiting for a slot at once.
pub const MAX_FORKED: u32 = 4096;

/// `BPF_F_MMAPABLE`: userspace maps the slot table and writes slot numbers
/// in place, next to the programs' own writes, without a whole-element
/// update.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;
/// Size of the ring buffer that carries [`Event`]s, in bytes (a power of two).
pub const RING_BYTES: u32 = 1 << 20;
/// The eBPF programs wake the reader of lifecycle events at most once per
/// this many nanoseconds.
pub const LIFECYCLE_WAKE_NS: u64 = 1_000_000;
/// Once woken, the reader polls the lifecycle ring every this many
/// nanoseconds, until two polls in a row find nothing (then once more,
/// later): longer than [`LIFECYCLE_WAKE_NS`], so that every event that did
/// not wake the reader is found by a poll.
pub const LIFECYCLE_POLL_NS: u64 = 2_000_000;
/// Size of the ring buffer that carries breach and usage events, in bytes:
/// apart from the lifecycle events, so that a storm of those never delays
/// a breach (a power of two).
pub const BREACH_RING_BYTES: u32 = 1 << 18;

/// What an [`Event`] reports.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `pid` replaced its image (`execve`); `comm` is the new name.
    Exec = 1,
    /// `pid` was created by fork from `ppid` (a new process, not a thread).
    Fork = 2,
    /// The last thread of `pid` exited.
    Exit = 3,
    /// The task `pid` (a thread id, which is the tgid for a group leader) set its name to `comm`.
    Rename = 4,
    /// `pid` crossed its limit upwards; `rss_bytes` is its RSS at that page.
    Breach = 5,
    /// The RSS of `pid`, a process watched with [`WATCH_REPORT_USAGE`], moved
    /// to another MiB; `rss_bytes` is the new figure.
    Usage = 6,
    /// `pid` crossed its warning threshold ([`Watched::warn_bytes`])
    /// upwards, still under its limit; `rss_bytes` is its RSS at that page.
    Warning = 7,
}

impl EventKind {
    /// Decodes the raw kind written by the kernel.
    pub fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::Exec,
            2 => Self::Fork,
            3 => Self::Exit,
            4 => Self::Rename,
            5 => Self::Breach,
            6 => Self::Usage,
            7 => Self::Warning,
            _ => return None,
        })
    }
}

/// One record in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// An [`EventKind`] as `u32`.
    pub kind: u32,
    /// The process (tgid) the event is about; a thread id for [`EventKind::Rename`].
    pub pid: u32,
    /// The parent tgid for [`EventKind::Fork`], otherwise 0.
    pub ppid: u32,
    /// Flags: [`EVENT_FLAG_KILLED`].
    pub flags: u32,
    /// `bpf_ktime_get_ns()` when the event was made.
    pub ktime_ns: u64,
    /// RSS in bytes at a [`EventKind::Breach`] or [`EventKind::Usage`], otherwise 0.
    pub rss_bytes: u64,
    /// The task name, NUL-padded ([`EventKind::Exec`] and
    /// [`EventKind::Rename`], and the writer's name on a foreign breach;
    /// empty otherwise: userspace knows the name).
    pub comm: [u8; COMM_LEN],
}

/// Set on a breach event when the kernel already sent SIGKILL.
pub const EVENT_FLAG_KILLED: u32 = 1;
/// Set on a breach event seen in another process's context (one that wrote
/// into the owner's memory, through `/proc/PID/mem` say): the kernel could
/// not signal the owner from there, so userspace must.
pub const EVENT_FLAG_FOREIGN: u32 = 2;

/// Bytes of the filter of watched `mm_struct`s (a power of two): one byte
/// per hash of an mm's address, set when a watched process's own event
/// shows its mm, so that an event in a stranger's context costs one byte
/// test. The filter is a hint, the owner map is exact.
pub const MM_FILTER_BYTES: usize = 1 << 16;

/// The filter slot of an `mm_struct` at `offset` bytes from a fixed point.
pub const fn mm_filter_slot(offset: u64) -> usize {
    (offset.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 48) as usize & (MM_FILTER_BYTES - 1)
}

impl Event {
    /// The name bytes up to the first NUL.
    pub fn comm_bytes(&self) -> &[u8] {
        let end = self.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        &self.comm[..end]
    }
}

/// Per-process state in the `WATCHED` map, keyed by tgid.
///
/// Userspace inserts an entry for every process it wants followed; the
/// `rss_stat` program keeps `pages` current and compares it with `limit_bytes`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Watched {
    /// The `rss_stat` counters of the process's mm, in pages, by `MM_*` index.
    pub pages: [i64; NR_MM_COUNTERS],
    /// Limit in bytes (file + anon + shmem, and swap with
    /// [`WATCH_COUNT_SWAP`]); 0 means no limit, only follow.
    pub limit_bytes: u64,
    /// `WATCH_*` flags.
    pub flags: u32,
    /// Number of upward crossings reported so far.
    pub breaches: u32,
    /// The RSS in MiB last reported by a [`EventKind::Usage`] event.
    pub reported_mib: u64,
    /// The `mm_struct` the counters were last read from, once checked to be
    /// the process's own; 0 until then. Lets the common case skip reading
    /// `current->mm`.
    pub mm: u64,
    /// Report the upward crossing of this many bytes, under the limit, as
    /// an [`EventKind::Warning`] (once until the process is back under it);
    /// equal to `limit_bytes` when there is no warning, so that a process
    /// under its limit costs one more compare.
    pub warn_bytes: u64,
}

/// The kernel must read all counters at the next event (new entry, or after exec).
pub const WATCH_NEEDS_FULL_READ: u32 = 1;
/// Send SIGKILL from the kernel at the page that crosses the limit.
pub const WATCH_KILL_NOW: u32 = 2;
/// The process is above its limit; set at an upward crossing, cleared when it falls below.
pub const WATCH_OVER: u32 = 4;
/// Report every change of the RSS to another MiB ([`EventKind::Usage`]):
/// for limits on the sum over several processes, which userspace adds up.
pub const WATCH_REPORT_USAGE: u32 = 8;
/// Count the process's pages in swap (`MM_SWAPENTS`) with its resident
/// ones, against the limit and in [`EventKind::Usage`] events.
pub const WATCH_COUNT_SWAP: u32 = 16;
/// The process is above its warning threshold and was reported; cleared
/// when it falls back under it.
pub const WATCH_WARNED: u32 = 32;

impl Watched {
    /// Resident bytes (file + anon + shmem) given the page size.
    pub fn rss_bytes(&self, page_size: u64) -> u64 {
        let pages = self.pages[MM_FILEPAGES as usize]
            + self.pages[MM_ANONPAGES as usize]
            + self.pages[MM_SHMEMPAGES as usize];
        if pages < 0 {
            0
        } else {
            pages as u64 * page_size
        }
    }

    /// The bytes the limit counts: [`Watched::rss_bytes`], plus the pages
    /// in swap with [`WATCH_COUNT_SWAP`].
    pub fn counted_bytes(&self, page_size: u64) -> u64 {
        let rss = self.rss_bytes(page_size);
        if self.flags & WATCH_COUNT_SWAP == 0 {
            return rss;
        }
        let swap = self.pages[MM_SWAPENTS as usize];
        if swap <= 0 {
            rss
        } else {
            rss.saturating_add(swap as u64 * page_size)
        }
    }
}

/// Offsets and settings that userspace computes at load time, from the
/// running kernel's BTF and tracefs, and hands to the programs as a
/// read-only global (`CONFIG`). Frozen before the programs load, so the
/// verifier sees each field as a constant.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelConfig {
    /// Byte offset in `struct mm_struct` of each RSS counter's value, by
    /// `MM_*` index: `rss_stat[i].count` where the counters are
    /// `percpu_counter`s (Linux 6.2 and later), `rss_stat.count[i]` where
    /// they are `atomic_long_t`s (before).
    pub mm_counter: [u32; NR_MM_COUNTERS],
    /// Offset of `mm` in `struct task_struct`.
    pub task_mm: u32,
    /// Offset of `pid` in `struct task_struct`.
    pub task_pid: u32,
    /// Offset of `tgid` in `struct task_struct`.
    pub task_tgid: u32,
    /// Offset of `signal` in `struct task_struct`.
    pub task_signal: u32,
    /// Offset of `live` (the thread count, an `atomic_t`) in `struct signal_struct`.
    pub signal_live: u32,
    /// Offset of `pid` in the `task:task_rename` record.
    pub rename_pid: u32,
    /// Offset of `newcomm` in the `task:task_rename` record.
    pub rename_newcomm: u32,
    /// The system page size in bytes.
    pub page_size: u32,
}

impl KernelConfig {
    /// All zero: what the object is compiled with, before userspace fills it in.
    pub const ZERO: Self = Self {
        mm_counter: [0; NR_MM_COUNTERS],
        task_mm: 0,
        task_pid: 0,
        task_tgid: 0,
        task_signal: 0,
        signal_live: 0,
        rename_pid: 0,
        rename_newcomm: 0,
        page_size: 0,
    };
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` data without padding or pointers.
    unsafe impl aya::Pod for super::Watched {}
    // SAFETY: plain `#[repr(C)]` data without padding or pointers.
    unsafe impl aya::Pod for super::KernelConfig {}
    // SAFETY: plain `#[repr(C)]` data without padding or pointers.
    unsafe impl aya::Pod for super::Event {}
}
