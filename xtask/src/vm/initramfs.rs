//! The guest's initramfs: a static busybox, the modules that mount 9p over
//! virtio (uncompressed: busybox insmod reads only plain `.ko`), and
//! `init.sh` as `/init`. Written as a newc cpio, gzipped, cached per kernel.

use std::{
    collections::hash_map::DefaultHasher,
    ffi::OsStr,
    fs::{self, File},
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use super::modules::{self, ModulesDep};
use crate::cmd;

/// What mounting the host's root needs, besides what the kernel has built in.
const MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p"];
/// busybox-static's binary (setup installs the package).
const BUSYBOX: &str = "/bin/busybox";
const INIT: &str = include_str!("init.sh");

/// Builds (or finds in `dir`) the initramfs for the kernel whose modules
/// are in `modules_dir`, and returns its path.
pub fn build(dir: &Path, modules_dir: &Path, release: &str) -> Result<PathBuf> {
    let read = |name: &str| {
        let path = modules_dir.join(name);
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
    };
    let dep = ModulesDep::parse(&read("modules.dep")?);
    let builtin = modules::builtin(&read("modules.builtin")?);
    let load = dep
        .load_order(&builtin, MODULES)
        .with_context(|| format!("cannot find how to mount 9p on {release}"))?;
    let files: Vec<String> = load
        .iter()
        .map(|path| format!("{}.ko", modules::name_of(path)))
        .collect();
    let init = init_script(&files, release, modules_dir);

    let mut hasher = DefaultHasher::new();
    init.hash(&mut hasher);
    let image = dir.join(format!("initramfs-{:016x}.cpio.gz", hasher.finish()));
    if image.is_file() {
        return Ok(image);
    }

    let mut cpio = Cpio::default();
    for dir in ["bin", "dev", "modules", "newroot", "proc", "sys"] {
        cpio.dir(dir);
    }
    cpio.char_device("dev/console", 0o600, 5, 1);
    cpio.file("init", 0o755, init.as_bytes());
    let busybox = fs::read(BUSYBOX).with_context(|| {
        format!("cannot read {BUSYBOX}: `cargo xtask setup` installs busybox-static")
    })?;
    cpio.file("bin/busybox", 0o755, &busybox);
    for (path, file) in load.iter().zip(&files) {
        let module = uncompressed(&modules_dir.join(path))?;
        cpio.file(&format!("modules/{file}"), 0o644, &module);
    }

    let plain = dir.join("initramfs.cpio.partial");
    fs::write(&plain, cpio.finish())
        .with_context(|| format!("cannot write {}", plain.display()))?;
    let gzipped = filter("gzip", &["-n", "-9", "-c"], &plain)?;
    fs::remove_file(&plain).with_context(|| format!("cannot remove {}", plain.display()))?;
    remove_old_images(dir)?;
    fs::write(&image, gzipped).with_context(|| format!("cannot write {}", image.display()))?;
    println!(
        "vm: initramfs for {release}: {} ({} modules to load)",
        image.display(),
        files.len()
    );
    Ok(image)
}

/// `init.sh` with the modules to load, the release and its modules' directory.
fn init_script(files: &[String], release: &str, modules_dir: &Path) -> String {
    INIT.replace("@MODULES@", &files.join(" "))
        .replace("@RELEASE@", &cmd::quote(OsStr::new(release)))
        .replace("@MODULES_DIR@", &cmd::quote(modules_dir.as_os_str()))
}

/// A module file's contents, decompressed when it ends in .xz, .zst or .gz.
fn uncompressed(path: &Path) -> Result<Vec<u8>> {
    match path.extension().and_then(OsStr::to_str) {
        Some("ko") => fs::read(path).with_context(|| format!("cannot read {}", path.display())),
        Some("xz") => filter("xz", &["-dc"], path),
        Some("zst") => filter("zstd", &["-dc"], path),
        Some("gz") => filter("gzip", &["-dc"], path),
        _ => bail!("{} is not a kernel module xtask can read", path.display()),
    }
}

/// What `program args < input` writes to stdout.
fn filter(program: &str, args: &[&str], input: &Path) -> Result<Vec<u8>> {
    let stdin = File::open(input).with_context(|| format!("cannot open {}", input.display()))?;
    let mut command = Command::new(program);
    command.args(args).stdin(stdin);
    let output = cmd::output(&mut command)
        .with_context(|| format!("`cargo xtask setup` installs {program}"))?;
    if !output.status.success() {
        bail!(
            "`{} < {}` failed: {}",
            cmd::describe(&command),
            input.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output.stdout)
}

/// Removes the images an older init script left in `dir`.
fn remove_old_images(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("initramfs-") && name.ends_with(".cpio.gz") {
            fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

/// A cpio archive in the "newc" format the kernel unpacks: each entry is a
/// 110-byte ASCII header, the NUL-terminated name and the data, both padded
/// to 4 bytes. Owners are root, times 0, so the image is reproducible.
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    inodes: u32,
}

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;

impl Cpio {
    fn dir(&mut self, name: &str) {
        self.entry(name, S_IFDIR | 0o755, 2, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, S_IFREG | mode, 1, (0, 0), data);
    }

    fn char_device(&mut self, name: &str, mode: u32, major: u32, minor: u32) {
        self.entry(name, S_IFCHR | mode, 1, (major, minor), &[]);
    }

    /// The archive, closed by its `TRAILER!!!` entry.
    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[]);
        self.bytes
    }

    fn entry(&mut self, name: &str, mode: u32, links: u32, rdev: (u32, u32), data: &[u8]) {
        self.inodes += 1;
        let size = u32::try_from(data.len()).expect("initramfs files are far below 4 GiB");
        let name_size = u32::try_from(name.len() + 1).expect("short names");
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        let fields = [
            self.inodes,
            mode,
            0,
            0,
            links,
            0,
            size,
            0,
            0,
            rdev.0,
            rdev.1,
            name_size,
            0,
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_newc_and_aligned() {
        let mut cpio = Cpio::default();
        cpio.file("init", 0o755, b"#!/bin/sh\n");
        let bytes = cpio.finish();
        let header = std::str::from_utf8(&bytes[..110]).unwrap();
        assert_eq!(&header[..6], "070701");
        let field = |n: usize| u32::from_str_radix(&header[6 + 8 * n..14 + 8 * n], 16).unwrap();
        assert_eq!(field(1), S_IFREG | 0o755);
        assert_eq!(field(6), 10, "file size");
        assert_eq!(field(11), 5, "name size with its NUL");
        // 110 + "init\0" = 115, padded to 116; then 10 bytes of data, padded to 12.
        assert_eq!(&bytes[110..115], b"init\0");
        assert_eq!(&bytes[116..126], b"#!/bin/sh\n");
        assert_eq!(&bytes[128..134], b"070701");
        assert!(bytes.windows(11).any(|window| window == b"TRAILER!!!\0"));
        assert_eq!(bytes.len() % 4, 0);
    }

    #[test]
    fn the_init_script_gets_the_modules_and_the_release() {
        let files = ["virtio.ko".to_owned(), "9p.ko".to_owned()];
        let script = init_script(
            &files,
            "6.1.0-57-amd64",
            Path::new("/var/cache/k/root/lib/modules/6.1.0-57-amd64"),
        );
        assert!(script.contains("for module in virtio.ko 9p.ko; do"));
        assert!(script.contains(
            "mount -o bind $new/var/cache/k/root/lib/modules/6.1.0-57-amd64 $new/lib/modules/6.1.0-57-amd64"
        ));
        for placeholder in ["@MODULES@", "@RELEASE@", "@MODULES_DIR@"] {
            assert!(!script.contains(placeholder), "{placeholder} is left");
        }
    }
}
