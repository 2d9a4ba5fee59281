//! `bench/RESULTS.md`: each benchmark owns one section, between markers,
//! which it replaces on every run (or appends the first time).

use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context, Result};

use crate::cmd;

const TITLE: &str = "# Benchmark results\n\n\
Written by `cargo xtask bench NAME`; each section is replaced when its benchmark runs again. \
The machine is shared and noisy: read medians and ratios, not single runs.\n";

/// `bench/` in the workspace.
pub fn bench_dir() -> PathBuf {
    cmd::root().join("bench")
}

/// Where the section of benchmark `name` goes.
fn results_path() -> PathBuf {
    bench_dir().join("RESULTS.md")
}

/// The opening lines of a section: title, date, machine and the command.
pub fn preamble(title: &str, name: &str, args: &[String]) -> String {
    let mut command = format!("cargo xtask bench {name}");
    for arg in args {
        command.push(' ');
        command.push_str(arg);
    }
    format!(
        "## {title}\n\n- date: {}\n- machine: {}\n- command: `{command}`\n",
        date(),
        machine()
    )
}

/// `nproc` and the kernel release, e.g. `2 CPUs, Linux 6.18.44`.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_else(|_| "?".into());
    format!("{cpus} CPUs (nproc), Linux {} (uname -r)", kernel.trim())
}

/// Now, in UTC, to the minute.
fn date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map_or_else(|| "?".into(), |s| s.trim().to_owned())
}

/// Replaces (or appends) the section of benchmark `name` with `body`.
pub fn save_section(name: &str, body: &str) -> Result<()> {
    let path = results_path();
    let old = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => TITLE.to_owned(),
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    let new = replace_section(&old, name, body);
    fs::create_dir_all(bench_dir()).context("creating bench/")?;
    fs::write(&path, new).with_context(|| format!("writing {}", path.display()))?;
    println!("bench: wrote the `{name}` section of {}", path.display());
    Ok(())
}

fn replace_section(old: &str, name: &str, body: &str) -> String {
    let begin = format!("<!-- bench:{name} -->");
    let end = format!("<!-- /bench:{name} -->");
    let section = format!("{begin}\n{}\n{end}", body.trim_end());
    match (old.find(&begin), old.find(&end)) {
        (Some(start), Some(stop)) if stop > start => {
            format!("{}{section}{}", &old[..start], &old[stop + end.len()..])
        }
        _ => format!("{}\n\n{section}\n", old.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_appended_then_replaced() {
        let one = replace_section("# T\n", "a", "first");
        assert_eq!(one, "# T\n\n<!-- bench:a -->\nfirst\n<!-- /bench:a -->\n");
        let two = replace_section(&one, "b", "other");
        let three = replace_section(&two, "a", "second");
        assert!(three.contains("second") && !three.contains("first"));
        assert!(three.find("bench:a").unwrap() < three.find("bench:b").unwrap());
    }
}
