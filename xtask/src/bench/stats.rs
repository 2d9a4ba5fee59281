//! Medians, spreads, ratios and the Markdown tables the benchmarks print.

use std::fmt::Write as _;

/// The median of `values` (the mean of the two middle ones for an even
/// count), or `None` when there are none. Infinite values sort last, so a
/// few censored runs (stored as `f64::INFINITY`) do not spoil it.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        Some(sorted[mid])
    } else {
        Some((sorted[mid - 1] + sorted[mid]) / 2.0)
    }
}

/// A set of measurements: their median and their range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// The median and range of `values` (NaNs left out); `None` when there
    /// are none.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let median = median(values)?;
        let numbers = || values.iter().copied().filter(|v| !v.is_nan());
        Some(Spread {
            median,
            min: numbers().fold(f64::INFINITY, f64::min),
            max: numbers().fold(f64::NEG_INFINITY, f64::max),
        })
    }

    /// `1.23× (1.20–1.31)` with `decimals` decimals and `unit` `×`; the
    /// median alone when the range is one value.
    pub fn show(&self, decimals: usize, unit: &str) -> String {
        let median = format!("{:.decimals$}", self.median);
        let (min, max) = (
            format!("{:.decimals$}", self.min),
            format!("{:.decimals$}", self.max),
        );
        if min == max {
            format!("{median}{unit}")
        } else {
            format!("{median}{unit} ({min}–{max})")
        }
    }
}

/// [`Spread::show`] of `values`, without a unit, or `?` when there are none.
pub fn show_spread(values: &[f64], decimals: usize) -> String {
    Spread::of(values).map_or_else(|| "?".into(), |s| s.show(decimals, ""))
}

/// `value / base`; `None` when either is missing, not finite, or the base
/// is zero.
pub fn quotient(value: Option<f64>, base: Option<f64>) -> Option<f64> {
    match (value, base) {
        (Some(v), Some(b)) if v.is_finite() && b.is_finite() && b != 0.0 => Some(v / b),
        _ => None,
    }
}

/// [`quotient`] as `1.23×`, or `—`.
pub fn ratio(value: Option<f64>, base: Option<f64>) -> String {
    quotient(value, base).map_or_else(|| "—".into(), |q| format!("{q:.2}×"))
}

/// A Markdown table whose columns are padded to line up in a terminal too.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are left empty).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as Markdown.
    pub fn render(&self) -> String {
        let columns = self.header.len();
        let cell = |row: &[String], i: usize| row.get(i).cloned().unwrap_or_default();
        let widths: Vec<usize> = (0..columns)
            .map(|i| {
                self.rows
                    .iter()
                    .map(|row| cell(row, i).chars().count())
                    .chain([self.header[i].chars().count(), 3])
                    .max()
                    .unwrap_or(3)
            })
            .collect();
        let line = |cells: Vec<String>| {
            let mut text = String::from("|");
            for (i, c) in cells.iter().enumerate() {
                let pad = widths[i].saturating_sub(c.chars().count());
                let _ = write!(text, " {c}{} |", " ".repeat(pad));
            }
            text.push('\n');
            text
        };
        let mut out = line(self.header.clone());
        out.push_str(&line(widths.iter().map(|w| "-".repeat(*w)).collect()));
        for row in &self.rows {
            out.push_str(&line((0..columns).map(|i| cell(row, i)).collect()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_even_and_censored_sets() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[f64::INFINITY, 1.0, 2.0]), Some(2.0));
    }

    #[test]
    fn spreads_show_the_median_then_the_range() {
        let spread = Spread::of(&[3.0, 1.0, 2.0, f64::NAN]).unwrap();
        assert_eq!(
            spread,
            Spread {
                median: 2.0,
                min: 1.0,
                max: 3.0
            }
        );
        assert_eq!(spread.show(1, ""), "2.0 (1.0–3.0)");
        assert_eq!(spread.show(0, "×"), "2× (1–3)");
        assert_eq!(show_spread(&[1.234], 2), "1.23");
        assert_eq!(show_spread(&[], 2), "?");
    }

    #[test]
    fn ratios_need_a_nonzero_base() {
        assert_eq!(ratio(Some(3.0), Some(2.0)), "1.50×");
        assert_eq!(ratio(Some(3.0), Some(0.0)), "—");
        assert_eq!(ratio(None, Some(1.0)), "—");
        assert_eq!(quotient(Some(3.0), Some(2.0)), Some(1.5));
        assert_eq!(quotient(Some(f64::INFINITY), Some(2.0)), None);
    }

    #[test]
    fn tables_line_up() {
        let mut table = Table::new(&["a", "bb"]);
        table.row(vec!["long".into(), "x".into()]);
        assert_eq!(
            table.render(),
            "| a    | bb  |\n| ---- | --- |\n| long | x   |\n"
        );
    }
}
