//! What procespy knows about one process.

use serde::{Deserialize, Serialize};

/// Resident memory of one process, split as the kernel counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rss {
    /// File-backed pages, in bytes (`RssFile`).
    pub file: u64,
    /// Anonymous pages, in bytes (`RssAnon`).
    pub anon: u64,
    /// Shared-memory pages, in bytes (`RssShmem`).
    pub shmem: u64,
}

impl Rss {
    /// The resident set size: file + anon + shmem, as `VmRSS` shows it.
    pub fn total(&self) -> u64 {
        self.file + self.anon + self.shmem
    }
}

/// Where a figure in the process table came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// An eBPF event or the kernel's `WATCHED` map.
    Ebpf,
    /// A read of `/proc`.
    Proc,
}

/// One process as a read of `/proc/PID` found it.
///
/// Names and command lines are raw bytes: the kernel does not promise UTF-8.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProcInfo {
    /// Process id (tgid).
    pub(crate) pid: u32,
    /// Parent process id.
    pub(crate) ppid: u32,
    /// Process group id.
    pub(crate) pgrp: u32,
    /// `comm`: the name the kernel keeps, at most 15 bytes.
    pub(crate) comm: Vec<u8>,
    /// The executable's path (`/proc/PID/exe`), when readable.
    pub(crate) exe: Option<std::path::PathBuf>,
    /// The command line, arguments joined by single spaces.
    pub(crate) cmdline: Vec<u8>,
    /// Real user id.
    pub(crate) uid: u32,
    /// Start time in clock ticks after boot (`/proc/PID/stat` field 22);
    /// with `pid`, identifies the process across PID reuse.
    pub(crate) start_ticks: u64,
    /// Resident memory.
    pub(crate) rss: Rss,
    /// Bytes in swap (`VmSwap`).
    pub(crate) swap: u64,
    /// User + system CPU time in clock ticks.
    pub(crate) cpu_ticks: u64,
    /// Single-letter state from `/proc/PID/stat` (`R`, `S`, `Z`, …).
    pub(crate) state: u8,
    /// A kernel thread (`PF_KTHREAD`): never watched, never signalled.
    pub(crate) kernel_thread: bool,
    /// Its leader is exiting (`PF_EXITING`): past its exit event, not yet
    /// a zombie.
    pub(crate) exiting: bool,
}

impl ProcInfo {
    /// `comm` as text, with invalid UTF-8 replaced, for display.
    pub(crate) fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.comm).into_owned()
    }
}
