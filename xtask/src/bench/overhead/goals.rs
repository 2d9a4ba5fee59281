//! The goals table of issue 13: each figure as measured, its goal, and
//! whether it is met.

use crate::bench::stats::Table;

/// Which side of its threshold a figure must stay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bound {
    AtMost(f64),
    AtLeast(f64),
}

impl Bound {
    fn holds(self, value: f64) -> bool {
        match self {
            Bound::AtMost(limit) => value <= limit,
            Bound::AtLeast(limit) => value >= limit,
        }
    }
}

/// One row.
#[derive(Clone, Debug, PartialEq)]
pub struct Goal {
    figure: String,
    bound: Bound,
    /// What follows the threshold: `×`, ` µs per event`, ...
    unit: &'static str,
    /// The value compared with the bound; `None`: not measured.
    value: Option<f64>,
    /// The value as shown, with its spread or its parts.
    shown: String,
}

impl Goal {
    /// `figure`, whose goal is `bound` in `unit`, measured as `value`
    /// (shown as `shown`).
    pub fn new(
        figure: impl Into<String>,
        bound: Bound,
        unit: &'static str,
        value: Option<f64>,
        shown: String,
    ) -> Self {
        Goal {
            figure: figure.into(),
            bound,
            unit,
            value,
            shown,
        }
    }

    /// `≤ 1.15×`, `≤ 2.0×`: the threshold as written, at least one decimal.
    fn goal(&self) -> String {
        match self.bound {
            Bound::AtMost(limit) => format!("≤ {limit:?}{}", self.unit),
            Bound::AtLeast(limit) => format!("≥ {limit:?}{}", self.unit),
        }
    }

    fn verdict(&self) -> &'static str {
        match self.value {
            Some(value) if self.bound.holds(value) => "met",
            Some(_) => "NOT met",
            None => "not measured",
        }
    }
}

/// The goals as a Markdown table.
pub fn render(goals: &[Goal]) -> String {
    let mut table = Table::new(&["figure", "measured", "goal", "met"]);
    for goal in goals {
        table.row(vec![
            goal.figure.clone(),
            goal.shown.clone(),
            goal.goal(),
            goal.verdict().into(),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_include_their_threshold() {
        assert!(Bound::AtMost(1.15).holds(1.15));
        assert!(!Bound::AtMost(1.15).holds(1.16));
        assert!(Bound::AtLeast(0.97).holds(0.97));
        assert!(!Bound::AtLeast(0.97).holds(0.96));
    }

    #[test]
    fn rows_show_value_goal_and_verdict() {
        let goals = [
            Goal::new(
                "uncovered",
                Bound::AtMost(1.15),
                "×",
                Some(1.7),
                "1.70× (1.6–1.8)".into(),
            ),
            Goal::new(
                "exec",
                Bound::AtMost(1.0),
                " µs per event",
                Some(0.5),
                "0.50".into(),
            ),
            Goal::new("spawns", Bound::AtLeast(0.97), "", None, "?".into()),
        ];
        let text = render(&goals);
        let rows: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(
            rows,
            [
                "| uncovered | 1.70× (1.6–1.8) | ≤ 1.15×            | NOT met      |",
                "| exec      | 0.50            | ≤ 1.0 µs per event | met          |",
                "| spawns    | ?               | ≥ 0.97             | not measured |",
            ]
        );
    }
}
