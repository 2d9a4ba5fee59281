//! A desktop session of an unprivileged test user: `Xvfb`, a session bus
//! (`dbus-daemon --session`) listening where procespy looks for it
//! (`/run/user/UID/bus`), and `dunst` as the notification server. All run
//! as the test user; `dunstctl` (as that user) reads back what was shown.
//! Two broken sessions too: a bus with no notification server, and a bus
//! socket that never answers.

use std::{
    os::unix::{fs::PermissionsExt, net::UnixListener, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use crate::{
    lock::Lock,
    needs::{on_path, require},
    process::terminate,
    run::poll,
    scratch::Scratch,
};
use anyhow::{Context, Result, bail};

/// The test user, made with `useradd` when missing.
pub const TEST_USER: &str = "procespy-test";

/// Whether dbus-daemon, dunst, dunstctl, Xvfb and import are there; under
/// CI their absence fails the test.
pub fn have_desktop_peers() -> bool {
    [
        "dbus-daemon",
        "dbus-send",
        "dunst",
        "dunstctl",
        "Xvfb",
        "import",
    ]
    .iter()
    .all(|program| require(program, on_path(program)))
}

/// The running session; everything stops on drop.
pub struct DesktopSession {
    /// The user's name.
    pub user: String,
    /// Their uid.
    pub uid: u32,
    /// Their gid.
    pub gid: u32,
    /// The X display, `:N`.
    pub display: String,
    /// The session bus's socket.
    pub bus: PathBuf,
    runtime_dir: PathBuf,
    made_runtime_dir: bool,
    made_user: bool,
    home: PathBuf,
    /// dunst, dbus-daemon, Xvfb: stopped in that order.
    children: Vec<(&'static str, Child)>,
    /// The socket of a bus that never answers.
    _silent: Option<UnixListener>,
    _scratch: Scratch,
    /// The user and their bus are one for the whole machine: one session
    /// at a time, whatever the test process.
    _lock: Lock,
}

impl DesktopSession {
    /// Starts Xvfb, the session bus at `/run/user/UID/bus` and dunst, as the
    /// test user, and waits until dunst owns org.freedesktop.Notifications.
    pub fn start() -> Result<DesktopSession> {
        let mut session = Self::prepare()?;
        session.start_xvfb()?;
        session.start_bus(&["--session"])?;
        let dunst = session.command("dunst").spawn().context("starting dunst")?;
        session.children.push(("dunst", dunst));
        poll(Duration::from_secs(15), Duration::from_millis(100), || {
            session.has_notification_server().then_some(())
        })
        .context("dunst did not take org.freedesktop.Notifications within 15 s")?;
        Ok(session)
    }

    /// Only a session bus, with no notification server and no service
    /// files (so nothing is started on demand either).
    pub fn without_notification_server() -> Result<DesktopSession> {
        let mut session = Self::prepare()?;
        let config = session.home.join("bare-session.conf");
        std::fs::write(
            &config,
            "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n              \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n\
             <busconfig>\n  <type>session</type>\n  <listen>unix:tmpdir=/tmp</listen>\n  \
             <auth>EXTERNAL</auth>\n  <policy context=\"default\">\n    \
             <allow send_destination=\"*\" eavesdrop=\"true\"/>\n    \
             <allow eavesdrop=\"true\"/>\n    <allow own=\"*\"/>\n  </policy>\n</busconfig>\n",
        )?;
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644))?;
        session.start_bus(&[&format!("--config-file={}", config.display())])?;
        if session.has_notification_server() {
            bail!("the bare bus has a notification server");
        }
        Ok(session)
    }

    /// A socket at the bus's place that accepts connections (the kernel
    /// queues them) and never answers.
    pub fn with_silent_bus() -> Result<DesktopSession> {
        let mut session = Self::prepare()?;
        let listener = UnixListener::bind(&session.bus)?;
        nix::unistd::chown(
            &session.bus,
            Some(session.uid.into()),
            Some(session.gid.into()),
        )?;
        session._silent = Some(listener);
        Ok(session)
    }

    /// The user, their runtime directory and a home; nothing running yet.
    fn prepare() -> Result<DesktopSession> {
        let lock = Lock::exclusive("desktop")?;
        let made_user = ensure_user(TEST_USER)?;
        let account = nix::unistd::User::from_name(TEST_USER)?
            .with_context(|| format!("{TEST_USER} has no passwd entry"))?;
        let (uid, gid) = (account.uid.as_raw(), account.gid.as_raw());
        let scratch = Scratch::new("desktop");
        let home = scratch.path().join("home");
        std::fs::create_dir_all(&home)?;
        nix::unistd::chown(&home, Some(uid.into()), Some(gid.into()))?;

        let runtime_dir = PathBuf::from(format!("/run/user/{uid}"));
        let made_runtime_dir = !runtime_dir.exists();
        std::fs::create_dir_all(&runtime_dir)?;
        nix::unistd::chown(&runtime_dir, Some(uid.into()), Some(gid.into()))?;
        std::fs::set_permissions(&runtime_dir, std::fs::Permissions::from_mode(0o700))?;
        let bus = runtime_dir.join("bus");
        let _ = std::fs::remove_file(&bus);

        Ok(DesktopSession {
            user: TEST_USER.to_owned(),
            uid,
            gid,
            display: String::new(),
            bus,
            runtime_dir,
            made_runtime_dir,
            made_user,
            home,
            children: Vec::new(),
            _silent: None,
            _scratch: scratch,
            _lock: lock,
        })
    }

    fn start_xvfb(&mut self) -> Result<()> {
        // Xvfb needs /tmp/.X11-unix, sticky and open to all, as root makes it.
        let x11 = Path::new("/tmp/.X11-unix");
        if !x11.exists() {
            std::fs::create_dir_all(x11)?;
            std::fs::set_permissions(x11, std::fs::Permissions::from_mode(0o1777))?;
        }
        let n = (90..400)
            .find(|n| {
                !x11.join(format!("X{n}")).exists()
                    && !Path::new(&format!("/tmp/.X{n}-lock")).exists()
            })
            .context("no free X display number")?;
        self.display = format!(":{n}");
        let xvfb = self
            .command("Xvfb")
            .args([
                &self.display,
                "-screen",
                "0",
                "1024x640x24",
                "-nolisten",
                "tcp",
            ])
            .spawn()
            .context("starting Xvfb")?;
        self.children.push(("Xvfb", xvfb));
        wait_for(&x11.join(format!("X{n}")), "Xvfb's socket")
    }

    /// Starts `dbus-daemon ARGS` listening at the bus's place.
    fn start_bus(&mut self, args: &[&str]) -> Result<()> {
        let address = format!("--address=unix:path={}", self.bus.display());
        let dbus = self
            .command("dbus-daemon")
            .args(args)
            .args(["--nofork", "--nopidfile", &address])
            .spawn()
            .context("starting dbus-daemon")?;
        self.children.push(("dbus-daemon", dbus));
        wait_for(&self.bus, "the session bus")
    }

    /// Whether a name owns org.freedesktop.Notifications on the bus.
    fn has_notification_server(&self) -> bool {
        self.run(
            "dbus-send",
            &[
                "--session",
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
                "string:org.freedesktop.Notifications",
            ],
        )
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("boolean true"))
    }

    /// A command run as the test user in the session's environment.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &self.home)
            .env("USER", &self.user)
            .env("LOGNAME", &self.user)
            .env("XDG_RUNTIME_DIR", &self.runtime_dir)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("DISPLAY", &self.display)
            .env(
                "DBUS_SESSION_BUS_ADDRESS",
                format!("unix:path={}", self.bus.display()),
            )
            .current_dir(&self.home)
            .uid(self.uid)
            .gid(self.gid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    /// Runs `program args` as the test user and returns its output; fails
    /// when it fails.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<Output> {
        let output = self
            .command(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("running {program}"))?;
        if !output.status.success() {
            bail!(
                "{program} {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(output)
    }

    /// `dunstctl ARGS` as the test user; its standard output.
    pub fn dunstctl(&self, args: &[&str]) -> Result<String> {
        let output = self.run("dunstctl", args)?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Saves a screenshot of the whole X screen as `to` (PNG).
    pub fn screenshot(&self, to: &Path) -> Result<()> {
        let shot = self.home.join("screen.png");
        self.run(
            "import",
            &[
                "-display",
                &self.display,
                "-window",
                "root",
                &shot.to_string_lossy(),
            ],
        )?;
        std::fs::copy(&shot, to)?;
        Ok(())
    }
}

impl Drop for DesktopSession {
    fn drop(&mut self) {
        // A silent bus goes first: clients waiting on it get their answer.
        self._silent.take();
        for (_, child) in self.children.iter_mut().rev() {
            terminate(child);
        }
        let _ = std::fs::remove_file(&self.bus);
        if self.made_runtime_dir {
            let _ = std::fs::remove_dir_all(&self.runtime_dir);
        }
        if self.made_user {
            let _ = Command::new("userdel").arg(&self.user).status();
        }
    }
}

/// Makes the system user `name` unless it exists; returns whether it was made.
fn ensure_user(name: &str) -> Result<bool> {
    if nix::unistd::User::from_name(name)?.is_some() {
        return Ok(false);
    }
    let status = Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ])
        .status()
        .context("running useradd")?;
    if !status.success() {
        bail!("useradd {name} failed: {status}");
    }
    Ok(true)
}

/// Waits until `path` exists (at most 15 s).
fn wait_for(path: &Path, what: &str) -> Result<()> {
    poll(Duration::from_secs(15), Duration::from_millis(50), || {
        path.exists().then_some(())
    })
    .with_context(|| format!("{what} ({}) did not appear within 15 s", path.display()))
}
