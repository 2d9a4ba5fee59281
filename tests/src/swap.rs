//! Swap space a test sets up and removes: a swap file (`mkswap`,
//! `swapon`), or, where the file system cannot hold one (a tmpfs `/tmp`),
//! the same file behind a loop device.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
};

use crate::scratch::Scratch;

/// Swap in use until drop, then turned off and removed.
pub struct Swap {
    /// What `swapon` was given: the file, or its loop device.
    device: PathBuf,
    loop_device: Option<PathBuf>,
    _scratch: Scratch,
}

impl Swap {
    /// Turns on `mib` MiB of swap; or says why it cannot.
    pub fn on(mib: usize) -> Result<Swap, String> {
        let scratch = Scratch::new("swap");
        let file = scratch.path().join("swapfile");
        write_zeros(&file, mib).map_err(|err| format!("writing {}: {err}", file.display()))?;
        let as_file = swapon(&file);
        let Err(file_error) = as_file else {
            return Ok(Swap {
                device: file,
                loop_device: None,
                _scratch: scratch,
            });
        };
        let device = command(Command::new("losetup").args(["-f", "--show"]).arg(&file))
            .map_err(|err| format!("{file_error}; and no loop device: {err}"))?;
        let device = PathBuf::from(device.trim());
        if let Err(err) = swapon(&device) {
            let _ = command(Command::new("losetup").arg("-d").arg(&device));
            return Err(format!("{file_error}; on {}: {err}", device.display()));
        }
        Ok(Swap {
            device: device.clone(),
            loop_device: Some(device),
            _scratch: scratch,
        })
    }
}

impl Drop for Swap {
    fn drop(&mut self) {
        if let Err(err) = command(Command::new("swapoff").arg(&self.device)) {
            eprintln!("swapoff {}: {err}", self.device.display());
        }
        if let Some(device) = &self.loop_device {
            let _ = command(Command::new("losetup").arg("-d").arg(device));
        }
    }
}

/// Writes `mib` MiB of zeros to `path`, mode 0600: a swap file has no holes.
fn write_zeros(path: &Path, mib: usize) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..mib {
        file.write_all(&zeros)?;
    }
    file.sync_all()
}

/// `mkswap PATH && swapon PATH`.
fn swapon(path: &Path) -> Result<(), String> {
    command(Command::new("mkswap").arg(path))?;
    command(Command::new("swapon").arg(path)).map(drop)
}

/// Runs `command`: its output, or what it said when it failed.
fn command(command: &mut Command) -> Result<String, String> {
    let output = command
        .output()
        .map_err(|err| format!("{command:?}: {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "{command:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
