//! Which limit covers a process, which processes are never signalled, and
//! what to do at a breach. Pure functions: no I/O, no clock.

use std::{path::Path, time::Duration};

use crate::{
    config::{Action, Enforce, Limit, Limits},
    process::ProcInfo,
};

/// What the rules look at in a process.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Subject<'a> {
    /// Process id.
    pub(crate) pid: u32,
    /// `comm`, raw bytes.
    pub(crate) comm: &'a [u8],
    /// The executable, when known.
    pub(crate) exe: Option<&'a Path>,
    /// The command line, when known (empty otherwise).
    pub(crate) cmdline: &'a [u8],
    /// The real user id, when known.
    pub(crate) uid: Option<u32>,
    /// A kernel thread.
    pub(crate) kernel_thread: bool,
}

impl<'a> Subject<'a> {
    /// The rules' view of a process read from `/proc`.
    pub(crate) fn from_info(info: &'a ProcInfo) -> Self {
        Subject {
            pid: info.pid,
            comm: &info.comm,
            exe: info.exe.as_deref(),
            cmdline: &info.cmdline,
            uid: Some(info.uid),
            kernel_thread: info.kernel_thread,
        }
    }
}

/// The executable's file name, without the ` (deleted)` the kernel appends
/// when the file was replaced (a package upgrade) while the process runs.
fn exe_name(exe: &Path) -> Option<&[u8]> {
    use std::os::unix::ffi::OsStrExt;
    let name = exe.file_name()?.as_bytes();
    Some(name.strip_suffix(b" (deleted)").unwrap_or(name))
}

/// Whether `name` is the process's name: its `comm`, or its executable's
/// file name (`comm` keeps only 15 bytes, so longer names match through the
/// executable).
pub(crate) fn name_matches(name: &str, comm: &[u8], exe: Option<&Path>) -> bool {
    let name = name.as_bytes();
    comm == name || exe.and_then(exe_name) == Some(name)
}

/// The limit that covers the process: the first one that matches, in the
/// order of the configuration file (its name or its pattern, then its
/// user). Looks only at the limits the index names as candidates.
pub(crate) fn limit_for<'c>(limits: &'c Limits, subject: &Subject<'_>) -> Option<&'c Limit> {
    if subject.kernel_thread {
        return None;
    }
    let by_comm = limits.named(subject.comm);
    let by_exe = subject
        .exe
        .and_then(exe_name)
        .map_or(&[][..], |name| limits.named(name));
    let by_pattern = if subject.cmdline.is_empty() {
        Vec::new()
    } else {
        limits.matching(subject.cmdline)
    };
    by_comm
        .iter()
        .chain(by_exe)
        .copied()
        .chain(by_pattern)
        .filter(|&position| {
            limits[position]
                .user
                .is_none_or(|uid| subject.uid == Some(uid))
        })
        .min()
        .map(|position| &limits[position])
}

/// Why a process is never signalled.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protection {
    /// PID 1, the init process.
    Init,
    /// A kernel thread.
    KernelThread,
    /// procespy itself.
    Myself,
    /// Its executable is in `[enforce] protect`.
    Listed(String),
    /// Its name is in `[enforce] protect` but its executable could not be
    /// read, so the name cannot be checked: in doubt, no signal.
    Unverified(String),
}

impl std::fmt::Display for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Protection::Init => f.write_str("PID 1 is never signalled"),
            Protection::KernelThread => f.write_str("kernel threads are never signalled"),
            Protection::Myself => f.write_str("procespy never signals itself"),
            Protection::Listed(name) => write!(f, "{name:?} is in [enforce] protect"),
            Protection::Unverified(name) => write!(
                f,
                "it is named {name:?}, which [enforce] protect lists, and its executable \
                 cannot be read to check it: not signalled while in doubt"
            ),
        }
    }
}

/// Why the process must not be signalled, if it must not.
pub(crate) fn protection(
    subject: &Subject<'_>,
    protect: &[String],
    own_pid: u32,
) -> Option<Protection> {
    if subject.pid == 1 {
        return Some(Protection::Init);
    }
    if subject.kernel_thread || subject.pid == 0 {
        return Some(Protection::KernelThread);
    }
    if subject.pid == own_pid {
        return Some(Protection::Myself);
    }
    protect.iter().find_map(|entry| listed(entry, subject))
}

/// Whether `[enforce] protect` entry `entry` protects the process: an entry
/// starting with `/` is the executable's full path, any other its file name.
/// The name a process gives itself (`comm`) is not enough, since any
/// process can take any name; it counts only when the executable is
/// unknown, and then as a doubt.
fn listed(entry: &str, subject: &Subject<'_>) -> Option<Protection> {
    use std::os::unix::ffi::OsStrExt;
    let Some(exe) = subject.exe else {
        return (subject.comm == entry.as_bytes())
            .then(|| Protection::Unverified(entry.to_owned()));
    };
    let path = exe.as_os_str().as_bytes();
    let path = path.strip_suffix(b" (deleted)").unwrap_or(path);
    let protected = if entry.starts_with('/') {
        path == entry.as_bytes()
    } else {
        exe_name(exe) == Some(entry.as_bytes())
    };
    protected.then(|| Protection::Listed(entry.to_owned()))
}

/// What to do about a process over its limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// SIGTERM now; SIGKILL after `grace` if still over the limit.
    Terminate {
        /// How long the process has to exit.
        grace: Duration,
    },
    /// SIGKILL now.
    Kill,
    /// The kernel already sent SIGKILL at the faulting page.
    KilledByKernel,
    /// Tell people, signal nothing (`action = "alert"`).
    Alert,
    /// Dry run: log what would have been done, signal nothing.
    DryRun(Box<Verdict>),
    /// Never signalled.
    Refused(Protection),
}

/// Decides what to do about `subject`, over the limit `limit`.
///
/// `kernel_killed` says the kernel already sent SIGKILL (kill-now in eBPF
/// mode); that is reported as done, whatever else holds.
pub(crate) fn decide(
    limit: &Limit,
    enforce: &Enforce,
    subject: &Subject<'_>,
    own_pid: u32,
    kernel_killed: bool,
) -> Verdict {
    if kernel_killed {
        return Verdict::KilledByKernel;
    }
    if limit.action == Action::Alert {
        return Verdict::Alert;
    }
    if let Some(protection) = protection(subject, &enforce.protect, own_pid) {
        return Verdict::Refused(protection);
    }
    let verdict = match limit.action {
        Action::Kill => Verdict::Terminate {
            grace: enforce.grace,
        },
        Action::KillNow => Verdict::Kill,
        Action::Alert => Verdict::Alert,
    };
    if enforce.dry_run {
        Verdict::DryRun(Box::new(verdict))
    } else {
        verdict
    }
}

/// For a limit on the sum over several processes: which to stop, largest
/// first, until the sum is at most `limit`. Members are `(pid, rss, protected)`;
/// protected ones count towards the sum but are never chosen.
pub(crate) fn total_victims(members: &[(u32, u64, bool)], limit: u64) -> Vec<u32> {
    let mut sum: u64 = members.iter().map(|&(_, rss, _)| rss).sum();
    let mut candidates: Vec<&(u32, u64, bool)> = members.iter().filter(|m| !m.2).collect();
    candidates.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut victims = Vec::new();
    for &&(pid, rss, _) in &candidates {
        if sum <= limit {
            break;
        }
        victims.push(pid);
        sum = sum.saturating_sub(rss);
    }
    victims
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::Matcher;

    /// Whether `limit` alone covers the process.
    fn covers(limit: &Limit, subject: &Subject<'_>) -> bool {
        limit_for(&Limits::from(vec![limit.clone()]), subject).is_some()
    }

    fn limit(matcher: Matcher, action: Action) -> Limit {
        Limit {
            action,
            ..Limit::of(matcher, 100)
        }
    }

    fn name(n: &str) -> Matcher {
        Matcher::Name(n.into())
    }

    fn subject<'a>(pid: u32, comm: &'a [u8], exe: Option<&'a Path>) -> Subject<'a> {
        Subject {
            pid,
            comm,
            exe,
            cmdline: b"",
            uid: Some(1000),
            kernel_thread: false,
        }
    }

    fn enforce(dry_run: bool, protect: &[&str]) -> Enforce {
        Enforce {
            dry_run,
            grace: Duration::from_secs(3),
            protect: protect.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn names_match_comm_or_executable() {
        let exe = PathBuf::from("/opt/app/a-twenty-char-name-x");
        assert!(name_matches(
            "a-twenty-char-name-x",
            b"a-twenty-char-n",
            Some(&exe)
        ));
        assert!(!name_matches(
            "a-twenty-char-n-other",
            b"a-twenty-char-n",
            Some(&exe)
        ));
        assert!(
            !name_matches("a-twenty-char-name-x", b"a-twenty-char-n", None),
            "no truncated match"
        );
        assert!(name_matches("chromium", b"chromium", None));
        assert!(
            !name_matches("chrom", b"chromium", None),
            "exact, not prefix"
        );
        let deleted = PathBuf::from("/usr/bin/worker (deleted)");
        assert!(name_matches("worker", b"w", Some(&deleted)));
    }

    #[test]
    fn odd_names_match_exactly_or_not_at_all() {
        assert!(name_matches("my (odd) app", b"my (odd) app", None));
        assert!(!name_matches("my", b"my (odd) app", None));
        assert!(
            !name_matches("\u{fffd}", b"\xff", None),
            "invalid UTF-8 never matches lossily"
        );
        assert!(!name_matches("a", b"a\nb", None));
    }

    #[test]
    fn the_first_matching_limit_wins() {
        let limits = Limits::from(vec![
            Limit {
                index: 0,
                ..limit(name("python3"), Action::Alert)
            },
            Limit {
                index: 1,
                ..limit(Matcher::Pattern("manage\\.py".into()), Action::Kill)
            },
        ]);
        let cmdline = b"python3 manage.py runserver";
        let s = Subject {
            cmdline,
            ..subject(5, b"python3", None)
        };
        assert_eq!(limit_for(&limits, &s).map(|l| l.index), Some(0));
        let s = Subject {
            cmdline,
            ..subject(5, b"uwsgi", None)
        };
        assert_eq!(limit_for(&limits, &s).map(|l| l.index), Some(1));
        let s = subject(5, b"bash", None);
        assert!(limit_for(&limits, &s).is_none());
    }

    #[test]
    fn the_index_finds_the_first_limit_in_file_order() {
        let pattern = |p: &str| Matcher::Pattern(p.into());
        let mut limits: Vec<Limit> = vec![
            limit(pattern("worker"), Action::Alert),
            limit(name("app"), Action::Kill),
            limit(pattern("^/opt/app"), Action::Kill),
            limit(name("app"), Action::KillNow),
        ];
        limits[0].user = Some(42);
        for (index, limit) in limits.iter_mut().enumerate() {
            limit.index = index;
        }
        let limits = Limits::from(limits);
        let first = |s: &Subject<'_>| limit_for(&limits, s).map(|l| l.index);
        let app = Subject {
            cmdline: b"/opt/app --worker",
            ..subject(5, b"app", None)
        };
        assert_eq!(
            first(&app),
            Some(1),
            "user 1000 is not 42: the pattern is skipped"
        );
        assert_eq!(
            first(&Subject {
                uid: Some(42),
                ..app
            }),
            Some(0)
        );
        let renamed = Subject {
            comm: b"x",
            exe: Some(Path::new("/usr/bin/app")),
            ..app
        };
        assert_eq!(first(&renamed), Some(1), "the executable's name counts");
        let other = Subject { comm: b"x", ..app };
        assert_eq!(first(&other), Some(2));
        let thread = Subject {
            kernel_thread: true,
            ..app
        };
        assert_eq!(first(&thread), None);
    }

    #[test]
    fn patterns_work_on_non_utf8_command_lines() {
        let l = limit(Matcher::Pattern("^tool --x".into()), Action::Kill);
        let s = Subject {
            cmdline: b"tool --x \xff\xfe",
            ..subject(5, b"tool", None)
        };
        assert!(covers(&l, &s));
        let s = Subject {
            cmdline: b"",
            ..subject(5, b"tool", None)
        };
        assert!(
            !covers(&l, &s),
            "an unknown command line matches no pattern"
        );
    }

    #[test]
    fn user_filters_on_the_real_uid() {
        let l = Limit {
            user: Some(1000),
            ..limit(name("app"), Action::Kill)
        };
        assert!(covers(&l, &subject(5, b"app", None)));
        assert!(!covers(
            &l,
            &Subject {
                uid: Some(0),
                ..subject(5, b"app", None)
            }
        ));
        assert!(
            !covers(
                &l,
                &Subject {
                    uid: None,
                    ..subject(5, b"app", None)
                }
            ),
            "unknown user: no match"
        );
    }

    #[test]
    fn kernel_threads_are_never_covered() {
        let l = limit(name("kworker"), Action::Kill);
        assert!(!covers(
            &l,
            &Subject {
                kernel_thread: true,
                ..subject(5, b"kworker", None)
            }
        ));
    }

    #[test]
    fn protected_processes_are_refused() {
        let e = enforce(false, &["sshd"]);
        let l = limit(name("x"), Action::Kill);
        let own = 4242;
        let cases = [
            (subject(1, b"x", None), Protection::Init),
            (
                Subject {
                    kernel_thread: true,
                    ..subject(7, b"x", None)
                },
                Protection::KernelThread,
            ),
            (subject(own, b"x", None), Protection::Myself),
            (
                subject(9, b"x", Some(Path::new("/usr/sbin/sshd"))),
                Protection::Listed("sshd".into()),
            ),
            (
                subject(9, b"sshd", None),
                Protection::Unverified("sshd".into()),
            ),
        ];
        for (s, expected) in cases {
            assert_eq!(decide(&l, &e, &s, own, false), Verdict::Refused(expected));
        }
    }

    #[test]
    fn a_name_taken_by_another_executable_protects_nothing() {
        let e = enforce(false, &["sshd", "/usr/bin/important"]);
        let l = limit(name("x"), Action::Kill);
        let impostor = subject(9, b"sshd", Some(Path::new("/home/eve/grower")));
        assert!(matches!(
            decide(&l, &e, &impostor, 1, false),
            Verdict::Terminate { .. }
        ));
        let by_path = subject(9, b"x", Some(Path::new("/usr/bin/important")));
        assert_eq!(
            decide(&l, &e, &by_path, 1, false),
            Verdict::Refused(Protection::Listed("/usr/bin/important".into()))
        );
        let elsewhere = subject(9, b"x", Some(Path::new("/opt/important")));
        assert!(matches!(
            decide(&l, &e, &elsewhere, 1, false),
            Verdict::Terminate { .. }
        ));
        let replaced = subject(9, b"x", Some(Path::new("/usr/bin/important (deleted)")));
        assert!(matches!(
            decide(&l, &e, &replaced, 1, false),
            Verdict::Refused(_)
        ));
    }

    #[test]
    fn actions_map_to_verdicts() {
        let e = enforce(false, &[]);
        let s = subject(50, b"x", None);
        assert_eq!(
            decide(&limit(name("x"), Action::Kill), &e, &s, 1, false),
            Verdict::Terminate {
                grace: Duration::from_secs(3)
            }
        );
        assert_eq!(
            decide(&limit(name("x"), Action::KillNow), &e, &s, 1, false),
            Verdict::Kill
        );
        assert_eq!(
            decide(&limit(name("x"), Action::Alert), &e, &s, 1, false),
            Verdict::Alert
        );
        assert_eq!(
            decide(&limit(name("x"), Action::KillNow), &e, &s, 1, true),
            Verdict::KilledByKernel
        );
    }

    #[test]
    fn dry_run_never_signals() {
        let e = enforce(true, &[]);
        let s = subject(50, b"x", None);
        assert_eq!(
            decide(&limit(name("x"), Action::KillNow), &e, &s, 1, false),
            Verdict::DryRun(Box::new(Verdict::Kill))
        );
    }

    #[test]
    fn total_scope_kills_the_largest_first_until_under() {
        let members = [(10, 300, false), (11, 200, false), (12, 100, false)];
        assert_eq!(total_victims(&members, 500), vec![10]);
        assert_eq!(total_victims(&members, 150), vec![10, 11]);
        assert_eq!(total_victims(&members, 600), Vec::<u32>::new());
        let with_protected = [(10, 300, true), (11, 200, false), (12, 100, false)];
        assert_eq!(
            total_victims(&with_protected, 350),
            vec![11, 12],
            "protected never chosen"
        );
    }
}
