//! The last minutes of every covered process's RSS, in memory: what `top`
//! draws as sparklines and what an alert's chart and growth summary are
//! made of, without a read of the database.
//!
//! A point is kept when the RSS moved since the last one, or when the last
//! one is [`KEEPALIVE`] old: a flat process costs a point a minute, a
//! growing one a point a second for the last [`FINE`] seconds, and one per
//! [`COARSE`] seconds (the largest) before: about 220 points, not 600, for
//! each of the 1,000 processes a busy machine may cover. A point is kept in
//! 8 bytes: milliseconds after its series' base time, and KiB.

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

/// A series' base is moved up once its points would be this far (ms) after
/// it: well within a `u32`, and far beyond [`WINDOW`].
const REBASE_AFTER_MS: u32 = 1 << 31;

/// A point as kept: milliseconds after its series' base (a point given at
/// `t` reads back within [`crate::report::POINT_RESOLUTION`] of it), and KiB (RSS is
/// counted in pages, so nothing is lost on any page size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Kept {
    ms: u32,
    kib: u32,
}

/// `bytes` in KiB, as kept (at most 4 TiB).
fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes >> 10).unwrap_or(u32::MAX)
}

/// One process's series and what it is.
#[derive(Clone, Debug)]
struct Series {
    name: String,
    rule: String,
    limit_bytes: u64,
    /// Epoch seconds its points count from.
    base: f64,
    points: VecDeque<Kept>,
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
    /// An empty series for the process `reading` is of, from `base`.
    fn of(reading: &Reading<'_>, base: f64) -> Series {
        Series {
            name: reading.name.to_owned(),
            rule: reading.rule.to_owned(),
            limit_bytes: reading.limit_bytes,
            base,
            points: VecDeque::new(),
            added: 0,
            gone_at: None,
        }
    }

    /// The point `kept` stands for.
    fn point(&self, kept: Kept) -> Point {
        Point {
            t: self.base + f64::from(kept.ms) / 1000.0,
            rss: u64::from(kept.kib) << 10,
        }
    }

    /// `rss` at `t`, as kept; `t` is at the base or after it.
    fn kept(&self, t: f64, rss: u64) -> Kept {
        let ms = ((t - self.base) * 1000.0)
            .round()
            .clamp(0.0, f64::from(u32::MAX));
        Kept {
            ms: ms as u32,
            kib: kib(rss),
        }
    }

    /// Makes `base` the time the points count from; every point is at
    /// `base` or after it (and less than 49 days after).
    fn rebase(&mut self, base: f64) {
        let shift = ((self.base - base) * 1000.0).round() as i64;
        for kept in &mut self.points {
            kept.ms = u32::try_from(i64::from(kept.ms) + shift).unwrap_or(0);
        }
        self.base = base;
    }

    /// Keeps, of the points older than [`FINE`] at `now`, the largest in
    /// each [`COARSE`] bucket (peaks stay), and every younger one.
    fn thin(&mut self, now: f64) {
        self.added = 0;
        let mut kept: VecDeque<Kept> = VecDeque::with_capacity(self.points.len());
        let mut bucket: Option<(f64, Kept)> = None;
        for point in std::mem::take(&mut self.points) {
            let t = self.point(point).t;
            if now - t <= FINE {
                kept.extend(bucket.take().map(|(_, best)| best));
                kept.push_back(point);
                continue;
            }
            let key = (t / COARSE).floor();
            match &mut bucket {
                Some((k, best)) if *k == key => {
                    if point.kib > best.kib {
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
                .or_insert_with(|| Series::of(&reading, now));
            if series.name != reading.name {
                series.name = reading.name.to_owned();
            }
            if series.rule != reading.rule {
                series.rule = reading.rule.to_owned();
            }
            series.limit_bytes = reading.limit_bytes;
            while series
                .points
                .front()
                .is_some_and(|&p| now - series.point(p).t > WINDOW)
            {
                series.points.pop_front();
            }
            let due = series.points.back().is_none_or(|&last| {
                last.kib != kib(reading.rss) || now - series.point(last).t >= KEEPALIVE
            });
            if due {
                if series.kept(now, 0).ms >= REBASE_AFTER_MS {
                    let first = series.points.front().map_or(now, |&p| series.point(p).t);
                    series.rebase(first);
                }
                series.points.push_back(series.kept(now, reading.rss));
                kept.push((
                    reading.pid,
                    Point {
                        t: now,
                        rss: reading.rss,
                    },
                ));
                series.added += 1;
                if series.added >= THIN_EVERY {
                    series.thin(now);
                }
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
            .or_insert_with(|| Series::of(&reading, t));
        if t < series.base {
            series.rebase(t);
        }
        let kept = series.kept(t, reading.rss);
        let at = series.points.partition_point(|p| p.ms <= kept.ms);
        series.points.insert(at, kept);
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
                .map(|&p| series.point(p))
                .filter(|p| now - p.t <= seconds)
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

    /// A reading of `kib` KiB.
    fn reading(pid: u32, kib: u64) -> Reading<'static> {
        Reading {
            pid,
            name: "grower",
            rule: "grower",
            limit_bytes: 100 << 10,
            rss: kib << 10,
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
        let rss: Vec<u64> = series.points.iter().map(|p| p.rss >> 10).collect();
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
            series
                .points
                .iter()
                .any(|p| p.t == 100.0 && p.rss == 1000 << 10),
            "the peak stays"
        );
        assert!(
            series.points.windows(2).all(|w| w[0].t < w[1].t),
            "in order"
        );
    }

    #[test]
    fn a_point_takes_8_bytes_and_keeps_its_time_to_the_millisecond() {
        assert_eq!(size_of::<Kept>(), 8);
        let mut recent = Recent::default();
        let start = 1_790_000_000.25;
        recent.record(start, [reading(1, 4)]);
        recent.record(start + 1.5, [reading(1, 8)]);
        // An action decided before the first sample, and one between.
        recent.mark(start - 0.125, reading(1, 12));
        recent.mark(start + 1.0, reading(1, 16));
        let points = recent.series(1, start + 2.0, 600.0).unwrap().points;
        let got: Vec<(f64, u64)> = points.iter().map(|p| (p.t - start, p.rss >> 10)).collect();
        assert_eq!(got, [(-0.125, 12), (0.0, 4), (1.0, 16), (1.5, 8)]);
    }

    #[test]
    fn a_series_far_from_its_base_is_rebased_without_a_change() {
        let mut recent = Recent::default();
        recent.record(0.0, [reading(1, 4)]);
        // Fifty days on, each minute a new figure: the base follows.
        let late = 50.0 * 86_400.0;
        for minute in 0..3u32 {
            recent.record(
                late + f64::from(minute * 60),
                [reading(1, u64::from(minute) + 5)],
            );
        }
        let points = recent.series(1, late + 120.0, 600.0).unwrap().points;
        let got: Vec<(f64, u64)> = points.iter().map(|p| (p.t - late, p.rss >> 10)).collect();
        assert_eq!(got, [(0.0, 5), (60.0, 6), (120.0, 7)]);
    }

    #[test]
    fn the_point_an_action_was_marked_with_counts_at_the_actions_time() {
        use crate::alerts::story::{WINDOW, crossed, growth};
        const MIB: u64 = 1 << 20;
        let at_mib = |rss_mib: u64| Reading {
            pid: 9,
            name: "grower",
            rule: "grower",
            limit_bytes: 64 * MIB,
            rss: rss_mib * MIB,
        };
        let mut recent = Recent::default();
        let start = 1_790_000_000.5;
        for s in 0..6u32 {
            recent.record(start + f64::from(s), [at_mib(8 + 8 * u64::from(s))]);
        }
        // Acted on between samples, off the millisecond the points keep.
        let acted = start + 5.7496;
        recent.mark(acted, at_mib(65));
        let points = recent.series(9, acted, WINDOW).unwrap().points;
        assert_eq!(
            crossed(&points, 64 * MIB, acted).map(|t| (t - acted).abs() < 0.001),
            Some(true)
        );
        assert_eq!(growth(&points, acted).unwrap().to.rss, 65 * MIB);
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
