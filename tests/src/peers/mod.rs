//! Real peers for the alert tests, each a guard that stops what it started
//! when dropped: an SMTP server ([`smtp`]) and a desktop session with a
//! session bus and a notification server ([`desktop`]).

pub mod desktop;
pub mod smtp;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

/// A free TCP port on 127.0.0.1, for a server or an endpoint: nothing
/// listens there when asked (take it soon).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// `GET path` over HTTP/1.1 (a scrape of `/metrics`, say); returns (status
/// line, headers, body).
pub fn http_get(address: SocketAddr, path: &str) -> std::io::Result<(String, String, String)> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    Ok((status.to_owned(), headers.to_owned(), body.to_owned()))
}
