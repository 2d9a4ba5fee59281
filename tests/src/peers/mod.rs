//! Real peers for the alert tests, each a guard that stops what it started
//! when dropped: an SMTP server ([`smtp`]) and a desktop session with a
//! session bus and a notification server ([`desktop`]).

pub mod desktop;
pub mod smtp;

use std::net::TcpListener;

/// A free TCP port on 127.0.0.1, for a server or an endpoint: nothing
/// listens there when asked (take it soon).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}
