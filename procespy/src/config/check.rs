//! `procespy check-config [PATH]`.

use std::path::PathBuf;

use super::Config;
use crate::{
    app::Failure,
    cli::{CheckConfigArgs, DEFAULT_CONFIG},
};

/// Validates a configuration file exactly as the daemon would load it
/// (including owner, permissions and the password file). Valid: prints
/// `PATH: ok (N limits)` to stdout. Invalid: prints every diagnostic to
/// stderr, one `PATH:LINE:COL: message` per line, and fails with
/// [`Failure::Usage`] (exit 1).
pub fn check_config_command(args: &CheckConfigArgs) -> Result<(), Failure> {
    let path = args
        .path
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
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
            Err(Failure::Usage(format!(
                "{} error(s) in {}",
                err.diagnostics.len(),
                path.display()
            )))
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
    fn missing_file_is_a_usage_failure() {
        let args = CheckConfigArgs {
            path: Some(PathBuf::from("/nonexistent/procespy-test.toml")),
        };
        match check_config_command(&args) {
            Err(Failure::Usage(message)) => {
                assert_eq!(message, "1 error(s) in /nonexistent/procespy-test.toml")
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
