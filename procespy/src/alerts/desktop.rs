//! Desktop popups: finding the users' session buses and showing a popup on
//! each through a short-lived child running as that user
//! (`procespy notify-popup`, see [`super::popup`]).
//!
//! Nothing here waits on a bus: every child runs as a task of its own and is
//! killed after [`CHILD_TIMEOUT`]. A bus that fails (no notification server,
//! a hanging bus, a bus that went away) is logged once, when it starts
//! failing, and once more when popups reach it again; the popup is tried
//! again with backoff for a few minutes, then dropped. No session bus at all
//! is logged once, and looked for again at the next popup.

use std::{
    collections::HashMap,
    os::unix::fs::{FileTypeExt, MetadataExt},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::task::JoinSet;

use super::{message::PopupText, outbox::Tally};
use crate::config::{Desktop, Urgency};

/// Where the session buses are: `/run/user/UID/bus`.
pub(crate) const RUN_USER: &str = "/run/user";
/// How long a popup child may run before it is killed.
pub(crate) const CHILD_TIMEOUT: Duration = Duration::from_secs(5);
/// A popup not shown within this time is dropped.
const MAX_AGE: Duration = Duration::from_secs(300);
/// The first wait before a popup is tried again; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// At most this many popups wait per user; the oldest go first.
const MAX_WAITING: usize = 10;

/// A user's session bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Bus {
    /// The user's uid (the number in `/run/user/UID`).
    pub(crate) uid: u32,
    /// Their primary group.
    pub(crate) gid: u32,
    /// Their name (the uid as text when it has none).
    pub(crate) user: String,
    /// Their home directory (`/` when unknown).
    pub(crate) home: PathBuf,
    /// The bus's socket.
    pub(crate) path: PathBuf,
}

/// The session buses under `run_user` (`/run/user`): every `UID/bus` that is
/// a socket owned by UID, of the users named in `users` (all when empty).
pub(crate) fn find_buses(run_user: &Path, users: &[String]) -> Vec<Bus> {
    let Ok(entries) = std::fs::read_dir(run_user) else {
        return Vec::new();
    };
    let mut buses: Vec<Bus> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let uid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let path = entry.path().join("bus");
            let meta = std::fs::metadata(&path).ok()?;
            if !meta.file_type().is_socket() || meta.uid() != uid {
                return None;
            }
            let account = nix::unistd::User::from_uid(uid.into()).ok().flatten();
            let bus = match account {
                Some(account) => Bus {
                    uid,
                    gid: account.gid.as_raw(),
                    user: account.name,
                    home: account.dir,
                    path,
                },
                None => Bus {
                    uid,
                    gid: meta.gid(),
                    user: uid.to_string(),
                    home: PathBuf::from("/"),
                    path,
                },
            };
            (users.is_empty() || users.contains(&bus.user)).then_some(bus)
        })
        .collect();
    buses.sort_by_key(|bus| bus.uid);
    buses
}

/// Runs `exe notify-popup` as the bus's user and waits for it, at most
/// [`CHILD_TIMEOUT`].
pub(crate) async fn show(
    exe: &Path,
    bus: &Bus,
    urgency: Urgency,
    text: &PopupText,
) -> Result<(), String> {
    let mut command = tokio::process::Command::new(exe);
    command
        .arg("notify-popup")
        .arg("--bus")
        .arg(&bus.path)
        .arg("--urgency")
        .arg(urgency.as_str())
        .arg("--summary")
        .arg(&text.summary)
        .arg("--body")
        .arg(&text.body)
        .env_clear()
        .env(
            "DBUS_SESSION_BUS_ADDRESS",
            format!("unix:path={}", bus.path.display()),
        )
        .env("HOME", &bus.home)
        .env("USER", &bus.user)
        .env("LOGNAME", &bus.user)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .current_dir("/")
        .uid(bus.uid)
        .gid(bus.gid)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command
        .spawn()
        .map_err(|err| format!("cannot start {} notify-popup: {err}", exe.display()))?;
    match tokio::time::timeout(CHILD_TIMEOUT, child.wait_with_output()).await {
        Err(_) => Err(format!(
            "no answer within {CHILD_TIMEOUT:?} (the bus or its notification server hangs)"
        )),
        Ok(Err(err)) => Err(format!("waiting for notify-popup: {err}")),
        Ok(Ok(output)) if output.status.success() => Ok(()),
        Ok(Ok(output)) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let reason = stderr
                .lines()
                .rev()
                .find(|line| !line.trim().is_empty())
                .map(|line| line.trim_start_matches("procespy: ").to_owned())
                .unwrap_or_else(|| format!("notify-popup ended with {}", output.status));
            Err(reason)
        }
    }
}

/// The procespy binary to run as the popup child.
pub(crate) fn own_exe() -> PathBuf {
    match std::env::current_exe() {
        Ok(path) if path.exists() => path,
        // Replaced on disk since it started: the kernel still has it.
        _ => PathBuf::from("/proc/self/exe"),
    }
}

/// One popup on its way.
#[derive(Clone, Debug)]
struct Popup {
    text: PopupText,
    urgency: Urgency,
    made: Instant,
    tries: u32,
}

/// The popups of the worker: in flight, and waiting to be tried again.
pub(crate) struct Popups {
    config: Desktop,
    exe: PathBuf,
    run_user: PathBuf,
    in_flight: JoinSet<(Bus, Popup, Result<(), String>)>,
    /// Popups to try again, by uid: (when, popup).
    waiting: HashMap<u32, Vec<(Instant, Popup)>>,
    /// Users whose bus fails, with the reason logged.
    failing: HashMap<u32, String>,
    /// "No session bus" was logged and not yet taken back.
    told_no_bus: bool,
    /// Popups shown, and attempts that failed, since start.
    tally: Tally,
}

impl Popups {
    /// Popups as `config` says, run from `exe`, buses under `run_user`.
    pub(crate) fn new(config: Desktop, exe: PathBuf, run_user: PathBuf) -> Popups {
        Popups {
            config,
            exe,
            run_user,
            in_flight: JoinSet::new(),
            waiting: HashMap::new(),
            failing: HashMap::new(),
            told_no_bus: false,
            tally: Tally::default(),
        }
    }

    /// Popups shown and attempts failed since start.
    pub(crate) fn tally(&self) -> Tally {
        self.tally
    }

    /// A new `[notify.desktop]`.
    pub(crate) fn configure(&mut self, config: Desktop) {
        if !config.enabled {
            self.waiting.clear();
        }
        self.config = config;
    }

    /// Whether popups are on.
    pub(crate) fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// Shows `text` on every bus there is now.
    pub(crate) fn show(&mut self, text: PopupText) {
        if !self.config.enabled {
            return;
        }
        let buses = find_buses(&self.run_user, &self.config.users);
        if buses.is_empty() {
            if !self.told_no_bus {
                let whose = if self.config.users.is_empty() {
                    String::new()
                } else {
                    format!(" of {}", self.config.users.join(", "))
                };
                tracing::warn!(
                    "no session bus{whose} under {}: popups are not shown (looked for again at the next one)",
                    self.run_user.display()
                );
                self.told_no_bus = true;
            }
            tracing::debug!(summary = %text.summary, "popup not shown: no session bus");
            return;
        }
        if self.told_no_bus {
            tracing::info!("session buses found again: popups are shown");
            self.told_no_bus = false;
        }
        let popup = Popup {
            text,
            urgency: self.config.urgency,
            made: Instant::now(),
            tries: 0,
        };
        for bus in buses {
            self.spawn(bus, popup.clone());
        }
    }

    fn spawn(&mut self, bus: Bus, mut popup: Popup) {
        popup.tries += 1;
        let exe = self.exe.clone();
        self.in_flight.spawn(async move {
            let result = show(&exe, &bus, popup.urgency, &popup.text).await;
            (bus, popup, result)
        });
    }

    /// Waits for the next popup child to finish (pending forever when none runs).
    pub(crate) async fn next_done(&mut self) {
        let Some(done) = self.in_flight.join_next().await else {
            return std::future::pending().await;
        };
        match done {
            Ok((bus, popup, result)) => self.on_done(bus, popup, result),
            Err(err) => tracing::error!("a popup task failed: {err}"),
        }
    }

    fn on_done(&mut self, bus: Bus, popup: Popup, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.tally.sent += 1;
                tracing::debug!(user = %bus.user, summary = %popup.text.summary, "popup shown");
                if self.failing.remove(&bus.uid).is_some() {
                    tracing::info!(user = %bus.user, "popups reach {} again", bus.user);
                }
            }
            Err(reason) => {
                self.tally.failed += 1;
                match self.failing.entry(bus.uid) {
                    std::collections::hash_map::Entry::Occupied(_) => {
                        tracing::debug!(user = %bus.user, "popup not shown: {reason}");
                    }
                    std::collections::hash_map::Entry::Vacant(entry) => {
                        tracing::warn!(
                            user = %bus.user,
                            bus = %bus.path.display(),
                            "cannot show popups to {}: {reason}; trying again later",
                            bus.user
                        );
                        entry.insert(reason);
                    }
                }
                if popup.made.elapsed() < MAX_AGE {
                    let wait = FIRST_BACKOFF
                        .saturating_mul(1 << popup.tries.saturating_sub(1).min(8))
                        .min(MAX_BACKOFF);
                    let queue = self.waiting.entry(bus.uid).or_default();
                    queue.push((Instant::now() + wait, popup));
                    if queue.len() > MAX_WAITING {
                        queue.remove(0);
                    }
                } else {
                    tracing::info!(user = %bus.user, summary = %popup.text.summary, "popup dropped: not shown within {MAX_AGE:?}");
                }
            }
        }
    }

    /// When the next popup is to be tried again.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.waiting.values().flatten().map(|(at, _)| *at).min()
    }

    /// Tries again the popups whose time has come, on their user's bus as
    /// it is now (dropped when the bus went away).
    pub(crate) fn retry_due(&mut self, now: Instant) {
        let mut due = Vec::new();
        for (&uid, queue) in &mut self.waiting {
            let (ready, later): (Vec<_>, Vec<_>) = queue.drain(..).partition(|(at, _)| *at <= now);
            *queue = later;
            due.extend(ready.into_iter().map(|(_, popup)| (uid, popup)));
        }
        self.waiting.retain(|_, queue| !queue.is_empty());
        if due.is_empty() {
            return;
        }
        let buses = find_buses(&self.run_user, &self.config.users);
        for (uid, popup) in due {
            match buses.iter().find(|bus| bus.uid == uid) {
                Some(bus) => self.spawn(bus.clone(), popup),
                None => {
                    tracing::debug!(uid, summary = %popup.text.summary, "popup dropped: the session bus is gone");
                    self.failing.remove(&uid);
                }
            }
        }
    }

    /// Popups in flight or waiting.
    pub(crate) fn pending(&self) -> usize {
        self.in_flight.len() + self.waiting.values().map(Vec::len).sum::<usize>()
    }

    /// Stops: popups not shown yet are dropped (their children killed).
    pub(crate) fn stop(&mut self) {
        let dropped = self.pending();
        self.in_flight.abort_all();
        self.waiting.clear();
        if dropped > 0 {
            tracing::info!(dropped, "stopping: {dropped} popups not shown are dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    struct TempDir(PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn temp(label: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("procespy-buses-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    #[test]
    fn buses_are_sockets_owned_by_their_uid() {
        let dir = temp("find");
        let me = nix::unistd::geteuid().as_raw();
        let own = dir.0.join(me.to_string());
        std::fs::create_dir(&own).unwrap();
        let _listener = UnixListener::bind(own.join("bus")).unwrap();
        // Not a socket, not a number, or not owned by that uid: skipped.
        let plain = dir.0.join((me + 1).to_string());
        std::fs::create_dir(&plain).unwrap();
        std::fs::write(plain.join("bus"), "").unwrap();
        std::fs::create_dir(dir.0.join("abc")).unwrap();
        let other = dir.0.join((me + 2).to_string());
        std::fs::create_dir(&other).unwrap();
        let _other = UnixListener::bind(other.join("bus")).unwrap();

        let buses = find_buses(&dir.0, &[]);
        assert_eq!(buses.len(), 1, "{buses:?}");
        assert_eq!(buses[0].uid, me);
        assert_eq!(buses[0].path, own.join("bus"));
        let name = buses[0].user.clone();
        assert_eq!(find_buses(&dir.0, std::slice::from_ref(&name)).len(), 1);
        assert!(find_buses(&dir.0, &["nobody-of-that-name".into()]).is_empty());
        assert!(find_buses(&dir.0.join("missing"), &[]).is_empty());
    }

    #[tokio::test]
    async fn a_child_that_hangs_is_killed_after_the_timeout() {
        // `sleep` stands in for a popup child whose bus never answers.
        let dir = temp("hang");
        let script = dir.0.join("hang");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 60\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap();
        let bus = Bus {
            uid: me.uid.as_raw(),
            gid: me.gid.as_raw(),
            user: me.name,
            home: me.dir,
            path: dir.0.join("bus"),
        };
        let text = PopupText {
            summary: "s".into(),
            body: "b".into(),
        };
        let start = Instant::now();
        let err = show(&script, &bus, Urgency::Critical, &text)
            .await
            .unwrap_err();
        assert!(err.contains("no answer"), "{err}");
        assert!(start.elapsed() < CHILD_TIMEOUT + Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_failing_child_gives_its_last_line_as_the_reason() {
        let dir = temp("fail");
        let script = dir.0.join("fail");
        std::fs::write(
            &script,
            "#!/bin/sh\necho 'procespy: org.freedesktop.DBus.Error.ServiceUnknown' >&2\nexit 2\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap();
        let bus = Bus {
            uid: me.uid.as_raw(),
            gid: me.gid.as_raw(),
            user: me.name,
            home: me.dir,
            path: dir.0.join("bus"),
        };
        let text = PopupText {
            summary: "s".into(),
            body: "b".into(),
        };
        let err = show(&script, &bus, Urgency::Low, &text).await.unwrap_err();
        assert_eq!(err, "org.freedesktop.DBus.Error.ServiceUnknown");
    }
}
