//! What people read: the popup's summary and body, the email's subject and
//! body. Pure: every input (the actions, the host name, the clock's
//! rendering, the largest processes) is passed in.

use std::fmt::Write as _;

use super::story::{self, Story};
use crate::{
    action::{ActionRecord, Outcome},
    text::escape,
};

/// What kind of thing an action is, for the alerts. Actions of no kind
/// (the process was gone before the signal, it was back under the limit on
/// confirmation or after the grace) are logged but never alerted about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A signal was sent (`SIGTERM`, `SIGKILL`, or `SIGKILL (kernel)`).
    Kill,
    /// The limit's action is `alert`: the process was left running.
    Alert,
    /// A dry run: the signal that would have been sent.
    DryRun,
    /// A protected process: nothing was sent.
    Refusal,
    /// Sending the signal failed.
    FailedKill,
    /// Past the limit's warning threshold (`warn_at`), under the limit.
    Warning,
}

impl Kind {
    /// The kind of `record`, or `None` for an action nobody needs to hear of.
    pub(crate) fn of(record: &ActionRecord) -> Option<Kind> {
        match record.outcome {
            Outcome::Sent { .. } | Outcome::KilledByKernel => Some(Kind::Kill),
            Outcome::Alerted => Some(Kind::Alert),
            Outcome::Warned { .. } => Some(Kind::Warning),
            Outcome::DryRun { .. } => Some(Kind::DryRun),
            Outcome::Refused { .. } => Some(Kind::Refusal),
            Outcome::Failed { .. } => Some(Kind::FailedKill),
            Outcome::Reached { .. } => record.outcome.signalled().then_some(Kind::Kill),
            Outcome::Gone { .. }
            | Outcome::UnderOnConfirmation { .. }
            | Outcome::BackUnderAfterGrace => None,
        }
    }

    /// The plural noun used in summaries: "kills", "alerts", ….
    fn plural(self) -> &'static str {
        match self {
            Kind::Kill => "kills",
            Kind::Alert => "alerts",
            Kind::DryRun => "dry-run decisions",
            Kind::Refusal => "refusals",
            Kind::FailedKill => "failed kills",
            Kind::Warning => "warnings",
        }
    }

    /// The singular noun.
    fn singular(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Alert => "alert",
            Kind::DryRun => "dry-run decision",
            Kind::Refusal => "refusal",
            Kind::FailedKill => "failed kill",
            Kind::Warning => "warning",
        }
    }
}

/// One message about one limit, as the cooldown lets it out: the action it
/// is about, and those held back since the last message about the limit.
#[derive(Clone, Debug)]
pub(crate) struct Notice {
    /// The action the message is about (the latest one).
    pub(crate) headline: ActionRecord,
    /// Actions held back by the cooldown, oldest first, not counting the
    /// headline: new processes and follow-ups (a later action on a process
    /// already reported, like SIGKILL after the grace).
    pub(crate) earlier: Vec<ActionRecord>,
    /// How many of `earlier` are new processes (the rest are follow-ups).
    pub(crate) more: usize,
    /// When the previous message about this limit went out, if `earlier`
    /// is not empty: the "since" of "and 14 more kills of chromium since 10:02".
    pub(crate) since: Option<f64>,
}

impl Notice {
    /// A notice about `record` alone.
    pub(crate) fn single(record: ActionRecord) -> Notice {
        Notice {
            headline: record,
            earlier: Vec::new(),
            more: 0,
            since: None,
        }
    }

    /// "and 14 more kills of chromium since 10:02", or `None` when nothing
    /// was held back.
    pub(crate) fn summary_line(&self, clock: &dyn Fn(f64) -> LocalTime) -> Option<String> {
        if self.more == 0 {
            return None;
        }
        let kinds: Vec<Kind> = self.earlier.iter().filter_map(Kind::of).collect();
        let first = kinds.first().copied().unwrap_or(Kind::Kill);
        let noun = if kinds.iter().all(|&k| k == first) {
            if self.more == 1 {
                first.singular()
            } else {
                first.plural()
            }
        } else if self.more == 1 {
            "action"
        } else {
            "actions"
        };
        let preposition = match first {
            Kind::Kill | Kind::FailedKill => "of",
            _ => "on",
        };
        let mut line = format!(
            "and {} more {noun} {preposition} {}",
            self.more, self.headline.name
        );
        if let Some(since) = self.since {
            let _ = write!(line, " since {}", clock(since).hour_minute());
        }
        Some(line)
    }
}

/// A moment in local time, broken down (see [`LocalTime::from_epoch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LocalTime {
    /// Year, e.g. 2025.
    pub(crate) year: i32,
    /// Month, 1–12.
    pub(crate) month: u32,
    /// Day of the month, 1–31.
    pub(crate) day: u32,
    /// Hour, 0–23.
    pub(crate) hour: u32,
    /// Minute, 0–59.
    pub(crate) minute: u32,
    /// Second, 0–60.
    pub(crate) second: u32,
    /// Offset from UTC in seconds (east positive).
    pub(crate) offset: i64,
}

impl LocalTime {
    /// `epoch` (seconds since 1970) in the system's time zone (`TZ`,
    /// `/etc/localtime`), via `localtime_r`; UTC if that fails.
    pub(crate) fn from_epoch(epoch: f64) -> LocalTime {
        let secs = epoch.floor() as libc::time_t;
        // SAFETY: localtime_r fills the zeroed tm we own; tzset is called by
        // localtime_r as needed.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        let ok = !unsafe { libc::localtime_r(&secs, &mut tm) }.is_null();
        if !ok {
            return LocalTime::utc(epoch);
        }
        LocalTime {
            year: tm.tm_year + 1900,
            month: (tm.tm_mon + 1) as u32,
            day: tm.tm_mday as u32,
            hour: tm.tm_hour as u32,
            minute: tm.tm_min as u32,
            second: tm.tm_sec as u32,
            offset: tm.tm_gmtoff,
        }
    }

    /// `epoch` in UTC (pure; for tests and as a fallback).
    pub(crate) fn utc(epoch: f64) -> LocalTime {
        let secs = epoch.floor() as i64;
        let days = secs.div_euclid(86_400);
        let rest = secs.rem_euclid(86_400);
        // Civil from days (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        LocalTime {
            year,
            month,
            day,
            hour: (rest / 3600) as u32,
            minute: (rest / 60 % 60) as u32,
            second: (rest % 60) as u32,
            offset: 0,
        }
    }

    /// `10:02`.
    pub(crate) fn hour_minute(&self) -> String {
        format!("{:02}:{:02}", self.hour, self.minute)
    }

    /// `10:02:13`.
    pub(crate) fn clock(&self) -> String {
        format!("{:02}:{:02}:{:02}", self.hour, self.minute, self.second)
    }

    /// `2025-11-25 10:02:13 +0100`.
    pub(crate) fn full(&self) -> String {
        let sign = if self.offset < 0 { '-' } else { '+' };
        let offset = self.offset.abs();
        format!(
            "{:04}-{:02}-{:02} {} {sign}{:02}{:02}",
            self.year,
            self.month,
            self.day,
            self.clock(),
            offset / 3600,
            offset / 60 % 60
        )
    }
}

/// One of the largest processes, for the email.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TopProcess {
    /// Its PID.
    pub(crate) pid: u32,
    /// Its user's name.
    pub(crate) user: String,
    /// Its name.
    pub(crate) name: String,
    /// Its RSS in bytes.
    pub(crate) rss: u64,
}

/// A popup's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PopupText {
    /// The one-line summary: "procespy stopped chromium".
    pub(crate) summary: String,
    /// The body: PID, user, RSS, limit and the action.
    pub(crate) body: String,
}

/// An email's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EmailText {
    /// The subject.
    pub(crate) subject: String,
    /// The plain-text body.
    pub(crate) body: String,
    /// The chart of the process's RSS, as PNG, shown inline.
    pub(crate) chart: Option<Vec<u8>>,
}

/// A size for the alerts: binary units with one decimal (`64.3 MiB`,
/// `1.5 GiB`), so that an RSS just over its limit does not read the same.
pub(crate) fn size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1023.95 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The RSS beside its limit: [`size`], or, when both would read the same,
/// the limit plus how far over it is (`64.0 MiB + 40.0 KiB`).
pub(crate) fn rss_text(rss: u64, limit: u64) -> String {
    let text = size(rss);
    if rss > limit && text == size(limit) {
        format!("{text} + {}", size(rss - limit))
    } else {
        text
    }
}

/// "procespy stopped chromium", "chromium is over its memory limit", ….
fn headline(record: &ActionRecord) -> String {
    let name = escape(&record.name);
    match Kind::of(record) {
        Some(Kind::Kill) => format!("procespy stopped {name}"),
        Some(Kind::Alert) => format!("{name} is over its memory limit"),
        Some(Kind::DryRun) => format!("procespy would stop {name} (dry run)"),
        Some(Kind::Refusal) => format!("{name} is over its memory limit but protected"),
        Some(Kind::FailedKill) => format!("procespy could not stop {name}"),
        Some(Kind::Warning) => format!(
            "{name} is at {:.0}% of its memory limit",
            record.rss as f64 * 100.0 / record.limit.max(1) as f64
        ),
        None => format!("procespy: {name}"),
    }
}

/// "SIGTERM: sent", "alert only: the process keeps running", ….
fn action_text(record: &ActionRecord) -> String {
    match Kind::of(record) {
        Some(Kind::Alert) => "alert only: the process keeps running".to_owned(),
        Some(Kind::Warning) => "warning: nothing is done before the limit".to_owned(),
        Some(Kind::Refusal) => format!("no signal: {}", escape(&record.outcome.to_string())),
        Some(Kind::DryRun) => format!("{} not sent (dry run)", record.outcome.action()),
        _ => format!(
            "{}: {}",
            record.outcome.action(),
            escape(&record.outcome.to_string())
        ),
    }
}

/// Escapes the characters the notification spec's body markup (and HTML
/// text) gives a meaning.
pub(crate) fn escape_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Whether `record` is about a signal that went out (its story has a
/// signal and an exit).
fn signalled(record: &ActionRecord) -> bool {
    Kind::of(record) == Some(Kind::Kill)
}

/// The popup for `notice`, with the story of its process when the daemon
/// had one.
pub(crate) fn popup(
    notice: &Notice,
    story: Option<&Story>,
    clock: &dyn Fn(f64) -> LocalTime,
) -> PopupText {
    let r = &notice.headline;
    let mut body = format!(
        "PID {}, user {}\nRSS {}, limit {} (rule {})\n{}",
        r.pid,
        escape(&r.user),
        rss_text(r.rss, r.limit),
        size(r.limit),
        escape(&r.rule),
        action_text(r)
    );
    if let Some(line) = story.and_then(|s| story::popup_line(r, s, signalled(r))) {
        body.push('\n');
        body.push_str(&line);
    }
    if let Some(line) = notice.summary_line(clock) {
        body.push('\n');
        body.push_str(&line);
    }
    PopupText {
        summary: headline(r),
        body: escape_markup(&body),
    }
}

/// The email for `notice`, sent from `host`, with the story of its process
/// (text and chart) when the daemon had one, and the largest processes.
pub(crate) fn email(
    notice: &Notice,
    story: Option<&Story>,
    host: &str,
    top: &[TopProcess],
    now: f64,
    clock: &dyn Fn(f64) -> LocalTime,
) -> EmailText {
    let r = &notice.headline;
    let host = escape(host);
    let host = host.as_str();
    let mut subject = format!(
        "[procespy@{host}] {} (PID {}, RSS {} / limit {})",
        headline(r).trim_start_matches("procespy "),
        r.pid,
        rss_text(r.rss, r.limit),
        size(r.limit)
    );
    let summary = notice.summary_line(clock);
    if let Some(line) = &summary {
        subject.push_str(", ");
        subject.push_str(line);
    }
    let mut body = String::new();
    let _ = writeln!(body, "{} on {host}.\n", headline(r));
    let rows = [
        ("Time", clock(r.time).full()),
        ("Host", host.to_owned()),
        ("Process", format!("{} (PID {})", escape(&r.name), r.pid)),
        ("User", escape(&r.user)),
        ("RSS", format!("{} ({} bytes)", size(r.rss), r.rss)),
        ("Limit", format!("{} ({} bytes)", size(r.limit), r.limit)),
        ("Rule", escape(&r.rule)),
        ("Action", r.outcome.action().to_owned()),
        ("Result", escape(&r.outcome.to_string())),
    ];
    let told = story.map(|s| story::lines(r, s, signalled(r), clock));
    for (label, value) in rows.into_iter().chain(told.into_iter().flatten()) {
        let _ = writeln!(body, "{:<8} {value}", format!("{label}:"));
    }
    if let Some(line) = &summary {
        let _ = writeln!(body, "\n{line}:");
        for e in &notice.earlier {
            let _ = writeln!(
                body,
                "  {}  PID {:<7} {:<10} RSS {:<9} {}: {}",
                clock(e.time).clock(),
                e.pid,
                escape(&e.user),
                size(e.rss),
                e.outcome.action(),
                escape(&e.outcome.to_string())
            );
        }
    }
    let _ = writeln!(
        body,
        "\nThe {} largest processes at {}:",
        top.len(),
        clock(now).clock()
    );
    let _ = writeln!(
        body,
        "  {:>7}  {:<12} {:<16} {:>9}",
        "PID", "USER", "NAME", "RSS"
    );
    for p in top {
        let _ = writeln!(
            body,
            "  {:>7}  {:<12} {:<16} {:>9}",
            p.pid,
            escape(&p.user),
            escape(&p.name),
            size(p.rss)
        );
    }
    let _ = write!(body, "\n-- \nprocespy, the memory guard on {host}\n");
    let chart = story.and_then(|s| story::chart(r, s)).and_then(|chart| {
        match crate::chart::png(&chart, crate::chart::SIZE) {
            Ok(png) => Some(png),
            Err(err) => {
                tracing::warn!(
                    "the email about {} goes without its chart: {err:#}",
                    escape(&r.name)
                );
                None
            }
        }
    });
    EmailText {
        subject,
        body,
        chart,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{rules::Protection, sys::Signal};

    const MIB: u64 = 1 << 20;

    pub(crate) fn record(pid: u32, outcome: Outcome, time: f64) -> ActionRecord {
        ActionRecord {
            time,
            rss: 1600 * MIB,
            limit: 1536 * MIB,
            ..crate::action::testing::record(pid, "chromium", outcome)
        }
    }

    fn utc(epoch: f64) -> LocalTime {
        LocalTime::utc(epoch)
    }

    // 2025-11-25 10:02:13 UTC
    const T: f64 = 1_764_064_933.0;

    #[test]
    fn sizes_have_one_decimal() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1024), "1.0 KiB");
        assert_eq!(size(64 * MIB), "64.0 MiB");
        assert_eq!(size(64 * MIB + 300 * 1024), "64.3 MiB");
        assert_eq!(size(1024 * MIB - 1), "1.0 GiB");
        assert_eq!(size(1536 * MIB), "1.5 GiB");
        assert_eq!(
            rss_text(64 * MIB + 40 * 1024, 64 * MIB),
            "64.0 MiB + 40.0 KiB"
        );
        assert_eq!(rss_text(65 * MIB, 64 * MIB), "65.0 MiB");
        assert_eq!(rss_text(10, 64 * MIB), "10 B");
    }

    #[test]
    fn kinds_pick_what_matters() {
        let kind = |outcome| Kind::of(&record(1, outcome, T));
        assert_eq!(
            kind(Outcome::Sent {
                signal: Signal::Term
            }),
            Some(Kind::Kill)
        );
        assert_eq!(kind(Outcome::KilledByKernel), Some(Kind::Kill));
        assert_eq!(kind(Outcome::Alerted), Some(Kind::Alert));
        assert_eq!(
            kind(Outcome::DryRun {
                signal: Signal::Term
            }),
            Some(Kind::DryRun)
        );
        assert_eq!(
            kind(Outcome::Refused {
                protection: Protection::Myself
            }),
            Some(Kind::Refusal)
        );
        assert_eq!(
            kind(Outcome::Failed {
                signal: Signal::Kill,
                error: "EPERM".into()
            }),
            Some(Kind::FailedKill)
        );
        assert_eq!(
            kind(Outcome::Gone {
                signal: Signal::Term
            }),
            None
        );
        assert_eq!(kind(Outcome::UnderOnConfirmation { rss: 5 }), None);
        assert_eq!(kind(Outcome::BackUnderAfterGrace), None);
    }

    #[test]
    fn utc_breaks_down_a_known_moment() {
        let t = LocalTime::utc(T);
        assert_eq!((t.year, t.month, t.day), (2025, 11, 25));
        assert_eq!(t.full(), "2025-11-25 10:02:13 +0000");
        assert_eq!(t.hour_minute(), "10:02");
        let leap = LocalTime::utc(951_782_400.0); // 2000-02-29
        assert_eq!((leap.year, leap.month, leap.day), (2000, 2, 29));
    }

    #[test]
    fn offsets_are_written_with_sign() {
        let mut t = LocalTime::utc(T);
        t.offset = -(5 * 3600 + 30 * 60);
        assert!(t.full().ends_with(" -0530"), "{}", t.full());
    }

    #[test]
    fn a_popup_names_process_pid_user_rss_limit_and_action() {
        let notice = Notice::single(record(
            1234,
            Outcome::Sent {
                signal: Signal::Term,
            },
            T,
        ));
        let text = popup(&notice, None, &utc);
        assert_eq!(text.summary, "procespy stopped chromium");
        assert_eq!(
            text.body,
            "PID 1234, user alice\nRSS 1.6 GiB, limit 1.5 GiB (rule chromium)\nSIGTERM: sent"
        );
    }

    #[test]
    fn a_summary_counts_what_the_cooldown_held_back() {
        let earlier: Vec<_> = (0..14)
            .map(|i| {
                record(
                    2000 + i,
                    Outcome::Sent {
                        signal: Signal::Term,
                    },
                    T + 1.0 + f64::from(i),
                )
            })
            .collect();
        let notice = Notice {
            headline: record(
                3000,
                Outcome::Sent {
                    signal: Signal::Term,
                },
                T + 50.0,
            ),
            earlier,
            more: 14,
            since: Some(T),
        };
        let text = popup(&notice, None, &utc);
        assert!(
            text.body
                .ends_with("\nand 14 more kills of chromium since 10:02"),
            "{}",
            text.body
        );
        let mail = email(&notice, None, "web1", &[], T + 60.0, &utc);
        assert!(
            mail.subject
                .ends_with(", and 14 more kills of chromium since 10:02"),
            "{}",
            mail.subject
        );
        assert!(mail.body.contains("PID 2013"), "{}", mail.body);
    }

    #[test]
    fn mixed_and_single_summaries_read_well() {
        let notice = Notice {
            headline: record(3, Outcome::Alerted, T),
            earlier: vec![record(2, Outcome::Alerted, T)],
            more: 1,
            since: None,
        };
        assert_eq!(
            notice.summary_line(&utc).unwrap(),
            "and 1 more alert on chromium"
        );
        let notice = Notice {
            earlier: vec![
                record(2, Outcome::Alerted, T),
                record(
                    4,
                    Outcome::Refused {
                        protection: Protection::Myself,
                    },
                    T,
                ),
            ],
            more: 2,
            ..notice
        };
        assert_eq!(
            notice.summary_line(&utc).unwrap(),
            "and 2 more actions on chromium"
        );
    }

    #[test]
    fn popup_bodies_escape_markup() {
        let mut r = record(
            1,
            Outcome::Sent {
                signal: Signal::Term,
            },
            T,
        );
        r.user = "<b>&".into();
        let text = popup(&Notice::single(r), None, &utc);
        assert!(text.body.contains("user &lt;b&gt;&amp;"), "{}", text.body);
    }

    #[test]
    fn an_email_has_host_process_pid_rss_limit_time_rule_action_and_top_five() {
        let top: Vec<TopProcess> = (0..5)
            .map(|i| TopProcess {
                pid: 100 + i,
                user: "bob".into(),
                name: format!("big{i}"),
                rss: u64::from(5 - i) * 1024 * MIB,
            })
            .collect();
        let notice = Notice::single(record(1234, Outcome::KilledByKernel, T));
        let mail = email(&notice, None, "web1", &top, T + 1.0, &utc);
        assert_eq!(
            mail.subject,
            "[procespy@web1] stopped chromium (PID 1234, RSS 1.6 GiB / limit 1.5 GiB)"
        );
        for needle in [
            "procespy stopped chromium on web1.",
            "Time:    2025-11-25 10:02:13 +0000",
            "Host:    web1",
            "Process: chromium (PID 1234)",
            "User:    alice",
            "RSS:     1.6 GiB (1677721600 bytes)",
            "Limit:   1.5 GiB (1610612736 bytes)",
            "Rule:    chromium",
            "Action:  SIGKILL (kernel)",
            "Result:  sent",
            "The 5 largest processes at 10:02:14:",
            "big0",
            "5.0 GiB",
            "big4",
        ] {
            assert!(
                mail.body.contains(needle),
                "{needle:?} missing in:\n{}",
                mail.body
            );
        }
    }

    #[test]
    fn other_kinds_have_their_own_headlines() {
        let h = |outcome| popup(&Notice::single(record(1, outcome, T)), None, &utc);
        assert_eq!(
            h(Outcome::Alerted).summary,
            "chromium is over its memory limit"
        );
        assert_eq!(
            h(Outcome::DryRun {
                signal: Signal::Term
            })
            .summary,
            "procespy would stop chromium (dry run)"
        );
        assert!(
            h(Outcome::Refused {
                protection: Protection::Myself
            })
            .body
            .ends_with("no signal: refused: procespy never signals itself")
        );
    }

    #[test]
    fn hostile_names_reach_no_mail_or_popup_raw() {
        for name in [
            "\r\nBcc: x@y",
            "\x1b]0;T\x07",
            "\x1b[31mR",
            "<b>x</b>",
            "a\u{202e}b",
        ] {
            let mut r = record(
                1,
                Outcome::Sent {
                    signal: Signal::Term,
                },
                T,
            );
            r.name = name.into();
            r.user = name.into();
            r.rule = name.into();
            let notice = Notice::single(r);
            let top = [TopProcess {
                pid: 9,
                user: name.into(),
                name: name.into(),
                rss: 1,
            }];
            let story = Story {
                series: vec![
                    crate::report::Point {
                        t: T - 5.0,
                        rss: MIB,
                    },
                    crate::report::Point {
                        t: T,
                        rss: 1600 * MIB,
                    },
                ],
                cmdline: format!("/usr/bin/x {name}"),
                cgroup: Some(format!("/system.slice/{name}.service")),
                exited: Some(T + 0.5),
            };
            let mail = email(&notice, Some(&story), name, &top, T, &utc);
            let pop = popup(&notice, Some(&story), &utc);
            assert!(mail.chart.is_some() && mail.body.contains("Command: /usr/bin/x "));
            for text in [&mail.subject, &pop.summary] {
                assert!(!text.chars().any(char::is_control), "{text:?}");
            }
            for text in [&mail.body, &pop.body] {
                assert!(
                    !text.chars().any(|c| c.is_control() && c != '\n'),
                    "{text:?}"
                );
                assert!(!text.contains("\nBcc"), "{text:?}");
            }
            assert!(!pop.body.contains("<b>"), "{}", pop.body);
        }
    }
}
