//! What `procespy top` shows, as plain data: each refresh's [`Sample`]
//! turned into `ps`'s rows with CPU% over the interval, the histories the
//! sparklines are drawn from, and the keys that sort, filter and quit. No
//! terminal here: [`super::view`] draws a [`Model`].
//!
//! - **CPU%** of a process is the CPU time it used since the last refresh
//!   over the time between the two reads, in clock ticks; a process the
//!   last refresh did not see (a new one, or every process on the first
//!   screen) is measured since its start.
//! - **The machine's CPU** is its busy share between the two reads of
//!   `/proc/stat` (since boot on the first screen); **memory used** is
//!   `MemTotal` − `MemAvailable`.
//! - **Trends** are drawn for the processes a limit covers: from the
//!   daemon's recent history when it has one for the process, else from
//!   top's own reads since it started.

use std::collections::{HashMap, VecDeque};

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::symbols::bar::NINE_LEVELS;

use crate::{
    config::Mode,
    history::recent::WINDOW,
    process::ProcInfo,
    ps::{self, Row},
    report::{ActionRecord, Point, RecentSeries},
    sys::{CpuTimes, MemInfo},
    text::{escape, human_size},
};

/// How many readings of the machine's CPU and memory are kept.
const KEPT: usize = 600;
/// The longest filter typed.
const MAX_FILTER: usize = 64;

/// What one refresh read.
#[derive(Clone, Debug)]
pub(crate) struct Sample {
    /// When, in seconds since the Unix epoch.
    pub(crate) at: f64,
    /// Clock ticks since boot, read after the processes.
    pub(crate) uptime_ticks: u64,
    /// The machine's CPU time.
    pub(crate) cpu: CpuTimes,
    /// The machine's memory.
    pub(crate) mem: MemInfo,
    /// Every process `/proc` listed.
    pub(crate) procs: Vec<ProcInfo>,
    /// The names of their users, by uid.
    pub(crate) users: HashMap<u32, String>,
    /// The limit covering each covered process, in bytes, by PID.
    pub(crate) limits: HashMap<u32, u64>,
    /// The PSS of each process whose PSS could be read, by PID, when PSS is
    /// shown (`--pss`).
    pub(crate) pss: Option<HashMap<u32, u64>>,
    /// What the daemon told, or why it told nothing.
    pub(crate) daemon: Result<DaemonSample, String>,
}

/// What the daemon adds to a refresh.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct DaemonSample {
    /// Its PID.
    pub(crate) pid: u32,
    /// How it follows processes.
    pub(crate) mode: Mode,
    /// Its last actions, newest first.
    pub(crate) actions: Vec<ActionRecord>,
    /// The covered processes' recent RSS.
    pub(crate) series: Vec<RecentSeries>,
}

/// The order of the process list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sort {
    /// Largest RSS first (`m`).
    Memory,
    /// Busiest first (`c`).
    Cpu,
}

/// What the loop does after a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Draw the screen again.
    Redraw,
    /// Give the terminal back and end.
    Quit,
}

/// Where the daemon's part of the screen comes from.
#[derive(Clone, Debug, PartialEq)]
enum Source {
    /// A daemon answered.
    Daemon { pid: u32, mode: Mode },
    /// None did, for this reason.
    ProcOnly(String),
}

/// Everything `top` shows, and how.
#[derive(Debug)]
pub(crate) struct Model {
    /// The refresh interval, in seconds: a trend's step.
    interval: f64,
    /// Show at most this many processes (`-n`).
    top: Option<usize>,
    sort: Sort,
    filter: String,
    /// Whether keys are typed into the filter.
    editing: bool,
    /// When the last sample was read (epoch seconds).
    now: f64,
    /// The processes of the last sample, largest RSS first.
    rows: Vec<Row>,
    /// CPU ticks of each process, by (PID, start time), at the last sample.
    last_ticks: HashMap<(u32, u64), u64>,
    /// Clock ticks since boot at the last sample.
    last_uptime: u64,
    last_cpu: Option<CpuTimes>,
    /// The machine's busy %, oldest first.
    cpu_busy: VecDeque<f64>,
    mem: MemInfo,
    /// The machine's memory used, in bytes, oldest first.
    mem_used: VecDeque<u64>,
    /// The covered processes' RSS as top read it, by PID.
    own: HashMap<u32, VecDeque<Point>>,
    /// The covered processes' RSS as the daemon recorded it, by PID.
    recorded: HashMap<u32, Vec<Point>>,
    actions: Vec<ActionRecord>,
    source: Source,
    /// Whether the rows have a PSS (`--pss`).
    pss: bool,
}

impl Model {
    /// An empty screen refreshed every `interval`, showing at most `top`
    /// processes.
    pub(crate) fn new(interval: std::time::Duration, top: Option<usize>) -> Model {
        Model {
            interval: interval.as_secs_f64(),
            top,
            sort: Sort::Memory,
            filter: String::new(),
            editing: false,
            now: 0.0,
            rows: Vec::new(),
            last_ticks: HashMap::new(),
            last_uptime: 0,
            last_cpu: None,
            cpu_busy: VecDeque::new(),
            mem: MemInfo::default(),
            mem_used: VecDeque::new(),
            own: HashMap::new(),
            recorded: HashMap::new(),
            actions: Vec::new(),
            source: Source::ProcOnly("not asked yet".to_owned()),
            pss: false,
        }
    }

    /// Takes in one refresh.
    pub(crate) fn update(&mut self, sample: Sample) {
        let user_name = |uid| sample.users.get(&uid).cloned();
        let pss_of = |pid: u32| sample.pss.as_ref()?.get(&pid).copied();
        let ctx = ps::Context {
            mem_total: sample.mem.total,
            uptime_ticks: sample.uptime_ticks,
            user_name: &user_name,
            pss_of: sample
                .pss
                .is_some()
                .then_some(&pss_of as &dyn Fn(u32) -> Option<u64>),
        };
        self.pss = sample.pss.is_some();
        let listed = ps::select(&sample.procs, &ps::Options::default());
        self.rows = listed
            .iter()
            .map(|proc| Row {
                cpu_percent: self.cpu_since_last(proc, sample.uptime_ticks),
                ..ps::row(proc, &ctx, sample.limits.get(&proc.pid).copied())
            })
            .collect();
        self.last_ticks = listed
            .iter()
            .map(|proc| ((proc.pid, proc.start_ticks), proc.cpu_ticks))
            .collect();
        self.last_uptime = sample.uptime_ticks;

        let before = self.last_cpu.unwrap_or_default();
        let busy = ps::percent(
            sample.cpu.busy.saturating_sub(before.busy),
            sample.cpu.total.saturating_sub(before.total),
        );
        self.last_cpu = Some(sample.cpu);
        push_kept(&mut self.cpu_busy, busy);
        self.mem = sample.mem;
        push_kept(
            &mut self.mem_used,
            sample.mem.total.saturating_sub(sample.mem.available),
        );

        self.now = sample.at;
        self.record_covered();
        match sample.daemon {
            Ok(daemon) => {
                self.source = Source::Daemon {
                    pid: daemon.pid,
                    mode: daemon.mode,
                };
                self.actions = daemon.actions;
                self.recorded = daemon
                    .series
                    .into_iter()
                    .map(|series| (series.pid, series.points))
                    .collect();
            }
            Err(reason) => {
                self.source = Source::ProcOnly(reason);
                self.actions.clear();
                self.recorded.clear();
            }
        }
    }

    /// The CPU% of `proc` since the last sample, or since its start when
    /// that sample did not see it.
    fn cpu_since_last(&self, proc: &ProcInfo, uptime_ticks: u64) -> f64 {
        let (ticks, since) = match self.last_ticks.get(&(proc.pid, proc.start_ticks)) {
            Some(&ticks) => (ticks, self.last_uptime),
            None => (0, proc.start_ticks),
        };
        ps::percent(
            proc.cpu_ticks.saturating_sub(ticks),
            uptime_ticks.saturating_sub(since),
        )
    }

    /// Adds the covered processes' RSS to top's own trends; forgets the
    /// processes no longer covered and the readings older than [`WINDOW`].
    fn record_covered(&mut self) {
        let now = self.now;
        let covered: HashMap<u32, u64> = self
            .rows
            .iter()
            .filter(|row| row.limit_bytes.is_some())
            .map(|row| (row.pid, row.rss_bytes))
            .collect();
        self.own.retain(|pid, _| covered.contains_key(pid));
        for (pid, rss) in covered {
            let points = self.own.entry(pid).or_default();
            points.push_back(Point { t: now, rss });
            while points.front().is_some_and(|p| now - p.t > WINDOW) {
                points.pop_front();
            }
        }
    }

    /// Acts on a key.
    pub(crate) fn key(&mut self, key: KeyEvent) -> Flow {
        if key.kind == KeyEventKind::Release {
            return Flow::Redraw;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) {
            return if key.code == KeyCode::Char('c') {
                Flow::Quit
            } else {
                Flow::Redraw
            };
        }
        if self.editing {
            match key.code {
                KeyCode::Enter => self.editing = false,
                KeyCode::Esc => {
                    self.editing = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) if self.filter.chars().count() < MAX_FILTER => {
                    self.filter.push(c);
                }
                _ => {}
            }
            return Flow::Redraw;
        }
        match key.code {
            KeyCode::Char('q') => return Flow::Quit,
            KeyCode::Char('m') => self.sort = Sort::Memory,
            KeyCode::Char('c') => self.sort = Sort::Cpu,
            KeyCode::Char('/') => self.editing = true,
            KeyCode::Esc => self.filter.clear(),
            _ => {}
        }
        Flow::Redraw
    }

    /// The processes to list: those matching the filter, in the chosen
    /// order (busiest first, equals by RSS; or largest first), at most
    /// `-n`.
    pub(crate) fn visible(&self) -> Vec<&Row> {
        let mut rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|row| matches_filter(row, &self.filter))
            .collect();
        if self.sort == Sort::Cpu {
            // Stable: equals stay largest first.
            rows.sort_by(|a, b| b.cpu_percent.total_cmp(&a.cpu_percent));
        }
        if let Some(top) = self.top {
            rows.truncate(top);
        }
        rows
    }

    /// How many processes the last sample listed.
    pub(crate) fn listed(&self) -> usize {
        self.rows.len()
    }

    /// Whether the rows show a PSS (`--pss`).
    pub(crate) fn pss(&self) -> bool {
        self.pss
    }

    /// The order of the list.
    pub(crate) fn sort(&self) -> Sort {
        self.sort
    }

    /// The filter typed, and whether it is being typed.
    pub(crate) fn filter(&self) -> (&str, bool) {
        (&self.filter, self.editing)
    }

    /// The machine's busy % now.
    pub(crate) fn cpu_now(&self) -> f64 {
        self.cpu_busy.back().copied().unwrap_or(0.0)
    }

    /// The machine's memory now.
    pub(crate) fn mem_now(&self) -> MemInfo {
        self.mem
    }

    /// The machine's busy % over the last `n` refreshes, in tenths of a
    /// percent (the sparkline's scale is 1000), oldest first; `None` before
    /// the first.
    pub(crate) fn cpu_history(&self, n: usize) -> Vec<Option<u64>> {
        let tenths: VecDeque<u64> = self
            .cpu_busy
            .iter()
            .map(|busy| (busy * 10.0).round() as u64)
            .collect();
        last(&tenths, n)
    }

    /// The machine's memory used over the last `n` refreshes, in bytes,
    /// oldest first; `None` before the first.
    pub(crate) fn mem_history(&self, n: usize) -> Vec<Option<u64>> {
        last(&self.mem_used, n)
    }

    /// The trend of a covered process, `columns` wide, for a table cell; an
    /// empty text for a process no limit covers.
    pub(crate) fn trend(&self, row: &Row, columns: usize) -> String {
        let Some(limit) = row.limit_bytes else {
            return String::new();
        };
        let own: Vec<Point>;
        let points = match self.recorded.get(&row.pid) {
            Some(points) => points.as_slice(),
            None => {
                own = self
                    .own
                    .get(&row.pid)
                    .map(|points| points.iter().copied().collect())
                    .unwrap_or_default();
                own.as_slice()
            }
        };
        let values = resample(points, self.now, self.interval, columns);
        let highest = values.iter().flatten().copied().max().unwrap_or(0);
        bars(&values, limit.max(highest))
    }

    /// The daemon's last actions, newest first.
    pub(crate) fn actions(&self) -> &[ActionRecord] {
        &self.actions
    }

    /// Where the limits, trends and actions come from, for the footer.
    pub(crate) fn source_line(&self) -> String {
        match &self.source {
            Source::Daemon { pid, mode } => {
                format!("daemon: pid {pid}, {mode} mode: limits, history and actions")
            }
            Source::ProcOnly(reason) => format!("no daemon: /proc only ({})", escape(reason)),
        }
    }

    /// Whether a daemon answered at the last refresh.
    pub(crate) fn has_daemon(&self) -> bool {
        matches!(self.source, Source::Daemon { .. })
    }
}

/// Appends `value`, dropping the oldest past [`KEPT`].
fn push_kept<T>(history: &mut VecDeque<T>, value: T) {
    if history.len() == KEPT {
        history.pop_front();
    }
    history.push_back(value);
}

/// The last `n` of `history`, oldest first, after as many `None` as it
/// lacks: the newest is always at the right.
fn last(history: &VecDeque<u64>, n: usize) -> Vec<Option<u64>> {
    let lacking = n.saturating_sub(history.len());
    std::iter::repeat_n(None, lacking)
        .chain(
            history
                .iter()
                .skip(history.len().saturating_sub(n))
                .copied()
                .map(Some),
        )
        .collect()
}

/// Whether the filter (case-insensitive) is part of the process's name or
/// of its executable's file name; an empty filter matches every process.
fn matches_filter(row: &Row, filter: &str) -> bool {
    if filter.is_empty() {
        return true;
    }
    let filter = filter.to_lowercase();
    let exe_name = row
        .exe
        .as_deref()
        .and_then(|exe| std::path::Path::new(exe).file_name())
        .map(|name| name.to_string_lossy());
    std::iter::once(row.name.as_str())
        .chain(exe_name.as_deref())
        .any(|name| name.to_lowercase().contains(&filter))
}

/// `points` (oldest first) as `columns` values, one for each `step`
/// seconds, the last for the step `now` is in: each the RSS of the last
/// point before its step ends; `None` before the first point. Steps are
/// fixed in time, so a point stays in its column from one screen to the
/// next.
pub(crate) fn resample(points: &[Point], now: f64, step: f64, columns: usize) -> Vec<Option<u64>> {
    let current = (now / step).floor();
    (0..columns)
        .map(|column| {
            let end = (current + 1.0 - (columns - 1 - column) as f64) * step;
            let taken = points.partition_point(|p| p.t < end);
            taken.checked_sub(1).map(|i| points[i].rss)
        })
        .collect()
}

/// `values` as a line of bars, full at `max`: a value present is at least
/// the lowest bar, one absent is blank.
pub(crate) fn bars(values: &[Option<u64>], max: u64) -> String {
    let levels = [
        NINE_LEVELS.empty,
        NINE_LEVELS.one_eighth,
        NINE_LEVELS.one_quarter,
        NINE_LEVELS.three_eighths,
        NINE_LEVELS.half,
        NINE_LEVELS.five_eighths,
        NINE_LEVELS.three_quarters,
        NINE_LEVELS.seven_eighths,
        NINE_LEVELS.full,
    ];
    values
        .iter()
        .map(|value| match value {
            None => levels[0],
            Some(value) => {
                let eighths = (u128::from(*value) * 8).div_ceil(u128::from(max.max(1)));
                levels[eighths.clamp(1, 8) as usize]
            }
        })
        .collect()
}

/// One action for the panel: when (`clock`), what, and the sizes.
pub(crate) fn action_line(record: &ActionRecord, clock: &str) -> String {
    format!(
        "{clock}  {}; RSS {}, limit {} ({})",
        record.summary(),
        human_size(record.rss),
        human_size(record.limit),
        escape(&record.rule),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{action::Outcome, process::Rss, sys::Signal};

    const MIB: u64 = 1 << 20;

    /// A process of `rss_mib` MiB that used `cpu_ticks` since its start at
    /// tick 0.
    pub(crate) fn proc(pid: u32, comm: &[u8], rss_mib: u64, cpu_ticks: u64) -> ProcInfo {
        ProcInfo {
            pid,
            ppid: 1,
            comm: comm.to_vec(),
            uid: 1000,
            rss: Rss {
                anon: rss_mib * MIB,
                ..Rss::default()
            },
            cpu_ticks,
            state: b'S',
            ..ProcInfo::default()
        }
    }

    /// A sample at `at` seconds (uptime 100 ticks a second) of `procs`, on
    /// a 1000 MiB machine with half of it available; `limits` by PID.
    pub(crate) fn sample(at: f64, procs: Vec<ProcInfo>, limits: &[(u32, u64)]) -> Sample {
        Sample {
            at,
            uptime_ticks: (at * 100.0) as u64,
            cpu: CpuTimes {
                total: (at * 200.0) as u64,
                busy: (at * 50.0) as u64,
            },
            mem: MemInfo {
                total: 1000 * MIB,
                available: 500 * MIB,
            },
            procs,
            users: HashMap::from([(1000, "alice".to_owned())]),
            limits: limits.iter().copied().collect(),
            pss: None,
            daemon: Err("no procespy daemon answers".to_owned()),
        }
    }

    pub(crate) fn model() -> Model {
        Model::new(Duration::from_secs(1), None)
    }

    /// A model that saw `grower` (PID 7, under a limit of `limit_mib`) at
    /// each of `steps` (second, RSS in MiB), beside `others`.
    pub(crate) fn growing(steps: &[(f64, u64)], limit_mib: u64, others: &[ProcInfo]) -> Model {
        let mut model = model();
        for &(at, rss) in steps {
            let mut procs = vec![proc(7, b"grower", rss, 0)];
            procs.extend_from_slice(others);
            model.update(sample(at, procs, &[(7, limit_mib * MIB)]));
        }
        model
    }

    fn pids(model: &Model) -> Vec<u32> {
        model.visible().iter().map(|row| row.pid).collect()
    }

    fn press(model: &mut Model, keys: &str) {
        for c in keys.chars() {
            model.key(KeyEvent::from(KeyCode::Char(c)));
        }
    }

    #[test]
    fn cpu_is_measured_over_the_interval_and_new_processes_since_their_start() {
        let mut model = model();
        // At 10 s: 500 ticks over a 1000-tick life.
        model.update(sample(10.0, vec![proc(1, b"busy", 10, 500)], &[]));
        assert_eq!(model.visible()[0].cpu_percent, 50.0);
        // At 12 s: 200 more ticks in 200: one full CPU. The newcomer
        // started at tick 1150 and used 25 ticks of its 50.
        let mut newcomer = proc(2, b"new", 5, 25);
        newcomer.start_ticks = 1150;
        model.update(sample(12.0, vec![proc(1, b"busy", 10, 700), newcomer], &[]));
        let cpu: Vec<f64> = model.visible().iter().map(|r| r.cpu_percent).collect();
        assert_eq!(cpu, [100.0, 50.0]);
        // The machine: 50 busy ticks of 200 each second, from boot on.
        assert_eq!(model.cpu_now(), 25.0);
        assert_eq!(model.cpu_history(3), [None, Some(250), Some(250)]);
        assert_eq!(model.mem_history(1), [Some(500 * MIB)]);
    }

    #[test]
    fn a_reused_pid_is_a_new_process() {
        let mut model = model();
        model.update(sample(10.0, vec![proc(1, b"old", 10, 900)], &[]));
        let mut reused = proc(1, b"new", 10, 10);
        reused.start_ticks = 1100;
        model.update(sample(12.0, vec![reused], &[]));
        assert_eq!(model.visible()[0].cpu_percent, 10.0);
    }

    #[test]
    fn sorted_by_memory_or_cpu_filtered_by_name_and_cut_to_n() {
        let mut model = Model::new(Duration::from_secs(1), Some(2));
        let mut tool = proc(4, b"tool", 1, 0);
        tool.exe = Some("/usr/bin/Long-Tool-Name".into());
        let procs = vec![
            proc(1, b"big", 300, 10),
            proc(2, b"spin", 5, 900),
            proc(3, b"mid", 50, 900),
            tool,
        ];
        model.update(sample(10.0, procs, &[]));
        assert_eq!(pids(&model), [1, 3]);
        press(&mut model, "c");
        assert_eq!(model.sort(), Sort::Cpu);
        // 3 and 2 are as busy: the larger first.
        assert_eq!(pids(&model), [3, 2]);
        press(&mut model, "/");
        assert_eq!(model.filter(), ("", true));
        press(&mut model, "sp");
        assert_eq!(pids(&model), [2]);
        // While typing, `c`, `m` and `q` are letters.
        press(&mut model, "q");
        assert_eq!(pids(&model), [] as [u32; 0]);
        model.key(KeyEvent::from(KeyCode::Backspace));
        model.key(KeyEvent::from(KeyCode::Enter));
        assert_eq!(model.filter(), ("sp", false));
        assert_eq!(pids(&model), [2]);
        // The executable's file name counts, in any case.
        press(&mut model, "/");
        model.key(KeyEvent::from(KeyCode::Backspace));
        model.key(KeyEvent::from(KeyCode::Backspace));
        press(&mut model, "TOOL-");
        assert_eq!(pids(&model), [4]);
        model.key(KeyEvent::from(KeyCode::Esc));
        assert_eq!(model.filter(), ("", false));
        assert_eq!(pids(&model), [3, 2]);
        press(&mut model, "m");
        assert_eq!(pids(&model), [1, 3]);
        assert_eq!(model.listed(), 4);
    }

    #[test]
    fn q_and_ctrl_c_quit_and_ctrl_c_quits_while_typing() {
        let mut model = model();
        assert_eq!(model.key(KeyEvent::from(KeyCode::Char('q'))), Flow::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(model.key(ctrl_c), Flow::Quit);
        press(&mut model, "/");
        assert_eq!(model.key(KeyEvent::from(KeyCode::Char('q'))), Flow::Redraw);
        assert_eq!(model.key(ctrl_c), Flow::Quit);
        assert_eq!(model.sort(), Sort::Memory, "c with Ctrl does not sort");
    }

    #[test]
    fn covered_processes_get_trends_from_top_own_reads() {
        let mut model = growing(
            &[(10.0, 64), (11.0, 128), (12.0, 256)],
            256,
            &[proc(8, b"free", 1, 0)],
        );
        let rows = model.visible();
        // Two eighths, four, eight, of the 256 MiB limit; blank before.
        assert_eq!(model.trend(rows[0], 5), "  ▂▄█");
        assert_eq!(model.trend(rows[1], 5), "", "not covered");
        // No longer covered: forgotten.
        model.update(sample(13.0, vec![proc(7, b"grower", 1, 0)], &[]));
        assert!(model.own.is_empty());
    }

    #[test]
    fn the_daemon_brings_history_actions_and_its_name_and_goes_without_them() {
        let mut model = model();
        let mut first = sample(100.0, vec![proc(7, b"grower", 100, 0)], &[(7, 100 * MIB)]);
        let action = ActionRecord {
            time: 95.0,
            pid: 6,
            name: "grower".into(),
            user: "alice".into(),
            rss: 120 * MIB,
            limit: 100 * MIB,
            rule: "grower".into(),
            outcome: Outcome::Sent {
                signal: Signal::Term,
            },
        };
        first.daemon = Ok(DaemonSample {
            pid: 42,
            mode: Mode::Ebpf,
            actions: vec![action.clone()],
            series: vec![RecentSeries {
                pid: 7,
                name: "grower".into(),
                rule: "grower".into(),
                limit_bytes: 100 * MIB,
                points: vec![
                    Point {
                        t: 40.0,
                        rss: 25 * MIB,
                    },
                    Point {
                        t: 98.0,
                        rss: 50 * MIB,
                    },
                    Point {
                        t: 99.5,
                        rss: 100 * MIB,
                    },
                ],
            }],
        });
        model.update(first);
        assert!(model.has_daemon());
        assert_eq!(model.trend(model.visible()[0], 4), "▂▄██");
        assert_eq!(model.actions(), std::slice::from_ref(&action));
        assert_eq!(
            model.source_line(),
            "daemon: pid 42, ebpf mode: limits, history and actions"
        );
        assert_eq!(
            action_line(&action, "10:02:13"),
            "10:02:13  SIGTERM grower (pid 6, user alice): sent; RSS 120 MiB, limit 100 MiB (grower)"
        );
        model.update(sample(101.0, vec![proc(7, b"grower", 100, 0)], &[]));
        assert!(!model.has_daemon() && model.actions().is_empty());
        assert_eq!(
            model.source_line(),
            "no daemon: /proc only (no procespy daemon answers)"
        );
    }

    #[test]
    fn resampling_holds_the_last_value_of_steps_fixed_in_time() {
        let point = |t, rss| Point { t, rss };
        let points = [point(1.2, 10), point(2.1, 20), point(4.4, 40)];
        let expected = [None, Some(10), Some(20), Some(20), Some(40)];
        assert_eq!(resample(&points, 4.5, 1.0, 5), expected);
        assert_eq!(resample(&points, 4.99, 1.0, 5), expected, "the same step");
        assert_eq!(
            resample(&points, 5.0, 1.0, 5),
            [Some(10), Some(20), Some(20), Some(40), Some(40)],
            "the next step: every value one column to the left"
        );
        assert_eq!(
            resample(&points, 4.0, 2.0, 3),
            [Some(10), Some(20), Some(40)]
        );
        assert_eq!(resample(&[], 4.0, 1.0, 2), [None, None]);
        assert!(resample(&points, 4.0, 1.0, 0).is_empty());
    }

    #[test]
    fn bars_scale_to_the_maximum_and_show_every_value_present() {
        let values = [None, Some(0), Some(1), Some(50), Some(100), Some(250)];
        assert_eq!(bars(&values, 100), " ▁▁▄██");
        assert_eq!(bars(&[Some(u64::MAX)], u64::MAX), "█");
        assert_eq!(bars(&[Some(5)], 0), "█");
    }
}
