//! `cargo xtask setup`: checks each piece the build (and the tests) need,
//! prints one line per piece, and installs only what is missing.

use std::{
    env,
    io::ErrorKind,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::cmd;

/// Which pieces to check.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Set {
    /// What building the eBPF object and userspace needs.
    Build,
    /// The build set plus the peers and tools the integration tests use.
    Test,
}

impl Set {
    pub fn from_test_flag(test: bool) -> Self {
        if test { Set::Test } else { Set::Build }
    }
}

/// Debian packages for bpf-linker's LLVM 22 build.
const BUILD_PACKAGES: &[&str] = &["llvm-22-dev", "libpolly-22-dev", "libclang-22-dev"];

/// Debian packages the tests run against: bpftool, a session bus
/// (`dbus-daemon --session`), dunst under Xvfb, notify-send, an SMTP
/// server, ImageMagick, monit and tmux.
const TEST_PACKAGES: &[&str] = &[
    "bpftool",
    "dbus-daemon",
    "dunst",
    "xvfb",
    "x11-utils",
    "libnotify-bin",
    "python3-aiosmtpd",
    "imagemagick",
    "monit",
    // tests/tests/integration/service.rs: `systemd-analyze verify` on the unit, and a
    // real Prometheus exposition-format parser for the /metrics scrape.
    "systemd",
    "python3-prometheus-client",
    // tests/tests/integration/top.rs: `procespy top` driven in a terminal.
    "tmux",
    // The charts of kill emails and `history --plot` draw their text with DejaVu Sans.
    "fonts-dejavu-core",
];

/// Debian packages the kernel matrix (`cargo xtask vm`, `test-kernels`)
/// needs: qemu, a static busybox for the guests' initramfs, depmod (a
/// kernel package leaves modules.dep to its postinst), xz and zstd for
/// compressed kernel modules, and the keyring its own apt configs trust.
const VM_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "kmod",
    "xz-utils",
    "zstd",
    "debian-archive-keyring",
];

/// The LLVM major version bpf-linker is built against; nightly must match.
const LLVM_MAJOR: u32 = 22;
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Checks every piece of `set`, installing what is missing.
pub fn run(set: Set) -> Result<()> {
    packages(set)?;
    nightly(set)?;
    if set == Set::Test {
        let toolchain = env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "default".into());
        // "stable-x86_64-unknown-linux-gnu" is shown as "stable".
        let host = format!("-{}-", env::consts::ARCH);
        let label = toolchain.split(&host).next().unwrap_or(&toolchain);
        components(None, label, &["clippy", "rustfmt"])?;
    }
    bpf_linker()?;
    if set == Set::Test {
        cargo_deb()?;
    }
    Ok(())
}

fn piece(what: &str, status: &str) {
    println!("setup: {what:<34} {status}");
}

/// Checks the Debian packages the kernel matrix needs, installing what is missing.
pub fn vm() -> Result<()> {
    install_missing(VM_PACKAGES)
}

fn packages(set: Set) -> Result<()> {
    let extra: &[&str] = if set == Set::Test { TEST_PACKAGES } else { &[] };
    let names: Vec<&str> = BUILD_PACKAGES.iter().chain(extra).copied().collect();
    install_missing(&names)
}

/// Prints one line per package and installs the missing ones with apt-get.
fn install_missing(names: &[&str]) -> Result<()> {
    let mut missing = Vec::new();
    for &name in names {
        let what = format!("package {name}");
        if package_installed(name)? {
            piece(&what, "present");
        } else {
            piece(&what, "missing: installing with apt-get");
            missing.push(name);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !cmd::is_root() {
        bail!(
            "setup needs root to install the missing Debian packages: {list}. \
             Run it as root, or install them yourself: \
             sudo apt-get update && sudo apt-get install -y --no-install-recommends {list}"
        );
    }
    apt_get(&["update"])?;
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(&missing);
    apt_get(&install)?;
    for name in missing {
        if !package_installed(name)? {
            bail!(
                "apt-get finished but package {name} is still not installed; see apt-get's output above"
            );
        }
    }
    Ok(())
}

fn apt_get(args: &[&str]) -> Result<()> {
    let mut apt = Command::new("apt-get");
    apt.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    cmd::run(
        &mut apt,
        "check the network and the apt sources (a fresh machine needs the suite that has LLVM 22)",
    )
}

/// Whether dpkg reports `name` as "install ok installed".
fn package_installed(name: &str) -> Result<bool> {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", name])
        .output();
    let output = match output {
        Ok(output) => output,
        Err(err) if err.kind() == ErrorKind::NotFound => bail!(
            "dpkg-query not found: setup installs Debian packages and needs Debian or Ubuntu; \
             install {name} (or its equivalent) yourself"
        ),
        Err(err) => return Err(err).context("could not start dpkg-query"),
    };
    Ok(output.status.success()
        && String::from_utf8_lossy(&output.stdout).trim() == "install ok installed")
}

/// The nightly toolchain must exist and use LLVM 22, like bpf-linker.
fn nightly(set: Set) -> Result<()> {
    let fix = "install it with `rustup toolchain install nightly --profile minimal \
               --component rust-src` (its LLVM must be 22, like bpf-linker's)";
    let output = cmd::output(Command::new("rustup").args(["run", "nightly", "rustc", "-vV"]))
        .with_context(|| format!("rustup is needed for the nightly toolchain; {fix}"))?;
    if !output.status.success() {
        bail!(
            "the nightly toolchain is not usable (`rustup run nightly rustc -vV`: {}); {fix}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let release = field(&text, "release:").unwrap_or("?");
    let llvm = field(&text, "LLVM version:").unwrap_or("?");
    if llvm_major(llvm) != Some(LLVM_MAJOR) {
        bail!(
            "nightly rustc {release} uses LLVM {llvm}, but bpf-linker {BPF_LINKER_VERSION} is built \
             for LLVM {LLVM_MAJOR}; install a nightly whose `rustc -vV` says LLVM {LLVM_MAJOR}"
        );
    }
    piece(
        "nightly toolchain",
        &format!("present (rustc {release}, LLVM {llvm})"),
    );
    let wanted: &[&str] = match set {
        Set::Build => &["rust-src"],
        Set::Test => &["rust-src", "clippy"],
    };
    components(Some("nightly"), "nightly", wanted)
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .map(str::trim)
}

fn llvm_major(version: &str) -> Option<u32> {
    version.split('.').next()?.parse().ok()
}

/// Ensures rustup components of a toolchain (`None`: the one running xtask).
fn components(toolchain: Option<&str>, label: &str, wanted: &[&str]) -> Result<()> {
    let mut list = Command::new("rustup");
    list.args(["component", "list", "--installed"]);
    if let Some(toolchain) = toolchain {
        list.args(["--toolchain", toolchain]);
    }
    let output = cmd::output(&mut list)?;
    if !output.status.success() {
        bail!(
            "`{}` failed: {}",
            cmd::describe(&list),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let installed = String::from_utf8_lossy(&output.stdout);
    for &name in wanted {
        let what = format!("{name} ({label})");
        if has_component(&installed, name) {
            piece(&what, "present");
            continue;
        }
        piece(&what, "missing: installing with rustup");
        let mut add = Command::new("rustup");
        add.args(["component", "add", name]);
        if let Some(toolchain) = toolchain {
            add.args(["--toolchain", toolchain]);
        }
        cmd::run(&mut add, "check the network and rustup's output above")?;
    }
    Ok(())
}

/// Whether `rustup component list --installed` output names `name`
/// (alone, like `rust-src`, or with the host target, like `clippy-x86_64-…`).
fn has_component(installed: &str, name: &str) -> bool {
    let with_target = format!("{name}-{}-", env::consts::ARCH);
    installed
        .lines()
        .map(str::trim)
        .any(|line| line == name || line.starts_with(&with_target))
}

fn bpf_linker() -> Result<()> {
    let what = format!("bpf-linker {BPF_LINKER_VERSION}");
    if let Some(path) = find_bpf_linker() {
        piece(&what, &format!("present ({})", path.display()));
        return Ok(());
    }
    piece(
        &what,
        &format!("missing: installing with cargo install (LLVM {LLVM_MAJOR}, 1-3 minutes)"),
    );
    let mut install = cmd::cargo();
    install
        .env("LLVM_PREFIX", format!("/usr/lib/llvm-{LLVM_MAJOR}"))
        .arg("install")
        .arg(format!("bpf-linker@{BPF_LINKER_VERSION}"))
        .args(["--locked", "--no-default-features", "--features"])
        .arg(format!("llvm-{LLVM_MAJOR}"));
    cmd::run(
        &mut install,
        &format!(
            "it needs the packages {} (setup installs them as root)",
            BUILD_PACKAGES.join(" ")
        ),
    )?;
    if find_bpf_linker().is_none() {
        bail!(
            "cargo install finished but no bpf-linker {BPF_LINKER_VERSION} is on PATH or in {}",
            cargo_bin().display()
        );
    }
    Ok(())
}

/// cargo-deb, which `cargo xtask dist` (and the package test) builds the
/// .deb with: checked with `cargo deb --version`, installed when missing.
pub fn cargo_deb() -> Result<()> {
    if let Some(version) = cargo_deb_version() {
        piece("cargo-deb", &format!("present ({version})"));
        return Ok(());
    }
    piece(
        "cargo-deb",
        "missing: installing with cargo install (1-3 minutes)",
    );
    cmd::run(
        cmd::cargo().args(["install", "cargo-deb", "--locked"]),
        "check the network and cargo's output above",
    )?;
    if cargo_deb_version().is_none() {
        bail!(
            "cargo install finished but `cargo deb --version` still fails; is {} on PATH?",
            cargo_bin().display()
        );
    }
    Ok(())
}

/// What `cargo deb --version` prints, when it works.
pub fn cargo_deb_version() -> Option<String> {
    let output = cmd::cargo().args(["deb", "--version"]).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The first `bpf-linker` of the right version, on PATH or in `~/.cargo/bin`.
pub fn find_bpf_linker() -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain([cargo_bin()])
        .map(|dir| dir.join("bpf-linker"))
        .find(|candidate| is_bpf_linker(candidate, BPF_LINKER_VERSION))
}

fn is_bpf_linker(path: &Path, version: &str) -> bool {
    Command::new(path)
        .arg("--version")
        .output()
        .is_ok_and(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .any(|word| word == version)
        })
}

fn cargo_bin() -> PathBuf {
    let home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env::var_os("HOME").unwrap_or_default()).join(".cargo"));
    home.join("bin")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_that_does_not_exist_is_missing() {
        if Command::new("dpkg-query")
            .arg("--version")
            .output()
            .is_err()
        {
            return; // not a Debian system
        }
        assert!(!package_installed("procespy-no-such-package-xyz").unwrap());
    }

    #[test]
    fn components_are_found_with_and_without_target() {
        let arch = env::consts::ARCH;
        let list =
            format!("cargo-{arch}-unknown-linux-gnu\nclippy-{arch}-unknown-linux-gnu\nrust-src\n");
        assert!(has_component(&list, "rust-src"));
        assert!(has_component(&list, "clippy"));
        assert!(!has_component(&list, "rustfmt"));
        assert!(!has_component(
            &format!("rust-std-{arch}-unknown-linux-gnu"),
            "rust"
        ));
    }

    #[test]
    fn nightly_llvm_version_is_parsed() {
        let text = "rustc 1.97.0-nightly\nrelease: 1.97.0-nightly\nLLVM version: 22.1.4\n";
        assert_eq!(field(text, "LLVM version:"), Some("22.1.4"));
        assert_eq!(llvm_major("22.1.4"), Some(22));
        assert_eq!(llvm_major("?"), None);
    }

    #[test]
    fn a_wrong_bpf_linker_version_is_refused() {
        assert!(!is_bpf_linker(
            Path::new("/nonexistent/bpf-linker"),
            "0.13.0"
        ));
    }
}
