//! The kernel side, seen from userspace: loading and attaching the eBPF
//! programs, the watched processes' slots and state, and the stream of
//! events.

mod btf;
pub(crate) mod events;
mod layout;
mod logs;
mod slots;

use std::{os::fd::AsFd, path::Path};

use anyhow::{Context, Result, anyhow};
use aya::{
    Btf, Ebpf, EbpfLoader, Endianness,
    maps::{HashMap, MapData, PerCpuArray},
    programs::{BtfTracePoint, TracePoint},
};
use procespy_common::{
    MAX_WATCHED, SLOT_FORKED, WATCH_COUNT_SWAP, WATCH_KILL_NOW, WATCH_NEEDS_FULL_READ,
    WATCH_REPORT_USAGE, Watched, slot_chunks,
};
use serde::{Deserialize, Serialize};

pub(crate) use events::EventStream;
pub use layout::{Counters, GroupExit};

use crate::{guard::KernelWatch, process::Rss, sys::Pidfd};

/// The eBPF object built by `cargo xtask build-ebpf`, embedded at build time.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/procespy.bpf.o"));

/// Classic tracepoints: (program, category, event).
const TRACEPOINTS: [(&str, &str, &str); 2] = [
    ("procespy_exec", "sched", "sched_process_exec"),
    ("procespy_rename", "task", "task_rename"),
];

/// The loaded and attached programs and the maps userspace uses.
///
/// Dropping it detaches every program and frees every map: nothing stays in
/// the kernel.
pub(crate) struct Kernel {
    ebpf: Ebpf,
    slots: slots::SlotTable,
    state: slots::StateTable,
    forked: HashMap<MapData, u32, Watched>,
    /// The slot userspace gave each watched process.
    slot_of: std::collections::HashMap<u32, u16>,
    /// Slots not in use.
    free: Vec<u16>,
    lost: PerCpuArray<MapData, u64>,
    page_size: u64,
    info: KernelInfo,
    /// The programs loaded, by name.
    programs: Vec<&'static str>,
}

/// Which kernel the programs run in, and how they read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    /// `uname -r`.
    pub release: String,
    /// How the kernel keeps RSS counters.
    pub counters: Counters,
    /// Whether threads batch their page counts before the mm sees them, so
    /// that a breach is seen up to 64 pages per growing thread late.
    pub batched: bool,
    /// How a process's end is told.
    pub group_exit: GroupExit,
}

/// What the kernel's BPF statistics say of one program, while they are on
/// (`sysctl kernel.bpf_stats_enabled=1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProgramStats {
    /// The program's name (`procespy_rss`, …).
    pub(crate) name: &'static str,
    /// Runs counted since the statistics were turned on.
    pub(crate) run_count: u64,
    /// Time spent running, in nanoseconds.
    pub(crate) run_time_ns: u64,
}

/// How the kernel is to follow one process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct WatchSpec {
    /// Report a breach above this many bytes; 0: follow only.
    pub(crate) limit_bytes: u64,
    /// Send SIGKILL from the kernel at the page that crosses the limit.
    pub(crate) kill_now: bool,
    /// Report every move of the RSS to another MiB (total-scope limits).
    pub(crate) report_usage: bool,
    /// Count the pages in swap with the resident ones (`rss+swap` limits).
    pub(crate) count_swap: bool,
    /// Report the crossing of this many bytes, under the limit, as a
    /// warning (`warn_at`).
    pub(crate) warn_bytes: Option<u64>,
}

/// What the kernel's map holds for one process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KernelRss {
    /// The counters, in bytes.
    pub(crate) rss: Rss,
    /// Pages in swap, in bytes; 0 unless the limit counts them.
    pub(crate) swap: u64,
    /// Number of upward crossings of the limit so far.
    pub(crate) breaches: u32,
}

/// Loads and attaches the programs; the error says why they could not be,
/// in words a user understands.
pub(crate) fn load() -> Result<(Kernel, EventStream)> {
    ensure_tracefs()?;
    let btf_path = Path::new(layout::VMLINUX_BTF);
    let btf_bytes = match std::fs::read(btf_path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(anyhow!(
                "this kernel has no BTF ({} is missing): eBPF mode needs Linux 5.8 or \
                 newer, built with CONFIG_DEBUG_INFO_BTF",
                btf_path.display()
            ));
        }
        Err(err) => return Err(anyhow!("reading {}: {err}", btf_path.display())),
    };
    let layout = layout::find(&btf_bytes, Path::new(layout::TRACEFS))?;
    let btf = Btf::parse(&btf_bytes, Endianness::default())
        .map_err(|err| anyhow!("reading the kernel's BTF: {err}"))?;
    drop(btf_bytes);
    let log_level = logs::kernel_level();
    let chunks = slot_chunks(pid_max());
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .map_max_entries("SLOTS", chunks)
        .override_global("CONFIG", &layout.config, true)
        .override_global(aya_log::LEVEL, &log_level, false)
        .load(OBJECT)
        .map_err(|err| anyhow!("loading the eBPF object: {err}{}", privilege_hint()))?;
    logs::forward(&mut ebpf)?;

    for (name, category, event) in TRACEPOINTS {
        let program: &mut TracePoint = program(&mut ebpf, name)?.try_into()?;
        program.load().map_err(|err| refused(name, err))?;
        program
            .attach(category, event)
            .with_context(|| format!("attaching {name} to {category}:{event}"))?;
    }
    let mut programs: Vec<&'static str> = TRACEPOINTS.iter().map(|(name, ..)| *name).collect();
    let btf_tracepoints = [
        ("procespy_fork", "sched_process_fork"),
        (layout.exit.program(), "sched_process_exit"),
        (layout.counters.program(), "rss_stat"),
    ];
    for (name, event) in btf_tracepoints {
        let program: &mut BtfTracePoint = program(&mut ebpf, name)?.try_into()?;
        program
            .load(event, &btf)
            .map_err(|err| refused(name, err))?;
        program
            .attach()
            .with_context(|| format!("attaching {name} to tp_btf/{event}"))?;
        programs.push(name);
    }

    let slots_map = take_map(&mut ebpf, "SLOTS")?;
    let slots = match &slots_map {
        aya::maps::Map::Array(data) => slots::SlotTable::map(data.fd().as_fd(), chunks)?,
        _ => return Err(anyhow!("the eBPF object's SLOTS is not an array")),
    };
    let state_map = take_map(&mut ebpf, "STATE")?;
    let state = match &state_map {
        aya::maps::Map::Array(data) => slots::StateTable::map(data.fd().as_fd(), MAX_WATCHED)?,
        _ => return Err(anyhow!("the eBPF object's STATE is not an array")),
    };
    let forked = HashMap::try_from(take_map(&mut ebpf, "FORKED")?)?;
    let lost = PerCpuArray::try_from(take_map(&mut ebpf, "LOST")?)?;
    let events = EventStream::new(
        take_map(&mut ebpf, "BREACHES")?,
        take_map(&mut ebpf, "EVENTS")?,
    )?;
    let info = KernelInfo {
        release: crate::sys::kernel_release(),
        counters: layout.counters,
        batched: layout.batched,
        group_exit: layout.exit,
    };
    tracing::debug!(
        release = %info.release,
        counters = %info.counters,
        group_exit = %info.group_exit,
        "kernel layout: {:?}",
        layout.config
    );
    let kernel = Kernel {
        ebpf,
        slots,
        state,
        forked,
        slot_of: std::collections::HashMap::new(),
        // Slot 0 means "not watched"; the lowest are given out first (and
        // freed ones again before new ones), so the state table's mapping
        // stays as small as the most processes watched at once.
        free: (1..MAX_WATCHED as u16).rev().collect(),
        lost,
        page_size: u64::from(layout.config.page_size),
        info,
        programs,
    };
    drop(btf);
    release_freed_memory();
    Ok((kernel, events))
}

/// The kernel's `pid_max`: every tgid is below it.
fn pid_max() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(procespy_common::MAX_SLOT_CHUNKS * procespy_common::SLOT_CHUNK as u32)
}

/// Gives the heap pages freed after loading back to the kernel. The
/// kernel's BTF and aya's parse of it take tens of MiB that are freed at
/// once but would otherwise stay in the daemon's RSS for its life.
fn release_freed_memory() {
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe { libc::malloc_trim(0) };
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("the eBPF object has no program {name}"))
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name)
        .ok_or_else(|| anyhow!("the eBPF object has no map {name}"))
}

fn refused(name: &str, err: aya::programs::ProgramError) -> anyhow::Error {
    // The verifier log is long; its last lines say why.
    let text = format!("{err:#}");
    anyhow!(
        "the kernel refused program {name}: {text}{}",
        privilege_hint()
    )
}

fn privilege_hint() -> &'static str {
    if nix::unistd::geteuid().is_root() {
        ""
    } else {
        " (procespy is not running as root; loading eBPF needs CAP_BPF and CAP_PERFMON)"
    }
}

/// Mounts tracefs at [`layout::TRACEFS`] unless it is there already.
fn ensure_tracefs() -> Result<()> {
    let events = Path::new(layout::TRACEFS).join("events");
    if events.exists() {
        return Ok(());
    }
    nix::mount::mount(
        Some("tracefs"),
        layout::TRACEFS,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|errno| {
        anyhow!(
            "tracefs is not mounted at {} and mounting it failed: {errno}{}",
            layout::TRACEFS,
            privilege_hint()
        )
    })
}

impl Kernel {
    /// Which kernel the programs run in, and how they read it.
    pub(crate) fn info(&self) -> &KernelInfo {
        &self.info
    }

    /// The kernel's statistics of every program, while they are on; empty
    /// otherwise (they cost a clock read per run, so they are off unless an
    /// operator turns them on).
    pub(crate) fn program_stats(&self) -> Vec<ProgramStats> {
        let on = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
            .is_ok_and(|text| text.trim() == "1");
        if !on {
            return Vec::new();
        }
        self.programs
            .iter()
            .filter_map(|&name| {
                let info = self.ebpf.program(name)?.info().ok()?;
                Some(ProgramStats {
                    name,
                    run_count: info.run_count(),
                    run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                })
            })
            .collect()
    }

    /// Events the kernel could not put into the ring buffer, since load.
    pub(crate) fn lost_events(&self) -> u64 {
        self.lost
            .get(&0, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }
}

impl Kernel {
    /// The state the kernel keeps for `pid`, and where.
    fn state_of(&self, pid: u32) -> Option<Watched> {
        match (self.slot_of.get(&pid), self.slots.get(pid)?) {
            (Some(&slot), _) => self.state.get(slot),
            (None, SLOT_FORKED) => self.forked.get(&pid, 0).ok(),
            (None, _) => None,
        }
    }
}

impl KernelWatch<Pidfd> for Kernel {
    /// Follows `pid` in the kernel as `spec` says.
    ///
    /// The entry is kept only if the process behind `handle` is still alive
    /// after it is made: its exit then clears it in the kernel. The entry
    /// enforces nothing (limit 0) until that check: a newcomer that took a
    /// dead process's PID (its exit not heard of yet, say) and faults in
    /// between meets an entry that neither reports a breach nor kills, and
    /// loses it at the check. A live process's crossing in that instant is
    /// reported at its next RSS change.
    ///
    /// An entry the kernel has already filled (the process was watched, or
    /// inherited its parent's entry at fork) keeps its counters (and so
    /// `status` keeps showing the real RSS after a reload); the crossing is
    /// armed anew, so a process above a new, lower limit is reported at its
    /// next RSS change (and found over by the guard meanwhile).
    fn watch(&mut self, pid: u32, handle: &Pidfd, spec: WatchSpec) -> Result<()> {
        let in_table = self.slots.get(pid).ok_or_else(|| {
            anyhow!("PID {pid} is beyond the kernel's slot table (was pid_max raised since start?)")
        })?;
        let known = self.state_of(pid);
        let slot = match self.slot_of.get(&pid) {
            Some(&slot) => slot,
            None => self.free.pop().ok_or_else(|| {
                anyhow!(
                    "the kernel already follows {} processes, its most",
                    MAX_WATCHED - 1
                )
            })?,
        };
        let (mut state, fresh) = match known {
            // Swap counted from now on: its counter is read afresh too.
            Some(state) => (
                state,
                state.flags & WATCH_NEEDS_FULL_READ != 0
                    || (spec.count_swap && state.flags & WATCH_COUNT_SWAP == 0),
            ),
            None => (Watched::default(), true),
        };
        state.limit_bytes = spec.limit_bytes;
        // No warning: the threshold is the limit, which nothing under it crosses.
        state.warn_bytes = spec
            .warn_bytes
            .filter(|&warn| warn < spec.limit_bytes)
            .unwrap_or(spec.limit_bytes);
        state.reported_mib = 0;
        state.flags = if fresh { WATCH_NEEDS_FULL_READ } else { 0 }
            | if spec.kill_now { WATCH_KILL_NOW } else { 0 }
            | if spec.report_usage {
                WATCH_REPORT_USAGE
            } else {
                0
            }
            | if spec.count_swap { WATCH_COUNT_SWAP } else { 0 };
        let limit_bytes = std::mem::take(&mut state.limit_bytes);
        if !self.state.set(slot, state) {
            self.free.push(slot);
            return Err(anyhow!(
                "watching {pid}: slot {slot} is past the state table"
            ));
        }
        self.slot_of.insert(pid, slot);
        self.slots.set(pid, slot);
        if in_table == SLOT_FORKED {
            let _ = self.forked.remove(&pid);
        }
        if handle.exited() {
            self.unwatch(pid);
        } else {
            self.state.set_limit(slot, limit_bytes);
        }
        Ok(())
    }

    fn unwatch(&mut self, pid: u32) {
        match self.slot_of.remove(&pid) {
            Some(slot) => {
                self.slots.clear(pid, slot);
                self.free.push(slot);
            }
            // A child that inherited its parent's entry but is not covered.
            None if self.slots.get(pid) == Some(SLOT_FORKED) => {
                self.slots.clear(pid, SLOT_FORKED);
                let _ = self.forked.remove(&pid);
            }
            None => {}
        }
    }

    fn exited(&mut self, pid: u32) {
        // The exit program cleared the table's entry already, unless the
        // entry was made after that program ran (in the instant before the
        // pidfd tells of the exit): cleared here then, if still this slot,
        // which nobody else can hold before it is freed.
        if let Some(slot) = self.slot_of.remove(&pid) {
            self.slots.clear(pid, slot);
            self.free.push(slot);
        }
    }

    fn rearm(&mut self, pid: u32, limit_bytes: u64) {
        // A child still waiting for its slot is matched, and given its
        // limit, anew when it gets one.
        if let Some(&slot) = self.slot_of.get(&pid) {
            self.state.set_limit(slot, limit_bytes);
        }
    }

    /// The kernel's figures for `pid`, if it is watched and has faulted since.
    fn rss(&self, pid: u32) -> Option<KernelRss> {
        let state = self.state_of(pid)?;
        if state.flags & WATCH_NEEDS_FULL_READ != 0 {
            return None; // no counter read since the entry was (re)made
        }
        let bytes = |pages: i64| u64::try_from(pages).unwrap_or(0) * self.page_size;
        Some(KernelRss {
            rss: Rss {
                file: bytes(state.pages[procespy_common::MM_FILEPAGES as usize]),
                anon: bytes(state.pages[procespy_common::MM_ANONPAGES as usize]),
                shmem: bytes(state.pages[procespy_common::MM_SHMEMPAGES as usize]),
            },
            swap: if state.flags & WATCH_COUNT_SWAP != 0 {
                bytes(state.pages[procespy_common::MM_SWAPENTS as usize])
            } else {
                0
            },
            breaches: state.breaches,
        })
    }
}
