//! The kernels the harness boots: Debian's builds of three upstream series.
//! The newest package of each is chosen once through apt, downloaded and
//! extracted into the cache; later runs reuse it without the network.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use super::{
    apt::{self, Apt, Archive},
    cache, initramfs,
};
use crate::cmd;

/// A kernel series the harness can boot, as Debian packages it.
#[derive(Debug)]
pub struct Kernel {
    /// The series, as given on the command line: "5.10", "6.1", "6.12".
    pub label: &'static str,
    archive: &'static Archive,
    /// Package names are `{prefix}N{suffix}`; the highest N is the newest.
    prefix: &'static str,
    suffix: &'static str,
}

/// Every kernel the harness knows, oldest first.
pub const KERNELS: &[Kernel] = &[
    Kernel {
        label: "5.10",
        archive: &apt::DEBIAN_11,
        prefix: "linux-image-5.10.0-",
        suffix: "-amd64-unsigned",
    },
    Kernel {
        label: "6.1",
        archive: &apt::DEBIAN_12,
        prefix: "linux-image-6.1.0-",
        suffix: "-amd64-unsigned",
    },
    Kernel {
        label: "6.12",
        archive: &apt::DEBIAN_12,
        prefix: "linux-image-6.12.",
        suffix: "+deb12-amd64-unsigned",
    },
];

impl Kernel {
    /// The kernel labelled `label`.
    pub fn find(label: &str) -> Result<&'static Kernel> {
        KERNELS
            .iter()
            .find(|kernel| kernel.label == label)
            .with_context(|| {
                let labels: Vec<&str> = KERNELS.iter().map(|kernel| kernel.label).collect();
                format!(
                    "unknown kernel {label:?}: the harness knows {}",
                    labels.join(", ")
                )
            })
    }

    /// The `apt-cache search --names-only` pattern for this series' packages.
    fn regex(&self) -> String {
        let escape = |text: &str| text.replace('.', r"\.").replace('+', r"\+");
        format!("^{}[0-9]+{}$", escape(self.prefix), escape(self.suffix))
    }

    /// The newest of `names` that belongs to this series.
    fn newest<'a>(&self, names: &'a [String]) -> Option<&'a str> {
        names
            .iter()
            .filter_map(|name| Some((self.number(name)?, name.as_str())))
            .max()
            .map(|(_, name)| name)
    }

    /// N in `{prefix}N{suffix}`.
    fn number(&self, name: &str) -> Option<u32> {
        let middle = name.strip_prefix(self.prefix)?.strip_suffix(self.suffix)?;
        middle.parse().ok()
    }
}

/// A kernel ready to boot: extracted, with its initramfs built.
#[derive(Debug, Clone)]
pub struct PreparedKernel {
    /// The series ("6.1").
    pub label: &'static str,
    /// The Debian package it came from.
    pub package: String,
    /// Its release, as `uname -r` will say (`6.1.0-57-amd64`).
    pub release: String,
    /// The kernel image.
    pub vmlinuz: PathBuf,
    /// The initramfs that mounts the host's root (see `initramfs.rs`).
    pub initramfs: PathBuf,
}

/// Makes the kernel `label` ready to boot: from the cache when it holds
/// one, else the newest package of the series, downloaded and extracted.
/// Needs the host tools `setup::vm` installs.
pub fn prepare(label: &str) -> Result<PreparedKernel> {
    let kernel = Kernel::find(label)?;
    let cache = cache::dir();
    let _lock = cache::Lock::take(&cache)?;
    let kernels = cache.join("kernels");
    let choice = kernels.join(format!("{label}.package"));
    let package = match cached_choice(&choice, &kernels) {
        Some(package) => {
            println!("vm: kernel {label}: {package} (cached)");
            package
        }
        None => {
            let package = fetch(kernel, &cache, &kernels)?;
            fs::write(&choice, format!("{package}\n"))
                .with_context(|| format!("cannot write {}", choice.display()))?;
            package
        }
    };
    let root = kernels.join(&package).join("root");
    let (release, modules) = modules_dir(&root)?;
    if !modules.join("modules.dep").is_file() {
        depmod(&modules, &release)?;
    }
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        bail!(
            "{package} has modules for {release} but no {}; remove {} to fetch it again",
            vmlinuz.display(),
            kernels.join(&package).display()
        );
    }
    let initramfs = initramfs::build(&kernels.join(&package), &modules, &release)?;
    Ok(PreparedKernel {
        label: kernel.label,
        package,
        release,
        vmlinuz,
        initramfs,
    })
}

/// The package recorded in `choice`, if its extracted tree is there.
fn cached_choice(choice: &Path, kernels: &Path) -> Option<String> {
    let package = fs::read_to_string(choice).ok()?.trim().to_owned();
    let extracted = !package.is_empty() && kernels.join(&package).join("root").is_dir();
    extracted.then_some(package)
}

/// Chooses the newest package of `kernel` and extracts it into
/// `kernels/PACKAGE/root` (unless a tree is there already).
fn fetch(kernel: &Kernel, cache: &Path, kernels: &Path) -> Result<String> {
    let apt = Apt::new(kernel.archive, cache)?;
    apt.refresh()?;
    let names = apt.search(&kernel.regex())?;
    let Some(package) = kernel.newest(&names) else {
        bail!(
            "the {} archive lists no package {}N{}; is the archive still served?",
            kernel.archive.name,
            kernel.prefix,
            kernel.suffix
        );
    };
    println!(
        "vm: kernel {}: {package} (newest in {})",
        kernel.label, kernel.archive.name
    );
    let dir = kernels.join(package);
    let root = dir.join("root");
    if root.is_dir() {
        return Ok(package.to_owned());
    }
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let partial = dir.join("root.partial");
    if partial.exists() {
        fs::remove_dir_all(&partial)
            .with_context(|| format!("cannot remove the interrupted {}", partial.display()))?;
    }
    let deb = apt.download(package, &dir)?;
    cmd::run(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial),
        "is the download complete? remove it and try again",
    )?;
    fs::rename(&partial, &root)
        .with_context(|| format!("cannot rename {} to root", partial.display()))?;
    fs::remove_file(&deb).with_context(|| format!("cannot remove {}", deb.display()))?;
    Ok(package.to_owned())
}

/// Writes modules.dep (and the rest of depmod's files) into `modules`,
/// `BASE/lib/modules/RELEASE`: installing a kernel package would.
fn depmod(modules: &Path, release: &str) -> Result<()> {
    let base = modules
        .ancestors()
        .nth(3)
        .context("a modules directory ends in lib/modules/RELEASE")?;
    cmd::run(
        Command::new("depmod").arg("-b").arg(base).arg(release),
        "`cargo xtask setup` installs depmod (kmod)",
    )
}

/// The one `lib/modules/RELEASE` (or `usr/lib/modules/RELEASE`) in `root`.
fn modules_dir(root: &Path) -> Result<(String, PathBuf)> {
    for base in ["lib/modules", "usr/lib/modules"] {
        let base = root.join(base);
        let Ok(entries) = fs::read_dir(&base) else {
            continue;
        };
        let dirs: Vec<PathBuf> = entries
            .filter_map(|entry| Some(entry.ok()?.path()))
            .filter(|path| path.is_dir())
            .collect();
        if let [dir] = dirs.as_slice() {
            let release = dir.file_name().unwrap_or_default().to_string_lossy();
            return Ok((release.into_owned(), dir.clone()));
        }
        bail!(
            "{} should hold one kernel release, not {}",
            base.display(),
            dirs.len()
        );
    }
    bail!(
        "{} has no lib/modules: is it a kernel package?",
        root.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn every_label_is_found_and_others_are_refused() {
        for label in ["5.10", "6.1", "6.12"] {
            assert_eq!(Kernel::find(label).unwrap().label, label);
        }
        let err = Kernel::find("4.19").unwrap_err().to_string();
        assert!(err.contains("5.10, 6.1, 6.12"), "{err}");
    }

    #[test]
    fn the_regex_escapes_dots_and_pluses() {
        let kernel = Kernel::find("6.12").unwrap();
        assert_eq!(
            kernel.regex(),
            r"^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$"
        );
    }

    #[test]
    fn the_newest_is_the_highest_number_not_the_last_in_text_order() {
        let kernel = Kernel::find("6.12").unwrap();
        let found = names(&[
            "linux-image-6.12.117+deb12-amd64-unsigned",
            "linux-image-6.12.9+deb12-amd64-unsigned",
            "linux-image-6.12.200+deb12-cloud-amd64-unsigned",
            "linux-image-6.12.300+deb12-rt-amd64-unsigned",
        ]);
        assert_eq!(
            kernel.newest(&found),
            Some("linux-image-6.12.117+deb12-amd64-unsigned")
        );
        let kernel = Kernel::find("6.1").unwrap();
        let found = names(&[
            "linux-image-6.1.0-9-amd64-unsigned",
            "linux-image-6.1.0-57-amd64-unsigned",
            "linux-image-6.1.0-57-cloud-amd64-unsigned",
        ]);
        assert_eq!(
            kernel.newest(&found),
            Some("linux-image-6.1.0-57-amd64-unsigned")
        );
        assert_eq!(kernel.newest(&[]), None);
    }
}
