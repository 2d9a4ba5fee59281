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
}

impl Outcome {
    /// What was done, for the log's `action` field: `SIGTERM`, `SIGKILL`,
    /// `SIGKILL (kernel)`, `alert` or `none`.
    pub fn action(&self) -> &'static str {
        match self {
            Outcome::Sent { signal }
            | Outcome::Gone { signal }
            | Outcome::DryRun { signal }
            | Outcome::Failed { signal, .. } => signal.name(),
            Outcome::KilledByKernel => "SIGKILL (kernel)",
            Outcome::Alerted => "alert",
            Outcome::Refused { .. }
            | Outcome::UnderOnConfirmation { .. }
            | Outcome::BackUnderAfterGrace => "none",
        }
    }

    /// A short, stable name for metric labels: `sent`, `over-limit`
    /// (action `alert`), `refused`, `gone`, `dry-run`, `under-limit`, `failed`.
    pub fn class(&self) -> &'static str {
        match self {
            Outcome::Sent { .. } | Outcome::KilledByKernel => "sent",
            Outcome::Alerted => "over-limit",
            Outcome::Refused { .. } => "refused",
            Outcome::Gone { .. } => "gone",
            Outcome::DryRun { .. } => "dry-run",
            Outcome::UnderOnConfirmation { .. } | Outcome::BackUnderAfterGrace => "under-limit",
            Outcome::Failed { .. } => "failed",
        }
    }

    /// Whether a signal reached the process (from userspace or the kernel).
    pub fn signalled(&self) -> bool {
        matches!(self, Outcome::Sent { .. } | Outcome::KilledByKernel)
    }
}

/// How it went, for the log's `result` field and for people.
impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Sent { .. } | Outcome::KilledByKernel => f.write_str("sent"),
            Outcome::Alerted => f.write_str("over the limit"),
            Outcome::Refused { protection } => write!(f, "refused: {protection}"),
            Outcome::Gone { .. } => f.write_str("gone: the process exited first"),
            Outcome::DryRun { .. } => f.write_str("dry-run: not sent"),
            Outcome::UnderOnConfirmation { rss } => {
                write!(f, "under the limit on confirmation ({rss} bytes)")
            }
            Outcome::BackUnderAfterGrace => f.write_str("back under the limit after grace"),
            Outcome::Failed { error, .. } => write!(f, "failed: {error}"),
        }
    }
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
}
