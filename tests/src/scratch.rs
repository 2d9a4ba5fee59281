//! Scratch directories, and copies of the test program in them.

use std::{
    fs::Permissions,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::paths::testprog_bin;

/// A scratch directory under the temporary directory, removed on drop, and
/// readable by everyone: tests run procespy as an unprivileged user too.
pub struct Scratch {
    dir: TempDir,
}

impl Scratch {
    /// Makes a new, empty scratch directory named after `label`.
    pub fn new(label: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("procespy-{label}-"))
            .tempdir()
            .expect("create a scratch directory");
        std::fs::set_permissions(dir.path(), Permissions::from_mode(0o755)).expect("chmod");
        Scratch { dir }
    }

    /// A scratch directory holding the test program as `name`, and the
    /// path of that copy.
    pub fn with_testprog(name: &str) -> (Self, PathBuf) {
        let scratch = Scratch::new(name);
        let exe = scratch.testprog_named(name);
        (scratch, exe)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Puts the test program here as `name` (so limits can match it by a
    /// name no other test uses) and returns its path.
    pub fn testprog_named(&self, name: &str) -> PathBuf {
        self.program_named(&testprog_bin(), name)
    }

    /// Puts the executable `program` here as `name` and returns its path.
    pub fn program_named(&self, program: &Path, name: &str) -> PathBuf {
        let path = self.path().join(name);
        place_executable(program, &path)
            .unwrap_or_else(|err| panic!("placing {} as {name}: {err:#}", program.display()));
        path
    }

    /// Writes `name` with `text`, mode 0644, and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, text).expect("write a scratch file");
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).expect("chmod");
        path
    }
}

/// Makes the executable `from` runnable as `to` without this process ever
/// holding a descriptor that can write `to`.
///
/// The kernel refuses to exec a file that any process has open for writing
/// (ETXTBSY, "Text file busy"). `std::fs::copy` writes the copy through a
/// descriptor of this process; it is close-on-exec, but close-on-exec acts
/// only at exec: a test on another thread that forks while the copy is
/// being written gives its child a duplicate of that descriptor, which stays
/// open until the child's own exec. A test that starts the copy in that
/// moment fails with ETXTBSY, as a CI run once did. So the copy is never
/// written here: a hard link writes nothing (the test program is only ever
/// read), and where `to` is on another filesystem (a guest's tmpfs `/tmp`,
/// the host's tree over 9p) `cp` writes it in a process of its own, which
/// none of ours is forked from, and which has closed the file when it exits.
fn place_executable(from: &Path, to: &Path) -> Result<()> {
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    let output = Command::new("cp")
        .arg("--")
        .arg(from)
        .arg(to)
        .stdin(Stdio::null())
        .output()
        .context("running cp")?;
    if !output.status.success() {
        bail!(
            "cp {} {}: {}",
            from.display(),
            to.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
