//! Prometheus metrics: `[metrics] listen = "127.0.0.1:9613"` serves
//! `GET /metrics` in the text exposition format (version 0.0.4).
//!
//! The daemon's loop owns every figure. The HTTP side ([`serve`]) holds
//! none: for each scrape it sends a [`MetricsRequest`] to the loop, which
//! fills a [`Snapshot`] from its state and answers with [`render`]'s text.
//! No locks are shared, and a scrape costs the loop one render.
//!
//! The HTTP server is a minimal HTTP/1.1 responder, one request per
//! connection: a scrape is one GET, and Prometheus copes with
//! `Connection: close`. A request head larger than [`MAX_REQUEST`] or slower
//! than [`READ_TIMEOUT`] is dropped, and at most [`MAX_CLIENTS`] connections
//! are served at once; an HTTP crate would bring a large dependency tree for
//! that.
//!
//! The families (all prefixed `procespy_`):
//!
//! | family | type | labels |
//! | --- | --- | --- |
//! | `build_info` | gauge | `version` |
//! | `mode` | gauge | `mode` (`ebpf`, `proc`): 1 for the one in use |
//! | `dry_run` | gauge | |
//! | `uptime_seconds` | gauge | |
//! | `processes` | gauge | (processes in the table) |
//! | `limit_bytes`, `watched_processes`, `rss_total_bytes`, `rss_largest_bytes` | gauge | `index`, `rule` |
//! | `actions_total` | counter | `rule`, `action`, `result` ([`result_class`]) |
//! | `alerts_total` | counter | `channel` (`popup`, `email`), `result` (`sent`, `failed`) |
//! | `alerts_queued` | gauge | |
//! | `spool_messages`, `spool_bytes` | gauge | (with email enabled) |
//! | `lost_events_total` | counter | (eBPF mode) |
//! | `examinations_total` | counter | |
//! | `examination_duration_seconds` | gauge | (the last one) |

use std::{
    collections::BTreeMap, fmt::Write as _, net::SocketAddr, path::Path, sync::Arc, time::Duration,
};

use anyhow::Context;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc, oneshot},
};

use crate::{config::Limit, enforce::ActionRecord};

/// The Content-Type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Largest request head accepted, in bytes.
pub const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the daemon's loop may take to answer a scrape.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed at once.
pub const MAX_CLIENTS: usize = 8;

/// Everything `/metrics` shows, filled by the daemon from its state.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// `"ebpf"` or `"proc"`.
    pub mode: String,
    /// Whether signals are withheld (`--dry-run` or `[enforce] dry_run`).
    pub dry_run: bool,
    /// Time since the daemon started.
    pub uptime: Duration,
    /// Processes in the daemon's table.
    pub processes: u64,
    /// One entry per `[[limit]]`, in file order (see [`tally_limits`]).
    pub limits: Vec<LimitFigures>,
    /// Every action taken since the daemon started.
    pub actions: ActionCounts,
    /// Popups and emails delivered or given up, since the daemon started.
    pub alerts: AlertCounts,
    /// Alerts not delivered yet.
    pub alerts_queued: u64,
    /// Emails waiting in the spool, when email is enabled (see [`spool_usage`]).
    pub spool: Option<SpoolUsage>,
    /// Kernel events lost because the ring buffer was full (eBPF mode only).
    pub lost_events: Option<u64>,
    /// Full `/proc` examinations merged.
    pub examinations: u64,
    /// How long the last examination took.
    pub last_examination: Option<Duration>,
}

/// What one `[[limit]]` covers right now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LimitFigures {
    /// 0-based position among the `[[limit]]` tables.
    pub index: usize,
    /// The limit's name or pattern.
    pub rule: String,
    /// `max_memory` in bytes.
    pub max_memory: u64,
    /// Processes it covers.
    pub processes: u64,
    /// Their RSS summed, in bytes.
    pub rss_total: u64,
    /// The largest RSS among them, in bytes.
    pub rss_largest: u64,
}

/// Builds one [`LimitFigures`] per limit (a limit covering nothing shows
/// zeros) from the covered processes, given as (limit index, RSS in bytes).
pub fn tally_limits(
    limits: &[Limit],
    covered: impl IntoIterator<Item = (usize, u64)>,
) -> Vec<LimitFigures> {
    let mut figures: Vec<LimitFigures> = limits
        .iter()
        .enumerate()
        .map(|(index, limit)| LimitFigures {
            index,
            rule: limit.label.clone(),
            max_memory: limit.max_memory,
            ..LimitFigures::default()
        })
        .collect();
    for (index, rss) in covered {
        if let Some(figure) = figures.get_mut(index) {
            figure.processes += 1;
            figure.rss_total += rss;
            figure.rss_largest = figure.rss_largest.max(rss);
        }
    }
    figures
}

/// Counts of actions by rule, action and result class; the daemon keeps one
/// for its whole life and [`count`](ActionCounts::count)s every record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ActionCounts {
    counts: BTreeMap<(String, String, &'static str), u64>,
}

impl ActionCounts {
    /// Counts one action.
    pub fn count(&mut self, record: &ActionRecord) {
        let key = (
            record.rule.clone(),
            record.action.clone(),
            result_class(&record.result),
        );
        *self.counts.entry(key).or_default() += 1;
    }

    /// How many actions had this rule, action and result class.
    pub fn get(&self, rule: &str, action: &str, result: &str) -> u64 {
        self.counts
            .iter()
            .filter(|((r, a, c), _)| r == rule && a == action && *c == result)
            .map(|(_, n)| n)
            .sum()
    }

    /// (rule, action, result class, count), sorted.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &'static str, u64)> {
        self.counts
            .iter()
            .map(|((rule, action, class), n)| (rule.as_str(), action.as_str(), *class, *n))
    }
}

/// The result of an [`ActionRecord`] as a label value from a small set
/// (the record's text carries details such as an errno or a byte count):
/// `sent`, `gone`, `refused`, `dry-run`, `failed`, `under-limit`,
/// `over-limit` (action `alert`), `other`.
pub fn result_class(result: &str) -> &'static str {
    const CLASSES: [(&str, &str); 7] = [
        ("sent", "sent"),
        ("gone", "gone"),
        ("refused", "refused"),
        ("dry-run", "dry-run"),
        ("failed", "failed"),
        ("under the limit", "under-limit"),
        ("over the limit", "over-limit"),
    ];
    let result = result.trim_start();
    if result.starts_with("back under") {
        return "under-limit";
    }
    CLASSES
        .iter()
        .find(|(prefix, _)| result.starts_with(prefix))
        .map_or("other", |(_, class)| class)
}

/// Popups and emails, delivered or given up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AlertCounts {
    /// Popups shown on a session bus.
    pub popups_sent: u64,
    /// Popups that could not be shown.
    pub popups_failed: u64,
    /// Emails the SMTP server accepted.
    pub emails_sent: u64,
    /// Emails the server refused for good.
    pub emails_failed: u64,
}

/// What the email spool holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolUsage {
    /// Messages waiting to be sent.
    pub messages: u64,
    /// Their size in bytes.
    pub bytes: u64,
}

/// Counts the messages waiting in the spool directory `dir`: its visible
/// `*.json` files (temporary files are hidden; refused ones are in a
/// subdirectory). A missing directory holds nothing.
pub fn spool_usage(dir: &Path) -> SpoolUsage {
    let mut usage = SpoolUsage::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return usage;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        if let Ok(meta) = entry.metadata()
            && meta.is_file()
        {
            usage.messages += 1;
            usage.bytes += meta.len();
        }
    }
    usage
}

/// Renders `snapshot` in the text exposition format, version 0.0.4.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = Exposition::default();
    out.family(
        "procespy_build_info",
        "gauge",
        "procespy's version; always 1.",
    );
    out.sample(
        "procespy_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    out.family(
        "procespy_mode",
        "gauge",
        "How processes are followed: 1 for the mode in use (ebpf: kernel events; proc: /proc polling).",
    );
    for mode in ["ebpf", "proc"] {
        out.sample(
            "procespy_mode",
            &[("mode", mode)],
            u64::from(snapshot.mode == mode),
        );
    }
    out.family(
        "procespy_dry_run",
        "gauge",
        "1 when signals are withheld (dry run), else 0.",
    );
    out.sample("procespy_dry_run", &[], u64::from(snapshot.dry_run));
    out.family(
        "procespy_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
    );
    out.sample_f64(
        "procespy_uptime_seconds",
        &[],
        snapshot.uptime.as_secs_f64(),
    );
    out.family(
        "procespy_processes",
        "gauge",
        "Processes in the daemon's table.",
    );
    out.sample("procespy_processes", &[], snapshot.processes);

    type Figure = fn(&LimitFigures) -> u64;
    let per_limit: [(&str, &str, Figure); 4] = [
        (
            "procespy_limit_bytes",
            "The limit's max_memory in bytes.",
            |l| l.max_memory,
        ),
        (
            "procespy_watched_processes",
            "Processes the limit covers.",
            |l| l.processes,
        ),
        (
            "procespy_rss_total_bytes",
            "Resident memory of the processes the limit covers, summed, in bytes.",
            |l| l.rss_total,
        ),
        (
            "procespy_rss_largest_bytes",
            "Resident memory of the largest process the limit covers, in bytes.",
            |l| l.rss_largest,
        ),
    ];
    for (name, help, figure) in per_limit {
        out.family(name, "gauge", help);
        for limit in &snapshot.limits {
            let index = limit.index.to_string();
            out.sample(
                name,
                &[("index", &index), ("rule", &limit.rule)],
                figure(limit),
            );
        }
    }

    out.family(
        "procespy_actions_total",
        "counter",
        "Actions on processes over their limit, by rule, action (SIGTERM, SIGKILL, SIGKILL (kernel), alert, none) and result (sent, gone, refused, dry-run, failed, under-limit, over-limit, other).",
    );
    for (rule, action, result, count) in snapshot.actions.iter() {
        out.sample(
            "procespy_actions_total",
            &[("rule", rule), ("action", action), ("result", result)],
            count,
        );
    }
    out.family(
        "procespy_alerts_total",
        "counter",
        "Alerts by channel (popup, email) and result (sent, failed).",
    );
    let alerts = &snapshot.alerts;
    for (channel, result, count) in [
        ("popup", "sent", alerts.popups_sent),
        ("popup", "failed", alerts.popups_failed),
        ("email", "sent", alerts.emails_sent),
        ("email", "failed", alerts.emails_failed),
    ] {
        out.sample(
            "procespy_alerts_total",
            &[("channel", channel), ("result", result)],
            count,
        );
    }
    out.family(
        "procespy_alerts_queued",
        "gauge",
        "Alerts not delivered yet.",
    );
    out.sample("procespy_alerts_queued", &[], snapshot.alerts_queued);
    if let Some(spool) = snapshot.spool {
        out.family(
            "procespy_spool_messages",
            "gauge",
            "Emails waiting in the spool.",
        );
        out.sample("procespy_spool_messages", &[], spool.messages);
        out.family(
            "procespy_spool_bytes",
            "gauge",
            "Size of the emails waiting in the spool, in bytes.",
        );
        out.sample("procespy_spool_bytes", &[], spool.bytes);
    }
    if let Some(lost) = snapshot.lost_events {
        out.family(
            "procespy_lost_events_total",
            "counter",
            "Kernel events lost because the ring buffer was full (each loss triggers a /proc examination).",
        );
        out.sample("procespy_lost_events_total", &[], lost);
    }
    out.family(
        "procespy_examinations_total",
        "counter",
        "Full /proc examinations merged.",
    );
    out.sample("procespy_examinations_total", &[], snapshot.examinations);
    if let Some(duration) = snapshot.last_examination {
        out.family(
            "procespy_examination_duration_seconds",
            "gauge",
            "How long the last full /proc examination took, in seconds.",
        );
        out.sample_f64(
            "procespy_examination_duration_seconds",
            &[],
            duration.as_secs_f64(),
        );
    }
    out.text
}

/// The text being built.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.sample_text(name, labels, &value.to_string());
    }

    fn sample_f64(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.sample_text(name, labels, &value.to_string());
    }

    fn sample_text(&mut self, name: &str, labels: &[(&str, &str)], value: &str) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (n, (label, text)) in labels.iter().enumerate() {
                if n > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", escape_label(text));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

/// A label value: backslash, double quote and line feed escaped.
fn escape_label(text: &str) -> String {
    text.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// A HELP text: backslash and line feed escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', r"\\").replace('\n', r"\n")
}

/// A scrape, sent to the daemon's loop: answer with [`render`]'s text.
#[derive(Debug)]
pub struct MetricsRequest {
    /// Where the rendered text goes.
    pub reply: oneshot::Sender<String>,
}

/// Binds the metrics address with std (non-blocking), so it can be called
/// before the tokio runtime exists and fail early; [`serve`] takes it on.
pub fn bind(listen: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("binding the metrics address {listen}"))?;
    listener
        .set_nonblocking(true)
        .context("making the metrics socket non-blocking")?;
    Ok(listener)
}

/// Serves `GET /metrics` on `listener` forever, asking the daemon's loop
/// through `tx` for each scrape. Must run inside the tokio runtime.
pub async fn serve(listener: std::net::TcpListener, tx: mpsc::Sender<MetricsRequest>) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!("the metrics endpoint cannot start: {err}");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            // Out of file descriptors, say: do not spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(%peer, "metrics: too many clients at once; connection closed");
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Err(err) = answer(stream, &tx).await {
                tracing::debug!(%peer, "metrics client: {err:#}");
            }
            drop(slot);
        });
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

    fn record(rule: &str, action: &str, result: &str) -> ActionRecord {
        ActionRecord {
            time: 0.0,
            pid: 42,
            name: "x".into(),
            user: "root".into(),
            rss: 1,
            limit: 1,
            rule: rule.into(),
            action: action.into(),
            result: result.into(),
        }
    }

    fn snapshot() -> Snapshot {
        let mut actions = ActionCounts::default();
        actions.count(&record("tp-a", "SIGTERM", "sent"));
        actions.count(&record("tp-a", "SIGTERM", "sent"));
        actions.count(&record("tp-a", "SIGKILL", "failed: EPERM"));
        actions.count(&record(
            r#"^/usr/bin/python3 .*manage\.py "dev"
x"#,
            "alert",
            "over the limit",
        ));
        Snapshot {
            mode: "ebpf".into(),
            dry_run: false,
            uptime: Duration::from_millis(1500),
            processes: 321,
            limits: vec![
                LimitFigures {
                    index: 0,
                    rule: "tp-a".into(),
                    max_memory: 64 << 20,
                    processes: 2,
                    rss_total: 30 << 20,
                    rss_largest: 20 << 20,
                },
                LimitFigures {
                    index: 1,
                    rule: r#"a\b"c"#.into(),
                    ..LimitFigures::default()
                },
            ],
            actions,
            alerts: AlertCounts {
                popups_sent: 3,
                popups_failed: 1,
                emails_sent: 2,
                emails_failed: 0,
            },
            alerts_queued: 4,
            spool: Some(SpoolUsage {
                messages: 1,
                bytes: 2048,
            }),
            lost_events: Some(7),
            examinations: 9,
            last_examination: Some(Duration::from_micros(12_500)),
        }
    }

    #[test]
    fn every_sample_follows_its_help_and_type() {
        let text = render(&snapshot());
        let mut declared = Vec::new();
        let mut last_help = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                last_help = rest.split(' ').next().map(str::to_owned);
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut words = rest.split(' ');
                let name = words.next().unwrap();
                assert_eq!(last_help.as_deref(), Some(name), "TYPE after its HELP");
                assert!(matches!(words.next(), Some("gauge" | "counter")));
                assert!(
                    !declared.contains(&name.to_owned()),
                    "{name} declared twice"
                );
                declared.push(name.to_owned());
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(declared.last().map(String::as_str), Some(name), "{line}");
            }
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn figures_are_rendered() {
        let text = render(&snapshot());
        for line in [
            "procespy_mode{mode=\"ebpf\"} 1",
            "procespy_mode{mode=\"proc\"} 0",
            "procespy_dry_run 0",
            "procespy_uptime_seconds 1.5",
            "procespy_processes 321",
            "procespy_limit_bytes{index=\"0\",rule=\"tp-a\"} 67108864",
            "procespy_watched_processes{index=\"0\",rule=\"tp-a\"} 2",
            "procespy_rss_total_bytes{index=\"0\",rule=\"tp-a\"} 31457280",
            "procespy_rss_largest_bytes{index=\"0\",rule=\"tp-a\"} 20971520",
            "procespy_watched_processes{index=\"1\",rule=\"a\\\\b\\\"c\"} 0",
            "procespy_actions_total{rule=\"tp-a\",action=\"SIGTERM\",result=\"sent\"} 2",
            "procespy_actions_total{rule=\"tp-a\",action=\"SIGKILL\",result=\"failed\"} 1",
            "procespy_alerts_total{channel=\"popup\",result=\"failed\"} 1",
            "procespy_alerts_total{channel=\"email\",result=\"sent\"} 2",
            "procespy_alerts_queued 4",
            "procespy_spool_messages 1",
            "procespy_spool_bytes 2048",
            "procespy_lost_events_total 7",
            "procespy_examinations_total 9",
            "procespy_examination_duration_seconds 0.0125",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line} in\n{text}");
        }
    }

    #[test]
    fn odd_rule_names_are_escaped() {
        let text = render(&snapshot());
        let expected = r#"procespy_actions_total{rule="^/usr/bin/python3 .*manage\\.py \"dev\"\nx",action="alert",result="over-limit"} 1"#;
        assert!(text.lines().any(|l| l == expected), "{text}");
        assert_eq!(escape_help("a\\b\nc"), r"a\\b\nc");
    }

    #[test]
    fn absent_figures_are_left_out() {
        let snapshot = Snapshot {
            mode: "proc".into(),
            ..Snapshot::default()
        };
        let text = render(&snapshot);
        assert!(text.contains("procespy_mode{mode=\"proc\"} 1"));
        for absent in [
            "procespy_lost_events_total",
            "procespy_spool_messages",
            "procespy_examination_duration_seconds",
            "procespy_actions_total{",
            "procespy_limit_bytes{",
        ] {
            assert!(!text.contains(absent), "{absent} in\n{text}");
        }
    }

    #[test]
    fn results_fall_into_few_classes() {
        for (result, class) in [
            ("sent", "sent"),
            ("gone: the process exited first", "gone"),
            ("refused: protected (sshd)", "refused"),
            ("dry-run: not sent", "dry-run"),
            ("failed: Operation not permitted (os error 1)", "failed"),
            ("under the limit on confirmation (123 bytes)", "under-limit"),
            ("back under the limit after grace", "under-limit"),
            ("over the limit", "over-limit"),
            ("something new", "other"),
        ] {
            assert_eq!(result_class(result), class, "{result}");
        }
        let mut counts = ActionCounts::default();
        counts.count(&record("r", "SIGTERM", "sent"));
        assert_eq!(counts.get("r", "SIGTERM", "sent"), 1);
        assert_eq!(counts.get("r", "SIGKILL", "sent"), 0);
    }

    #[test]
    fn limits_are_tallied() {
        let config = crate::config::Config::builtin_default();
        assert!(tally_limits(&config.limits, [(0, 5)]).is_empty());
        let limit = |label: &str, max| Limit {
            index: 0,
            label: label.into(),
            matcher: crate::config::Matcher::Name(label.into()),
            user: None,
            max_memory: max,
            max_memory_text: max.to_string(),
            scope: crate::config::Scope::Process,
            action: crate::config::Action::Kill,
        };
        let limits = [limit("a", 100), limit("b", 200)];
        let figures = tally_limits(&limits, [(1, 10), (1, 30), (0, 5), (7, 1)]);
        assert_eq!(figures.len(), 2);
        assert_eq!((figures[0].processes, figures[0].rss_total), (1, 5));
        assert_eq!(
            (
                figures[1].index,
                figures[1].rule.as_str(),
                figures[1].max_memory,
                figures[1].processes,
                figures[1].rss_total,
                figures[1].rss_largest
            ),
            (1, "b", 200, 2, 40, 30)
        );
    }

    #[test]
    fn the_spool_counts_visible_json_files() {
        let dir =
            std::env::temp_dir().join(format!("procespy-metrics-spool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("rejected")).unwrap();
        std::fs::write(dir.join("1-2-3.json"), "12345").unwrap();
        std::fs::write(dir.join(".1-2-4.json.tmp"), "123").unwrap();
        std::fs::write(dir.join("rejected/0-1-1.json"), "1").unwrap();
        assert_eq!(
            spool_usage(&dir),
            SpoolUsage {
                messages: 1,
                bytes: 5
            }
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(spool_usage(&dir), SpoolUsage::default());
    }

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
