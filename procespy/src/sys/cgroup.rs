//! A process's cgroup: where it is (`/proc/PID/cgroup` and the mounts of
//! `/proc/self/mountinfo`), which processes it holds, and `cgroup.kill`.
//!
//! The cgroup v2 hierarchy is used where one is mounted (anywhere: systemd
//! mounts it at `/sys/fs/cgroup`, hybrid setups at `/sys/fs/cgroup/unified`).
//! Without one, systemd's own v1 hierarchy (`name=systemd`) still tells
//! which unit a process belongs to, but has no `cgroup.kill`.

use std::{
    io,
    path::{Path, PathBuf},
};

/// A process's cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cgroup {
    /// Its path in its hierarchy (`/system.slice/foo.service`; `/` is the root).
    pub(crate) path: String,
    /// Its directory.
    pub(crate) dir: PathBuf,
    /// In the cgroup v2 hierarchy (else systemd's v1 one).
    pub(crate) v2: bool,
}

impl Cgroup {
    /// Whether the kernel offers `cgroup.kill` here (Linux 5.14 and later,
    /// cgroup v2, not the root).
    pub(crate) fn has_kill(&self) -> bool {
        self.v2 && self.dir.join("cgroup.kill").is_file()
    }
}

/// The cgroup of `pid`, or why it cannot be found.
pub(crate) fn of(pid: u32) -> Result<Cgroup, String> {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|err| format!("reading /proc/{pid}/cgroup: {err}"))?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|err| format!("reading /proc/self/mountinfo: {err}"))?;
    find(&own, &mounts)
}

/// The path of `pid`'s cgroup (the v2 one, else systemd's v1 one), from
/// `/proc/PID/cgroup` alone; `None` when it cannot be read.
pub(crate) fn path_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    path_in(&text)
}

/// The cgroup path that `proc_cgroup` (the text of `/proc/PID/cgroup`)
/// names: the v2 line's, else the `name=systemd` line's.
pub(crate) fn path_in(proc_cgroup: &str) -> Option<String> {
    let mut v1 = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.is_empty() {
            return Some(path.to_owned());
        }
        if controllers == "name=systemd" {
            v1 = Some(path.to_owned());
        }
    }
    v1
}

/// The systemd unit a cgroup path names: its last `.service` or `.scope`
/// (`/system.slice/nginx.service` is `nginx.service`; a container's
/// cgroup below a unit still names that unit).
pub(crate) fn unit_of(path: &str) -> Option<&str> {
    path.split('/')
        .rev()
        .find(|part| part.ends_with(".service") || part.ends_with(".scope"))
}

/// The cgroup that `proc_cgroup` (the text of `/proc/PID/cgroup`) names,
/// in the hierarchies `mountinfo` (of `/proc/self/mountinfo`) mounts.
pub(crate) fn find(proc_cgroup: &str, mountinfo: &str) -> Result<Cgroup, String> {
    let mounts: Vec<Mount> = mountinfo.lines().filter_map(Mount::parse).collect();
    let line = |wanted: &dyn Fn(&str) -> bool| {
        proc_cgroup.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            wanted(controllers).then_some(path)
        })
    };
    let v2 = mounts.iter().find(|m| m.fstype == "cgroup2");
    let v1 = mounts
        .iter()
        .find(|m| m.fstype == "cgroup" && m.options.split(',').any(|o| o == "name=systemd"));
    let (mount, path, is_v2) = match (v2, v1) {
        (Some(mount), _) => (
            mount,
            line(&|controllers| controllers.is_empty()).ok_or("it has no cgroup v2 line")?,
            true,
        ),
        (None, Some(mount)) => (
            mount,
            line(&|controllers| controllers == "name=systemd")
                .ok_or("it has no name=systemd cgroup line")?,
            false,
        ),
        (None, None) => return Err("no cgroup v2 or name=systemd hierarchy is mounted".into()),
    };
    if path.ends_with(" (deleted)") {
        return Err(format!("its cgroup {path} was removed"));
    }
    let inside = if mount.root == "/" {
        Some(path)
    } else {
        path.strip_prefix(mount.root.as_str())
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))
    }
    .ok_or_else(|| format!("its cgroup {path} is outside the mounted {}", mount.root))?;
    let dir = mount.point.join(inside.trim_start_matches('/'));
    Ok(Cgroup {
        path: path.to_owned(),
        dir,
        v2: is_v2,
    })
}

/// Every process in the cgroup at `dir` and in the cgroups below it (all
/// that `cgroup.kill` reaches).
pub(crate) fn processes(dir: &Path) -> io::Result<Vec<u32>> {
    let mut pids = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(at) = dirs.pop() {
        let listed = std::fs::read_to_string(at.join("cgroup.procs"))
            .and_then(|text| Ok((text, std::fs::read_dir(&at)?)));
        let (text, entries) = match listed {
            Ok(listed) => listed,
            // A cgroup below, removed meanwhile, holds nothing any more.
            Err(err) if err.kind() == io::ErrorKind::NotFound && at != dir => continue,
            Err(err) => return Err(err),
        };
        pids.extend(
            text.lines()
                .filter_map(|line| line.trim().parse::<u32>().ok()),
        );
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(entry.path());
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// Kills every process of the cgroup at `dir`, and of the cgroups below it,
/// at once: the kernel sends each SIGKILL, and a process forking meanwhile
/// cannot escape.
pub(crate) fn kill(dir: &Path) -> io::Result<()> {
    std::fs::write(dir.join("cgroup.kill"), "1")
}

/// One line of `/proc/self/mountinfo`: the fields procespy uses.
#[derive(Debug)]
struct Mount {
    /// The mount's root inside its file system.
    root: String,
    /// Where it is mounted.
    point: PathBuf,
    /// The file system type.
    fstype: String,
    /// The file system's own options (`rw,name=systemd`).
    options: String,
}

impl Mount {
    /// Parses `ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL…] - TYPE SOURCE SUPER`.
    fn parse(line: &str) -> Option<Mount> {
        let (before, after) = line.split_once(" - ")?;
        let mut fields = before.split(' ');
        let root = unescape(fields.nth(3)?);
        let point = PathBuf::from(unescape(fields.next()?));
        let mut after = after.split(' ');
        let fstype = after.next()?.to_owned();
        let options = after.nth(1).unwrap_or_default().to_owned();
        Some(Mount {
            root,
            point,
            fstype,
            options,
        })
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_and_unit_come_from_proc_cgroup() {
        let v2 = "0::/system.slice/nginx.service\n";
        assert_eq!(path_in(v2).as_deref(), Some("/system.slice/nginx.service"));
        let hybrid =
            "12:memory:/user.slice\n1:name=systemd:/user.slice/user-1000.slice/session-2.scope\n";
        assert_eq!(
            path_in(hybrid).as_deref(),
            Some("/user.slice/user-1000.slice/session-2.scope")
        );
        assert_eq!(path_in("garbage"), None);
        assert_eq!(
            unit_of("/system.slice/nginx.service"),
            Some("nginx.service")
        );
        assert_eq!(
            unit_of("/system.slice/docker.service/ctr/payload"),
            Some("docker.service")
        );
        assert_eq!(unit_of("/user.slice"), None);
        assert_eq!(unit_of("/"), None);
    }

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const V1_ONLY: &str = "\
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime shared:9 - cgroup cgroup rw,xattr,name=systemd
";
    const OWN: &str =
        "9:name=systemd:/system.slice/web.service\n4:memory:/x\n0::/system.slice/web.service\n";

    #[test]
    fn the_v2_hierarchy_comes_first() {
        let found = find(OWN, HYBRID).unwrap();
        assert_eq!(
            found,
            Cgroup {
                path: "/system.slice/web.service".into(),
                dir: "/sys/fs/cgroup/unified/system.slice/web.service".into(),
                v2: true,
            }
        );
    }

    #[test]
    fn without_v2_systemds_hierarchy_tells_the_unit() {
        let found = find(OWN, V1_ONLY).unwrap();
        assert_eq!(
            found.dir,
            Path::new("/sys/fs/cgroup/systemd/system.slice/web.service")
        );
        assert!(!found.v2 && !found.has_kill());
        let err = find(OWN, "35 31 0:32 / /m rw - cgroup cgroup rw,memory\n").unwrap_err();
        assert!(err.contains("no cgroup v2"), "{err}");
    }

    #[test]
    fn mounts_of_a_subtree_and_odd_paths() {
        let mounts = "50 1 0:40 /jail /srv/cg\\040x rw - cgroup2 none rw\n";
        let found = find("0::/jail/app\n", mounts).unwrap();
        assert_eq!(found.dir, Path::new("/srv/cg x/app"));
        assert!(find("0::/elsewhere\n", mounts).is_err());
        assert!(find("0::/jailbreak\n", mounts).is_err());
        assert!(find("0::/gone (deleted)\n", HYBRID).is_err());
        assert_eq!(
            find("0::/\n", HYBRID).unwrap().dir,
            Path::new("/sys/fs/cgroup/unified/")
        );
    }

    #[test]
    fn our_own_cgroup_is_found_where_a_hierarchy_is_mounted() {
        match of(std::process::id()) {
            Ok(cgroup) => assert!(cgroup.dir.is_dir(), "{cgroup:?}"),
            Err(reason) => assert!(reason.contains("mounted"), "{reason}"),
        }
        assert!(of(u32::MAX).is_err());
    }
}
