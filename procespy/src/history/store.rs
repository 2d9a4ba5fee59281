//! The history on disk: one SQLite database, written by the recorder's
//! thread only, read by `procespy history` (and by anyone with `sqlite3`).
//!
//! Every series is kept in each `[history] tiers` resolution at once: a
//! value goes into the bucket of its time in every tier (the bucket keeps
//! its largest memory figure and its mean CPU), and each tier is pruned to
//! its own `keep`. A reader takes, for each stretch of time, the finest
//! tier that still covers it ([`Store::samples`]).
//!
//! Rows are written when a value changes: a flat process costs nothing, and
//! in the coarser tiers a change smaller than [`NOISE`] of the value is not
//! a change. The tables, for `sqlite3` users (times are seconds since the
//! epoch: `datetime(t, 'unixepoch')`):
//!
//! | table | one row per |
//! | --- | --- |
//! | `process` | covered process (boot, PID, start time): name, command line, user, limit |
//! | `sample` | process, tier and bucket: RSS and its anon, file and shmem parts, in KiB |
//! | `total` | limit, tier and bucket: the RSS its processes hold together |
//! | `system` | tier and bucket: CPU busy %, memory used and available |
//! | `largest` | full examination and rank: the 20 largest processes (every examination for the finest tier's `keep`, then one per bucket of the coarsest tier) |
//! | `action` | action procespy took |

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::Path,
};

use anyhow::{Context, bail};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;

use super::{ProcessKey, ProcessMeta, Record};
use crate::config::Tier;

/// The schema this procespy writes (`PRAGMA user_version`). Version 1 kept
/// `sample` in bytes with an index by age; [`MIGRATE_1`] turns it into 2.
const SCHEMA_VERSION: i64 = 2;

/// In tiers coarser than the first, a value that moved by less than this
/// share of itself (1/256) is not written again.
pub(crate) const NOISE: u64 = 256;
/// ... nor one that moved by less than this, in bytes.
const NOISE_FLOOR: u64 = 64 << 10;

/// The `sample` table, in [`SCHEMA`] and [`MIGRATE_1`].
macro_rules! sample_table {
    () => {
        "
CREATE TABLE sample (
    process INTEGER NOT NULL,
    tier INTEGER NOT NULL,
    t REAL NOT NULL,
    rss_kib INTEGER NOT NULL,
    anon_kib INTEGER NOT NULL,
    file_kib INTEGER NOT NULL,
    shmem_kib INTEGER NOT NULL,
    PRIMARY KEY (process, tier, t)
) WITHOUT ROWID;
"
    };
}

const SCHEMA: &str = concat!(
    "
CREATE TABLE process (
    id INTEGER PRIMARY KEY,
    boot TEXT NOT NULL,
    pid INTEGER NOT NULL,
    start_ticks INTEGER NOT NULL,
    name TEXT NOT NULL,
    cmdline TEXT NOT NULL,
    user TEXT NOT NULL,
    rule TEXT NOT NULL,
    limit_bytes INTEGER NOT NULL,
    first_seen REAL NOT NULL,
    exited REAL,
    UNIQUE (boot, pid, start_ticks)
);
CREATE INDEX process_pid ON process (pid);
CREATE INDEX process_name ON process (name);
",
    sample_table!(),
    "
CREATE TABLE total (
    rule TEXT NOT NULL,
    tier INTEGER NOT NULL,
    t REAL NOT NULL,
    bytes INTEGER NOT NULL,
    processes INTEGER NOT NULL,
    limit_bytes INTEGER NOT NULL,
    PRIMARY KEY (rule, tier, t)
) WITHOUT ROWID;
CREATE INDEX total_age ON total (tier, t);
CREATE TABLE system (
    tier INTEGER NOT NULL,
    t REAL NOT NULL,
    cpu_busy REAL NOT NULL,
    mem_used INTEGER NOT NULL,
    mem_available INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (tier, t)
) WITHOUT ROWID;
CREATE TABLE largest (
    t REAL NOT NULL,
    rank INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    name TEXT NOT NULL,
    rss INTEGER NOT NULL,
    PRIMARY KEY (t, rank)
) WITHOUT ROWID;
CREATE TABLE action (
    t REAL NOT NULL,
    process INTEGER NOT NULL,
    action TEXT NOT NULL,
    result TEXT NOT NULL,
    rss INTEGER NOT NULL
);
CREATE INDEX action_process ON action (process, t);
CREATE INDEX action_age ON action (t);
"
);

/// From schema 1 to 2: `sample` is the table that grows (a row per covered
/// process and minute for 7 days), so it holds KiB rather than bytes (two
/// bytes a value fewer) and has no index by age (pruning goes through its
/// key, process by process): 53 bytes a row become about 30.
const MIGRATE_1: &str = concat!(
    "ALTER TABLE sample RENAME TO sample_v1;",
    sample_table!(),
    "
INSERT INTO sample
    SELECT process, tier, t, (rss + 1023) / 1024, (anon + 1023) / 1024,
           (file + 1023) / 1024, (shmem + 1023) / 1024
    FROM sample_v1;
DROP TABLE sample_v1;
"
);

/// One reading of the machine, for the `system` table.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct SystemSample {
    /// When.
    pub(crate) t: f64,
    /// CPU busy, percent of all CPUs, since the last reading.
    pub(crate) cpu_busy: f64,
    /// Memory in use (total − available), in bytes.
    pub(crate) mem_used: u64,
    /// Memory available, in bytes.
    pub(crate) mem_available: u64,
}

/// A process the history holds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct ProcessRow {
    /// The database's id for it.
    #[serde(skip)]
    pub(crate) id: i64,
    /// Process id.
    pub(crate) pid: u32,
    /// Name (`comm`).
    pub(crate) name: String,
    /// Command line.
    pub(crate) cmdline: String,
    /// User.
    pub(crate) user: String,
    /// The covering limit's name or pattern.
    pub(crate) rule: String,
    /// The limit, in bytes.
    pub(crate) limit_bytes: u64,
    /// When the history first saw it.
    pub(crate) first_seen: f64,
    /// When it exited, if the daemon saw that.
    pub(crate) exited: Option<f64>,
}

/// One stored reading of a process.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub(crate) struct Sample {
    /// The bucket's start, epoch seconds.
    pub(crate) t: f64,
    /// The bucket's width in seconds (the tier's `every`).
    pub(crate) every: f64,
    /// The largest RSS in the bucket, bytes.
    pub(crate) rss: u64,
    /// Its anonymous part.
    pub(crate) anon: u64,
    /// Its file-backed part.
    pub(crate) file: u64,
    /// Its shared-memory part.
    pub(crate) shmem: u64,
}

/// One stored action.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct ActionRow {
    /// When.
    pub(crate) t: f64,
    /// What was done.
    pub(crate) action: String,
    /// How it went.
    pub(crate) result: String,
    /// The RSS it was decided on.
    pub(crate) rss: u64,
}

/// One stored reading of a limit's total.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub(crate) struct TotalSample {
    /// The bucket's start.
    pub(crate) t: f64,
    /// The bucket's width in seconds.
    pub(crate) every: f64,
    /// The processes' RSS summed (largest in the bucket).
    pub(crate) bytes: u64,
    /// How many processes.
    pub(crate) processes: u32,
    /// The limit.
    pub(crate) limit_bytes: u64,
}

/// Which series a last-written value belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Series {
    Process(i64),
    Total(String),
}

/// The history database, open for writing.
pub(crate) struct Store {
    conn: Connection,
    tiers: Vec<Tier>,
    boot: String,
    ids: HashMap<ProcessKey, i64>,
    /// Per series and tier: the last bucket written and its value.
    last: HashMap<(Series, usize), (f64, u64)>,
}

impl Store {
    /// Opens (creating when missing) the database at `path`, readable by
    /// root only, in its own directory created `0700` when missing.
    pub(crate) fn open(path: &Path, tiers: &[Tier]) -> anyhow::Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.exists()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        if !path.exists() {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("opening {}", path.display()))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        match version {
            0 => {
                conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
                conn.execute_batch(&format!(
                    "BEGIN; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
                ))
                .with_context(|| format!("creating the tables in {}", path.display()))?;
            }
            1 => conn
                .execute_batch(&format!(
                    "BEGIN; {MIGRATE_1} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
                ))
                .with_context(|| format!("moving {} to schema {SCHEMA_VERSION}", path.display()))?,
            SCHEMA_VERSION => {}
            other => bail!(
                "{} has schema version {other}, and this procespy writes version \
                 {SCHEMA_VERSION}: move the file aside to start a new history",
                path.display()
            ),
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "journal_size_limit", 4 << 20)?;
        // 1 MiB of page cache (SQLite's default is 2): the writes land in
        // the newest pages, and the kernel's page cache holds the rest.
        conn.pragma_update(None, "cache_size", -1024)?;
        Ok(Store {
            conn,
            tiers: tiers.to_vec(),
            boot: boot_id(),
            ids: HashMap::new(),
            last: HashMap::new(),
        })
    }

    /// Writes `records` and `system` in one transaction.
    pub(crate) fn write(
        &mut self,
        records: &[Record],
        system: Option<SystemSample>,
    ) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        let mut writer = Writer {
            tx: &tx,
            tiers: &self.tiers,
            boot: &self.boot,
            ids: &mut self.ids,
            last: &mut self.last,
        };
        for record in records {
            writer.record(record)?;
        }
        if let Some(sample) = system {
            writer.system(&sample)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Drops what is older than each tier keeps, then the oldest tenth of
    /// what is left until the database fits in `max_size` bytes.
    pub(crate) fn prune(&mut self, now: f64, max_size: u64) -> anyhow::Result<()> {
        let keep_all = self
            .tiers
            .iter()
            .map(|t| t.keep.as_secs_f64())
            .fold(0.0, f64::max);
        {
            let tx = self.conn.transaction()?;
            for (tier, spec) in self.tiers.iter().enumerate() {
                let before = now - spec.keep.as_secs_f64();
                delete_samples(&tx, tier, before)?;
                for table in ["total", "system"] {
                    tx.execute(
                        &format!("DELETE FROM {table} WHERE tier = ?1 AND t < ?2"),
                        params![tier, before],
                    )?;
                }
            }
            delete_older(&tx, now - keep_all)?;
            thin_largest(&tx, &self.tiers, now)?;
            tx.commit()?;
        }
        for _ in 0..20 {
            if self.size()? <= max_size {
                break;
            }
            let Some(oldest) = self.oldest_sample()? else {
                break;
            };
            let cut = oldest + (now - oldest) / 10.0;
            let tx = self.conn.transaction()?;
            for tier in 0..self.tiers.len() {
                delete_samples(&tx, tier, cut)?;
            }
            for table in ["total", "system"] {
                tx.execute(&format!("DELETE FROM {table} WHERE t < ?1"), [cut])?;
            }
            delete_older(&tx, cut)?;
            tx.commit()?;
            self.conn.execute_batch("PRAGMA incremental_vacuum;")?;
        }
        self.conn.execute_batch("PRAGMA incremental_vacuum;")?;
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        let ids = &self.ids;
        self.last.retain(|(series, _), _| match series {
            Series::Process(id) => ids.values().any(|v| v == id),
            Series::Total(_) => true,
        });
        Ok(())
    }

    /// The time of the oldest process sample, found through `sample`'s key
    /// (a process's first row in each tier).
    fn oldest_sample(&self) -> rusqlite::Result<Option<f64>> {
        let mut oldest: Option<f64> = None;
        let mut statement = self.conn.prepare_cached(
            "SELECT min((SELECT t FROM sample
                         WHERE process = process.id AND tier = ?1 ORDER BY t LIMIT 1))
             FROM process",
        )?;
        for tier in 0..self.tiers.len() {
            let first: Option<f64> = statement.query_row([tier], |row| row.get(0))?;
            oldest = match (oldest, first) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(oldest)
    }

    /// The database's size in bytes (its pages in use, and its log).
    pub(crate) fn size(&self) -> anyhow::Result<u64> {
        let pages: u64 = self
            .conn
            .pragma_query_value(None, "page_count", |row| row.get(0))?;
        let free: u64 = self
            .conn
            .pragma_query_value(None, "freelist_count", |row| row.get(0))?;
        let page: u64 = self
            .conn
            .pragma_query_value(None, "page_size", |row| row.get(0))?;
        Ok((pages - free) * page)
    }

    /// The processes the history forgot are forgotten here too.
    pub(crate) fn forget(&mut self, key: &ProcessKey) {
        if let Some(id) = self.ids.remove(key) {
            self.last
                .retain(|(series, _), _| *series != Series::Process(id));
        }
    }
}

/// Drops a tier's process samples older than `before`, process by process
/// along `sample`'s key (the table has no index by age: see [`MIGRATE_1`]).
fn delete_samples(
    tx: &rusqlite::Transaction<'_>,
    tier: usize,
    before: f64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(DELETE_SAMPLES)?
        .execute(params![tier, before])?;
    Ok(())
}

/// [`delete_samples`]' statement.
const DELETE_SAMPLES: &str =
    "DELETE FROM sample WHERE process IN (SELECT id FROM process) AND tier = ?1 AND t < ?2";

/// Drops processes without samples or actions, and largest/action rows,
/// older than `before`.
fn delete_older(tx: &rusqlite::Transaction<'_>, before: f64) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM largest WHERE t < ?1", [before])?;
    tx.execute("DELETE FROM action WHERE t < ?1", [before])?;
    tx.execute(
        "DELETE FROM process WHERE first_seen < ?1
           AND NOT EXISTS (SELECT 1 FROM sample WHERE sample.process = process.id)
           AND NOT EXISTS (SELECT 1 FROM action WHERE action.process = process.id)",
        [before],
    )?;
    Ok(())
}

/// The largest processes: every examination for as long as the finest
/// tier keeps its rows, then one examination per bucket of the coarsest
/// tier (at scan_interval 5s and the default tiers, 20 rows a minute
/// instead of 240 once 10 minutes old).
fn thin_largest(tx: &rusqlite::Transaction<'_>, tiers: &[Tier], now: f64) -> rusqlite::Result<()> {
    let (Some(finest), Some(coarsest)) = (tiers.first(), tiers.last()) else {
        return Ok(());
    };
    tx.execute(
        "DELETE FROM largest WHERE t < ?1 AND t NOT IN (
             SELECT min(t) FROM largest WHERE t < ?1 GROUP BY CAST(t / ?2 AS INTEGER))",
        params![
            now - finest.keep.as_secs_f64(),
            coarsest.every.as_secs_f64()
        ],
    )?;
    Ok(())
}

/// Bytes as the KiB `sample` keeps, rounded up (RSS is whole pages, and
/// `/proc` says kB: nothing is lost).
fn kib(bytes: u64) -> u64 {
    bytes.div_ceil(1024)
}

/// One transaction's worth of writing.
struct Writer<'a> {
    tx: &'a rusqlite::Transaction<'a>,
    tiers: &'a [Tier],
    boot: &'a str,
    ids: &'a mut HashMap<ProcessKey, i64>,
    last: &'a mut HashMap<(Series, usize), (f64, u64)>,
}

impl Writer<'_> {
    fn record(&mut self, record: &Record) -> rusqlite::Result<()> {
        match record {
            Record::Process(meta) => {
                self.process(meta)?;
            }
            Record::Rss { key, t, rss } => {
                let id = self.id(key)?;
                for tier in 0..self.tiers.len() {
                    let Some(bucket) = self.due(Series::Process(id), tier, *t, rss.total()) else {
                        continue;
                    };
                    self.tx
                        .prepare_cached(
                            "INSERT INTO sample
                               (process, tier, t, rss_kib, anon_kib, file_kib, shmem_kib)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                             ON CONFLICT (process, tier, t) DO UPDATE SET
                               rss_kib = excluded.rss_kib, anon_kib = excluded.anon_kib,
                               file_kib = excluded.file_kib, shmem_kib = excluded.shmem_kib
                             WHERE excluded.rss_kib > sample.rss_kib",
                        )?
                        .execute(params![
                            id,
                            tier,
                            bucket,
                            kib(rss.total()),
                            kib(rss.anon),
                            kib(rss.file),
                            kib(rss.shmem)
                        ])?;
                }
            }
            Record::Exited { key, t } => {
                let id = self.id(key)?;
                self.tx
                    .prepare_cached("UPDATE process SET exited = ?2 WHERE id = ?1")?
                    .execute(params![id, t])?;
            }
            Record::Total {
                rule,
                t,
                bytes,
                processes,
                limit_bytes,
            } => {
                for tier in 0..self.tiers.len() {
                    let Some(bucket) = self.due(Series::Total(rule.clone()), tier, *t, *bytes)
                    else {
                        continue;
                    };
                    self.tx
                        .prepare_cached(
                            "INSERT INTO total (rule, tier, t, bytes, processes, limit_bytes)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                             ON CONFLICT (rule, tier, t) DO UPDATE SET
                               bytes = excluded.bytes, processes = excluded.processes,
                               limit_bytes = excluded.limit_bytes
                             WHERE excluded.bytes > total.bytes",
                        )?
                        .execute(params![rule, tier, bucket, bytes, processes, limit_bytes])?;
                }
            }
            Record::Largest { t, processes } => {
                let mut insert = self.tx.prepare_cached(
                    "INSERT OR REPLACE INTO largest (t, rank, pid, name, rss)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for (rank, (pid, name, rss)) in processes.iter().enumerate() {
                    insert.execute(params![t, rank, pid, name, rss])?;
                }
            }
            Record::Action {
                key,
                t,
                action,
                result,
                rss,
            } => {
                let id = self.id(key)?;
                self.tx
                    .prepare_cached(
                        "INSERT INTO action (t, process, action, result, rss)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![t, id, action, result, rss])?;
            }
        }
        Ok(())
    }

    /// The bucket `t` goes to in `tier`, if a row is due there: in the
    /// bucket last written (it keeps the larger value); in a new bucket,
    /// when the value moved (in the finest tier) or moved by more than
    /// noise (in coarser ones).
    fn due(&mut self, series: Series, tier: usize, t: f64, value: u64) -> Option<f64> {
        let every = self.tiers[tier].every.as_secs_f64();
        let bucket = (t / every).floor() * every;
        let slot = self.last.entry((series, tier));
        use std::collections::hash_map::Entry;
        match slot {
            Entry::Vacant(vacant) => {
                vacant.insert((bucket, value));
                Some(bucket)
            }
            Entry::Occupied(mut occupied) => {
                let (last_bucket, last_value) = *occupied.get();
                let moved = value.abs_diff(last_value);
                let due = bucket == last_bucket
                    || (tier == 0 && moved > 0)
                    || (moved >= NOISE_FLOOR && moved.saturating_mul(NOISE) >= last_value);
                if !due {
                    return None;
                }
                let kept = if bucket == last_bucket {
                    last_value.max(value)
                } else {
                    value
                };
                occupied.insert((bucket, kept));
                Some(bucket)
            }
        }
    }

    fn system(&mut self, sample: &SystemSample) -> rusqlite::Result<()> {
        for (tier, spec) in self.tiers.iter().enumerate() {
            let every = spec.every.as_secs_f64();
            let bucket = (sample.t / every).floor() * every;
            self.tx
                .prepare_cached(
                    "INSERT INTO system (tier, t, cpu_busy, mem_used, mem_available, n)
                     VALUES (?1, ?2, ?3, ?4, ?5, 1)
                     ON CONFLICT (tier, t) DO UPDATE SET
                       cpu_busy = (cpu_busy * n + excluded.cpu_busy) / (n + 1),
                       mem_used = max(mem_used, excluded.mem_used),
                       mem_available = min(mem_available, excluded.mem_available),
                       n = n + 1",
                )?
                .execute(params![
                    tier,
                    bucket,
                    sample.cpu_busy,
                    sample.mem_used,
                    sample.mem_available
                ])?;
        }
        Ok(())
    }

    fn process(&mut self, meta: &ProcessMeta) -> rusqlite::Result<i64> {
        let id: i64 = self
            .tx
            .prepare_cached(
                "INSERT INTO process (boot, pid, start_ticks, name, cmdline, user, rule,
                                      limit_bytes, first_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (boot, pid, start_ticks) DO UPDATE SET
                   name = excluded.name, cmdline = excluded.cmdline, user = excluded.user,
                   rule = excluded.rule, limit_bytes = excluded.limit_bytes
                 RETURNING id",
            )?
            .query_row(
                params![
                    self.boot,
                    meta.key.pid,
                    meta.key.start_ticks,
                    meta.name,
                    meta.cmdline,
                    meta.user,
                    meta.rule,
                    meta.limit_bytes,
                    crate::sys::epoch_secs()
                ],
                |row| row.get(0),
            )?;
        self.ids.insert(meta.key, id);
        Ok(id)
    }

    /// The id of `key`, making a bare row for a process not seen before.
    fn id(&mut self, key: &ProcessKey) -> rusqlite::Result<i64> {
        if let Some(&id) = self.ids.get(key) {
            return Ok(id);
        }
        let found: Option<i64> = self
            .tx
            .prepare_cached(
                "SELECT id FROM process WHERE boot = ?1 AND pid = ?2 AND start_ticks = ?3",
            )?
            .query_row(params![self.boot, key.pid, key.start_ticks], |row| {
                row.get(0)
            })
            .optional()?;
        if let Some(id) = found {
            self.ids.insert(*key, id);
            return Ok(id);
        }
        self.process(&ProcessMeta {
            key: *key,
            name: String::new(),
            cmdline: String::new(),
            user: String::new(),
            rule: String::new(),
            limit_bytes: 0,
        })
    }
}

/// This boot's id: a PID and start time name one process only within it.
fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_owned())
        .unwrap_or_default()
}

/// The history database, open for reading.
pub(crate) struct Reader {
    conn: Connection,
    tiers: Vec<Tier>,
}

/// Which processes `procespy history` asks about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Selector {
    /// The latest process with this PID.
    Pid(u32),
    /// Every process with this name.
    Name(String),
}

impl Reader {
    /// Opens the database at `path` for reading.
    pub(crate) fn open(path: &Path, tiers: &[Tier]) -> anyhow::Result<Reader> {
        if !path.exists() {
            bail!(
                "there is no history at {} yet: the daemon writes it when [history] is enabled",
                path.display()
            );
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("opening {}", path.display()))?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .with_context(|| format!("reading {}", path.display()))?;
        if version != SCHEMA_VERSION {
            bail!(
                "{} has schema version {version}; this procespy reads version {SCHEMA_VERSION}",
                path.display()
            );
        }
        Ok(Reader {
            conn,
            tiers: tiers.to_vec(),
        })
    }

    /// The processes `selector` names that have anything after `since`,
    /// newest first (for a PID: only the newest).
    pub(crate) fn processes(
        &self,
        selector: &Selector,
        since: f64,
    ) -> anyhow::Result<Vec<ProcessRow>> {
        let (filter, value): (&str, rusqlite::types::Value) = match selector {
            Selector::Pid(pid) => ("pid = ?1", i64::from(*pid).into()),
            Selector::Name(name) => ("name = ?1", name.clone().into()),
        };
        let mut statement = self.conn.prepare(&format!(
            "SELECT id, pid, name, cmdline, user, rule, limit_bytes, first_seen, exited
             FROM process WHERE {filter}
               AND (coalesce(exited, 1e300) >= ?2
                    OR EXISTS (SELECT 1 FROM sample WHERE process = process.id AND t >= ?2))
             ORDER BY first_seen DESC, id DESC"
        ))?;
        let rows = statement.query_map(params![value, since], |row| {
            Ok(ProcessRow {
                id: row.get(0)?,
                pid: row.get(1)?,
                name: row.get(2)?,
                cmdline: row.get(3)?,
                user: row.get(4)?,
                rule: row.get(5)?,
                limit_bytes: row.get(6)?,
                first_seen: row.get(7)?,
                exited: row.get(8)?,
            })
        })?;
        let mut list = rows.collect::<Result<Vec<_>, _>>()?;
        if matches!(selector, Selector::Pid(_)) {
            list.truncate(1);
        }
        Ok(list)
    }

    /// A process's samples after `since`, oldest first: for each stretch of
    /// time the finest tier that covers it.
    pub(crate) fn samples(
        &self,
        process: i64,
        since: f64,
        now: f64,
    ) -> anyhow::Result<Vec<Sample>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT t, rss_kib, anon_kib, file_kib, shmem_kib FROM sample
             WHERE process = ?1 AND tier = ?2 AND t >= ?3 AND t < ?4 ORDER BY t",
        )?;
        let mut stretches = Vec::new();
        for (tier, (from, until)) in self.stretches(since, now).into_iter().enumerate() {
            let every = self.tiers[tier].every.as_secs_f64();
            let rows = statement.query_map(params![process, tier, from, until], |row| {
                let bytes = |i| row.get::<_, u64>(i).map(|k| k << 10);
                Ok(Sample {
                    t: row.get(0)?,
                    every,
                    rss: bytes(1)?,
                    anon: bytes(2)?,
                    file: bytes(3)?,
                    shmem: bytes(4)?,
                })
            })?;
            stretches.push(rows.collect::<Result<Vec<_>, _>>()?);
        }
        Ok(stretches.into_iter().rev().flatten().collect())
    }

    /// A limit's totals after `since`, oldest first, as [`Reader::samples`].
    pub(crate) fn totals(
        &self,
        rule: &str,
        since: f64,
        now: f64,
    ) -> anyhow::Result<Vec<TotalSample>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT t, bytes, processes, limit_bytes FROM total
             WHERE rule = ?1 AND tier = ?2 AND t >= ?3 AND t < ?4 ORDER BY t",
        )?;
        let mut stretches = Vec::new();
        for (tier, (from, until)) in self.stretches(since, now).into_iter().enumerate() {
            let every = self.tiers[tier].every.as_secs_f64();
            let rows = statement.query_map(params![rule, tier, from, until], |row| {
                Ok(TotalSample {
                    t: row.get(0)?,
                    every,
                    bytes: row.get(1)?,
                    processes: row.get(2)?,
                    limit_bytes: row.get(3)?,
                })
            })?;
            stretches.push(rows.collect::<Result<Vec<_>, _>>()?);
        }
        Ok(stretches.into_iter().rev().flatten().collect())
    }

    /// The limits whose totals the history holds.
    pub(crate) fn rules(&self) -> anyhow::Result<Vec<String>> {
        let mut statement = self
            .conn
            .prepare("SELECT DISTINCT rule FROM total ORDER BY rule")?;
        let rows = statement.query_map([], |row| row.get(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// A process's actions after `since`, oldest first.
    pub(crate) fn actions(&self, process: i64, since: f64) -> anyhow::Result<Vec<ActionRow>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT t, action, result, rss FROM action WHERE process = ?1 AND t >= ?2 ORDER BY t",
        )?;
        let rows = statement.query_map(params![process, since], |row| {
            Ok(ActionRow {
                t: row.get(0)?,
                action: row.get(1)?,
                result: row.get(2)?,
                rss: row.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// For each tier, the stretch `[from, until)` it is read for: the
    /// finest tier from its `keep` ago until now, each coarser one from its
    /// own `keep` ago until where the finer one starts.
    fn stretches(&self, since: f64, now: f64) -> Vec<(f64, f64)> {
        let mut until = f64::INFINITY;
        self.tiers
            .iter()
            .map(|tier| {
                let from = since.max(now - tier.keep.as_secs_f64());
                let stretch = (from, until.max(from));
                until = until.min(from);
                stretch
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::process::Rss;

    fn tiers() -> Vec<Tier> {
        let tier = |every, keep| Tier {
            every: Duration::from_secs(every),
            keep: Duration::from_secs(keep),
        };
        vec![tier(1, 600), tier(10, 6 * 3600), tier(60, 7 * 86400)]
    }

    fn key(pid: u32) -> ProcessKey {
        ProcessKey {
            pid,
            start_ticks: 42,
        }
    }

    fn meta(pid: u32) -> Record {
        Record::Process(ProcessMeta {
            key: key(pid),
            name: "grower".into(),
            cmdline: "grower --fast".into(),
            user: "root".into(),
            rule: "grower".into(),
            limit_bytes: 100 << 20,
        })
    }

    fn rss(pid: u32, t: f64, mib: u64) -> Record {
        Record::Rss {
            key: key(pid),
            t,
            rss: Rss {
                anon: mib << 20,
                file: 0,
                shmem: 0,
            },
        }
    }

    fn open(dir: &tempfile::TempDir) -> (Store, Reader) {
        let path = dir.path().join("lib/history.sqlite");
        let store = Store::open(&path, &tiers()).unwrap();
        let reader = Reader::open(&path, &tiers()).unwrap();
        (store, reader)
    }

    #[test]
    fn a_schema_1_history_is_moved_to_kib_and_keeps_its_samples() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lib/history.sqlite");
        let now = 1_000_000.0;
        {
            let (mut store, _reader) = open(&dir);
            store.write(&[meta(7)], None).unwrap();
            store
                .conn
                .execute_batch(
                    "DROP TABLE sample;
                     CREATE TABLE sample (
                         process INTEGER NOT NULL, tier INTEGER NOT NULL, t REAL NOT NULL,
                         rss INTEGER NOT NULL, anon INTEGER NOT NULL, file INTEGER NOT NULL,
                         shmem INTEGER NOT NULL, PRIMARY KEY (process, tier, t)
                     ) WITHOUT ROWID;
                     CREATE INDEX sample_age ON sample (tier, t);
                     INSERT INTO sample SELECT id, 0, 999990, 3145728, 2097152, 1044480, 4096
                         FROM process;
                     PRAGMA user_version = 1;",
                )
                .unwrap();
        }
        let store = Store::open(&path, &tiers()).unwrap();
        let reader = Reader::open(&path, &tiers()).unwrap();
        let found = reader.processes(&Selector::Pid(7), now - 60.0).unwrap();
        let samples = reader.samples(found[0].id, now - 60.0, now).unwrap();
        assert_eq!(samples.len(), 1, "{samples:?}");
        assert_eq!(
            (
                samples[0].rss,
                samples[0].anon,
                samples[0].file,
                samples[0].shmem
            ),
            (3 << 20, 2 << 20, 1020 << 10, 4 << 10)
        );
        let indexes: i64 = store
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'sample'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 0, "no index by age");
    }

    #[test]
    fn pruning_samples_searches_the_key_instead_of_scanning_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _reader) = open(&dir);
        let plan: Vec<String> = store
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {DELETE_SAMPLES}"))
            .unwrap()
            .query_map(params![1, 5.0], |row| row.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let on_sample: Vec<&String> = plan.iter().filter(|l| l.contains("sample")).collect();
        assert!(
            !on_sample.is_empty() && on_sample.iter().all(|l| l.starts_with("SEARCH")),
            "{plan:?}"
        );
    }

    #[test]
    fn the_largest_processes_thin_to_one_examination_a_coarse_bucket_once_old() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _reader) = open(&dir);
        let now = 1_000_020.0;
        // An examination every 5 s for 20 minutes, two processes each.
        let records: Vec<Record> = (0..240u32)
            .map(|i| Record::Largest {
                t: now - 1200.0 + f64::from(i) * 5.0 + 0.25,
                processes: vec![(1, "big".into(), 2 << 20), (2, "small".into(), 1 << 20)],
            })
            .collect();
        store.write(&records, None).unwrap();
        store.prune(now, u64::MAX).unwrap();
        let times = |store: &Store, sql: &str| -> Vec<f64> {
            let mut statement = store.conn.prepare(sql).unwrap();
            statement
                .query_map([now - 600.0], |row| row.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let old = times(
            &store,
            "SELECT DISTINCT t FROM largest WHERE t < ?1 ORDER BY t",
        );
        let recent = times(
            &store,
            "SELECT DISTINCT t FROM largest WHERE t >= ?1 ORDER BY t",
        );
        assert_eq!(recent.len(), 120, "the last 10 minutes: every examination");
        assert_eq!(old.len(), 10, "before: one a minute, {old:?}");
        assert!(old.windows(2).all(|w| w[1] - w[0] == 60.0));
        let ranks = times(&store, "SELECT count(*) FROM largest WHERE t < ?1");
        assert_eq!(ranks, vec![20.0], "both ranks of each kept examination");
        store.prune(now, u64::MAX).unwrap();
        assert_eq!(
            times(&store, "SELECT DISTINCT t FROM largest WHERE t < ?1").len(),
            10,
            "a second prune keeps them"
        );
    }

    #[test]
    fn a_growing_process_reads_back_a_point_a_second_and_coarser_before() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, reader) = open(&dir);
        let now = 1_000_000.0;
        let mut records = vec![meta(7)];
        for s in 0..1200u32 {
            records.push(rss(7, now - 1200.0 + f64::from(s) + 0.5, u64::from(s)));
        }
        store.write(&records, None).unwrap();
        let found = reader.processes(&Selector::Pid(7), now - 3600.0).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].cmdline, "grower --fast");
        let samples = reader.samples(found[0].id, now - 3600.0, now).unwrap();
        let fine: Vec<&Sample> = samples.iter().filter(|s| s.every == 1.0).collect();
        let coarse: Vec<&Sample> = samples.iter().filter(|s| s.every == 10.0).collect();
        assert_eq!(fine.len(), 600, "the last ten minutes, every second");
        assert_eq!(coarse.len(), 60, "the ten before, every ten seconds");
        assert!(samples.windows(2).all(|w| w[0].t < w[1].t), "in order");
        assert!(coarse.iter().all(|s| s.t < fine[0].t));
        assert_eq!(coarse[0].rss, 9 << 20, "a bucket keeps its largest value");
        assert_eq!(fine.last().unwrap().rss, 1199 << 20);
    }

    #[test]
    fn the_finest_tier_keeps_every_change_and_coarser_ones_ignore_noise() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, reader) = open(&dir);
        let now = 2_000_000.0;
        let mut records = vec![meta(8)];
        for s in 0..100u32 {
            // 1 GiB, moving by a page
            let bytes = (1u64 << 30) + u64::from(s % 2) * 4096;
            records.push(Record::Rss {
                key: key(8),
                t: now - 100.0 + f64::from(s),
                rss: Rss {
                    anon: bytes,
                    file: 0,
                    shmem: 0,
                },
            });
        }
        store.write(&records, None).unwrap();
        let id = reader.processes(&Selector::Pid(8), 0.0).unwrap()[0].id;
        let count = |tier: usize| -> i64 {
            reader
                .conn
                .query_row(
                    "SELECT count(*) FROM sample WHERE process = ?1 AND tier = ?2",
                    params![id, tier],
                    |row| row.get(0),
                )
                .unwrap()
        };
        assert_eq!(count(0), 100);
        assert_eq!(count(1), 1, "one bucket, updated in place");
        assert_eq!(count(2), 1);
    }

    #[test]
    fn pruning_keeps_each_tier_to_its_keep_and_the_file_to_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, reader) = open(&dir);
        let now = 3_000_000.0;
        let mut records = Vec::new();
        for pid in 1..=50 {
            records.push(meta(pid));
            for s in 0..2000u32 {
                records.push(rss(pid, now - 4000.0 + f64::from(s) * 2.0, u64::from(s)));
            }
        }
        store.write(&records, None).unwrap();
        let before = store.size().unwrap();
        store.prune(now, u64::MAX).unwrap();
        let oldest_fine: f64 = reader
            .conn
            .query_row("SELECT min(t) FROM sample WHERE tier = 0", [], |row| {
                row.get(0)
            })
            .unwrap();
        assert!(oldest_fine >= now - 600.0, "{oldest_fine}");
        let bound = before / 4;
        store.prune(now, bound).unwrap();
        assert!(
            store.size().unwrap() <= bound,
            "{} > {bound}",
            store.size().unwrap()
        );
        let newest: f64 = reader
            .conn
            .query_row("SELECT max(t) FROM sample", [], |row| row.get(0))
            .unwrap();
        assert!(newest > now - 10.0, "the newest samples stay");
    }

    #[test]
    fn a_process_and_its_actions_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let now = 4_000_000.0;
        {
            let (mut store, _) = open(&dir);
            store
                .write(
                    &[
                        meta(9),
                        rss(9, now - 2.0, 50),
                        Record::Action {
                            key: key(9),
                            t: now - 1.0,
                            action: "SIGTERM".into(),
                            result: "sent".into(),
                            rss: 101 << 20,
                        },
                        Record::Exited {
                            key: key(9),
                            t: now - 0.5,
                        },
                    ],
                    Some(SystemSample {
                        t: now,
                        cpu_busy: 12.5,
                        mem_used: 1 << 30,
                        mem_available: 2 << 30,
                    }),
                )
                .unwrap();
        }
        let (mut store, reader) = open(&dir);
        let row = &reader
            .processes(&Selector::Name("grower".into()), 0.0)
            .unwrap()[0];
        assert_eq!(row.exited, Some(now - 0.5));
        let actions = reader.actions(row.id, 0.0).unwrap();
        assert_eq!(actions[0].action, "SIGTERM");
        // the same process after a restart continues its series
        store.write(&[meta(9), rss(9, now, 60)], None).unwrap();
        assert_eq!(reader.processes(&Selector::Pid(9), 0.0).unwrap().len(), 1);
        assert_eq!(reader.samples(row.id, 0.0, now + 1.0).unwrap().len(), 2);
    }

    #[test]
    fn a_database_of_another_schema_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sqlite");
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA user_version = 99;")
            .unwrap();
        let err = Store::open(&path, &tiers()).err().unwrap().to_string();
        assert!(
            err.contains("schema version 99") && err.contains("move the file aside"),
            "{err}"
        );
    }
}
