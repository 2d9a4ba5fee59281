//! Kernel settings under `/proc/sys`, changed for a benchmark and put back
//! when it ends, on an error or a panic too.

use std::{fs, path::PathBuf};

use anyhow::{Context, Result};

/// A setting changed until this is dropped; then it gets its old value back.
pub struct Sysctl {
    path: PathBuf,
    old: String,
}

impl Sysctl {
    /// Sets `name` (such as `kernel/pid_max`) to `value`. `None` when it
    /// already had that value: there is nothing to put back.
    pub fn set(name: &str, value: &str) -> Result<Option<Self>> {
        let old = read(name)?;
        if old == value {
            return Ok(None);
        }
        let path = path(name);
        fs::write(&path, value)
            .with_context(|| format!("setting {} to {value} (was {old})", path.display()))?;
        Ok(Some(Sysctl { path, old }))
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if let Err(err) = fs::write(&self.path, &self.old) {
            eprintln!(
                "bench: could not put {} back to {}: {err}",
                self.path.display(),
                self.old
            );
        }
    }
}

/// The value of `name`, trimmed.
pub fn read(name: &str) -> Result<String> {
    let path = path(name);
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.trim().to_owned())
}

fn path(name: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(name)
}
