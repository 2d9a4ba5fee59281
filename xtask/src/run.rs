//! `cargo xtask run`: builds everything, then runs the daemon as root on
//! `config/procespy.toml`.

use std::{
    fs,
    os::unix::{fs::MetadataExt, process::CommandExt},
    path::Path,
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{cmd, ebpf};

/// The config `cargo xtask run` uses, relative to the workspace root.
const CONFIG: &str = "config/procespy.toml";

/// Setup, eBPF object, release daemon, then `procespy run -c
/// config/procespy.toml ARGS` as root (through sudo if needed). xtask
/// replaces itself with the daemon, so the daemon gets signals (Ctrl-C)
/// directly and its exit code is the command's.
pub fn run(args: &[String]) -> Result<()> {
    ebpf::setup_and_build()?;
    cmd::run(
        cmd::cargo().args(["build", "--release", "-p", "procespy"]),
        "fix the compile errors above",
    )?;
    let root = cmd::root();
    let config = root.join(CONFIG);
    secure_config(&config)?;

    let binary = cmd::target_dir().join("release").join("procespy");
    let mut daemon = if cmd::is_root() {
        Command::new(&binary)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg(&binary);
        sudo
    };
    daemon
        .arg("run")
        .arg("-c")
        .arg(&config)
        .args(args)
        .current_dir(&root);
    let line = cmd::describe(&daemon);
    eprintln!("$ {line}");
    let err = daemon.exec();
    Err(err).with_context(|| format!("could not start `{line}`"))
}

/// procespy refuses a config that root does not own or that group or
/// others can write. Gives the file to root; refuses to touch the mode.
fn secure_config(config: &Path) -> Result<()> {
    let meta = fs::metadata(config).with_context(|| {
        format!(
            "cannot read {CONFIG} ({}); create it first",
            config.display()
        )
    })?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        bail!(
            "{CONFIG} is writable by group or others (mode {mode:04o}), and procespy refuses \
             such configs; fix it with `chmod go-w {CONFIG}` (with sudo if root owns it)"
        );
    }
    if meta.uid() == 0 {
        return Ok(());
    }
    println!(
        "run: {CONFIG} belongs to uid {}; giving it to root (procespy refuses configs root does not own)",
        meta.uid()
    );
    if cmd::is_root() {
        std::os::unix::fs::chown(config, Some(0), None)
            .with_context(|| format!("could not chown {} to root", config.display()))
    } else {
        cmd::run(
            Command::new("sudo").args(["chown", "root"]).arg(config),
            &format!("run `sudo chown root {CONFIG}` yourself"),
        )
    }
}
