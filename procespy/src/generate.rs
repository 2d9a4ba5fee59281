//! The hidden `procespy generate --out DIR`: writes the man pages and the
//! shell completions from the command line's own definition, for
//! `cargo xtask dist` and the Debian package.
//!
//! - `DIR/man/procespy.1` and `DIR/man/procespy-SUBCOMMAND.1` for every
//!   visible subcommand (clap_mangen); the main page also tells about the
//!   files, the signals, the exit codes and the service;
//! - `DIR/completions/procespy.bash`, `_procespy` (zsh) and `procespy.fish`
//!   (clap_complete).
//!
//! Hidden subcommands (`notify-popup`, `generate`) appear in neither.
//! procespy.toml(5) is written by hand (`packaging/man/procespy.toml.5`).

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use clap_complete::Shell;

/// `procespy generate --out DIR`, for the command line `full`.
pub(crate) fn run(out: &Path, full: clap::Command) -> Result<()> {
    let written = generate(out, full)?;
    let mut text = String::new();
    for path in written {
        text.push_str(&format!("{}\n", path.display()));
    }
    crate::output::print_stdout(text.trim_end()).context("printing what was written")?;
    Ok(())
}

/// Writes the man pages and completions of `full` under `out`; returns
/// their paths.
pub(crate) fn generate(out: &Path, full: clap::Command) -> Result<Vec<PathBuf>> {
    let command = command(full);
    let mut written = man_pages(&out.join("man"), &command)?;
    written.extend(completions(&out.join("completions"), &command)?);
    Ok(written)
}

/// The command line as the pages and completions show it: named `procespy`,
/// without the hidden subcommands (clap_complete's bash script would offer
/// them) nor the `help` subcommand (every subcommand has `--help`).
fn command(full: clap::Command) -> clap::Command {
    let mut command = clap::Command::new("procespy")
        .bin_name("procespy")
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(true)
        .about(full.get_about().cloned().unwrap_or_default())
        .disable_help_subcommand(true)
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    command.build();
    command
}

fn man_pages(dir: &Path, command: &clap::Command) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let man = clap_mangen::Man::new(sub.clone()).source(source());
        let path = man
            .generate_to(dir)
            .with_context(|| format!("writing the man page of {}", sub.get_name()))?;
        written.push(path);
    }
    let path = dir.join("procespy.1");
    let mut page = Vec::new();
    main_page(command, &mut page).context("rendering procespy.1")?;
    let page = once_preamble(&String::from_utf8_lossy(&page));
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    written.insert(0, path);
    Ok(written)
}

fn source() -> String {
    format!("procespy {}", env!("CARGO_PKG_VERSION"))
}

/// procespy(1): clap's sections, then the ones a daemon's page needs.
fn main_page(command: &clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(command.clone())
        .source(source())
        .manual("procespy manual");
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    out.write_all(DESCRIPTION.as_bytes())?;
    man.render_options_section(out)?;
    man.render_subcommands_section(out)?;
    out.write_all(TRAILER.as_bytes())?;
    man.render_version_section(out)
}

/// clap_mangen starts every piece it renders with the two lines that define
/// `\*(Aq`; the page needs them once.
fn once_preamble(page: &str) -> String {
    let mut seen = std::collections::HashSet::new();
    let mut out = String::with_capacity(page.len());
    for line in page.lines() {
        let preamble = line.starts_with(".ie \\n(.g .ds Aq") || line.starts_with(".el .ds Aq");
        if preamble && !seen.insert(line) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The DESCRIPTION section of procespy(1), in roff.
const DESCRIPTION: &str = r#".SH DESCRIPTION
\fBprocespy\fR keeps named processes inside the memory limits written in
\fI/etc/procespy.toml\fR (see \fBprocespy.toml\fR(5)).
eBPF programs follow every exec, fork, exit, rename and RSS change in the kernel;
the daemon matches processes against the limits, reconciles its table with a
scheduled full \fI/proc\fR examination, and on a breach terminates the process
and tells people: a desktop popup, an email, and a line in the log.
.PP
Without a subcommand, or with \fBrun\fR, procespy is the daemon; it needs root
(or the capabilities the systemd unit grants).
\fBps\fR and \fBcheck\-config\fR work without root; \fBstatus\fR and \fBreload\fR
talk to the running daemon over its control socket, which only root may use.
"#;

/// FILES, SIGNALS, EXIT STATUS, ENVIRONMENT and SEE ALSO of procespy(1).
const TRAILER: &str = r#".SH FILES
.TP
\fI/etc/procespy.toml\fR
The configuration; see \fBprocespy.toml\fR(5).
It must be owned by root and not writable by group or others.
When it is missing and no \fB\-c\fR was given, the daemon runs on its built\-in
default: watch only, desktop popups on.
.TP
\fI/run/procespy.sock\fR
The control socket \fBprocespy status\fR and \fBprocespy reload\fR use (root only).
.TP
\fI/var/lib/procespy/outbox\fR
Emails not yet accepted by the SMTP server (the default \fBspool_dir\fR).
.TP
\fI/lib/systemd/system/procespy.service\fR
The systemd unit the Debian package installs.
.SH SIGNALS
.TP
\fBSIGHUP\fR
Re\-read the configuration, like \fBprocespy reload\fR.
A configuration that does not validate is refused, the error logged, and the old
one stays in force.
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Detach the eBPF programs, flush what can be flushed of the alert queue to the
spool, and exit 0.
.SH EXIT STATUS
.TP
\fB0\fR
Success.
.TP
\fB1\fR
Invalid configuration or bad arguments.
.TP
\fB2\fR
Runtime failure: cannot start, the socket is absent, ...
.SH ENVIRONMENT
.TP
\fBRUST_LOG\fR
Overrides \fB\-v\fR and \fB\-q\fR with a tracing filter (\fBRUST_LOG=debug\fR).
.TP
\fBJOURNAL_STREAM\fR, \fBNOTIFY_SOCKET\fR
Set by systemd: when stderr is the journal, text logs are written as journal
entries with priorities and structured fields (\fBEVENT\fR, \fBPID\fR,
\fBNAME\fR, \fBUSER\fR, \fBRSS\fR, \fBLIMIT\fR, \fBRULE\fR, \fBACTION\fR,
\fBRESULT\fR); the daemon tells systemd when it is ready, reloading and stopping.
.SH EXAMPLES
.TP
\fBprocespy check\-config /etc/procespy.toml\fR
Validate a configuration before reloading it.
.TP
\fBprocespy ps \-n 10\fR
The ten processes using the most memory, with the limit covering each.
.TP
\fBsudo systemctl reload procespy\fR
Make the service re\-read \fI/etc/procespy.toml\fR.
.TP
\fBjournalctl \-u procespy EVENT=action\fR
Every action the service took.
.SH SEE ALSO
\fBprocespy.toml\fR(5), \fBsystemctl\fR(1), \fBjournalctl\fR(1)
"#;

fn completions(dir: &Path, command: &clap::Command) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut command = command.clone();
    let mut written = Vec::new();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut command, "procespy", dir)
            .with_context(|| format!("writing the {shell} completions"))?;
        written.push(path);
    }
    Ok(written)
}
