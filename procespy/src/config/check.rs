//! `procespy check-config [PATH]`.

use std::path::{Path, PathBuf};

use super::{Config, DEFAULT_CONFIG};

/// Validates a configuration file exactly as the daemon would load it
/// (including owner, permissions and the password file). Valid: prints
/// `PATH: ok (N limits)` to stdout. Invalid: prints every diagnostic to
/// stderr, one `PATH:LINE:COL: message` per line, and fails with the
/// [`super::ConfigError`] (exit 1), its message a count of the problems.
pub(crate) fn check_config(path: Option<&Path>) -> anyhow::Result<()> {
    let path = path.map_or_else(|| PathBuf::from(DEFAULT_CONFIG), Path::to_path_buf);
    match Config::load(&path) {
        Ok(config) => {
            println!(
                "{}",
                ok_line(&path.display().to_string(), config.limits.len())
            );
            Ok(())
        }
        Err(err) => {
            for diagnostic in &err.diagnostics {
                eprintln!("{diagnostic}");
            }
            let summary = format!("{} error(s) in {}", err.diagnostics.len(), path.display());
            Err(anyhow::Error::new(err).context(summary))
        }
    }
}

/// `PATH: ok (N limits)`, with "1 limit" in the singular.
fn ok_line(path: &str, limits: usize) -> String {
    let plural = if limits == 1 { "" } else { "s" };
    format!("{path}: ok ({limits} limit{plural})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_line_counts_limits() {
        assert_eq!(
            ok_line("/etc/procespy.toml", 0),
            "/etc/procespy.toml: ok (0 limits)"
        );
        assert_eq!(
            ok_line("/etc/procespy.toml", 1),
            "/etc/procespy.toml: ok (1 limit)"
        );
        assert_eq!(ok_line("a.toml", 3), "a.toml: ok (3 limits)");
    }

    #[test]
    fn a_missing_file_is_a_config_error() {
        let err = check_config(Some(Path::new("/nonexistent/procespy-test.toml"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "1 error(s) in /nonexistent/procespy-test.toml"
        );
        assert!(err.downcast_ref::<super::super::ConfigError>().is_some());
    }
}
