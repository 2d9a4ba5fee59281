//! What procespy did about a process: the [`Outcome`] of a breach, and the
//! [`ActionRecord`] that logs, alerts, metrics and `procespy status` all
//! take. Texts are made from the enum, never parsed back.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{rules::Protection, sys::Signal, text::escape};

/// What happened to a process over its limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The signal was sent.
    Sent {
        /// Which.
        signal: Signal,
    },
    /// The kernel sent SIGKILL at the page that crossed the limit.
    KilledByKernel,
    /// The limit's action is `alert`: people are told, nothing is signalled.
    Alerted,
    /// The process passed its limit's warning threshold (`warn_at`), under
    /// the limit: people are told, nothing is signalled.
    Warned {
        /// The threshold, in bytes.
        warn_bytes: u64,
    },
    /// The process is never signalled.
    Refused {
        /// Why.
        protection: Protection,
    },
    /// The process exited before the signal could be sent.
    Gone {
        /// The signal that was not needed.
        signal: Signal,
    },
    /// A dry run: the signal was decided but not sent.
    DryRun {
        /// What would have been sent.
        signal: Signal,
    },
    /// The confirming read found the process at or under its limit.
    UnderOnConfirmation {
        /// What that read found, in bytes.
        rss: u64,
    },
    /// Back under the limit when the grace after SIGTERM ended: no SIGKILL.
    BackUnderAfterGrace,
    /// Sending the signal failed.
    Failed {
        /// The signal.
        signal: Signal,
        /// The error, as the OS put it.
        error: String,
    },
    /// The signal went to the process's group or cgroup (`kill = "group"`
    /// or `"cgroup"`): every process it reached, or spared, is listed.
    Reached {
        /// The signal (`cgroup.kill` sends SIGKILL).
        signal: Signal,
        /// How the processes were reached.
        reach: Reach,
        /// The processes, the one over its limit first.
        members: Vec<Member>,
    },
}

/// How a signal for one process reached others.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reach {
    /// Its process group, member by member through pidfds.
    Group {
        /// The process group.
        pgid: u32,
    },
    /// Its cgroup, emptied at once by the kernel (`cgroup.kill`).
    Cgroup {
        /// The cgroup's path in its hierarchy.
        cgroup: String,
    },
    /// Its cgroup's processes, one by one through pidfds.
    CgroupMembers {
        /// The cgroup's path in its hierarchy.
        cgroup: String,
        /// Why not through `cgroup.kill`.
        why: NoCgroupKill,
    },
    /// The process alone: its cgroup may not be killed.
    ProcessAlone {
        /// Why.
        why: CgroupRefusal,
    },
}

/// Why a cgroup is emptied process by process instead of by `cgroup.kill`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoCgroupKill {
    /// The process's cgroup is in a cgroup v1 hierarchy (no cgroup v2 is
    /// mounted).
    V1,
    /// The kernel has no `cgroup.kill` (it came in Linux 5.14).
    NoKillFile,
}

/// Why a process's cgroup is not killed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CgroupRefusal {
    /// The cgroup could not be found (no cgroup hierarchy is mounted, or
    /// the process left it).
    Unknown {
        /// What went wrong.
        reason: String,
    },
    /// It is the root cgroup: every process of the machine.
    Root,
    /// It is a systemd slice, which groups whole services or sessions.
    Slice {
        /// The cgroup's path.
        cgroup: String,
    },
    /// It holds a process that is never signalled.
    Protected {
        /// The cgroup's path.
        cgroup: String,
        /// That process.
        pid: u32,
        /// Its name.
        name: String,
        /// Why it is never signalled.
        protection: Protection,
    },
}

/// One process a group's or cgroup's signal concerned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The process.
    pub pid: u32,
    /// Its name.
    pub name: String,
    /// What became of it.
    pub result: MemberResult,
}

impl MemberResult {
    /// What the list of members calls it: `signalled`, `spared`, `gone`,
    /// `failed`.
    fn label(&self) -> &'static str {
        match self {
            MemberResult::Sent => "signalled",
            MemberResult::Spared { .. } => "spared",
            MemberResult::Gone => "gone",
            MemberResult::Failed { .. } => "failed",
        }
    }
}

/// What became of one [`Member`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MemberResult {
    /// Signalled.
    Sent,
    /// It had exited already.
    Gone,
    /// Never signalled.
    Spared {
        /// Why.
        protection: Protection,
    },
    /// The signal could not be sent.
    Failed {
        /// The error, as the OS put it.
        error: String,
    },
}

impl Outcome {
    /// What was done, for the log's `action` field: `SIGTERM`, `SIGKILL`,
    /// `SIGKILL (kernel)`, `alert`, `warning` or `none`.
    pub fn action(&self) -> &'static str {
        match self {
            Outcome::Sent { signal }
            | Outcome::Gone { signal }
            | Outcome::DryRun { signal }
            | Outcome::Failed { signal, .. } => signal.name(),
            // SIGTERM goes to each process; only SIGKILL is cgroup.kill.
            Outcome::Reached {
                signal: Signal::Kill,
                reach: Reach::Cgroup { .. },
                ..
            } => "SIGKILL (cgroup.kill)",
            Outcome::Reached { signal, .. } => signal.name(),
            Outcome::KilledByKernel => "SIGKILL (kernel)",
            Outcome::Alerted => "alert",
            Outcome::Warned { .. } => "warning",
            Outcome::Refused { .. }
            | Outcome::UnderOnConfirmation { .. }
            | Outcome::BackUnderAfterGrace => "none",
        }
    }

    /// A short, stable name for metric labels: `sent`, `over-limit`
    /// (action `alert`), `warning`, `refused`, `gone`, `dry-run`, `under-limit`, `failed`.
    pub fn class(&self) -> &'static str {
        match self {
            Outcome::Sent { .. } | Outcome::KilledByKernel => "sent",
            Outcome::Alerted => "over-limit",
            Outcome::Warned { .. } => "warning",
            Outcome::Refused { .. } => "refused",
            Outcome::Gone { .. } => "gone",
            Outcome::DryRun { .. } => "dry-run",
            Outcome::UnderOnConfirmation { .. } | Outcome::BackUnderAfterGrace => "under-limit",
            Outcome::Failed { .. } => "failed",
            Outcome::Reached { members, .. } => {
                let any =
                    |wanted: fn(&MemberResult) -> bool| members.iter().any(|m| wanted(&m.result));
                if any(|r| *r == MemberResult::Sent) {
                    "sent"
                } else if any(|r| matches!(r, MemberResult::Failed { .. })) {
                    "failed"
                } else if any(|r| *r == MemberResult::Gone) {
                    "gone"
                } else {
                    "refused"
                }
            }
        }
    }

    /// Whether a signal reached the process (from userspace or the kernel),
    /// or, for a group or cgroup, any of its processes.
    pub fn signalled(&self) -> bool {
        match self {
            Outcome::Sent { .. } | Outcome::KilledByKernel => true,
            Outcome::Reached { members, .. } => {
                members.iter().any(|m| m.result == MemberResult::Sent)
            }
            _ => false,
        }
    }
}

/// How it went, for the log's `result` field and for people.
impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Sent { .. } | Outcome::KilledByKernel => f.write_str("sent"),
            Outcome::Alerted => f.write_str("over the limit"),
            Outcome::Warned { warn_bytes } => write!(
                f,
                "over the warning threshold ({}), under the limit",
                crate::text::human_size(*warn_bytes)
            ),
            Outcome::Refused { protection } => write!(f, "refused: {protection}"),
            Outcome::Gone { .. } => f.write_str("gone: the process exited first"),
            Outcome::DryRun { .. } => f.write_str("dry-run: not sent"),
            Outcome::UnderOnConfirmation { rss } => {
                write!(f, "under the limit on confirmation ({rss} bytes)")
            }
            Outcome::BackUnderAfterGrace => f.write_str("back under the limit after grace"),
            Outcome::Failed { error, .. } => write!(f, "failed: {error}"),
            Outcome::Reached {
                signal: Signal::Term,
                reach: Reach::Cgroup { cgroup },
                members,
            } => {
                write!(
                    f,
                    "sent to each process of cgroup {} (cgroup.kill after the grace): ",
                    escape(cgroup)
                )?;
                write_members(f, members)
            }
            Outcome::Reached { reach, members, .. } => {
                write!(f, "{reach}: ")?;
                write_members(f, members)
            }
        }
    }
}

impl fmt::Display for Reach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reach::Group { pgid } => write!(f, "sent to process group {pgid}"),
            Reach::Cgroup { cgroup } => write!(f, "cgroup.kill of {}", escape(cgroup)),
            Reach::CgroupMembers { cgroup, why } => write!(
                f,
                "sent to each process of cgroup {} ({why})",
                escape(cgroup)
            ),
            Reach::ProcessAlone { why } => write!(f, "sent to the process alone ({why})"),
        }
    }
}

impl fmt::Display for NoCgroupKill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NoCgroupKill::V1 => "no cgroup v2 is mounted: cgroup v1 has no cgroup.kill",
            NoCgroupKill::NoKillFile => "this kernel has no cgroup.kill",
        })
    }
}

impl fmt::Display for CgroupRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CgroupRefusal::Unknown { reason } => write!(f, "its cgroup is unknown: {reason}"),
            CgroupRefusal::Root => f.write_str("it is in the root cgroup, which is never killed"),
            CgroupRefusal::Slice { cgroup } => {
                write!(f, "its cgroup {} is a slice, never killed", escape(cgroup))
            }
            CgroupRefusal::Protected {
                cgroup,
                pid,
                name,
                protection,
            } => write!(
                f,
                "its cgroup {} holds {pid} {}, which is protected: {protection}",
                escape(cgroup),
                escape(name)
            ),
        }
    }
}

/// "signalled 10 a, 11 b; spared 12 c (…); gone 13 d; failed 14 e (…)".
fn write_members(f: &mut fmt::Formatter<'_>, members: &[Member]) -> fmt::Result {
    let mut first = true;
    for label in ["signalled", "spared", "gone", "failed"] {
        let chosen: Vec<&Member> = members
            .iter()
            .filter(|m| m.result.label() == label)
            .collect();
        if chosen.is_empty() {
            continue;
        }
        if !first {
            f.write_str("; ")?;
        }
        first = false;
        write!(f, "{label} ")?;
        for (i, member) in chosen.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} {}", member.pid, escape(&member.name))?;
            match &member.result {
                MemberResult::Spared { protection } => write!(f, " ({protection})")?,
                MemberResult::Failed { error } => write!(f, " ({error})")?,
                _ => {}
            }
        }
    }
    if first {
        f.write_str("no process")?;
    }
    Ok(())
}

/// One thing procespy did (or decided not to do) about a process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "RecordWire", from = "RecordWire")]
pub struct ActionRecord {
    /// When, as seconds since the Unix epoch.
    pub time: f64,
    /// The process.
    pub pid: u32,
    /// Its name.
    pub name: String,
    /// Its user (name, or uid when the name is unknown).
    pub user: String,
    /// Its RSS in bytes when the action was decided.
    pub rss: u64,
    /// The limit in bytes.
    pub limit: u64,
    /// The rule: the limit's name or pattern.
    pub rule: String,
    /// What happened.
    pub outcome: Outcome,
}

/// [`ActionRecord`] as JSON: the typed outcome, and beside it the `action`
/// and `result` texts that `status --json` has always carried (read back
/// from nowhere: [`ActionRecord`] takes the outcome).
#[derive(Serialize, Deserialize)]
struct RecordWire {
    time: f64,
    pid: u32,
    name: String,
    user: String,
    rss: u64,
    limit: u64,
    rule: String,
    #[serde(default, skip_deserializing)]
    action: String,
    #[serde(default, skip_deserializing)]
    result: String,
    outcome: Outcome,
}

impl From<ActionRecord> for RecordWire {
    fn from(record: ActionRecord) -> Self {
        RecordWire {
            action: record.outcome.action().to_owned(),
            result: record.outcome.to_string(),
            time: record.time,
            pid: record.pid,
            name: record.name,
            user: record.user,
            rss: record.rss,
            limit: record.limit,
            rule: record.rule,
            outcome: record.outcome,
        }
    }
}

impl From<RecordWire> for ActionRecord {
    fn from(wire: RecordWire) -> Self {
        ActionRecord {
            time: wire.time,
            pid: wire.pid,
            name: wire.name,
            user: wire.user,
            rss: wire.rss,
            limit: wire.limit,
            rule: wire.rule,
            outcome: wire.outcome,
        }
    }
}

impl ActionRecord {
    /// One line for a terminal, names escaped: `SIGTERM grower (pid 77,
    /// user alice): sent`.
    pub(crate) fn summary(&self) -> String {
        format!(
            "{} {} (pid {}, user {}): {}",
            self.outcome.action(),
            escape(&self.name),
            self.pid,
            escape(&self.user),
            escape(&self.outcome.to_string()),
        )
    }

    /// Logs the record: a warning for a signal sent, info otherwise.
    pub(crate) fn log(&self) {
        let Self {
            pid,
            name,
            user,
            rss,
            limit,
            rule,
            outcome,
            ..
        } = self;
        let action = outcome.action();
        let result = outcome.to_string();
        let message = format!("{action} {name} (pid {pid}, user {user}): {result}");
        // One set of fields, at either level.
        macro_rules! emit {
            ($level:ident) => {
                tracing::$level!(
                    event = "action",
                    pid,
                    name,
                    user,
                    rss,
                    limit,
                    rule,
                    action,
                    result,
                    "{message}"
                )
            };
        }
        if outcome.signalled() {
            emit!(warn);
        } else {
            emit!(info);
        }
    }
}

/// Records for the tests of the modules that take them.
#[cfg(test)]
pub(crate) mod testing {
    use super::{ActionRecord, Outcome};

    /// A record of `outcome` for process `pid` under rule `rule`.
    pub(crate) fn record(pid: u32, rule: &str, outcome: Outcome) -> ActionRecord {
        ActionRecord {
            time: 0.0,
            pid,
            name: rule.into(),
            user: "alice".into(),
            rss: 2,
            limit: 1,
            rule: rule.into(),
            outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(outcome: Outcome) -> ActionRecord {
        ActionRecord {
            time: 1.5,
            pid: 42,
            name: "chromium".into(),
            user: "alice".into(),
            rss: 300,
            limit: 200,
            rule: "chromium".into(),
            outcome,
        }
    }

    #[test]
    fn json_carries_the_texts_and_the_typed_outcome_back() {
        let original = record(Outcome::Refused {
            protection: Protection::Init,
        });
        let json = serde_json::to_value(&original).unwrap();
        assert_eq!(json["action"], "none");
        assert_eq!(json["result"], "refused: PID 1 is never signalled");
        assert_eq!(json["outcome"]["kind"], "refused");
        let back: ActionRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn every_outcome_has_an_action_a_class_and_a_text() {
        let all = [
            Outcome::Sent {
                signal: Signal::Term,
            },
            Outcome::KilledByKernel,
            Outcome::Alerted,
            Outcome::Refused {
                protection: Protection::Myself,
            },
            Outcome::Gone {
                signal: Signal::Kill,
            },
            Outcome::DryRun {
                signal: Signal::Term,
            },
            Outcome::UnderOnConfirmation { rss: 7 },
            Outcome::BackUnderAfterGrace,
            Outcome::Failed {
                signal: Signal::Kill,
                error: "EPERM".into(),
            },
        ];
        let classes: Vec<_> = all.iter().map(Outcome::class).collect();
        assert_eq!(
            classes,
            [
                "sent",
                "sent",
                "over-limit",
                "refused",
                "gone",
                "dry-run",
                "under-limit",
                "under-limit",
                "failed"
            ]
        );
        let actions: Vec<_> = all.iter().map(Outcome::action).collect();
        assert_eq!(
            actions,
            [
                "SIGTERM",
                "SIGKILL (kernel)",
                "alert",
                "none",
                "SIGKILL",
                "SIGTERM",
                "none",
                "none",
                "SIGKILL"
            ]
        );
        assert_eq!(all[4].to_string(), "gone: the process exited first");
        assert!(all[0].signalled() && all[1].signalled() && !all[5].signalled());
    }

    #[test]
    fn only_the_sigkill_of_a_cgroup_is_cgroup_kill() {
        let reached = |signal| Outcome::Reached {
            signal,
            reach: Reach::Cgroup {
                cgroup: "/svc".into(),
            },
            members: vec![Member {
                pid: 10,
                name: "a".into(),
                result: MemberResult::Sent,
            }],
        };
        assert_eq!(reached(Signal::Kill).action(), "SIGKILL (cgroup.kill)");
        assert_eq!(reached(Signal::Term).action(), "SIGTERM");
        assert_eq!(
            reached(Signal::Term).to_string(),
            "sent to each process of cgroup /svc (cgroup.kill after the grace): signalled 10 a"
        );
    }

    #[test]
    fn a_reached_group_lists_every_process_and_travels_as_json() {
        let member = |pid, name: &str, result| Member {
            pid,
            name: name.into(),
            result,
        };
        let reached = Outcome::Reached {
            signal: Signal::Kill,
            reach: Reach::CgroupMembers {
                cgroup: "/svc\n".into(),
                why: NoCgroupKill::V1,
            },
            members: vec![
                member(10, "a\nb", MemberResult::Gone),
                member(
                    11,
                    "c",
                    MemberResult::Failed {
                        error: "EPERM".into(),
                    },
                ),
            ],
        };
        assert_eq!(
            reached.to_string(),
            "sent to each process of cgroup /svc\\n (no cgroup v2 is mounted: cgroup v1 \
             has no cgroup.kill): gone 10 a\\nb; failed 11 c (EPERM)"
        );
        assert_eq!((reached.class(), reached.signalled()), ("failed", false));
        let record = record(reached);
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["outcome"]["reach"]["kind"], "cgroup_members");
        let back: ActionRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, record);
        let refused = Outcome::Reached {
            signal: Signal::Term,
            reach: Reach::ProcessAlone {
                why: CgroupRefusal::Root,
            },
            members: vec![member(10, "a", MemberResult::Sent)],
        };
        assert_eq!(
            refused.to_string(),
            "sent to the process alone (it is in the root cgroup, which is never killed): \
             signalled 10 a"
        );
        assert_eq!((refused.class(), refused.action()), ("sent", "SIGTERM"));
    }
}
