//! Log output: text or JSON lines on stderr, at a level set by `-v`/`-q`;
//! under systemd, the journal's own protocol.
//!
//! When stderr is the journal (systemd sets `$JOURNAL_STREAM` to the device
//! and inode of the stream it gave the service, and stderr is still that
//! stream), text logs go to journald as native entries instead of lines:
//! each carries its priority (error 3, warning 4, info 5, debug 6, trace 7),
//! and every field of the event is a field of the entry, upper-cased
//! (`EVENT=action PID=… NAME=… USER=… RSS=… LIMIT=… RULE=… ACTION=…
//! RESULT=…`), so `journalctl -u procespy EVENT=action RULE=chromium` finds
//! a rule's actions. Prefixing stderr lines with `<N>` (sd-daemon(3)) would
//! carry the priority but not the fields. `--log-format json` keeps JSON
//! lines on stderr, as asked; a journald that cannot be reached falls back to
//! text lines.

use std::sync::OnceLock;

use std::io::IsTerminal;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// What to log, and how.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// `-v` count: debug, then trace.
    pub(crate) verbose: u8,
    /// `-q` count: warnings, then errors only.
    pub(crate) quiet: u8,
    /// Text or JSON lines.
    pub(crate) format: LogFormat,
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `-v`/`-q`.
/// Text lines are coloured only when stderr is a terminal.
pub(crate) fn init(args: &Settings) {
    let filter = filter(args);
    if args.format == LogFormat::Text && stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(journal) => {
                // Fields as they are named in the code, upper-cased: EVENT, PID, RULE, …
                let journal = journal.with_field_prefix(None);
                let result = tracing_subscriber::registry()
                    .with(filter)
                    .with(journal)
                    .try_init();
                // A second init (in tests) keeps the first subscriber.
                drop(result);
                return;
            }
            Err(err) => eprintln!(
                "{}procespy: cannot write to the journal ({err}); logging lines on stderr",
                stderr_prefix(Priority::Warning)
            ),
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let result = match args.format {
        LogFormat::Text => builder.fmt_fields(escaped_fields()).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second init (in tests) keeps the first subscriber.
    drop(result);
}

/// Text-line fields with every control character escaped, so that no
/// value (a process name, above all) can split a line, forge another, or
/// drive the terminal. JSON lines are escaped by JSON itself.
fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let text = crate::text::escape_controls(&format!("{value:?}"));
        if field.name() == "message" {
            write!(writer, "{text}")
        } else {
            write!(writer, "{}={text}", field.name())
        }
    })
    .delimited(" ")
}

fn filter(args: &Settings) -> EnvFilter {
    let level = match (args.verbose, args.quiet) {
        (0, 0) => LevelFilter::INFO,
        (1, _) => LevelFilter::DEBUG,
        (v, _) if v >= 2 => LevelFilter::TRACE,
        (_, 1) => LevelFilter::WARN,
        _ => LevelFilter::ERROR,
    };
    let mut filter = EnvFilter::builder()
        .with_default_directive(level.into())
        .from_env_lossy();
    if level < LevelFilter::TRACE && std::env::var_os("RUST_LOG").is_none() {
        // aya's loader chatter (feature probes, relocations) is for -vv.
        for noisy in ["aya=info", "aya_obj=info"] {
            filter = filter.add_directive(noisy.parse().expect("a valid directive"));
        }
    }
    filter
}

/// syslog priorities, for lines written straight to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Priority {
    /// `<3>`
    Error,
    /// `<4>`
    Warning,
}

/// The sd-daemon(3) prefix (`<3>`, `<4>`) for a line written straight to
/// stderr (outside `tracing`), when stderr is the journal; else `""`.
pub(crate) fn stderr_prefix(priority: Priority) -> &'static str {
    if !stderr_is_journal() {
        return "";
    }
    match priority {
        Priority::Error => "<3>",
        Priority::Warning => "<4>",
    }
}

/// Whether stderr is the stream systemd connected to the journal.
pub(crate) fn stderr_is_journal() -> bool {
    static JOURNAL: OnceLock<bool> = OnceLock::new();
    *JOURNAL.get_or_init(|| {
        let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
            return false;
        };
        let Ok(stat) = nix::sys::stat::fstat(std::io::stderr()) else {
            return false;
        };
        is_stream(&stream.to_string_lossy(), stat.st_dev, stat.st_ino)
    })
}

/// Whether `$JOURNAL_STREAM` (`DEVICE:INODE`, decimal) names the file with
/// this device and inode. The variable is inherited by every child, even one
/// whose stderr was redirected, so the name alone proves nothing.
fn is_stream(variable: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = variable.split_once(':') else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_stream_must_be_stderr_itself() {
        assert!(is_stream("64769:123456", 64769, 123456));
        assert!(!is_stream("64769:123456", 64769, 123457));
        assert!(!is_stream("64769", 64769, 123456));
        assert!(!is_stream("", 0, 0));
        assert!(!is_stream("x:y", 0, 0));
    }
}
