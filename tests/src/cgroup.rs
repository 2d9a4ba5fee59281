//! Cgroups a test makes, removed when it ends (also when it fails): one in
//! the cgroup v2 hierarchy (`kill = "cgroup"`), and a memory cgroup with a
//! small limit that pushes its processes' memory out to swap.
//!
//! Where no cgroup2 hierarchy is mounted (a machine that mounts only the v1
//! controllers), the test mounts one in a scratch directory and unmounts it
//! at the end. The memory cgroup is v2's where the v2 hierarchy has the
//! memory controller (`memory.high`), else v1's (`memory.limit_in_bytes`).

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};

use crate::{run::poll, scratch::Scratch};

/// A cgroup made by the test: its processes are killed and it is removed
/// on drop, then the hierarchy the test mounted for it, if it did, is
/// unmounted.
pub struct TestCgroup {
    dir: PathBuf,
    /// Its path in its hierarchy, as `/proc/PID/cgroup` shows it.
    path: String,
    /// Where its `cgroup.kill` is (v2), to empty it at the end.
    v2: bool,
    _mounted: Option<Mounted>,
}

impl TestCgroup {
    /// A new cgroup v2 named after `label`, right under the hierarchy's root.
    pub fn v2(label: &str) -> Result<TestCgroup> {
        let (mount, mounted) = match mounts()?.into_iter().find(|m| m.fstype == "cgroup2") {
            Some(mount) => (mount, None),
            None => {
                let mounted = Mounted::cgroup2()?;
                let mount = Mount {
                    root: "/".into(),
                    point: mounted.dir.path().to_owned(),
                    fstype: "cgroup2".into(),
                    options: String::new(),
                };
                (mount, Some(mounted))
            }
        };
        let mut cgroup = make(&mount, "/", label, true)?;
        cgroup._mounted = mounted;
        Ok(cgroup)
    }

    /// A new memory cgroup named after `label` in which its processes keep
    /// at most about `limit` bytes resident: the rest goes to swap.
    pub fn memory(label: &str, limit: u64) -> Result<TestCgroup> {
        let mounts = mounts()?;
        let v2 = mounts.iter().find(|m| {
            m.fstype == "cgroup2"
                && std::fs::read_to_string(m.point.join("cgroup.controllers"))
                    .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
        });
        if let Some(mount) = v2 {
            // The root's children may use the controller.
            let _ = std::fs::write(mount.point.join("cgroup.subtree_control"), "+memory");
            let cgroup = make(mount, "/", label, true)?;
            cgroup.set("memory.high", &limit.to_string())?;
            return Ok(cgroup);
        }
        let v1 = mounts
            .iter()
            .find(|m| m.fstype == "cgroup" && m.options.split(',').any(|o| o == "memory"))
            .ok_or_else(|| anyhow!("no memory cgroup controller is mounted, v1 or v2"))?;
        // Under this process's own memory cgroup, whatever limits it.
        let own = std::fs::read_to_string("/proc/self/cgroup")?;
        let parent = own
            .lines()
            .find_map(|line| {
                let mut parts = line.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                controllers
                    .split(',')
                    .any(|c| c == "memory")
                    .then(|| path.to_owned())
            })
            .unwrap_or_else(|| "/".into());
        let cgroup = make(v1, &parent, label, false)?;
        cgroup.set("memory.swappiness", "60")?;
        cgroup.set("memory.limit_in_bytes", &limit.to_string())?;
        Ok(cgroup)
    }

    /// A new cgroup below this one, named after `label`.
    pub fn child(&self, label: &str) -> Result<TestCgroup> {
        let name = unique(label);
        let dir = self.dir.join(&name);
        std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        Ok(TestCgroup {
            dir,
            path: format!("{}/{name}", self.path.trim_end_matches('/')),
            v2: self.v2,
            _mounted: None,
        })
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its path in its hierarchy (`/procespy-kill-1-0`), as procespy's
    /// log names it.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Moves the process `pid` into it.
    pub fn add(&self, pid: u32) -> Result<()> {
        self.set("cgroup.procs", &pid.to_string())
    }

    /// The processes in it (not in those below).
    pub fn procs(&self) -> Result<Vec<u32>> {
        let text = std::fs::read_to_string(self.dir.join("cgroup.procs"))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    fn set(&self, file: &str, value: &str) -> Result<()> {
        let path = self.dir.join(file);
        std::fs::write(&path, value)
            .with_context(|| format!("writing {value} to {}", path.display()))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let emptied = poll(Duration::from_secs(10), Duration::from_millis(20), || {
            let procs = self.procs().unwrap_or_default();
            if procs.is_empty() {
                return std::fs::remove_dir(&self.dir).is_ok().then_some(());
            }
            if !self.v2 || self.set("cgroup.kill", "1").is_err() {
                for pid in procs {
                    let _ = crate::signal(pid, libc::SIGKILL);
                }
            }
            None
        });
        if emptied.is_none() {
            eprintln!(
                "the test cgroup {} could not be removed",
                self.dir.display()
            );
        }
    }
}

/// A cgroup2 hierarchy the test mounted in a scratch directory, unmounted
/// on drop.
struct Mounted {
    dir: Scratch,
}

impl Mounted {
    fn cgroup2() -> Result<Mounted> {
        use nix::mount::{MsFlags, mount};
        let dir = Scratch::new("cgroup2");
        mount(
            Some("none"),
            dir.path(),
            Some("cgroup2"),
            MsFlags::empty(),
            None::<&str>,
        )
        .with_context(|| format!("mount -t cgroup2 none {}", dir.path().display()))?;
        Ok(Mounted { dir })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        use nix::mount::{MntFlags, umount2};
        if let Err(err) = umount2(self.dir.path(), MntFlags::MNT_DETACH) {
            eprintln!("umount {}: {err}", self.dir.path().display());
        }
    }
}

/// A new cgroup named after `label` under `parent` (a path in the
/// hierarchy `mount` shows).
fn make(mount: &Mount, parent: &str, label: &str, v2: bool) -> Result<TestCgroup> {
    let inside = if mount.root == "/" {
        parent
    } else {
        parent
            .strip_prefix(mount.root.as_str())
            .ok_or_else(|| anyhow!("{parent} is outside the mounted {}", mount.root))?
    };
    let name = unique(label);
    let dir = mount.point.join(inside.trim_start_matches('/')).join(&name);
    std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
    Ok(TestCgroup {
        dir,
        path: format!("{}/{name}", parent.trim_end_matches('/')),
        v2,
        _mounted: None,
    })
}

/// `procespy-LABEL-PID-N`: no two tests, nor two runs, make the same.
fn unique(label: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("procespy-{label}-{}-{n}", std::process::id())
}

/// One line of `/proc/self/mountinfo`.
struct Mount {
    root: String,
    point: PathBuf,
    fstype: String,
    options: String,
}

/// The mounts of `/proc/self/mountinfo`.
fn mounts() -> Result<Vec<Mount>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mounts: Vec<Mount> = text
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let mut fields = before.split(' ');
            let root = fields.nth(3)?.to_owned();
            let point = PathBuf::from(fields.next()?);
            let mut after = after.split(' ');
            let fstype = after.next()?.to_owned();
            let options = after.nth(1).unwrap_or_default().to_owned();
            Some(Mount {
                root,
                point,
                fstype,
                options,
            })
        })
        .collect();
    if mounts.is_empty() {
        bail!("/proc/self/mountinfo lists no mount");
    }
    Ok(mounts)
}
