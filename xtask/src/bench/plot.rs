//! The reaction plot: RSS over time of one growing process per watchdog,
//! with the limit as a horizontal line, as SVG.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

/// One watchdog's run.
pub struct Line {
    pub label: String,
    /// `(ms since the first MiB, MiB)`.
    pub points: Vec<(f64, f64)>,
    /// Where and when it died (drawn as a cross); `None` if no watchdog
    /// stopped it (the chart is framed on the others).
    pub death: Option<(f64, f64)>,
}

/// Distinct colours, dark enough on white.
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(214, 39, 40),
    RGBColor(23, 190, 207),
];

/// Draws `lines` and the limit at `limit_mib` into the SVG file `path`.
pub fn rss_over_time(path: &Path, lines: &[Line], limit_mib: f64) -> Result<()> {
    draw(path, lines, limit_mib).map_err(|err| anyhow!("drawing {}: {err}", path.display()))
}

fn draw(
    path: &Path,
    lines: &[Line],
    limit_mib: f64,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Frame the lines that were stopped; the others run off the chart.
    let stopped = || lines.iter().filter(|l| l.death.is_some());
    let x_max = stopped()
        .filter_map(|l| l.death)
        .map(|d| d.0)
        .fold(100.0, f64::max)
        * 1.25;
    let y_max = stopped()
        .flat_map(|l| l.points.iter().chain(&l.death))
        .map(|p| p.1)
        .fold(limit_mib * 1.4, f64::max)
        * 1.15;

    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "A process growing at 512 MiB/s past a 256 MiB limit: who stops it where",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(TRANSPARENT)
        .x_desc("ms since its first MiB")
        .y_desc("RSS (MiB)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;

    chart
        .draw_series(LineSeries::new(
            [(0.0, limit_mib), (x_max, limit_mib)],
            BLACK.stroke_width(1),
        ))?
        .label(format!("limit {limit_mib} MiB"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK));

    for (i, line) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        // Its last size held until death, then a cross.
        let held = line
            .death
            .map(|(x, _)| (x, line.points.last().map_or(0.0, |p| p.1)));
        let label = if line.death.is_some() {
            line.label.clone()
        } else {
            format!("{} (not stopped: killed at the cap)", line.label)
        };
        chart
            .draw_series(LineSeries::new(
                line.points.iter().copied().chain(held),
                color.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        if let Some(death) = line.death {
            chart.draw_series([Cross::new(death, 6, color.stroke_width(2))])?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
