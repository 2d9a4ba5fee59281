//! Charts of memory over time, as PNG (for email) or SVG: the RSS as steps
//! (a reading holds until the next), the limit as a line, and the actions
//! marked. Drawn with plotters; the text uses the first system font found
//! ([`FONT_PATHS`]), and without one the chart is drawn without text.

use std::{path::Path, sync::OnceLock};

use anyhow::{Context, anyhow};
use plotters::{
    coord::Shift,
    prelude::*,
    style::{
        FontStyle, register_font,
        text_anchor::{HPos, Pos, VPos},
    },
};

use crate::{alerts::message::LocalTime, text::human_size};

/// Where a sans-serif font is looked for (Debian and Ubuntu, then RHEL).
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/google-noto/NotoSans-Regular.ttf",
];

/// The family name text is drawn with.
const FAMILY: &str = "sans-serif";

/// A chart's size in pixels.
pub(crate) const SIZE: (u32, u32) = (720, 360);

/// Something marked on the time axis.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Mark {
    /// When (epoch seconds).
    pub(crate) t: f64,
    /// What: `SIGTERM`, `exit`, …
    pub(crate) label: String,
}

/// What to draw.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Chart {
    /// The title (escaped when drawn).
    pub(crate) title: String,
    /// Readings: epoch seconds and bytes, in time order.
    pub(crate) points: Vec<(f64, u64)>,
    /// The limit, in bytes.
    pub(crate) limit: Option<u64>,
    /// Actions and exits.
    pub(crate) marks: Vec<Mark>,
}

/// Draws `chart` as a PNG of `size`.
pub(crate) fn png(chart: &Chart, size: (u32, u32)) -> anyhow::Result<Vec<u8>> {
    let (width, height) = size;
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        draw(chart, &root)?;
        root.present()
            .map_err(|e| anyhow!("drawing the chart: {e}"))?;
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().context("encoding the chart")?;
    writer
        .write_image_data(&rgb)
        .context("encoding the chart")?;
    writer.finish().context("encoding the chart")?;
    Ok(out)
}

/// Draws `chart` as SVG of `size`.
pub(crate) fn svg(chart: &Chart, size: (u32, u32)) -> anyhow::Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        draw(chart, &root)?;
        root.present()
            .map_err(|e| anyhow!("drawing the chart: {e}"))?;
    }
    Ok(out)
}

/// Writes `chart` to `path`, as PNG or SVG by its extension.
pub(crate) fn write(chart: &Chart, path: &Path) -> anyhow::Result<()> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let bytes = match extension.as_deref() {
        Some("png") => png(chart, SIZE)?,
        Some("svg") => svg(chart, SIZE)?.into_bytes(),
        _ => anyhow::bail!(
            "--plot {}: the file's name must end in .png or .svg",
            crate::text::escape(&path.display().to_string())
        ),
    };
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Whether a font was found (text is drawn only then).
fn font() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        FONT_PATHS.iter().any(|path| {
            let Ok(bytes) = std::fs::read(path) else {
                return false;
            };
            // plotters keeps fonts for the process's life.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            register_font(FAMILY, FontStyle::Normal, bytes).is_ok()
        })
    })
}

fn draw<DB: DrawingBackend>(chart: &Chart, root: &DrawingArea<DB, Shift>) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let fail = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing the chart: {e}");
    root.fill(&WHITE).map_err(fail)?;
    let text = font();
    let (t0, t1) = match (chart.points.first(), chart.points.last()) {
        (Some(first), Some(last)) => {
            let marks = chart.marks.iter().map(|m| m.t);
            let end = marks.clone().fold(last.0, f64::max);
            let start = marks.fold(first.0, f64::min);
            (start, end.max(start + 1.0))
        }
        _ => (0.0, 1.0),
    };
    let top = chart
        .points
        .iter()
        .map(|p| p.1)
        .chain(chart.limit)
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;
    let mut builder = ChartBuilder::on(root);
    builder.margin(12);
    if text {
        builder
            .caption(crate::text::escape(&chart.title), (FAMILY, 18))
            .x_label_area_size(28)
            .y_label_area_size(72);
    }
    let mut plot = builder.build_cartesian_2d(t0..t1, 0.0..top).map_err(fail)?;
    let mut mesh = plot.configure_mesh();
    mesh.light_line_style(RGBColor(235, 235, 235));
    if text {
        mesh.x_labels(6)
            .y_labels(6)
            .x_label_formatter(&|t| LocalTime::from_epoch(*t).clock())
            .y_label_formatter(&|b| human_size(*b as u64))
            .label_style((FAMILY, 13));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(fail)?;
    if let Some(limit) = chart.limit {
        let limit = limit as f64;
        plot.draw_series(DashedLineSeries::new(
            [(t0, limit), (t1, limit)],
            8,
            6,
            RED.stroke_width(2),
        ))
        .map_err(fail)?;
        if text {
            plot.draw_series([Text::new(
                format!("limit {}", human_size(limit as u64)),
                (t0, limit),
                (FAMILY, 13).into_font().color(&RED),
            )])
            .map_err(fail)?;
        }
    }
    for mark in &chart.marks {
        let color = RGBColor(110, 110, 110);
        plot.draw_series(LineSeries::new(
            [(mark.t, 0.0), (mark.t, top)],
            color.stroke_width(1),
        ))
        .map_err(fail)?;
        if text {
            // A mark in the right half is labelled on its left, so that a
            // kill at the end of the chart keeps its whole label.
            let side = if mark.t > (t0 + t1) / 2.0 {
                HPos::Right
            } else {
                HPos::Left
            };
            plot.draw_series([Text::new(
                crate::text::escape(&mark.label),
                (mark.t, top * 0.97),
                (FAMILY, 13)
                    .into_font()
                    .color(&color)
                    .pos(Pos::new(side, VPos::Top)),
            )])
            .map_err(fail)?;
        }
    }
    let blue = RGBColor(31, 90, 180);
    plot.draw_series(LineSeries::new(steps(&chart.points), blue.stroke_width(2)))
        .map_err(fail)?;
    plot.draw_series(
        chart
            .points
            .iter()
            .map(|&(t, b)| Circle::new((t, b as f64), 2, blue.filled())),
    )
    .map_err(fail)?;
    Ok(())
}

/// The readings as steps: each value holds until the next reading.
fn steps(points: &[(f64, u64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len() * 2);
    for (i, &(t, bytes)) in points.iter().enumerate() {
        if i > 0 {
            out.push((t, points[i - 1].1 as f64));
        }
        out.push((t, bytes as f64));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> Chart {
        Chart {
            title: "grower\u{1b}[31m (pid 42)".into(),
            points: (0..30u32)
                .map(|s| (1e9 + f64::from(s), u64::from(s) << 21))
                .collect(),
            limit: Some(64 << 20),
            marks: vec![Mark {
                t: 1e9 + 29.5,
                label: "SIGTERM".into(),
            }],
        }
    }

    #[test]
    fn a_png_decodes_at_its_size_with_ink_on_it() {
        let bytes = png(&chart(), SIZE).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), SIZE);
        let ink = buf.chunks(3).filter(|px| px != &[255, 255, 255]).count();
        assert!(ink > 1000, "{ink} pixels drawn");
    }

    #[test]
    fn svg_text_is_escaped_and_names_lose_their_escapes() {
        let mut chart = chart();
        chart.title = "<script>alert(1)</script>\u{1b}[2J".into();
        let svg = svg(&chart, SIZE).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(!svg.contains("<script>") && !svg.contains('\u{1b}'));
    }

    #[test]
    fn a_mark_at_the_right_edge_is_labelled_on_its_left() {
        if !font() {
            assert!(
                std::env::var_os("CI").is_none(),
                "no font: install fonts-dejavu-core"
            );
            println!("skipped: no font to draw text with");
            return;
        }
        let svg = svg(&chart(), SIZE).unwrap();
        let label = svg
            .split("<text")
            .find(|element| element.contains("SIGTERM"))
            .unwrap_or_else(|| panic!("the mark's label in {svg}"));
        assert!(label.contains(r#"text-anchor="end""#), "{label}");
    }

    #[test]
    fn steps_hold_each_value_until_the_next() {
        assert_eq!(
            steps(&[(0.0, 1), (2.0, 5), (3.0, 4)]),
            [(0.0, 1.0), (2.0, 1.0), (2.0, 5.0), (3.0, 5.0), (3.0, 4.0)]
        );
        assert!(steps(&[]).is_empty());
    }

    #[test]
    fn an_empty_chart_is_drawn_too() {
        let empty = Chart {
            title: String::new(),
            points: Vec::new(),
            limit: None,
            marks: Vec::new(),
        };
        assert!(!png(&empty, (100, 50)).unwrap().is_empty());
    }
}
