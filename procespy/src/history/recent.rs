//! The last minutes of every covered process's RSS, in memory: what `top`
//! draws as sparklines and what an alert's chart and growth summary are
//! made of, without a read of the database.
//!
//! A point is kept when the RSS moved since the last one, or when the last
//! one is [`KEEPALIVE`] old: a flat process costs a point a minute, a
//! growing one a point a second for the last [`FINE`] seconds, and one per
//! [`COARSE`] seconds (the largest) before: about 220 points, not 600, for
//! each of the 1,000 processes a busy machine may cover.

use std::collections::{HashMap, VecDeque};

use crate::report::{Point, RecentSeries};

/// How far back the series reach, in seconds.
pub(crate) const WINDOW: f64 = 600.0;
/// A flat process gets a point this often (seconds), so its line is drawn.
const KEEPALIVE: f64 = 60.0;
/// Points younger than this (seconds) are all kept: what `top` draws at its
/// default interval, and an alert's last two minutes.
const FINE: f64 = 120.0;
/// Older points are thinned to the largest in each bucket of this many
/// seconds.
const COARSE: f64 = 5.0;
/// A series is thinned each time it gained this many points.
const THIN_EVERY: usize = 60;

/// One process's series and what it is.
#[derive(Clone, Debug)]
struct Series {
    name: String,
    rule: String,
    limit_bytes: u64,
    points: VecDeque<Point>,
    /// Points added since the series was last thinned.
    added: usize,
    /// When it exited (kept a while for the alerts that tell its story).
    gone_at: Option<f64>,
}

/// Every covered process's recent RSS.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    series: HashMap<u32, Series>,
}

/// One reading of a covered process.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Reading<'a> {
    /// The process.
    pub(crate) pid: u32,
    /// Its name (not escaped).
    pub(crate) name: &'a str,
    /// Its limit's name or pattern.
    pub(crate) rule: &'a str,
    /// The limit, in bytes.
    pub(crate) limit_bytes: u64,
    /// Its RSS now, in bytes.
    pub(crate) rss: u64,
}

impl Series {
    /// An empty series for the process `reading` is of.
    fn of(reading: &Reading<'_>) -> Series {
        Series {
            name: reading.name.to_owned(),
            rule: reading.rule.to_owned(),
            limit_bytes: reading.limit_bytes,
            points: VecDeque::new(),
            added: 0,
            gone_at: None,
        }
    }

    /// Keeps, of the points older than [`FINE`] at `now`, the largest in
    /// each [`COARSE`] bucket (peaks stay), and every younger one.
    fn thin(&mut self, now: f64) {
        self.added = 0;
        let mut kept: VecDeque<Point> = VecDeque::with_capacity(self.points.len());
        let mut bucket: Option<(f64, Point)> = None;
        for point in self.points.drain(..) {
            if now - point.t <= FINE {
                kept.extend(bucket.take().map(|(_, best)| best));
                kept.push_back(point);
                continue;
            }
            let key = (point.t / COARSE).floor();
            match &mut bucket {
                Some((k, best)) if *k == key => {
                    if point.rss > best.rss {
                        *best = point;
                    }
                }
                _ => {
                    kept.extend(bucket.replace((key, point)).map(|(_, best)| best));
                }
            }
        }
        kept.extend(bucket.map(|(_, best)| best));
        kept.shrink_to(kept.len() + THIN_EVERY);
        self.points = kept;
    }
}

impl Recent {
    /// Adds what the covered processes hold at `now` (epoch seconds);
    /// returns those whose point was kept (they moved, or a keepalive).
    pub(crate) fn record<'a>(
        &mut self,
        now: f64,
        readings: impl IntoIterator<Item = Reading<'a>>,
    ) -> Vec<(u32, Point)> {
        let mut kept = Vec::new();
        for reading in readings {
            let series = self
                .series
                .entry(reading.pid)
                .or_insert_with(|| Series::of(&reading));
            if series.name != reading.name {
                series.name = reading.name.to_owned();
            }
            if series.rule != reading.rule {
                series.rule = reading.rule.to_owned();
            }
            series.limit_bytes = reading.limit_bytes;
            let due = series
                .points
                .back()
                .is_none_or(|last| last.rss != reading.rss || now - last.t >= KEEPALIVE);
            if due {
                let point = Point {
                    t: now,
                    rss: reading.rss,
                };
                series.points.push_back(point);
                kept.push((reading.pid, point));
                series.added += 1;
                if series.added >= THIN_EVERY {
                    series.thin(now);
                }
            }
            while series.points.front().is_some_and(|p| now - p.t > WINDOW) {
                series.points.pop_front();
            }
        }
        kept
    }

    /// Adds the point an action was decided on (the RSS at the crossing) at
    /// `t`, in time order; a process acted on before its first sample gets
    /// its series here.
    pub(crate) fn mark(&mut self, t: f64, reading: Reading<'_>) {
        let series = self
            .series
            .entry(reading.pid)
            .or_insert_with(|| Series::of(&reading));
        let at = series.points.partition_point(|p| p.t <= t);
        series.points.insert(
            at,
            Point {
                t,
                rss: reading.rss,
            },
        );
    }

    /// `pid` exited at `now`: its series stays for [`WINDOW`], for the story.
    pub(crate) fn gone(&mut self, pid: u32, now: f64) {
        if let Some(series) = self.series.get_mut(&pid) {
            series.gone_at = Some(now);
        }
        self.series
            .retain(|_, s| s.gone_at.is_none_or(|gone| now - gone < WINDOW));
    }

    /// The series of `pid` over the last `seconds` before `now`.
    pub(crate) fn series(&self, pid: u32, now: f64, seconds: f64) -> Option<RecentSeries> {
        let series = self.series.get(&pid)?;
        Some(RecentSeries {
            pid,
            name: series.name.clone(),
            rule: series.rule.clone(),
            limit_bytes: series.limit_bytes,
            points: series
                .points
                .iter()
                .filter(|p| now - p.t <= seconds)
                .copied()
                .collect(),
        })
    }

    /// Every live process's series over the last `seconds`.
    pub(crate) fn all(&self, now: f64, seconds: f64) -> Vec<RecentSeries> {
        let mut all: Vec<RecentSeries> = self
            .series
            .iter()
            .filter(|(_, s)| s.gone_at.is_none())
            .filter_map(|(&pid, _)| self.series(pid, now, seconds))
            .collect();
        all.sort_by_key(|s| s.pid);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(pid: u32, rss: u64) -> Reading<'static> {
        Reading {
            pid,
            name: "grower",
            rule: "grower",
            limit_bytes: 100,
            rss,
        }
    }

    #[test]
    fn points_are_kept_when_the_rss_moves_or_a_minute_passed() {
        let mut recent = Recent::default();
        assert_eq!(recent.record(0.0, [reading(1, 10)]).len(), 1);
        assert!(recent.record(1.0, [reading(1, 10)]).is_empty(), "flat");
        assert_eq!(recent.record(2.0, [reading(1, 20)]).len(), 1);
        assert_eq!(recent.record(63.0, [reading(1, 20)]).len(), 1, "keepalive");
        let series = recent.series(1, 63.0, 600.0).unwrap();
        let rss: Vec<u64> = series.points.iter().map(|p| p.rss).collect();
        assert_eq!(rss, [10, 20, 20]);
        assert_eq!(recent.series(1, 63.0, 10.0).unwrap().points.len(), 1);
    }

    #[test]
    fn points_older_than_two_minutes_thin_to_the_largest_every_five_seconds() {
        let mut recent = Recent::default();
        // Ten minutes of a process moving every second, a peak at 100 s.
        for s in 0..600u32 {
            let rss = if s == 100 { 1000 } else { u64::from(s % 2) };
            recent.record(f64::from(s), [reading(1, rss)]);
        }
        let series = recent.series(1, 599.0, 600.0).unwrap();
        let fine = series.points.iter().filter(|p| 599.0 - p.t <= FINE).count();
        let coarse: Vec<f64> = series
            .points
            .iter()
            .filter(|p| 599.0 - p.t > FINE)
            .map(|p| p.t)
            .collect();
        assert!(fine >= 120, "every point of the last two minutes: {fine}");
        assert!(
            coarse
                .windows(2)
                .all(|w| (w[0] / COARSE).floor() < (w[1] / COARSE).floor()),
            "one a bucket before: {coarse:?}"
        );
        assert!(series.points.len() < 260, "{} points", series.points.len());
        assert!(
            series.points.iter().any(|p| p.t == 100.0 && p.rss == 1000),
            "the peak stays"
        );
        assert!(
            series.points.windows(2).all(|w| w[0].t < w[1].t),
            "in order"
        );
    }

    #[test]
    fn old_points_and_long_gone_processes_are_dropped() {
        let mut recent = Recent::default();
        recent.record(0.0, [reading(1, 10), reading(2, 10)]);
        recent.record(700.0, [reading(1, 11)]);
        assert_eq!(recent.series(1, 700.0, 1e9).unwrap().points.len(), 1);
        recent.gone(2, 700.0);
        assert!(recent.series(2, 700.0, 1e9).is_some(), "kept for its story");
        assert_eq!(recent.all(700.0, 600.0).len(), 1, "not listed as live");
        recent.gone(1, 1400.0);
        assert!(recent.series(2, 1400.0, 1e9).is_none());
    }
}
