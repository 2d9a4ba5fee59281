//! The slot table (`SLOTS`), mapped into the daemon's memory: the slot
//! number of every tgid, which the programs read on every RSS change and
//! userspace writes when it starts or stops watching a process. Each entry
//! is a `u16` written with one atomic store, beside the programs' own
//! stores (a fork marks its child [`SLOT_FORKED`], an exit clears its
//! slot), so no write ever covers another's.

use std::{
    os::fd::AsFd,
    ptr::NonNull,
    sync::atomic::{AtomicU16, Ordering},
};

use anyhow::{Context, Result};
use procespy_common::SLOT_CHUNK;
use rustix::mm::{MapFlags, ProtFlags, mmap, munmap};

/// The slot table, mapped.
pub(crate) struct SlotTable {
    base: NonNull<AtomicU16>,
    /// Entries: `chunks * SLOT_CHUNK`, every tgid below it.
    entries: usize,
    len: usize,
}

// SAFETY: the mapping is shared memory accessed through atomics only.
unsafe impl Send for SlotTable {}

impl SlotTable {
    /// Maps the `chunks` elements of the mmapable array map `map`.
    pub(crate) fn map(map: impl AsFd, chunks: u32) -> Result<SlotTable> {
        let entries = chunks as usize * SLOT_CHUNK;
        let len = (entries * size_of::<u16>()).next_multiple_of(rustix::param::page_size());
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
        .context("mapping the slot table")?;
        let base = NonNull::new(base.cast::<AtomicU16>()).context("mmap gave a null pointer")?;
        Ok(SlotTable { base, entries, len })
    }

    fn entry(&self, tgid: u32) -> Option<&AtomicU16> {
        let index = tgid as usize;
        // SAFETY: in bounds of the mapping, which lives as long as `self`;
        // the memory is only ever accessed atomically.
        (index < self.entries).then(|| unsafe { &*self.base.as_ptr().add(index) })
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

impl Drop for SlotTable {
    fn drop(&mut self) {
        // SAFETY: unmapping what `map` mapped, once.
        let _ = unsafe { munmap(self.base.as_ptr().cast(), self.len) };
    }
}
