//! (Being written.)

use crate::app::Failure;
use crate::cli::{SocketArgs, StatusArgs};

/// `procespy status`.
pub fn status_command(_args: &StatusArgs) -> Result<(), Failure> {
    Err(Failure::Runtime(anyhow::anyhow!("not written yet")))
}

/// `procespy reload`.
pub fn reload_command(_args: &SocketArgs) -> Result<(), Failure> {
    Err(Failure::Runtime(anyhow::anyhow!("not written yet")))
}
