//! What `procespy top` reads at each refresh: the machine's CPU and
//! memory, every process in `/proc`, and, when a daemon answers on its
//! control socket, the limits it enforces, its recent history and its last
//! actions. Without a daemon, the limits are the configuration's, as
//! `procespy ps` shows them.

use std::{collections::HashMap, path::PathBuf};

use anyhow::{Context as _, Result};

use super::{
    Options, TREND_COLUMNS,
    model::{DaemonSample, Sample},
};
use crate::{
    config::Limits,
    control,
    history::recent::WINDOW,
    scan::Scanner,
    sys::{CpuTimes, MemInfo},
    users::UserNames,
};

/// Reads one [`Sample`] after another.
pub(crate) struct Sampler {
    scanner: Scanner,
    users: UserNames,
    /// The configuration's limits, for when no daemon answers.
    limits: Limits,
    socket: PathBuf,
    /// The seconds of history asked of the daemon.
    history: u32,
    /// Whether each process's PSS is read (`--pss`).
    pss: bool,
}

impl Sampler {
    /// Opens `/proc` and reads the limits of `-c` (or of the default
    /// configuration, when it exists).
    pub(crate) fn new(opts: &Options) -> Result<Sampler> {
        let history = (opts.interval.as_secs_f64() * TREND_COLUMNS as f64).min(WINDOW);
        Ok(Sampler {
            scanner: Scanner::new().context("cannot open /proc")?,
            users: UserNames::default(),
            limits: crate::ps::load_limits(opts.config.as_deref())?,
            socket: opts.socket.clone(),
            history: history.ceil() as u32,
            pss: opts.pss,
        })
    }

    /// Reads the machine, `/proc` (with every process's `smaps_rollup` for
    /// `--pss`) and the daemon once.
    pub(crate) fn sample(&mut self) -> Result<Sample> {
        let cpu = CpuTimes::read();
        let mem = MemInfo::read();
        let procs = self.scanner.examine().context("cannot list /proc")?.procs;
        // After the examination, so that no process examined is younger.
        let uptime_ticks = crate::scan::uptime_ticks();
        let daemon = self.ask_daemon();
        let limits = match &daemon {
            Ok((_, limits)) => limits.clone(),
            Err(_) => procs
                .iter()
                .filter_map(|proc| Some((proc.pid, crate::ps::covering_limit(&self.limits, proc)?)))
                .collect(),
        };
        let pss = self.pss.then(|| {
            procs
                .iter()
                .filter(|proc| !proc.kernel_thread)
                .filter_map(|proc| Some((proc.pid, crate::scan::read_pss(proc.pid)?)))
                .collect()
        });
        let users = procs
            .iter()
            .map(|proc| (proc.uid, self.users.name(Some(proc.uid))))
            .collect();
        Ok(Sample {
            at: crate::sys::epoch_secs(),
            uptime_ticks,
            cpu,
            mem,
            procs,
            users,
            limits,
            pss,
            daemon: daemon.map(|(daemon, _)| daemon),
        })
    }

    /// What the daemon says, with the limit of each process it covers; or
    /// why it says nothing. A daemon that does not know the request for
    /// history still gives its limits and actions.
    fn ask_daemon(&self) -> Result<(DaemonSample, HashMap<u32, u64>), String> {
        let status = control::ask_status(&self.socket).map_err(|err| format!("{err:#}"))?;
        let series = control::ask_recent(&self.socket, self.history)
            .map(|recent| recent.series)
            .unwrap_or_default();
        let limits = status
            .processes
            .iter()
            .map(|proc| (proc.pid, proc.limit_bytes))
            .collect();
        let daemon = DaemonSample {
            pid: status.pid,
            mode: status.mode,
            actions: status.actions,
            series,
        };
        Ok((daemon, limits))
    }
}
