//! Ownership and permission checks on the files procespy trusts: the
//! configuration decides which processes get killed, and the password file
//! holds a secret, so neither may be changeable by anyone but root.

use std::{os::unix::fs::MetadataExt, path::Path};

/// Checks that `path` is a regular file (after following symlinks), owned by
/// uid 0 and not writable by group or others. `what` names the file in the
/// message ("config", "password file"). The error is a sentence for the
/// user that says how to fix it; it does not start with the path.
pub(crate) fn check_file(path: &Path, what: &str) -> Result<(), String> {
    let metadata = std::fs::metadata(path).map_err(|err| format!("cannot read: {err}"))?;
    if !metadata.is_file() {
        return Err(format!("refusing a {what} that is not a regular file"));
    }
    check_owner_and_mode(metadata.uid(), metadata.mode(), path, what)
}

/// The rule behind [`check_file`], on an owner and a mode.
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
            check_owner_and_mode(0, 0o100646, path, "config")
                .unwrap_err()
                .contains("(mode 0646)")
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
}
