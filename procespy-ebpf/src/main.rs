//! procespy's eBPF programs.
//!
//! Programs follow every process on the machine:
//! - `procespy_exec`, `procespy_fork`, `procespy_exit` (or, on kernels
//!   before 6.16, `procespy_exit_live`) and `procespy_rename` report
//!   lifecycle events to userspace through the `EVENTS` ring buffer;
//! - `procespy_rss` runs on every RSS counter change. For a process that
//!   userspace watches it keeps the counters current and reports (or, for
//!   kill-now, kills) at the page that crosses the limit, and reports the
//!   page that crosses its warning threshold (`warn_at`); for a limit on
//!   `rss+swap`, the swap counter counts too. For any other
//!   process it costs a few instructions: the slot table (`SLOTS`, indexed
//!   by tgid, whose lookups the verifier inlines) says 0, and the mm filter
//!   says nobody watches the mm.
//!
//! Per-process state lives in `STATE`, indexed by a slot number that
//! userspace gives each watched process and writes into `SLOTS` (mapped
//! into its memory). A new child of a watched process inherits its
//! parent's limit at once: the fork program puts its state in `FORKED` and
//! marks its slot [`SLOT_FORKED`] until userspace gives it a slot.
//!
//! Nothing here may panic: a panicking path leaves a call the verifier refuses.
//! Every function that takes a kernel pointer or the context is inlined,
//! the programs' bodies too (aya's macros wrap each body in a function of
//! its own): kernels before 6.6 refuse such arguments to a BPF-to-BPF call.
//!
//! Kernel structures differ between versions. Userspace finds the running
//! kernel's offsets in its BTF and tracefs and writes them into `CONFIG`,
//! which is frozen before load, so the verifier knows every offset as a
//! constant. The structures the BTF tracepoints hand over (an `mm_struct`,
//! a task) are then read with plain loads, which the verifier checks
//! against the kernel's BTF, instead of one `bpf_probe_read_kernel` call
//! each. Rare paths log through aya-log (shown with `procespy -v`); the
//! per-fault path never does.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        generated::{bpf_get_current_task, bpf_ktime_get_ns, bpf_send_signal},
    },
    macros::{btf_tracepoint, map, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, TracePointContext},
};
use aya_log_ebpf::debug;
use procespy_common::{
    BPF_F_MMAPABLE, BREACH_RING_BYTES, COMM_LEN, EVENT_FLAG_FOREIGN, EVENT_FLAG_KILLED, Event,
    EventKind, KernelConfig, LIFECYCLE_WAKE_NS, MAX_FORKED, MAX_SLOT_CHUNKS, MAX_WATCHED,
    MM_ANONPAGES, MM_FILEPAGES, MM_FILTER_BYTES, MM_SHMEMPAGES, MM_SWAPENTS, NR_MM_COUNTERS,
    RING_BYTES, SLOT_CHUNK, SLOT_FORKED, WATCH_COUNT_SWAP, WATCH_KILL_NOW, WATCH_NEEDS_FULL_READ,
    WATCH_OVER, WATCH_REPORT_USAGE, WATCH_WARNED, Watched, mm_filter_slot,
};

/// Offsets and settings, written by userspace before load.
#[unsafe(no_mangle)]
static CONFIG: KernelConfig = KernelConfig::ZERO;

/// Lifecycle events (exec, fork, exit, rename) for userspace, which the
/// programs wake at most once per [`LIFECYCLE_WAKE_NS`]: during a storm,
/// the reader polls them in batches instead (see [`lifecycle_wake`]).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// When a lifecycle event last woke the reader (`bpf_ktime_get_ns`),
/// index 0. Shared by all CPUs: a lost race only costs one more wake-up.
#[map]
static LAST_WAKE: Array<u64> = Array::with_max_entries(1, 0);

/// Breach and usage events for userspace, apart from the lifecycle ones:
/// a breach always wakes the reader at once.
#[map]
static BREACHES: RingBuf = RingBuf::with_byte_size(BREACH_RING_BYTES, 0);

/// `BPF_RB_NO_WAKEUP`.
const NO_WAKEUP: u64 = 1;
/// `BPF_RB_FORCE_WAKEUP`.
const FORCE_WAKEUP: u64 = 2;

/// The slot of every tgid: element `tgid / SLOT_CHUNK`, entry `tgid %
/// SLOT_CHUNK`; 0 when not watched. Userspace sizes it to `pid_max` at load.
#[map]
static SLOTS: Array<[u16; SLOT_CHUNK]> = Array::with_max_entries(MAX_SLOT_CHUNKS, BPF_F_MMAPABLE);

/// The state of every watched process, by slot; mapped into the daemon,
/// which reads the counters there without a syscall.
#[map]
static STATE: Array<Watched> = Array::with_max_entries(MAX_WATCHED, BPF_F_MMAPABLE);

/// The state of new children of watched processes, by tgid, until
/// userspace gives them a slot.
#[map]
static FORKED: HashMap<u32, Watched> = HashMap::with_max_entries(MAX_FORKED, 0);

/// The owner (tgid) of every watched process's `mm_struct` whose own event
/// showed it, by mm pointer: RSS changes made in another context (a writer
/// through `/proc/PID/mem`, reclaim) are counted for the owner.
#[map]
static MM_OWNER: LruHashMap<u64, u32> = LruHashMap::with_max_entries(MAX_WATCHED, 0);

/// One byte per [`mm_filter_slot`], set beside each `MM_OWNER` entry: an
/// event of an unwatched process whose mm has no byte set costs no lookup.
/// Bytes are never cleared; a stale one costs one lookup that misses.
#[map]
static MM_FILTER: Array<[u8; MM_FILTER_BYTES]> = Array::with_max_entries(1, 0);

/// Events that did not fit into `EVENTS` (index 0), per CPU.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

const SIGKILL: u32 = 9;

/// Reads one `u32` field of `CONFIG` without letting the compiler fold the
/// zero it was compiled with.
macro_rules! config {
    ($($field:tt)+) => {{
        // SAFETY: `CONFIG` is a valid static; the volatile read keeps the
        // value userspace wrote into .rodata at load time.
        #[allow(unused_unsafe)]
        let value = unsafe { core::ptr::read_volatile(&raw const CONFIG.$($field)+) };
        value
    }};
}

/// Reads the `T` at `offset` bytes into the kernel object at `base`.
///
/// # Safety
/// `base` must be a pointer the verifier knows as a BTF object (a BTF
/// tracepoint's argument, or a pointer member loaded from one), and
/// `offset` a constant from `CONFIG` that lands on a `T` member of it.
#[inline(always)]
unsafe fn field<T: Copy>(base: *const u8, offset: u32) -> T {
    // SAFETY: as the caller promises; the verifier checks the load against BTF.
    unsafe { core::ptr::read_volatile(base.wrapping_add(offset as usize).cast::<T>()) }
}

/// Where the slot of `tgid` is kept; `None` past the table (a `pid_max`
/// raised after load).
#[inline(always)]
fn slot_ptr(tgid: u32) -> Option<*mut u16> {
    let chunk = SLOTS.get_ptr_mut(tgid / SLOT_CHUNK as u32)?;
    // SAFETY: the pointer comes from a successful lookup; the index is
    // masked into the element.
    Some(unsafe { (*chunk).as_mut_ptr().add(tgid as usize & (SLOT_CHUNK - 1)) })
}

/// The state of the watched process `tgid`, if it is watched.
#[inline(always)]
fn state_of(tgid: u32) -> Option<*mut Watched> {
    // SAFETY: `slot_ptr` points into the slot table.
    match unsafe { *slot_ptr(tgid)? } {
        0 => None,
        SLOT_FORKED => FORKED.get_ptr_mut(tgid),
        slot => STATE.get_ptr_mut(u32::from(slot)),
    }
}

#[inline(always)]
fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// What an event's name field holds.
#[derive(Clone, Copy)]
enum Name {
    /// Userspace knows the name: none is read.
    None,
    /// The current task's name.
    Current,
    /// This one (a rename's new name).
    Given([u8; COMM_LEN]),
}

/// What an event says, but for its time and name.
struct Record {
    kind: EventKind,
    pid: u32,
    ppid: u32,
    flags: u32,
    rss_bytes: u64,
}

impl Record {
    fn of(kind: EventKind, pid: u32) -> Record {
        Record {
            kind,
            pid,
            ppid: 0,
            flags: 0,
            rss_bytes: 0,
        }
    }
}

/// How a submitted event wakes the reader.
#[derive(Clone, Copy)]
enum Wake {
    /// At once (breaches).
    Now,
    /// Lifecycle events: see [`lifecycle_wake`].
    Batched,
    /// As the kernel decides: when the reader had caught up (usage reports).
    Adaptive,
}

/// The submit flags of a lifecycle event made at `now`: a wake-up when the
/// last one was [`LIFECYCLE_WAKE_NS`] ago or more, none otherwise. Waking
/// takes an irq_work (an interrupt, dear under virtualisation) for each
/// event of a storm; the reader, once woken, polls the ring every
/// `LIFECYCLE_POLL_NS` (longer than this) until two polls in a row
/// find nothing, so an event that did not wake it waits at most a poll.
#[inline(always)]
fn lifecycle_wake(now: u64) -> u64 {
    let Some(last) = LAST_WAKE.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: the pointer comes from a successful lookup; a racing store
    // from another CPU only costs a wake-up more.
    unsafe {
        if now.wrapping_sub(*last) < LIFECYCLE_WAKE_NS {
            return NO_WAKEUP;
        }
        *last = now;
    }
    FORCE_WAKEUP
}

/// Writes an event into `ring`, reserved in place, waking the reader as
/// `wake` says. An event that does not fit is counted in `LOST`.
#[inline(always)]
fn send(ring: &RingBuf, wake: Wake, record: Record, name: Name) {
    let Some(mut entry) = ring.reserve::<Event>(0) else {
        if let Some(lost) = LOST.get_ptr_mut(0) {
            // SAFETY: the pointer comes from a successful lookup; per-CPU, so no race.
            unsafe { *lost += 1 };
        }
        return;
    };
    let comm = match name {
        Name::None => [0; COMM_LEN],
        Name::Current => bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
        Name::Given(comm) => comm,
    };
    // SAFETY: a helper without arguments.
    let ktime_ns = unsafe { bpf_ktime_get_ns() };
    entry.write(Event {
        kind: record.kind as u32,
        pid: record.pid,
        ppid: record.ppid,
        flags: record.flags,
        ktime_ns,
        rss_bytes: record.rss_bytes,
        comm,
    });
    entry.submit(match wake {
        Wake::Now => FORCE_WAKEUP,
        Wake::Batched => lifecycle_wake(ktime_ns),
        Wake::Adaptive => 0,
    });
}

/// `sched:sched_process_exec`: the current task (now the group leader) has a new image.
#[tracepoint(category = "sched", name = "sched_process_exec")]
#[inline(always)]
pub fn procespy_exec(_ctx: TracePointContext) -> u32 {
    let tgid = current_tgid();
    if let Some(watched) = state_of(tgid) {
        // A new image may not match the old limit: follow it, but enforce
        // nothing until userspace has matched it again. The old mm's counters
        // are gone, so read all of the new one's at the next change.
        // SAFETY: the pointer comes from a successful lookup.
        unsafe {
            forget_mm((*watched).mm);
            (*watched).limit_bytes = 0;
            (*watched).flags = WATCH_NEEDS_FULL_READ;
            (*watched).mm = 0;
        }
    }
    send(
        &EVENTS,
        Wake::Batched,
        Record::of(EventKind::Exec, tgid),
        Name::Current,
    );
    0
}

/// `sched:sched_process_fork` (BTF): a new task; reported when it is a new process.
#[btf_tracepoint(function = "sched_process_fork")]
#[inline(always)]
pub fn procespy_fork(ctx: BtfTracePointContext) -> i32 {
    let child: *const u8 = ctx.arg(1);
    // SAFETY: `child` is the tracepoint's task argument; the offsets come from BTF.
    let (pid, tgid) = unsafe {
        (
            field::<i32>(child, config!(task_pid)),
            field::<i32>(child, config!(task_tgid)),
        )
    };
    if pid != tgid || pid <= 0 {
        return 0; // a new thread of an existing process
    }
    let child_tgid = pid as u32;
    let parent_tgid = current_tgid();
    // SAFETY: the value is copied out at once, before any other map operation.
    if let Some(parent) = state_of(parent_tgid).map(|parent| unsafe { *parent }) {
        // The child runs the same image under the same name: it inherits the
        // parent's limit from its first page on.
        let inherited = Watched {
            pages: [0; NR_MM_COUNTERS],
            limit_bytes: parent.limit_bytes,
            flags: WATCH_NEEDS_FULL_READ
                | (parent.flags & (WATCH_KILL_NOW | WATCH_REPORT_USAGE | WATCH_COUNT_SWAP)),
            breaches: 0,
            reported_mib: 0,
            mm: 0,
            warn_bytes: parent.warn_bytes,
        };
        if FORKED.insert(child_tgid, inherited, 0).is_ok()
            && let Some(slot) = slot_ptr(child_tgid)
        {
            // SAFETY: `slot_ptr` points into the slot table.
            unsafe { *slot = SLOT_FORKED };
        }
    }
    // The child's name is its parent's, which userspace knows.
    send(
        &EVENTS,
        Wake::Batched,
        Record {
            ppid: parent_tgid,
            ..Record::of(EventKind::Fork, child_tgid)
        },
        Name::None,
    );
    0
}

/// `sched:sched_process_exit` (BTF, Linux 6.16 and later): the tracepoint
/// says whether the task was the last of its group (`group_dead`).
#[btf_tracepoint(function = "sched_process_exit")]
#[inline(always)]
pub fn procespy_exit(ctx: BtfTracePointContext) -> i32 {
    let group_dead: u64 = ctx.arg(1);
    if group_dead & 0xff == 0 {
        return 0;
    }
    group_exited(ctx.arg(0))
}

/// `sched:sched_process_exit` (BTF, kernels whose tracepoint has no
/// `group_dead`): the task was the last of its group when its
/// `signal->live` is 0, since `do_exit` decrements it before the tracepoint.
#[btf_tracepoint(function = "sched_process_exit")]
#[inline(always)]
pub fn procespy_exit_live(ctx: BtfTracePointContext) -> i32 {
    let task: *const u8 = ctx.arg(0);
    // SAFETY: `task` is the tracepoint's task argument and `signal` a
    // pointer member of it; the offsets come from BTF.
    let live = unsafe {
        let signal: *const u8 = field(task, config!(task_signal));
        field::<i32>(signal, config!(signal_live))
    };
    if live != 0 {
        return 0;
    }
    group_exited(task)
}

/// The last thread of `task`'s group is exiting: forget it and report.
#[inline(always)]
fn group_exited(task: *const u8) -> i32 {
    // SAFETY: `task` is the tracepoint's task argument; the offset comes from BTF.
    let tgid = unsafe { field::<i32>(task, config!(task_tgid)) } as u32;
    if let Some(watched) = state_of(tgid) {
        // SAFETY: the pointer comes from a successful lookup.
        forget_mm(unsafe { (*watched).mm });
    }
    if let Some(slot) = slot_ptr(tgid) {
        // SAFETY: `slot_ptr` points into the slot table. Userspace frees
        // the slot itself when it hears of the exit.
        unsafe {
            if *slot == SLOT_FORKED {
                let _ = FORKED.remove(tgid);
            }
            *slot = 0;
        }
    }
    send(
        &EVENTS,
        Wake::Batched,
        Record::of(EventKind::Exit, tgid),
        Name::None,
    );
    0
}

/// `task:task_rename`: a task set its name (prctl PR_SET_NAME or /proc/PID/comm).
#[tracepoint(category = "task", name = "task_rename")]
#[inline(always)]
pub fn procespy_rename(ctx: TracePointContext) -> u32 {
    // SAFETY: the offsets come from the tracepoint's format file.
    let (pid, comm) = unsafe {
        (
            ctx.read_at::<i32>(config!(rename_pid) as usize)
                .unwrap_or(0),
            ctx.read_at::<[u8; COMM_LEN]>(config!(rename_newcomm) as usize)
                .unwrap_or([0; COMM_LEN]),
        )
    };
    if pid > 0 {
        send(
            &EVENTS,
            Wake::Batched,
            Record::of(EventKind::Rename, pid as u32),
            Name::Given(comm),
        );
    }
    0
}

/// How a program reads the RSS counters of an mm.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reader {
    /// `percpu_counter`s (Linux 6.2 and later): plain loads, checked
    /// against BTF.
    Direct,
    /// `atomic_long_t`s (before 6.2): those verifiers do not follow a load
    /// into an array of typedef'd structs, so it goes through
    /// `bpf_probe_read_kernel`; the changed counter's new value is the
    /// tracepoint's third argument, and needs no read at all.
    Probed,
}

/// Reads the RSS counter `member` of `mm`, or `None` for a member this
/// program does not know (a layout surprise).
///
/// Each arm reads its own constant offset, so that the verifier sees a
/// constant offset into `mm` on every path.
///
/// # Safety
/// `mm` must be the `rss_stat` tracepoint's `mm_struct` argument.
#[inline(always)]
unsafe fn read_counter(mm: *const u8, member: u32, reader: Reader) -> Option<i64> {
    let offset = match member {
        MM_FILEPAGES => config!(mm_counter[0]),
        MM_ANONPAGES => config!(mm_counter[1]),
        MM_SWAPENTS => config!(mm_counter[2]),
        MM_SHMEMPAGES => config!(mm_counter[3]),
        _ => return None,
    };
    // SAFETY: as the caller promises; the offsets come from BTF.
    Some(unsafe {
        match reader {
            Reader::Direct => field::<i64>(mm, offset),
            Reader::Probed => {
                bpf_probe_read_kernel(mm.wrapping_add(offset as usize).cast::<i64>()).unwrap_or(0)
            }
        }
    })
}

/// Reads the file, anon and shmem counters of `mm` into `state`, and the
/// swap counter when the limit counts it.
///
/// # Safety
/// As for [`read_counter`].
#[inline(always)]
unsafe fn read_all_counters(state: &mut Watched, mm: *const u8, reader: Reader) {
    // SAFETY: as the caller promises.
    unsafe {
        for member in [MM_FILEPAGES, MM_ANONPAGES, MM_SHMEMPAGES] {
            if let (Some(value), Some(slot)) = (
                read_counter(mm, member, reader),
                state.pages.get_mut(member as usize),
            ) {
                *slot = value;
            }
        }
        if state.flags & WATCH_COUNT_SWAP != 0
            && let (Some(value), Some(slot)) = (
                read_counter(mm, MM_SWAPENTS, reader),
                state.pages.get_mut(MM_SWAPENTS as usize),
            )
        {
            *slot = value;
        }
    }
}

/// Whether `mm` is the current task's own (not fork's copy, reclaim of
/// another mm, or exit teardown).
#[inline(always)]
fn is_current_mm(mm: *const u8) -> bool {
    // SAFETY: `bpf_get_current_task` returns the current task_struct as a
    // plain number, so its `mm` member is read through the checking helper.
    let current_mm = unsafe {
        let task = bpf_get_current_task() as *const u8;
        bpf_probe_read_kernel(task.wrapping_add(config!(task_mm) as usize) as *const *const u8)
            .unwrap_or(core::ptr::null())
    };
    !current_mm.is_null() && current_mm == mm
}

/// The filter slot of `mm`, from its address alone: no read of the
/// `mm_struct`, whose lines an uncovered event never needs otherwise.
///
/// A pointer cannot be shifted or multiplied in a BPF program, but the
/// difference of two is a plain number (for a privileged loader): the
/// filter's own address is the fixed point it is taken from.
#[inline(always)]
fn filter_slot(mm: *const u8, filter: *const [u8; MM_FILTER_BYTES]) -> usize {
    mm_filter_slot((mm as u64).wrapping_sub(filter as u64))
}

/// Remembers that `mm` belongs to the watched process `tgid`.
#[inline(always)]
fn own_mm(mm: *const u8, tgid: u32) {
    let _ = MM_OWNER.insert(mm as u64, tgid, 0);
    if let Some(filter) = MM_FILTER.get_ptr_mut(0) {
        // SAFETY: the pointer comes from a successful lookup; the slot is
        // masked into the array.
        unsafe { (*filter)[filter_slot(mm, filter)] = 1 };
    }
}

/// Forgets the owner of `mm` (0: none known).
#[inline(always)]
fn forget_mm(mm: u64) {
    if mm != 0 {
        let _ = MM_OWNER.remove(mm);
    }
}

/// The watched process that owns `mm`, for an event in another context.
#[inline(always)]
fn owner_of(mm: *const u8) -> Option<(u32, *mut Watched)> {
    let filter = MM_FILTER.get_ptr(0)?;
    // SAFETY: the pointer comes from a successful lookup; the slot is
    // masked.
    if unsafe { (*filter)[filter_slot(mm, filter)] } == 0 {
        return None;
    }
    // SAFETY: the value is copied out at once.
    let owner = unsafe { MM_OWNER.get(mm as u64) }.copied()?;
    let watched = state_of(owner)?;
    // SAFETY: the pointer comes from a successful lookup.
    (unsafe { (*watched).mm } == mm as u64).then_some((owner, watched))
}

/// `kmem:rss_stat` (BTF, `percpu_counter` layout): an RSS counter of some
/// mm changed.
#[btf_tracepoint(function = "rss_stat")]
#[inline(always)]
pub fn procespy_rss(ctx: BtfTracePointContext) -> i32 {
    on_rss(&ctx, Reader::Direct)
}

/// `kmem:rss_stat` (BTF, `atomic_long_t` layout, before 6.2).
#[btf_tracepoint(function = "rss_stat")]
#[inline(always)]
pub fn procespy_rss_atomic(ctx: BtfTracePointContext) -> i32 {
    on_rss(&ctx, Reader::Probed)
}

/// An RSS counter of some mm changed.
///
/// Usually in the context of the mm's own process; otherwise (fork's copy,
/// exit teardown, reclaim, a write through `/proc/PID/mem`) the change is
/// counted for the watched process that owns the mm, if one does.
#[inline(always)]
fn on_rss(ctx: &BtfTracePointContext, reader: Reader) -> i32 {
    let mm: *const u8 = ctx.arg(0);
    let tgid = current_tgid();
    let own = match state_of(tgid) {
        // SAFETY: the pointer comes from a successful lookup.
        Some(watched) if unsafe { (*watched).mm } == mm as u64 => Some(watched),
        Some(watched) if is_current_mm(mm) => {
            // The process's own mm, seen for the first time.
            // SAFETY: as above.
            unsafe {
                forget_mm((*watched).mm);
                (*watched).mm = mm as u64;
                (*watched).flags |= WATCH_NEEDS_FULL_READ;
            }
            own_mm(mm, tgid);
            Some(watched)
        }
        _ => None,
    };
    let (owner, watched, foreign) = match own {
        Some(watched) => (tgid, watched, false),
        None => match owner_of(mm) {
            Some((owner, watched)) => (owner, watched, true),
            None => return 0, // the common case: nobody watches this mm
        },
    };
    let member: i32 = ctx.arg(1);
    // SAFETY: `watched` points into the map value; `mm` is the tracepoint's
    // argument. Concurrent updates only ever store the kernel's own figures.
    let state = unsafe { &mut *watched };
    if state.flags & WATCH_NEEDS_FULL_READ != 0 {
        // SAFETY: `mm` is the tracepoint's argument.
        unsafe { read_all_counters(state, mm, reader) };
        state.flags &= !WATCH_NEEDS_FULL_READ;
    } else {
        let member = member as u32;
        let value = match reader {
            // SAFETY: `mm` is the tracepoint's argument.
            Reader::Direct => unsafe { read_counter(mm, member, reader) },
            Reader::Probed => (member < NR_MM_COUNTERS as u32).then(|| ctx.arg::<i64>(2)),
        };
        match (value, state.pages.get_mut(member as usize)) {
            (Some(value), Some(slot)) => *slot = value,
            _ => {
                debug!(
                    ctx,
                    "rss_stat: counter {} of process {} is unknown to procespy", member, owner
                );
                return 0;
            }
        }
    }
    let page_size = config!(page_size) as u64;
    // The swap counter is kept by every event that changes it; it counts
    // only where the limit says so.
    let rss = state.counted_bytes(page_size);
    if state.flags & WATCH_REPORT_USAGE != 0 && rss >> 20 != state.reported_mib {
        state.reported_mib = rss >> 20;
        send(
            &BREACHES,
            Wake::Adaptive,
            Record {
                rss_bytes: rss,
                ..Record::of(EventKind::Usage, owner)
            },
            Name::None,
        );
    }
    if state.limit_bytes == 0 {
        return 0;
    }
    if rss <= state.limit_bytes {
        if rss <= state.warn_bytes {
            state.flags &= !(WATCH_OVER | WATCH_WARNED);
        } else {
            warn(state, owner, rss);
        }
        return 0;
    }
    if state.flags & WATCH_OVER != 0 {
        return 0; // reported at the crossing already
    }
    // Other counters may have fallen meanwhile without an event of this
    // process (reclaim by kswapd): confirm with all of them.
    // SAFETY: `mm` is the tracepoint's argument.
    unsafe { read_all_counters(state, mm, reader) };
    let confirmed = state.counted_bytes(page_size);
    if confirmed <= state.limit_bytes {
        debug!(
            ctx,
            "process {}: {} bytes crossed the limit, {} on confirmation: no breach",
            owner,
            rss,
            confirmed
        );
        return 0;
    }
    state.flags |= WATCH_OVER | WATCH_WARNED;
    state.breaches = state.breaches.wrapping_add(1);
    let mut flags = if foreign { EVENT_FLAG_FOREIGN } else { 0 };
    // bpf_send_signal signals the current task: only the owner's own
    // context can be killed from here.
    if state.flags & WATCH_KILL_NOW != 0 && !foreign {
        // SAFETY: a helper taking a signal number.
        let refused = unsafe { bpf_send_signal(SIGKILL) };
        if refused == 0 {
            flags |= EVENT_FLAG_KILLED;
        } else {
            debug!(
                ctx,
                "process {}: the kernel refused bpf_send_signal(SIGKILL) with {}", owner, refused
            );
        }
    }
    // In another's context, the name says who wrote into the owner.
    let name = if foreign { Name::Current } else { Name::None };
    let record = Record {
        flags,
        rss_bytes: confirmed,
        ..Record::of(EventKind::Breach, owner)
    };
    send(&BREACHES, Wake::Now, record, name);
    0
}

/// `owner` is above its warning threshold, under its limit, with `rss`:
/// reported once, until it falls back under the threshold.
#[inline(always)]
fn warn(state: &mut Watched, owner: u32, rss: u64) {
    state.flags &= !WATCH_OVER;
    if state.flags & WATCH_WARNED != 0 {
        return;
    }
    state.flags |= WATCH_WARNED;
    let record = Record {
        rss_bytes: rss,
        ..Record::of(EventKind::Warning, owner)
    };
    send(&BREACHES, Wake::Adaptive, record, Name::None);
}

/// The floor of `cargo xtask bench overhead`: an empty program on the same
/// BTF tracepoint as `procespy_rss`, what any program there costs (entry,
/// and the statistics' own clock reads). The daemon never loads it.
#[btf_tracepoint(function = "rss_stat")]
#[inline(always)]
pub fn procespy_floor(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
