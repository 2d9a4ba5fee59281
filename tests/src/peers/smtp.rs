//! SMTP peers: a real server (aiosmtpd, from Debian's `python3-aiosmtpd`)
//! that writes every message it accepts as parsed JSON, a server that
//! accepts connections and never says a word, and a test CA for TLS.

use std::{
    io::{BufRead, BufReader},
    net::{TcpListener, TcpStream},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{
    needs::{require, runs},
    process::terminate,
    run::poll,
};

/// The Python that has Debian's packages (`python3` on the PATH may be another).
pub const PYTHON: &str = "/usr/bin/python3";

const SCRIPT: &str = include_str!("smtp_server.py");

/// Whether aiosmtpd can be run; under CI its absence fails the test.
pub fn have_aiosmtpd() -> bool {
    require(
        "python3-aiosmtpd (/usr/bin/python3 -c 'import aiosmtpd')",
        runs(PYTHON, &["-c", "import aiosmtpd"]),
    )
}

/// How the server is reached.
#[derive(Clone, Debug, Default)]
pub struct SmtpOptions {
    /// `none`, `starttls` or `tls` (default `none`).
    pub security: Option<&'static str>,
    /// Certificate and key (PEM) for TLS.
    pub cert: Option<(PathBuf, PathBuf)>,
    /// `USER:PASSWORD`: AUTH is required (and only over TLS).
    pub auth: Option<String>,
    /// Messages whose subject contains this are refused for good (554).
    pub refuse: Option<String>,
}

/// A running aiosmtpd; stopped on drop.
pub struct SmtpServer {
    child: Child,
    dir: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl SmtpServer {
    /// Starts the server on `port`, writing messages to `dir` (made if
    /// missing), and waits until it listens.
    pub fn start(port: u16, dir: &Path, options: &SmtpOptions) -> Result<SmtpServer> {
        std::fs::create_dir_all(dir)?;
        let script = dir.with_extension("py");
        std::fs::write(&script, SCRIPT)?;
        let mut command = Command::new(PYTHON);
        command
            .arg(&script)
            .args(["--port", &port.to_string()])
            .arg("--dir")
            .arg(dir)
            .args(["--security", options.security.unwrap_or("none")]);
        if let Some((cert, key)) = &options.cert {
            command.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        if let Some(auth) = &options.auth {
            command.args(["--auth", auth]);
        }
        if let Some(refuse) = &options.refuse {
            command.args(["--refuse", refuse]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting aiosmtpd")?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.trim() == "ready" => {}
            other => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("aiosmtpd did not start on port {port}: {other:?}");
            }
        }
        Ok(SmtpServer {
            child,
            dir: dir.to_owned(),
            port,
        })
    }

    /// The messages received so far, oldest first, each as the script wrote it.
    pub fn messages(&self) -> Vec<Value> {
        messages_in(&self.dir)
    }

    /// How many messages it refused (see [`SmtpOptions::refuse`]).
    pub fn refusals(&self) -> usize {
        std::fs::read_dir(&self.dir).map_or(0, |entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "refused"))
                .count()
        })
    }

    /// Waits until at least `n` messages arrived; returns them all.
    pub fn wait_messages(&self, n: usize, timeout: Duration) -> Result<Vec<Value>> {
        let mut messages = Vec::new();
        poll(timeout, Duration::from_millis(50), || {
            messages = self.messages();
            (messages.len() >= n).then_some(())
        })
        .with_context(|| {
            format!(
                "{} messages within {timeout:?}, not {n}: {messages:#?}",
                messages.len()
            )
        })?;
        Ok(messages)
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// The JSON messages in `dir`, by name.
pub fn messages_in(dir: &Path) -> Vec<Value> {
    json_files(dir)
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .filter_map(|text| serde_json::from_slice(&text).ok())
        .collect()
}

/// The `*.json` files in `dir` but hidden ones (`.NAME.json`, half
/// written), by name: messages the server wrote, or alerts procespy
/// spooled.
pub fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// A server that accepts every connection and never answers (not even the
/// greeting); the connections stay open until it is dropped.
pub struct SilentServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SilentServer {
    /// Starts listening on a free port.
    pub fn start() -> Result<SilentServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(stream) = stream {
                    held.push(stream);
                }
            }
        });
        Ok(SilentServer {
            port,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A test CA and a server certificate it signed for 127.0.0.1 and
/// localhost, made with openssl.
pub struct TestCa {
    /// The CA's certificate (PEM): what the client must trust.
    pub ca: PathBuf,
    /// The server's certificate (PEM).
    pub cert: PathBuf,
    /// The server's key (PEM).
    pub key: PathBuf,
}

impl TestCa {
    /// Makes the CA and the server certificate in `dir`.
    pub fn make(dir: &Path) -> Result<TestCa> {
        std::fs::create_dir_all(dir)?;
        let p = |name: &str| dir.join(name);
        let ext = p("server.ext");
        std::fs::write(
            &ext,
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )?;
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"],
                &ec[..],
                &["-days", "2", "-subj", "/CN=procespy test CA"],
            ]
            .concat(),
            &[("-keyout", &p("ca.key")), ("-out", &p("ca.pem"))],
        )?;
        openssl(
            &[&["req"], &ec[..], &["-subj", "/CN=127.0.0.1"]].concat(),
            &[("-keyout", &p("server.key")), ("-out", &p("server.csr"))],
        )?;
        openssl(
            &["x509", "-req", "-days", "2", "-set_serial", "2"],
            &[
                ("-in", &p("server.csr")),
                ("-CA", &p("ca.pem")),
                ("-CAkey", &p("ca.key")),
                ("-extfile", &ext),
                ("-out", &p("server.pem")),
            ],
        )?;
        for key in ["ca.key", "server.key"] {
            std::fs::set_permissions(p(key), std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(TestCa {
            ca: p("ca.pem"),
            cert: p("server.pem"),
            key: p("server.key"),
        })
    }
}

fn openssl(args: &[&str], paths: &[(&str, &Path)]) -> Result<()> {
    let mut command = Command::new("openssl");
    command.args(args);
    for (flag, path) in paths {
        command.arg(flag).arg(path);
    }
    let output = command.output().context("running openssl")?;
    if !output.status.success() {
        bail!(
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
