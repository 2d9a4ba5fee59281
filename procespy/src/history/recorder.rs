//! The thread that writes the history (`procespy-history`, at nice 10).
//!
//! The daemon hands it [`Record`]s with [`Recorder::record`], which never
//! waits: the channel holds [`QUEUE`] batches, and when the disk is so slow
//! that it fills, batches are dropped and counted, and a warning says so
//! once a minute. The thread reads the machine's CPU and memory itself each
//! second (so the daemon's loop reads nothing for it), writes what came in
//! one transaction, and prunes the tiers and the file's size once a minute.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError},
    },
    time::{Duration, Instant},
};

use super::{
    Record,
    store::{Store, SystemSample},
};
use crate::{
    config::History,
    metrics::HistoryFigures,
    sys::{CpuTimes, MemInfo},
};

/// How many batches may wait for the thread (the daemon sends one a second).
const QUEUE: usize = 120;
/// How often the machine is read and what came in is written.
const WRITE_EVERY: Duration = Duration::from_secs(1);
/// How often the tiers and the size bound are applied.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// At most one warning of the same kind this often.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// The history thread's nice value.
const HISTORY_NICE: i32 = 10;

enum Message {
    Records(Vec<Record>),
    Stop(mpsc::Sender<()>),
}

/// What the history did, shared with its thread.
#[derive(Debug, Default)]
struct Counts {
    /// Records written.
    written: AtomicU64,
    /// Records dropped: the queue was full, or a write failed.
    dropped: AtomicU64,
    /// The database's size after the last prune, in bytes.
    size: AtomicU64,
}

/// The daemon's handle on the history thread.
pub(crate) struct Recorder {
    tx: Option<SyncSender<Message>>,
    counts: Arc<Counts>,
    warned: Option<Instant>,
}

impl Recorder {
    /// Starts the thread for `history`; an inert recorder when it is off.
    pub(crate) fn start(history: &History) -> Recorder {
        let counts = Arc::new(Counts::default());
        if !history.enabled {
            return Recorder {
                tx: None,
                counts,
                warned: None,
            };
        }
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let settings = history.clone();
        let thread_counts = Arc::clone(&counts);
        let spawned = std::thread::Builder::new()
            .name("procespy-history".into())
            .spawn(move || run(&settings, &rx, &thread_counts));
        let tx = match spawned {
            Ok(_) => Some(tx),
            Err(err) => {
                tracing::error!("the history is off: cannot start its thread: {err}");
                None
            }
        };
        Recorder {
            tx,
            counts,
            warned: None,
        }
    }

    /// Hands `records` to the thread. Never waits: when the thread is
    /// behind, they are dropped and counted.
    pub(crate) fn record(&mut self, records: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        let Some(tx) = &self.tx else { return };
        let n = records.len() as u64;
        match tx.try_send(Message::Records(records)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.counts.dropped.fetch_add(n, Ordering::Relaxed);
                if self.warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    self.warned = Some(Instant::now());
                    tracing::warn!(
                        "the history cannot keep up with its writes (a slow or full disk?): \
                         samples are dropped; enforcement is not affected"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                self.counts.dropped.fetch_add(n, Ordering::Relaxed);
                self.tx = None;
            }
        }
    }

    /// What the thread wrote and dropped, when the history is on.
    pub(crate) fn figures(&self) -> Option<HistoryFigures> {
        self.enabled().then(|| HistoryFigures {
            written: self.counts.written.load(Ordering::Relaxed),
            dropped: self.counts.dropped.load(Ordering::Relaxed),
            size: self.counts.size.load(Ordering::Relaxed),
        })
    }

    /// Whether the history is being written.
    pub(crate) fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Asks the thread to write what it holds and stop; waits at most
    /// `timeout` (on a blocking-pool thread, not the loop).
    pub(crate) async fn stop(&mut self, timeout: Duration) {
        let Some(tx) = self.tx.take() else { return };
        let _ = tokio::task::spawn_blocking(move || {
            let (ack_tx, ack) = mpsc::channel();
            let deadline = Instant::now() + timeout;
            let mut message = Message::Stop(ack_tx);
            loop {
                match tx.try_send(message) {
                    Ok(()) => break,
                    Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                        message = back;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => return,
                }
            }
            if ack
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .is_err()
            {
                tracing::warn!("the history did not finish writing in {timeout:?}: the last samples may be lost");
            }
        })
        .await;
    }
}

/// The thread's body.
fn run(settings: &History, rx: &Receiver<Message>, counts: &Counts) {
    if let Err(err) = crate::sys::lower_thread_priority(HISTORY_NICE) {
        tracing::debug!("cannot lower the history thread's priority: {err}");
    }
    let mut store = match Store::open(&settings.path, &settings.tiers) {
        Ok(store) => store,
        Err(err) => {
            tracing::error!("the history is off: {err:#}");
            return;
        }
    };
    tracing::info!("history: {}", settings.path.display());
    let mut pending: Vec<Record> = Vec::new();
    let mut cpu = CpuTimes::read();
    let mut next_write = Instant::now() + WRITE_EVERY;
    let mut next_prune = Instant::now();
    let mut warned: Option<Instant> = None;
    loop {
        let wait = next_write.saturating_duration_since(Instant::now());
        let stop = match rx.recv_timeout(wait) {
            Ok(Message::Records(records)) => {
                pending.extend(records);
                None
            }
            Ok(Message::Stop(ack)) => Some(Some(ack)),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => Some(None),
        };
        let now = Instant::now();
        if now < next_write && stop.is_none() {
            continue;
        }
        next_write = now + WRITE_EVERY;
        let system = read_system(&mut cpu);
        match store.write(&pending, Some(system)) {
            Ok(()) => {
                counts
                    .written
                    .fetch_add(pending.len() as u64, Ordering::Relaxed);
            }
            Err(err) => {
                counts
                    .dropped
                    .fetch_add(pending.len() as u64, Ordering::Relaxed);
                if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    warned = Some(now);
                    tracing::warn!(
                        "cannot write the history: {err:#}; enforcement is not affected"
                    );
                }
            }
        }
        for record in &pending {
            if let Record::Exited { key, .. } = record {
                store.forget(key);
            }
        }
        pending.clear();
        if now >= next_prune {
            next_prune = now + PRUNE_EVERY;
            if let Err(err) = store.prune(crate::sys::epoch_secs(), settings.max_size) {
                tracing::warn!("cannot prune the history: {err:#}");
            }
            counts
                .size
                .store(store.size().unwrap_or(0), Ordering::Relaxed);
        }
        if let Some(ack) = stop {
            if let Some(ack) = ack {
                let _ = ack.send(());
            }
            return;
        }
    }
}

/// The machine's CPU busy % since `last` (updated) and its memory now.
fn read_system(last: &mut CpuTimes) -> SystemSample {
    let now = CpuTimes::read();
    let total = now.total.saturating_sub(last.total);
    let busy = now.busy.saturating_sub(last.busy);
    *last = now;
    let mem = MemInfo::read();
    SystemSample {
        t: crate::sys::epoch_secs(),
        cpu_busy: if total == 0 {
            0.0
        } else {
            busy as f64 * 100.0 / total as f64
        },
        mem_used: mem.total.saturating_sub(mem.available),
        mem_available: mem.available,
    }
}
