//! Errors in a configuration file, each with the place it was found.

use std::{
    fmt,
    ops::Range,
    path::{Path, PathBuf},
};

/// One problem in a configuration file.
///
/// Displays as `PATH:LINE:COL: message`, or as `PATH: message` for problems
/// with the file as a whole (unreadable, wrong owner or permissions), whose
/// `line` and `col` are 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Diagnostic {
    /// The configuration file.
    pub(crate) path: PathBuf,
    /// 1-based line, or 0 for the whole file.
    pub(crate) line: usize,
    /// 1-based column in characters, or 0 for the whole file.
    pub(crate) col: usize,
    /// What is wrong, as a sentence for the user.
    pub(crate) message: String,
}

impl Diagnostic {
    /// A problem with the file as a whole: no line or column.
    pub(crate) fn whole_file(path: &Path, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            path: path.to_path_buf(),
            line: 0,
            col: 0,
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.path.display(),
                self.line,
                self.col,
                self.message
            )
        }
    }
}

/// A configuration that was refused, with every problem found in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigError {
    /// The problems, in the order they appear in the file (never empty).
    pub(crate) diagnostics: Vec<Diagnostic>,
}

impl From<Diagnostic> for ConfigError {
    fn from(diagnostic: Diagnostic) -> ConfigError {
        ConfigError {
            diagnostics: vec![diagnostic],
        }
    }
}

impl fmt::Display for ConfigError {
    /// One diagnostic per line, without a trailing newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Turns byte offsets in a configuration text into diagnostics with 1-based
/// line and column (the column counts characters, not bytes).
#[derive(Clone, Copy)]
pub(crate) struct Source<'a> {
    /// The file name used in diagnostics.
    pub(crate) path: &'a Path,
    /// The whole text of the file.
    pub(crate) text: &'a str,
}

impl Source<'_> {
    /// The 1-based (line, column) of a byte offset.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = before.matches('\n').count() + 1;
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }

    /// A diagnostic at the start of `span`.
    pub(crate) fn at(&self, span: Range<usize>, message: impl Into<String>) -> Diagnostic {
        let (line, col) = self.position(span.start);
        Diagnostic {
            path: self.path.to_path_buf(),
            line,
            col,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let source = Source {
            path: Path::new("x.toml"),
            text: "a = 1\n# é\nbé = 2\n",
        };
        assert_eq!(source.position(0), (1, 1));
        assert_eq!(source.position(4), (1, 5));
        assert_eq!(source.position(6), (2, 1));
        let b = source.text.find("bé").unwrap();
        assert_eq!(source.position(b), (3, 1));
        assert_eq!(source.position(b + 3), (3, 3));
        assert_eq!(source.position(10_000), (4, 1));
    }

    #[test]
    fn display() {
        let at = Diagnostic {
            path: "/etc/p.toml".into(),
            line: 3,
            col: 7,
            message: "bad".into(),
        };
        let whole = Diagnostic::whole_file(Path::new("/etc/p.toml"), "unreadable");
        assert_eq!(at.to_string(), "/etc/p.toml:3:7: bad");
        assert_eq!(whole.to_string(), "/etc/p.toml: unreadable");
        let err = ConfigError {
            diagnostics: vec![at, whole],
        };
        assert_eq!(
            err.to_string(),
            "/etc/p.toml:3:7: bad\n/etc/p.toml: unreadable"
        );
    }
}
