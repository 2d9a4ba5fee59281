//! `procespy history`: what the history holds about a process (by name or
//! PID) or a limit's total, as a table, JSON or CSV, and as a plot.
//!
//! It reads the database directly (root's, like the daemon that writes it);
//! the daemon need not run.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Serialize;

use super::store::{ActionRow, ProcessRow, Reader, Sample, Selector, TotalSample};
use crate::{
    alerts::message::LocalTime,
    chart::{self, Chart, Mark},
    config::{Config, DEFAULT_CONFIG, History},
    output::print_stdout,
    text::{Align, escape, human_size, table},
};

/// How `procespy history` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// Aligned tables.
    Table,
    /// One JSON document.
    Json,
    /// CSV, a header and a row per sample or action.
    Csv,
}

/// What `procespy history` was asked for.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    /// The processes with this name.
    pub(crate) name: Option<String>,
    /// The latest process with this PID.
    pub(crate) pid: Option<u32>,
    /// A limit's total: its label or position.
    pub(crate) limit: Option<String>,
    /// How far back (`1h`).
    pub(crate) since: String,
    /// How to print.
    pub(crate) format: Format,
    /// Where to draw the chart.
    pub(crate) plot: Option<PathBuf>,
    /// The configuration naming the database.
    pub(crate) config: Option<PathBuf>,
}

/// A process and what the history holds of it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct ProcessHistory {
    /// The process.
    #[serde(flatten)]
    pub(crate) process: ProcessRow,
    /// Its readings, oldest first.
    pub(crate) samples: Vec<Sample>,
    /// What procespy did about it.
    pub(crate) actions: Vec<ActionRow>,
}

/// A limit's total over time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct LimitHistory {
    /// The limit's name or pattern.
    pub(crate) rule: String,
    /// The totals, oldest first.
    pub(crate) samples: Vec<TotalSample>,
}

/// What was found.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Found {
    /// Processes, newest first.
    Processes(Vec<ProcessHistory>),
    /// One limit's total.
    Limit(LimitHistory),
}

/// Runs `procespy history`.
pub(crate) fn run(options: &Options) -> anyhow::Result<()> {
    let since = crate::config::units::parse_duration(&options.since)
        .map_err(|message| anyhow::anyhow!("--since: {message}"))?;
    let (settings, config) = settings(options.config.as_deref())?;
    let reader = Reader::open(&settings.path, &settings.tiers).map_err(|err| {
        if err
            .chain()
            .any(|cause| cause.to_string().contains("unable to open"))
            && !rustix::process::geteuid().is_root()
        {
            err.context("the history is root's: run procespy history with sudo")
        } else {
            err
        }
    })?;
    let now = crate::sys::epoch_secs();
    let from = now - since.as_secs_f64();
    let found = if let Some(limit) = &options.limit {
        let rule = rule_of(limit, config.as_ref(), &reader.rules()?)?;
        Found::Limit(LimitHistory {
            samples: reader.totals(&rule, from, now)?,
            rule,
        })
    } else {
        let selector = match (&options.pid, &options.name) {
            (Some(pid), _) => Selector::Pid(*pid),
            (None, Some(name)) => Selector::Name(name.clone()),
            (None, None) => bail!("name a process, or give --pid or --limit"),
        };
        let mut list = Vec::new();
        for process in reader.processes(&selector, from)? {
            list.push(ProcessHistory {
                samples: reader.samples(process.id, from, now)?,
                actions: reader.actions(process.id, from)?,
                process,
            });
        }
        if list.is_empty() {
            let what = match &selector {
                Selector::Pid(pid) => format!("PID {pid}"),
                Selector::Name(name) => format!("a process named {}", escape(name)),
            };
            bail!(
                "the history has nothing about {what} since {}",
                options.since
            );
        }
        Found::Processes(list)
    };
    let text = match options.format {
        Format::Table => render_table(&found),
        Format::Json => serde_json::to_string_pretty(&found)? + "\n",
        Format::Csv => render_csv(&found),
    };
    print_stdout(&text).context("cannot write to stdout")?;
    if let Some(path) = &options.plot {
        chart::write(&chart_of(&found), path)?;
    }
    Ok(())
}

/// The `[history]` of `-c PATH`, or of `/etc/procespy.toml`, or the
/// default; with the configuration, when there is one.
fn settings(path: Option<&Path>) -> anyhow::Result<(History, Option<Config>)> {
    let path = match path {
        Some(path) => path.to_owned(),
        None if Path::new(DEFAULT_CONFIG).exists() => PathBuf::from(DEFAULT_CONFIG),
        None => return Ok((History::default(), None)),
    };
    let config = Config::load(&path)?;
    Ok((config.history.clone(), Some(config)))
}

/// The label of the limit `given` names: a position among the `[[limit]]`
/// tables, or a label the history holds.
fn rule_of(given: &str, config: Option<&Config>, known: &[String]) -> anyhow::Result<String> {
    if let Ok(index) = given.parse::<usize>() {
        let Some(config) = config else {
            bail!("--limit {index}: there is no configuration to count limits in; name the limit");
        };
        return config
            .limits
            .get(index)
            .map(|limit| limit.label.clone())
            .with_context(|| {
                format!(
                    "--limit {index}: the configuration has {} limits",
                    config.limits.len()
                )
            });
    }
    if known.iter().any(|rule| rule == given) {
        return Ok(given.to_owned());
    }
    let known: Vec<String> = known.iter().map(|r| escape(r)).collect();
    bail!(
        "the history has no totals for the limit {}; it has: {}",
        escape(given),
        if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        }
    )
}

/// A time for a table: the clock, with the date when it is not today.
fn when(t: f64, today: &LocalTime) -> String {
    let local = LocalTime::from_epoch(t);
    if (local.year, local.month, local.day) == (today.year, today.month, today.day) {
        local.clock()
    } else {
        format!(
            "{:04}-{:02}-{:02} {}",
            local.year,
            local.month,
            local.day,
            local.clock()
        )
    }
}

/// The tables people read.
pub(crate) fn render_table(found: &Found) -> String {
    let today = LocalTime::from_epoch(crate::sys::epoch_secs());
    let mut out = String::new();
    match found {
        Found::Processes(list) => {
            for (i, history) in list.iter().enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                let p = &history.process;
                out.push_str(&format!(
                    "{} (pid {}, user {}), limit {} ({})\n",
                    escape(&p.name),
                    p.pid,
                    escape(&p.user),
                    escape(&p.rule),
                    human_size(p.limit_bytes)
                ));
                if !p.cmdline.is_empty() {
                    out.push_str(&format!("command line: {}\n", escape(&p.cmdline)));
                }
                out.push_str(&format!(
                    "first seen {}{}\n",
                    LocalTime::from_epoch(p.first_seen).full(),
                    p.exited
                        .map(|t| format!(", exited {}", when(t, &today)))
                        .unwrap_or_default()
                ));
                let mut rows: Vec<(f64, Vec<String>)> = history
                    .samples
                    .iter()
                    .map(|s| {
                        (
                            s.t,
                            vec![
                                when(s.t, &today),
                                human_size(s.rss),
                                human_size(s.anon),
                                human_size(s.file),
                                human_size(s.shmem),
                                percent(s.rss, p.limit_bytes),
                                String::new(),
                            ],
                        )
                    })
                    .collect();
                rows.extend(history.actions.iter().map(|a| {
                    (
                        a.t,
                        vec![
                            when(a.t, &today),
                            human_size(a.rss),
                            String::new(),
                            String::new(),
                            String::new(),
                            percent(a.rss, p.limit_bytes),
                            format!("{}: {}", escape(&a.action), escape(&a.result)),
                        ],
                    )
                }));
                rows.sort_by(|a, b| a.0.total_cmp(&b.0));
                let rows: Vec<Vec<String>> = rows.into_iter().map(|(_, row)| row).collect();
                out.push_str(&table(
                    &[
                        ("TIME", Align::Left),
                        ("RSS", Align::Right),
                        ("ANON", Align::Right),
                        ("FILE", Align::Right),
                        ("SHMEM", Align::Right),
                        ("%LIMIT", Align::Right),
                        ("EVENT", Align::Left),
                    ],
                    &rows,
                ));
            }
        }
        Found::Limit(limit) => {
            out.push_str(&format!(
                "limit {}: its processes together\n",
                escape(&limit.rule)
            ));
            let rows: Vec<Vec<String>> = limit
                .samples
                .iter()
                .map(|s| {
                    vec![
                        when(s.t, &today),
                        human_size(s.bytes),
                        s.processes.to_string(),
                        human_size(s.limit_bytes),
                        percent(s.bytes, s.limit_bytes),
                    ]
                })
                .collect();
            out.push_str(&table(
                &[
                    ("TIME", Align::Left),
                    ("TOTAL", Align::Right),
                    ("PROCESSES", Align::Right),
                    ("LIMIT", Align::Right),
                    ("%LIMIT", Align::Right),
                ],
                &rows,
            ));
        }
    }
    out
}

fn percent(bytes: u64, limit: u64) -> String {
    if limit == 0 {
        return String::new();
    }
    format!("{:.1}", bytes as f64 * 100.0 / limit as f64)
}

/// CSV (RFC 4180), times as epoch seconds; text fields escaped as in a
/// terminal, then quoted.
pub(crate) fn render_csv(found: &Found) -> String {
    let mut out = String::new();
    match found {
        Found::Processes(list) => {
            out.push_str("time,pid,name,rss,anon,file,shmem,limit_bytes,event\n");
            for history in list {
                let p = &history.process;
                let name = csv_field(&p.name);
                let mut rows: Vec<(f64, String)> = history
                    .samples
                    .iter()
                    .map(|s| {
                        (
                            s.t,
                            format!(
                                "{:.3},{},{name},{},{},{},{},{},",
                                s.t, p.pid, s.rss, s.anon, s.file, s.shmem, p.limit_bytes
                            ),
                        )
                    })
                    .collect();
                rows.extend(history.actions.iter().map(|a| {
                    (
                        a.t,
                        format!(
                            "{:.3},{},{name},{},,,,{},{}",
                            a.t,
                            p.pid,
                            a.rss,
                            p.limit_bytes,
                            csv_field(&format!("{}: {}", a.action, a.result))
                        ),
                    )
                }));
                rows.sort_by(|a, b| a.0.total_cmp(&b.0));
                for (_, row) in rows {
                    out.push_str(&row);
                    out.push('\n');
                }
            }
        }
        Found::Limit(limit) => {
            out.push_str("time,rule,total,processes,limit_bytes\n");
            let rule = csv_field(&limit.rule);
            for s in &limit.samples {
                out.push_str(&format!(
                    "{:.3},{rule},{},{},{}\n",
                    s.t, s.bytes, s.processes, s.limit_bytes
                ));
            }
        }
    }
    out
}

/// One CSV field: escaped, and quoted when it needs to be.
fn csv_field(text: &str) -> String {
    let text = escape(text);
    if text.contains([',', '"']) || text.starts_with([' ', '=', '+', '-', '@']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// The chart of what was found: the newest process, or the limit's total.
pub(crate) fn chart_of(found: &Found) -> Chart {
    match found {
        Found::Processes(list) => {
            let Some(history) = list.first() else {
                return Chart {
                    title: String::new(),
                    points: Vec::new(),
                    limit: None,
                    marks: Vec::new(),
                };
            };
            let p = &history.process;
            let mut marks: Vec<Mark> = history
                .actions
                .iter()
                .map(|a| Mark {
                    t: a.t,
                    label: a.action.clone(),
                })
                .collect();
            marks.extend(p.exited.map(|t| Mark {
                t,
                label: "exit".into(),
            }));
            Chart {
                title: format!("{} (pid {}): resident memory", p.name, p.pid),
                points: history.samples.iter().map(|s| (s.t, s.rss)).collect(),
                limit: Some(p.limit_bytes).filter(|&l| l > 0),
                marks,
            }
        }
        Found::Limit(limit) => Chart {
            title: format!("limit {}: its processes together", limit.rule),
            points: limit.samples.iter().map(|s| (s.t, s.bytes)).collect(),
            limit: limit.samples.last().map(|s| s.limit_bytes),
            marks: Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found() -> Found {
        Found::Processes(vec![ProcessHistory {
            process: ProcessRow {
                id: 1,
                pid: 42,
                name: "evil\r\nname,\"x\"".into(),
                cmdline: "evil --flag\u{1b}[2J".into(),
                user: "root".into(),
                rule: "evil".into(),
                limit_bytes: 100 << 20,
                first_seen: 1e9,
                exited: Some(1e9 + 3.0),
            },
            samples: vec![
                Sample {
                    t: 1e9,
                    every: 1.0,
                    rss: 10 << 20,
                    anon: 9 << 20,
                    file: 1 << 20,
                    shmem: 0,
                },
                Sample {
                    t: 1e9 + 1.0,
                    every: 1.0,
                    rss: 50 << 20,
                    anon: 49 << 20,
                    file: 1 << 20,
                    shmem: 0,
                },
            ],
            actions: vec![ActionRow {
                t: 1e9 + 2.5,
                action: "SIGTERM".into(),
                result: "sent".into(),
                rss: 101 << 20,
            }],
        }])
    }

    #[test]
    fn the_table_interleaves_actions_and_escapes_names() {
        let text = render_table(&found());
        assert!(text.contains("evil\\r\\nname"), "{text}");
        assert!(!text.contains('\u{1b}') && !text.contains('\r'));
        let lines: Vec<&str> = text.lines().collect();
        let header = lines.iter().position(|l| l.starts_with("TIME")).unwrap();
        assert!(lines[header + 3].contains("SIGTERM: sent"), "{text}");
        assert!(lines[header + 3].contains("101.0"), "{text}");
    }

    #[test]
    fn csv_quotes_and_escapes_and_orders_by_time() {
        let text = render_csv(&found());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[1].starts_with("1000000000.000,42,\"evil\\r\\nname,\"\"x\"\"\",10485760,"),
            "{text}"
        );
        assert!(lines[3].ends_with(",SIGTERM: sent"), "{text}");
        assert_eq!(csv_field("=cmd()"), "\"=cmd()\"", "no formula injection");
    }

    #[test]
    fn json_has_the_process_its_samples_and_actions() {
        let json: serde_json::Value = serde_json::to_value(found()).unwrap();
        let process = &json["processes"][0];
        assert_eq!(process["pid"], 42);
        assert_eq!(process["samples"][1]["rss"], 50 << 20);
        assert_eq!(process["actions"][0]["action"], "SIGTERM");
        assert!(process.get("id").is_none());
    }

    #[test]
    fn the_chart_marks_the_actions_and_the_exit() {
        let chart = chart_of(&found());
        let labels: Vec<&str> = chart.marks.iter().map(|m| m.label.as_str()).collect();
        assert_eq!(labels, ["SIGTERM", "exit"]);
        assert_eq!(chart.limit, Some(100 << 20));
    }
}
