//! (Being written.)

use crate::app::Failure;
use crate::cli::RunArgs;

/// `procespy run`.
pub fn run(_args: RunArgs) -> Result<(), Failure> {
    Err(Failure::Runtime(anyhow::anyhow!("not written yet")))
}
