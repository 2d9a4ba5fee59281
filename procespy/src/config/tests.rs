//! Tests of the whole module: bad configs with their positions, good configs
//! with their values, and the file checks of `Config::load`.

use std::{
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use super::*;

const GIB: u64 = 1 << 30;
const EXAMPLE: &str = include_str!("../../../config/procespy.toml");

fn fake_users(name: &str) -> Option<u32> {
    match name {
        "root" => Some(0),
        "alice" => Some(1000),
        "bob" => Some(1001),
        _ => None,
    }
}

fn env() -> Env {
    Env {
        mem_total: 16 * GIB,
        lookup_user: fake_users,
    }
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("test.toml"), &env())
}

/// The diagnostics of an invalid config, as `LINE:COL: message`.
fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(err) => {
            for d in &err.diagnostics {
                assert_eq!(d.path, Path::new("test.toml"));
            }
            err.diagnostics
                .iter()
                .map(|d| format!("{}:{}: {}", d.line, d.col, d.message))
                .collect()
        }
    }
}

const LIMIT: &str = "[[limit]]\nname = \"a\"\n";

#[test]
fn bad_configs_report_position_and_reason() {
    let limit = |rest: &str| format!("{LIMIT}{rest}");
    let cases: Vec<(String, &str, &str)> = vec![
        // sizes
        (limit("max_memory = \"1.5GB2\"\n"), "3:14", "limit[0].max_memory: size \"1.5GB2\" has an unknown unit \"GB2\""),
        (limit("max_memory = \"2gib\"\n"), "3:14", "unknown unit \"gib\""),
        (limit("max_memory = 0\n"), "3:14", "limit[0].max_memory: size 0 is zero"),
        (limit("max_memory = \"0MiB\"\n"), "3:14", "is zero"),
        (limit("max_memory = \"150%\"\n"), "3:14", "more than 100%"),
        (limit("max_memory = -1\n"), "3:14", "size -1 is negative"),
        (limit("max_memory = \"-1GiB\"\n"), "3:14", "negative"),
        (limit("max_memory = \"1024\"\n"), "3:14", "has no unit"),
        (limit("max_memory = \"99999999TiB\"\n"), "3:14", "too large"),
        (limit("max_memory = 1.5\n"), "3:14", "invalid type: floating point `1.5`, expected a size"),
        (limit("max_memory = true\n"), "3:14", "limit[0].max_memory: invalid type: boolean `true`"),
        (limit("max_memory = 18446744073709551615\n"), "3:14", "limit[0].max_memory"),
        // unknown keys
        ("bogus = 1\n".into(), "1:1", "unknown key `bogus`, expected one of `monitor`, `enforce`, `limit`"),
        ("[monitr]\nmode = \"auto\"\n".into(), "1:2", "unknown key `monitr`"),
        ("[monitor]\nmode = \"auto\"\nscan = \"5s\"\n".into(), "3:1", "monitor: unknown key `scan`, expected `mode` or `scan_interval`"),
        (limit("max_memory = \"1GiB\"\nkil = true\n"), "4:1", "limit[0]: unknown key `kil`, expected one of `name`, `pattern`, `user`, `max_memory`, `scope`, `action`, `warn_at`, `memory`, `kill`"),
        ("[notify.email]\nhost = \"x\"\n".into(), "2:1", "notify.email: unknown key `host`"),
        (limit("max_memory = \"1GiB\"\nscope = \"total\"\nwarn_at = \"80%\"\n"), "5:11", "limit[0].warn_at: only for scope = \"process\""),
        // ... a misspelt key is not also reported as missing
        ("[[limit]]\nnme = \"a\"\nmax_memory = 1\n".into(), "2:1", "limit[0]: unknown key `nme`"),
        ("[[limit]]\nname = \"a\"\nmax_memroy = 1\n".into(), "3:1", "limit[0]: unknown key `max_memroy`"),
        ("[notify.email]\nenabled = true\nserver = \"s\"\nform = \"a@b\"\nto = [\"c@d\"]\n".into(), "4:1", "unknown key `form`"),
        ("[notify]\ndesktop.enable = true\n".into(), "2:9", "notify.desktop: unknown key `enable`"),
        // wrong types
        ("[enforce]\ndry_run = \"yes\"\n".into(), "2:11", "enforce.dry_run: invalid type: string \"yes\", expected a boolean"),
        ("[enforce]\ngrace = 3\n".into(), "2:9", "enforce.grace: invalid type: integer `3`, expected a duration string"),
        ("[enforce]\nprotect = \"sshd\"\n".into(), "2:11", "enforce.protect: invalid type: string \"sshd\", expected an array"),
        ("[enforce]\nprotect = [\"sshd\", 1]\n".into(), "2:20", "enforce.protect: invalid type: integer `1`"),
        ("monitor = 5\n".into(), "1:11", "monitor: invalid type: integer `5`, expected a table"),
        ("[limit]\nname = \"a\"\n".into(), "1:1", "double brackets"),
        ("[notify.email]\nport = 70000\n".into(), "2:8", "notify.email.port: invalid value: integer `70000`"),
        (limit("max_memory = 1\nuser = 1.5\n"), "4:8", "expected a user name or a uid number"),
        // regex, name, pattern
        ("[[limit]]\npattern = \"(abc\"\nmax_memory = \"1GiB\"\n".into(), "2:11", "limit[0].pattern: invalid regex: unclosed group"),
        ("[[limit]]\npattern = \"\"\nmax_memory = \"1GiB\"\n".into(), "2:11", "must not be empty"),
        ("[[limit]]\nname = \"a\"\npattern = \"a\"\nmax_memory = 1\n".into(), "1:1", "limit[0]: has both `name` and `pattern`"),
        ("[[limit]]\nmax_memory = 1\n".into(), "1:1", "limit[0]: needs `name` (process name) or `pattern`"),
        ("[[limit]]\nname = \"\"\nmax_memory = 1\n".into(), "2:8", "limit[0].name: must not be empty"),
        (LIMIT.into(), "1:1", "limit[0]: needs `max_memory`"),
        // users
        (limit("max_memory = 1\nuser = \"nobody-here\"\n"), "4:8", "limit[0].user: unknown user \"nobody-here\""),
        (limit("max_memory = 1\nuser = -5\n"), "4:8", "uid -5 is out of range"),
        (limit("max_memory = 1\nuser = 4294967295\n"), "4:8", "out of range"),
        ("[notify.desktop]\nusers = [\"alice\", \"eve\"]\n".into(), "2:19", "notify.desktop.users: unknown user \"eve\""),
        // durations
        ("[monitor]\nscan_interval = \"5sec\"\n".into(), "2:17", "monitor.scan_interval: duration \"5sec\" has an unknown unit \"sec\""),
        ("[monitor]\nscan_interval = \"0s\"\n".into(), "2:17", "monitor.scan_interval: must be more than 0"),
        ("[monitor]\nscan_interval = \"5\"\n".into(), "2:17", "has no unit"),
        ("[notify]\ncooldown = \"-1m\"\n".into(), "2:12", "notify.cooldown: duration \"-1m\" is negative"),
        // enumerations
        ("[monitor]\nmode = \"fast\"\n".into(), "2:8", "monitor.mode: unknown value `fast`, expected one of `auto`, `ebpf`, `proc`"),
        (limit("max_memory = 1\naction = \"kil\"\n"), "4:10", "limit[0].action: unknown value `kil`, expected one of `kill`, `kill-now`, `alert`"),
        (limit("max_memory = 1\nscope = \"group\"\n"), "4:9", "limit[0].scope: unknown value `group`, expected `process` or `total`"),
        (limit("max_memory = 1\nmemory = \"vss\"\n"), "4:10", "limit[0].memory: unknown value `vss`, expected one of `rss`, `pss`, `rss+swap`"),
        (limit("max_memory = 1\nkill = \"session\"\n"), "4:8", "limit[0].kill: unknown value `session`, expected one of `process`, `group`, `cgroup`"),
        (limit("max_memory = 1\naction = \"kill-now\"\nmemory = \"pss\"\n"), "5:10", "limit[0].memory: \"pss\" cannot go with action = \"kill-now\": the kernel cannot compute PSS at the faulting page"),
        ("[notify.desktop]\nurgency = \"high\"\n".into(), "2:11", "expected one of `low`, `normal`, `critical`"),
        ("[notify.email]\nsecurity = \"ssl\"\n".into(), "2:12", "expected one of `none`, `starttls`, `tls`"),
        // email, metrics
        ("[notify.email]\nenabled = true\nfrom = \"a@b\"\nto = [\"c@d\"]\n".into(), "1:1", "notify.email: enabled, but `server` not set"),
        ("[notify.email]\nenabled = true\n".into(), "1:1", "`server`, `from`, `to` not set"),
        ("[notify.email]\nenabled = true\nserver = \"s\"\nfrom = \"a@b\"\nto = []\n".into(), "5:6", "notify.email.to: must list at least one address"),
        ("[notify.email]\nto = [\"ops\"]\n".into(), "2:7", "notify.email.to: \"ops\" is not a mail address"),
        ("[notify.email]\nport = 0\n".into(), "2:8", "notify.email.port: must be more than 0"),
        ("[notify.email]\nspool_dir = \"outbox\"\n".into(), "2:13", "notify.email.spool_dir: \"outbox\" must be an absolute path"),
        ("[notify.email]\nenabled = true\nserver = \"s\"\nfrom = \"a@b\"\nto = [\"c@d\"]\nusername = \"u\"\n".into(), "6:12", "set `password_file` too"),
        ("[metrics]\nlisten = \"localhost:9613\"\n".into(), "2:10", "metrics.listen: \"localhost:9613\" is not an IP address and port"),
        // syntax
        ("[monitor\nmode = \"auto\"\n".into(), "1:9", "TOML syntax"),
        ("[monitor]\nmode = \"auto\"\nmode = \"proc\"\n".into(), "3:1", "TOML syntax: duplicate key"),
        ("[enforce]\ndry_run = yes\n".into(), "2:11", "TOML syntax"),
    ];
    let mut failures = Vec::new();
    for (text, position, fragment) in &cases {
        let errors = errors(text);
        let expected_start = format!("{position}: ");
        let ok = errors.len() == 1
            && errors[0].starts_with(&expected_start)
            && errors[0].contains(fragment);
        if !ok {
            failures.push(format!("config:\n{text}expected one error at {position} containing {fragment:?}\ngot {errors:#?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn all_errors_are_reported_together() {
    let text = r#"bogus = 1

[monitor]
mode = "fast"
scan_interval = "0s"

[enforce]
grace = "3 seconds"
protect = ["sshd", ""]

[[limit]]
name = "a"
max_memory = "150%"
action = "kil"
colour = "red"

[[limit]]
pattern = "(oops"
user = "nobody-here"
max_memory = "1gb"

[[limit]]
name = "b"
pattern = "b"
max_memory = 1

[[limit]]
name = 5
max_memory = 1

[notify]
cooldown = 60

[notify.email]
enabled = true
port = "smtp"
"#;
    let got = errors(text);
    let expected = [
        "1:1: unknown key `bogus`",
        "4:8: monitor.mode: unknown value `fast`",
        "5:17: monitor.scan_interval: must be more than 0",
        "8:9: enforce.grace: duration \"3 seconds\" has an unknown unit \"seconds\"",
        "9:20: enforce.protect: a name must not be empty",
        "13:14: limit[0].max_memory: size \"150%\" is more than 100%",
        "14:10: limit[0].action: unknown value `kil`",
        "15:1: limit[0]: unknown key `colour`",
        "18:11: limit[1].pattern: invalid regex: unclosed group",
        "19:8: limit[1].user: unknown user \"nobody-here\"",
        "20:14: limit[1].max_memory: size \"1gb\" has an unknown unit \"gb\"",
        "22:1: limit[2]: has both `name` and `pattern`",
        "28:8: limit[3].name: invalid type: integer `5`, expected a string",
        "32:12: notify.cooldown: invalid type: integer `60`, expected a duration string",
        "34:1: notify.email: enabled, but `server`, `from`, `to` not set",
        "36:8: notify.email.port: invalid type: string \"smtp\", expected a port number (1 to 65535)",
    ];
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for (got, expected) in got.iter().zip(expected) {
        assert!(
            got.starts_with(expected),
            "got {got:?}, expected {expected:?}"
        );
    }
}

#[test]
fn errors_display_as_path_line_col() {
    let err = Config::parse(
        "[monitor]\nmode = 1\n",
        Path::new("/etc/procespy.toml"),
        &env(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "/etc/procespy.toml:2:8: monitor.mode: invalid type: integer `1`, expected one of `auto`, `ebpf`, `proc`"
    );
}

#[test]
fn example_file_parses_to_the_defaults_and_one_demo_limit() {
    let config = Config::parse(EXAMPLE, Path::new("config/procespy.toml"), &env()).unwrap();
    let mut expected = Config::builtin_default();
    expected.origin = Origin::File(PathBuf::from("config/procespy.toml"));
    expected.limits = Limits::from(vec![Limit {
        max_memory_text: "256MiB".into(),
        // 80% of 256 MiB.
        warn_at: Some(214_748_364),
        ..Limit::of(Matcher::Name("procespy-demo".into()), 256 << 20)
    }]);
    expected.notify.email.server = "smtp.example.com".into();
    expected.notify.email.from = "procespy@example.com".into();
    expected.notify.email.to = vec!["ops@example.com".into()];
    assert_eq!(config, expected);
}

#[test]
fn example_file_commented_limits_are_valid() {
    // Uncomment the commented-out [[limit]] and [metrics] blocks: they must be valid too.
    let mut in_block = false;
    let mut uncommented = String::new();
    for line in EXAMPLE.lines() {
        if line == "# [[limit]]" || line == "# [metrics]" {
            in_block = true;
        } else if line.is_empty() {
            in_block = false;
        }
        let line = if in_block {
            line.strip_prefix("# ").unwrap_or(line)
        } else {
            line
        };
        uncommented.push_str(line);
        uncommented.push('\n');
    }
    let config = Config::parse(&uncommented, Path::new("x.toml"), &env()).unwrap();
    assert_eq!(config.limits.len(), 4);
    let chromium = &config.limits[1];
    assert_eq!(chromium.matcher, Matcher::Name("chromium".into()));
    assert_eq!(
        (chromium.max_memory, chromium.scope, chromium.memory),
        (GIB + GIB / 2, Scope::Total, Memory::Pss)
    );
    let worker = &config.limits[2];
    assert_eq!(
        (worker.memory, worker.kill),
        (Memory::RssSwap, KillTarget::Cgroup)
    );
    let python = &config.limits[3];
    let Matcher::Pattern(pattern) = &python.matcher else {
        panic!("{python:?}")
    };
    assert_eq!(
        config
            .limits
            .matching(b"/usr/bin/python3 /srv/app/manage.py runserver"),
        [3]
    );
    assert!(
        config
            .limits
            .matching(b"/usr/bin/python3 /srv/app/manage_py")
            .is_empty()
    );
    assert_eq!(pattern, r"^/usr/bin/python3 .*manage\.py");
    assert_eq!(python.label, r"^/usr/bin/python3 .*manage\.py");
    assert_eq!(
        (python.user, python.max_memory, python.action),
        (Some(1000), 16 * GIB / 10, Action::Alert)
    );
    assert_eq!(
        config.metrics,
        Some(Metrics {
            listen: "127.0.0.1:9613".parse().unwrap()
        })
    );
}

#[test]
fn empty_file_is_the_builtin_default() {
    let config = parse("").unwrap();
    assert_eq!(config.origin, Origin::File("test.toml".into()));
    assert_eq!(
        Config {
            origin: Origin::BuiltIn,
            ..config
        },
        Config::builtin_default()
    );
    let builtin = Config::builtin_default();
    assert_eq!(
        builtin.monitor,
        Monitor {
            mode: Mode::Auto,
            scan_interval: Duration::from_secs(5)
        }
    );
    assert_eq!(builtin.enforce.grace, Duration::from_secs(3));
    assert_eq!(builtin.enforce.protect, ["sshd", "systemd-journald"]);
    assert!(builtin.limits.is_empty());
    assert_eq!(builtin.notify.cooldown, Duration::from_secs(60));
    assert_eq!(
        builtin.notify.desktop,
        Desktop {
            enabled: true,
            users: vec![],
            urgency: Urgency::Critical
        }
    );
    assert!(!builtin.notify.email.enabled);
    assert_eq!(builtin.notify.email.port, 587);
    assert_eq!(builtin.notify.email.security, Security::StartTls);
    assert_eq!(
        builtin.notify.email.spool_dir,
        Path::new("/var/lib/procespy/outbox")
    );
    assert_eq!(builtin.metrics, None);
}

#[test]
fn every_key_set() {
    let text = r#"
[monitor]
mode = "proc"
scan_interval = "250ms"

[enforce]
dry_run = true
grace = "1.5s"
protect = []

[[limit]]
name = "chromium"
user = "alice"
max_memory = "1.5GiB"
scope = "total"
action = "kill-now"

[[limit]]
pattern = '^/usr/bin/python3 .*manage\.py'
user = 1234
max_memory = 1048576
action = "alert"

[[limit]]
name = "firefox"
user = "4321"
max_memory = "2.5%"

[notify]
cooldown = "2m"

[notify.desktop]
enabled = false
users = ["alice", "bob"]
urgency = "low"

[notify.email]
enabled = true
server = "smtp.example.com"
security = "tls"
username = "procespy"
password_file = "/etc/procespy/smtp-password"
from = "Procespy <procespy@example.com>"
to = ["ops@example.com", "alice@example.com"]
spool_dir = "/tmp/outbox"

[metrics]
listen = "[::1]:9100"
"#;
    let config = parse(text).unwrap();
    assert_eq!(
        config.monitor,
        Monitor {
            mode: Mode::Proc,
            scan_interval: Duration::from_millis(250)
        }
    );
    assert_eq!(
        config.enforce,
        Enforce {
            dry_run: true,
            grace: Duration::from_millis(1500),
            protect: vec![]
        }
    );
    assert_eq!(config.limits.len(), 3);
    assert_eq!(
        config.limits[0],
        Limit {
            user: Some(1000),
            max_memory_text: "1.5GiB".into(),
            scope: Scope::Total,
            action: Action::KillNow,
            ..Limit::of(Matcher::Name("chromium".into()), GIB + GIB / 2)
        }
    );
    let python = &config.limits[1];
    assert_eq!(python.index, 1);
    assert_eq!(python.label, r"^/usr/bin/python3 .*manage\.py");
    assert_eq!(
        (
            python.user,
            python.max_memory,
            python.max_memory_text.as_str()
        ),
        (Some(1234), 1 << 20, "1048576")
    );
    assert_eq!(
        (python.scope, python.action),
        (Scope::Process, Action::Alert)
    );
    let firefox = &config.limits[2];
    assert_eq!(
        (firefox.index, firefox.user, firefox.max_memory),
        (2, Some(4321), 16 * GIB / 40)
    );
    assert_eq!(firefox.max_memory_text, "2.5%");
    assert_eq!(
        (firefox.scope, firefox.action),
        (Scope::Process, Action::Kill)
    );
    assert_eq!(config.notify.cooldown, Duration::from_secs(120));
    assert_eq!(
        config.notify.desktop,
        Desktop {
            enabled: false,
            users: vec!["alice".into(), "bob".into()],
            urgency: Urgency::Low
        }
    );
    assert_eq!(
        config.notify.email,
        Email {
            enabled: true,
            server: "smtp.example.com".into(),
            port: 465,
            security: Security::Tls,
            username: Some("procespy".into()),
            password_file: Some("/etc/procespy/smtp-password".into()),
            from: "Procespy <procespy@example.com>".into(),
            to: vec!["ops@example.com".into(), "alice@example.com".into()],
            spool_dir: "/tmp/outbox".into(),
        }
    );
    assert_eq!(
        config.metrics,
        Some(Metrics {
            listen: "[::1]:9100".parse::<SocketAddr>().unwrap()
        })
    );
}

#[test]
fn limits_as_inline_tables_and_percentages_of_a_fake_machine() {
    let text = "limit = [{ name = \"a\", max_memory = \"10%\" }, { name = \"b\", max_memory = \"100%\" }]\n";
    let small = Env {
        mem_total: 1000,
        lookup_user: fake_users,
    };
    let config = Config::parse(text, Path::new("t"), &small).unwrap();
    assert_eq!(
        config
            .limits
            .iter()
            .map(|l| l.max_memory)
            .collect::<Vec<_>>(),
        [100, 1000]
    );
    let unknown = Env {
        mem_total: 0,
        lookup_user: fake_users,
    };
    let err = Config::parse(text, Path::new("t"), &unknown).unwrap_err();
    assert_eq!(err.diagnostics.len(), 2);
    assert!(err.diagnostics[0].message.contains("MemTotal"), "{err}");
    assert_eq!((err.diagnostics[0].line, err.diagnostics[0].col), (1, 37));
}

#[test]
fn mode_action_scope_names() {
    assert_eq!(serde_json::to_string(&Mode::Ebpf).unwrap(), "\"ebpf\"");
    assert_eq!(
        serde_json::to_string(&Action::KillNow).unwrap(),
        "\"kill-now\""
    );
    assert_eq!(serde_json::to_string(&Scope::Total).unwrap(), "\"total\"");
    assert_eq!(
        serde_json::to_string(&Security::StartTls).unwrap(),
        "\"starttls\""
    );
    assert_eq!(Action::KillNow.to_string(), "kill-now");
    assert_eq!(Mode::Auto.to_string(), "auto");
    assert_eq!(Scope::Process.to_string(), "process");
}

#[test]
fn the_system_env_knows_memory_and_users() {
    assert!(Env::system().mem_total > 0);
    assert_eq!((Env::system().lookup_user)("root"), Some(0));
}

// ---- Config::load: owner and permissions ----

/// A file in the temporary directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str, mode: u32) -> TempFile {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "procespy-config-test-{}-{n}-{name}",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn load_checks_owner_and_mode() {
    let text = "[[limit]]\nname = \"procespy-demo\"\nmax_memory = \"10%\"\n";
    let good = TempFile::new("good.toml", text, 0o644);
    if !running_as_root() {
        // Files we create are not root's: they must be refused for that.
        let err = Config::load(&good.0).unwrap_err();
        assert!(
            err.to_string().contains("it must be owned by root"),
            "{err}"
        );
        return;
    }
    let config = Config::load(&good.0).unwrap();
    assert_eq!(config.origin, Origin::File(good.0.clone()));
    assert_eq!(config.limits[0].max_memory_text, "10%");
    assert!(config.limits[0].max_memory > 0);
    assert!(Config::load(&TempFile::new("private.toml", text, 0o600).0).is_ok());

    for mode in [0o664, 0o646, 0o666, 0o620] {
        let file = TempFile::new("writable.toml", text, mode);
        let err = Config::load(&file.0).unwrap_err();
        let path = file.0.display();
        assert_eq!(
            err.to_string(),
            format!(
                "{path}: refusing a config writable by group or others (mode {mode:04o}); run chmod go-w {path}"
            )
        );
        assert_eq!((err.diagnostics[0].line, err.diagnostics[0].col), (0, 0));
    }

    let theirs = TempFile::new("theirs.toml", text, 0o644);
    std::os::unix::fs::chown(&theirs.0, Some(1000), None).unwrap();
    let err = Config::load(&theirs.0).unwrap_err();
    let path = theirs.0.display();
    assert_eq!(
        err.to_string(),
        format!(
            "{path}: refusing a config owned by uid 1000; it must be owned by root: run chown root: {path}"
        )
    );
}

#[test]
fn load_reports_missing_directories_and_bad_contents() {
    let missing = Path::new("/nonexistent/procespy.toml");
    let err = Config::load(missing).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/procespy.toml: cannot read: "),
        "{err}"
    );
    if !running_as_root() {
        return;
    }
    let err = Config::load(&std::env::temp_dir()).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
    let bad = TempFile::new("bad.toml", "[monitor]\nmode = \"fast\"\n", 0o644);
    let err = Config::load(&bad.0).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:2:8: monitor.mode: unknown value `fast`, expected one of `auto`, `ebpf`, `proc`",
            bad.0.display()
        )
    );
}

#[test]
fn load_checks_the_password_file_when_email_is_enabled() {
    if !running_as_root() {
        return;
    }
    let config_for = |password: &Path, enabled: bool| {
        format!(
            "[notify.email]\nenabled = {enabled}\nserver = \"smtp.example.com\"\nusername = \"u\"\n\
             password_file = \"{}\"\nfrom = \"a@example.com\"\nto = [\"b@example.com\"]\n",
            password.display()
        )
    };
    let good_password = TempFile::new("password", "secret\n", 0o600);
    let config = TempFile::new("mail.toml", &config_for(&good_password.0, true), 0o644);
    let loaded = Config::load(&config.0).unwrap();
    assert_eq!(
        loaded.notify.email.password_file.as_deref(),
        Some(good_password.0.as_path())
    );

    let open_password = TempFile::new("password", "secret\n", 0o664);
    let config = TempFile::new("mail.toml", &config_for(&open_password.0, true), 0o644);
    let err = Config::load(&config.0).unwrap_err();
    let password = open_password.0.display();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:5:1: notify.email.password_file {password}: refusing a password file writable by group or others \
             (mode 0664); run chmod go-w {password}",
            config.0.display()
        )
    );

    let missing = Path::new("/nonexistent/smtp-password");
    let config = TempFile::new("mail.toml", &config_for(missing, true), 0o644);
    let err = Config::load(&config.0).unwrap_err();
    assert!(
        err.to_string()
            .contains(":5:1: notify.email.password_file /nonexistent/smtp-password: cannot read"),
        "{err}"
    );

    // Email disabled: the password file is not looked at.
    let config = TempFile::new("mail.toml", &config_for(missing, false), 0o644);
    assert!(Config::load(&config.0).is_ok());
}
