//! The email queue: messages in the spool, sent in order by one task at a
//! time, retried with exponential backoff while the server cannot be
//! reached, removed once it accepted them.
//!
//! A transient failure (no connection, a timeout, a 4xx answer) stops the
//! pass and backs off the server: the messages behind it would fail the
//! same way. A permanent refusal (5xx) is that message's alone: it backs
//! off that message only, the others go on at once; a message refused
//! [`MAX_REFUSALS`] times is moved to `rejected/` in the spool and logged.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::task::JoinHandle;

use super::{
    email,
    spool::{Mail, Spool},
};
use crate::config::Email;

/// The first wait after a failed attempt; it doubles up to [`MAX_BACKOFF`].
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between attempts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A message refused this many times is set aside.
pub(crate) const MAX_REFUSALS: u32 = 3;

/// One message waiting.
struct Queued {
    id: u64,
    /// Its spool file; `None` when it could not be written (kept in memory).
    path: Option<PathBuf>,
    mail: Arc<Mail>,
    refusals: u32,
    /// Refused before: not tried again until then.
    not_before: Option<Instant>,
}

/// What one pass over the queue did.
#[derive(Default)]
struct Pass {
    sent: Vec<u64>,
    refused: Vec<(u64, String)>,
    /// A transient failure stopped the pass.
    failed: Option<String>,
}

/// The queue.
pub(crate) struct Outbox {
    config: Email,
    host: String,
    spool: Option<Spool>,
    queue: Vec<Queued>,
    next_id: u64,
    pass: Option<JoinHandle<Pass>>,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// The failure logged when sending started to fail, until it works again.
    failing: Option<String>,
    /// Emails the server accepted, and attempts that failed, since start.
    tally: Tally,
}

/// Deliveries since start: accepted, and attempts that failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Delivered (accepted by the server, or shown).
    pub(crate) sent: u64,
    /// Attempts that failed (each retry counts).
    pub(crate) failed: u64,
}

impl Outbox {
    /// The queue for `config`, holding what its spool holds from before.
    pub(crate) fn new(config: Email, host: String) -> Outbox {
        let mut outbox = Outbox {
            config: config.clone(),
            host,
            spool: None,
            queue: Vec::new(),
            next_id: 0,
            pass: None,
            retry_at: None,
            backoff: FIRST_BACKOFF,
            failing: None,
            tally: Tally::default(),
        };
        if config.enabled {
            outbox.open_spool();
        }
        outbox
    }

    /// Whether email is on.
    pub(crate) fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// The `[notify.email]` in force.
    pub(crate) fn config(&self) -> &Email {
        &self.config
    }

    /// Opens the configured spool directory and queues what it holds.
    fn open_spool(&mut self) {
        let dir = self.config.spool_dir.clone();
        let spool = match Spool::open(&dir) {
            Ok(spool) => spool,
            Err(err) => {
                tracing::error!(
                    "cannot use the email spool {}: {err}; emails are kept in memory only",
                    dir.display()
                );
                self.spool = None;
                return;
            }
        };
        let paths = spool.list().unwrap_or_else(|err| {
            tracing::error!("cannot list the email spool {}: {err}", dir.display());
            Vec::new()
        });
        let mut found = 0;
        for path in paths {
            if self.queue.iter().any(|q| q.path.as_ref() == Some(&path)) {
                continue;
            }
            match Spool::read(&path) {
                Ok(mail) => {
                    self.push(Some(path), mail);
                    found += 1;
                }
                Err(err) => {
                    tracing::error!("unreadable message {} in the spool: {err}", path.display());
                    if let Ok(to) = spool.reject(&path) {
                        tracing::error!("moved to {}", to.display());
                    }
                }
            }
        }
        if found > 0 {
            tracing::info!(
                queued = found,
                "{found} emails wait in the spool {} from before: sending them",
                dir.display()
            );
        }
        self.spool = Some(spool);
    }

    fn push(&mut self, path: Option<PathBuf>, mail: Mail) {
        self.next_id += 1;
        self.queue.push(Queued {
            id: self.next_id,
            path,
            mail: Arc::new(mail),
            refusals: 0,
            not_before: None,
        });
    }

    /// A new `[notify.email]`: a new spool directory is read, a new server
    /// is tried at once.
    pub(crate) fn configure(&mut self, config: Email) {
        let old = std::mem::replace(&mut self.config, config.clone());
        if config.enabled && (!old.enabled || old.spool_dir != config.spool_dir) {
            self.open_spool();
        }
        if old != config {
            self.retry_at = None;
            self.backoff = FIRST_BACKOFF;
        }
    }

    /// Writes `mail` to the spool and queues it.
    pub(crate) fn enqueue(&mut self, mail: Mail) {
        let path = match self.spool.as_mut().map(|spool| spool.write(&mail)) {
            Some(Ok(path)) => Some(path),
            Some(Err(err)) => {
                tracing::error!(
                    "cannot write to the email spool {}: {err}; the message is kept in memory only",
                    self.config.spool_dir.display()
                );
                None
            }
            None => None,
        };
        tracing::debug!(subject = %mail.subject, spool = ?path, "email queued");
        self.push(path, mail);
    }

    /// Starts a pass when there is mail, none runs, and no backoff holds it.
    pub(crate) fn maybe_start(&mut self, now: Instant) {
        if !self.config.enabled
            || self.pass.is_some()
            || self.queue.is_empty()
            || self.retry_at.is_some_and(|at| now < at)
        {
            return;
        }
        let batch: Vec<(u64, Option<PathBuf>, Arc<Mail>)> = self
            .queue
            .iter()
            .filter(|q| q.not_before.is_none_or(|at| at <= now))
            .map(|q| (q.id, q.path.clone(), Arc::clone(&q.mail)))
            .collect();
        if batch.is_empty() {
            return;
        }
        self.retry_at = None;
        let config = self.config.clone();
        let host = self.host.clone();
        self.pass = Some(tokio::spawn(run_pass(config, host, batch)));
    }

    /// Waits for the running pass to end and takes its outcome (pending
    /// forever when none runs).
    pub(crate) async fn next_done(&mut self) {
        let Some(pass) = self.pass.as_mut() else {
            return std::future::pending().await;
        };
        let result = pass.await;
        self.pass = None;
        match result {
            Ok(pass) => self.on_pass(pass),
            Err(err) => {
                tracing::error!("the email task failed: {err}");
                self.back_off();
            }
        }
    }

    /// Emails accepted and attempts failed since start.
    pub(crate) fn tally(&self) -> Tally {
        self.tally
    }

    fn on_pass(&mut self, pass: Pass) {
        let sent = pass.sent.len();
        self.tally.sent += sent as u64;
        self.tally.failed += pass.refused.len() as u64 + u64::from(pass.failed.is_some());
        self.queue.retain(|q| !pass.sent.contains(&q.id));
        for (id, reason) in &pass.refused {
            let Some(index) = self.queue.iter().position(|q| q.id == *id) else {
                continue;
            };
            let queued = &mut self.queue[index];
            queued.refusals += 1;
            // FIRST_BACKOFF, doubled for each refusal: this message only.
            let wait = FIRST_BACKOFF * 2u32.pow(queued.refusals - 1);
            queued.not_before = Some(Instant::now() + wait.min(MAX_BACKOFF));
            tracing::error!(
                subject = %queued.mail.subject,
                "the SMTP server refused an email ({} of {MAX_REFUSALS}): {reason}",
                queued.refusals
            );
            if queued.refusals >= MAX_REFUSALS {
                let queued = self.queue.remove(index);
                match (&self.spool, &queued.path) {
                    (Some(spool), Some(path)) => match spool.reject(path) {
                        Ok(to) => tracing::error!("email set aside as {}", to.display()),
                        Err(err) => tracing::error!("cannot set aside {}: {err}", path.display()),
                    },
                    _ => tracing::error!(subject = %queued.mail.subject, "email dropped"),
                }
            }
        }
        if let Some(reason) = pass.failed {
            if self.failing.is_none() {
                tracing::warn!(
                    queued = self.queue.len(),
                    "cannot send email through {}:{}: {reason}; {}, tried again with backoff",
                    self.config.server,
                    self.config.port,
                    self.waiting()
                );
            } else {
                tracing::debug!("email still failing: {reason}");
            }
            self.failing = Some(reason);
            self.back_off();
            return;
        }
        if sent > 0 && self.failing.take().is_some() {
            tracing::info!(
                "email goes through {}:{} again",
                self.config.server,
                self.config.port
            );
        }
        self.backoff = FIRST_BACKOFF;
    }

    /// Where the waiting emails are: "3 emails wait in /var/lib/…", or
    /// with those the spool could not take, "… (1 in memory only)".
    fn waiting(&self) -> String {
        let in_memory = self.queue.iter().filter(|q| q.path.is_none()).count();
        let spooled = self.queue.len() - in_memory;
        let spool = self.config.spool_dir.display();
        match (spooled, in_memory) {
            (_, 0) => format!("{spooled} emails wait in {spool}"),
            (0, _) => {
                format!("{in_memory} emails wait in memory only (the spool {spool} took none)")
            }
            _ => format!("{spooled} emails wait in {spool} and {in_memory} in memory only"),
        }
    }

    fn back_off(&mut self) {
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// When the next attempt is due, if one waits for its time: the
    /// server's backoff, or the earliest refused message's.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        if self.pass.is_some() || self.queue.is_empty() || !self.config.enabled {
            return None;
        }
        if self.queue.iter().any(|q| q.not_before.is_none()) {
            return self.retry_at;
        }
        let earliest = self.queue.iter().filter_map(|q| q.not_before).min();
        match (self.retry_at, earliest) {
            (Some(server), Some(message)) => Some(server.max(message)),
            (server, message) => server.or(message),
        }
    }

    /// Emails not yet accepted by the server.
    pub(crate) fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Stops: the running pass is abandoned (its messages are in the spool),
    /// messages kept in memory only get one more try at the spool.
    pub(crate) fn stop(&mut self) {
        if let Some(pass) = self.pass.take() {
            pass.abort();
        }
        let mut lost = 0;
        for queued in self.queue.iter_mut().filter(|q| q.path.is_none()) {
            match self.spool.as_mut().map(|spool| spool.write(&queued.mail)) {
                Some(Ok(path)) => queued.path = Some(path),
                _ => lost += 1,
            }
        }
        if lost > 0 {
            tracing::error!(
                lost,
                "stopping: {lost} emails could not be written to the spool and are lost"
            );
        }
        let spooled = self.queue.len() - lost;
        if spooled > 0 {
            tracing::info!(
                queued = spooled,
                "stopping: {spooled} emails wait in {} for the next start",
                self.config.spool_dir.display()
            );
        }
    }
}

/// Sends the batch in order; stops at the first transient failure.
async fn run_pass(
    config: Email,
    host: String,
    batch: Vec<(u64, Option<PathBuf>, Arc<Mail>)>,
) -> Pass {
    let mut pass = Pass::default();
    let transport = match email::transport(&config, &host) {
        Ok(transport) => transport,
        Err(err) => {
            pass.failed = Some(err);
            return pass;
        }
    };
    for (id, path, mail) in batch {
        match email::send(&transport, &mail).await {
            Ok(()) => {
                if let Some(path) = &path
                    && let Err(err) = Spool::remove(path)
                {
                    tracing::error!(
                        "sent, but cannot remove {} from the spool: {err}",
                        path.display()
                    );
                }
                tracing::info!(
                    event = "email",
                    subject = %mail.subject,
                    message_id = %mail.message_id,
                    "email sent to {}",
                    mail.to.join(", ")
                );
                pass.sent.push(id);
            }
            Err(err) if err.permanent => pass.refused.push((id, err.message)),
            Err(err) => {
                pass.failed = Some(err.message);
                break;
            }
        }
    }
    pass
}
