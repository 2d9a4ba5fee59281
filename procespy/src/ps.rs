//! `procespy ps`: one examination of `/proc`, printed largest memory first.
//!
//! The I/O (reading `/proc`, looking up user names, writing stdout) lives in
//! [`run`]; choosing, sorting and formatting are pure functions of the
//! examined processes, tested here.
//!
//! Figures:
//! - **RSS** is anon + file + shmem, as `VmRSS` shows it.
//! - **%MEM** is RSS over `MemTotal`.
//! - **CPU%** is the process's CPU time over its lifetime, as `ps` computes
//!   it: (utime + stime) / (now − start time), both in clock ticks. It is not
//!   a recent rate; a process with several busy threads can exceed 100.
//! - **PSS** (`--pss` only) is the proportional set size of `smaps_rollup`:
//!   each shared page divided among the processes that map it. The kernel
//!   walks the process's page tables for it, so it costs a read per process
//!   shown; another user's process shows `-` without privileges.
//! - **LIMIT** and **%LIMIT** are the limit that covers the process and RSS as
//!   a percentage of it, when a limit covers it (`-` otherwise).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    config::{Config, DEFAULT_CONFIG, Limits},
    output::print_stdout,
    process::{ProcInfo, Rss},
    rules::{self, Subject},
    sys::MemInfo,
    text::{Align, escape, human_size, table},
    users::UserNames,
};

/// What to show and how.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Options {
    /// Print JSON instead of a table.
    pub(crate) json: bool,
    /// Show only the N largest processes.
    pub(crate) top: Option<usize>,
    /// Show only processes whose comm or executable file name is this.
    pub(crate) name: Option<String>,
    /// The configuration whose limits are shown (`-c`); `None`:
    /// `/etc/procespy.toml` when it exists.
    pub(crate) config: Option<PathBuf>,
    /// Also show each process's PSS (`--pss`).
    pub(crate) pss: bool,
}

/// What the figures are computed against, read once per run.
pub(crate) struct Context<'a> {
    /// `MemTotal`, in bytes: the base of %MEM.
    pub(crate) mem_total: u64,
    /// Clock ticks since boot at the examination: the "now" of CPU%.
    pub(crate) uptime_ticks: u64,
    /// The name of a user id; the number is shown when it has none.
    pub(crate) user_name: &'a dyn Fn(u32) -> Option<String>,
    /// The PSS of a process, when PSS is shown (`--pss`): `None` when it
    /// cannot be read.
    pub(crate) pss_of: Option<&'a dyn Fn(u32) -> Option<u64>>,
}

/// One line of the output, with every figure computed. Serialises as an
/// element of the `--json` array.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Row {
    /// Process id.
    pub(crate) pid: u32,
    /// Parent process id.
    pub(crate) ppid: u32,
    /// User name, or the uid as text when it has no name.
    pub(crate) user: String,
    /// Real user id.
    pub(crate) uid: u32,
    /// `comm`, with invalid UTF-8 replaced (not escaped: JSON escapes it,
    /// the table escapes it when printing).
    pub(crate) name: String,
    /// The executable's path, with invalid UTF-8 replaced, when readable.
    pub(crate) exe: Option<String>,
    /// Resident set size in bytes.
    pub(crate) rss_bytes: u64,
    /// Resident memory by kind, in bytes.
    pub(crate) rss: Rss,
    /// Proportional set size in bytes: `None` when not asked for (and left
    /// out of the JSON), `Some(None)` when it cannot be read (`null`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pss_bytes: Option<Option<u64>>,
    /// RSS as a percentage of `MemTotal`.
    pub(crate) mem_percent: f64,
    /// CPU time as a percentage of the process's lifetime.
    pub(crate) cpu_percent: f64,
    /// The limit that covers the process, in bytes.
    pub(crate) limit_bytes: Option<u64>,
    /// RSS as a percentage of the limit.
    pub(crate) limit_percent: Option<f64>,
}

/// The processes to show: not kernel threads, not zombies, matching
/// `--name` when given; largest RSS first (then lowest PID); at most
/// `-n` of them.
pub(crate) fn select<'p>(procs: &'p [ProcInfo], opts: &Options) -> Vec<&'p ProcInfo> {
    let mut chosen: Vec<&ProcInfo> = procs
        .iter()
        .filter(|p| !p.kernel_thread && p.state != b'Z')
        .filter(|p| {
            opts.name
                .as_deref()
                .is_none_or(|name| name_matches(p, name))
        })
        .collect();
    chosen.sort_by(|a, b| b.rss.total().cmp(&a.rss.total()).then(a.pid.cmp(&b.pid)));
    if let Some(top) = opts.top {
        chosen.truncate(top);
    }
    chosen
}

/// Whether `name` is the process's comm or its executable's file name, as
/// limits match names ([`rules::name_matches`]).
pub(crate) fn name_matches(proc: &ProcInfo, name: &str) -> bool {
    rules::name_matches(name, &proc.comm, proc.exe.as_deref())
}

/// Computes the figures of one process.
pub(crate) fn row(proc: &ProcInfo, ctx: &Context<'_>, limit: Option<u64>) -> Row {
    let rss_bytes = proc.rss.total();
    let elapsed = ctx.uptime_ticks.saturating_sub(proc.start_ticks);
    Row {
        pid: proc.pid,
        ppid: proc.ppid,
        user: (ctx.user_name)(proc.uid).unwrap_or_else(|| proc.uid.to_string()),
        uid: proc.uid,
        name: proc.name_lossy(),
        exe: proc
            .exe
            .as_ref()
            .map(|exe| exe.to_string_lossy().into_owned()),
        rss_bytes,
        rss: proc.rss,
        pss_bytes: ctx.pss_of.map(|pss_of| pss_of(proc.pid)),
        mem_percent: percent(rss_bytes, ctx.mem_total),
        cpu_percent: percent(proc.cpu_ticks, elapsed),
        limit_bytes: limit,
        limit_percent: limit.map(|limit| percent(rss_bytes, limit)),
    }
}

/// `part` as a percentage of `whole`, rounded to hundredths; 0 when `whole`
/// is 0.
pub(crate) fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 * 10_000.0 / whole as f64).round() / 100.0
}

/// The whole output of `procespy ps`: the table, or the JSON array, ending
/// in a newline. `limit_for` gives the limit that covers a process, if any.
pub(crate) fn render(
    procs: &[ProcInfo],
    opts: &Options,
    ctx: &Context<'_>,
    limit_for: &dyn Fn(&ProcInfo) -> Option<u64>,
) -> String {
    let rows: Vec<Row> = select(procs, opts)
        .into_iter()
        .map(|proc| row(proc, ctx, limit_for(proc)))
        .collect();
    if opts.json {
        render_json(&rows)
    } else {
        render_table(&rows, opts.pss)
    }
}

/// The rows as a JSON array, one object per process.
pub(crate) fn render_json(rows: &[Row]) -> String {
    let mut json = serde_json::to_string_pretty(rows).expect("rows serialise");
    json.push('\n');
    json
}

/// The table's columns: title and alignment.
const COLUMNS: [(&str, Align); 8] = [
    ("PID", Align::Right),
    ("USER", Align::Left),
    ("NAME", Align::Left),
    ("RSS", Align::Right),
    ("%MEM", Align::Right),
    ("CPU%", Align::Right),
    ("LIMIT", Align::Right),
    ("%LIMIT", Align::Right),
];

/// Where the PSS column goes among [`COLUMNS`]: after RSS.
pub(crate) const PSS_AT: usize = 4;

/// The table's columns, with PSS when `pss` says so.
pub(crate) fn columns(pss: bool) -> Vec<(&'static str, Align)> {
    let mut columns = COLUMNS.to_vec();
    if pss {
        columns.insert(PSS_AT, ("PSS", Align::Right));
    }
    columns
}

/// The rows as an aligned text table with a header line; a PSS column
/// when `pss` says so.
pub(crate) fn render_table(rows: &[Row], pss: bool) -> String {
    let cells: Vec<Vec<String>> = rows.iter().map(cells).collect();
    table(&columns(pss), &cells)
}

/// The cells of one row under [`columns`] (with PSS when the row has it),
/// names escaped for a terminal.
pub(crate) fn cells(row: &Row) -> Vec<String> {
    let mut cells = vec![
        row.pid.to_string(),
        escape(&row.user),
        escape(&row.name),
        human_size(row.rss_bytes),
        format!("{:.1}", row.mem_percent),
        format!("{:.1}", row.cpu_percent),
        row.limit_bytes.map_or_else(|| "-".to_owned(), human_size),
        row.limit_percent
            .map_or_else(|| "-".to_owned(), |p| format!("{p:.1}")),
    ];
    if let Some(pss) = row.pss_bytes {
        cells.insert(PSS_AT, pss.map_or_else(|| "-".to_owned(), human_size));
    }
    cells
}

/// `procespy ps`: examines `/proc` once and prints the table (or JSON) on
/// stdout. Needs no privileges: what other users' processes hide (their
/// executables) is left out.
///
/// The LIMIT columns show the limit that covers each process, from
/// `--config`, or from /etc/procespy.toml when it exists. With `--pss`,
/// the PSS of each process shown is read (`smaps_rollup`).
pub(crate) fn run(opts: &Options) -> anyhow::Result<()> {
    let limits = load_limits(opts.config.as_deref())?;
    let mut scanner = crate::scan::Scanner::new().context("cannot open /proc")?;
    let exam = scanner.examine().context("cannot list /proc")?;
    // After the examination, so that no process examined is younger.
    let uptime_ticks = crate::scan::uptime_ticks();
    let mem_total = MemInfo::read().total;
    let users = UserNames::default();
    let user_name = |uid| Some(users.name(Some(uid)));
    let pss_of = crate::scan::read_pss;
    let ctx = Context {
        mem_total,
        uptime_ticks,
        user_name: &user_name,
        pss_of: opts.pss.then_some(&pss_of as &dyn Fn(u32) -> Option<u64>),
    };
    let limit_for = |proc: &ProcInfo| covering_limit(&limits, proc);
    let text = render(&exam.procs, opts, &ctx, &limit_for);
    print_stdout(&text).context("cannot write to stdout")?;
    Ok(())
}

/// The `max_memory` of the first of `limits` that covers `proc`, in bytes.
pub(crate) fn covering_limit(limits: &Limits, proc: &ProcInfo) -> Option<u64> {
    rules::limit_for(limits, &Subject::from_info(proc)).map(|limit| limit.max_memory)
}

/// The limits of `--config`, or of the default config when it exists. A
/// default config that cannot be used is reported and left out: `ps` still
/// shows the processes.
pub(crate) fn load_limits(path: Option<&Path>) -> anyhow::Result<Limits> {
    match path {
        Some(path) => Ok(Config::load(path)?.limits),
        None => {
            let path = Path::new(DEFAULT_CONFIG);
            if !path.exists() {
                return Ok(Limits::default());
            }
            Config::load(path)
                .map(|config| config.limits)
                .or_else(|err| {
                    eprintln!("procespy: limits not shown: {err}");
                    Ok(Limits::default())
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn proc(pid: u32, comm: &[u8], rss_mib: u64) -> ProcInfo {
        ProcInfo {
            pid,
            ppid: 1,
            comm: comm.to_vec(),
            exe: Some(PathBuf::from(format!(
                "/usr/bin/{}",
                String::from_utf8_lossy(comm)
            ))),
            uid: 1000,
            start_ticks: 1000,
            rss: Rss {
                anon: rss_mib * MIB,
                file: 0,
                shmem: 0,
            },
            cpu_ticks: 250,
            state: b'S',
            ..ProcInfo::default()
        }
    }

    fn names(procs: &[&ProcInfo]) -> Vec<u32> {
        procs.iter().map(|p| p.pid).collect()
    }

    fn user_name(uid: u32) -> Option<String> {
        (uid == 1000).then(|| "alice".to_owned())
    }

    fn ctx() -> Context<'static> {
        Context {
            mem_total: 1000 * MIB,
            uptime_ticks: 2000,
            user_name: &user_name,
            pss_of: None,
        }
    }

    /// PSS: a third of the RSS for pid 30, unreadable for the others.
    fn pss_of(pid: u32) -> Option<u64> {
        (pid == 30).then_some(512 * MIB)
    }

    fn sample() -> Vec<ProcInfo> {
        let mut kthread = proc(2, b"kthreadd", 0);
        kthread.kernel_thread = true;
        let mut zombie = proc(50, b"defunct", 0);
        zombie.state = b'Z';
        vec![
            proc(10, b"small", 5),
            kthread,
            proc(30, b"big", 500),
            zombie,
            proc(20, b"medium", 50),
            proc(40, b"twin", 50),
        ]
    }

    #[test]
    fn sorted_largest_first_without_kernel_threads_and_zombies() {
        let procs = sample();
        let chosen = select(&procs, &Options::default());
        // Equal RSS: lower PID first.
        assert_eq!(names(&chosen), [30, 20, 40, 10]);
    }

    #[test]
    fn top_n() {
        let procs = sample();
        let opts = |top| Options {
            top: Some(top),
            ..Options::default()
        };
        assert_eq!(names(&select(&procs, &opts(2))), [30, 20]);
        assert_eq!(names(&select(&procs, &opts(0))), [] as [u32; 0]);
        assert_eq!(names(&select(&procs, &opts(99))), [30, 20, 40, 10]);
    }

    #[test]
    fn name_filter_on_comm_or_exe() {
        let mut procs = sample();
        // comm is cut at 15 bytes; the executable's name is whole.
        let mut long = proc(60, b"a-very-long-nam", 1);
        long.exe = Some(PathBuf::from("/opt/bin/a-very-long-name (deleted)"));
        procs.push(long);
        let by = |name: &str| Options {
            name: Some(name.to_owned()),
            ..Options::default()
        };
        assert_eq!(names(&select(&procs, &by("medium"))), [20]);
        assert_eq!(names(&select(&procs, &by("a-very-long-name"))), [60]);
        assert_eq!(names(&select(&procs, &by("a-very-long-nam"))), [60]);
        assert_eq!(names(&select(&procs, &by("med"))), [] as [u32; 0]);
        assert_eq!(names(&select(&procs, &by("bin"))), [] as [u32; 0]);
        // Filtered first, then cut to N.
        let both = Options {
            name: Some("twin".to_owned()),
            top: Some(1),
            ..Options::default()
        };
        assert_eq!(names(&select(&procs, &both)), [40]);
    }

    #[test]
    fn figures() {
        let mut p = proc(30, b"big", 500);
        p.uid = 4242;
        let r = row(&p, &ctx(), Some(1000 * MIB));
        assert_eq!(r.user, "4242");
        assert_eq!(r.rss_bytes, 500 * MIB);
        assert_eq!(r.mem_percent, 50.0);
        // 250 ticks of CPU over 1000 ticks of life.
        assert_eq!(r.cpu_percent, 25.0);
        assert_eq!(r.limit_percent, Some(50.0));
        // Started this very tick: no division by zero.
        p.start_ticks = 2000;
        assert_eq!(row(&p, &ctx(), None).cpu_percent, 0.0);
    }

    #[test]
    fn json_shape() {
        let procs = vec![proc(30, b"big", 500), proc(10, b"small", 5)];
        let opts = Options {
            json: true,
            ..Options::default()
        };
        let limit_for = |p: &ProcInfo| (p.pid == 30).then_some(1000 * MIB);
        let text = render(&procs, &opts, &ctx(), &limit_for);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let expected = serde_json::json!([
            {
                "pid": 30, "ppid": 1, "user": "alice", "uid": 1000, "name": "big",
                "exe": "/usr/bin/big", "rss_bytes": 500 * MIB,
                "rss": { "file": 0, "anon": 500 * MIB, "shmem": 0 },
                "mem_percent": 50.0, "cpu_percent": 25.0,
                "limit_bytes": 1000 * MIB, "limit_percent": 50.0
            },
            {
                "pid": 10, "ppid": 1, "user": "alice", "uid": 1000, "name": "small",
                "exe": "/usr/bin/small", "rss_bytes": 5 * MIB,
                "rss": { "file": 0, "anon": 5 * MIB, "shmem": 0 },
                "mem_percent": 0.5, "cpu_percent": 25.0,
                "limit_bytes": null, "limit_percent": null
            }
        ]);
        assert_eq!(value, expected);
        let empty = render(&[], &opts, &ctx(), &|_| None);
        assert_eq!(empty.trim(), "[]");
    }

    #[test]
    fn json_keeps_odd_names_as_text() {
        let mut p = proc(7, b"a\nb\xff", 1);
        p.exe = None;
        let r = row(&p, &ctx(), None);
        let value = serde_json::to_value(&r).unwrap();
        assert_eq!(value["name"], "a\nb\u{fffd}");
        assert_eq!(value["exe"], serde_json::Value::Null);
    }

    #[test]
    fn table_layout() {
        let procs = vec![proc(30, b"big", 1536), proc(7, b"a\nb", 1)];
        let limit_for = |p: &ProcInfo| (p.pid == 30).then_some(2048 * MIB);
        let text = render(&procs, &Options::default(), &ctx(), &limit_for);
        let expected = "\
PID  USER   NAME      RSS   %MEM  CPU%    LIMIT  %LIMIT
 30  alice  big   1.5 GiB  153.6  25.0  2.0 GiB    75.0
  7  alice  a\\nb  1.0 MiB    0.1  25.0        -       -
";
        assert_eq!(text, expected);
        assert!(text.lines().all(|line| !line.ends_with(' ')));
        // Header only when nothing matches.
        let none = Options {
            name: Some("nothing".to_owned()),
            ..Options::default()
        };
        assert_eq!(render(&procs, &none, &ctx(), &limit_for).lines().count(), 1);
    }

    #[test]
    fn pss_column_and_field_only_on_request() {
        let procs = vec![proc(30, b"big", 1536), proc(7, b"small", 1)];
        let opts = Options {
            pss: true,
            ..Options::default()
        };
        let with_pss = Context {
            pss_of: Some(&pss_of),
            ..ctx()
        };
        let text = render(&procs, &opts, &with_pss, &|_| None);
        let expected = "\
PID  USER   NAME       RSS      PSS   %MEM  CPU%  LIMIT  %LIMIT
 30  alice  big    1.5 GiB  512 MiB  153.6  25.0      -       -
  7  alice  small  1.0 MiB        -    0.1  25.0      -       -
";
        assert_eq!(text, expected);
        let json = Options {
            json: true,
            ..opts.clone()
        };
        let value: serde_json::Value =
            serde_json::from_str(&render(&procs, &json, &with_pss, &|_| None)).unwrap();
        assert_eq!(value[0]["pss_bytes"], 512 * MIB);
        assert_eq!(value[1]["pss_bytes"], serde_json::Value::Null);
        assert!(value[1].as_object().unwrap().contains_key("pss_bytes"));
        // Not asked: no column, no field, no read.
        let plain = render(&procs, &Options::default(), &ctx(), &|_| None);
        assert!(!plain.contains("PSS"));
        let value: serde_json::Value = serde_json::from_str(&render(
            &procs,
            &Options {
                json: true,
                ..Options::default()
            },
            &ctx(),
            &|_| None,
        ))
        .unwrap();
        assert!(!value[0].as_object().unwrap().contains_key("pss_bytes"));
    }
}
