//! The story an alert tells about a process: how it grew (from the daemon's
//! recent series, no database read), when it crossed its limit, when the
//! signal went out and when it exited, its command line and its cgroup, and
//! the chart of it all. Pure: the daemon hands the facts over, the clock's
//! rendering is passed in.

use super::message::LocalTime;
use crate::{
    action::ActionRecord,
    chart::{Chart, Mark},
    report::{POINT_RESOLUTION, Point},
    sys::cgroup,
    text::{escape, human_size},
};

/// How far back an alert's series (and chart) reaches, in seconds.
pub(crate) const WINDOW: f64 = 300.0;
/// The daemon samples the covered processes this often (seconds): a longer
/// gap between two points means the RSS was flat in between.
const SAMPLE: f64 = 1.0;
/// Growth smaller than this is noise, not a story.
const MIN_GROWTH: u64 = 1 << 20;
/// The longest command line an alert quotes, in characters.
const MAX_CMDLINE: usize = 2000;

/// What the daemon knows about a process an alert is about.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Story {
    /// Its RSS over the last [`WINDOW`] seconds, oldest first, with the
    /// points its actions were decided on.
    pub(crate) series: Vec<Point>,
    /// Its command line, arguments joined by spaces (not escaped).
    pub(crate) cmdline: String,
    /// Its cgroup's path, read when it was covered.
    pub(crate) cgroup: Option<String>,
    /// When it exited (epoch seconds), when the daemon saw it.
    pub(crate) exited: Option<f64>,
}

/// A stretch of steady growth: from one point to a higher one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Growth {
    /// Where it started.
    pub(crate) from: Point,
    /// Where it ended.
    pub(crate) to: Point,
}

impl Growth {
    /// How long it took, in seconds.
    pub(crate) fn seconds(&self) -> f64 {
        (self.to.t - self.from.t).max(0.001)
    }

    /// Bytes per second.
    pub(crate) fn rate(&self) -> f64 {
        (self.to.rss - self.from.rss) as f64 / self.seconds()
    }

    /// "grew from 210 MiB to 1.5 GiB in 42 s (31 MiB/s)".
    pub(crate) fn text(&self) -> String {
        format!(
            "grew from {} to {} in {} ({}/s)",
            human_size(self.from.rss),
            human_size(self.to.rss),
            duration(self.seconds()),
            human_size(self.rate() as u64)
        )
    }
}

/// The index of the last of `points` at or before `at`, to the precision
/// the points keep (the point an action was marked with at `at` is one).
fn last_until(points: &[Point], at: f64) -> Option<usize> {
    points.iter().rposition(|p| p.t <= at + POINT_RESOLUTION)
}

/// The last stretch of steady growth in `points` up to `at`: back from the
/// last point at or before `at` (the start of its plateau) while each point
/// is lower than the next. A point after a longer gap than a sample's
/// follows a flat stretch: the growth began a sample before it.
pub(crate) fn growth(points: &[Point], at: f64) -> Option<Growth> {
    let mut end = last_until(points, at)?;
    while end > 0 && points[end - 1].rss == points[end].rss {
        end -= 1;
    }
    let mut start = end;
    while start > 0 && points[start - 1].rss < points[start].rss {
        start -= 1;
    }
    let (mut from, to) = (points[start], points[end]);
    if to.rss < from.rss + MIN_GROWTH {
        return None;
    }
    let next = points[start + 1];
    if next.t - from.t > 1.5 * SAMPLE {
        from.t = next.t - SAMPLE;
    }
    Some(Growth { from, to })
}

/// When the RSS went over `limit` for the last time up to `at`: the first
/// point of the last run of points over it.
pub(crate) fn crossed(points: &[Point], limit: u64, at: f64) -> Option<f64> {
    let end = last_until(points, at)?;
    let mut first = None;
    for p in points[..=end].iter().rev() {
        if p.rss <= limit {
            break;
        }
        first = Some(p.t);
    }
    first
}

/// "at this rate chromium reaches 6.0 GiB in about 40 s", from `rss` at the
/// growth's rate; `None` when it does not grow.
pub(crate) fn eta(name: &str, growth: Option<&Growth>, rss: u64, limit: u64) -> Option<String> {
    let rate = growth?.rate();
    if rate <= 0.0 || rss >= limit {
        return None;
    }
    let seconds = (limit - rss) as f64 / rate;
    Some(format!(
        "at this rate {} reaches {} in about {}",
        escape(name),
        human_size(limit),
        duration(seconds)
    ))
}

/// A duration for people: `42 s`, `12 min`, `3.5 h`.
pub(crate) fn duration(seconds: f64) -> String {
    if seconds < 90.0 {
        format!("{} s", seconds.round().max(1.0))
    } else if seconds < 90.0 * 60.0 {
        format!("{} min", (seconds / 60.0).round())
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

/// `10:02:13.412`.
pub(crate) fn precise(clock: &dyn Fn(f64) -> LocalTime, t: f64) -> String {
    let millis = ((t - t.floor()) * 1000.0).floor() as u32;
    format!("{}.{millis:03}", clock(t).clock())
}

/// The command line as an alert quotes it: escaped, at most
/// [`MAX_CMDLINE`] characters.
pub(crate) fn command(cmdline: &str) -> String {
    let escaped = escape(cmdline.trim_end());
    match escaped.char_indices().nth(MAX_CMDLINE) {
        Some((cut, _)) => format!("{}…", &escaped[..cut]),
        None => escaped,
    }
}

/// "nginx.service (cgroup /system.slice/nginx.service)", or the cgroup
/// alone when no unit is named in it.
pub(crate) fn unit(path: &str) -> String {
    match cgroup::unit_of(path) {
        Some(unit) => format!("{} (cgroup {})", escape(unit), escape(path)),
        None => format!("cgroup {}", escape(path)),
    }
}

/// The story's lines for the email's text, label and value, about `record`
/// (a kill when `signalled`).
pub(crate) fn lines(
    record: &ActionRecord,
    story: &Story,
    signalled: bool,
    clock: &dyn Fn(f64) -> LocalTime,
) -> Vec<(&'static str, String)> {
    let mut lines = Vec::new();
    let growth = growth(&story.series, record.time);
    if let Some(growth) = &growth {
        lines.push(("Growth", growth.text()));
    }
    if signalled {
        if let Some(t) = crossed(&story.series, record.limit, record.time) {
            lines.push(("Crossed", format!("{} (the limit)", precise(clock, t))));
        }
        lines.push((
            "Signal",
            format!(
                "{} at {}",
                record.outcome.action(),
                precise(clock, record.time)
            ),
        ));
        lines.push((
            "Exited",
            match story.exited {
                Some(t) => format!(
                    "{} ({:.1} s after the signal)",
                    precise(clock, t),
                    (t - record.time).max(0.0)
                ),
                None => "not yet seen when this was written".to_owned(),
            },
        ));
    } else if let Some(line) = eta(&record.name, growth.as_ref(), record.rss, record.limit) {
        lines.push(("Outlook", line));
    }
    if !story.cmdline.is_empty() {
        lines.push(("Command", command(&story.cmdline)));
    }
    if let Some(path) = &story.cgroup {
        lines.push(("Unit", unit(path)));
    }
    lines
}

/// The one line a popup adds: the growth for a kill, the time left for a
/// warning.
pub(crate) fn popup_line(record: &ActionRecord, story: &Story, signalled: bool) -> Option<String> {
    let growth = growth(&story.series, record.time);
    if signalled {
        return growth.map(|g| g.text());
    }
    eta(&record.name, growth.as_ref(), record.rss, record.limit).or(growth.map(|g| g.text()))
}

/// The chart of `record`'s process: its RSS, its limit, the action and the
/// exit marked; `None` with fewer than two points.
pub(crate) fn chart(record: &ActionRecord, story: &Story) -> Option<Chart> {
    if story.series.len() < 2 {
        return None;
    }
    let mut marks = vec![Mark {
        t: record.time,
        label: record.outcome.action().to_owned(),
    }];
    if let Some(t) = story.exited {
        marks.push(Mark {
            t,
            label: "exit".to_owned(),
        });
    }
    Some(Chart {
        title: format!(
            "{} (PID {}): RSS, limit {}",
            record.name,
            record.pid,
            human_size(record.limit)
        ),
        points: story.series.iter().map(|p| (p.t, p.rss)).collect(),
        limit: Some(record.limit),
        marks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{action::Outcome, sys::Signal};

    const MIB: u64 = 1 << 20;

    fn p(t: f64, mib: u64) -> Point {
        Point { t, rss: mib * MIB }
    }

    fn utc(epoch: f64) -> LocalTime {
        LocalTime::utc(epoch)
    }

    #[test]
    fn growth_is_the_last_steady_climb_after_a_flat_stretch() {
        // Flat at 210 MiB (a keepalive point), then 31 MiB a second.
        let mut points = vec![p(0.0, 300), p(10.0, 210), p(70.0, 210)];
        points.extend((1..=42u32).map(|s| p(100.0 + f64::from(s), 210 + 31 * u64::from(s))));
        // The kill's mark, then the SIGKILL's at the same RSS.
        points.push(p(142.5, 1512));
        points.push(p(147.5, 1512));
        let g = growth(&points, 142.5).unwrap();
        assert_eq!(g.from, p(100.0, 210), "the growth began a sample before");
        assert_eq!(g.to.rss, 1512 * MIB);
        assert_eq!(g.text(), "grew from 210 MiB to 1.5 GiB in 42 s (31 MiB/s)");
        assert_eq!(
            growth(&points, 147.5).unwrap().to.t,
            142.0,
            "plateau's start"
        );
        assert_eq!(crossed(&points, 1000 * MIB, 142.5), Some(126.0));
        assert!(growth(&[p(0.0, 5), p(1.0, 5)], 1.0).is_none());
        assert!(growth(&[], 1.0).is_none());
    }

    #[test]
    fn the_time_left_is_at_the_current_rate() {
        let g = Growth {
            from: p(0.0, 0),
            to: p(10.0, 100),
        };
        assert_eq!(
            eta(
                "chromium",
                Some(&g),
                4096 * MIB + 2048 * MIB - 400 * MIB,
                6 * 1024 * MIB
            )
            .unwrap(),
            "at this rate chromium reaches 6.0 GiB in about 40 s"
        );
        assert!(eta("x", None, 1, 2).is_none());
        assert_eq!(duration(0.2), "1 s");
        assert_eq!(duration(600.0), "10 min");
        assert_eq!(duration(3.0 * 3600.0), "3.0 h");
    }

    #[test]
    fn a_kill_tells_crossing_signal_exit_command_and_unit() {
        let record = ActionRecord {
            time: 1_764_064_933.25,
            rss: 70 * MIB,
            limit: 64 * MIB,
            ..crate::action::testing::record(
                7,
                "grower",
                Outcome::Sent {
                    signal: Signal::Term,
                },
            )
        };
        let story = Story {
            series: vec![
                p(1_764_064_930.5, 10),
                p(1_764_064_931.5, 40),
                p(1_764_064_933.25, 70),
            ],
            cmdline: "grower --grow\u{1b}[31m 5".into(),
            cgroup: Some("/system.slice/grow.service".into()),
            exited: Some(1_764_064_933.5),
        };
        let lines = lines(&record, &story, true, &utc);
        let text: Vec<String> = lines.iter().map(|(l, v)| format!("{l}: {v}")).collect();
        assert_eq!(
            text,
            [
                "Growth: grew from 10 MiB to 70 MiB in 3 s (22 MiB/s)",
                "Crossed: 10:02:13.250 (the limit)",
                "Signal: SIGTERM at 10:02:13.250",
                "Exited: 10:02:13.500 (0.2 s after the signal)",
                "Command: grower --grow\\x1b[31m 5",
                "Unit: grow.service (cgroup /system.slice/grow.service)",
            ]
        );
        assert!(chart(&record, &story).is_some());
        assert_eq!(
            popup_line(&record, &story, true).unwrap(),
            "grew from 10 MiB to 70 MiB in 3 s (22 MiB/s)"
        );
    }

    #[test]
    fn long_command_lines_are_cut() {
        let long = "a".repeat(5000);
        assert_eq!(command(&long).chars().count(), MAX_CMDLINE + 1);
    }
}
