//! Alerts with real peers: a popup on a test user's session bus shown by
//! dunst under Xvfb, and email through aiosmtpd (plain, STARTTLS with AUTH,
//! implicit TLS), through an outage and a restart, under the cooldown, and
//! a server that never answers while kills are timed.
//!
//! Every test copies the test program under a name of its own, so the
//! daemons of tests running side by side never cover each other's children.
//! The timing test has the machine to itself ([`require_root_alone`]).

use std::{
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::fs::PermissionsExt,
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Result;
use procespy_tests::{
    Config, Daemon, DaemonOptions, Limit, LogTo, Machine, Scratch, TestProg, keep_for_readme,
    kill_one, monotonic_ns, patience,
    peers::{
        desktop::{DesktopSession, TEST_USER, have_desktop_peers},
        free_port,
        smtp::{SilentServer, SmtpOptions, SmtpServer, TestCa, have_aiosmtpd, json_files},
    },
    poll, progress, require_root, require_root_alone, status_process, target_dir,
};
use serde_json::Value;

const SIGTERM: i32 = 15;

/// One 64 MiB `kill` limit on `name`, in eBPF mode.
fn config(name: &str) -> Config {
    Config::new("ebpf").limit(Limit::kill_past_64mib(name))
}

/// `[notify]` with `cooldown`.
fn notify_cooldown(cooldown: &str) -> String {
    format!("[notify]\ncooldown = \"{cooldown}\"\n")
}

/// A config that pops up on the test user's bus only, email off.
fn popup_config(name: &str, cooldown: &str) -> Config {
    config(name)
        .table(&notify_cooldown(cooldown))
        .table(&test_user_popups())
        .table("[notify.email]\nenabled = false\n")
}

/// `[notify.desktop]`: critical popups on the test user's bus only.
fn test_user_popups() -> String {
    format!("[notify.desktop]\nenabled = true\nusers = [\"{TEST_USER}\"]\nurgency = \"critical\"\n")
}

/// `[notify.email]`: to two addresses through 127.0.0.1:`port`, spooled in
/// `spool`, with `extra` keys.
fn email(port: u16, security: &str, spool: &Path, extra: &str) -> String {
    format!(
        "[notify.email]\nenabled = true\nserver = \"127.0.0.1\"\nport = {port}\n\
         security = \"{security}\"\nfrom = \"procespy@example.com\"\n\
         to = [\"ops@example.com\", \"oncall@example.com\"]\nspool_dir = \"{}\"\n{extra}",
        spool.display()
    )
}

/// A config with one 64 MiB `kill` limit on `name`, popups off, and email
/// through 127.0.0.1:`port`.
fn email_config(
    name: &str,
    cooldown: &str,
    port: u16,
    security: &str,
    spool: &Path,
    extra: &str,
) -> Config {
    config(name)
        .table(&notify_cooldown(cooldown))
        .no_popups()
        .table(&email(port, security, spool, extra))
}

/// A popup test's peers: the test user's desktop session, and a daemon
/// popping up the kills of the test program copied as `name` (at `exe`).
struct Popups {
    daemon: Daemon,
    session: DesktopSession,
    exe: PathBuf,
    _scratch: Scratch,
    _machine: Machine,
}

/// Starts a popup test with the session `session` makes; `None` when the
/// test cannot run here (no root, no desktop peers).
fn popups(session: fn() -> Result<DesktopSession>, name: &str, cooldown: &str) -> Option<Popups> {
    let machine = require_root().filter(|_| have_desktop_peers())?;
    let session = session().expect("the desktop session starts");
    let (scratch, exe) = Scratch::with_testprog(name);
    Some(Popups {
        daemon: start_daemon(&popup_config(name, cooldown), &[]),
        session,
        exe,
        _scratch: scratch,
        _machine: machine,
    })
}

fn start_daemon(config: &Config, env: &[(&str, &str)]) -> Daemon {
    Daemon::start(DaemonOptions {
        config: &config.to_string(),
        env,
        ..Default::default()
    })
    .expect("daemon starts")
}

/// A plain SMTP server, and a daemon that mails it about the kills of the
/// test program copied as `name` (at `exe`).
struct Mailed {
    daemon: Daemon,
    server: SmtpServer,
    spool: PathBuf,
    exe: PathBuf,
    _scratch: Scratch,
}

/// aiosmtpd on a free port, as `options` say, its messages in `scratch`.
fn smtp_server(scratch: &Scratch, options: &SmtpOptions) -> SmtpServer {
    SmtpServer::start(free_port(), &scratch.path().join("inbox"), options).expect("aiosmtpd starts")
}

fn mailed(name: &str, cooldown: &str) -> Mailed {
    let (scratch, exe) = Scratch::with_testprog(name);
    let server = smtp_server(&scratch, &SmtpOptions::default());
    let spool = scratch.path().join("outbox");
    let daemon = start_daemon(
        &email_config(name, cooldown, server.port, "none", &spool, ""),
        &[],
    );
    Mailed {
        daemon,
        server,
        spool,
        exe,
        _scratch: scratch,
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    poll(timeout, Duration::from_millis(50), || done().then_some(()))
        .unwrap_or_else(|| panic!("{what}: not within {:?}", patience(timeout)));
}

fn text<'a>(message: &'a Value, field: &str) -> &'a str {
    message[field].as_str().unwrap_or_default()
}

/// What a person reading the mail about `pid` (killed by rule `name`) sees.
fn assert_kill_mail(message: &Value, name: &str, pid: u32) {
    let subject = text(message, "subject");
    let expected = format!("[procespy@{}] stopped {name} (PID {pid}, RSS ", host_name());
    assert!(subject.starts_with(&expected), "subject: {subject:?}");
    assert!(
        subject.contains(" / limit 64.0 MiB)"),
        "subject: {subject:?}"
    );
    assert_eq!(text(message, "from"), "procespy@example.com");
    assert_eq!(text(message, "to"), "ops@example.com, oncall@example.com");
    assert_eq!(message["mail_from"], "procespy@example.com");
    assert_eq!(
        message["rcpt_tos"],
        serde_json::json!(["ops@example.com", "oncall@example.com"])
    );
    // With a chart (two readings or more before the kill), the text has an
    // HTML sibling carrying it.
    let content_type = text(message, "content_type");
    assert!(
        ["text/plain", "multipart/alternative"].contains(&content_type),
        "{content_type}"
    );
    assert!(!text(message, "date").is_empty());
    assert!(text(message, "message_id").starts_with("<procespy."));
    let body = text(message, "body");
    for needle in [
        format!("procespy stopped {name} on {}.", host_name()),
        format!("Process: {name} (PID {pid})"),
        "User:    root".to_owned(),
        "Limit:   64.0 MiB (67108864 bytes)".to_owned(),
        format!("Rule:    {name}"),
        "Action:  SIGTERM".to_owned(),
        "Result:  sent".to_owned(),
        "The 5 largest processes at ".to_owned(),
    ] {
        assert!(body.contains(&needle), "{needle:?} not in:\n{body}");
    }
    let time = body
        .lines()
        .find_map(|l| l.strip_prefix("Time:    "))
        .expect("a Time line");
    assert!(
        time.len() == "2025-11-25 10:02:13 +0000".len() && time.starts_with("20"),
        "{time:?}"
    );
    let table = body
        .split("The 5 largest processes at ")
        .nth(1)
        .expect("the table");
    let rows = table
        .lines()
        .skip(2)
        .take_while(|l| !l.trim().is_empty())
        .count();
    assert_eq!(rows, 5, "five processes in:\n{table}");
}

/// A field of a notification in dunst's history.
fn popup_field(notification: &Value, key: &str) -> String {
    notification[key]["data"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The popups procespy showed about `pids` (in that order), from dunst's
/// history, which lists only closed notifications: they are closed first.
fn popups_of(session: &DesktopSession, pids: &[u32]) -> Vec<Value> {
    let mut found = Vec::new();
    wait_until(
        "the popups are in dunst's history",
        Duration::from_secs(15),
        || {
            let _ = session.dunstctl(&["close-all"]);
            let history: Value = session
                .dunstctl(&["history"])
                .ok()
                .and_then(|out| serde_json::from_str(&out).ok())
                .unwrap_or_default();
            let ours: Vec<&Value> = history["data"][0]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|n| popup_field(n, "appname") == "procespy")
                .collect();
            found = pids
                .iter()
                .filter_map(|pid| {
                    let about = format!("PID {pid},");
                    ours.iter()
                        .find(|n| popup_field(n, "body").contains(&about))
                        .map(|&n| n.clone())
                })
                .collect();
            found.len() == pids.len()
        },
    );
    found
}

#[test]
fn popup_reaches_the_users_session_bus_and_dunst_shows_it() {
    let name = "tp-popup";
    let Some(popups) = popups(DesktopSession::start, name, "60s") else {
        return;
    };
    let pid = kill_one(&popups.daemon, &popups.exe).expect("killed");

    wait_until("dunst shows the popup", Duration::from_secs(15), || {
        popups
            .session
            .dunstctl(&["count", "displayed"])
            .is_ok_and(|n| n.trim().parse::<u32>().unwrap_or(0) >= 1)
    });
    // For people to look at; not asserted.
    let shot = target_dir().with_file_name("procespy-alerts-popup.png");
    match popups.session.screenshot(&shot) {
        Ok(()) => eprintln!("screenshot of the popup: {}", shot.display()),
        Err(err) => eprintln!("no screenshot: {err:#}"),
    }
    let notification = popups_of(&popups.session, &[pid]).remove(0);
    eprintln!("in dunst's history: {notification}");
    let field = |key: &str| popup_field(&notification, key);
    let (summary, body) = (field("summary"), field("body"));
    assert_eq!(summary, format!("procespy stopped {name}"));
    assert!(
        body.starts_with(&format!("PID {pid}, user root\nRSS ")),
        "{body:?}"
    );
    assert!(
        body.contains(&format!(", limit 64.0 MiB (rule {name})")),
        "{body:?}"
    );
    assert!(body.contains("\nSIGTERM: sent"), "{body:?}");
    // dunst 1.9 has no urgency in its history; newer ones say it.
    if notification.get("urgency").is_some() {
        assert_eq!(field("urgency"), "CRITICAL");
    }
    let log = popups.daemon.log_text();
    assert!(!log.contains("cannot show popups"), "{log}");
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|line| line.contains(needle)).count()
}

#[test]
fn a_bus_without_a_notification_server_is_logged_once_and_kills_go_on() {
    let name = "tp-popup-none";
    let Some(popups) = popups(DesktopSession::without_notification_server, name, "0s") else {
        return;
    };
    for _ in 0..3 {
        kill_one(&popups.daemon, &popups.exe).expect("killed");
    }
    let warning = format!("cannot show popups to {TEST_USER}");
    wait_until("the popups failed", Duration::from_secs(10), || {
        let log = popups.daemon.log_text();
        count(&log, &warning) == 1 && count(&log, "popup not shown") >= 2
    });
    let log = popups.daemon.log_text();
    assert_eq!(count(&log, &warning), 1, "logged once:\n{log}");
    let line = log.lines().find(|l| l.contains(&warning)).unwrap();
    assert!(line.contains("ServiceUnknown"), "{line}");
}

#[test]
fn a_session_bus_that_never_answers_slows_nothing() {
    let name = "tp-popup-hang";
    let Some(popups) = popups(DesktopSession::with_silent_bus, name, "0s") else {
        return;
    };
    let start = Instant::now();
    for _ in 0..3 {
        kill_one(&popups.daemon, &popups.exe).expect("killed");
        // The loop answers at once while popup children wait on the bus.
        let asked = Instant::now();
        popups.daemon.status().expect("status");
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "status took {:?}",
            asked.elapsed()
        );
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "three kills took {:?} with a hanging bus",
        start.elapsed()
    );
    let warning = format!("cannot show popups to {TEST_USER}");
    wait_until(
        "the popup children time out",
        Duration::from_secs(15),
        || count(&popups.daemon.log_text(), &warning) == 1,
    );
    let log = popups.daemon.log_text();
    let line = log.lines().find(|l| l.contains(&warning)).unwrap();
    assert!(line.contains("no answer within"), "{line}");
    // The children were killed, not left behind.
    wait_until("no popup child is left", Duration::from_secs(10), || {
        !std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .any(|entry| {
                std::fs::read(entry.path().join("cmdline")).is_ok_and(|cmdline| {
                    cmdline.windows(12).any(|w| w == b"notify-popup")
                        && String::from_utf8_lossy(&cmdline).contains(name)
                })
            })
    });
}

#[test]
fn one_email_with_subject_headers_and_body_after_a_kill() {
    let Some(_machine) = require_root().filter(|_| have_aiosmtpd()) else {
        return;
    };
    let name = "tp-mail-plain";
    let mail = mailed(name, "60s");
    let pid = kill_one(&mail.daemon, &mail.exe).expect("killed");
    let messages = mail
        .server
        .wait_messages(1, Duration::from_secs(15))
        .expect("the email arrives");
    assert_kill_mail(&messages[0], name, pid);
    assert_eq!(messages[0]["tls"], false);
    wait_until("the spool empties", Duration::from_secs(5), || {
        json_files(&mail.spool).is_empty()
    });
    mail.daemon
        .wait_status(Duration::from_secs(5), |s| s["alerts_queued"] == 0)
        .expect("nothing queued");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(mail.server.messages().len(), 1, "exactly one message");
}

fn email_over_tls(security: &'static str, name: &str) {
    let Some(_machine) = require_root().filter(|_| have_aiosmtpd()) else {
        return;
    };
    let scratch = Scratch::new(name);
    let ca = TestCa::make(&scratch.path().join("ca")).expect("a test CA");
    let server = smtp_server(
        &scratch,
        &SmtpOptions {
            security: Some(security),
            cert: Some((ca.cert.clone(), ca.key.clone())),
            auth: Some("procespy:s3cret word".into()),
            ..Default::default()
        },
    );
    let password = scratch.path().join("smtp-password");
    std::fs::write(&password, "s3cret word\n").unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    let spool = scratch.path().join("outbox");
    let extra = format!(
        "username = \"procespy\"\npassword_file = \"{}\"\n",
        password.display()
    );
    // The client trusts the test CA through the system's variable for it.
    let ca_file = ca.ca.to_string_lossy().into_owned();
    let daemon = start_daemon(
        &email_config(name, "60s", server.port, security, &spool, &extra),
        &[("SSL_CERT_FILE", &ca_file)],
    );
    let pid = kill_one(&daemon, &scratch.testprog_named(name)).expect("killed");
    let messages = server
        .wait_messages(1, Duration::from_secs(20))
        .unwrap_or_else(|err| panic!("{err:#}\nlog:\n{}", daemon.log_text()));
    assert_kill_mail(&messages[0], name, pid);
    assert_eq!(messages[0]["tls"], true);
    assert_eq!(messages[0]["login"], "procespy");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(server.messages().len(), 1);
}

#[test]
fn email_over_starttls_with_auth() {
    email_over_tls("starttls", "tp-mail-stls");
}

#[test]
fn email_over_implicit_tls_with_auth() {
    email_over_tls("tls", "tp-mail-tls");
}

#[test]
fn smtp_outage_and_restart_lose_nothing_and_send_nothing_twice() {
    let Some(_machine) = require_root().filter(|_| have_aiosmtpd()) else {
        return;
    };
    let scratch = Scratch::new("mail-outage");
    let port = free_port();
    let spool = scratch.path().join("outbox");
    let name = "tp-mail-outage";
    let config = email_config(name, "60s", port, "none", &spool, "");
    let exe = scratch.testprog_named(name);

    // The server is down: three kills.
    let daemon = start_daemon(&config, &[]);
    let pids: Vec<u32> = (0..3)
        .map(|_| kill_one(&daemon, &exe).expect("killed"))
        .collect();
    // One email tried and waiting in the spool, two kills held by the cooldown.
    wait_until(
        "one email in the spool, three alerts queued",
        Duration::from_secs(5),
        || json_files(&spool).len() == 1,
    );
    let status = daemon
        .wait_status(Duration::from_secs(5), |s| s["alerts_queued"] == 3)
        .expect("three alerts queued");
    assert_eq!(status["alerts_queued"], 3);
    wait_until("a failed attempt", Duration::from_secs(10), || {
        daemon
            .log_text()
            .contains("cannot send email through 127.0.0.1")
    });
    // Restart: what the cooldown held goes to the spool on the way out.
    let exit = daemon.stop().expect("the daemon stops");
    assert!(exit.success(), "{exit:?}");
    assert_eq!(json_files(&spool).len(), 2);

    // The server is back; the new daemon sends what it finds.
    let server = SmtpServer::start(port, &scratch.path().join("inbox"), &SmtpOptions::default())
        .expect("aiosmtpd starts");
    let daemon = start_daemon(&config, &[]);
    let messages = server
        .wait_messages(2, Duration::from_secs(20))
        .unwrap_or_else(|err| panic!("{err:#}\nlog:\n{}", daemon.log_text()));
    wait_until("the spool empties", Duration::from_secs(5), || {
        json_files(&spool).is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    let messages_now = server.messages();
    assert_eq!(messages_now.len(), 2, "{messages_now:#?}");
    assert_kill_mail(&messages[0], name, pids[0]);
    let summary = text(&messages[1], "subject");
    assert!(
        summary.contains(&format!("PID {}", pids[2]))
            && summary.contains(&format!(", and 1 more kill of {name} since ")),
        "{summary:?}"
    );
    assert!(
        text(&messages[1], "body").contains(&format!("PID {}", pids[1])),
        "{}",
        text(&messages[1], "body")
    );
    assert_ne!(messages[0]["message_id"], messages[1]["message_id"]);
    drop(daemon);
}

#[test]
fn twenty_kills_in_a_cooldown_make_one_email_now_and_one_summary_later() {
    let Some(_machine) = require_root().filter(|_| have_aiosmtpd()) else {
        return;
    };
    let name = "tp-mail-cool";
    let cooldown = Duration::from_secs(8);
    let mail = mailed(name, "8s");
    let mut progs: Vec<TestProg> = (0..20)
        .map(|_| TestProg::start_as(&mail.exe, &[]).expect("test program starts"))
        .collect();
    for prog in &progs {
        mail.daemon.wait_covered(prog.pid()).expect("covered");
    }
    let start = Instant::now();
    for prog in &mut progs {
        prog.send("grow 96").expect("grow");
    }
    let mut pids = Vec::new();
    for prog in &mut progs {
        assert_eq!(
            prog.wait_signal(Duration::from_secs(10)).expect("dies"),
            Some(SIGTERM)
        );
        pids.push(prog.pid());
    }
    let first = mail
        .server
        .wait_messages(1, Duration::from_secs(5))
        .expect("the first email");
    assert!(
        start.elapsed() < cooldown - Duration::from_secs(2),
        "the kills took too long to judge the cooldown: {:?}",
        start.elapsed()
    );
    assert_eq!(mail.server.messages().len(), 1, "one email now");
    let messages = mail
        .server
        .wait_messages(2, cooldown + Duration::from_secs(10))
        .expect("the summary");
    let first_pid = pids
        .iter()
        .copied()
        .find(|pid| text(&first[0], "subject").contains(&format!("(PID {pid},")))
        .expect("the first email names one of the processes");
    assert_kill_mail(&messages[0], name, first_pid);
    let subject = text(&messages[1], "subject");
    assert!(
        subject.contains(&format!(", and 18 more kills of {name} since ")),
        "{subject:?}"
    );
    let body = text(&messages[1], "body");
    for pid in &pids {
        let named = text(&messages[0], "subject").contains(&format!("(PID {pid},"))
            || subject.contains(&format!("(PID {pid},"))
            || body.contains(&format!("PID {pid} "));
        assert!(named, "PID {pid} is in neither message:\n{subject}\n{body}");
    }
    // The window the summary opened closes empty: nothing more comes.
    std::thread::sleep(cooldown + Duration::from_secs(2));
    assert_eq!(mail.server.messages().len(), 2);
}

/// Grows a fresh test program as fast as it can (4 GiB/s) past its 64 MiB
/// limit; returns the times from the MiB that crossed the limit to the
/// arrival of SIGTERM (the program reports it) and to its death.
fn crossing_to_kill(daemon: &Daemon, exe: &Path) -> (Duration, Duration) {
    const MIB: u64 = 1 << 20;
    let mut prog = TestProg::start_as(exe, &["--report-term"]).expect("test program starts");
    let pid = prog.pid();
    daemon.wait_covered(pid).expect("covered");
    let base: u64 = prog.command("rss").expect("rss").parse().expect("rss");
    // SAFETY: pidfd_open of our own child.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    assert!(fd >= 0, "pidfd_open");
    // SAFETY: a fresh descriptor we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let watcher = std::thread::spawn(move || {
        let mut poll = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut poll, 1, 10_000) };
        assert_eq!(ready, 1, "the test program did not die within 10 s");
        monotonic_ns()
    });
    prog.send("rate 4096 160").expect("start growing");
    let death = watcher.join().expect("watcher");
    assert_eq!(
        prog.wait_exit(Duration::from_secs(5))
            .map(|s| s.code())
            .expect("reaped"),
        Some(128 + SIGTERM),
        "ended by SIGTERM's handler"
    );
    let lines = prog.rest().expect("the output ends");
    let term = lines
        .iter()
        .find_map(|line| line.strip_prefix("term ")?.parse::<u64>().ok())
        .expect("the program reported SIGTERM");
    // The MiB whose touching crossed 64 MiB: the first with base + bytes > limit.
    let progress = progress(&lines);
    let crossing = progress
        .iter()
        .find(|(bytes, _)| base + bytes > 64 * MIB)
        .or(progress.last())
        .map(|&(_, ns)| ns)
        .expect("progress lines");
    (
        Duration::from_nanos(term.saturating_sub(crossing)),
        Duration::from_nanos(death.saturating_sub(crossing)),
    )
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

#[test]
fn a_smtp_server_that_never_answers_does_not_delay_kills() {
    // Alone on the machine: no other test's daemons, servers or growers.
    let Some(_alone) = require_root_alone() else {
        return;
    };
    let scratch = Scratch::new("mail-hang");
    let silent = SilentServer::start().expect("a silent server");
    let quiet_name = "tp-lat-quiet";
    let hang_name = "tp-lat-hang";
    let quiet = start_daemon(
        &config(quiet_name)
            .no_popups()
            .table("[notify.email]\nenabled = false\n"),
        &[],
    );
    let spool = scratch.path().join("outbox");
    // Every kill is alerted (no cooldown), and every email waits for a
    // server that accepted the connection and says nothing.
    let hang = start_daemon(
        &config(hang_name)
            .table(&notify_cooldown("0s"))
            .table("[notify.desktop]\nenabled = true\n")
            .table(&email(silent.port, "none", &spool, "")),
        &[],
    );
    let quiet_exe = scratch.testprog_named(quiet_name);
    let hang_exe = scratch.testprog_named(hang_name);
    let runs = 15;
    let (mut without, mut with) = (Vec::new(), Vec::new());
    let (mut death_without, mut death_with) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (term, death) = crossing_to_kill(&quiet, &quiet_exe);
        without.push(term);
        death_without.push(death);
        let (term, death) = crossing_to_kill(&hang, &hang_exe);
        with.push(term);
        death_with.push(death);
    }
    // The alerts really were stuck on the silent server.
    let status = hang.status().expect("status");
    assert!(
        status["alerts_queued"].as_u64().unwrap_or(0) >= runs as u64 - 1,
        "{status:#}"
    );
    // The kill is SIGTERM's arrival: death adds the victim's own teardown,
    // whose noise on a shared machine is larger than what is measured here.
    let (m_without, m_with) = (median(without.clone()), median(with.clone()));
    eprintln!(
        "crossing to SIGTERM, median of {runs}: without alerts {m_without:?}, \
         with a silent SMTP server {m_with:?}\n  without: {without:?}\n  with:    {with:?}\n\
         crossing to death, medians: without {:?}, with {:?}",
        median(death_without),
        median(death_with)
    );
    let difference = m_with.abs_diff(m_without);
    assert!(
        difference < Duration::from_millis(1),
        "a silent SMTP server delayed kills by {difference:?} (median)"
    );
}

/// Names a process may give itself, each with what a terminal, a log
/// reader, a mail client or a notification server would act on, and a
/// part of it that must show, escaped or not, beside its PID.
const HOSTILE_NAMES: &[(&[u8], &str)] = &[
    (b"\r\nBcc: x@y", "Bcc: x@y"),
    (b"\x1b]0;T\x07", "]0;T"),
    (b"\x1b[31mR", "[31mR"),
    (b"<b>x</b>", "<b>x</b>"),
    (b"\x9b31m\xff\xfeX", "31m"),
];

/// Fails unless `text`, which `what` is, has no control character but line
/// feeds, and has a line with both `pid` and `marker` (the name was not
/// dropped, nor split over lines).
fn assert_shown_safely(what: &str, text: &str, pid: u32, marker: &str) {
    let raw: Vec<char> = text
        .chars()
        .filter(|&c| c.is_control() && c != '\n')
        .collect();
    assert!(raw.is_empty(), "{what} carries {raw:?} raw:\n{text:?}");
    assert!(
        text.lines()
            .any(|line| line.contains(&pid.to_string()) && line.contains(marker)),
        "{what} has no line with {pid} and {marker:?}:\n{text}"
    );
}

/// `procespy status`, as text: what root sees in a terminal.
fn status_text(daemon: &Daemon) -> String {
    let output = daemon.client("status").output().expect("status runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).expect("status prints UTF-8")
}

/// Test programs named with bytes a terminal, a mail client or a
/// notification server act on (CR LF and a header, OSC and CSI escapes,
/// markup, bytes that are not UTF-8 with a C1 CSI among them), each over
/// its limit and stopped: `procespy status`, the text log, the email (its
/// subject and body, as the SMTP server received it) and the popup (its
/// summary and body, as dunst shows it) carry none of those characters
/// raw, and the popup body (markup) no unescaped tag of the rule's.
#[test]
fn hostile_process_names_reach_no_output_raw() {
    let Some(_machine) = require_root().filter(|_| have_desktop_peers() && have_aiosmtpd()) else {
        return;
    };
    let name = "tp-hostile";
    let session = DesktopSession::start().expect("the desktop session starts");
    let (scratch, exe) = Scratch::with_testprog(name);
    let server = smtp_server(&scratch, &SmtpOptions::default());
    // A pattern in markup: the popup body names the rule.
    let rule = "/tp-hostile$|<b>rule</b>";
    let config = Config::new("ebpf")
        .limit(Limit::pattern(rule, "64MiB").action("kill"))
        .table(&notify_cooldown("0s"))
        .table(&test_user_popups())
        .table(&email(
            server.port,
            "none",
            &scratch.path().join("outbox"),
            "",
        ));
    let daemon = Daemon::start(DaemonOptions {
        config: &config.to_string(),
        log: LogTo::Text,
        ..Default::default()
    })
    .expect("daemon starts");
    let mut progs: Vec<(TestProg, String, &str)> = HOSTILE_NAMES
        .iter()
        .map(|&(bytes, marker)| {
            let mut prog = TestProg::start_as(&exe, &[]).expect("test program starts");
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            prog.command(&format!("rename-hex {hex}")).expect("renamed");
            (prog, String::from_utf8_lossy(bytes).into_owned(), marker)
        })
        .collect();
    daemon
        .wait_status(Duration::from_secs(10), |s| {
            progs.iter().all(|(prog, lossy, _)| {
                status_process(s, prog.pid()).is_some_and(|p| p["name"] == lossy.as_str())
            })
        })
        .expect("covered under their new names");
    let watched = status_text(&daemon);
    for (prog, _, marker) in &progs {
        assert_shown_safely("status (watched)", &watched, prog.pid(), marker);
    }
    for (prog, _, _) in &mut progs {
        assert_eq!(prog.ended_by("grow 96").expect("dies"), Some(SIGTERM));
    }
    let pids: Vec<u32> = progs.iter().map(|(prog, _, _)| prog.pid()).collect();
    daemon
        .wait_status(Duration::from_secs(5), |s| {
            s["actions"]
                .as_array()
                .is_some_and(|a| a.len() >= pids.len())
        })
        .expect("the actions show");
    let acted = status_text(&daemon);
    let messages = server
        .wait_messages(pids.len(), Duration::from_secs(20))
        .expect("the emails arrive");
    let popups = popups_of(&session, &pids);
    let log = daemon.log_text();
    for ((prog, _, marker), popup) in progs.iter().zip(&popups) {
        let pid = prog.pid();
        assert_shown_safely("status (last actions)", &acted, pid, marker);
        assert_shown_safely("the text log", &log, pid, marker);
        let mail = messages
            .iter()
            .find(|m| text(m, "subject").contains(&format!("(PID {pid},")))
            .unwrap_or_else(|| panic!("no email about {pid}: {messages:#?}"));
        assert_shown_safely("the email subject", text(mail, "subject"), pid, marker);
        // The body's lines end in CR LF, as SMTP has them.
        let body = text(mail, "body").replace("\r\n", "\n");
        assert_shown_safely("the email body", &body, pid, marker);
        assert_eq!(
            mail["rcpt_tos"],
            serde_json::json!(["ops@example.com", "oncall@example.com"]),
            "{mail:#}"
        );
        let (summary, body) = (popup_field(popup, "summary"), popup_field(popup, "body"));
        assert_shown_safely(
            "the popup summary",
            &format!("{summary} {pid}"),
            pid,
            marker,
        );
        assert_shown_safely("the popup body", &body, pid, "PID");
        assert!(
            !body.contains("<b>") && body.contains("&lt;b&gt;rule&lt;/b&gt;"),
            "markup in the popup body: {body:?}"
        );
    }
    assert!(
        !log.lines()
            .any(|line| line.trim_start().starts_with("Bcc:")),
        "a forged log line:\n{log}"
    );
}

/// The server refuses for good (554) every email about one limit's kills:
/// that message backs off alone. Emails about another limit's kills, made
/// while it waits for its third attempt and after it was set aside, go out
/// at once.
#[test]
fn a_refused_email_delays_no_other() {
    let Some(_machine) = require_root().filter(|_| have_aiosmtpd()) else {
        return;
    };
    let (refused, other) = ("tp-mail-refused", "tp-mail-other");
    let scratch = Scratch::new("mail-refused");
    let server = smtp_server(
        &scratch,
        &SmtpOptions {
            refuse: Some(refused.to_owned()),
            ..Default::default()
        },
    );
    let spool = scratch.path().join("outbox");
    let daemon = start_daemon(
        &Config::new("ebpf")
            .limit(Limit::kill_past_64mib(refused))
            .limit(Limit::kill_past_64mib(other))
            .table(&notify_cooldown("0s"))
            .no_popups()
            .table(&email(server.port, "none", &spool, "")),
        &[],
    );
    kill_one(&daemon, &scratch.testprog_named(refused)).expect("killed");
    let other_exe = scratch.testprog_named(other);
    let mut delays = Vec::new();
    for refusals in [2, 3, 3] {
        wait_until("the server refuses", Duration::from_secs(15), || {
            server.refusals() >= refusals
        });
        let pid = kill_one(&daemon, &other_exe).expect("killed");
        let killed = Instant::now();
        let messages = server
            .wait_messages(delays.len() + 1, Duration::from_secs(20))
            .expect("the other email arrives");
        delays.push(killed.elapsed());
        assert!(
            text(messages.last().expect("one"), "subject").contains(&format!("(PID {pid},")),
            "{messages:#?}"
        );
    }
    eprintln!("the other emails arrived {delays:?} after their kills");
    for delay in &delays {
        assert!(
            *delay < patience(Duration::from_millis(1500)),
            "an email waited {delay:?} behind a refused one: {delays:?}"
        );
    }
    assert_eq!(server.refusals(), 3, "refused three times, then set aside");
    assert!(
        server
            .messages()
            .iter()
            .all(|m| !text(m, "subject").contains(refused)),
        "the refused email was accepted"
    );
    wait_until("it is set aside", Duration::from_secs(5), || {
        !json_files(&spool.join("rejected")).is_empty()
    });
}

/// The chart image a message carries: its PNG decoded, checked to be of its
/// stated size with ink on it.
fn assert_chart(message: &Value) {
    let images = message["images"].as_array().cloned().unwrap_or_default();
    assert_eq!(images.len(), 1, "one image in {message:#}");
    let image = &images[0];
    assert_eq!(text(image, "content_type"), "image/png");
    assert_eq!(text(image, "disposition"), "inline");
    let cid = text(image, "content_id")
        .trim_matches(|c| c == '<' || c == '>')
        .to_owned();
    assert!(!cid.is_empty());
    let html = text(message, "html");
    assert!(html.contains(&format!("src=\"cid:{cid}\"")), "{html}");
    let bytes = std::fs::read(text(image, "path")).expect("the image was saved");
    keep_for_readme("procespy-email-chart.png", &bytes);
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("a PNG");
    let (width, height) = (reader.info().width, reader.info().height);
    let mut pixels = vec![0; reader.output_buffer_size().expect("a size")];
    let frame = reader.next_frame(&mut pixels).expect("it decodes");
    assert_eq!((frame.width, frame.height), (width, height));
    assert!(
        html.contains(&format!("width=\"{width}\" height=\"{height}\"")),
        "{html}"
    );
    let channels = frame.color_type.samples();
    let ink = pixels[..frame.buffer_size()]
        .chunks(channels)
        .filter(|px| px.iter().take(3).any(|&v| v != 255))
        .count();
    assert!(ink > 1000, "{ink} pixels not white of {width}x{height}");
}

/// The value of the text part's `label` line (`Growth:  …`).
fn line_of<'a>(body: &'a str, label: &str) -> &'a str {
    let prefix = format!("{:<8} ", format!("{label}:"));
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{body}"))
}

#[test]
fn a_kill_email_tells_the_story_with_a_chart_and_the_popup_has_the_growth() {
    let Some(_machine) = require_root().filter(|_| have_aiosmtpd() && have_desktop_peers()) else {
        return;
    };
    let name = "tp-story";
    let session = DesktopSession::start().expect("the desktop session starts");
    let (scratch, exe) = Scratch::with_testprog(name);
    let server = smtp_server(&scratch, &SmtpOptions::default());
    let spool = scratch.path().join("outbox");
    let config = config(name)
        .table(&notify_cooldown("60s"))
        .table(&test_user_popups())
        .table(&email(server.port, "none", &spool, ""));
    let daemon = start_daemon(&config, &[]);
    // 8 MiB a second: several readings a second apart before the limit.
    let mut prog = TestProg::start_as(&exe, &["--grow-rate", "8", "--grow-to", "200"])
        .expect("the test program starts");
    let pid = prog.pid();
    daemon.wait_covered(pid).expect("covered");
    let signal = prog.wait_signal(Duration::from_secs(60)).expect("it ends");
    assert_eq!(signal, Some(SIGTERM));

    let message = server
        .wait_messages(1, Duration::from_secs(20))
        .expect("the email arrives")
        .remove(0);
    assert_kill_mail(&message, name, pid);
    assert_eq!(text(&message, "content_type"), "multipart/alternative");
    assert_chart(&message);
    let body = text(&message, "body");
    eprintln!("the text part:\n{body}");
    let growth = line_of(body, "Growth");
    assert!(
        growth.starts_with("grew from ")
            && growth.contains(" MiB in ")
            && growth.ends_with(" MiB/s)"),
        "{growth}"
    );
    for label in ["Crossed", "Signal", "Exited"] {
        let value = line_of(body, label);
        assert!(value.len() >= "10:02:13.412".len(), "{label}: {value}");
    }
    assert!(line_of(body, "Signal").starts_with("SIGTERM at "), "{body}");
    assert!(
        line_of(body, "Exited").contains(" s after the signal)"),
        "{body}"
    );
    let command = line_of(body, "Command");
    assert!(
        command.starts_with(&exe.display().to_string()) && command.contains("--grow-rate 8"),
        "{command}"
    );
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    if cgroup.lines().any(|l| l.starts_with("0::")) {
        let unit = line_of(body, "Unit");
        assert!(unit.contains("cgroup /"), "{unit}");
    }

    let popup = popups_of(&session, &[pid]).remove(0);
    let popup_body = popup_field(&popup, "body");
    assert!(
        popup_body.lines().any(|l| l == growth),
        "the growth line {growth:?} in the popup {popup_body:?}"
    );
}

#[test]
fn a_process_past_warn_at_gets_one_warning_with_an_eta_and_is_killed_only_at_the_limit() {
    let Some(_machine) = require_root().filter(|_| have_aiosmtpd()) else {
        return;
    };
    let name = "tp-warn";
    let (scratch, exe) = Scratch::with_testprog(name);
    let server = smtp_server(&scratch, &SmtpOptions::default());
    let spool = scratch.path().join("outbox");
    let config = Config::new("ebpf")
        .limit(Limit::kill_past_64mib(name).warn_at("80%"))
        .table(&notify_cooldown("60s"))
        .no_popups()
        .table(&email(server.port, "none", &spool, ""));
    let daemon = start_daemon(&config, &[]);
    // 4 MiB a second: the warning (at 51.2 MiB) comes seconds before the limit.
    let mut prog = TestProg::start_as(&exe, &["--grow-rate", "4", "--grow-to", "200"])
        .expect("the test program starts");
    let pid = prog.pid();
    daemon.wait_covered(pid).expect("covered");
    let signal = prog.wait_signal(Duration::from_secs(90)).expect("it ends");
    assert_eq!(signal, Some(SIGTERM));
    server
        .wait_messages(2, Duration::from_secs(20))
        .expect("a warning, then the kill");
    // Exactly one warning: a second would have come by the time the kill's did.
    let messages = server.messages();
    let warnings: Vec<&Value> = messages
        .iter()
        .filter(|m| text(m, "subject").contains(" of its memory limit"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning: {messages:#?}");
    let warning = text(warnings[0], "body");
    eprintln!("the warning:\n{warning}");
    let outlook = line_of(warning, "Outlook");
    let expected = format!("at this rate {name} reaches 64 MiB in about ");
    assert!(
        outlook.starts_with(&expected) && outlook.ends_with(" s"),
        "{outlook}"
    );
    assert!(
        line_of(warning, "Result").starts_with("over the warning threshold"),
        "{warning}"
    );
    let warned_rss: u64 = rss_bytes(warning);
    assert!(
        warned_rss > 64 * 1024 * 1024 * 8 / 10 && warned_rss <= 64 << 20,
        "warned at {warned_rss} bytes"
    );

    let kill = messages
        .iter()
        .find(|m| text(m, "subject").contains(&format!("stopped {name} (PID {pid},")))
        .expect("the kill's email");
    let killed_rss = rss_bytes(text(kill, "body"));
    assert!(
        killed_rss >= 64 << 20,
        "killed at {killed_rss} bytes, under the limit"
    );
}

/// The bytes of the `RSS:` line of an email's text (`RSS:     1.6 GiB (1677721600 bytes)`).
fn rss_bytes(body: &str) -> u64 {
    let line = line_of(body, "RSS");
    line.split('(')
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no bytes in {line:?}"))
}
