//! What the running kernel offers the eBPF programs, found in its BTF and
//! tracefs at load time, never guessed from its version number (distributions
//! backport).
//!
//! Two things changed under procespy's programs between the kernels people
//! run:
//! - the RSS counters of an `mm_struct`: an array of `percpu_counter`s since
//!   Linux 6.2, before that `struct mm_rss_stat { atomic_long_t count[]; }`
//!   and, where `task_struct` has an `rss_stat` of its own, per-thread
//!   batches (a thread keeps up to 64 faults' worth of pages there before it
//!   adds them to the mm, and only then does the tracepoint fire);
//! - `sched_process_exit`: it says whether the task was its group's last
//!   (`group_dead`) since 6.16; before, `signal->live` tells.

use std::{fmt, fs, path::Path};

use anyhow::{Context, Result, anyhow, bail};
use procespy_common::{KernelConfig, NR_MM_COUNTERS};
use serde::{Deserialize, Serialize};

use super::btf::{Btf, Kind, TypeId};

/// Where tracefs is mounted (or will be).
pub(crate) const TRACEFS: &str = "/sys/kernel/tracing";
/// The kernel's own BTF.
pub(crate) const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// What eBPF mode needs at the least, in a user's words.
const FLOOR: &str = "eBPF mode needs Linux 5.8 or newer, built with BTF";

/// How the kernel keeps a process's RSS counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Counters {
    /// `struct percpu_counter rss_stat[]` (Linux 6.2 and later).
    #[serde(rename = "percpu_counter")]
    PerCpu,
    /// `struct mm_rss_stat { atomic_long_t count[]; }` (before 6.2).
    #[serde(rename = "atomic_long_t")]
    Atomic,
}

impl Counters {
    /// The `rss_stat` program that reads them.
    pub(crate) fn program(self) -> &'static str {
        match self {
            Counters::PerCpu => "procespy_rss",
            Counters::Atomic => "procespy_rss_atomic",
        }
    }
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Counters::PerCpu => "percpu_counter",
            Counters::Atomic => "atomic_long_t",
        })
    }
}

/// How the exit program tells a thread group's end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupExit {
    /// The tracepoint's `group_dead` argument (Linux 6.16 and later).
    GroupDead,
    /// `signal->live` is 0 at the last thread's exit.
    SignalLive,
}

impl GroupExit {
    /// The program that implements it.
    pub(crate) fn program(self) -> &'static str {
        match self {
            GroupExit::GroupDead => "procespy_exit",
            GroupExit::SignalLive => "procespy_exit_live",
        }
    }
}

impl fmt::Display for GroupExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GroupExit::GroupDead => "sched_process_exit's group_dead",
            GroupExit::SignalLive => "signal->live at sched_process_exit",
        })
    }
}

/// The running kernel, as the programs will see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// The offsets and settings the programs get.
    pub(crate) config: KernelConfig,
    /// The RSS counters' layout.
    pub(crate) counters: Counters,
    /// Threads batch up to 64 faults before the mm, and the tracepoint, see
    /// them (`SPLIT_RSS_COUNTING`, before 6.2).
    pub(crate) batched: bool,
    /// How a group's exit is told.
    pub(crate) exit: GroupExit,
}

/// Finds the layout of the running kernel from the BTF in `btf` (the bytes
/// of `/sys/kernel/btf/vmlinux`) and the tracepoint formats under `tracefs`.
pub(crate) fn find(btf: &[u8], tracefs: &Path) -> Result<Layout> {
    let btf = Btf::parse(btf).context(VMLINUX_BTF)?;
    let types = Types(&btf);
    for event in ["sched_process_fork", "sched_process_exit"] {
        if btf.tracepoint_args(event).is_none() {
            bail!("this kernel's BTF has no {event} tracepoint; {FLOOR}");
        }
    }
    let exit = match btf.tracepoint_args("sched_process_exit") {
        Some(2..) => GroupExit::GroupDead,
        _ => GroupExit::SignalLive,
    };
    let (mm_counter, counters) = counters(&types)?;
    let batched = btf
        .find(Kind::Struct, "task_struct")
        .and_then(|task| btf.member(task, "rss_stat"))
        .is_some();
    let page_size = u32::try_from(crate::sys::page_size()).unwrap_or(4096);
    let config = KernelConfig {
        mm_counter,
        task_mm: types.offset("task_struct", "mm")?,
        task_pid: types.offset("task_struct", "pid")?,
        task_tgid: types.offset("task_struct", "tgid")?,
        task_signal: types.offset("task_struct", "signal")?,
        signal_live: types.offset("signal_struct", "live")?,
        rename_pid: tracepoint_field(tracefs, "task/task_rename", "pid")?,
        rename_newcomm: tracepoint_field(tracefs, "task/task_rename", "newcomm")?,
        page_size,
    };
    Ok(Layout {
        config,
        counters,
        batched,
        exit,
    })
}

/// Struct lookups with errors in a user's words.
struct Types<'b, 'a>(&'b Btf<'a>);

impl Types<'_, '_> {
    fn struct_id(&self, name: &str) -> Result<TypeId> {
        self.0
            .find(Kind::Struct, name)
            .ok_or_else(|| anyhow!("this kernel's BTF has no struct {name}; {FLOOR}"))
    }

    fn member(&self, ty: &str, member: &str) -> Result<super::btf::Member> {
        self.0
            .member(self.struct_id(ty)?, member)
            .ok_or_else(|| anyhow!("this kernel's BTF has no {ty}.{member}; {FLOOR}"))
    }

    fn offset(&self, ty: &str, member: &str) -> Result<u32> {
        Ok(self.member(ty, member)?.offset)
    }
}

/// The offsets of the four counters' values in `mm_struct`, and their layout.
fn counters(types: &Types<'_, '_>) -> Result<([u32; NR_MM_COUNTERS], Counters)> {
    let btf = types.0;
    let rss_stat = types.member("mm_struct", "rss_stat")?;
    let surprise = |what: &str| {
        anyhow!(
            "this kernel keeps its RSS counters in a layout procespy does not know \
             (mm_struct.rss_stat {what}); eBPF mode cannot follow memory here"
        )
    };
    let (base, stride, value, counters) = match btf.array(rss_stat.ty) {
        // struct percpu_counter rss_stat[NR_MM_COUNTERS]
        Some((element, count)) => {
            if count as usize != NR_MM_COUNTERS {
                return Err(surprise(&format!(
                    "has {count} counters, not {NR_MM_COUNTERS}"
                )));
            }
            let stride = btf
                .size(element)
                .ok_or_else(|| surprise("has elements without a size"))?;
            let value = btf
                .member(element, "count")
                .ok_or_else(|| surprise("has elements without a count"))?;
            (rss_stat.offset, stride, value, Counters::PerCpu)
        }
        // struct mm_rss_stat { atomic_long_t count[NR_MM_COUNTERS]; }
        None => {
            let count = btf
                .member(rss_stat.ty, "count")
                .ok_or_else(|| surprise("is neither an array nor has a count array"))?;
            let (element, length) = btf
                .array(count.ty)
                .ok_or_else(|| surprise("has a count that is not an array"))?;
            if length as usize != NR_MM_COUNTERS {
                return Err(surprise(&format!(
                    "has {length} counters, not {NR_MM_COUNTERS}"
                )));
            }
            let stride = btf
                .size(element)
                .ok_or_else(|| surprise("has counters without a size"))?;
            // atomic_long_t is a struct { s64 counter; }
            let value = btf
                .member(element, "counter")
                .ok_or_else(|| surprise("has counters without a counter"))?;
            (
                rss_stat.offset + count.offset,
                stride,
                value,
                Counters::Atomic,
            )
        }
    };
    if btf.size(value.ty) != Some(8) {
        return Err(surprise("has counters that are not 64-bit"));
    }
    let mut offsets = [0; NR_MM_COUNTERS];
    for (index, offset) in (0u32..).zip(offsets.iter_mut()) {
        *offset = stride
            .checked_mul(index)
            .and_then(|at| at.checked_add(base))
            .and_then(|at| at.checked_add(value.offset))
            .ok_or_else(|| surprise("is out of range"))?;
    }
    Ok((offsets, counters))
}

/// Finds the offset of `field` in a tracepoint's format description.
///
/// Lines look like `\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;`.
pub(crate) fn field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';');
        let decl = parts.next()?.strip_prefix("field:")?;
        let name = decl.rsplit(' ').next()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        parts.find_map(|part| part.trim().strip_prefix("offset:")?.parse().ok())
    })
}

fn tracepoint_field(tracefs: &Path, event: &str, field: &str) -> Result<u32> {
    let path = tracefs.join("events").join(event).join("format");
    let format = fs::read_to_string(&path)
        .with_context(|| format!("reading {} (is tracefs mounted? {FLOOR})", path.display()))?;
    field_offset(&format, field).ok_or_else(|| {
        anyhow!(
            "the {event} tracepoint of this kernel has no field {field} ({}); \
             procespy cannot follow renames here",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::btf::build::Builder;
    use super::*;

    const RENAME_FORMAT: &str = "name: task_rename\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:pid_t pid;\toffset:8;\tsize:4;\tsigned:1;\n\
        \tfield:char oldcomm[16];\toffset:12;\tsize:16;\tsigned:0;\n\
        \tfield:char newcomm[16];\toffset:28;\tsize:16;\tsigned:0;\n";

    fn tracefs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let event = dir.path().join("events/task/task_rename");
        fs::create_dir_all(&event).unwrap();
        fs::write(event.join("format"), RENAME_FORMAT).unwrap();
        dir
    }

    /// The kernel pieces every layout shares: task_struct, signal_struct and
    /// the fork and exit tracepoints (`exit_args` after the task).
    fn common(b: &mut Builder, task_rss_stat: bool, group_dead: bool) {
        let int = b.int("int", 4);
        let atomic = b.structure("", 4, &[("counter", int, 0)]);
        let signal = b.structure("signal_struct", 1024, &[("live", atomic, 4)]);
        let signal_ptr = b.ptr(signal);
        let mm = b.structure("mm_struct_fwd", 8, &[]);
        let mm_ptr = b.ptr(mm);
        let mut members = vec![
            ("mm", mm_ptr, 1136),
            ("pid", int, 1264),
            ("tgid", int, 1268),
            ("signal", signal_ptr, 1848),
        ];
        if task_rss_stat {
            let events = b.structure("task_rss_stat", 20, &[("events", int, 0)]);
            members.push(("rss_stat", events, 2000));
        }
        let task = b.structure("task_struct", 4096, &members);
        let task_ptr = b.ptr(task);
        b.tracepoint("sched_process_fork", &[task_ptr, task_ptr]);
        let bool_ty = b.int("_Bool", 1);
        if group_dead {
            b.tracepoint("sched_process_exit", &[task_ptr, bool_ty]);
        } else {
            b.tracepoint("sched_process_exit", &[task_ptr]);
        }
    }

    #[test]
    fn percpu_counters_and_group_dead_as_on_6_18() {
        let mut b = Builder::new();
        common(&mut b, false, true);
        let s64 = b.int("s64", 8);
        let int = b.int("int", 4);
        let counter = b.structure("percpu_counter", 40, &[("lock", int, 0), ("count", s64, 8)]);
        let counters = b.array(counter, int, 4);
        let long = b.int("long unsigned int", 8);
        let fields = b.structure(
            "",
            1100,
            &[("mmap_base", long, 80), ("rss_stat", counters, 960)],
        );
        b.structure("mm_struct", 1200, &[("", fields, 0)]);
        let dir = tracefs();
        let layout = find(&b.finish(), dir.path()).unwrap();
        assert_eq!(layout.config.mm_counter, [968, 1008, 1048, 1088]);
        assert_eq!(layout.counters, Counters::PerCpu);
        assert!(!layout.batched);
        assert_eq!(layout.exit, GroupExit::GroupDead);
        assert_eq!(
            (layout.config.task_signal, layout.config.signal_live),
            (1848, 4)
        );
        assert_eq!(
            (layout.config.rename_pid, layout.config.rename_newcomm),
            (8, 28)
        );
    }

    #[test]
    fn atomic_counters_with_thread_batches_and_signal_live_as_on_6_1() {
        let mut b = Builder::new();
        common(&mut b, true, false);
        let s64 = b.int("s64", 8);
        let int = b.int("int", 4);
        let atomic64 = b.structure("", 8, &[("counter", s64, 0)]);
        let atomic_long = b.typedef("atomic_long_t", atomic64);
        let count = b.array(atomic_long, int, 4);
        let rss = b.structure("mm_rss_stat", 32, &[("count", count, 0)]);
        let long = b.int("long unsigned int", 8);
        b.structure(
            "mm_struct",
            1200,
            &[("mmap_base", long, 80), ("rss_stat", rss, 728)],
        );
        let dir = tracefs();
        let layout = find(&b.finish(), dir.path()).unwrap();
        assert_eq!(layout.config.mm_counter, [728, 736, 744, 752]);
        assert_eq!(layout.counters, Counters::Atomic);
        assert!(layout.batched);
        assert_eq!(layout.exit, GroupExit::SignalLive);
        assert_eq!(layout.exit.program(), "procespy_exit_live");
    }

    #[test]
    fn missing_pieces_are_named_in_a_users_words() {
        let mut b = Builder::new();
        common(&mut b, false, false);
        b.structure("mm_struct", 1200, &[]);
        let dir = tracefs();
        let err = find(&b.finish(), dir.path()).unwrap_err().to_string();
        assert!(err.contains("mm_struct.rss_stat"), "{err}");
        assert!(err.contains("Linux 5.8 or newer"), "{err}");

        let mut b = Builder::new();
        b.int("int", 4);
        let err = find(&b.finish(), dir.path()).unwrap_err().to_string();
        assert!(err.contains("no sched_process_fork tracepoint"), "{err}");
    }

    #[test]
    fn an_unknown_counter_layout_is_refused() {
        let mut b = Builder::new();
        common(&mut b, false, true);
        let int = b.int("int", 4);
        let counters = b.array(int, int, 3);
        b.structure("mm_struct", 1200, &[("rss_stat", counters, 900)]);
        let dir = tracefs();
        let err = find(&b.finish(), dir.path()).unwrap_err().to_string();
        assert!(err.contains("layout procespy does not know"), "{err}");
    }

    #[test]
    fn finds_tracepoint_fields_by_exact_name() {
        assert_eq!(field_offset(RENAME_FORMAT, "pid"), Some(8));
        assert_eq!(field_offset(RENAME_FORMAT, "newcomm"), Some(28));
        assert_eq!(field_offset(RENAME_FORMAT, "comm"), None);
        assert_eq!(field_offset(RENAME_FORMAT, "common"), None);
        let data_loc = "\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;\n";
        assert_eq!(field_offset(data_loc, "child_comm"), Some(16));
    }

    #[test]
    fn this_kernel_has_a_layout() {
        let Ok(data) = fs::read(VMLINUX_BTF) else {
            eprintln!("skipped: {VMLINUX_BTF} is absent");
            return;
        };
        if !Path::new(TRACEFS).join("events").exists() {
            eprintln!("skipped: tracefs is not mounted at {TRACEFS}");
            return;
        }
        let layout = find(&data, Path::new(TRACEFS)).unwrap();
        let offsets = layout.config.mm_counter;
        assert!(offsets.windows(2).all(|w| w[1] > w[0]), "{offsets:?}");
        assert_eq!(layout.config.task_tgid, layout.config.task_pid + 4);
    }
}
