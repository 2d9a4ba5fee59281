//! Telling systemd how the daemon is doing (`sd_notify(3)`), for the unit's
//! `Type=notify`. Without `$NOTIFY_SOCKET` (not started by systemd) nothing
//! is sent. A failure is logged at debug level and otherwise ignored:
//! systemd's bookkeeping must never stop the guard.

use sd_notify::NotifyState;

/// The daemon is up: its programs are attached (or `/proc` polling started)
/// and the control socket answers. `status` is what `systemctl status` shows.
pub(crate) fn ready(status: &str) {
    let status = one_line(status);
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// The daemon starts re-reading its configuration; call [`ready`] again when
/// done, whether the new configuration was taken or refused.
pub(crate) fn reloading() {
    let now = super::monotonic_ns() / 1000;
    notify(&[
        NotifyState::Reloading,
        NotifyState::MonotonicUsec(now as i128),
    ]);
}

/// The daemon is stopping.
pub(crate) fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Whether systemd asked for notifications (`$NOTIFY_SOCKET` is set).
pub(crate) fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty())
}

fn notify(states: &[NotifyState<'_>]) {
    if !enabled() {
        return;
    }
    if let Err(err) = sd_notify::notify(states) {
        tracing::debug!("cannot notify systemd: {err}");
    }
}

/// A status must be one line: control characters become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_one_line() {
        assert_eq!(one_line("a\nb\rc\x1b"), "a b c ");
    }
}
