//! The ring buffer of kernel events, read through tokio's `AsyncFd`.

use anyhow::{Result, anyhow};
use aya::maps::{Map, MapData, RingBuf};
use procespy_common::{Event, EventKind};
use std::time::{Duration, Instant};

use tokio::io::{
    Interest,
    unix::{AsyncFd, AsyncFdReadyMutGuard},
};

/// A kernel event, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KernelEvent {
    /// What happened.
    pub(crate) kind: EventKind,
    /// The process (a thread id for [`EventKind::Rename`]).
    pub(crate) pid: u32,
    /// The parent, for [`EventKind::Fork`].
    pub(crate) ppid: u32,
    /// The task name, raw bytes.
    pub(crate) comm: Vec<u8>,
    /// RSS in bytes at a breach.
    pub(crate) rss_bytes: u64,
    /// Whether the kernel already sent SIGKILL (breach of a kill-now limit).
    pub(crate) killed: bool,
    /// The breach was seen in another process's context (a writer into the
    /// process's memory): the kernel could not signal the owner.
    pub(crate) foreign: bool,
    /// `CLOCK_MONOTONIC` nanoseconds when the kernel made the event.
    pub(crate) ktime_ns: u64,
}

impl KernelEvent {
    /// Decodes one ring buffer record; `None` for a short or unknown record.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < size_of::<Event>() {
            return None;
        }
        // SAFETY: the length is checked; `Event` is plain data, read unaligned.
        let raw: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        Some(Self {
            kind: EventKind::from_raw(raw.kind)?,
            pid: raw.pid,
            ppid: raw.ppid,
            comm: raw.comm_bytes().to_vec(),
            rss_bytes: raw.rss_bytes,
            killed: raw.flags & procespy_common::EVENT_FLAG_KILLED != 0,
            foreign: raw.flags & procespy_common::EVENT_FLAG_FOREIGN != 0,
            ktime_ns: raw.ktime_ns,
        })
    }
}

/// The stream of events from the kernel: breaches (and usage) on a ring of
/// their own, taken first and at once; lifecycle events in batches.
pub(crate) struct EventStream {
    breaches: AsyncFd<RingBuf<MapData>>,
    lifecycle: AsyncFd<RingBuf<MapData>>,
    /// While lifecycle events keep coming: when the ring is polled next.
    poll: Option<Poll>,
}

/// Polling the lifecycle ring. The eBPF programs wake the reader at most
/// once per `LIFECYCLE_WAKE_NS`; once woken, it polls every
/// [`LIFECYCLE_POLL`] until two polls in a row found nothing, then once
/// more after [`LIFECYCLE_LAST_POLL`], and only then waits for a wake-up
/// again: an event that did not wake it waits at most a poll, and during
/// a storm the daemon wakes a few hundred times a second, not for every
/// fork. The last, later poll finds an event whose program was held up
/// (a virtual CPU descheduled by its host) between deciding not to wake
/// and committing the event, after the reader's last short poll.
#[derive(Clone, Copy)]
struct Poll {
    at: Instant,
    /// Polls in a row that found nothing.
    empty: u8,
}

/// How often the lifecycle ring is polled while events keep coming.
const LIFECYCLE_POLL: Duration = Duration::from_nanos(procespy_common::LIFECYCLE_POLL_NS);

/// How long after the second empty poll in a row the last one comes.
const LIFECYCLE_LAST_POLL: Duration = Duration::from_millis(50);

impl Poll {
    /// The poll after one that took `taken` events (or a wake-up's drain).
    fn after(previous: Option<Poll>, taken: usize) -> Option<Poll> {
        let empty = match (taken, previous) {
            (0, Some(poll)) => poll.empty + 1,
            (0, None) => 1,
            _ => 0,
        };
        let wait = match empty {
            0 | 1 => LIFECYCLE_POLL,
            2 => LIFECYCLE_LAST_POLL,
            _ => return None,
        };
        Some(Poll {
            at: Instant::now() + wait,
            empty,
        })
    }
}

fn register(map: Map) -> Result<AsyncFd<RingBuf<MapData>>> {
    let ring = RingBuf::try_from(map)?;
    // SAFETY: the ring buffer owns its map's descriptor and keeps it open,
    // unchanged, until it is dropped with this `AsyncFd`.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|err| anyhow!("registering a ring buffer with tokio: {err}"))
}

impl EventStream {
    pub(super) fn new(breaches: Map, lifecycle: Map) -> Result<Self> {
        Ok(Self {
            breaches: register(breaches)?,
            lifecycle: register(lifecycle)?,
            poll: None,
        })
    }

    /// Waits for events and appends every one available to `out`:
    /// breaches first, then lifecycle events (polled while they keep
    /// coming, see [`Poll`]).
    pub(crate) async fn next_batch(&mut self, out: &mut Vec<KernelEvent>) -> Result<()> {
        loop {
            let poll_at = self.poll.map(|poll| poll.at);
            tokio::select! {
                biased;
                ready = self.breaches.readable_mut() => {
                    take(ready?, out);
                }
                _ = tokio::time::sleep_until(poll_at.unwrap_or_else(Instant::now).into()), if poll_at.is_some() => {
                    // A breach made before these lifecycle events comes
                    // first, even when its wake-up is not delivered yet
                    // (the daemon resumed from a stop, say): an exit taken
                    // first would leave the breach without its process.
                    drain(self.breaches.get_mut(), out);
                    let before = out.len();
                    drain(self.lifecycle.get_mut(), out);
                    self.poll = Poll::after(self.poll, out.len() - before);
                }
                ready = self.lifecycle.readable_mut(), if poll_at.is_none() => {
                    // Breaches already in their ring come first, even when
                    // their wake-up is not in yet (a daemon resumed from a
                    // stop): a breach must meet its process before its exit.
                    drain(self.breaches.get_mut(), out);
                    let before = out.len();
                    take(ready?, out);
                    self.poll = Poll::after(None, (out.len() - before).max(1));
                }
            }
            if !out.is_empty() {
                return Ok(());
            }
        }
    }

    /// Appends every event already in the rings to `out`, breaches first,
    /// without waiting: what the kernel told before a decision that must
    /// not overtake it (an examination's merge).
    pub(crate) fn pending(&mut self, out: &mut Vec<KernelEvent>) {
        drain(self.breaches.get_mut(), out);
        drain(self.lifecycle.get_mut(), out);
    }
}

/// Drains a ring that polled readable.
fn take(mut ready: AsyncFdReadyMutGuard<'_, RingBuf<MapData>>, out: &mut Vec<KernelEvent>) {
    drain(ready.get_inner_mut(), out);
    ready.clear_ready();
    // A record that landed between the drain and `clear_ready` would
    // otherwise wait for the next wake-up.
    drain(ready.get_inner_mut(), out);
}

fn drain(ring: &mut RingBuf<MapData>, out: &mut Vec<KernelEvent>) {
    while let Some(item) = ring.next() {
        if let Some(event) = KernelEvent::decode(&item) {
            out.push(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use procespy_common::{COMM_LEN, EVENT_FLAG_KILLED};

    use super::*;

    fn raw(kind: u32, comm: &[u8]) -> Vec<u8> {
        let mut name = [0u8; COMM_LEN];
        name[..comm.len()].copy_from_slice(comm);
        let event = Event {
            kind,
            pid: 42,
            ppid: 7,
            flags: EVENT_FLAG_KILLED,
            ktime_ns: 5,
            rss_bytes: 1 << 20,
            comm: name,
        };
        // SAFETY: `Event` is plain data; viewing it as bytes is sound.
        unsafe { std::slice::from_raw_parts((&raw const event).cast::<u8>(), size_of::<Event>()) }
            .to_vec()
    }

    #[test]
    fn decodes_a_breach() {
        let event = KernelEvent::decode(&raw(EventKind::Breach as u32, b"chromium")).unwrap();
        assert_eq!(event.kind, EventKind::Breach);
        assert_eq!((event.pid, event.ppid, event.rss_bytes), (42, 7, 1 << 20));
        assert!(event.killed);
        assert_eq!(event.comm, b"chromium");
    }

    #[test]
    fn keeps_a_full_length_name_and_odd_bytes() {
        let event =
            KernelEvent::decode(&raw(EventKind::Exec as u32, b"a (b) \xff\ncdefghij")).unwrap();
        assert_eq!(event.comm, b"a (b) \xff\ncdefghij");
    }

    #[test]
    fn polls_until_two_polls_in_a_row_find_nothing_then_once_more_later() {
        let woken = Poll::after(None, 1).expect("a wake-up starts polling");
        assert_eq!(woken.empty, 0);
        let empty = Poll::after(Some(woken), 0).expect("one empty poll goes on");
        let busy = Poll::after(Some(empty), 3).expect("events go on");
        assert_eq!(busy.empty, 0);
        let before = Instant::now();
        let last = Poll::after(Some(empty), 0).expect("two empty polls: one more, later");
        assert!(last.at >= before + LIFECYCLE_LAST_POLL);
        assert!(
            Poll::after(Some(last), 0).is_none(),
            "three empty polls stop"
        );
        let again = Poll::after(Some(last), 2).expect("the last poll found events");
        assert!(again.at < Instant::now() + LIFECYCLE_LAST_POLL);
    }

    #[test]
    fn refuses_short_and_unknown_records() {
        assert!(KernelEvent::decode(&[0u8; 8]).is_none());
        assert!(KernelEvent::decode(&raw(99, b"x")).is_none());
    }
}
