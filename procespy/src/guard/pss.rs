//! When a PSS limit's processes are read (`memory = "pss"`).
//!
//! A process's PSS is never above its RSS, so the kernel's RSS (or the sum
//! of RSS over a total-scope limit) stays the cheap trigger: only once it
//! passes the limit is `smaps_rollup` read, on the blocking pool, one read
//! at a time. A read that finds the PSS under the limit tells when the next
//! one can matter: a new page counts in full in both figures, so the PSS
//! cannot pass the limit before the RSS grew by the room that was left.
//! The PSS also grows when other processes sharing the pages exit, which
//! no RSS shows: the scheduled examination reads again every
//! `scan_interval` while the RSS stays over.

/// The reads of one process, or of one total-scope limit's processes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Gate {
    /// A read is on its way: no second one.
    pub(crate) reading: bool,
    /// The RSS at which to read again; 0: at the next crossing of the limit.
    pub(crate) next_at: u64,
}

impl Gate {
    /// Whether the RSS `rss`, over the limit, calls for a read now;
    /// `interval` says the scheduled examination asks.
    pub(crate) fn due(&self, rss: u64, interval: bool) -> bool {
        !self.reading && (interval || rss >= self.next_at)
    }
}

/// The RSS at which PSS is read again after a read at `rss` found `pss`
/// under `limit`: the room left, and never less than a 64th of the limit
/// (1 MiB at least), as each read walks the process's page tables.
pub(crate) fn next_read_at(rss: u64, pss: u64, limit: u64) -> u64 {
    let room = limit.saturating_sub(pss).max((limit / 64).max(1 << 20));
    rss.saturating_add(room)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_next_read_waits_for_the_room_left() {
        assert_eq!(next_read_at(3000 * MIB, 300 * MIB, 400 * MIB), 3100 * MIB);
        // Just under: a 64th of the limit at least.
        assert_eq!(next_read_at(500 * MIB, 639 * MIB, 640 * MIB), 510 * MIB);
        assert_eq!(next_read_at(5 * MIB, 4 * MIB, 4 * MIB), 6 * MIB);
        assert_eq!(next_read_at(u64::MAX, 0, 400 * MIB), u64::MAX);
    }

    #[test]
    fn one_read_at_a_time_and_the_examination_always_reads() {
        let gate = Gate {
            reading: false,
            next_at: 100,
        };
        assert!(!gate.due(99, false));
        assert!(gate.due(100, false));
        assert!(gate.due(1, true));
        let reading = Gate {
            reading: true,
            ..gate
        };
        assert!(!reading.due(1000, true));
    }
}
