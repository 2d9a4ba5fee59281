//! Reading the files procespy trusts: the configuration decides which
//! processes get killed, and the password file holds a secret, so neither
//! may be changeable by anyone but root, neither while it is checked nor
//! between the check and the read.
//!
//! [`read_trusted`] walks the path one component at a time from `/`,
//! through file descriptors: every directory on the way must be owned by
//! root (or by the user procespy runs as) and not writable by group or
//! others, except a sticky one such as `/tmp`, in which the next entry
//! must then be root's (or that user's); every symlink followed must be
//! root's; the file
//! must be a regular file owned by root and not writable by group or
//! others. It is then read through the very descriptor that was checked,
//! and only once it has not changed for [`SETTLE`] (a tool rewriting it in
//! place is waited for; a config is best replaced with a rename).

use std::{
    ffi::{OsStr, OsString},
    fs::File,
    io::Read,
    os::{
        fd::OwnedFd,
        unix::ffi::{OsStrExt, OsStringExt},
    },
    path::{Component, Path, PathBuf},
    time::{Duration, Instant},
};

use rustix::fs::{FileType, Mode, OFlags, Stat, fstat, openat, readlinkat};

/// How long a file must have stayed unchanged before it is read.
pub(crate) const SETTLE: Duration = Duration::from_millis(200);
/// How long a file that keeps changing is waited for.
const PATIENCE: Duration = Duration::from_secs(5);
/// Symlinks followed at most, as the kernel allows.
const MAX_LINKS: usize = 40;

/// Reads the file at `path` after the checks above, at most `max` bytes.
/// `what` names it in messages ("config", "password file"). The error is a
/// sentence for the user that says how to fix it; it does not start with
/// the path.
pub(crate) fn read_trusted(path: &Path, what: &str, max: usize) -> Result<Vec<u8>, String> {
    let file = open_trusted(path, what)?;
    read_settled(file, what, max)
}

/// Walks `path` from `/` and opens the file it names for reading.
fn open_trusted(path: &Path, what: &str) -> Result<File, String> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|err| format!("cannot read: {err}"))?
            .join(path)
    };
    let own_uid = rustix::process::geteuid().as_raw();
    let root = open_path(rustix::fs::CWD, OsStr::new("/"))?;
    let mut dirs: Vec<(OwnedFd, Stat, PathBuf)> = Vec::new();
    let root_stat = fstat(&root).map_err(|err| format!("cannot read /: {err}"))?;
    check_dir(&root_stat, Path::new("/"), own_uid, what)?;
    dirs.push((root, root_stat, PathBuf::from("/")));
    let mut todo: Vec<OsString> = components(&absolute);
    todo.reverse();
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            if dirs.len() > 1 {
                dirs.pop();
            }
            continue;
        }
        let (dir, dir_stat, dir_path) = dirs.last().expect("the root stays");
        let here = dir_path.join(&name);
        let fd = open_path(dir, &name)?;
        let stat = fstat(&fd).map_err(|err| format!("cannot read {}: {err}", here.display()))?;
        // In a sticky directory anyone may add entries: only root's count
        // (the file itself is held to that below, with its own message).
        let is_file = FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile;
        let trusted_owner = stat.st_uid == 0 || stat.st_uid == own_uid;
        if dir_stat.st_mode & 0o1000 != 0 && !trusted_owner && !is_file {
            return Err(format!(
                "refusing a {what} reached through {}, which is not root's, in the \
                 directory {} that others may write to",
                here.display(),
                dir_path.display()
            ));
        }
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Symlink => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(format!(
                        "cannot read: too many symlinks in {}",
                        path.display()
                    ));
                }
                if stat.st_uid != 0 {
                    return Err(format!(
                        "refusing a {what} reached through the symlink {} owned by uid {}; \
                         it must be root's",
                        here.display(),
                        stat.st_uid
                    ));
                }
                let target = readlinkat(dir, name.as_os_str(), Vec::new())
                    .map_err(|err| format!("cannot read the symlink {}: {err}", here.display()))?;
                let target = PathBuf::from(OsString::from_vec(target.into_bytes()));
                if target.is_absolute() {
                    dirs.truncate(1);
                }
                let mut next = components(&target);
                next.reverse();
                todo.extend(next);
            }
            FileType::Directory => {
                check_dir(&stat, &here, own_uid, what)?;
                dirs.push((fd, stat, here));
            }
            FileType::RegularFile if todo.is_empty() => {
                check_owner_and_mode(stat.st_uid, stat.st_mode, path, what)?;
                let file = openat(
                    dir,
                    name.as_os_str(),
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
                    Mode::empty(),
                )
                .map_err(|err| format!("cannot read: {err}"))?;
                let opened = fstat(&file).map_err(|err| format!("cannot read: {err}"))?;
                if (opened.st_dev, opened.st_ino) != (stat.st_dev, stat.st_ino) {
                    return Err(format!(
                        "{} was replaced while it was opened; try again",
                        path.display()
                    ));
                }
                return Ok(File::from(file));
            }
            _ if todo.is_empty() => {
                return Err(format!("refusing a {what} that is not a regular file"));
            }
            _ => {
                return Err(format!(
                    "cannot read: {} is not a directory",
                    here.display()
                ));
            }
        }
    }
    Err(format!("refusing a {what} that is not a regular file"))
}

/// The names in `path`, without `/` and `.`.
fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|component| match component {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

fn open_path(dir: impl rustix::fd::AsFd, name: &OsStr) -> Result<OwnedFd, String> {
    openat(
        dir,
        name.as_bytes(),
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|err| format!("cannot read: {}: {err}", Path::new(name).display()))
}

/// A directory on the way: root's (or procespy's own user's), and not
/// writable by others unless sticky.
fn check_dir(stat: &Stat, path: &Path, own_uid: u32, what: &str) -> Result<(), String> {
    let path = path.display();
    if stat.st_uid != 0 && stat.st_uid != own_uid {
        return Err(format!(
            "refusing a {what} in the directory {path} owned by uid {}: whoever owns \
             it can swap the file; move the {what} to a directory owned by root",
            stat.st_uid
        ));
    }
    let writable = stat.st_mode & 0o022 != 0;
    let sticky = stat.st_mode & 0o1000 != 0;
    if writable && !sticky {
        return Err(format!(
            "refusing a {what} in the directory {path} that group or others may write to \
             (mode {:04o}); run chmod go-w {path}",
            stat.st_mode & 0o7777
        ));
    }
    Ok(())
}

/// Reads `file` once it has stayed unchanged for [`SETTLE`]: read, then
/// checked again, and read anew if it changed meanwhile.
fn read_settled(mut file: File, what: &str, max: usize) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let before = fstat(&file).map_err(|err| format!("cannot read: {err}"))?;
        let age = age_of(&before);
        if age < SETTLE {
            if Instant::now() + (SETTLE - age) > deadline {
                return Err(format!(
                    "the {what} kept changing for {PATIENCE:?}; write it elsewhere and \
                     rename it into place"
                ));
            }
            std::thread::sleep(SETTLE - age);
            continue;
        }
        // An empty file may be one an editor's O_TRUNC just emptied: its
        // size shows 0 before its times change (ext4 sets them last, after
        // waiting for the pages it drops), so it can look empty and settled
        // for a long moment. It is taken as empty only once it stayed so
        // for all the patience.
        if before.st_size == 0 && Instant::now() + SETTLE < deadline {
            std::thread::sleep(SETTLE);
            continue;
        }
        if usize::try_from(before.st_size).unwrap_or(usize::MAX) > max {
            return Err(format!(
                "refusing a {what} of {} bytes; the most is {max}",
                before.st_size
            ));
        }
        let mut text = Vec::new();
        rustix::fs::seek(&file, rustix::fs::SeekFrom::Start(0))
            .map_err(|err| format!("cannot read: {err}"))?;
        (&mut file)
            .take(max as u64 + 1)
            .read_to_end(&mut text)
            .map_err(|err| format!("cannot read: {err}"))?;
        let after = fstat(&file).map_err(|err| format!("cannot read: {err}"))?;
        if same_version(&before, &after) && text.len() as u64 == before.st_size as u64 {
            return Ok(text);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the {what} kept changing for {PATIENCE:?}; write it elsewhere and rename it \
                 into place"
            ));
        }
    }
}

/// How long ago the file was last written or had its inode changed.
fn age_of(stat: &Stat) -> Duration {
    let newest = (stat.st_mtime, stat.st_mtime_nsec).max((stat.st_ctime, stat.st_ctime_nsec));
    let changed = std::time::UNIX_EPOCH
        + Duration::new(
            u64::try_from(newest.0).unwrap_or(0),
            u32::try_from(newest.1).unwrap_or(0),
        );
    std::time::SystemTime::now()
        .duration_since(changed)
        .unwrap_or(Duration::ZERO)
}

fn same_version(a: &Stat, b: &Stat) -> bool {
    (
        a.st_size,
        a.st_mtime,
        a.st_mtime_nsec,
        a.st_ctime,
        a.st_ctime_nsec,
    ) == (
        b.st_size,
        b.st_mtime,
        b.st_mtime_nsec,
        b.st_ctime,
        b.st_ctime_nsec,
    )
}

/// The rule on the file itself: owned by root, not writable by group or
/// others.
pub(crate) fn check_owner_and_mode(
    uid: u32,
    mode: u32,
    path: &Path,
    what: &str,
) -> Result<(), String> {
    let path = path.display();
    if uid != 0 {
        return Err(format!(
            "refusing a {what} owned by uid {uid}; it must be owned by root: run chown root: {path}"
        ));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "refusing a {what} writable by group or others (mode {:04o}); run chmod go-w {path}",
            mode & 0o7777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;

    #[test]
    fn owner_and_mode_rule() {
        let path = Path::new("/etc/procespy.toml");
        assert!(check_owner_and_mode(0, 0o100644, path, "config").is_ok());
        assert!(check_owner_and_mode(0, 0o100600, path, "config").is_ok());
        assert!(check_owner_and_mode(0, 0o100444, path, "config").is_ok());
        assert_eq!(
            check_owner_and_mode(0, 0o100664, path, "config").unwrap_err(),
            "refusing a config writable by group or others (mode 0664); run chmod go-w /etc/procespy.toml"
        );
        assert!(
            check_owner_and_mode(0, 0o102777, path, "config")
                .unwrap_err()
                .contains("(mode 2777)")
        );
        assert_eq!(
            check_owner_and_mode(1000, 0o100644, path, "password file").unwrap_err(),
            "refusing a password file owned by uid 1000; it must be owned by root: run chown root: /etc/procespy.toml"
        );
    }

    /// A root-owned scratch directory (the tests run as root), or `None`
    /// with a printed reason when they do not.
    fn scratch() -> Option<tempfile::TempDir> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root to make root-owned files");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Some(dir)
    }

    fn old_file(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let old = std::fs::FileTimes::new()
            .set_modified(std::time::SystemTime::now() - Duration::from_secs(10));
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_times(old)
            .unwrap();
    }

    #[test]
    fn a_root_file_in_root_directories_is_read_through_root_symlinks() {
        let Some(dir) = scratch() else { return };
        let file = dir.path().join("procespy.toml");
        old_file(&file, "x = 1\n");
        assert_eq!(read_trusted(&file, "config", 1024).unwrap(), b"x = 1\n");
        let link = dir.path().join("link.toml");
        symlink("procespy.toml", &link).unwrap();
        assert_eq!(read_trusted(&link, "config", 1024).unwrap(), b"x = 1\n");
        let dotted = dir.path().join("sub/../procespy.toml");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert_eq!(read_trusted(&dotted, "config", 1024).unwrap(), b"x = 1\n");
        let err = read_trusted(&file, "config", 3).unwrap_err();
        assert!(err.contains("the most is 3"), "{err}");
    }

    #[test]
    fn writable_directories_and_foreign_symlinks_are_refused() {
        let Some(dir) = scratch() else { return };
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let file = open.join("procespy.toml");
        old_file(&file, "x = 1\n");
        let err = read_trusted(&file, "config", 1024).unwrap_err();
        assert!(err.contains("that group or others may write to"), "{err}");

        let target = dir.path().join("real.toml");
        old_file(&target, "x = 1\n");
        let link = dir.path().join("foreign.toml");
        symlink(&target, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(65534), None).unwrap();
        let err = read_trusted(&link, "config", 1024).unwrap_err();
        assert!(err.contains("symlink") && err.contains("65534"), "{err}");
    }

    #[test]
    fn a_file_written_just_now_is_read_only_once_it_settled() {
        let Some(dir) = scratch() else { return };
        let file = dir.path().join("procespy.toml");
        std::fs::write(&file, "x = 1\n").unwrap();
        let started = Instant::now();
        assert_eq!(read_trusted(&file, "config", 1024).unwrap(), b"x = 1\n");
        assert!(started.elapsed() >= SETTLE / 2, "{:?}", started.elapsed());
    }
}
