//! The mmapable maps, mapped into the daemon's memory.
//!
//! - The slot table (`SLOTS`): the slot number of every tgid, which the
//!   programs read on every RSS change and userspace writes when it starts
//!   or stops watching a process. Each entry is a `u16` written with one
//!   atomic store, beside the programs' own stores (a fork marks its child
//!   [`SLOT_FORKED`](procespy_common::SLOT_FORKED), an exit clears its
//!   slot), so no write ever covers another's.
//! - The state (`STATE`): each watched process's counters and limit, by
//!   slot, read here without a syscall (every second, for the history).
//!   The kernel maps every page of a mapping at once, and they all count
//!   in the daemon's RSS: only the slots given out so far are mapped (the
//!   whole table is 4.5 MiB), and the mapping grows with them.

use std::{
    os::fd::{AsFd, OwnedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU16, AtomicU32, Ordering},
};

use anyhow::{Context, Result};
use procespy_common::{SLOT_CHUNK, WATCH_OVER, Watched};
use rustix::mm::{MapFlags, ProtFlags, mmap, munmap};

/// A shared mapping of an mmapable array map, unmapped on drop.
struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: shared memory; the types built on it say how it is accessed.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps `bytes` of the array map `map` (rounded up to pages).
    fn new(map: impl AsFd, bytes: usize, what: &str) -> Result<Mapping> {
        let len = bytes.next_multiple_of(rustix::param::page_size());
        // SAFETY: a fresh shared mapping of the map's memory, as long as
        // the array itself; nothing else in this process maps it.
        let base = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                map,
                0,
            )
        }
        .with_context(|| format!("mapping the {what}"))?;
        let base = NonNull::new(base.cast::<u8>()).context("mmap gave a null pointer")?;
        Ok(Mapping { base, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping what `new` mapped, once.
        let _ = unsafe { munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// The slot table, mapped.
pub(crate) struct SlotTable {
    mapping: Mapping,
    /// Entries: `chunks * SLOT_CHUNK`, every tgid below it.
    entries: usize,
}

impl SlotTable {
    /// Maps the `chunks` elements of the mmapable array map `map`.
    pub(crate) fn map(map: impl AsFd, chunks: u32) -> Result<SlotTable> {
        let entries = chunks as usize * SLOT_CHUNK;
        let mapping = Mapping::new(map, entries * size_of::<u16>(), "slot table")?;
        Ok(SlotTable { mapping, entries })
    }

    fn entry(&self, tgid: u32) -> Option<&AtomicU16> {
        let index = tgid as usize;
        // SAFETY: in bounds of the mapping, which lives as long as `self`;
        // the memory is only ever accessed atomically.
        (index < self.entries)
            .then(|| unsafe { &*self.mapping.base.as_ptr().cast::<AtomicU16>().add(index) })
    }

    /// The slot of `tgid`; `None` past the table.
    pub(crate) fn get(&self, tgid: u32) -> Option<u16> {
        self.entry(tgid).map(|entry| entry.load(Ordering::Acquire))
    }

    /// Sets the slot of `tgid`; false past the table.
    pub(crate) fn set(&self, tgid: u32, slot: u16) -> bool {
        self.entry(tgid)
            .map(|entry| entry.store(slot, Ordering::Release))
            .is_some()
    }

    /// Clears the slot of `tgid` if it still is `slot` (not a new process's
    /// by then).
    pub(crate) fn clear(&self, tgid: u32, slot: u16) {
        if let Some(entry) = self.entry(tgid) {
            let _ = entry.compare_exchange(slot, 0, Ordering::AcqRel, Ordering::Acquire);
        }
    }
}

/// The state table, mapped: [`Watched`] by slot, the first `mapped` of
/// its `slots`.
pub(crate) struct StateTable {
    map: OwnedFd,
    mapping: Mapping,
    mapped: usize,
    slots: usize,
}

/// The state table's mapping grows by at least this many bytes.
const STATE_STEP: usize = 64 << 10;

impl StateTable {
    /// Maps the start of the array map `map` of `slots` [`Watched`] values.
    pub(crate) fn map(map: impl AsFd, slots: u32) -> Result<StateTable> {
        let map = map
            .as_fd()
            .try_clone_to_owned()
            .context("keeping the state table's descriptor")?;
        let slots = slots as usize;
        let mapped = Self::covering(0, slots);
        let mapping = Mapping::new(&map, mapped * size_of::<Watched>(), "state table")?;
        Ok(StateTable {
            map,
            mapping,
            mapped,
            slots,
        })
    }

    /// How many slots a mapping that holds `slot` covers: whole steps, at
    /// most the table.
    fn covering(slot: usize, slots: usize) -> usize {
        let bytes = ((slot + 1) * size_of::<Watched>()).next_multiple_of(STATE_STEP);
        (bytes / size_of::<Watched>()).min(slots)
    }

    /// Maps the table as far as `slot`; false past the table.
    fn reach(&mut self, slot: u16) -> bool {
        let index = usize::from(slot);
        if index < self.mapped {
            return true;
        }
        if index >= self.slots {
            return false;
        }
        let mapped = Self::covering(index, self.slots);
        match Mapping::new(&self.map, mapped * size_of::<Watched>(), "state table") {
            Ok(mapping) => {
                self.mapping = mapping;
                self.mapped = mapped;
                true
            }
            Err(err) => {
                tracing::error!("cannot map slot {slot} of the state table: {err:#}");
                false
            }
        }
    }

    fn at(&self, slot: u16) -> Option<*mut Watched> {
        let index = usize::from(slot);
        // SAFETY: in bounds of the mapping; array values are 8-aligned.
        (index < self.mapped)
            .then(|| unsafe { self.mapping.base.as_ptr().cast::<Watched>().add(index) })
    }

    /// The state in `slot`. The programs write it while it is read: a
    /// reading may mix two moments (good enough for a figure, and each
    /// counter is one aligned word).
    pub(crate) fn get(&self, slot: u16) -> Option<Watched> {
        // SAFETY: a valid, aligned pointer into the mapping.
        self.at(slot)
            .map(|at| unsafe { std::ptr::read_volatile(at) })
    }

    /// Sets the limit in `slot` and clears its over-the-limit flag, in
    /// place beside the programs' own writes, so the next crossing of the
    /// new limit is reported. A program storing the flags in the same
    /// instant may set the flag again: then the crossing is found by the
    /// next examination.
    pub(crate) fn set_limit(&self, slot: u16, limit_bytes: u64) -> bool {
        let Some(at) = self.at(slot) else {
            return false;
        };
        // SAFETY: valid, aligned pointers into the mapping; the flags are
        // an aligned u32, changed here only atomically.
        unsafe {
            std::ptr::write_volatile(&raw mut (*at).limit_bytes, limit_bytes);
            AtomicU32::from_ptr(&raw mut (*at).flags).fetch_and(!WATCH_OVER, Ordering::AcqRel);
        }
        true
    }

    /// Writes the state in `slot`, before the slot is given to a tgid
    /// (mapping the table as far as it first); false past the table.
    pub(crate) fn set(&mut self, slot: u16, state: Watched) -> bool {
        if !self.reach(slot) {
            return false;
        }
        // SAFETY: a valid, aligned pointer into the mapping.
        self.at(slot)
            .map(|at| unsafe { std::ptr::write_volatile(at, state) })
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_mapping_grows_in_steps_and_stops_at_the_table() {
        let per_step = STATE_STEP / size_of::<Watched>();
        assert_eq!(StateTable::covering(0, 65_535), per_step);
        assert_eq!(StateTable::covering(per_step - 1, 65_535), per_step);
        assert_eq!(StateTable::covering(per_step, 65_535), 2 * per_step);
        assert_eq!(StateTable::covering(65_534, 65_535), 65_535);
        assert_eq!(StateTable::covering(3, 2), 2);
    }
}
