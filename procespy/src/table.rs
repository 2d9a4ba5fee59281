//! The process table: one entry per live process, fed by kernel events and
//! corrected by full examinations of `/proc`.
//!
//! Pure bookkeeping: no I/O happens here, so every rule is unit-tested.
//! Events and examinations race (a process can exit while `/proc` is being
//! read); the table settles them with two timestamps:
//! - an exit leaves a tombstone, so an examination that started before the
//!   exit does not bring the process back;
//! - an entry added after an examination started is not removed by it for
//!   being absent.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    time::Instant,
};

use procespy_common::EventKind;

use crate::{
    ebpf::events::KernelEvent,
    process::{ProcInfo, Rss},
    scan::Examination,
};

/// One process in the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Process id (tgid).
    pub(crate) pid: u32,
    /// Parent process id, when known.
    pub(crate) ppid: u32,
    /// `comm`, raw bytes.
    pub(crate) comm: Vec<u8>,
    /// The executable, when known.
    pub(crate) exe: Option<PathBuf>,
    /// The command line, when known.
    pub(crate) cmdline: Vec<u8>,
    /// Real user id, when known.
    pub(crate) uid: Option<u32>,
    /// Start time in clock ticks after boot, when known.
    pub(crate) start_ticks: Option<u64>,
    /// Resident memory as last read from `/proc`.
    pub(crate) rss: Rss,
    /// Bytes in swap as last read from `/proc`.
    pub(crate) swap: u64,
    /// User + system CPU time in clock ticks, as last read.
    pub(crate) cpu_ticks: u64,
    /// Whether `/proc` was read for this process since its last exec.
    pub(crate) detailed: bool,
    /// When the entry was made.
    pub(crate) added: Instant,
    /// Execs of the process the table has seen: a read of `/proc` asked
    /// for before the last one is stale.
    pub(crate) execs: u32,
    /// When an exec or rename event last named it: a read of `/proc` that
    /// began before then has an older name.
    named: Option<Instant>,
}

impl Entry {
    fn from_info(info: &ProcInfo, now: Instant) -> Self {
        let mut entry = Entry::bare(info.pid, info.ppid, info.comm.clone(), now);
        entry.absorb(info, now);
        entry
    }

    fn bare(pid: u32, ppid: u32, comm: Vec<u8>, now: Instant) -> Self {
        Entry {
            pid,
            ppid,
            comm,
            exe: None,
            cmdline: Vec::new(),
            uid: None,
            start_ticks: None,
            rss: Rss::default(),
            swap: 0,
            cpu_ticks: 0,
            detailed: false,
            added: now,
            execs: 0,
            named: None,
        }
    }

    /// Takes in a read of `/proc` that began at `read_at`.
    fn absorb(&mut self, info: &ProcInfo, read_at: Instant) {
        self.ppid = info.ppid;
        if self.named.is_none_or(|named| named < read_at) {
            self.comm.clone_from(&info.comm);
        }
        self.exe.clone_from(&info.exe);
        self.cmdline.clone_from(&info.cmdline);
        self.uid = Some(info.uid);
        self.start_ticks = Some(info.start_ticks);
        self.rss = info.rss;
        self.swap = info.swap;
        self.cpu_ticks = info.cpu_ticks;
        self.detailed = true;
    }

    /// `comm` as text, invalid UTF-8 replaced.
    pub(crate) fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.comm).into_owned()
    }
}

/// What applying an event did to the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// A process entered the table (fork, or exec of a process not yet known).
    Added(u32),
    /// A known process ran exec: its name, executable and command line changed.
    Replaced(u32),
    /// A process got a new name.
    Renamed(u32),
    /// A process left the table.
    Removed(u32),
    /// Nothing changed (an event for another thread, an unknown process, …).
    None,
}

/// What merging an examination did to the table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Merge {
    /// Processes the table did not know (started before procespy, or events lost).
    pub(crate) added: Vec<u32>,
    /// Processes whose PID now belongs to another process (start time differs).
    pub(crate) reused: Vec<u32>,
    /// Processes gone from `/proc` whose exit event the table had not
    /// applied: still in flight, or lost. As the table last knew them.
    pub(crate) removed: Vec<Entry>,
}

/// The live process table.
#[derive(Debug, Default)]
pub(crate) struct Table {
    entries: HashMap<u32, Entry>,
    tombstones: HashMap<u32, Instant>,
    /// Kernel threads the last examination listed: never in the table, and
    /// not worth reading again.
    kernel_threads: HashSet<u32>,
}

impl Table {
    /// An empty table.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The entry of `pid`.
    pub(crate) fn get(&self, pid: u32) -> Option<&Entry> {
        self.entries.get(&pid)
    }

    /// Every entry, in no particular order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Number of processes in the table.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Applies one kernel event received at `now`.
    pub(crate) fn apply_event(&mut self, event: &KernelEvent, now: Instant) -> Change {
        match event.kind {
            EventKind::Exec => {
                self.tombstones.remove(&event.pid);
                match self.entries.get_mut(&event.pid) {
                    Some(entry) => {
                        entry.comm.clone_from(&event.comm);
                        entry.named = Some(now);
                        entry.exe = None;
                        entry.cmdline.clear();
                        entry.detailed = false;
                        entry.execs = entry.execs.wrapping_add(1);
                        Change::Replaced(event.pid)
                    }
                    None => {
                        let mut entry = Entry::bare(event.pid, 0, event.comm.clone(), now);
                        entry.named = Some(now);
                        self.entries.insert(event.pid, entry);
                        Change::Added(event.pid)
                    }
                }
            }
            EventKind::Fork => {
                self.tombstones.remove(&event.pid);
                let mut entry = Entry::bare(event.pid, event.ppid, event.comm.clone(), now);
                // A child runs its parent's image, under its parent's name
                // (the kernel sends none), as its parent's user.
                if let Some(parent) = self.entries.get(&event.ppid) {
                    entry.comm.clone_from(&parent.comm);
                    entry.exe.clone_from(&parent.exe);
                    entry.cmdline.clone_from(&parent.cmdline);
                    entry.uid = parent.uid;
                    entry.detailed = parent.detailed;
                }
                self.entries.insert(event.pid, entry);
                Change::Added(event.pid)
            }
            EventKind::Exit => match self.exit(event.pid, now) {
                Some(_) => Change::Removed(event.pid),
                None => Change::None,
            },
            EventKind::Rename => match self.entries.get_mut(&event.pid) {
                // Only a group leader's name is the process's name; other
                // threads' ids are not keys of the table.
                Some(entry) if entry.comm != event.comm => {
                    entry.comm.clone_from(&event.comm);
                    entry.named = Some(now);
                    Change::Renamed(event.pid)
                }
                _ => Change::None,
            },
            EventKind::Breach | EventKind::Usage | EventKind::Warning => Change::None,
        }
    }

    /// Applies the exit event of `pid`, received at `now`: the entry it
    /// removed, unless an examination had removed it before.
    pub(crate) fn exit(&mut self, pid: u32, now: Instant) -> Option<Entry> {
        self.tombstones.insert(pid, now);
        self.entries.remove(&pid)
    }

    /// Fills in what a read of `/proc/PID` that began at `read_at` found for
    /// a process the table has; a name an event gave it since is kept.
    ///
    /// Ignored when the read belongs to another process than the entry (the
    /// PID was reused in between).
    pub(crate) fn absorb(&mut self, info: &ProcInfo, read_at: Instant) {
        if let Some(entry) = self.entries.get_mut(&info.pid)
            && entry
                .start_ticks
                .is_none_or(|start| start == info.start_ticks)
        {
            entry.absorb(info, read_at);
        }
    }

    /// Merges a full examination of `/proc` that began at `exam.started`.
    pub(crate) fn merge(&mut self, exam: &Examination) -> Merge {
        let mut merge = Merge::default();
        // A partial examination listed more processes than it read.
        // Nor is a process that could not be read known to have exited.
        let mut seen: HashSet<u32> = exam
            .listed
            .iter()
            .flatten()
            .chain(&exam.unread)
            .copied()
            .collect();
        for info in &exam.procs {
            if info.kernel_thread {
                self.kernel_threads.insert(info.pid);
                continue;
            }
            // A zombie, or a process between its exit event and its end
            // (the event may have been taken before this examination began,
            // so no tombstone is recent enough to tell): not added back.
            if info.state == b'Z' || info.exiting {
                continue;
            }
            if self
                .tombstones
                .get(&info.pid)
                .is_some_and(|&exited| exited >= exam.started)
            {
                continue; // it exited while /proc was being read
            }
            seen.insert(info.pid);
            match self.entries.get_mut(&info.pid) {
                Some(entry) if entry.start_ticks.is_some_and(|s| s != info.start_ticks) => {
                    *entry = Entry::from_info(info, exam.started);
                    merge.reused.push(info.pid);
                }
                Some(entry) => entry.absorb(info, exam.started),
                None => {
                    self.entries
                        .insert(info.pid, Entry::from_info(info, exam.started));
                    merge.added.push(info.pid);
                }
            }
        }
        let gone: Vec<u32> = self
            .entries
            .values()
            .filter(|entry| !seen.contains(&entry.pid) && entry.added < exam.started)
            .map(|entry| entry.pid)
            .collect();
        merge.removed = gone
            .iter()
            .filter_map(|pid| self.entries.remove(pid))
            .collect();
        if let Some(listed) = &exam.listed {
            let listed: HashSet<u32> = listed.iter().copied().collect();
            self.kernel_threads.retain(|pid| listed.contains(pid));
        } else {
            let read: HashSet<u32> = exam.procs.iter().map(|p| p.pid).collect();
            self.kernel_threads.retain(|pid| read.contains(pid));
        }
        // Later examinations start after these exits: they cannot see them.
        self.tombstones
            .retain(|_, &mut exited| exited >= exam.started);
        merge.added.sort_unstable();
        merge.removed.sort_unstable_by_key(|entry| entry.pid);
        merge.reused.sort_unstable();
        merge
    }

    /// The PIDs a partial examination need not read: processes known in
    /// detail, and kernel threads.
    pub(crate) fn known_pids(&self) -> HashSet<u32> {
        self.entries
            .values()
            .filter(|entry| entry.detailed)
            .map(|entry| entry.pid)
            .chain(self.kernel_threads.iter().copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn event(kind: EventKind, pid: u32, comm: &[u8]) -> KernelEvent {
        KernelEvent {
            kind,
            pid,
            ppid: 1,
            comm: comm.to_vec(),
            rss_bytes: 0,
            killed: false,
            foreign: false,
            ktime_ns: 0,
        }
    }

    fn info(pid: u32, comm: &[u8], start_ticks: u64) -> ProcInfo {
        ProcInfo {
            pid,
            ppid: 1,
            comm: comm.to_vec(),
            start_ticks,
            state: b'S',
            ..ProcInfo::default()
        }
    }

    fn pids(entries: &[Entry]) -> Vec<u32> {
        entries.iter().map(|entry| entry.pid).collect()
    }

    fn exam(started: Instant, procs: Vec<ProcInfo>) -> Examination {
        Examination {
            procs,
            started,
            vanished: 0,
            listed: None,
            unread: Vec::new(),
            resident: Default::default(),
        }
    }

    #[test]
    fn exec_adds_and_exit_removes() {
        let mut table = Table::new();
        let now = Instant::now();
        assert_eq!(
            table.apply_event(&event(EventKind::Exec, 10, b"sh"), now),
            Change::Added(10)
        );
        assert_eq!(table.get(10).unwrap().comm, b"sh");
        assert_eq!(
            table.apply_event(&event(EventKind::Exit, 10, b"sh"), now),
            Change::Removed(10)
        );
        assert_eq!(table.len(), 0);
        assert_eq!(
            table.apply_event(&event(EventKind::Exit, 10, b"sh"), now),
            Change::None
        );
    }

    #[test]
    fn exec_of_a_known_process_forgets_its_old_image() {
        let mut table = Table::new();
        let t0 = Instant::now();
        table.merge(&exam(
            t0,
            vec![ProcInfo {
                cmdline: b"bash -l".to_vec(),
                ..info(10, b"bash", 7)
            }],
        ));
        assert_eq!(table.get(10).unwrap().execs, 0);
        let change = table.apply_event(&event(EventKind::Exec, 10, b"python3"), t0);
        assert_eq!(change, Change::Replaced(10));
        let entry = table.get(10).unwrap();
        assert_eq!(entry.comm, b"python3");
        assert!(entry.cmdline.is_empty());
        assert!(!entry.detailed);
        assert_eq!(entry.execs, 1, "a read asked for before is stale");
        assert_eq!(
            entry.start_ticks,
            Some(7),
            "exec keeps the process's identity"
        );
    }

    #[test]
    fn fork_inherits_what_the_parent_runs() {
        let mut table = Table::new();
        let t0 = Instant::now();
        let parent = ProcInfo {
            uid: 1000,
            cmdline: b"worker --x".to_vec(),
            ..info(10, b"worker", 7)
        };
        table.merge(&exam(t0, vec![parent]));
        let fork = KernelEvent {
            ppid: 10,
            ..event(EventKind::Fork, 11, b"worker")
        };
        assert_eq!(table.apply_event(&fork, t0), Change::Added(11));
        let child = table.get(11).unwrap();
        assert_eq!((child.ppid, child.uid), (10, Some(1000)));
        assert_eq!(child.cmdline, b"worker --x");
    }

    #[test]
    fn rename_applies_to_group_leaders_only() {
        let mut table = Table::new();
        let now = Instant::now();
        table.apply_event(&event(EventKind::Exec, 10, b"old"), now);
        assert_eq!(
            table.apply_event(&event(EventKind::Rename, 10, b"new"), now),
            Change::Renamed(10)
        );
        assert_eq!(table.get(10).unwrap().comm, b"new");
        // A thread id is not a key: ignored.
        assert_eq!(
            table.apply_event(&event(EventKind::Rename, 11, b"thread"), now),
            Change::None
        );
        // The same name again is no change.
        assert_eq!(
            table.apply_event(&event(EventKind::Rename, 10, b"new"), now),
            Change::None
        );
    }

    #[test]
    fn examination_finds_processes_that_predate_procespy() {
        let mut table = Table::new();
        let merge = table.merge(&exam(
            Instant::now(),
            vec![info(5, b"a", 1), info(6, b"b", 2)],
        ));
        assert_eq!(merge.added, vec![5, 6]);
        assert!(table.get(5).unwrap().detailed);
    }

    #[test]
    fn examination_skips_kernel_threads_and_zombies() {
        let mut table = Table::new();
        let kthread = ProcInfo {
            kernel_thread: true,
            ..info(2, b"kthreadd", 0)
        };
        let zombie = ProcInfo {
            state: b'Z',
            ..info(9, b"defunct", 3)
        };
        table.merge(&exam(Instant::now(), vec![kthread, zombie]));
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn an_exit_during_the_examination_is_not_undone() {
        let mut table = Table::new();
        let started = Instant::now();
        let exited = started + Duration::from_millis(5);
        table.apply_event(&event(EventKind::Exec, 10, b"short"), started);
        table.apply_event(&event(EventKind::Exit, 10, b"short"), exited);
        // The examination read /proc/10 before the process exited.
        let merge = table.merge(&exam(started, vec![info(10, b"short", 4)]));
        assert!(merge.added.is_empty());
        assert!(table.get(10).is_none());
    }

    #[test]
    fn a_process_still_exiting_after_its_exit_event_is_not_added_back() {
        let mut table = Table::new();
        let exited = Instant::now();
        table.apply_event(&event(EventKind::Exec, 10, b"short"), exited);
        table.apply_event(&event(EventKind::Exit, 10, b"short"), exited);
        // The examination began after the exit was taken, while the
        // process was still closing its files (PF_EXITING, not a zombie).
        let exiting = ProcInfo {
            exiting: true,
            ..info(10, b"short", 4)
        };
        let merge = table.merge(&exam(exited + Duration::from_millis(1), vec![exiting]));
        assert!(merge.added.is_empty());
        assert!(table.get(10).is_none());
    }

    #[test]
    fn an_exit_before_the_examination_does_not_hide_a_new_process() {
        let mut table = Table::new();
        let exited = Instant::now();
        table.apply_event(&event(EventKind::Exit, 10, b"old"), exited);
        let started = exited + Duration::from_millis(5);
        let merge = table.merge(&exam(started, vec![info(10, b"new", 9)]));
        assert_eq!(merge.added, vec![10]);
    }

    #[test]
    fn a_process_missed_by_events_is_removed_by_the_examination() {
        let mut table = Table::new();
        let t0 = Instant::now();
        table.merge(&exam(t0, vec![info(5, b"a", 1), info(6, b"b", 2)]));
        let merge = table.merge(&exam(t0 + Duration::from_secs(5), vec![info(5, b"a", 1)]));
        assert_eq!(pids(&merge.removed), vec![6]);
        assert!(table.get(6).is_none());
    }

    #[test]
    fn a_process_born_during_the_examination_is_kept() {
        let mut table = Table::new();
        let started = Instant::now();
        table.apply_event(
            &event(EventKind::Exec, 10, b"new"),
            started + Duration::from_millis(1),
        );
        let merge = table.merge(&exam(started, vec![]));
        assert!(merge.removed.is_empty());
        assert!(table.get(10).is_some());
    }

    #[test]
    fn a_full_examination_keeps_what_it_could_not_read() {
        let mut table = Table::new();
        let t0 = Instant::now();
        table.merge(&exam(t0, vec![info(5, b"a", 1), info(6, b"b", 2)]));
        let merge = table.merge(&Examination {
            unread: vec![6],
            ..exam(t0 + Duration::from_secs(5), vec![info(5, b"a", 1)])
        });
        assert!(merge.removed.is_empty(), "{:?}", merge.removed);
        assert!(table.get(6).is_some());
    }

    #[test]
    fn a_partial_examination_keeps_what_it_listed_and_removes_the_rest() {
        let mut table = Table::new();
        let t0 = Instant::now();
        table.merge(&exam(t0, vec![info(5, b"a", 1), info(6, b"b", 2)]));
        let partial = Examination {
            listed: Some(vec![5, 7]),
            ..exam(t0 + Duration::from_secs(5), vec![info(7, b"new", 3)])
        };
        let merge = table.merge(&partial);
        assert_eq!((merge.added, pids(&merge.removed)), (vec![7], vec![6]));
        assert_eq!(
            table.get(5).unwrap().comm,
            b"a",
            "listed, not read: kept as it was"
        );
    }

    #[test]
    fn pid_reuse_is_seen_through_the_start_time() {
        let mut table = Table::new();
        let t0 = Instant::now();
        table.merge(&exam(t0, vec![info(5, b"old", 1)]));
        let merge = table.merge(&exam(
            t0 + Duration::from_secs(5),
            vec![info(5, b"new", 99)],
        ));
        assert_eq!(merge.reused, vec![5]);
        assert_eq!(table.get(5).unwrap().comm, b"new");
        // A late read of the new process does not go into an entry of another.
        table.absorb(&info(5, b"stale", 1), Instant::now());
        assert_eq!(table.get(5).unwrap().comm, b"new");
    }

    #[test]
    fn a_read_that_began_before_a_rename_keeps_the_new_name() {
        let mut table = Table::new();
        let t0 = Instant::now();
        table.apply_event(&event(EventKind::Exec, 5, b"prog"), t0);
        let read_at = t0 + Duration::from_millis(1);
        table.apply_event(
            &event(EventKind::Rename, 5, b"renamed"),
            t0 + Duration::from_millis(2),
        );
        table.absorb(&info(5, b"prog", 1), read_at);
        let entry = table.get(5).unwrap();
        assert_eq!(entry.comm, b"renamed");
        assert!(entry.detailed, "the rest of the read is taken");
        table.absorb(&info(5, b"again", 1), t0 + Duration::from_millis(3));
        assert_eq!(table.get(5).unwrap().comm, b"again");
    }
}
