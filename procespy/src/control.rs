//! The control socket: `procespy status`, `procespy reload` and
//! `procespy top` talk to the running daemon over a root-only Unix socket,
//! one JSON request and one JSON reply per connection.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream as StdUnixStream},
    path::Path,
    time::Duration,
};

use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

use crate::report::{RecentReport, StatusReport};

/// Default location of the daemon's control socket.
pub(crate) const DEFAULT_SOCKET: &str = "/run/procespy.sock";

/// How long a client may take to send its request.
const TIMEOUT: Duration = Duration::from_secs(5);
/// How long the daemon may take to answer (a reload waits for a file that
/// is being rewritten to settle).
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one client may hold its connection, both ways.
const CLIENT_DEADLINE: Duration = Duration::from_secs(25);
/// The largest request read.
pub(crate) const MAX_REQUEST: usize = 4096;
/// Clients served at once.
const MAX_CLIENTS: usize = 8;

/// A request to the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub(crate) enum Request {
    /// What the daemon is doing.
    Status,
    /// Re-read the configuration.
    Reload,
    /// The covered processes' RSS over the last `seconds`.
    Recent {
        /// How far back.
        seconds: u32,
    },
}

/// The daemon's answer to a [`Request`].
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum Reply {
    /// What the daemon is doing.
    Status(Box<StatusReport>),
    /// The configuration was reloaded.
    Reloaded {
        /// What was loaded.
        message: String,
    },
    /// The covered processes' recent RSS.
    Recent(RecentReport),
}

/// A request received by the daemon, with the way back to its client.
pub(crate) struct Incoming {
    /// The request.
    pub(crate) request: Request,
    /// Where the reply goes: `Ok(reply)` or `Err(message)`.
    pub(crate) reply: oneshot::Sender<Result<Reply, String>>,
}

/// Binds the control socket at `path`, readable and writable by root only.
///
/// A socket left behind by a daemon that died is replaced; one that a
/// running daemon answers on is an error, and so is anything at `path`
/// that is not a socket (it is never removed).
pub(crate) fn bind(path: &Path) -> Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(anyhow!(
                "{} exists and is not a socket; choose another --socket path",
                path.display()
            ));
        }
        Ok(_) => {
            if StdUnixStream::connect(path).is_ok() {
                return Err(anyhow!(
                    "another procespy is running: it answers on {}",
                    path.display()
                ));
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))?;
        }
        Err(_) => {}
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {} to root", path.display()))?;
    Ok(listener)
}

/// Accepts clients forever, handing each request to the daemon through `tx`.
/// At most [`MAX_CLIENTS`] are served at once; one more is told so and
/// closed.
pub(crate) async fn serve(listener: UnixListener, tx: mpsc::Sender<Incoming>) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            // Out of file descriptors, say: do not spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(slot) = std::sync::Arc::clone(&slots).try_acquire_owned() else {
            tokio::spawn(async move {
                let busy = reply_line(Err("busy: too many control clients at once".into()));
                let _ = tokio::time::timeout(TIMEOUT, stream.write_all(busy.as_bytes())).await;
            });
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(CLIENT_DEADLINE, answer(stream, tx)).await {
                Ok(Err(err)) => tracing::debug!("control client: {err:#}"),
                Err(_) => tracing::debug!("control client cut after {CLIENT_DEADLINE:?}"),
                Ok(Ok(())) => {}
            }
            drop(slot);
        });
    }
}

/// Reads one request line of at most [`MAX_REQUEST`] bytes.
async fn read_request(read: &mut (impl AsyncReadExt + Unpin)) -> Result<Request, String> {
    let mut line = Vec::with_capacity(128);
    let mut buffer = [0u8; 512];
    loop {
        let n = match tokio::time::timeout(TIMEOUT, read.read(&mut buffer)).await {
            Err(_) => return Err("no request within 5 s".into()),
            Ok(Err(err)) => return Err(format!("reading the request: {err}")),
            Ok(Ok(n)) => n,
        };
        line.extend_from_slice(&buffer[..n]);
        if let Some(end) = line.iter().position(|&b| b == b'\n') {
            line.truncate(end);
            break;
        }
        if line.len() > MAX_REQUEST {
            return Err(format!(
                "request too large: the most is {MAX_REQUEST} bytes"
            ));
        }
        if n == 0 {
            break;
        }
    }
    serde_json::from_slice::<Request>(line.trim_ascii())
        .map_err(|err| format!("bad request: {err}"))
}

async fn answer(stream: UnixStream, tx: mpsc::Sender<Incoming>) -> Result<()> {
    let uid = stream.peer_cred()?.uid();
    let (mut read, mut write) = stream.into_split();
    let reply = if uid != 0 {
        Err(format!(
            "permission denied: uid {uid} is not root; only root may use the control socket"
        ))
    } else {
        match read_request(&mut read).await {
            Err(message) => Err(message),
            Ok(request) => {
                let (reply, rx) = oneshot::channel();
                tx.send(Incoming { request, reply })
                    .await
                    .context("the daemon is stopping")?;
                tokio::time::timeout(REPLY_TIMEOUT, rx)
                    .await
                    .context("the daemon did not answer")?
                    .context("the daemon dropped the request")?
            }
        }
    };
    write.write_all(reply_line(reply).as_bytes()).await?;
    Ok(())
}

/// The reply as one JSON line.
fn reply_line(reply: Result<Reply, String>) -> String {
    let body = match reply {
        Ok(reply) => serde_json::json!({ "ok": true, "reply": reply }),
        Err(message) => serde_json::json!({ "ok": false, "error": message }),
    };
    let mut text = body.to_string();
    text.push('\n');
    text
}

/// What the daemon at `socket` is doing.
pub(crate) fn ask_status(socket: &Path) -> Result<StatusReport> {
    ask(socket, Request::Status)
}

/// The covered processes' RSS over the last `seconds`, from the daemon at
/// `socket`.
pub(crate) fn ask_recent(socket: &Path, seconds: u32) -> Result<RecentReport> {
    ask(socket, Request::Recent { seconds })
}

/// Sends `request` to the daemon at `socket` and returns its reply.
fn ask<T: DeserializeOwned>(socket: &Path, request: Request) -> Result<T> {
    let mut stream = StdUnixStream::connect(socket).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => anyhow!(
            "no procespy daemon answers on {} ({err}); is it running?",
            socket.display()
        ),
        std::io::ErrorKind::PermissionDenied => anyhow!(
            "cannot connect to {}: permission denied; only root may use the control socket",
            socket.display()
        ),
        _ => anyhow!("cannot connect to {}: {err}", socket.display()),
    })?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT + TIMEOUT))?;
    let mut line = serde_json::to_string(&request)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .context("reading the daemon's answer")?;
    let answer: Value = serde_json::from_str(&answer).context("the daemon's answer is not JSON")?;
    if answer["ok"] == Value::Bool(true) {
        serde_json::from_value(answer["reply"].clone())
            .context("the daemon's answer is not what this procespy understands")
    } else {
        Err(anyhow!(
            "the daemon refused: {}",
            answer["error"].as_str().unwrap_or("no reason given")
        ))
    }
}

/// `procespy status [--json]`.
pub(crate) fn status_command(socket: &Path, json: bool) -> Result<()> {
    let report = ask_status(socket)?;
    let text = if json {
        serde_json::to_string_pretty(&report).context("printing the status")?
    } else {
        report.render_text()
    };
    crate::output::print_stdout(&text).context("printing the status")?;
    Ok(())
}

/// What a reload answers.
#[derive(Deserialize)]
struct Reloaded {
    message: String,
}

/// `procespy reload`.
pub(crate) fn reload_command(socket: &Path) -> Result<()> {
    let reply: Reloaded = ask(socket, Request::Reload)?;
    crate::output::print_stdout(&reply.message).context("printing the reply")?;
    Ok(())
}
