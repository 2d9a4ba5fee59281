//! Prometheus metrics: `[metrics] listen = "127.0.0.1:9613"` serves
//! `GET /metrics` in the OpenMetrics text format.
//!
//! The daemon's loop owns every figure. The HTTP side ([`http`]) holds
//! none: for each scrape it sends a [`MetricsRequest`] to the loop, which
//! fills a [`Snapshot`] (the [`StatusReport`] that `procespy status` shows,
//! plus counts) and answers with [`render`]'s text. No locks are shared,
//! and a scrape costs the loop one render. The text is encoded by
//! prometheus-client from a registry built for the scrape.
//!
//! The families (all prefixed `procespy_`):
//!
//! | family | type | labels |
//! | --- | --- | --- |
//! | `build_info` | info | `version` |
//! | `mode` | gauge | `mode` (`ebpf`, `proc`): 1 for the one in use |
//! | `dry_run` | gauge | |
//! | `uptime_seconds` | gauge | |
//! | `processes` | gauge | (processes in the table) |
//! | `unfollowed_processes` | gauge | (covered, but no pidfd or kernel entry could be had) |
//! | `limit_bytes`, `watched_processes`, `rss_total_bytes`, `rss_largest_bytes` | gauge | `index`, `rule` |
//! | `actions_total` | counter | `rule`, `action`, `result` (`Outcome::class`) |
//! | `alerts_total` | counter | `channel` (`popup`, `email`), `result` (`sent`, `failed`) |
//! | `alerts_queued` | gauge | |
//! | `spool_messages`, `spool_bytes` | gauge | (with email enabled) |
//! | `history_records_total`, `history_dropped_total` | counter | (with `[history]` enabled) |
//! | `history_database_bytes` | gauge | (its size at the last prune) |
//! | `lost_events_total` | counter | (eBPF mode) |
//! | `examinations_total` | counter | |
//! | `examination_duration_seconds` | gauge | (the last one) |
//! | `bpf_program_runs_total`, `bpf_program_run_time_nanoseconds_total` | counter | `program` (while `kernel.bpf_stats_enabled` is 1) |

mod http;

use std::{collections::BTreeMap, path::Path, sync::atomic::AtomicU64};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};

pub(crate) use http::{MetricsRequest, bind, serve};

use crate::{action::ActionRecord, config::Mode, ebpf::ProgramStats, report::StatusReport};

/// Everything `/metrics` shows, filled by the daemon from its state.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    /// What `procespy status` shows.
    pub(crate) report: StatusReport,
    /// Whether signals are withheld (`--dry-run` or `[enforce] dry_run`).
    pub(crate) dry_run: bool,
    /// Every `[[limit]]`, in file order: its label and `max_memory`.
    pub(crate) limits: Vec<(String, u64)>,
    /// Every action taken since the daemon started.
    pub(crate) actions: ActionCounts,
    /// Popups and emails delivered or given up, since the daemon started.
    pub(crate) alerts: AlertCounts,
    /// Emails waiting in the spool, when email is enabled (see [`spool_usage`]).
    pub(crate) spool: Option<SpoolUsage>,
    /// The kernel's statistics of each eBPF program, while they are on.
    pub(crate) programs: Vec<ProgramStats>,
    /// The history's figures, when it is on.
    pub(crate) history: Option<HistoryFigures>,
}

/// What the history wrote and dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct HistoryFigures {
    /// Records written.
    pub(crate) written: u64,
    /// Records dropped (a slow or full disk).
    pub(crate) dropped: u64,
    /// The database's size at the last prune, in bytes.
    pub(crate) size: u64,
}

/// Counts of actions by rule, action and result class; the daemon keeps one
/// for its whole life and [`count`](ActionCounts::count)s every record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ActionCounts {
    counts: BTreeMap<(String, &'static str, &'static str), u64>,
}

impl ActionCounts {
    /// Counts one action.
    pub(crate) fn count(&mut self, record: &ActionRecord) {
        let key = (
            record.rule.clone(),
            record.outcome.action(),
            record.outcome.class(),
        );
        *self.counts.entry(key).or_default() += 1;
    }
}

type Labels = Vec<(&'static str, String)>;

fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.into_iter().map(|(k, v)| (k, v.to_owned())).collect()
}

/// Registers a gauge family holding `samples`.
fn gauges(
    registry: &mut Registry,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, f64)>,
) {
    let family = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    for (labels, value) in samples {
        family.get_or_create(&labels).set(value);
    }
    registry.register(name, help, family);
}

/// Registers a counter family holding `samples`.
fn counters(
    registry: &mut Registry,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, u64)>,
) {
    let family = Family::<Labels, Counter>::default();
    for (labels, value) in samples {
        family.get_or_create(&labels).inc_by(value);
    }
    registry.register(name, help, family);
}

/// Renders `snapshot` in the OpenMetrics text format.
pub(crate) fn render(snapshot: &Snapshot) -> String {
    let report = &snapshot.report;
    let mut registry = Registry::with_prefix("procespy");
    registry.register(
        "build",
        "procespy's version",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
    gauges(
        &mut registry,
        "mode",
        "How processes are followed: 1 for the mode in use (ebpf: kernel events; proc: /proc polling)",
        [Mode::Ebpf, Mode::Proc].map(|mode| {
            (
                labels([("mode", mode.as_str())]),
                f64::from(u8::from(report.mode == mode)),
            )
        }),
    );
    let single = |value: f64| [(Labels::new(), value)];
    gauges(
        &mut registry,
        "dry_run",
        "1 when signals are withheld (dry run), else 0",
        single(f64::from(u8::from(snapshot.dry_run))),
    );
    gauges(
        &mut registry,
        "uptime_seconds",
        "Seconds since the daemon started",
        single(report.uptime_secs),
    );
    gauges(
        &mut registry,
        "processes",
        "Processes in the daemon's table",
        single(report.table_size as f64),
    );
    gauges(
        &mut registry,
        "unfollowed_processes",
        "Covered processes that cannot be followed (no pidfd, no room in the kernel's map)",
        single(report.unfollowed as f64),
    );
    per_limit(&mut registry, snapshot);
    counters(
        &mut registry,
        "actions",
        "Actions on processes over their limit, by rule, action (SIGTERM, SIGKILL, SIGKILL (kernel), alert, none) and result (sent, gone, refused, dry-run, failed, under-limit, over-limit)",
        snapshot
            .actions
            .counts
            .iter()
            .map(|((rule, action, class), &n)| {
                (
                    labels([
                        ("rule", rule.as_str()),
                        ("action", action),
                        ("result", class),
                    ]),
                    n,
                )
            }),
    );
    let alerts = &snapshot.alerts;
    counters(
        &mut registry,
        "alerts",
        "Alerts by channel (popup, email) and result (sent, failed)",
        [
            ("popup", "sent", alerts.popups_sent),
            ("popup", "failed", alerts.popups_failed),
            ("email", "sent", alerts.emails_sent),
            ("email", "failed", alerts.emails_failed),
        ]
        .map(|(channel, result, n)| (labels([("channel", channel), ("result", result)]), n)),
    );
    gauges(
        &mut registry,
        "alerts_queued",
        "Alerts not delivered yet",
        single(report.alerts_queued as f64),
    );
    if let Some(spool) = snapshot.spool {
        gauges(
            &mut registry,
            "spool_messages",
            "Emails waiting in the spool",
            single(spool.messages as f64),
        );
        gauges(
            &mut registry,
            "spool_bytes",
            "Size of the emails waiting in the spool, in bytes",
            single(spool.bytes as f64),
        );
    }
    if let Some(history) = snapshot.history {
        counters(
            &mut registry,
            "history_records",
            "Records written to the history",
            [(Labels::new(), history.written)],
        );
        counters(
            &mut registry,
            "history_dropped",
            "Records the history dropped because its disk was too slow or full (enforcement is not affected)",
            [(Labels::new(), history.dropped)],
        );
        gauges(
            &mut registry,
            "history_database_bytes",
            "Size of the history database at its last prune, in bytes",
            single(history.size as f64),
        );
    }
    if let Some(lost) = report.lost_events {
        counters(
            &mut registry,
            "lost_events",
            "Kernel events lost because the ring buffer was full (each loss triggers a /proc examination)",
            [(Labels::new(), lost)],
        );
    }
    counters(
        &mut registry,
        "examinations",
        "/proc examinations merged",
        [(Labels::new(), report.examinations)],
    );
    if !snapshot.programs.is_empty() {
        let by_name = |figure: fn(&ProgramStats) -> u64| {
            snapshot
                .programs
                .iter()
                .map(move |p| (labels([("program", p.name)]), figure(p)))
        };
        counters(
            &mut registry,
            "bpf_program_runs",
            "Runs of each eBPF program, while the kernel's BPF statistics are on (kernel.bpf_stats_enabled)",
            by_name(|p| p.run_count),
        );
        counters(
            &mut registry,
            "bpf_program_run_time_nanoseconds",
            "Time each eBPF program ran, while the kernel's BPF statistics are on",
            by_name(|p| p.run_time_ns),
        );
    }
    if let Some(ms) = report.last_examination_ms {
        gauges(
            &mut registry,
            "examination_duration_seconds",
            "How long the last /proc examination took, in seconds",
            single(ms / 1000.0),
        );
    }
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}

/// The four figures of every limit: its size, and what it covers.
fn per_limit(registry: &mut Registry, snapshot: &Snapshot) {
    let mut covered: Vec<(u64, u64, u64)> = vec![(0, 0, 0); snapshot.limits.len()];
    for process in &snapshot.report.processes {
        if let Some((count, total, largest)) = covered.get_mut(process.limit_index) {
            *count += 1;
            *total += process.rss_bytes;
            *largest = (*largest).max(process.rss_bytes);
        }
    }
    type Figure = fn(u64, (u64, u64, u64)) -> u64;
    let figures: [(&str, &str, Figure); 4] = [
        (
            "limit_bytes",
            "The limit's max_memory in bytes",
            |max, _| max,
        ),
        ("watched_processes", "Processes the limit covers", |_, c| {
            c.0
        }),
        (
            "rss_total_bytes",
            "Resident memory of the processes the limit covers, summed, in bytes",
            |_, c| c.1,
        ),
        (
            "rss_largest_bytes",
            "Resident memory of the largest process the limit covers, in bytes",
            |_, c| c.2,
        ),
    ];
    for (name, help, figure) in figures {
        let samples = snapshot.limits.iter().zip(&covered).enumerate().map(
            |(index, ((rule, max), covered))| {
                let index = index.to_string();
                (
                    labels([("index", index.as_str()), ("rule", rule.as_str())]),
                    figure(*max, *covered) as f64,
                )
            },
        );
        gauges(registry, name, help, samples);
    }
}

/// Popups and emails, delivered or given up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct AlertCounts {
    /// Popups shown on a session bus.
    pub(crate) popups_sent: u64,
    /// Popups that could not be shown.
    pub(crate) popups_failed: u64,
    /// Emails the SMTP server accepted.
    pub(crate) emails_sent: u64,
    /// Emails the server refused for good.
    pub(crate) emails_failed: u64,
}

/// What the email spool holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SpoolUsage {
    /// Messages waiting to be sent.
    pub(crate) messages: u64,
    /// Their size in bytes.
    pub(crate) bytes: u64,
}

/// Counts the messages waiting in the spool directory `dir`: its visible
/// `*.json` files (temporary files are hidden; refused ones are in a
/// subdirectory). A missing directory holds nothing.
pub(crate) fn spool_usage(dir: &Path) -> SpoolUsage {
    let mut usage = SpoolUsage::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return usage;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        if let Ok(meta) = entry.metadata()
            && meta.is_file()
        {
            usage.messages += 1;
            usage.bytes += meta.len();
        }
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        action::Outcome,
        config::{Action, Scope},
        process::{Rss, Source},
        report::WatchedProcess,
        sys::Signal,
    };

    fn record(rule: &str, outcome: Outcome) -> ActionRecord {
        ActionRecord {
            time: 0.0,
            pid: 42,
            name: "x".into(),
            user: "root".into(),
            rss: 1,
            limit: 1,
            rule: rule.into(),
            outcome,
        }
    }

    fn watched(limit_index: usize, rss_bytes: u64) -> WatchedProcess {
        WatchedProcess {
            pid: 7,
            name: "x".into(),
            user: "root".into(),
            rss_bytes,
            rss: Rss::default(),
            rss_source: Source::Ebpf,
            limit_index,
            limit_bytes: 64 << 20,
            limit_percent: 0.0,
            rule: "tp-a".into(),
            scope: Scope::Process,
            action: Action::Kill,
        }
    }

    fn snapshot() -> Snapshot {
        let mut actions = ActionCounts::default();
        let term = Outcome::Sent {
            signal: Signal::Term,
        };
        actions.count(&record("tp-a", term.clone()));
        actions.count(&record("tp-a", term));
        actions.count(&record(
            "tp-a",
            Outcome::Failed {
                signal: Signal::Kill,
                error: "EPERM".into(),
            },
        ));
        actions.count(&record(
            "^/usr/bin/python3 .*manage\\.py \"dev\"\nx",
            Outcome::Alerted,
        ));
        Snapshot {
            report: StatusReport {
                pid: 1,
                mode: Mode::Ebpf,
                mode_reason: String::new(),
                kernel: None,
                uptime_secs: 1.5,
                config: None,
                limits: 2,
                table_size: 321,
                examinations: 9,
                last_examination_ms: Some(12.5),
                lost_events: Some(7),
                processes: vec![watched(0, 20 << 20), watched(0, 10 << 20)],
                unfollowed: 3,
                actions: Vec::new(),
                alerts_queued: 4,
            },
            dry_run: false,
            limits: vec![("tp-a".into(), 64 << 20), ("a\\b\"c".into(), 1)],
            actions,
            alerts: AlertCounts {
                popups_sent: 3,
                popups_failed: 1,
                emails_sent: 2,
                emails_failed: 0,
            },
            spool: Some(SpoolUsage {
                messages: 1,
                bytes: 2048,
            }),
            programs: vec![ProgramStats {
                name: "procespy_rss",
                run_count: 10,
                run_time_ns: 780,
            }],
            history: Some(HistoryFigures {
                written: 12,
                dropped: 1,
                size: 4096,
            }),
        }
    }

    #[test]
    fn figures_are_rendered() {
        let text = render(&snapshot());
        for line in [
            "procespy_mode{mode=\"ebpf\"} 1.0",
            "procespy_mode{mode=\"proc\"} 0.0",
            "procespy_dry_run 0.0",
            "procespy_uptime_seconds 1.5",
            "procespy_processes 321.0",
            "procespy_unfollowed_processes 3.0",
            "procespy_limit_bytes{index=\"0\",rule=\"tp-a\"} 67108864.0",
            "procespy_watched_processes{index=\"0\",rule=\"tp-a\"} 2.0",
            "procespy_rss_total_bytes{index=\"0\",rule=\"tp-a\"} 31457280.0",
            "procespy_rss_largest_bytes{index=\"0\",rule=\"tp-a\"} 20971520.0",
            "procespy_actions_total{rule=\"tp-a\",action=\"SIGTERM\",result=\"sent\"} 2",
            "procespy_actions_total{rule=\"tp-a\",action=\"SIGKILL\",result=\"failed\"} 1",
            "procespy_alerts_total{channel=\"popup\",result=\"failed\"} 1",
            "procespy_alerts_total{channel=\"email\",result=\"sent\"} 2",
            "procespy_alerts_queued 4.0",
            "procespy_history_records_total 12",
            "procespy_history_dropped_total 1",
            "procespy_history_database_bytes 4096.0",
            "procespy_spool_messages 1.0",
            "procespy_spool_bytes 2048.0",
            "procespy_lost_events_total 7",
            "procespy_examinations_total 9",
            "procespy_examination_duration_seconds 0.0125",
            "procespy_build_info{version=\"0.1.0\"} 1",
            "procespy_bpf_program_runs_total{program=\"procespy_rss\"} 10",
            "procespy_bpf_program_run_time_nanoseconds_total{program=\"procespy_rss\"} 780",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn odd_rule_names_are_escaped() {
        let text = render(&snapshot());
        let expected = r#"procespy_actions_total{rule="^/usr/bin/python3 .*manage\\.py \"dev\"\nx",action="alert",result="over-limit"} 1"#;
        assert!(text.lines().any(|l| l == expected), "{text}");
        assert!(text.contains(r#"rule="a\\b\"c""#), "{text}");
    }

    #[test]
    fn absent_figures_are_left_out() {
        let mut snapshot = snapshot();
        snapshot.report.mode = Mode::Proc;
        snapshot.report.lost_events = None;
        snapshot.report.last_examination_ms = None;
        snapshot.spool = None;
        let text = render(&snapshot);
        assert!(text.contains("procespy_mode{mode=\"proc\"} 1.0"));
        for absent in [
            "procespy_lost_events_total",
            "procespy_spool_messages",
            "procespy_examination_duration_seconds",
        ] {
            assert!(!text.contains(absent), "{absent} in\n{text}");
        }
    }

    #[test]
    fn the_spool_counts_visible_json_files() {
        let dir =
            std::env::temp_dir().join(format!("procespy-metrics-spool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("rejected")).unwrap();
        std::fs::write(dir.join("1-2-3.json"), "12345").unwrap();
        std::fs::write(dir.join(".1-2-4.json.tmp"), "123").unwrap();
        std::fs::write(dir.join("rejected/0-1-1.json"), "1").unwrap();
        assert_eq!(
            spool_usage(&dir),
            SpoolUsage {
                messages: 1,
                bytes: 5
            }
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(spool_usage(&dir), SpoolUsage::default());
    }
}
