//! What the running daemon reports: one typed [`StatusReport`], built by the
//! daemon, sent over the control socket as JSON, rendered as text by
//! `procespy status`, turned into metrics, and read by the tests.

use serde::{Deserialize, Serialize};

use crate::text::{Align, escape, human_size, table};
pub use crate::{
    action::{ActionRecord, Outcome},
    config::{Action, Mode, Scope},
    ebpf::{Counters, GroupExit, KernelInfo},
    process::{Rss, Source},
    rules::Protection,
    sys::Signal,
};

/// How many actions a report carries, newest first.
pub const REPORTED_ACTIONS: usize = 20;

/// Everything `procespy status` shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The daemon's PID.
    pub pid: u32,
    /// How processes are followed: `ebpf` or `proc`.
    pub mode: Mode,
    /// Why that mode.
    pub mode_reason: String,
    /// The kernel the programs run in, in eBPF mode.
    pub kernel: Option<KernelInfo>,
    /// Seconds since the daemon started.
    pub uptime_secs: f64,
    /// The configuration file, or `None` for the built-in default.
    pub config: Option<String>,
    /// Number of `[[limit]]` tables in force.
    pub limits: usize,
    /// Processes in the daemon's table.
    pub table_size: usize,
    /// Examinations of `/proc` merged so far.
    pub examinations: u64,
    /// How long the last examination took, in milliseconds.
    pub last_examination_ms: Option<f64>,
    /// Kernel events lost because the ring buffer was full (eBPF mode).
    pub lost_events: Option<u64>,
    /// The covered processes, largest first.
    pub processes: Vec<WatchedProcess>,
    /// Covered processes that cannot be followed (no pidfd could be
    /// opened, no room in the kernel's map); each was logged as an error.
    #[serde(default)]
    pub unfollowed: usize,
    /// The last actions, newest first (at most [`REPORTED_ACTIONS`]).
    pub actions: Vec<ActionRecord>,
    /// Alerts not delivered yet.
    pub alerts_queued: usize,
}

/// One covered process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WatchedProcess {
    /// Process id.
    pub pid: u32,
    /// Its name (`comm`, invalid UTF-8 replaced; not escaped).
    pub name: String,
    /// Its user.
    pub user: String,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// Resident memory by kind.
    pub rss: Rss,
    /// Where the figure comes from: the kernel's map, or a read of `/proc`.
    pub rss_source: Source,
    /// The covering limit's position among the `[[limit]]` tables.
    pub limit_index: usize,
    /// The limit in bytes.
    pub limit_bytes: u64,
    /// RSS as a percentage of the limit.
    pub limit_percent: f64,
    /// The limit's name or pattern.
    pub rule: String,
    /// The limit's scope.
    pub scope: Scope,
    /// The limit's action.
    pub action: Action,
}

/// How near a [`Point`] of the daemon's recent series is to the time it
/// was taken (seconds), on either side: the series keep the millisecond.
pub(crate) const POINT_RESOLUTION: f64 = 0.001;

/// One reading of a process's resident memory.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// When, in seconds since the Unix epoch.
    pub t: f64,
    /// Resident set size, in bytes.
    pub rss: u64,
}

/// A covered process's RSS over the last minutes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecentSeries {
    /// The process.
    pub pid: u32,
    /// Its name (not escaped).
    pub name: String,
    /// Its limit's name or pattern.
    pub rule: String,
    /// The limit, in bytes.
    pub limit_bytes: u64,
    /// Its readings, oldest first: one when the RSS moved, and one a
    /// minute when it did not.
    pub points: Vec<Point>,
}

/// Every covered process's RSS over the last minutes (`procespy top`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RecentReport {
    /// One series per covered process.
    pub series: Vec<RecentSeries>,
}

/// How many covered processes the text view lists.
const LISTED: usize = 20;

impl StatusReport {
    /// The report for a terminal: every name escaped, sizes for people, the
    /// covered processes in `ps`'s columns.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let config = self
            .config
            .as_deref()
            .map_or_else(|| "built-in default".to_owned(), escape);
        out.push_str(&format!(
            "mode:     {} ({})\nuptime:   {:.0} s\nconfig:   {config}\n",
            self.mode,
            escape(&self.mode_reason),
            self.uptime_secs,
        ));
        if let Some(kernel) = &self.kernel {
            let batched = if kernel.batched {
                ", per-thread batches of 64 faults"
            } else {
                ""
            };
            out.push_str(&format!(
                "kernel:   {} (RSS counters: {}{batched}; group exit: {})\n",
                escape(&kernel.release),
                kernel.counters,
                kernel.group_exit,
            ));
        }
        if let Some(lost) = self.lost_events {
            out.push_str(&format!("lost events: {lost}\n"));
        }
        out.push_str(&format!("alerts:   {} queued\n", self.alerts_queued));
        out.push_str(&format!(
            "watched:  {} processes under {} limits\n",
            self.processes.len(),
            self.limits
        ));
        if self.unfollowed > 0 {
            out.push_str(&format!(
                "UNFOLLOWED: {} covered processes cannot be followed (see the log)\n",
                self.unfollowed
            ));
        }
        if !self.processes.is_empty() {
            let rows: Vec<Vec<String>> = self
                .processes
                .iter()
                .take(LISTED)
                .map(|p| {
                    vec![
                        p.pid.to_string(),
                        escape(&p.user),
                        escape(&p.name),
                        human_size(p.rss_bytes),
                        human_size(p.limit_bytes),
                        format!("{:.1}", p.limit_percent),
                        escape(&p.rule),
                    ]
                })
                .collect();
            out.push_str(&table(
                &[
                    ("PID", Align::Right),
                    ("USER", Align::Left),
                    ("NAME", Align::Left),
                    ("RSS", Align::Right),
                    ("LIMIT", Align::Right),
                    ("%LIMIT", Align::Right),
                    ("RULE", Align::Left),
                ],
                &rows,
            ));
            if self.processes.len() > LISTED {
                out.push_str(&format!("… and {} more\n", self.processes.len() - LISTED));
            }
        }
        if !self.actions.is_empty() {
            out.push_str("last actions:\n");
            for action in &self.actions {
                out.push_str(&format!("  {}\n", action.summary()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(name: &str) -> StatusReport {
        StatusReport {
            pid: 10,
            mode: Mode::Ebpf,
            mode_reason: "the eBPF programs are attached".into(),
            kernel: Some(KernelInfo {
                release: "6.1.0-57-amd64".into(),
                counters: Counters::Atomic,
                batched: true,
                group_exit: GroupExit::SignalLive,
            }),
            uptime_secs: 12.0,
            config: Some("/etc/procespy.toml".into()),
            limits: 1,
            table_size: 90,
            examinations: 3,
            last_examination_ms: Some(2.5),
            lost_events: Some(0),
            processes: vec![WatchedProcess {
                pid: 4242,
                name: name.into(),
                user: "alice".into(),
                rss_bytes: 308 << 20,
                rss: Rss {
                    file: 0,
                    anon: 308 << 20,
                    shmem: 0,
                },
                rss_source: Source::Ebpf,
                limit_index: 0,
                limit_bytes: 512 << 20,
                limit_percent: 60.15625,
                rule: "grower".into(),
                scope: Scope::Process,
                action: Action::Kill,
            }],
            unfollowed: 0,
            actions: vec![ActionRecord {
                time: 1.0,
                pid: 77,
                name: name.into(),
                user: "alice".into(),
                rss: 600 << 20,
                limit: 512 << 20,
                rule: "grower".into(),
                outcome: Outcome::Sent {
                    signal: Signal::Term,
                },
            }],
            alerts_queued: 0,
        }
    }

    #[test]
    fn text_shows_sizes_limits_and_percentages() {
        let text = report("grower").render_text();
        assert!(text.contains("kernel:   6.1.0-57-amd64 (RSS counters: atomic_long_t, per-thread batches of 64 faults; group exit: signal->live at sched_process_exit)"), "{text}");
        assert!(
            text.contains("\n PID  USER   NAME        RSS    LIMIT  %LIMIT  RULE\n"),
            "{text}"
        );
        assert!(
            text.contains("\n4242  alice  grower  308 MiB  512 MiB    60.2  grower\n"),
            "{text}"
        );
        assert!(
            text.contains("SIGTERM grower (pid 77, user alice): sent"),
            "{text}"
        );
    }

    #[test]
    fn hostile_names_are_escaped_in_text() {
        for name in ["\r\nBcc: x@y", "\x1b]0;T\x07", "\x1b[31mR", "a\u{202e}b"] {
            let text = report(name).render_text();
            assert!(
                !text.chars().any(|c| c.is_control() && c != '\n'),
                "{text:?}"
            );
            assert!(!text.contains("\nBcc"), "{text:?}");
        }
    }

    #[test]
    fn json_round_trips() {
        let original = report("grower");
        let json = serde_json::to_string(&original).unwrap();
        let back: StatusReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, original);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["processes"][0]["rss_bytes"], 308u64 << 20);
        assert_eq!(value["actions"][0]["action"], "SIGTERM");
        assert_eq!(value["mode"], "ebpf");
    }
}
