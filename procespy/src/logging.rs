//! Log output: text or JSON lines on stderr, at a level set by `-v`/`-q`.

use tracing::level_filters::LevelFilter;

use crate::cli::{LogArgs, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `-v`/`-q`.
pub fn init(args: &LogArgs) {
    let level = match (args.verbose, args.quiet) {
        (0, 0) => LevelFilter::INFO,
        (1, _) => LevelFilter::DEBUG,
        (v, _) if v >= 2 => LevelFilter::TRACE,
        (_, 1) => LevelFilter::WARN,
        _ => LevelFilter::ERROR,
    };
    let mut filter = tracing_subscriber::EnvFilter::builder()
        .with_default_directive(level.into())
        .from_env_lossy();
    if level < LevelFilter::TRACE && std::env::var_os("RUST_LOG").is_none() {
        // aya's loader chatter (feature probes, relocations) is for -vv.
        for noisy in ["aya=info", "aya_obj=info"] {
            filter = filter.add_directive(noisy.parse().expect("a valid directive"));
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let result = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second init (in tests) keeps the first subscriber.
    drop(result);
}
