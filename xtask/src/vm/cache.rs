//! Where downloaded kernels, apt lists and initramfs images are kept: outside
//! the work tree, shared by every checkout, locked while one is prepared.

use std::{
    env,
    fs::{self, File},
    io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use crate::cmd;

/// `$XDG_CACHE_HOME/procespy-xtask`, else `/var/cache/procespy-xtask` for
/// root, else `~/.cache/procespy-xtask`.
pub fn dir() -> PathBuf {
    let base = match env::var_os("XDG_CACHE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ if cmd::is_root() => PathBuf::from("/var/cache"),
        _ => PathBuf::from(env::var_os("HOME").unwrap_or_default()).join(".cache"),
    };
    base.join("procespy-xtask")
}

/// An exclusive lock on the cache, held until dropped, so that two xtask
/// runs never download or extract into the same place at once.
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Waits for and takes the lock of the cache at `dir`, creating `dir`.
    pub fn take(dir: &Path) -> Result<Lock> {
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the cache directory {}", dir.display()))?;
        let path = dir.join("lock");
        let file = File::create(&path)
            .with_context(|| format!("cannot open the cache lock {}", path.display()))?;
        if !flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
            println!(
                "vm: waiting for another xtask that holds {}",
                path.display()
            );
            if !flock(&file, libc::LOCK_EX) {
                return Err(io::Error::last_os_error())
                    .with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        Ok(Lock { _file: file })
    }
}

fn flock(file: &File, operation: libc::c_int) -> bool {
    // SAFETY: flock on a descriptor `file` owns; it touches no memory.
    unsafe { libc::flock(file.as_raw_fd(), operation) == 0 }
}
