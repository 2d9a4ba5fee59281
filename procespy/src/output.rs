//! Writing to stdout without panicking when the reader went away.

use std::io::{ErrorKind, Write};

/// Prints `text` and a newline to stdout. A closed pipe (`procespy ps | head`)
/// is not an error: the reader has what it wanted.
pub(crate) fn print_stdout(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let result = out
        .write_all(text.as_bytes())
        .and_then(|()| {
            if text.ends_with('\n') {
                Ok(())
            } else {
                out.write_all(b"\n")
            }
        })
        .and_then(|()| out.flush());
    match result {
        Err(err) if err.kind() == ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
