//! Debian archives reached through apt configs of xtask's own, under the
//! cache: their sources, lists and state never touch the system's apt.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, bail};

use crate::cmd;

/// A Debian release's archive: the suites its kernels come from.
#[derive(Debug)]
pub struct Archive {
    /// The config's directory under `<cache>/apt/`, and its name in messages.
    pub name: &'static str,
    /// `(mirror, suite)` pairs, component `main`.
    suites: &'static [(&'static str, &'static str)],
}

const MIRROR: &str = "http://deb.debian.org/debian";
const SECURITY: &str = "http://deb.debian.org/debian-security";

/// Debian 11, whose 5.10 kernels the system's apt (Debian 12) does not list.
pub const DEBIAN_11: Archive = Archive {
    name: "debian11",
    suites: &[
        (MIRROR, "bullseye"),
        (MIRROR, "bullseye-updates"),
        (SECURITY, "bullseye-security"),
    ],
};

/// Debian 12: its 6.1 kernels, and Debian 13's 6.12 built for it (security suite).
pub const DEBIAN_12: Archive = Archive {
    name: "debian12",
    suites: &[
        (MIRROR, "bookworm"),
        (MIRROR, "bookworm-updates"),
        (SECURITY, "bookworm-security"),
    ],
};

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Lists older than this are refreshed before a package is chosen.
const MAX_LIST_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// One archive's apt config: `APT_CONFIG` for apt-get and apt-cache.
pub struct Apt {
    name: &'static str,
    dir: PathBuf,
}

impl Apt {
    /// Writes the config of `archive` under `<cache>/apt/NAME` (every time:
    /// it is small, and a changed list of suites takes effect at once).
    pub fn new(archive: &Archive, cache: &Path) -> Result<Apt> {
        let dir = cache.join("apt").join(archive.name);
        for sub in [
            "parts",
            "sources.list.d",
            "state/lists/partial",
            "cache/archives/partial",
        ] {
            let path = dir.join(sub);
            fs::create_dir_all(&path)
                .with_context(|| format!("cannot create the apt directory {}", path.display()))?;
        }
        write(&dir.join("apt.conf"), &config(&dir))?;
        write(&dir.join("sources.list"), &sources(archive))?;
        let status = dir.join("status");
        if !status.exists() {
            write(&status, "")?;
        }
        Ok(Apt {
            name: archive.name,
            dir,
        })
    }

    /// `apt-get update`, when the lists are missing or older than a day.
    pub fn refresh(&self) -> Result<()> {
        let stamp = self.dir.join("updated");
        let age = fs::metadata(&stamp)
            .and_then(|meta| meta.modified())
            .ok()
            .and_then(|time| SystemTime::now().duration_since(time).ok());
        if age.is_some_and(|age| age < MAX_LIST_AGE) {
            return Ok(());
        }
        cmd::run(
            self.command("apt-get").args(["update", "-q"]),
            &format!(
                "check the network: the {} archive must be reachable",
                self.name
            ),
        )?;
        write(&stamp, "")
    }

    /// Names of the packages whose names match `regex` (`apt-cache search --names-only`).
    pub fn search(&self, regex: &str) -> Result<Vec<String>> {
        let mut search = self.command("apt-cache");
        search.args(["search", "--names-only", regex]);
        let output = cmd::output(&mut search)?;
        if !output.status.success() {
            bail!(
                "`{}` failed: {}",
                cmd::describe(&search),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(package_names(&String::from_utf8_lossy(&output.stdout)))
    }

    /// `apt-get download PACKAGE` into `dir`; returns the .deb's path.
    pub fn download(&self, package: &str, dir: &Path) -> Result<PathBuf> {
        cmd::run(
            self.command("apt-get")
                .args(["download", "-q", package])
                .current_dir(dir),
            &format!(
                "check the network: the {} archive must be reachable",
                self.name
            ),
        )?;
        let prefix = format!("{package}_");
        let entries =
            fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with(&prefix) && name.ends_with(".deb") {
                return Ok(path);
            }
        }
        bail!(
            "apt-get download {package} succeeded but left no {prefix}*.deb in {}",
            dir.display()
        )
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.env("APT_CONFIG", self.dir.join("apt.conf"));
        command
    }
}

/// The config: every directory apt reads or writes is under `dir`, so the
/// system's sources, preferences, lists and dpkg state play no part. Lists
/// stay compressed, and no source-package cache is kept.
fn config(dir: &Path) -> String {
    let dir = dir.display();
    format!(
        "\
Dir::Etc \"{dir}\";
Dir::Etc::main \"/dev/null\";
Dir::Etc::parts \"{dir}/parts\";
Dir::Etc::sourcelist \"{dir}/sources.list\";
Dir::Etc::sourceparts \"{dir}/sources.list.d\";
Dir::Etc::preferences \"{dir}/preferences\";
Dir::Etc::preferencesparts \"{dir}/parts\";
Dir::State \"{dir}/state\";
Dir::State::status \"{dir}/status\";
Dir::Cache \"{dir}/cache\";
Dir::Cache::srcpkgcache \"\";
Acquire::GzipIndexes \"true\";
APT::Architecture \"amd64\";
APT::Architectures {{ \"amd64\"; }};
Acquire::Languages \"none\";
APT::Sandbox::User \"root\";
"
    )
}

fn sources(archive: &Archive) -> String {
    archive
        .suites
        .iter()
        .map(|(mirror, suite)| format!("deb [signed-by={KEYRING}] {mirror} {suite} main\n"))
        .collect()
}

/// The first word of each line of `apt-cache search` (`NAME - DESCRIPTION`).
fn package_names(search: &str) -> Vec<String> {
    search
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_output_gives_package_names() {
        let search = "\
linux-image-5.10.0-30-amd64-unsigned - Linux 5.10 for 64-bit PCs
linux-image-5.10.0-46-amd64-unsigned - Linux 5.10 for 64-bit PCs

";
        assert_eq!(
            package_names(search),
            [
                "linux-image-5.10.0-30-amd64-unsigned",
                "linux-image-5.10.0-46-amd64-unsigned"
            ]
        );
    }

    #[test]
    fn sources_name_every_suite_with_the_keyring() {
        let text = sources(&DEBIAN_11);
        assert_eq!(text.lines().count(), 3);
        assert!(text.contains(&format!(
            "deb [signed-by={KEYRING}] http://deb.debian.org/debian-security bullseye-security main"
        )));
    }
}
