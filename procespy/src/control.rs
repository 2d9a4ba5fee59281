//! The control socket: `procespy status` and `procespy reload` talk to the
//! running daemon over a root-only Unix socket, one JSON request and one JSON
//! reply per connection.

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
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader as AsyncBufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

use crate::report::StatusReport;

/// Default location of the daemon's control socket.
pub(crate) const DEFAULT_SOCKET: &str = "/run/procespy.sock";

/// How long a client may take to send its request, and the daemon to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A request to the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub(crate) enum Request {
    /// What the daemon is doing.
    Status,
    /// Re-read the configuration.
    Reload,
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
/// A socket file left behind by a daemon that died is replaced; one that a
/// running daemon answers on is an error.
pub(crate) fn bind(path: &Path) -> Result<UnixListener> {
    if path.exists() {
        if StdUnixStream::connect(path).is_ok() {
            return Err(anyhow!(
                "another procespy is running: it answers on {}",
                path.display()
            ));
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
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
pub(crate) async fn serve(listener: UnixListener, tx: mpsc::Sender<Incoming>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Err(err) = answer(stream, tx).await {
                tracing::debug!("control client: {err:#}");
            }
        });
    }
}

async fn answer(stream: UnixStream, tx: mpsc::Sender<Incoming>) -> Result<()> {
    let uid = stream.peer_cred()?.uid();
    let (read, mut write) = stream.into_split();
    let reply = if uid != 0 {
        Err(format!(
            "permission denied: uid {uid} is not root; only root may use the control socket"
        ))
    } else {
        let mut line = String::new();
        tokio::time::timeout(TIMEOUT, AsyncBufReader::new(read).read_line(&mut line))
            .await
            .context("the client sent no request")??;
        match serde_json::from_str::<Request>(line.trim()) {
            Err(err) => Err(format!("bad request: {err}")),
            Ok(request) => {
                let (reply, rx) = oneshot::channel();
                tx.send(Incoming { request, reply })
                    .await
                    .context("the daemon is stopping")?;
                tokio::time::timeout(TIMEOUT, rx)
                    .await
                    .context("the daemon did not answer")?
                    .context("the daemon dropped the request")?
            }
        }
    };
    let body = match reply {
        Ok(reply) => serde_json::json!({ "ok": true, "reply": reply }),
        Err(message) => serde_json::json!({ "ok": false, "error": message }),
    };
    let mut text = serde_json::to_string(&body)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    Ok(())
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
    stream.set_read_timeout(Some(TIMEOUT * 2))?;
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
    let report: StatusReport = ask(socket, Request::Status)?;
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
