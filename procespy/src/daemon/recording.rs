//! What the daemon hands the history: the covered processes' readings each
//! second, their actions and exits, the limits' totals, and the largest
//! processes at a full examination. It gathers [`Record`]s as things
//! happen and sends them once a second ([`Recording::flush`]); the
//! recorder's thread does the writing.

use std::collections::{BTreeMap, HashMap};

use crate::{
    action::ActionRecord,
    config::History,
    history::{
        ProcessKey, ProcessMeta, Record,
        recent::{Reading, Recent},
        recorder::Recorder,
    },
    process::Rss,
    report::WatchedProcess,
    scan::Examination,
    table::Table,
};

/// How many of the largest processes a full examination records.
const LARGEST: usize = 20;

/// What was last told about a covered process: its key, rule and limit.
#[derive(Clone, Debug, PartialEq)]
struct Told {
    key: ProcessKey,
    rule: String,
    limit_bytes: u64,
    /// Its last reading's parts, for the point an action adds.
    rss: Rss,
    /// When it exited: kept a while for the actions that complete after
    /// the exit (a SIGTERM's record comes back after the process died).
    exited: Option<f64>,
}

/// How long what was told about an exited process is kept, in seconds.
const KEEP_EXITED: f64 = 60.0;

/// The daemon's side of the history.
pub(super) struct Recording {
    recorder: Recorder,
    settings: History,
    told: HashMap<u32, Told>,
    pending: Vec<Record>,
}

impl Recording {
    /// Starts the recorder for `settings`.
    pub(super) fn start(settings: &History) -> Recording {
        Recording {
            recorder: Recorder::start(settings),
            settings: settings.clone(),
            told: HashMap::new(),
            pending: Vec::new(),
        }
    }

    /// What the history wrote and dropped, when it is on.
    pub(super) fn figures(&self) -> Option<crate::metrics::HistoryFigures> {
        self.recorder.figures()
    }

    /// `[history]` may have changed with a reload: a new recorder when it
    /// did (the old one finishes its writes on its own).
    pub(super) fn reconfigure(&mut self, settings: &History) {
        if *settings == self.settings {
            return;
        }
        let mut old = std::mem::replace(&mut self.recorder, Recorder::start(settings));
        self.settings = settings.clone();
        self.told.clear();
        tokio::spawn(async move { old.stop(std::time::Duration::from_secs(3)).await });
    }

    /// The covered processes' readings at `now`: those `recent` kept (they
    /// moved, or a minute passed) are recorded, with the limits' totals.
    pub(super) fn sample(
        &mut self,
        now: f64,
        watched: &[WatchedProcess],
        kept: &[(u32, crate::report::Point)],
        table: &Table,
    ) {
        if !self.recorder.enabled() {
            return;
        }
        self.told
            .retain(|_, told| told.exited.is_none_or(|t| now - t < KEEP_EXITED));
        let by_pid: HashMap<u32, &WatchedProcess> = watched.iter().map(|p| (p.pid, p)).collect();
        for &(pid, point) in kept {
            let Some(process) = by_pid.get(&pid) else {
                continue;
            };
            let Some(entry) = table.get(pid) else {
                continue;
            };
            let key = ProcessKey {
                pid,
                start_ticks: entry.start_ticks.unwrap_or(0),
            };
            let told = Told {
                key,
                rule: process.rule.clone(),
                limit_bytes: process.limit_bytes,
                rss: process.rss,
                exited: None,
            };
            let known = self.told.get(&pid);
            if known.is_none_or(|t| {
                (t.key, &t.rule, t.limit_bytes) != (key, &told.rule, told.limit_bytes)
            }) {
                self.pending.push(Record::Process(ProcessMeta {
                    key,
                    name: process.name.clone(),
                    cmdline: String::from_utf8_lossy(&entry.cmdline).into_owned(),
                    user: process.user.clone(),
                    rule: process.rule.clone(),
                    limit_bytes: process.limit_bytes,
                }));
            }
            self.told.insert(pid, told);
            self.pending.push(Record::Rss {
                key,
                t: point.t,
                rss: process.rss,
            });
        }
        let mut totals: BTreeMap<&str, (u64, u32, u64)> = BTreeMap::new();
        for process in watched {
            let total = totals
                .entry(&process.rule)
                .or_insert((0, 0, process.limit_bytes));
            total.0 += process.rss_bytes;
            total.1 += 1;
        }
        for (rule, (bytes, processes, limit_bytes)) in totals {
            self.pending.push(Record::Total {
                rule: rule.to_owned(),
                t: now,
                bytes,
                processes,
                limit_bytes,
            });
        }
    }

    /// Actions just recorded: each goes to the history, and its RSS as the
    /// process's last point (also in `recent`, for the alert's chart). A
    /// process acted on before its first sample (killed at once) is told
    /// about from the record.
    pub(super) fn actions(&mut self, actions: &[ActionRecord], recent: &mut Recent, table: &Table) {
        for action in actions {
            recent.mark(
                action.time,
                Reading {
                    pid: action.pid,
                    name: &action.name,
                    rule: &action.rule,
                    limit_bytes: action.limit,
                    rss: action.rss,
                },
            );
            if !self.recorder.enabled() {
                continue;
            }
            if !self.told.contains_key(&action.pid) {
                let entry = table.get(action.pid);
                let key = ProcessKey {
                    pid: action.pid,
                    start_ticks: entry.and_then(|e| e.start_ticks).unwrap_or(0),
                };
                self.pending.push(Record::Process(ProcessMeta {
                    key,
                    name: action.name.clone(),
                    cmdline: entry
                        .map(|e| String::from_utf8_lossy(&e.cmdline).into_owned())
                        .unwrap_or_default(),
                    user: action.user.clone(),
                    rule: action.rule.clone(),
                    limit_bytes: action.limit,
                }));
                let told = Told {
                    key,
                    rule: action.rule.clone(),
                    limit_bytes: action.limit,
                    rss: entry.map(|e| e.rss).unwrap_or_default(),
                    exited: None,
                };
                self.told.insert(action.pid, told);
            }
            let told = &self.told[&action.pid];
            let parts = told.rss;
            self.pending.push(Record::Rss {
                key: told.key,
                t: action.time,
                rss: Rss {
                    file: parts.file,
                    shmem: parts.shmem,
                    anon: action.rss.saturating_sub(parts.file + parts.shmem),
                },
            });
            self.pending.push(Record::Action {
                key: told.key,
                t: action.time,
                action: action.outcome.action().to_owned(),
                result: action.outcome.to_string(),
                rss: action.rss,
            });
        }
    }

    /// `pid` exited at `now`.
    pub(super) fn exited(&mut self, pid: u32, now: f64) {
        if let Some(told) = self.told.get_mut(&pid).filter(|t| t.exited.is_none()) {
            told.exited = Some(now);
            self.pending.push(Record::Exited {
                key: told.key,
                t: now,
            });
        }
    }

    /// An examination: the largest processes, when it was a full one.
    pub(super) fn examined(&mut self, exam: &Examination, now: f64) {
        if !self.recorder.enabled() || exam.listed.is_some() {
            return;
        }
        let mut largest: Vec<(u32, String, u64)> = exam
            .procs
            .iter()
            .map(|p| (p.pid, p.name_lossy(), p.rss.total()))
            .collect();
        largest.sort_by_key(|&(pid, _, rss)| (std::cmp::Reverse(rss), pid));
        largest.truncate(LARGEST);
        self.pending.push(Record::Largest {
            t: now,
            processes: largest,
        });
    }

    /// Sends what was gathered.
    pub(super) fn flush(&mut self) {
        self.recorder.record(std::mem::take(&mut self.pending));
    }

    /// Sends what was gathered and waits (a while) for it to be written.
    pub(super) async fn stop(&mut self) {
        self.flush();
        self.recorder.stop(std::time::Duration::from_secs(3)).await;
    }
}
