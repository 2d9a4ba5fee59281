//! Text for people: names made safe for a terminal, sizes in binary units,
//! and aligned tables. `ps`, `status` and the logs all write through here.

use std::fmt::Write as _;

/// A name made safe for a terminal: control characters (and the invisible
/// bidirectional overrides that reorder text) are written as escapes —
/// `\n`, `\t`, `\r`, `\xNN`, `\u{NNNN}` — and a backslash as `\\`, so an odd
/// name cannot break a line, move the cursor, or pass for another.
pub(crate) fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() || is_bidi_control(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// `text` with its control characters (and bidirectional overrides)
/// escaped as [`escape`] writes them, but backslashes left alone: for text
/// that is already partly escaped, such as a `Debug` rendering.
pub(crate) fn escape_controls(text: &str) -> String {
    if !text.chars().any(|c| c.is_control() || is_bidi_control(c)) {
        return text.to_owned();
    }
    text.split('\\').map(escape).collect::<Vec<_>>().join("\\")
}

/// Raw bytes (a `comm`, a command line) as escaped text: invalid UTF-8
/// shows as `\xNN`, then [`escape`] applies.
pub(crate) fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(&escape(chunk.valid()));
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A size in bytes for people, in binary units: `0 B`, `824 KiB`, `312 MiB`,
/// `1.2 GiB`. One decimal below 10 of a unit, none above.
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    // Rounding may carry into the next unit: 1023.7 KiB is 1.0 MiB.
    if value.round() >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value < 9.95 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// Whether a column is aligned to the left or the right.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// Renders `rows` under `columns` (title, alignment) as an aligned table
/// with a header line. Cells must already be escaped; a row shorter than
/// the header leaves its last columns empty.
pub(crate) fn table(columns: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = columns
        .iter()
        .map(|(title, _)| title.chars().count())
        .collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = columns
        .iter()
        .map(|(title, _)| (*title).to_owned())
        .collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, ((_, align), width)) in columns.iter().zip(&widths).enumerate() {
            let cell = row.get(i).map_or("", String::as_str);
            if i > 0 {
                line.push_str("  ");
            }
            let pad = width - cell.chars().count();
            match align {
                Align::Right => {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                }
                Align::Left => {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_cannot_reach_the_terminal_raw() {
        for name in [
            "\r\nBcc: x@y",
            "\x1b]0;T\x07",
            "\x1b[31mR",
            "a\u{202e}b",
            "\u{85}",
        ] {
            let escaped = escape(name);
            assert!(
                !escaped
                    .chars()
                    .any(|c| c.is_control() || is_bidi_control(c)),
                "{escaped:?}"
            );
        }
        assert_eq!(escape("a\\b\n"), "a\\\\b\\n");
        assert_eq!(escape_controls("a\\b\n\x1b"), "a\\b\\n\\x1b");
        assert_eq!(escape_bytes(b"ok\xff\x1b"), "ok\\xff\\x1b");
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("plain name"), "plain name");
        assert_eq!(escape("a\nb\tc\rd"), "a\\nb\\tc\\rd");
        assert_eq!(escape("esc\x1b[31m"), "esc\\x1b[31m");
        assert_eq!(escape("nul\0del\x7f"), "nul\\x00del\\x7f");
        assert_eq!(escape("back\\slash"), "back\\\\slash");
        assert_eq!(escape("c1\u{85}"), "c1\\u{0085}");
        assert_eq!(escape("evil\u{202e}txt"), "evil\\u{202e}txt");
        assert_eq!(escape("bad \u{fffd} utf8 ünï"), "bad \u{fffd} utf8 ünï");
        assert_eq!(escape(""), "");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(824 * 1024), "824 KiB");
        assert_eq!(human_size(312 * (1u64 << 20)), "312 MiB");
        assert_eq!(human_size(1288 * (1u64 << 20)), "1.3 GiB");
        assert_eq!(human_size(1229 * (1u64 << 20)), "1.2 GiB");
        assert_eq!(human_size(9 * (1u64 << 20) + 1000 * 1024), "10 MiB");
        assert_eq!(human_size(1024 * (1u64 << 20) - 1), "1.0 GiB");
        assert_eq!(human_size(3 * 1024 * 1024 * (1u64 << 20)), "3.0 TiB");
        assert_eq!(human_size(u64::MAX), "16 EiB");
    }

    #[test]
    fn tables_align_and_trim() {
        let text = table(
            &[("PID", Align::Right), ("NAME", Align::Left)],
            &[
                vec!["7".into(), "sleep".into()],
                vec!["12345".into(), "x".into()],
            ],
        );
        assert_eq!(text, "  PID  NAME\n    7  sleep\n12345  x\n");
    }
}
