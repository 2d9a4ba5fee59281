//! `cargo xtask bench NAME`: benchmarks, one module each.
//!
//! To add one: write `bench/NAME.rs` with `pub fn run(args: &[String]) ->
//! Result<()>`, declare it here, and add it to [`BENCHMARKS`] and to the
//! match in [`run`].

use anyhow::{Result, bail};

/// Every benchmark: its name and what it measures.
const BENCHMARKS: &[(&str, &str)] = &[];

/// Runs benchmark `name` with `args`; without a name, lists them.
pub fn run(name: Option<&str>, args: &[String]) -> Result<()> {
    let Some(name) = name else {
        println!("{}", available());
        return Ok(());
    };
    let _ = args;
    #[allow(clippy::match_single_binding)] // one arm per benchmark goes here
    match name {
        _ => bail!("unknown benchmark `{name}`; {}", available()),
    }
}

fn available() -> String {
    if BENCHMARKS.is_empty() {
        return "no benchmarks are available yet".into();
    }
    let mut text = String::from("available benchmarks:");
    for (name, about) in BENCHMARKS {
        text.push_str(&format!("\n  {name:<20} {about}"));
    }
    text
}
