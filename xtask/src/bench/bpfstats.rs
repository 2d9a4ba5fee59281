//! The kernel's own accounting of eBPF programs: with
//! `kernel.bpf_stats_enabled` on, every run of a program is counted and
//! timed by the kernel (`run_cnt`, `run_time_ns`: what `bpftool prog show`
//! and bpftop read). A workload's cost is the difference of two snapshots.
//!
//! The kernel reads its clock before and after each run, so even an empty
//! program costs something here: the floor the bench measures beside them.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    os::fd::OwnedFd,
    path::Path,
};

use anyhow::{Context, Result, anyhow, bail};
use aya::sys::{Stats, enable_stats};

use super::sysctl::Sysctl;

const SETTING: &str = "kernel/bpf_stats_enabled";
/// The kernel keeps at most this many bytes of a program's name.
const KERNEL_NAME_LEN: usize = 15;

/// The statistics, on while this lives.
pub struct BpfStats {
    /// The programs of the eBPF object, by their full names.
    names: Vec<String>,
    /// `kernel.bpf_stats_enabled` set to 1, what bpftop and others look at;
    /// put back on drop.
    _setting: Option<Sysctl>,
    /// A `BPF_ENABLE_STATS` descriptor: the statistics stay on while it is
    /// open even if another benchmark on this machine puts the setting back
    /// meanwhile, and the kernel closes it however this process ends.
    _enabled: OwnedFd,
}

impl BpfStats {
    /// Turns the statistics on; `object` (the eBPF object) gives the
    /// programs' full names, which the kernel cuts to 15 bytes.
    pub fn enable(object: &Path) -> Result<Self> {
        let names = object_programs(object)?;
        let setting = Sysctl::set(SETTING, "1")?;
        let enabled = enable_stats(Stats::RunTime)
            .map_err(|err| anyhow!("BPF_ENABLE_STATS (run time): {err}"))?;
        Ok(BpfStats {
            names,
            _setting: setting,
            _enabled: enabled,
        })
    }

    /// The counters of the programs `pids` hold (through program or link
    /// descriptors), by name; programs of one name held by several of them
    /// are added up.
    pub fn snapshot(&self, pids: &[u32]) -> Result<Snapshot> {
        let mut wanted = BTreeSet::new();
        for &pid in pids {
            wanted.extend(held_programs(pid)?);
        }
        let mut runs = BTreeMap::new();
        let mut error = None;
        let mut found = 0;
        for info in aya::programs::loaded_programs() {
            // A program unloaded while the list is walked is not an error,
            // unless it was one of ours: then it is missing at the end.
            let info = match info {
                Ok(info) => info,
                Err(err) => {
                    error.get_or_insert(err);
                    continue;
                }
            };
            if !wanted.contains(&info.id()) {
                continue;
            }
            found += 1;
            let name = full_name(info.name_as_str().unwrap_or("?"), &self.names);
            let entry: &mut Runs = runs.entry(name).or_default();
            entry.count += info.run_count();
            entry.ns += info.run_time().as_nanos() as u64;
        }
        if found < wanted.len() {
            bail!(
                "found {found} of the {} eBPF programs of PIDs {pids:?}{}",
                wanted.len(),
                error.map_or_else(String::new, |err| format!(": {err}"))
            );
        }
        Ok(Snapshot(runs))
    }
}

/// How often programs ran and for how long in all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Runs {
    pub count: u64,
    pub ns: u64,
}

impl Runs {
    /// Nanoseconds per run; `None` without runs.
    pub fn ns_per_run(self) -> Option<f64> {
        (self.count > 0).then(|| self.ns as f64 / self.count as f64)
    }

    /// Nanoseconds per run of a workload's `own` runs among these, the
    /// others (the rest of the machine's) costing per run what they cost in
    /// `background`, the same program's runs while the workload waited.
    /// `None` without own runs; without background runs, the others are
    /// taken to cost what the workload's do.
    pub fn ns_per_own_run(self, own: u64, background: Runs) -> Option<f64> {
        if own == 0 {
            return None;
        }
        let others = self.count.saturating_sub(own) as f64;
        let per_other = background.ns_per_run().or(self.ns_per_run())?;
        Some((self.ns as f64 - others * per_other) / own as f64)
    }
}

impl std::ops::Add for Runs {
    type Output = Runs;

    fn add(self, other: Runs) -> Runs {
        Runs {
            count: self.count + other.count,
            ns: self.ns + other.ns,
        }
    }
}

/// Every program's [`Runs`], by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot(BTreeMap<String, Runs>);

impl Snapshot {
    /// What ran between `earlier` and this snapshot.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        let runs = self.0.iter().map(|(name, now)| {
            let then = earlier.get(name);
            let delta = Runs {
                count: now.count.saturating_sub(then.count),
                ns: now.ns.saturating_sub(then.ns),
            };
            (name.clone(), delta)
        });
        Snapshot(runs.collect())
    }

    /// The runs of program `name` (none when it is not there).
    pub fn get(&self, name: &str) -> Runs {
        self.0.get(name).copied().unwrap_or_default()
    }

    /// The programs' names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

/// The programs of the eBPF object at `path`, by full name.
fn object_programs(path: &Path) -> Result<Vec<String>> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let object = aya_obj::Object::parse(&bytes)
        .map_err(|err| anyhow!("parsing the eBPF object {}: {err}", path.display()))?;
    Ok(object.programs.into_keys().collect())
}

/// The ids of the eBPF programs `pid` holds, from `/proc/PID/fdinfo`.
fn held_programs(pid: u32) -> Result<BTreeSet<u32>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let entries = fs::read_dir(&dir).with_context(|| format!("reading {dir}"))?;
    // A descriptor closed meanwhile has no fdinfo any more: skip it.
    Ok(entries
        .filter_map(|entry| fs::read_to_string(entry.ok()?.path()).ok())
        .filter_map(|text| program_id(&text))
        .collect())
}

/// The `prog_id` of an fdinfo: a program's or a link's descriptor.
fn program_id(fdinfo: &str) -> Option<u32> {
    fdinfo
        .lines()
        .find_map(|line| line.strip_prefix("prog_id:"))
        .and_then(|id| id.trim().parse().ok())
}

/// The full name of a program the kernel calls `kernel` (at most 15
/// bytes): the one name of `names` it begins, or `kernel` itself.
fn full_name(kernel: &str, names: &[String]) -> String {
    if kernel.len() == KERNEL_NAME_LEN {
        let mut longer = names.iter().filter(|name| name.starts_with(kernel));
        if let (Some(name), None) = (longer.next(), longer.next()) {
            return name.clone();
        }
    }
    kernel.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_ids_come_from_program_and_link_descriptors() {
        let program = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t2075\nprog_type:\t26\n\
                       prog_jited:\t1\nprog_tag:\t80a5a1ee1bd5ab2c\nmemlock:\t4096\nprog_id:\t731\n\
                       run_time_ns:\t0\nrun_cnt:\t0\nrecursion_misses:\t0\nverified_insns:\t2\n";
        let link = "pos:\t0\nflags:\t02000000\nlink_type:\traw_tracepoint\nlink_id:\t45\n\
                    prog_tag:\t80a5a1ee1bd5ab2c\nprog_id:\t731\ntp_name:\trss_stat\n";
        let map = "pos:\t0\nmap_type:\t27\nkey_size:\t0\nmap_id:\t1201\n";
        assert_eq!(program_id(program), Some(731));
        assert_eq!(program_id(link), Some(731));
        assert_eq!(program_id(map), None);
        assert_eq!(program_id("pos:\t0\nflags:\t02\n"), None);
    }

    #[test]
    fn cut_names_get_their_full_name_back() {
        let names: Vec<String> = ["procespy_exit", "procespy_exit_live", "procespy_rename"]
            .map(String::from)
            .into();
        assert_eq!(full_name("procespy_exit_l", &names), "procespy_exit_live");
        assert_eq!(full_name("procespy_exit", &names), "procespy_exit");
        assert_eq!(full_name("procespy_rename", &names), "procespy_rename");
        assert_eq!(full_name("somebody_elses", &names), "somebody_elses");
    }

    #[test]
    fn the_workloads_runs_are_told_from_the_background() {
        let runs = |count, ns| Runs { count, ns };
        // 1,000 own runs at 50 ns and 100 others at 200 ns, as in the background.
        let window = runs(1100, 1000 * 50 + 100 * 200);
        assert_eq!(window.ns_per_own_run(1000, runs(10, 2000)), Some(50.0));
        assert_eq!(
            window.ns_per_own_run(1100, runs(10, 2000)),
            window.ns_per_run()
        );
        let alike = window.ns_per_own_run(1000, Runs::default()).unwrap();
        assert!((alike - window.ns_per_run().unwrap()).abs() < 1e-9);
        assert_eq!(window.ns_per_own_run(0, runs(10, 2000)), None);
        assert_eq!(runs(1, 2) + runs(3, 4), runs(4, 6));
    }

    #[test]
    fn snapshots_subtract_per_program() {
        let runs = |count, ns| Runs { count, ns };
        let earlier = Snapshot(BTreeMap::from([("a".to_owned(), runs(10, 500))]));
        let later = Snapshot(BTreeMap::from([
            ("a".to_owned(), runs(30, 2500)),
            ("b".to_owned(), runs(4, 40)),
        ]));
        let delta = later.since(&earlier);
        assert_eq!(delta.get("a"), runs(20, 2000));
        assert_eq!(delta.get("a").ns_per_run(), Some(100.0));
        assert_eq!(delta.get("b"), runs(4, 40));
        assert_eq!(delta.get("c").ns_per_run(), None);
        assert_eq!(delta.names().collect::<Vec<_>>(), ["a", "b"]);
    }
}
