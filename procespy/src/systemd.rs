//! Telling systemd how the daemon is doing (`sd_notify(3)`), for the unit's
//! `Type=notify`: one datagram per state change to the socket named by
//! `$NOTIFY_SOCKET`. Without that variable (not started by systemd) every
//! function here does nothing.
//!
//! The protocol is small enough to speak with std's `UnixDatagram`: the
//! message is `KEY=VALUE` lines; the address is a path, or an abstract name
//! when it starts with `@`.

use std::{
    ffi::OsString,
    io,
    os::unix::net::{SocketAddr, UnixDatagram},
};

/// The daemon is up: the eBPF programs are attached (or `/proc` polling
/// started) and the control socket answers. `status` is a one-line summary
/// shown by `systemctl status`.
pub fn notify_ready(status: &str) {
    notify(&format!("READY=1\nSTATUS={}", one_line(status)));
}

/// The daemon starts re-reading its configuration; send [`notify_ready`]
/// again when done, whether the new configuration was taken or refused.
pub fn notify_reloading() {
    notify(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}",
        monotonic_usec().unwrap_or(0)
    ));
}

/// The daemon is stopping (SIGTERM or SIGINT received).
pub fn notify_stopping() {
    notify("STOPPING=1\nSTATUS=stopping: detaching the eBPF programs");
}

/// Replaces the one-line status `systemctl status` shows.
pub fn notify_status(status: &str) {
    notify(&format!("STATUS={}", one_line(status)));
}

/// Whether systemd asked for notifications (`$NOTIFY_SOCKET` is set).
pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty())
}

/// Sends `message`; a failure is logged at debug level and otherwise
/// ignored: systemd's bookkeeping must never stop the guard.
fn notify(message: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()) else {
        return;
    };
    if let Err(err) = send(&socket, message) {
        tracing::debug!("cannot notify systemd at {}: {err}", socket.display());
    }
}

/// Sends one datagram to the notification socket `socket`.
fn send(socket: &OsString, message: &str) -> io::Result<()> {
    let address = address(socket)?;
    let sender = UnixDatagram::unbound()?;
    sender.send_to_addr(message.as_bytes(), &address)?;
    Ok(())
}

/// `$NOTIFY_SOCKET` as an address: a path, or `@name` for an abstract socket.
fn address(socket: &OsString) -> io::Result<SocketAddr> {
    use std::os::{linux::net::SocketAddrExt, unix::ffi::OsStrExt};
    let bytes = socket.as_bytes();
    match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None if bytes.starts_with(b"/") => SocketAddr::from_pathname(socket),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET is neither a path nor an abstract name",
        )),
    }
}

/// `STATUS=` takes one line.
fn one_line(text: &str) -> String {
    text.replace('\n', " ")
}

/// `CLOCK_MONOTONIC` in microseconds, which `RELOADING=1` carries.
fn monotonic_usec() -> Option<u64> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return None;
    }
    let secs = u64::try_from(now.tv_sec).ok()?;
    let micros = u64::try_from(now.tv_nsec).ok()? / 1000;
    Some(secs * 1_000_000 + micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(receiver: &UnixDatagram) -> String {
        let mut buffer = [0u8; 512];
        let n = receiver.recv(&mut buffer).unwrap();
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    }

    #[test]
    fn messages_reach_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("procespy-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let receiver = UnixDatagram::bind(&path).unwrap();
        send(&path.clone().into_os_string(), "READY=1\nSTATUS=up").unwrap();
        assert_eq!(receive(&receiver), "READY=1\nSTATUS=up");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn messages_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("procespy-notify-test-{}", std::process::id());
        let receiver =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        send(&OsString::from(format!("@{name}")), "STOPPING=1").unwrap();
        assert_eq!(receive(&receiver), "STOPPING=1");
    }

    #[test]
    fn a_relative_address_is_refused() {
        assert!(address(&OsString::from("notify.sock")).is_err());
    }

    #[test]
    fn the_status_is_one_line_and_the_clock_runs() {
        assert_eq!(one_line("a\nb"), "a b");
        assert!(monotonic_usec().unwrap() > 0);
    }
}
