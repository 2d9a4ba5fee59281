//! `procespy notify-popup` (hidden): the short-lived child that shows one
//! popup. The daemon starts it as the user whose session bus it talks to
//! (root may not talk to a user's bus), with a clean environment, and kills
//! it when it takes too long. It calls
//! `org.freedesktop.Notifications.Notify` once and exits: 0 when the
//! notification server took the popup, 2 (with the reason on stderr) when not.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use anyhow::Context;

use crate::config::Urgency;

/// One popup to show.
#[derive(Clone, Debug)]
pub(crate) struct Popup {
    /// The session bus's socket (`/run/user/UID/bus`).
    pub(crate) bus: PathBuf,
    /// `low`, `normal` or `critical`.
    pub(crate) urgency: String,
    /// The one-line summary.
    pub(crate) summary: String,
    /// The body.
    pub(crate) body: String,
}

/// The application name popups carry.
pub(crate) const APP_NAME: &str = "procespy";

/// How long the child waits for the bus to answer a call (the parent's
/// limit is longer).
const METHOD_TIMEOUT: Duration = Duration::from_secs(4);
/// How long the child runs at most, connection and call together.
const SELF_TIMEOUT: Duration = Duration::from_millis(4500);

/// Runs the subcommand.
pub(crate) fn run(args: &Popup) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    // The parent kills us after its own timeout; this one holds when the
    // parent is gone (killed without a chance to clean up).
    let id = runtime
        .block_on(async {
            match tokio::time::timeout(SELF_TIMEOUT, notify(args)).await {
                Ok(result) => result.map_err(anyhow::Error::from),
                Err(_) => Err(anyhow::anyhow!("no answer within {SELF_TIMEOUT:?}")),
            }
        })
        .with_context(|| format!("Notify on {}", args.bus.display()))?;
    tracing::debug!(id, "notification shown");
    Ok(())
}

/// The urgency byte of the notification spec's `urgency` hint.
pub(crate) fn urgency_byte(urgency: Urgency) -> u8 {
    match urgency {
        Urgency::Low => 0,
        Urgency::Normal => 1,
        Urgency::Critical => 2,
    }
}

/// The urgency named `name` (`low`, `normal`, `critical`); critical when unknown.
pub(crate) fn urgency_named(name: &str) -> Urgency {
    match name {
        "low" => Urgency::Low,
        "normal" => Urgency::Normal,
        _ => Urgency::Critical,
    }
}

async fn notify(args: &Popup) -> zbus::Result<u32> {
    let address = format!("unix:path={}", args.bus.display());
    let connection = zbus::connection::Builder::address(address.as_str())
        .method_timeout(METHOD_TIMEOUT)
        .build()
        .await?;
    let hints: HashMap<&str, zbus::Variant<'_>> = HashMap::from([
        (
            "urgency",
            zbus::Variant::U8(urgency_byte(urgency_named(&args.urgency))),
        ),
        ("desktop-entry", zbus::Variant::from(APP_NAME)),
    ]);
    let reply = connection
        .call_method(
            Some("org.freedesktop.Notifications"),
            "/org/freedesktop/Notifications",
            Some("org.freedesktop.Notifications"),
            "Notify",
            &(
                APP_NAME,
                0u32,
                "dialog-warning",
                args.summary.as_str(),
                args.body.as_str(),
                Vec::<&str>::new(),
                hints,
                -1i32,
            ),
        )
        .await?;
    reply.body().deserialize::<u32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urgencies_follow_the_notification_spec() {
        assert_eq!(urgency_byte(Urgency::Low), 0);
        assert_eq!(urgency_byte(Urgency::Normal), 1);
        assert_eq!(urgency_byte(Urgency::Critical), 2);
        for name in Urgency::NAMES {
            assert_eq!(urgency_named(name).as_str(), *name);
        }
    }
}
