//! The configuration file. (Being written.)

use crate::app::Failure;
use crate::cli::CheckConfigArgs;

/// `procespy check-config [PATH]`.
pub fn check_config_command(_args: &CheckConfigArgs) -> Result<(), Failure> {
    Err(Failure::Runtime(anyhow::anyhow!("check-config is not written yet")))
}
