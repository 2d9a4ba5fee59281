//! Alerts: desktop popups over D-Bus and email over SMTP.
//!
//! The daemon's loop hands every batch of [`ActionRecord`]s to
//! [`Alerts::submit`], which only puts them on a channel: it never blocks.
//! Everything else happens on a thread of its own (`procespy-alerts`, with
//! its own single-threaded tokio runtime, at nice 10), so that a hanging SMTP
//! server, a hanging session bus or a slow `/proc` read can never delay a
//! kill or the event loop:
//!
//! 1. only actions that matter are kept ([`message::Kind`]): a signal sent
//!    (SIGTERM, SIGKILL, the kernel's SIGKILL), an `alert` action, a dry-run
//!    decision, a refusal (protected process), a signal that failed. Not
//!    "gone" (the process exited first) nor "under the limit on
//!    confirmation" or "back under the limit after grace": nothing happened
//!    that anybody needs to act on;
//! 2. the [`cooldown`] lets at most one message per limit out per period
//!    and summarises the rest in the next; what it lets out waits
//!    [`SETTLE`] (¼ s) for the action to settle;
//! 3. a message about a kill waits, at most [`EXIT_WAIT`], for the daemon
//!    to see the process exit ([`Alerts::exited`]);
//! 4. each message becomes a popup on every session bus ([`desktop`]) and an
//!    email ([`message`], [`email`]) that tells the process's [`story`]
//!    (its growth, crossing, signal and exit, command line and cgroup, and
//!    an inline chart of its RSS) with the five largest processes read
//!    from `/proc` at that moment; the email is written to the spool
//!    ([`spool`]) before anything is sent, and the [`outbox`] sends it,
//!    retrying with backoff, removing it once the server took it.
//!
//! On shutdown ([`Alerts::shutdown`]), actions still on the channel and
//! summaries the cooldown holds become emails in the spool; popups not yet
//! shown are dropped with a log line.

pub(crate) mod cooldown;
pub(crate) mod desktop;
pub(crate) mod email;
pub(crate) mod message;
pub(crate) mod outbox;
pub(crate) mod popup;
pub(crate) mod spool;
pub(crate) mod story;

use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot};

use self::{
    cooldown::Cooldown,
    desktop::Popups,
    message::{Kind, LocalTime, Notice, TopProcess},
    outbox::Outbox,
    story::Story,
};
use crate::{action::ActionRecord, config::Notify, metrics::AlertCounts, users::UserNames};

/// How many of the largest processes an email lists.
pub(crate) const TOP_PROCESSES: usize = 5;

/// How long after an action its popup and email are put together. By then
/// the process being stopped has died: reading `/proc` for the email's list
/// of processes while it dies slowed its death by 2–3 ms on two cores
/// (the reads contend with its exit), and a popup child's fork would come
/// just as the daemon handles what follows the kill.
pub(crate) const SETTLE: Duration = Duration::from_millis(250);

/// How long a message about a kill waits for the process's exit (after
/// [`SETTLE`]): it says when the process exited, or that it had not yet.
pub(crate) const EXIT_WAIT: Duration = Duration::from_secs(3);

/// How long the daemon's side remembers that it alerted about a process,
/// to pass its exit on.
const FOLLOW_EXIT: Duration = Duration::from_secs(60);

/// How long the thread keeps a story for the cooldown's summaries.
const KEEP_STORY: Duration = Duration::from_secs(3600);
/// The most stories kept.
const MAX_STORIES: usize = 1024;

/// What the daemon asks of the alerts thread.
enum Request {
    Actions(Vec<(ActionRecord, Story)>),
    /// A process alerted about exited (epoch seconds).
    Exited {
        pid: u32,
        t: f64,
    },
    Configure(Box<Notify>),
    Stop(oneshot::Sender<()>),
}

/// Figures the alerts thread publishes for `procespy status`.
#[derive(Default)]
struct Shared {
    /// Actions submitted but not yet taken by the thread.
    submitted: AtomicUsize,
    /// Emails not yet accepted, popups not yet shown, actions the cooldown holds.
    waiting: AtomicUsize,
    /// Deliveries since start, for metrics.
    popups_sent: AtomicU64,
    popups_failed: AtomicU64,
    emails_sent: AtomicU64,
    emails_failed: AtomicU64,
}

/// The daemon's handle on the alerts thread.
pub(crate) struct Alerts {
    tx: mpsc::UnboundedSender<Request>,
    shared: Arc<Shared>,
    /// Processes alerted about lately, whose exit the thread wants to hear of.
    following: HashMap<u32, Instant>,
}

impl Alerts {
    /// Starts the alerts thread for `notify`. Emails found in the spool are
    /// sent at once.
    pub(crate) fn start(notify: &Notify) -> Alerts {
        Self::start_with(notify, desktop::own_exe(), PathBuf::from(desktop::RUN_USER))
    }

    /// [`Alerts::start`] with the popup child's binary and the directory of
    /// session buses given.
    pub(crate) fn start_with(notify: &Notify, exe: PathBuf, run_user: PathBuf) -> Alerts {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        let notify = notify.clone();
        let thread_shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("procespy-alerts".into())
            .spawn(move || {
                lower_priority();
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        tracing::error!("alerts are off: cannot start their runtime: {err}");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let worker = Worker::new(notify, exe, run_user, thread_shared);
                    worker.run(rx).await;
                });
                runtime.shutdown_timeout(Duration::from_millis(100));
            });
        if let Err(err) = spawned {
            tracing::error!("alerts are off: cannot start their thread: {err}");
        }
        Alerts {
            tx,
            shared,
            following: HashMap::new(),
        }
    }

    /// Hands the actions just recorded on, with their process's story
    /// (`story` is asked only for those that matter). Never blocks.
    pub(crate) fn submit(
        &mut self,
        actions: Vec<ActionRecord>,
        story: impl Fn(&ActionRecord) -> Story,
    ) {
        let actions: Vec<(ActionRecord, Story)> = actions
            .into_iter()
            .filter(|record| Kind::of(record).is_some())
            .map(|record| {
                let story = story(&record);
                (record, story)
            })
            .collect();
        let now = Instant::now();
        self.following
            .retain(|_, at| now.duration_since(*at) < FOLLOW_EXIT);
        for (record, _) in &actions {
            self.following.insert(record.pid, now);
        }
        if actions.is_empty() {
            return;
        }
        let count = actions.len();
        self.shared.submitted.fetch_add(count, Ordering::Relaxed);
        if self.tx.send(Request::Actions(actions)).is_err() {
            self.shared.submitted.fetch_sub(count, Ordering::Relaxed);
            tracing::debug!("the alerts thread is gone: {count} actions not alerted");
        }
    }

    /// `pid` exited at `t` (epoch seconds): passed on when it was alerted
    /// about lately. Never blocks.
    pub(crate) fn exited(&mut self, pid: u32, t: f64) {
        if self.following.remove(&pid).is_some() {
            let _ = self.tx.send(Request::Exited { pid, t });
        }
    }

    /// Puts a new `[notify]` in force (after a reload).
    pub(crate) fn reconfigure(&self, notify: &Notify) {
        let _ = self.tx.send(Request::Configure(Box::new(notify.clone())));
    }

    /// Alerts not delivered yet: actions on their way to the thread or held
    /// by the cooldown, emails not yet accepted by the server (in the spool),
    /// popups not yet shown.
    pub(crate) fn queued(&self) -> usize {
        self.shared.submitted.load(Ordering::Relaxed) + self.shared.waiting.load(Ordering::Relaxed)
    }

    /// Popups and emails delivered, and attempts failed, since start.
    pub(crate) fn counts(&self) -> AlertCounts {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        AlertCounts {
            popups_sent: get(&self.shared.popups_sent),
            popups_failed: get(&self.shared.popups_failed),
            emails_sent: get(&self.shared.emails_sent),
            emails_failed: get(&self.shared.emails_failed),
        }
    }

    /// Stops the alerts: what is queued in memory is written to the spool as
    /// email; popups not shown are dropped. Waits at most `within`.
    pub(crate) async fn shutdown(&self, within: Duration) {
        let (reply, done) = oneshot::channel();
        if self.tx.send(Request::Stop(reply)).is_err() {
            return;
        }
        if tokio::time::timeout(within, done).await.is_err() {
            tracing::warn!("the alert queue could not be written to the spool within {within:?}");
        }
    }
}

/// The alerts thread's state.
struct Worker {
    cooldown: Cooldown,
    popups: Popups,
    outbox: Outbox,
    host: String,
    users: UserNames,
    shared: Arc<Shared>,
    seq: u64,
    stopping: bool,
    /// Notices waiting for the action to settle, oldest first.
    settling: VecDeque<(Instant, Notice)>,
    /// Notices about kills waiting for the exit, until their deadline.
    exiting: Vec<(Instant, Notice)>,
    /// The stories of the processes alerted about, by PID, with when they came.
    stories: HashMap<u32, (Instant, Story)>,
}

impl Worker {
    fn new(notify: Notify, exe: PathBuf, run_user: PathBuf, shared: Arc<Shared>) -> Worker {
        let host = crate::sys::hostname();
        Worker {
            cooldown: Cooldown::new(notify.cooldown),
            popups: Popups::new(notify.desktop, exe, run_user),
            outbox: Outbox::new(notify.email, host.clone()),
            host,
            users: UserNames::default(),
            shared,
            seq: 0,
            stopping: false,
            settling: VecDeque::new(),
            exiting: Vec::new(),
            stories: HashMap::new(),
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Request>) {
        loop {
            let now = Instant::now();
            for notice in self.cooldown.due(now) {
                self.schedule(notice, now);
            }
            while self.settling.front().is_some_and(|(at, _)| *at <= now) {
                if let Some((_, notice)) = self.settling.pop_front() {
                    self.settled(notice, now);
                }
            }
            let (due, waiting) = std::mem::take(&mut self.exiting)
                .into_iter()
                .partition(|(until, _)| *until <= now);
            self.exiting = waiting;
            for (_, notice) in due {
                self.send(&notice);
            }
            self.popups.retry_due(now);
            self.outbox.maybe_start(now);
            self.publish();
            let deadline = [
                self.settling.front().map(|(at, _)| *at),
                self.exiting.iter().map(|(at, _)| *at).min(),
                self.cooldown.next_deadline(),
                self.popups.next_deadline(),
                self.outbox.next_deadline(),
            ]
            .into_iter()
            .flatten()
            .min();
            let wake = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                request = rx.recv() => match request {
                    Some(Request::Actions(actions)) => self.take(actions),
                    Some(Request::Exited { pid, t }) => self.on_exit(pid, t),
                    Some(Request::Configure(notify)) => self.configure(*notify),
                    Some(Request::Stop(reply)) => {
                        self.stop(&mut rx);
                        let _ = reply.send(());
                        return;
                    }
                    None => {
                        self.stop(&mut rx);
                        return;
                    }
                },
                () = wake => {}
                () = self.popups.next_done() => {}
                () = self.outbox.next_done() => {}
            }
        }
    }

    fn publish(&self) {
        let waiting = self.outbox.pending()
            + self.popups.pending()
            + self.cooldown.held()
            + self.settling.len()
            + self.exiting.len();
        self.shared.waiting.store(waiting, Ordering::Relaxed);
        let (popups, emails) = (self.popups.tally(), self.outbox.tally());
        self.shared
            .popups_sent
            .store(popups.sent, Ordering::Relaxed);
        self.shared
            .popups_failed
            .store(popups.failed, Ordering::Relaxed);
        self.shared
            .emails_sent
            .store(emails.sent, Ordering::Relaxed);
        self.shared
            .emails_failed
            .store(emails.failed, Ordering::Relaxed);
    }

    fn take(&mut self, actions: Vec<(ActionRecord, Story)>) {
        self.shared
            .submitted
            .fetch_sub(actions.len(), Ordering::Relaxed);
        if !self.popups.enabled() && !self.outbox.enabled() {
            return;
        }
        let now = Instant::now();
        self.stories
            .retain(|_, (at, _)| now.duration_since(*at) < KEEP_STORY);
        for (record, story) in actions {
            if self.stories.len() >= MAX_STORIES
                && let Some(oldest) = self
                    .stories
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(pid, _)| *pid)
            {
                self.stories.remove(&oldest);
            }
            // A later action's story (the SIGKILL after the grace) keeps
            // the exit seen already.
            let exited = self.stories.get(&record.pid).and_then(|(_, s)| s.exited);
            let story = Story {
                exited: story.exited.or(exited),
                ..story
            };
            self.stories.insert(record.pid, (now, story));
            if let Some(notice) = self.cooldown.offer(record, now) {
                self.schedule(notice, now);
            }
        }
    }

    /// `notice` has settled: it goes out now, or, for a kill whose exit the
    /// daemon has not seen yet, when it does or [`EXIT_WAIT`] is over.
    fn settled(&mut self, notice: Notice, now: Instant) {
        let pid = notice.headline.pid;
        let wait = Kind::of(&notice.headline) == Some(Kind::Kill)
            && !self.stopping
            && self
                .stories
                .get(&pid)
                .is_some_and(|(_, story)| story.exited.is_none());
        if wait {
            self.exiting.push((now + EXIT_WAIT, notice));
        } else {
            self.send(&notice);
        }
    }

    /// `pid` exited at `t`: its story says so, and a message waiting for
    /// that goes out.
    fn on_exit(&mut self, pid: u32, t: f64) {
        if let Some((_, story)) = self.stories.get_mut(&pid) {
            story.exited = Some(t);
        }
        let (ready, waiting) = std::mem::take(&mut self.exiting)
            .into_iter()
            .partition(|(_, notice)| notice.headline.pid == pid);
        self.exiting = waiting;
        for (_, notice) in ready {
            self.send(&notice);
        }
    }

    /// Queues `notice` to go out [`SETTLE`] from `now`.
    fn schedule(&mut self, notice: Notice, now: Instant) {
        self.settling.push_back((now + SETTLE, notice));
    }

    fn configure(&mut self, notify: Notify) {
        self.cooldown.set_period(notify.cooldown);
        self.popups.configure(notify.desktop);
        self.outbox.configure(notify.email);
    }

    /// Turns `notice` into a popup and an email.
    fn send(&mut self, notice: &Notice) {
        let clock = LocalTime::from_epoch;
        let r = &notice.headline;
        tracing::debug!(event = "alert", pid = r.pid, rule = %r.rule, more = notice.more, "alerting");
        let story = self.stories.get(&r.pid).map(|(_, story)| story);
        if self.popups.enabled() {
            if self.stopping {
                tracing::info!(pid = r.pid, rule = %r.rule, "stopping: popup about {} dropped", r.name);
            } else {
                self.popups.show(message::popup(notice, story, &clock));
            }
        }
        if self.outbox.enabled() {
            let now = crate::sys::epoch_secs();
            let top = self.top_processes();
            let text = message::email(notice, story, &self.host, &top, now, &clock);
            self.seq += 1;
            match email::compose(self.outbox_config(), &text, &self.host, now, self.seq) {
                Ok(mail) => self.outbox.enqueue(mail),
                Err(err) => tracing::error!("cannot make the email about {}: {err}", r.name),
            }
        }
    }

    fn outbox_config(&self) -> &crate::config::Email {
        self.outbox.config()
    }

    /// The largest processes now (statm of every process, then a full
    /// read of the few largest: light on a machine with thousands).
    fn top_processes(&self) -> Vec<TopProcess> {
        crate::scan::largest(TOP_PROCESSES)
            .iter()
            .map(|p| TopProcess {
                pid: p.pid,
                user: self.users.name(Some(p.uid)),
                name: p.name_lossy(),
                rss: p.rss.total(),
            })
            .collect()
    }

    /// Stops: actions still on the channel and summaries held by the
    /// cooldown become emails in the spool; popups are dropped.
    fn stop(&mut self, rx: &mut mpsc::UnboundedReceiver<Request>) {
        self.stopping = true;
        self.popups.stop();
        while let Ok(request) = rx.try_recv() {
            match request {
                Request::Actions(actions) => self.take(actions),
                Request::Exited { pid, t } => self.on_exit(pid, t),
                Request::Configure(notify) => self.configure(*notify),
                Request::Stop(reply) => {
                    let _ = reply.send(());
                }
            }
        }
        let settling: Vec<Notice> = self
            .settling
            .drain(..)
            .chain(self.exiting.drain(..))
            .map(|(_, n)| n)
            .collect();
        for notice in settling.into_iter().chain(self.cooldown.drain()) {
            self.send(&notice);
        }
        self.outbox.stop();
        self.publish();
    }
}

/// Niceness of the alerts thread (and so of the popup children).
pub(crate) const ALERTS_NICE: i32 = 10;

/// Lowers the calling thread's CPU priority to [`ALERTS_NICE`]: on a busy
/// machine, composing an email (a `/proc` read) or a TLS handshake must not
/// take CPU from the process being killed or from the daemon's loop.
fn lower_priority() {
    if let Err(err) = crate::sys::lower_thread_priority(ALERTS_NICE) {
        tracing::debug!("cannot lower the alerts thread's priority: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{action::Outcome, config::Config, sys::Signal};

    fn record(pid: u32, outcome: Outcome) -> ActionRecord {
        crate::action::testing::record(pid, "tp", outcome)
    }

    #[test]
    fn the_host_has_a_name() {
        assert!(!crate::sys::hostname().is_empty());
    }

    #[tokio::test]
    async fn only_actions_that_matter_are_queued_and_shutdown_is_prompt() {
        let mut notify = Config::builtin_default().notify;
        notify.desktop.enabled = false;
        let mut alerts =
            Alerts::start_with(&notify, PathBuf::from("/bin/false"), "/nonexistent".into());
        alerts.submit(
            vec![
                record(
                    1,
                    Outcome::Gone {
                        signal: Signal::Term,
                    },
                ),
                record(2, Outcome::UnderOnConfirmation { rss: 1 }),
            ],
            |_| Story::default(),
        );
        assert_eq!(alerts.queued(), 0);
        let start = Instant::now();
        alerts.shutdown(Duration::from_secs(5)).await;
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn stopping_writes_what_is_queued_in_memory_to_the_spool() {
        let spool =
            std::env::temp_dir().join(format!("procespy-alerts-stop-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&spool);
        let mut notify = Config::builtin_default().notify;
        notify.desktop.enabled = false;
        notify.email = crate::config::Email {
            enabled: true,
            server: "127.0.0.1".into(),
            port: 1, // nothing listens: every attempt fails
            security: crate::config::Security::None,
            from: "procespy@example.com".into(),
            to: vec!["ops@example.com".into()],
            spool_dir: spool.clone(),
            ..crate::config::Email::default()
        };
        let mut alerts =
            Alerts::start_with(&notify, PathBuf::from("/bin/false"), "/nonexistent".into());
        // The first goes out after SETTLE, the two others are held by the cooldown.
        alerts.submit(
            vec![
                record(
                    1,
                    Outcome::Sent {
                        signal: Signal::Term,
                    },
                ),
                record(2, Outcome::KilledByKernel),
                record(
                    3,
                    Outcome::Sent {
                        signal: Signal::Term,
                    },
                ),
            ],
            |_| Story::default(),
        );
        alerts.shutdown(Duration::from_secs(5)).await;
        let files = spool::Spool::open(&spool).unwrap().list().unwrap();
        let subjects: Vec<String> = files
            .iter()
            .map(|p| spool::Spool::read(p).unwrap().subject)
            .collect();
        let _ = std::fs::remove_dir_all(&spool);
        assert_eq!(subjects.len(), 2, "{subjects:?}");
        assert!(subjects[0].contains("(PID 1,"), "{subjects:?}");
        assert!(
            subjects[1].contains("(PID 3,") && subjects[1].contains("and 1 more kill of tp"),
            "{subjects:?}"
        );
    }
}
