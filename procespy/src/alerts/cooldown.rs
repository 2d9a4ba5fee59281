//! `[notify] cooldown`: per limit, at most one message per period, and
//! apart from them at most one warning (`warn_at`) per period: a warning
//! never holds back the kill that follows it.
//!
//! The first action on a limit goes out at once and opens a window of one
//! cooldown. Actions inside the window are held; when the window ends, what
//! was held goes out as one summary ("… and 14 more kills of chromium since
//! 10:02"), which opens the next window. A window that ends with nothing
//! held closes. An action on a process already reported in the window (the
//! SIGKILL after the grace, say) is a follow-up: listed in the next summary,
//! but no reason for one on its own.
//!
//! Pure: the clock is passed in, as [`Instant`]s for the windows and epoch
//! seconds (from the records) for the text.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use super::message::Notice;
use crate::action::ActionRecord;

/// The windows of every limit.
#[derive(Debug)]
pub(crate) struct Cooldown {
    period: Duration,
    windows: HashMap<Key, Window>,
}

/// A window's limit, and whether it is the limit's warnings'.
type Key = (String, bool);

/// The window `record` falls into.
fn key_of(record: &ActionRecord) -> Key {
    (
        record.rule.clone(),
        matches!(record.outcome, crate::action::Outcome::Warned { .. }),
    )
}

#[derive(Debug)]
struct Window {
    /// When the window ends.
    until: Instant,
    /// When the message that opened it went out (epoch seconds).
    opened_at: f64,
    /// Processes already told about, or held, in this window.
    reported: HashSet<u32>,
    /// Actions held back, oldest first, each with whether it was about a
    /// process new to the window (else it is a follow-up).
    held: Vec<(ActionRecord, bool)>,
}

impl Window {
    fn new_count(&self) -> usize {
        self.held.iter().filter(|(_, new)| *new).count()
    }
}

impl Cooldown {
    /// No window open; each limit may send one message per `period`.
    pub(crate) fn new(period: Duration) -> Cooldown {
        Cooldown {
            period,
            windows: HashMap::new(),
        }
    }

    /// A new period, for windows opened from now on.
    pub(crate) fn set_period(&mut self, period: Duration) {
        self.period = period;
    }

    /// An action on limit `record.rule` at `now`: the notice to send now,
    /// or `None` when the cooldown holds it back.
    pub(crate) fn offer(&mut self, record: ActionRecord, now: Instant) -> Option<Notice> {
        let key = key_of(&record);
        let notice = match self.windows.remove(&key) {
            Some(mut window) if now < window.until => {
                let new = window.reported.insert(record.pid);
                window.held.push((record, new));
                self.windows.insert(key, window);
                return None;
            }
            // The window ended but nobody took its summary yet: this action
            // carries what was held.
            Some(window) => {
                let pid = record.pid;
                let more = window
                    .held
                    .iter()
                    .filter(|(r, new)| *new && r.pid != pid)
                    .count();
                let earlier: Vec<ActionRecord> = window.held.into_iter().map(|(r, _)| r).collect();
                Notice {
                    since: (!earlier.is_empty()).then_some(window.opened_at),
                    more,
                    earlier,
                    headline: record,
                }
            }
            None => Notice::single(record),
        };
        self.open(key, now, &notice);
        Some(notice)
    }

    /// Opens the window that `notice`, just sent, starts.
    fn open(&mut self, key: Key, now: Instant, notice: &Notice) {
        self.windows.insert(
            key,
            Window {
                until: now + self.period,
                opened_at: notice.headline.time,
                reported: HashSet::from([notice.headline.pid]),
                held: Vec::new(),
            },
        );
    }

    /// The summaries of the windows that ended by `now`; those windows
    /// reopen (after a summary) or close (when nothing new was held).
    pub(crate) fn due(&mut self, now: Instant) -> Vec<Notice> {
        let ended: Vec<Key> = self
            .windows
            .iter()
            .filter(|(_, w)| w.until <= now)
            .map(|(key, _)| key.clone())
            .collect();
        let mut notices = Vec::new();
        for key in ended {
            let Some(window) = self.windows.remove(&key) else {
                continue;
            };
            if let Some(notice) = summary(window) {
                self.open(key, now, &notice);
                notices.push(notice);
            }
        }
        notices.sort_by(|a, b| a.headline.time.total_cmp(&b.headline.time));
        notices
    }

    /// When the next window ends, if one is open.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.windows.values().map(|w| w.until).min()
    }

    /// Every summary now, whatever the windows (at shutdown); all windows close.
    pub(crate) fn drain(&mut self) -> Vec<Notice> {
        let mut notices: Vec<Notice> = self
            .windows
            .drain()
            .filter_map(|(_, w)| summary(w))
            .collect();
        notices.sort_by(|a, b| a.headline.time.total_cmp(&b.headline.time));
        notices
    }

    /// Actions held back in all windows.
    pub(crate) fn held(&self) -> usize {
        self.windows.values().map(|w| w.held.len()).sum()
    }
}

/// The summary of a window that held actions on new processes: the latest
/// of those is the headline, everything else held is listed; `None` when
/// only follow-ups were held.
fn summary(mut window: Window) -> Option<Notice> {
    let more = window.new_count().checked_sub(1)?;
    let index = window.held.iter().rposition(|(_, new)| *new)?;
    let (headline, _) = window.held.remove(index);
    Some(Notice {
        more,
        since: Some(window.opened_at),
        earlier: window.held.into_iter().map(|(r, _)| r).collect(),
        headline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{action::Outcome, sys::Signal};

    fn record(pid: u32, rule: &str, signal: Signal, time: f64) -> ActionRecord {
        ActionRecord {
            time,
            ..crate::action::testing::record(pid, rule, Outcome::Sent { signal })
        }
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn a_warning_holds_back_no_kill_and_warnings_have_their_own_window() {
        let t0 = Instant::now();
        let mut cd = Cooldown::new(MIN);
        let warned = |pid| ActionRecord {
            time: 0.0,
            ..crate::action::testing::record(pid, "chromium", Outcome::Warned { warn_bytes: 1 })
        };
        assert!(cd.offer(warned(100), t0).is_some());
        assert!(
            cd.offer(warned(101), t0).is_none(),
            "one warning per period"
        );
        let kill = cd.offer(record(100, "chromium", Signal::Term, 1.0), t0);
        assert_eq!(kill.unwrap().headline.pid, 100, "the kill goes out at once");
    }

    #[test]
    fn twenty_kills_in_a_window_make_one_message_now_and_one_summary_later() {
        let t0 = Instant::now();
        let mut cd = Cooldown::new(MIN);
        let first = cd.offer(record(100, "chromium", Signal::Term, 0.0), t0);
        assert_eq!(first.unwrap().headline.pid, 100);
        for i in 1..20 {
            let at = t0 + Duration::from_secs(i);
            assert!(
                cd.offer(
                    record(100 + i as u32, "chromium", Signal::Term, i as f64),
                    at
                )
                .is_none()
            );
        }
        assert_eq!(cd.held(), 19);
        assert!(cd.due(t0 + Duration::from_secs(59)).is_empty());
        assert_eq!(cd.next_deadline(), Some(t0 + MIN));
        let due = cd.due(t0 + MIN);
        assert_eq!(due.len(), 1);
        let summary = &due[0];
        assert_eq!(summary.headline.pid, 119);
        assert_eq!(summary.more, 18);
        assert_eq!(summary.earlier.len(), 18);
        assert_eq!(summary.since, Some(0.0));
        // The summary opened a new window, which closes empty.
        assert_eq!(cd.next_deadline(), Some(t0 + 2 * MIN));
        assert!(cd.due(t0 + 2 * MIN).is_empty());
        assert_eq!(cd.next_deadline(), None);
        // After that, the next action goes out at once.
        assert!(
            cd.offer(record(200, "chromium", Signal::Term, 200.0), t0 + 3 * MIN)
                .is_some()
        );
    }

    #[test]
    fn limits_have_windows_of_their_own() {
        let t0 = Instant::now();
        let mut cd = Cooldown::new(MIN);
        assert!(cd.offer(record(1, "a", Signal::Term, 0.0), t0).is_some());
        assert!(cd.offer(record(2, "b", Signal::Term, 0.0), t0).is_some());
        assert!(cd.offer(record(3, "a", Signal::Term, 1.0), t0).is_none());
        let due = cd.due(t0 + MIN);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].headline.pid, 3);
        assert_eq!(due[0].more, 0);
        assert!(due[0].earlier.is_empty());
    }

    #[test]
    fn a_follow_up_alone_brings_no_summary_but_is_listed_in_one() {
        let t0 = Instant::now();
        let mut cd = Cooldown::new(MIN);
        cd.offer(record(1, "a", Signal::Term, 0.0), t0).unwrap();
        assert!(cd.offer(record(1, "a", Signal::Kill, 3.0), t0).is_none());
        assert!(cd.due(t0 + MIN).is_empty());
        assert_eq!(cd.next_deadline(), None);

        cd.offer(record(5, "a", Signal::Term, 100.0), t0 + 2 * MIN)
            .unwrap();
        assert!(
            cd.offer(record(5, "a", Signal::Kill, 103.0), t0 + 2 * MIN)
                .is_none()
        );
        assert!(
            cd.offer(record(6, "a", Signal::Term, 104.0), t0 + 2 * MIN)
                .is_none()
        );
        let due = cd.due(t0 + 3 * MIN);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].headline.pid, 6);
        assert_eq!(due[0].more, 0);
        assert_eq!(due[0].earlier.len(), 1, "the SIGKILL of 5 is listed");
        assert_eq!(due[0].earlier[0].outcome.action(), "SIGKILL");
    }

    #[test]
    fn an_action_after_the_window_carries_what_was_held() {
        let t0 = Instant::now();
        let mut cd = Cooldown::new(MIN);
        cd.offer(record(1, "a", Signal::Term, 0.0), t0).unwrap();
        assert!(cd.offer(record(2, "a", Signal::Term, 1.0), t0).is_none());
        // Nobody asked for `due` in time; the next action takes the summary.
        let notice = cd
            .offer(
                record(3, "a", Signal::Term, 70.0),
                t0 + MIN + Duration::from_secs(10),
            )
            .unwrap();
        assert_eq!(notice.headline.pid, 3);
        assert_eq!(notice.more, 1);
        assert_eq!(notice.earlier[0].pid, 2);
        assert_eq!(notice.since, Some(0.0));
        assert_eq!(cd.held(), 0);
    }

    #[test]
    fn drain_gives_every_pending_summary() {
        let t0 = Instant::now();
        let mut cd = Cooldown::new(MIN);
        cd.offer(record(1, "a", Signal::Term, 0.0), t0).unwrap();
        cd.offer(record(2, "b", Signal::Term, 0.0), t0).unwrap();
        cd.offer(record(3, "a", Signal::Term, 1.0), t0);
        cd.offer(record(4, "a", Signal::Term, 2.0), t0);
        cd.offer(record(5, "b", Signal::Term, 3.0), t0);
        let notices = cd.drain();
        assert_eq!(notices.len(), 2);
        assert_eq!((notices[0].headline.pid, notices[0].more), (4, 1));
        assert_eq!((notices[1].headline.pid, notices[1].more), (5, 0));
        assert_eq!(cd.next_deadline(), None);
    }

    #[test]
    fn a_zero_cooldown_lets_everything_through() {
        let t0 = Instant::now();
        let mut cd = Cooldown::new(Duration::ZERO);
        for i in 0..5 {
            let notice = cd.offer(record(i, "a", Signal::Term, 0.0), t0).unwrap();
            assert_eq!(notice.more, 0);
        }
    }
}
