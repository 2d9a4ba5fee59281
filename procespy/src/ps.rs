//! `procespy ps`. (Being written.)

use crate::app::Failure;
use crate::cli::PsArgs;

/// `procespy ps`.
pub fn run(_args: &PsArgs) -> Result<(), Failure> {
    Err(Failure::Runtime(anyhow::anyhow!("ps is not written yet")))
}
