//! `procespy run`: the daemon's event loop.
//!
//! One task owns all state. It takes, in turn: kernel events, reads of
//! `/proc` that finished, completions of the guard's effects, control
//! requests, scrapes and signals. Everything that reads `/proc` runs on
//! tokio's blocking pool (examinations, the read of an exec'd process, the
//! confirming read before a signal), so the loop never waits on it.
//!
//! The data flows one way: kernel events and examinations go into the
//! [`Table`]; the [`Guard`] matches and decides; its system acts; actions
//! go to the alerts and the metrics; [`StatusReport`]s are built from the
//! same state for `status` and `/metrics`.

mod backend;
mod recording;

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context;
use procespy_common::EventKind;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
    task::JoinHandle,
};

use crate::{
    alerts::{Alerts, story::Story},
    config::{Config, ConfigError, DEFAULT_CONFIG, Mode},
    control::{self, Incoming, Reply, Request},
    ebpf::{Kernel, events::KernelEvent},
    guard::{Completion, Guard, Real},
    history::recent::{Reading, Recent},
    metrics::{self, ActionCounts, MetricsRequest},
    process::ProcInfo,
    report::{REPORTED_ACTIONS, RecentReport, StatusReport},
    scan::{self, Examination, ReadError},
    sys::{Pidfd, systemd},
    table::{Change, Entry, Table},
};
use backend::Backend;
use recording::Recording;

/// How long stopping may wait for the alert queue to reach the spool.
const ALERTS_FLUSH: Duration = Duration::from_secs(5);

/// How often the kernel's count of lost events is looked at.
const LOSS_CHECK: Duration = Duration::from_millis(500);

/// How often the covered processes' RSS is sampled for the history.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// What `procespy run` was asked for.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    /// `-c PATH`; `None`: `/etc/procespy.toml`, or the built-in default
    /// when that does not exist.
    pub(crate) config: Option<PathBuf>,
    /// Decide and alert, never signal.
    pub(crate) dry_run: bool,
    /// Overrides `[monitor] mode`.
    pub(crate) mode: Option<Mode>,
    /// The control socket.
    pub(crate) socket: PathBuf,
}

/// Runs the daemon until SIGTERM or SIGINT. An unusable configuration is
/// a [`ConfigError`].
pub(crate) fn run(options: Options) -> anyhow::Result<()> {
    let (config, config_path) = load_config(options.config.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let mut daemon = Daemon::start(config, config_path, &options)?;
        daemon.run().await
    })
}

/// Reads the configuration: `-c PATH` must exist; without `-c`, a missing
/// `/etc/procespy.toml` means the built-in default.
fn load_config(path: Option<&Path>) -> Result<(Config, Option<PathBuf>), ConfigError> {
    let (path, explicit) = match path {
        Some(path) => (path.to_owned(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    if !explicit && !path.exists() {
        tracing::info!(
            "{} does not exist: running on the built-in default (watch only, desktop popups on)",
            path.display()
        );
        return Ok((Config::builtin_default(), None));
    }
    let config = Config::load(&path)?;
    tracing::info!(
        "configuration {} loaded: {} limits",
        path.display(),
        config.limits.len()
    );
    Ok((config, Some(path)))
}

/// A covered process that exited, as the table and the guard knew it.
struct Departed {
    pid: u32,
    /// When it exited (epoch seconds).
    at: f64,
    cmdline: String,
    cgroup: Option<String>,
}

/// How the daemon learnt that a process is gone.
#[derive(Clone, Copy)]
enum Gone {
    /// Its exit event, made in the kernel at `ktime_ns`.
    Exit { ktime_ns: u64 },
    /// An examination no longer found it in `/proc`: its exit event was
    /// still on its way (or lost, or there are no events).
    Examination,
}

/// The most departed processes kept.
const DEPARTED_KEPT: usize = 64;
/// How long after an action's decision its process's exit may come, in
/// seconds, for what was known of it to go with the action.
const DEPARTED_FOR: f64 = 10.0;

/// Reads of `/proc` made on the blocking pool for processes that just ran
/// exec: each with the pid, the table's count of its execs when it was
/// asked for, and a handle opened before the read.
struct Reads {
    /// When the reads began.
    started: Instant,
    reads: Vec<(u32, u32, Read)>,
}

/// One process's read, with the handle opened before it.
type Read = Result<(ProcInfo, Option<Pidfd>), ReadError>;

/// Where a reload's outcome goes: the control clients that asked for it.
type ReloadWaiter = tokio::sync::oneshot::Sender<Result<Reply, String>>;

/// A reload of the configuration, read and validated on the blocking pool
/// so that a slow or huge file never holds up the loop.
#[derive(Default)]
struct Reloading {
    /// A load is running.
    running: bool,
    /// Asked for again while it ran: its result may be older than the file.
    again: bool,
    /// Who waits for the answer.
    waiting: Vec<ReloadWaiter>,
}

/// The daemon's state, owned by its event loop.
struct Daemon {
    guard: Guard<Real>,
    completions: mpsc::UnboundedReceiver<Completion<Pidfd>>,
    reads_tx: mpsc::UnboundedSender<Reads>,
    reads_rx: mpsc::UnboundedReceiver<Reads>,
    config_path: Option<PathBuf>,
    socket: PathBuf,
    backend: Backend,
    table: Table,
    started: Instant,
    control_rx: mpsc::Receiver<Incoming>,
    examinations: u64,
    last_examination: Option<Duration>,
    alerts: Alerts,
    metrics_rx: Option<mpsc::Receiver<MetricsRequest>>,
    action_counts: ActionCounts,
    reloading: Reloading,
    recent: Recent,
    /// What the table and the guard knew of covered processes that exited
    /// lately, and when: for the alerts of actions recorded after the exit.
    departed: VecDeque<Departed>,
    recording: Recording,
    loaded_tx: mpsc::UnboundedSender<Result<Config, ConfigError>>,
    loaded_rx: mpsc::UnboundedReceiver<Result<Config, ConfigError>>,
}

impl Daemon {
    fn start(
        config: Config,
        config_path: Option<PathBuf>,
        options: &Options,
    ) -> anyhow::Result<Self> {
        let scan_interval = config.monitor.scan_interval;
        let backend = Backend::start(options.mode.unwrap_or(config.monitor.mode))?;
        match &backend {
            Backend::Ebpf { .. } => tracing::info!(mode = "ebpf", "following processes with eBPF"),
            Backend::Proc { reason } => {
                tracing::info!(
                    mode = "proc",
                    "polling /proc every {scan_interval:?} ({reason})"
                )
            }
        }
        crate::sys::raise_fd_limit();
        let listener = control::bind(&options.socket)?;
        let (tx, control_rx) = mpsc::channel(16);
        tokio::spawn(control::serve(listener, tx));
        tracing::info!("control socket: {}", options.socket.display());
        let metrics_rx = match &config.metrics {
            Some(settings) => {
                let listener = metrics::bind(settings.listen)?;
                let (tx, rx) = mpsc::channel(4);
                tokio::spawn(metrics::serve(listener, tx));
                tracing::info!("metrics: http://{}/metrics", settings.listen);
                Some(rx)
            }
            None => None,
        };
        let (done, completions) = mpsc::unbounded_channel();
        let (reads_tx, reads_rx) = mpsc::unbounded_channel();
        let (loaded_tx, loaded_rx) = mpsc::unbounded_channel();
        let alerts = Alerts::start(&config.notify);
        let recording = Recording::start(&config.history);
        Ok(Self {
            guard: Guard::new(Real::new(done), config, options.dry_run),
            completions,
            reads_tx,
            reads_rx,
            config_path,
            socket: options.socket.clone(),
            backend,
            table: Table::new(),
            started: Instant::now(),
            control_rx,
            examinations: 0,
            last_examination: None,
            alerts,
            metrics_rx,
            action_counts: ActionCounts::default(),
            reloading: Reloading::default(),
            recent: Recent::default(),
            departed: VecDeque::with_capacity(DEPARTED_KEPT),
            recording,
            loaded_tx,
            loaded_rx,
        })
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        let mut sigterm = signal(SignalKind::terminate()).context("handling SIGTERM")?;
        let mut sigint = signal(SignalKind::interrupt()).context("handling SIGINT")?;
        let mut sighup = signal(SignalKind::hangup()).context("handling SIGHUP")?;
        let mut scan_timer = tokio::time::interval(self.guard.config().monitor.scan_interval);
        scan_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut scan: Option<JoinHandle<std::io::Result<Examination>>> = None;
        // Lost kernel events are healed by an examination at once.
        let mut loss_check = tokio::time::interval(LOSS_CHECK);
        let mut lost_seen = 0;
        let mut batch = Vec::with_capacity(256);
        // Samples fall mid-second (the history's finest buckets are whole
        // seconds), on a schedule that does not drift.
        let to_mid_second = (1.5 - crate::sys::epoch_secs().fract()) % 1.0;
        let mut sample_timer = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs_f64(to_mid_second),
            SAMPLE_EVERY,
        );
        sample_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        systemd::ready(&format!("following processes ({})", self.backend.mode()));
        loop {
            tokio::select! {
                result = self.backend.next_events(&mut batch) => {
                    result.context("reading kernel events")?;
                    self.on_events(&mut batch);
                }
                Some(reads) = self.reads_rx.recv() => self.on_reads(reads),
                Some(completion) = self.completions.recv() => {
                    self.guard.complete(completion, &self.table, self.backend.watch());
                    self.after_actions();
                }
                _ = scan_timer.tick(), if scan.is_none() => {
                    scan = Some(self.start_examination());
                }
                _ = loss_check.tick(), if scan.is_none() => {
                    let lost = self.backend.kernel().map_or(0, Kernel::lost_events);
                    if lost > lost_seen {
                        tracing::warn!(
                            lost = lost - lost_seen,
                            "the ring buffer was full and kernel events were lost: examining /proc now"
                        );
                        lost_seen = lost;
                        scan = Some(self.full_examination());
                    }
                }
                exam = async { scan.as_mut().expect("guarded").await }, if scan.is_some() => {
                    scan = None;
                    match exam {
                        Ok(Ok(exam)) => {
                            // What the kernel told before now comes first: a
                            // breach met before the merge, which may find its
                            // process gone and its PID reused, is decided for
                            // that process; an exit is logged as one.
                            self.backend.pending_events(&mut batch);
                            self.on_events(&mut batch);
                            self.on_examination(&exam);
                        }
                        Ok(Err(err)) => tracing::error!(
                            "cannot list /proc: {err}; the table stays as it was until the next examination"
                        ),
                        Err(err) => tracing::error!("the /proc examination failed: {err}"),
                    }
                }
                Some(incoming) = self.control_rx.recv() => self.on_request(incoming),
                _ = sample_timer.tick() => self.sample(),
                Some(request) = next_metrics_request(&mut self.metrics_rx) => {
                    let _ = request.reply.send(metrics::render(&self.metrics_snapshot()));
                }
                _ = sighup.recv() => self.reload(None),
                Some(loaded) = self.loaded_rx.recv() => self.on_loaded(loaded),
                _ = sigterm.recv() => break,
                _ = sigint.recv() => break,
            }
        }
        systemd::stopping();
        self.after_actions();
        self.alerts.shutdown(ALERTS_FLUSH).await;
        self.recording.stop().await;
        match self.backend.mode() {
            Mode::Ebpf => tracing::info!("stopping: detaching the eBPF programs"),
            _ => tracing::info!("stopping"),
        }
        let _ = std::fs::remove_file(&self.socket);
        Ok(())
    }

    /// Starts the scheduled examination on the blocking pool. With eBPF,
    /// events keep known processes current: only processes the table does
    /// not know, or knows only by name, are read (a full examination
    /// follows lost events instead).
    ///
    /// With eBPF, the covered processes' resident memory is read afresh
    /// too: the safety net under the kernel's crossings.
    fn start_examination(&self) -> JoinHandle<std::io::Result<Examination>> {
        match self.backend {
            Backend::Ebpf { .. } if self.examinations > 0 => {
                let known = self.table.known_pids();
                let covered = self.guard.covered_pids();
                tokio::task::spawn_blocking(move || {
                    scan::examine_unknown(&known).map(|exam| exam.with_resident(&covered))
                })
            }
            Backend::Ebpf { .. } => self.full_examination(),
            Backend::Proc { .. } => tokio::task::spawn_blocking(scan::examine),
        }
    }

    /// Starts a full examination on the blocking pool, with fresh reads of
    /// the covered processes' resident memory.
    fn full_examination(&self) -> JoinHandle<std::io::Result<Examination>> {
        let covered = self.guard.covered_pids();
        tokio::task::spawn_blocking(move || {
            scan::examine().map(|exam| exam.with_resident(&covered))
        })
    }

    /// Applies a batch of kernel events, in order, and empties it.
    fn on_events(&mut self, batch: &mut Vec<KernelEvent>) {
        if batch.is_empty() {
            return;
        }
        let mut to_read = Vec::new();
        for event in batch.drain(..) {
            self.on_event(&event, &mut to_read);
        }
        // A process whose exit came in the same batch (a short one, in a
        // storm) costs no read, a fork and its exec one.
        to_read.sort_unstable();
        to_read.dedup();
        to_read.retain(|&pid| self.table.get(pid).is_some());
        self.read_on_pool(to_read);
        self.after_actions();
    }

    /// Applies one kernel event; processes that need a read of `/proc`
    /// before they can be matched are added to `to_read`.
    fn on_event(&mut self, event: &KernelEvent, to_read: &mut Vec<u32>) {
        match event.kind {
            EventKind::Breach => {
                if event.foreign {
                    tracing::debug!(
                        pid = event.pid,
                        writer = %crate::text::escape_bytes(&event.comm),
                        "breach caused from another process's context: signalled from here"
                    );
                }
                self.guard.on_kernel_breach(
                    event.pid,
                    event.rss_bytes,
                    event.killed,
                    event.ktime_ns,
                    &self.table,
                );
                return;
            }
            EventKind::Usage => {
                self.guard.on_usage(event.pid, event.rss_bytes, &self.table);
                return;
            }
            EventKind::Warning => {
                self.guard
                    .on_warning(event.pid, event.rss_bytes, &self.table);
                return;
            }
            EventKind::Exit => {
                // What was decided about it goes out while the table and
                // the guard still know its command line and cgroup.
                self.after_actions();
                if let Some(entry) = self.table.exit(event.pid, Instant::now()) {
                    self.departed(
                        &entry,
                        Gone::Exit {
                            ktime_ns: event.ktime_ns,
                        },
                    );
                }
                return;
            }
            _ => {}
        }
        let change = self.table.apply_event(event, Instant::now());
        let name = crate::text::escape_bytes(
            self.table
                .get(event.pid)
                .map_or(&event.comm[..], |entry| &entry.comm[..]),
        );
        match change {
            Change::Added(pid) | Change::Replaced(pid) => {
                if event.kind == EventKind::Exec {
                    tracing::debug!(event = "exec", pid, name = %name, "exec");
                } else {
                    tracing::debug!(event = "fork", pid, ppid = event.ppid, name = %name, "fork");
                }
                // Matching needs the executable, command line and user:
                // read them on the pool. Without limits the next
                // examination fills them in, and a short-lived process
                // costs no read at all.
                let needs_read = self.table.get(pid).is_some_and(|entry| !entry.detailed);
                if needs_read && !self.guard.config().limits.is_empty() {
                    to_read.push(pid);
                } else {
                    // After exec the kernel dropped the old limit: apply anew.
                    let force =
                        matches!(change, Change::Replaced(_)) || event.kind == EventKind::Exec;
                    self.guard
                        .rematch(pid, &self.table, self.backend.watch(), force, None);
                }
            }
            Change::Renamed(pid) => {
                tracing::debug!(event = "rename", pid, name = %name, "rename");
                self.guard
                    .rematch(pid, &self.table, self.backend.watch(), false, None);
            }
            Change::Removed(_) | Change::None => {}
        }
    }

    /// Reads `pids` on the blocking pool; the results come back as [`Reads`].
    fn read_on_pool(&self, pids: Vec<u32>) {
        if pids.is_empty() {
            return;
        }
        let asked: Vec<(u32, u32)> = pids
            .into_iter()
            .map(|pid| (pid, self.table.get(pid).map_or(0, |entry| entry.execs)))
            .collect();
        let tx = self.reads_tx.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let reads = asked
                .into_iter()
                .map(|(pid, execs)| (pid, execs, scan::read_with_handle(pid)))
                .collect();
            let _ = tx.send(Reads { started, reads });
        });
    }

    /// Reads of exec'd processes are back: match them, with their handles.
    fn on_reads(&mut self, Reads { started, reads }: Reads) {
        for (pid, execs, read) in reads {
            // A read asked for before an exec that came since (a fork's,
            // finishing after the exec's own) would match the old image.
            if self
                .table
                .get(pid)
                .is_some_and(|entry| entry.execs != execs)
            {
                continue;
            }
            match read {
                Ok((info, handle)) => {
                    self.table.absorb(&info, started);
                    self.guard
                        .rematch(pid, &self.table, self.backend.watch(), true, handle);
                }
                Err(err) => tracing::debug!("{err}"),
            }
        }
        self.after_actions();
    }

    fn on_examination(&mut self, exam: &Examination) {
        self.after_actions();
        let merge = self.table.merge(exam);
        self.examinations += 1;
        self.last_examination = Some(exam.started.elapsed());
        for entry in &merge.removed {
            self.departed(entry, Gone::Examination);
        }
        for &pid in &merge.reused {
            self.guard.forget(pid, self.backend.watch());
        }
        // Match again what was read: every process in a full examination;
        // in a partial one, what the table did not know (events rematch the rest).
        for info in &exam.procs {
            self.guard
                .rematch(info.pid, &self.table, self.backend.watch(), false, None);
        }
        self.guard
            .after_examination(&self.table, &exam.resident, self.backend.watch());
        self.after_actions();
        self.recording.examined(exam, crate::sys::epoch_secs());
        tracing::trace!(
            processes = self.table.len(),
            added = merge.added.len(),
            removed = merge.removed.len(),
            "examination merged"
        );
    }

    /// Samples the covered processes' RSS (the kernel's figures in eBPF
    /// mode: a read of mapped memory, no `/proc`).
    fn sample(&mut self) {
        let now = crate::sys::epoch_secs();
        let watched = self.guard.watched(&self.table, self.backend.watch_ref());
        let kept = self.recent.record(
            now,
            watched.iter().map(|p| Reading {
                pid: p.pid,
                name: &p.name,
                rule: &p.rule,
                limit_bytes: p.limit_bytes,
                rss: p.rss_bytes,
            }),
        );
        self.recording.sample(now, &watched, &kept, &self.table);
        self.recording.flush();
    }

    /// Hands the actions just recorded on to the alerts and the metrics.
    fn after_actions(&mut self) {
        let actions = self.guard.take_new_actions();
        for action in &actions {
            self.action_counts.count(action);
        }
        self.recording
            .actions(&actions, &mut self.recent, &self.table);
        if actions.is_empty() {
            return;
        }
        let now = crate::sys::epoch_secs();
        let (recent, table, guard) = (&self.recent, &self.table, &self.guard);
        let departed = &self.departed;
        self.alerts.submit(actions, |record| {
            // An action recorded after its process exited (its SIGTERM
            // ended it at once) finds it among the departed.
            let gone = departed.iter().rev().find(|d| {
                d.pid == record.pid && (0.0..DEPARTED_FOR).contains(&(d.at - record.time))
            });
            Story {
                series: recent
                    .series(record.pid, now, crate::alerts::story::WINDOW)
                    .map(|s| s.points)
                    .unwrap_or_default(),
                cmdline: table.get(record.pid).map_or_else(
                    || gone.map(|d| d.cmdline.clone()).unwrap_or_default(),
                    |e| String::from_utf8_lossy(&e.cmdline).into_owned(),
                ),
                cgroup: guard
                    .cgroup(record.pid)
                    .map(str::to_owned)
                    .or_else(|| gone.and_then(|d| d.cgroup.clone())),
                exited: gone.map(|d| d.at),
            }
        });
    }

    /// `entry`'s process is gone, as `gone` tells: logged, and forgotten
    /// by the history, the alerts and the guard alike, however the daemon
    /// learnt of it.
    fn departed(&mut self, entry: &Entry, gone: Gone) {
        let pid = entry.pid;
        let name = crate::text::escape_bytes(&entry.comm);
        match gone {
            Gone::Exit { ktime_ns } => {
                tracing::debug!(event = "exit", pid, name = %name, ktime_ns, "exit");
            }
            Gone::Examination => tracing::debug!(
                event = "exit",
                pid,
                name = %name,
                seen_by = "examination",
                "exit, found by an examination"
            ),
        }
        self.keep_departed(entry);
        let now = crate::sys::epoch_secs();
        self.recent.gone(pid, now);
        self.recording.exited(pid, now);
        self.alerts.exited(pid, now);
        self.guard.exited(pid, self.backend.watch());
    }

    /// Keeps what is known of `entry`'s process, a covered process exiting
    /// now, for actions recorded after its exit.
    fn keep_departed(&mut self, entry: &Entry) {
        if !self.guard.follows(entry.pid) {
            return;
        }
        if self.departed.len() == DEPARTED_KEPT {
            self.departed.pop_front();
        }
        self.departed.push_back(Departed {
            pid: entry.pid,
            at: crate::sys::epoch_secs(),
            cmdline: String::from_utf8_lossy(&entry.cmdline).into_owned(),
            cgroup: self.guard.cgroup(entry.pid).map(str::to_owned),
        });
    }

    fn on_request(&mut self, incoming: Incoming) {
        match incoming.request {
            Request::Status => {
                let _ = incoming
                    .reply
                    .send(Ok(Reply::Status(Box::new(self.report()))));
            }
            Request::Reload => self.reload(Some(incoming.reply)),
            Request::Recent { seconds } => {
                let series = self
                    .recent
                    .all(crate::sys::epoch_secs(), f64::from(seconds));
                let _ = incoming
                    .reply
                    .send(Ok(Reply::Recent(RecentReport { series })));
            }
        }
    }

    /// Starts re-reading the configuration on the blocking pool (SIGHUP, or
    /// a control client who then waits for the answer). Asked for while a
    /// load runs, it is read once more after that one.
    fn reload(&mut self, waiter: Option<ReloadWaiter>) {
        let Some(path) = self.config_path.clone() else {
            let message = "running on the built-in default: there is no file to reload".to_owned();
            tracing::warn!("{message}");
            if let Some(waiter) = waiter {
                let _ = waiter.send(Err(message));
            }
            return;
        };
        self.reloading.waiting.extend(waiter);
        if self.reloading.running {
            self.reloading.again = true;
            return;
        }
        systemd::reloading();
        self.reloading.running = true;
        let done = self.loaded_tx.clone();
        tokio::task::spawn_blocking(move || {
            let _ = done.send(Config::load(&path));
        });
    }

    /// A reload's read is done: put the new configuration in force, or keep
    /// the old one if it does not validate.
    fn on_loaded(&mut self, loaded: Result<Config, ConfigError>) {
        self.reloading.running = false;
        if std::mem::take(&mut self.reloading.again) {
            self.reload(None);
            return;
        }
        let result = self.apply_loaded(loaded);
        systemd::ready("following processes");
        for waiter in self.reloading.waiting.drain(..) {
            let reply = result.clone().map(|message| Reply::Reloaded { message });
            let _ = waiter.send(reply);
        }
    }

    fn apply_loaded(&mut self, loaded: Result<Config, ConfigError>) -> Result<String, String> {
        let path = self.config_path.clone().unwrap_or_default();
        match loaded {
            Ok(config) => {
                let message = format!(
                    "configuration {} reloaded: {} limits",
                    path.display(),
                    config.limits.len()
                );
                tracing::info!("{message}");
                self.alerts.reconfigure(&config.notify);
                self.recording.reconfigure(&config.history);
                self.guard
                    .replace_config(config, &self.table, self.backend.watch());
                self.after_actions();
                Ok(message)
            }
            Err(err) => {
                let message =
                    format!("reload refused, the old configuration stays in force:\n{err}");
                tracing::error!("{message}");
                Err(message)
            }
        }
    }

    /// What the daemon is doing, for `status` and `/metrics`.
    fn report(&self) -> StatusReport {
        let kernel = self.backend.kernel();
        StatusReport {
            pid: std::process::id(),
            mode: self.backend.mode(),
            mode_reason: self.backend.reason(),
            kernel: kernel.map(|k| k.info().clone()),
            uptime_secs: self.started.elapsed().as_secs_f64(),
            config: self.config_path.as_ref().map(|p| p.display().to_string()),
            limits: self.guard.config().limits.len(),
            table_size: self.table.len(),
            examinations: self.examinations,
            last_examination_ms: self.last_examination.map(|d| d.as_secs_f64() * 1000.0),
            lost_events: kernel.map(Kernel::lost_events),
            processes: self.guard.watched(&self.table, self.backend.watch_ref()),
            unfollowed: self.guard.unfollowed(),
            actions: self.guard.recent_actions(REPORTED_ACTIONS),
            alerts_queued: self.alerts.queued(),
        }
    }

    fn metrics_snapshot(&self) -> metrics::Snapshot {
        let config = self.guard.config();
        let email = &config.notify.email;
        metrics::Snapshot {
            report: self.report(),
            dry_run: self.guard.dry_run(),
            limits: config
                .limits
                .iter()
                .map(|l| (l.label.clone(), l.max_memory))
                .collect(),
            actions: self.action_counts.clone(),
            alerts: self.alerts.counts(),
            spool: email
                .enabled
                .then(|| metrics::spool_usage(&email.spool_dir)),
            programs: self
                .backend
                .kernel()
                .map(Kernel::program_stats)
                .unwrap_or_default(),
            history: self.recording.figures(),
        }
    }
}

/// The next scrape of `/metrics`; never ready without `[metrics]`.
async fn next_metrics_request(
    rx: &mut Option<mpsc::Receiver<MetricsRequest>>,
) -> Option<MetricsRequest> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
