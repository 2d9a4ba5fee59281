//! `cargo xtask bench NAME`: benchmarks, one module each.
//!
//! To add one: write `bench/NAME.rs` (or `bench/NAME/mod.rs`) with `pub fn run(args: &[String]) ->
//! Result<()>`, declare it here, and add it to [`BENCHMARKS`] and to the
//! match in [`run`].

mod bpfstats;
mod daemon;
mod faulter;
mod floor;
mod history;
mod overhead;
mod patterns;
mod plot;
mod procs;
mod reaction;
mod report;
mod scale;
mod spawner;
mod stats;
mod sysctl;

use anyhow::{Result, bail};

/// Every benchmark: its name and what it measures.
const BENCHMARKS: &[(&str, &str)] = &[
    (
        "reaction",
        "how far past a 256 MiB limit a growing process gets, per watchdog [--runs N] [--kernel 5.10|6.1|6.12]",
    ),
    (
        "overhead",
        "BPF statistics vs the floor, exec storm, idle, spawns, make -j2 [--quick] [--only PART]",
    ),
    (
        "history",
        "the history's cost: idle CPU and RSS with it on and off, database growth, reaction [--quick]",
    ),
    (
        "patterns",
        "daemon CPU per exec with 10,000 pattern limits vs 1 [--runs N] [--span SECONDS]",
    ),
    (
        "scale",
        "one /proc examination with 10,000 processes vs ps [--runs N]",
    ),
];

/// Runs benchmark `name` with `args`; without a name, lists them.
pub fn run(name: Option<&str>, args: &[String]) -> Result<()> {
    let Some(name) = name else {
        println!("{}", available());
        return Ok(());
    };
    match name {
        "reaction" => reaction::run(args),
        "overhead" => overhead::run(args),
        "history" => history::run(args),
        "patterns" => patterns::run(args),
        "scale" => scale::run(args),
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
