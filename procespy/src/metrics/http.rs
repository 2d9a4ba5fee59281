//! The HTTP side of `/metrics`: a minimal HTTP/1.1 responder, one request
//! per connection (a scrape is one GET, and Prometheus copes with
//! `Connection: close`). It holds no figures: for each scrape it asks the
//! daemon's loop through a [`MetricsRequest`].
//!
//! Written here rather than taken from an HTTP crate: what it must do is a
//! few dozen lines (read a bounded request head, answer one path), and
//! hyper or axum would bring a large dependency tree into a root daemon for
//! it. A request head larger than [`MAX_REQUEST`] or slower than
//! [`READ_TIMEOUT`] is dropped, every connection ends within
//! [`CLIENT_DEADLINE`] (reading and writing together: a client that never
//! reads cannot hold one), and at most [`MAX_CLIENTS`] are served at once,
//! a new one cutting the oldest: clients that trickle or never read cannot
//! keep a well-behaved scraper out.

use std::{collections::VecDeque, net::SocketAddr, time::Duration};

use anyhow::Context;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot},
};

/// The Content-Type of the OpenMetrics text format, which
/// prometheus-client's encoder writes.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Largest request head accepted, in bytes.
pub(crate) const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its request head.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the daemon's loop may take to answer a scrape.
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once (each costs a task and a socket); a new one
/// beyond cuts the oldest.
pub(crate) const MAX_CLIENTS: usize = 64;
/// How long one connection may last, reading and writing together.
pub(crate) const CLIENT_DEADLINE: Duration = Duration::from_secs(10);

/// A scrape, sent to the daemon's loop: answer with `super::render`'s text.
#[derive(Debug)]
pub(crate) struct MetricsRequest {
    /// Where the rendered text goes.
    pub(crate) reply: oneshot::Sender<String>,
}

/// Binds the metrics address with std (non-blocking), so it can be called
/// before the tokio runtime exists and fail early; [`serve`] takes it on.
pub(crate) fn bind(listen: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("binding the metrics address {listen}"))?;
    listener
        .set_nonblocking(true)
        .context("making the metrics socket non-blocking")?;
    Ok(listener)
}

/// Serves `GET /metrics` on `listener` forever, asking the daemon's loop
/// through `tx` for each scrape. Must run inside the tokio runtime.
pub(crate) async fn serve(listener: std::net::TcpListener, tx: mpsc::Sender<MetricsRequest>) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!("the metrics endpoint cannot start: {err}");
            return;
        }
    };
    let mut clients: VecDeque<tokio::task::AbortHandle> = VecDeque::new();
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            // Out of file descriptors, say: do not spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        clients.retain(|client| !client.is_finished());
        if clients.len() >= MAX_CLIENTS
            && let Some(oldest) = clients.pop_front()
        {
            // A well-behaved scraper is done in milliseconds: whoever has
            // held a slot longest is the one stalling, and makes room.
            oldest.abort();
            tracing::debug!(%peer, "metrics: {MAX_CLIENTS} clients at once; the oldest was cut");
        }
        let tx = tx.clone();
        let task = tokio::spawn(async move {
            match tokio::time::timeout(CLIENT_DEADLINE, answer(stream, &tx)).await {
                Ok(Err(err)) => tracing::debug!(%peer, "metrics client: {err:#}"),
                Err(_) => tracing::debug!(%peer, "metrics client cut after {CLIENT_DEADLINE:?}"),
                Ok(Ok(())) => {}
            }
        });
        clients.push_back(task.abort_handle());
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// `GET /metrics` (`head`: HEAD, headers only).
    Metrics { head: bool },
    /// Another path.
    NotFound,
    /// Another method on `/metrics`.
    MethodNotAllowed,
    /// Not an HTTP request line.
    BadRequest,
}

/// Reads one request head and answers it.
async fn answer(mut stream: TcpStream, tx: &mpsc::Sender<MetricsRequest>) -> anyhow::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Err(_) => anyhow::bail!("no complete request within {READ_TIMEOUT:?}"),
        Ok(Err(err)) => return Err(err.into()),
        Ok(Ok(None)) => {
            let response = response(
                "431 Request Header Fields Too Large",
                "text/plain",
                "request too large\n",
                false,
            );
            stream.write_all(&response).await?;
            close(stream).await;
            return Ok(());
        }
        Ok(Ok(Some(head))) => head,
    };
    let response = match route(&head) {
        Route::Metrics { head } => match ask(tx).await {
            Some(text) => response("200 OK", CONTENT_TYPE, &text, head),
            None => response(
                "503 Service Unavailable",
                "text/plain",
                "the daemon did not answer\n",
                head,
            ),
        },
        Route::NotFound => response(
            "404 Not Found",
            "text/plain",
            "not found: the metrics are at /metrics\n",
            false,
        ),
        Route::MethodNotAllowed => response(
            "405 Method Not Allowed",
            "text/plain",
            "only GET and HEAD\n",
            false,
        ),
        Route::BadRequest => response("400 Bad Request", "text/plain", "bad request\n", false),
    };
    stream.write_all(&response).await?;
    close(stream).await;
    Ok(())
}

/// Ends the connection gracefully: FIN first, then what the client still
/// sends is read and dropped (briefly, and only so much), so that unread
/// input does not turn the close into a reset that loses the response.
async fn close(mut stream: TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut buffer = [0u8; 1024];
        let mut left = 16 * MAX_REQUEST;
        while left > 0 {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// Reads until the blank line ending the head; `None` when it grows past
/// [`MAX_REQUEST`] first.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::with_capacity(512);
    let mut buffer = [0u8; 1024];
    loop {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buffer[..n]);
        if let Some(end) = head_end(&head) {
            head.truncate(end);
            return Ok(Some(String::from_utf8_lossy(&head).into_owned()));
        }
        if head.len() > MAX_REQUEST {
            return Ok(None);
        }
    }
}

/// Where the head ends (`\r\n\r\n`, or `\n\n` from lax clients).
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = bytes.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Routes a request by its first line: `METHOD TARGET HTTP/1.x`.
fn route(head: &str) -> Route {
    let line = head.lines().next().unwrap_or_default();
    let mut words = line.split_ascii_whitespace();
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let path = target.split(['?', '#']).next().unwrap_or_default();
    if path != "/metrics" {
        return Route::NotFound;
    }
    match method {
        "GET" => Route::Metrics { head: false },
        "HEAD" => Route::Metrics { head: true },
        _ => Route::MethodNotAllowed,
    }
}

/// Asks the daemon's loop for the text; `None` when it does not answer in time.
async fn ask(tx: &mpsc::Sender<MetricsRequest>) -> Option<String> {
    let (reply, rx) = oneshot::channel();
    tokio::time::timeout(ANSWER_TIMEOUT, tx.send(MetricsRequest { reply }))
        .await
        .ok()?
        .ok()?;
    tokio::time::timeout(ANSWER_TIMEOUT, rx).await.ok()?.ok()
}

/// A whole response; `head_only` leaves the body out (HEAD).
fn response(status: &str, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(body.as_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn requests_are_routed() {
        assert_eq!(
            route("GET /metrics HTTP/1.1\r\nHost: x"),
            Route::Metrics { head: false }
        );
        assert_eq!(
            route("HEAD /metrics?x=1 HTTP/1.0"),
            Route::Metrics { head: true }
        );
        assert_eq!(route("GET / HTTP/1.1"), Route::NotFound);
        assert_eq!(route("GET /metricsx HTTP/1.1"), Route::NotFound);
        assert_eq!(route("POST /metrics HTTP/1.1"), Route::MethodNotAllowed);
        assert_eq!(route("GET /metrics"), Route::BadRequest);
        assert_eq!(route("GET /metrics SPDY/3"), Route::BadRequest);
        assert_eq!(route(""), Route::BadRequest);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(20));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(14));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }

    /// A blocking client: sends `request`, returns the whole response.
    fn exchange(address: SocketAddr, request: &[u8]) -> String {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request).unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
    }

    #[test]
    fn the_endpoint_answers_scrapes_and_nothing_else() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = listener.local_addr().unwrap();
        assert!(bind(address).is_err(), "the address is taken");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (tx, mut rx) = mpsc::channel::<MetricsRequest>(4);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = std::thread::spawn(move || {
            runtime.block_on(async move {
                tokio::spawn(serve(listener, tx));
                tokio::spawn(async move {
                    let mut scrapes = 0;
                    while let Some(request) = rx.recv().await {
                        scrapes += 1;
                        let _ = request.reply.send(format!("procespy_test {scrapes}\n"));
                    }
                });
                let _ = stopped.await;
            })
        });
        let ok = exchange(address, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n")),
            "{ok}"
        );
        assert!(ok.contains("Content-Length: 16\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nprocespy_test 1\n"), "{ok}");
        let head = exchange(address, b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        let missing = exchange(address, b"GET / HTTP/1.1\r\n\r\n");
        assert!(
            missing.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{missing}"
        );
        let post = exchange(address, b"POST /metrics HTTP/1.1\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_REQUEST + 10));
        let large = exchange(address, &huge);
        assert!(large.starts_with("HTTP/1.1 431 "), "{large}");
        stop.send(()).unwrap();
        server.join().unwrap();
    }
}
