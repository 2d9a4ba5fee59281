//! What procespy remembers.
//!
//! - [`recent`]: the covered processes' RSS over the last minutes, in the
//!   daemon's memory, for `top` and for the story an alert tells;
//! - [`store`]: the history on disk, an SQLite database in tiers (every
//!   second for minutes, every 10 s for hours, every minute for days), that
//!   survives restarts and that operators can query with `sqlite3`;
//! - [`recorder`]: the thread that writes it, fed by the daemon with
//!   [`Record`]s over a bounded channel it never waits on, so a slow or full
//!   disk never delays a kill;
//! - [`show`]: `procespy history`, which reads it back as a table, JSON,
//!   CSV or a plot.

pub(crate) mod recent;
pub(crate) mod recorder;
pub(crate) mod show;
pub(crate) mod store;

use crate::process::Rss;

/// A process as the history knows it: its PID and its start time, so that
/// a reused PID starts a new series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ProcessKey {
    /// Process id.
    pub(crate) pid: u32,
    /// Start time, in clock ticks after boot (0 when unknown).
    pub(crate) start_ticks: u64,
}

/// What a covered process is, recorded when the history first sees it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ProcessMeta {
    /// Which process.
    pub(crate) key: ProcessKey,
    /// Its name (`comm`, raw bytes made text; not escaped).
    pub(crate) name: String,
    /// Its command line (not escaped).
    pub(crate) cmdline: String,
    /// Its user.
    pub(crate) user: String,
    /// The covering limit's name or pattern.
    pub(crate) rule: String,
    /// The limit, in bytes.
    pub(crate) limit_bytes: u64,
}

/// One thing for the history to write.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Record {
    /// A covered process was seen for the first time (or its limit changed).
    Process(ProcessMeta),
    /// A covered process's resident memory at `t` (epoch seconds).
    Rss {
        /// Which process.
        key: ProcessKey,
        /// When.
        t: f64,
        /// What it held.
        rss: Rss,
    },
    /// A covered process exited at `t`.
    Exited {
        /// Which process.
        key: ProcessKey,
        /// When.
        t: f64,
    },
    /// What the processes of one limit hold together at `t`.
    Total {
        /// The limit's name or pattern.
        rule: String,
        /// When.
        t: f64,
        /// Their RSS summed, in bytes.
        bytes: u64,
        /// How many processes it covers.
        processes: u32,
        /// The limit, in bytes.
        limit_bytes: u64,
    },
    /// The largest processes at a full examination.
    Largest {
        /// When.
        t: f64,
        /// PID, name and RSS, largest first.
        processes: Vec<(u32, String, u64)>,
    },
    /// Something procespy did about a covered process.
    Action {
        /// Which process.
        key: ProcessKey,
        /// When.
        t: f64,
        /// What was done (`SIGTERM`, `SIGKILL (kernel)`, `alert`, …).
        action: String,
        /// How it went.
        result: String,
        /// The RSS it was decided on, in bytes.
        rss: u64,
    },
}
