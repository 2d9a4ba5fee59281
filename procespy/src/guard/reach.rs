//! Which processes of a group or cgroup a signal reaches (`kill = "group"`
//! or `"cgroup"`): pure, from what the system found.
//!
//! Every safety rule applies to each process: a protected one (PID 1, a
//! kernel thread, procespy itself, a `protect` executable) is never
//! signalled. A process group loses only its protected members; a cgroup is
//! killed whole or not at all, so one that holds a protected process, a
//! slice and the root are refused, and the process over its limit is
//! signalled alone.

use std::path::Path;

use super::system::{Chosen, Found, Plan, Whole};
use crate::{
    action::{CgroupRefusal, Member, MemberResult, NoCgroupKill, Reach},
    process::ProcInfo,
    rules::{self, Subject},
    sys::Signal,
};

/// The process over its limit, which every plan signals.
pub(crate) struct Trigger<H> {
    /// Its PID.
    pub(crate) pid: u32,
    /// Its name.
    pub(crate) name: String,
    /// Its handle.
    pub(crate) handle: H,
}

/// How to send `signal` for `trigger` to what `found` holds, sparing what
/// the rules protect (`protect` is `[enforce] protect`).
pub(crate) fn plan<H: Clone>(
    trigger: Trigger<H>,
    signal: Signal,
    found: Found<H>,
    protect: &[String],
    own_pid: u32,
) -> Plan<H> {
    let mut plan = Plan {
        reach: Reach::Group { pgid: 0 },
        chosen: vec![Chosen {
            pid: trigger.pid,
            name: trigger.name,
            handle: Some(trigger.handle),
        }],
        cgroup_kill: None,
        left: Vec::new(),
    };
    // A zombie has exited already: nothing to signal, nothing to spare.
    let members: Vec<_> = found
        .members
        .into_iter()
        .filter(|(info, _)| info.state != b'Z')
        .collect();
    let protection =
        |info: &ProcInfo| rules::protection(&Subject::from_info(info), protect, own_pid);
    let (cgroup, kill_file) = match found.whole {
        Whole::Group { pgid } => {
            plan.reach = Reach::Group { pgid };
            for (info, handle) in members {
                let name = info.name_lossy();
                match (protection(&info), handle) {
                    (Some(protection), _) => plan.left.push(Member {
                        pid: info.pid,
                        name,
                        result: MemberResult::Spared { protection },
                    }),
                    (None, Ok(handle)) => plan.chosen.push(Chosen {
                        pid: info.pid,
                        name,
                        handle: Some(handle),
                    }),
                    (None, Err(error)) => plan.left.push(Member {
                        pid: info.pid,
                        name,
                        result: MemberResult::Failed { error },
                    }),
                }
            }
            return plan;
        }
        Whole::NoCgroup(reason) => {
            plan.reach = Reach::ProcessAlone {
                why: CgroupRefusal::Unknown { reason },
            };
            return plan;
        }
        Whole::Cgroup { cgroup, kill_file } => (cgroup, kill_file),
    };
    let path = cgroup.path.clone();
    let refusal = if path.trim_end_matches('/').is_empty() {
        Some(CgroupRefusal::Root)
    } else if is_slice(&path) {
        Some(CgroupRefusal::Slice {
            cgroup: path.clone(),
        })
    } else {
        members.iter().find_map(|(info, _)| {
            Some(CgroupRefusal::Protected {
                cgroup: path.clone(),
                pid: info.pid,
                name: info.name_lossy(),
                protection: protection(info)?,
            })
        })
    };
    if let Some(why) = refusal {
        plan.reach = Reach::ProcessAlone { why };
        return plan;
    }
    let kill_at_once = kill_file && signal == Signal::Kill;
    for (info, handle) in members {
        let name = info.name_lossy();
        match handle {
            Ok(handle) => plan.chosen.push(Chosen {
                pid: info.pid,
                name,
                handle: Some(handle),
            }),
            // cgroup.kill reaches it all the same.
            Err(_) if kill_at_once => plan.chosen.push(Chosen {
                pid: info.pid,
                name,
                handle: None,
            }),
            Err(error) => plan.left.push(Member {
                pid: info.pid,
                name,
                result: MemberResult::Failed { error },
            }),
        }
    }
    plan.reach = match (kill_file, cgroup.v2) {
        (true, _) => Reach::Cgroup { cgroup: path },
        (false, true) => Reach::CgroupMembers {
            cgroup: path,
            why: NoCgroupKill::NoKillFile,
        },
        (false, false) => Reach::CgroupMembers {
            cgroup: path,
            why: NoCgroupKill::V1,
        },
    };
    if kill_at_once {
        plan.cgroup_kill = Some(cgroup.dir);
    }
    plan
}

/// Whether the cgroup at `path` is a systemd slice (`user.slice`), which
/// holds whole services or sessions.
fn is_slice(path: &str) -> bool {
    Path::new(path)
        .file_name()
        .is_some_and(|name| name.as_encoded_bytes().ends_with(b".slice"))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::{rules::Protection, sys::cgroup::Cgroup};

    fn info(pid: u32, name: &str) -> ProcInfo {
        ProcInfo {
            pid,
            comm: name.as_bytes().to_vec(),
            exe: Some(PathBuf::from(format!("/usr/bin/{name}"))),
            state: b'S',
            ..ProcInfo::default()
        }
    }

    fn trigger() -> Trigger<u32> {
        Trigger {
            pid: 100,
            name: "app".into(),
            handle: 100,
        }
    }

    fn members(names: &[(u32, &str)]) -> Vec<(ProcInfo, Result<u32, String>)> {
        names
            .iter()
            .map(|&(pid, name)| (info(pid, name), Ok(pid)))
            .collect()
    }

    fn cgroup(path: &str, kill_file: bool) -> Whole {
        Whole::Cgroup {
            cgroup: Cgroup {
                path: path.into(),
                dir: PathBuf::from("/sys/fs/cgroup").join(path.trim_start_matches('/')),
                v2: true,
            },
            kill_file,
        }
    }

    fn chosen(plan: &Plan<u32>) -> Vec<u32> {
        plan.chosen.iter().map(|c| c.pid).collect()
    }

    const PROTECT: &[&str] = &["sshd"];

    fn protect() -> Vec<String> {
        PROTECT.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_group_loses_only_its_protected_members() {
        let mut found = members(&[(101, "app"), (102, "sshd"), (1, "init"), (103, "app")]);
        found.push((info(104, "app"), Err("no pidfd".into())));
        let mut zombie = info(105, "app");
        zombie.state = b'Z';
        found.push((zombie, Ok(105)));
        let whole = Whole::Group { pgid: 100 };
        let plan = plan(
            trigger(),
            Signal::Term,
            Found {
                whole,
                members: found,
            },
            &protect(),
            4242,
        );
        assert_eq!(plan.reach, Reach::Group { pgid: 100 });
        assert_eq!(chosen(&plan), [100, 101, 103]);
        let left: Vec<(u32, &MemberResult)> =
            plan.left.iter().map(|m| (m.pid, &m.result)).collect();
        assert_eq!(
            left,
            [
                (
                    102,
                    &MemberResult::Spared {
                        protection: Protection::Listed("sshd".into())
                    }
                ),
                (
                    1,
                    &MemberResult::Spared {
                        protection: Protection::Init
                    }
                ),
                (
                    104,
                    &MemberResult::Failed {
                        error: "no pidfd".into()
                    }
                ),
            ]
        );
        assert!(plan.cgroup_kill.is_none());
    }

    #[test]
    fn procespy_itself_is_spared_in_its_own_group() {
        let found = Found {
            whole: Whole::Group { pgid: 100 },
            members: members(&[(4242, "procespy")]),
        };
        let plan = plan(trigger(), Signal::Kill, found, &[], 4242);
        assert_eq!(chosen(&plan), [100]);
        assert!(matches!(
            plan.left[0].result,
            MemberResult::Spared {
                protection: Protection::Myself
            }
        ));
    }

    #[test]
    fn a_cgroup_is_killed_at_once_with_sigkill_and_signalled_each_with_sigterm() {
        let found = || Found {
            whole: cgroup("/system.slice/web.service", true),
            members: members(&[(101, "worker"), (102, "worker")]),
        };
        let kill = plan(trigger(), Signal::Kill, found(), &protect(), 1);
        assert_eq!(
            kill.reach,
            Reach::Cgroup {
                cgroup: "/system.slice/web.service".into()
            }
        );
        assert_eq!(
            kill.cgroup_kill,
            Some(PathBuf::from("/sys/fs/cgroup/system.slice/web.service"))
        );
        assert_eq!(chosen(&kill), [100, 101, 102]);
        let term = plan(trigger(), Signal::Term, found(), &protect(), 1);
        assert_eq!(term.cgroup_kill, None, "SIGTERM goes through pidfds");
        assert_eq!(chosen(&term), [100, 101, 102]);
    }

    #[test]
    fn a_cgroup_without_cgroup_kill_is_signalled_process_by_process() {
        let found = Found {
            whole: cgroup("/test", false),
            members: members(&[(101, "worker")]),
        };
        let plan = plan(trigger(), Signal::Kill, found, &protect(), 1);
        assert_eq!(
            plan.reach,
            Reach::CgroupMembers {
                cgroup: "/test".into(),
                why: NoCgroupKill::NoKillFile
            }
        );
        assert_eq!((chosen(&plan), plan.cgroup_kill), (vec![100, 101], None));
    }

    #[test]
    fn the_root_a_slice_and_a_cgroup_holding_a_protected_process_are_refused() {
        let refused = |whole, members| {
            let plan = plan(
                trigger(),
                Signal::Kill,
                Found { whole, members },
                &protect(),
                1,
            );
            assert_eq!(chosen(&plan), [100], "the process alone");
            assert!(plan.cgroup_kill.is_none());
            match plan.reach {
                Reach::ProcessAlone { why } => why,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            refused(cgroup("/", true), members(&[])),
            CgroupRefusal::Root
        );
        assert_eq!(
            refused(cgroup("/user.slice", true), members(&[])),
            CgroupRefusal::Slice {
                cgroup: "/user.slice".into()
            }
        );
        let why = refused(
            cgroup("/test", true),
            members(&[(101, "worker"), (102, "sshd")]),
        );
        assert_eq!(
            why,
            CgroupRefusal::Protected {
                cgroup: "/test".into(),
                pid: 102,
                name: "sshd".into(),
                protection: Protection::Listed("sshd".into())
            }
        );
        let why = refused(Whole::NoCgroup("nothing mounted".into()), members(&[]));
        assert!(matches!(why, CgroupRefusal::Unknown { .. }));
    }

    #[test]
    fn slices_are_told_by_their_last_component() {
        assert!(is_slice("/user.slice"));
        assert!(is_slice("/user.slice/user-1000.slice"));
        assert!(!is_slice("/user.slice/user-1000.slice/session-1.scope"));
        assert!(!is_slice("/system.slice/web.service"));
    }
}
