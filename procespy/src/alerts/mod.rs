//! Alerts: desktop popups over D-Bus and email over SMTP.
//!
//! Which actions are worth a message and what it says ([`message`]), at
//! most one message per limit and cooldown ([`cooldown`]), the on-disk
//! queue of emails ([`spool`]), composing and sending them with lettre
//! ([`email`]), sending the queue in order with backoff ([`outbox`]), and
//! popups on every user's session bus ([`desktop`]) through a child that
//! runs as that user ([`popup`]).

pub mod cooldown;
pub mod desktop;
pub mod email;
pub mod message;
pub mod outbox;
pub mod popup;
pub mod spool;
