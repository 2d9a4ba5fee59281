//! Alerts: desktop popups over D-Bus and email over SMTP.
//!
//! The pure parts come first: which actions are worth a message and what
//! it says ([`message`]), at most one message per limit and cooldown
//! ([`cooldown`]), and the on-disk queue of emails ([`spool`]).

pub mod cooldown;
pub mod message;
pub mod spool;
