//! `procespy run`: the daemon's event loop.
//!
//! One task owns all state. It takes, in turn: kernel events, finished `/proc`
//! examinations, control requests and signals. Examinations run on tokio's
//! blocking pool so that reading `/proc` never holds up kernel events.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow};
use procespy_common::EventKind;
use serde_json::Value;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
    task::JoinHandle,
};

use crate::{
    alerts::Alerts,
    app::Failure,
    cli::{DEFAULT_CONFIG, ModeArg, RunArgs},
    config::{Config, Mode},
    control::{self, Incoming, Request},
    ebpf::{self, EventStream, Kernel, events::KernelEvent},
    guard::{Deferred, Guard},
    metrics::{self, ActionCounts, MetricsRequest},
    scan::{self, Examination},
    status, systemd,
    table::{Change, Table},
};

/// How long stopping may wait for the alert queue to reach the spool.
const ALERTS_FLUSH: Duration = Duration::from_secs(5);

/// How often the kernel's count of lost events is looked at.
const LOSS_CHECK: Duration = Duration::from_millis(500);

/// How the daemon follows processes, and why.
pub enum Backend {
    /// eBPF programs are attached.
    Ebpf {
        /// The programs and maps (boxed: they are large, and live as long as the daemon).
        kernel: Box<Kernel>,
        /// Their events.
        events: Box<EventStream>,
    },
    /// `/proc` is polled at the scan interval.
    Proc {
        /// Why eBPF is not in use.
        reason: String,
    },
}

impl Backend {
    /// The kernel side, in eBPF mode.
    pub fn kernel_mut(&mut self) -> Option<&mut Kernel> {
        match self {
            Backend::Ebpf { kernel, .. } => Some(kernel.as_mut()),
            Backend::Proc { .. } => None,
        }
    }

    /// The kernel side, in eBPF mode.
    pub fn kernel(&self) -> Option<&Kernel> {
        match self {
            Backend::Ebpf { kernel, .. } => Some(kernel.as_ref()),
            Backend::Proc { .. } => None,
        }
    }

    /// `"ebpf"` or `"proc"`.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Ebpf { .. } => "ebpf",
            Backend::Proc { .. } => "proc",
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(args: RunArgs) -> Result<(), Failure> {
    let (config, config_path) = load_config(args.config.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let mut daemon = Daemon::start(config, config_path, &args)?;
        daemon.run().await
    })
}

/// Reads the configuration: `-c PATH` must exist; without `-c`, a missing
/// `/etc/procespy.toml` means the built-in default.
fn load_config(path: Option<&Path>) -> Result<(Config, Option<PathBuf>), Failure> {
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
    let config = Config::load(&path).map_err(|err| Failure::Usage(err.to_string()))?;
    tracing::info!(
        "configuration {} loaded: {} limits",
        path.display(),
        config.limits.len()
    );
    Ok((config, Some(path)))
}

/// Chooses and starts the backend for `mode`.
fn start_backend(mode: Mode) -> Result<Backend, Failure> {
    match mode {
        Mode::Proc => Ok(Backend::Proc {
            reason: "mode = \"proc\" was asked for".into(),
        }),
        Mode::Ebpf => match ebpf::load() {
            Ok((kernel, events)) => Ok(Backend::Ebpf {
                kernel: Box::new(kernel),
                events: Box::new(events),
            }),
            Err(err) => Err(Failure::Runtime(anyhow!(
                "mode = \"ebpf\", but the eBPF programs cannot be loaded: {err:#}"
            ))),
        },
        Mode::Auto => match ebpf::load() {
            Ok((kernel, events)) => Ok(Backend::Ebpf {
                kernel: Box::new(kernel),
                events: Box::new(events),
            }),
            Err(err) => {
                let reason = format!("eBPF cannot be loaded: {err:#}");
                tracing::warn!("{reason}; polling /proc instead");
                Ok(Backend::Proc { reason })
            }
        },
    }
}

/// The daemon's state, owned by its event loop.
pub struct Daemon {
    guard: Guard,
    deferred_rx: mpsc::UnboundedReceiver<Deferred>,
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
}

impl Daemon {
    fn start(
        config: Config,
        config_path: Option<PathBuf>,
        args: &RunArgs,
    ) -> Result<Self, Failure> {
        let scan_interval = config.monitor.scan_interval;
        let mode = match args.mode {
            Some(ModeArg::Auto) => Mode::Auto,
            Some(ModeArg::Ebpf) => Mode::Ebpf,
            Some(ModeArg::Proc) => Mode::Proc,
            None => config.monitor.mode,
        };
        let backend = start_backend(mode)?;
        match &backend {
            Backend::Ebpf { .. } => tracing::info!(mode = "ebpf", "following processes with eBPF"),
            Backend::Proc { reason } => {
                tracing::info!(
                    mode = "proc",
                    "polling /proc every {scan_interval:?} ({reason})"
                )
            }
        }
        let listener = control::bind(&args.socket)?;
        let (tx, control_rx) = mpsc::channel(16);
        tokio::spawn(control::serve(listener, tx));
        tracing::info!("control socket: {}", args.socket.display());
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
        let (deferred_tx, deferred_rx) = mpsc::unbounded_channel();
        let alerts = Alerts::start(&config.notify);
        Ok(Self {
            guard: Guard::new(config, args.dry_run, deferred_tx),
            deferred_rx,
            config_path,
            socket: args.socket.clone(),
            backend,
            table: Table::new(),
            started: Instant::now(),
            control_rx,
            examinations: 0,
            last_examination: None,
            alerts,
            metrics_rx,
            action_counts: ActionCounts::default(),
        })
    }

    async fn run(&mut self) -> Result<(), Failure> {
        let mut sigterm = signal(SignalKind::terminate()).context("handling SIGTERM")?;
        let mut sigint = signal(SignalKind::interrupt()).context("handling SIGINT")?;
        let mut sighup = signal(SignalKind::hangup()).context("handling SIGHUP")?;
        let mut scan_timer = tokio::time::interval(self.guard.config().monitor.scan_interval);
        scan_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut scan: Option<JoinHandle<Examination>> = None;
        // Lost kernel events are healed by an examination at once.
        let mut loss_check = tokio::time::interval(LOSS_CHECK);
        let mut lost_seen = 0;
        let mut batch = Vec::with_capacity(256);
        systemd::notify_ready(&format!("following processes ({})", self.backend.name()));
        loop {
            tokio::select! {
                result = next_events(&mut self.backend, &mut batch) => {
                    result.context("reading kernel events")?;
                    for event in batch.drain(..) {
                        self.on_event(&event);
                    }
                }
                _ = scan_timer.tick(), if scan.is_none() => {
                    scan = Some(self.start_examination());
                }
                _ = loss_check.tick(), if scan.is_none() => {
                    let lost = self.backend.kernel_mut().map_or(0, |kernel| kernel.lost_events());
                    if lost > lost_seen {
                        tracing::warn!(
                            lost = lost - lost_seen,
                            "the ring buffer was full and kernel events were lost: examining /proc now"
                        );
                        lost_seen = lost;
                        scan = Some(tokio::task::spawn_blocking(scan::examine));
                    }
                }
                exam = async { scan.as_mut().expect("guarded").await }, if scan.is_some() => {
                    scan = None;
                    match exam {
                        Ok(exam) => self.on_examination(&exam),
                        Err(err) => tracing::error!("the /proc examination failed: {err}"),
                    }
                }
                Some(incoming) = self.control_rx.recv() => self.on_request(incoming),
                Some(deferred) = self.deferred_rx.recv() => {
                    self.guard.on_deferred(deferred, &self.table);
                    self.after_actions();
                }
                Some(request) = next_metrics_request(&mut self.metrics_rx) => {
                    let _ = request.reply.send(metrics::render(&self.metrics_snapshot()));
                }
                _ = sighup.recv() => {
                    let _ = self.reload();
                }
                _ = sigterm.recv() => break,
                _ = sigint.recv() => break,
            }
        }
        systemd::notify_stopping();
        self.alerts.shutdown(ALERTS_FLUSH).await;
        tracing::info!("stopping: detaching the eBPF programs");
        let _ = std::fs::remove_file(&self.socket);
        Ok(())
    }

    /// Starts the scheduled examination on the blocking pool. With eBPF,
    /// events keep known processes current: only processes the table does
    /// not know, or knows only by name, are read (a full examination
    /// follows lost events instead).
    fn start_examination(&self) -> JoinHandle<Examination> {
        match self.backend {
            Backend::Ebpf { .. } if self.examinations > 0 => {
                let known: std::collections::HashSet<u32> = self
                    .table
                    .entries()
                    .filter(|e| e.detailed)
                    .map(|e| e.pid)
                    .collect();
                tokio::task::spawn_blocking(move || scan::examine_unknown(&known))
            }
            _ => tokio::task::spawn_blocking(scan::examine),
        }
    }

    fn on_event(&mut self, event: &KernelEvent) {
        match event.kind {
            EventKind::Breach => {
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
            _ => {}
        }
        let change = self.table.apply_event(event, Instant::now());
        let name = String::from_utf8_lossy(&event.comm);
        match change {
            Change::Added(pid) | Change::Replaced(pid) => {
                if event.kind == EventKind::Exec {
                    tracing::debug!(event = "exec", pid, name = %name, "exec");
                } else {
                    tracing::debug!(event = "fork", pid, ppid = event.ppid, name = %name, "fork");
                }
                // Matching needs the executable, command line and user now;
                // without limits the next examination fills them in, and
                // a short-lived process costs no read at all.
                let needs_read = self.table.get(pid).is_some_and(|entry| !entry.detailed);
                if needs_read
                    && !self.guard.config().limits.is_empty()
                    && let Ok(info) = scan::read_process(pid)
                {
                    self.table.absorb(&info);
                }
                // After exec the kernel dropped the old limit: apply anew.
                let force = matches!(change, Change::Replaced(_)) || event.kind == EventKind::Exec;
                self.rematch(pid, force);
            }
            Change::Renamed(pid) => {
                tracing::debug!(event = "rename", pid, name = %name, "rename");
                self.rematch(pid, false);
            }
            Change::Removed(pid) => {
                tracing::debug!(event = "exit", pid, name = %name, "exit");
                self.guard.forget(pid, None);
            }
            Change::None => {}
        }
        self.after_actions();
    }

    fn rematch(&mut self, pid: u32, force: bool) {
        self.guard
            .rematch(pid, &self.table, self.backend.kernel_mut(), force);
    }

    fn on_examination(&mut self, exam: &Examination) {
        let merge = self.table.merge(exam);
        self.examinations += 1;
        self.last_examination = Some(exam.started.elapsed());
        for &pid in &merge.removed {
            self.guard.forget(pid, self.backend.kernel_mut());
        }
        for &pid in &merge.reused {
            self.guard.forget(pid, self.backend.kernel_mut());
        }
        // Match again what was read: every process in a full examination;
        // in a partial one, what the table did not know (events rematch the rest).
        for info in &exam.procs {
            self.rematch(info.pid, false);
        }
        self.guard
            .after_examination(&self.table, self.backend.kernel());
        self.after_actions();
        tracing::trace!(
            processes = self.table.len(),
            added = merge.added.len(),
            removed = merge.removed.len(),
            "examination merged"
        );
    }

    /// Hands the actions just recorded on to the alerts.
    fn after_actions(&mut self) {
        let actions = self.guard.take_new_actions();
        for action in &actions {
            self.action_counts.count(action);
        }
        if !actions.is_empty() {
            self.alerts.submit(actions);
        }
    }

    fn on_request(&mut self, incoming: Incoming) {
        let reply = match incoming.request {
            Request::Status => Ok(self.status()),
            Request::Reload => self
                .reload()
                .map(|message| serde_json::json!({ "message": message })),
        };
        let _ = incoming.reply.send(reply);
    }

    /// Re-reads the configuration; a config that does not validate is refused
    /// and the one in force stays.
    fn reload(&mut self) -> Result<String, String> {
        systemd::notify_reloading();
        let result = self.reload_config();
        systemd::notify_ready("following processes");
        result
    }

    fn reload_config(&mut self) -> Result<String, String> {
        let Some(path) = self.config_path.clone() else {
            let message = "running on the built-in default: there is no file to reload".to_owned();
            tracing::warn!("{message}");
            return Err(message);
        };
        match Config::load(&path) {
            Ok(config) => {
                let message = format!(
                    "configuration {} reloaded: {} limits",
                    path.display(),
                    config.limits.len()
                );
                tracing::info!("{message}");
                self.alerts.reconfigure(&config.notify);
                self.guard
                    .replace_config(config, &self.table, self.backend.kernel_mut());
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

    fn metrics_snapshot(&self) -> metrics::Snapshot {
        let kernel = self.backend.kernel();
        let config = self.guard.config();
        let email = &config.notify.email;
        metrics::Snapshot {
            mode: self.backend.name().into(),
            dry_run: self.guard.dry_run(),
            uptime: self.started.elapsed(),
            processes: self.table.len() as u64,
            limits: metrics::tally_limits(&config.limits, self.guard.covered(&self.table, kernel)),
            actions: self.action_counts.clone(),
            alerts: self.alerts.counts(),
            alerts_queued: self.alerts.queued() as u64,
            spool: email
                .enabled
                .then(|| metrics::spool_usage(&email.spool_dir)),
            lost_events: kernel.map(Kernel::lost_events),
            examinations: self.examinations,
            last_examination: self.last_examination,
        }
    }

    fn status(&self) -> Value {
        let kernel = self.backend.kernel();
        let reason = match &self.backend {
            Backend::Ebpf { .. } => "the eBPF programs are attached".to_owned(),
            Backend::Proc { reason } => reason.clone(),
        };
        status::build(&status::Inputs {
            mode: self.backend.name(),
            mode_reason: &reason,
            uptime: self.started.elapsed(),
            config_path: self.config_path.as_deref(),
            table: &self.table,
            kernel,
            guard: &self.guard,
            examinations: self.examinations,
            last_examination: self.last_examination,
            alerts_queued: self.alerts.queued(),
        })
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

/// Waits for the next batch of kernel events; never ready in proc mode.
async fn next_events(backend: &mut Backend, batch: &mut Vec<KernelEvent>) -> anyhow::Result<()> {
    match backend {
        Backend::Ebpf { events, .. } => events.next_batch(batch).await,
        Backend::Proc { .. } => std::future::pending().await,
    }
}
