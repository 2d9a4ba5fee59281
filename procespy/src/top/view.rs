//! How `procespy top` looks: the machine's CPU and memory (gauges over
//! their sparklines), the processes in `ps`'s columns with a trend for each
//! covered one, the daemon's last actions, and a footer with the keys and
//! where the figures come from. Every name is escaped before it is drawn,
//! and every cell is cut to its column, so no name moves the layout.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Style, Stylize},
    symbols,
    text::{Line, Span},
    widgets::{Block, Cell, LineGauge, Paragraph, Row, Sparkline, Table},
};

use super::{
    TREND_COLUMNS,
    model::{Model, Sort, action_line},
};
use crate::{
    alerts::message::LocalTime,
    ps::{self, PSS_AT},
    text::{Align, escape, human_size},
};

/// The widths of `ps`'s columns; NAME also takes what the trend leaves, up
/// to [`NAME_MAX`].
const WIDTHS: [u16; 8] = [7, 10, 15, 9, 6, 6, 9, 6];
/// The widest NAME: room for the start of an escaped name.
const NAME_MAX: u16 = 32;
/// The width of the PSS column (`--pss`), as RSS's.
const PSS_WIDTH: u16 = 9;
/// Lines of the actions panel, inside its border.
const ACTION_LINES: u16 = 5;
/// %LIMIT from which the figure is shown as a warning, then as danger.
const WARN_PERCENT: f64 = 75.0;
const DANGER_PERCENT: f64 = 90.0;

/// Draws the whole screen.
pub(crate) fn draw(frame: &mut Frame, model: &Model) {
    let [header, processes, actions, footer] = Layout::vertical([
        Constraint::Length(6),
        Constraint::Min(4),
        Constraint::Length(ACTION_LINES + 2),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    draw_header(frame, header, model);
    draw_processes(frame, processes, model);
    draw_actions(frame, actions, model);
    draw_footer(frame, footer, model);
}

fn draw_header(frame: &mut Frame, area: Rect, model: &Model) {
    let [cpu, memory] = Layout::horizontal([Constraint::Fill(1), Constraint::Fill(1)]).areas(area);
    let busy = model.cpu_now();
    draw_gauge(
        frame,
        cpu,
        Gauge {
            title: " CPU ",
            ratio: busy / 100.0,
            label: format!("{busy:5.1}% busy"),
            color: Color::Cyan,
        },
        |columns| (model.cpu_history(columns), 1000),
    );
    let mem = model.mem_now();
    let used = mem.total.saturating_sub(mem.available);
    draw_gauge(
        frame,
        memory,
        Gauge {
            title: " Memory ",
            ratio: used as f64 / mem.total.max(1) as f64,
            label: format!(
                "{} used of {}, {} available",
                human_size(used),
                human_size(mem.total),
                human_size(mem.available)
            ),
            color: Color::Green,
        },
        |columns| (model.mem_history(columns), mem.total),
    );
}

/// A gauge over its history.
struct Gauge {
    title: &'static str,
    /// The share filled, 0 to 1.
    ratio: f64,
    label: String,
    color: Color,
}

/// Draws `gauge` in a box, over the sparkline of `history(columns)`: the
/// values and the value of a full bar.
fn draw_gauge(
    frame: &mut Frame,
    area: Rect,
    gauge: Gauge,
    history: impl FnOnce(usize) -> (Vec<Option<u64>>, u64),
) {
    let block = Block::bordered().title(gauge.title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [line, spark] = Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(inner);
    let style = Style::new().fg(gauge.color);
    frame.render_widget(
        LineGauge::default()
            .ratio(gauge.ratio.clamp(0.0, 1.0))
            .label(gauge.label)
            .filled_symbol(symbols::block::FULL)
            .unfilled_symbol(symbols::shade::LIGHT)
            .filled_style(style),
        line,
    );
    let (values, max) = history(usize::from(spark.width));
    frame.render_widget(
        Sparkline::default().data(values).max(max).style(style),
        spark,
    );
}

fn draw_processes(frame: &mut Frame, area: Rect, model: &Model) {
    let visible = model.visible();
    let block = Block::bordered();
    let inner = block.inner(area);
    let room = usize::from(inner.height.saturating_sub(1));
    let shown = visible.len().min(room);
    let sort = match model.sort() {
        Sort::Memory => "memory",
        Sort::Cpu => "CPU",
    };
    let mut title = format!(" Processes by {sort}: {shown} of {} ", model.listed());
    match model.filter() {
        (filter, _) if !filter.is_empty() => {
            title.push_str(&format!("matching \"{}\" ", escape(filter)));
        }
        _ => {}
    }

    let columns = ps::columns(model.pss());
    let mut fixed = WIDTHS.to_vec();
    if model.pss() {
        fixed.insert(PSS_AT, PSS_WIDTH);
    }
    let gaps = fixed.len() as u16;
    let spare = inner.width.saturating_sub(fixed.iter().sum::<u16>() + gaps);
    let trend = spare.min(TREND_COLUMNS as u16);
    let mut widths: Vec<Constraint> = fixed.iter().copied().map(Constraint::Length).collect();
    widths[2] = Constraint::Length((fixed[2] + spare - trend).min(NAME_MAX));
    widths.push(Constraint::Length(trend));

    let header = Row::new(
        columns
            .iter()
            .map(|&(title, align)| aligned(title.to_owned(), align))
            .chain([Cell::from("TREND")]),
    )
    .bold();
    let rows = visible.iter().take(shown).map(|row| {
        let mut cells: Vec<Cell> = ps::cells(row)
            .into_iter()
            .zip(&columns)
            .map(|(text, &(_, align))| aligned(text, align))
            .collect();
        if let Some(percent) = row.limit_percent {
            let last = cells.len() - 1;
            cells[last] = cells[last].clone().style(limit_style(percent));
        }
        cells.push(Cell::from(model.trend(row, usize::from(trend))).fg(Color::Cyan));
        Row::new(cells)
    });
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .column_spacing(1)
            .block(block.title(title)),
        area,
    );
}

/// A cell of text, aligned as its column.
fn aligned(text: String, align: Align) -> Cell<'static> {
    let line = Line::from(text);
    Cell::from(match align {
        Align::Left => line,
        Align::Right => line.right_aligned(),
    })
}

/// How %LIMIT is shown: plain, then yellow, then red as RSS nears the limit.
fn limit_style(percent: f64) -> Style {
    if percent >= DANGER_PERCENT {
        Style::new().fg(Color::Red).bold()
    } else if percent >= WARN_PERCENT {
        Style::new().fg(Color::Yellow)
    } else {
        Style::new()
    }
}

fn draw_actions(frame: &mut Frame, area: Rect, model: &Model) {
    let lines: Vec<Line> = if model.actions().is_empty() {
        let none = if model.has_daemon() {
            "none yet"
        } else {
            "none known: the daemon tells them"
        };
        vec![Line::from(none).dim()]
    } else {
        model
            .actions()
            .iter()
            .take(usize::from(ACTION_LINES))
            .map(|record| {
                let clock = LocalTime::from_epoch(record.time).clock();
                Line::from(action_line(record, &clock))
            })
            .collect()
    };
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" Last actions ")),
        area,
    );
}

fn draw_footer(frame: &mut Frame, area: Rect, model: &Model) {
    let key = |key: &'static str, what: &'static str| {
        [Span::from(key).bold(), Span::from(format!(" {what}  "))]
    };
    let mut spans: Vec<Span> = match model.filter() {
        (filter, true) => vec![
            Span::from(format!("filter: {}_", escape(filter))).reversed(),
            Span::from("  "),
        ]
        .into_iter()
        .chain(key("Enter", "keep"))
        .chain(key("Esc", "clear"))
        .collect(),
        _ => [
            key("q", "quit"),
            key("m", "memory"),
            key("c", "CPU"),
            key("/", "filter"),
            key("Esc", "clear"),
        ]
        .into_iter()
        .flatten()
        .collect(),
    };
    spans.push(Span::from(format!("| {}", model.source_line())).dim());
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use ratatui::{Terminal, backend::TestBackend, buffer::Buffer};

    use super::*;
    use crate::top::model::{
        Sample,
        tests::{growing, model, proc, sample},
    };

    const MIB: u64 = 1 << 20;

    /// Draws `model` on a `width` × `height` screen; returns it, a line of
    /// cells a row (a wide character's second cell is its own).
    fn screen(model: &Model, width: u16, height: u16) -> Vec<Vec<String>> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| draw(frame, model)).unwrap();
        cells(terminal.backend().buffer())
    }

    fn cells(buffer: &Buffer) -> Vec<Vec<String>> {
        let width = usize::from(buffer.area.width);
        buffer
            .content()
            .chunks(width.max(1))
            .map(|row| row.iter().map(|cell| cell.symbol().to_owned()).collect())
            .collect()
    }

    fn text(row: &[String]) -> String {
        row.concat()
    }

    /// The whole screen as text, a line a row.
    fn joined(screen: &[Vec<String>]) -> String {
        screen
            .iter()
            .map(|row| text(row))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The column at which `needle` starts in `row`, counted in cells.
    fn column(row: &[String], needle: &str) -> Option<usize> {
        (0..row.len()).find(|&x| row[x..].concat().starts_with(needle))
    }

    fn odd_names() -> Sample {
        let names: [&[u8]; 6] = [
            b"plain",
            b"\x1b[31mred",
            b"two\nlines",
            b"bad\xff\xfeutf8",
            "\u{202e}evil".as_bytes(),
            "漢字漢字漢".as_bytes(),
        ];
        let procs = names
            .iter()
            .enumerate()
            .map(|(i, name)| proc(100 + i as u32, name, 60 - i as u64, 0))
            .collect();
        sample(10.0, procs, &[(100, 100 * MIB)])
    }

    #[test]
    fn odd_names_are_escaped_and_keep_every_column_in_place() {
        let mut model = model();
        model.update(odd_names());
        let screen = screen(&model, 120, 30);
        assert!(
            screen.iter().flatten().all(|cell| !cell
                .chars()
                .any(|c| c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c))),
            "{screen:?}"
        );
        let rows: Vec<&Vec<String>> = screen
            .iter()
            .filter(|row| text(row).contains(" alice "))
            .collect();
        assert_eq!(rows.len(), 6, "{screen:?}");
        let rss_ends: Vec<Option<usize>> = rows.iter().map(|row| column(row, "MiB")).collect();
        assert!(rss_ends[0].is_some());
        assert!(rss_ends.iter().all(|&x| x == rss_ends[0]), "{rss_ends:?}");
        let all = joined(&screen);
        for shown in [
            r"\x1b[31mred",
            r"two\nlines",
            "bad\u{fffd}\u{fffd}utf8",
            r"\u{202e}evil",
        ] {
            assert!(all.contains(shown), "{shown} in\n{all}");
        }
    }

    #[test]
    fn the_screen_has_its_parts_and_a_covered_process_its_trend() {
        let model = growing(&[(10.0, 25), (11.0, 50), (12.0, 100)], 100, &[]);
        let screen = screen(&model, 120, 30);
        let all = joined(&screen);
        for part in [
            " CPU ",
            "25.0% busy",
            " Memory ",
            "500 MiB used of 1000 MiB, 500 MiB available",
            " Processes by memory: 1 of 1 ",
            "PID",
            "%LIMIT",
            "TREND",
            " Last actions ",
            "none known: the daemon tells them",
            "q quit",
            "no daemon: /proc only",
        ] {
            assert!(all.contains(part), "{part:?} in\n{all}");
        }
        let row = screen
            .iter()
            .map(|row| text(row))
            .find(|row| row.contains("grower"))
            .unwrap();
        assert!(row.contains("100 MiB") && row.contains("100.0"), "{row}");
        assert!(row.contains("▂▄█"), "{row}");
    }

    #[test]
    fn pss_has_a_column_after_rss_only_on_request() {
        let procs = vec![proc(100, b"sharer", 300, 0), proc(101, b"other", 200, 0)];
        let mut asked = sample(10.0, procs.clone(), &[]);
        asked.pss = Some(HashMap::from([(100, 25 * MIB)]));
        let mut with_pss = model();
        with_pss.update(asked);
        let drawn = screen(&with_pss, 120, 30);
        let header = drawn
            .iter()
            .map(|row| text(row))
            .find(|row| row.contains("PID"))
            .unwrap();
        let (rss, pss, mem) = (
            header.find(" RSS").unwrap(),
            header.find(" PSS").unwrap(),
            header.find("%MEM").unwrap(),
        );
        assert!(rss < pss && pss < mem, "{header}");
        let row = |name: &str| {
            drawn
                .iter()
                .map(|row| text(row))
                .find(|row| row.contains(name))
                .unwrap()
        };
        assert!(
            row("sharer").contains("300 MiB    25 MiB"),
            "{}",
            row("sharer")
        );
        assert!(
            row("other").contains("200 MiB         -"),
            "{}",
            row("other")
        );

        let mut plain = model();
        plain.update(sample(10.0, procs, &[]));
        assert!(!joined(&screen(&plain, 120, 30)).contains(" PSS"));
    }

    #[test]
    fn a_small_terminal_still_draws() {
        let mut model = model();
        model.update(odd_names());
        for (width, height) in [(20, 10), (1, 1), (0, 0)] {
            screen(&model, width, height);
        }
    }
}
