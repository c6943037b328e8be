//! The Maglev rings' map (`RINGS`) is memory-mappable: the program
//! declares it with `BPF_F_MMAPABLE`, so a ring is written with plain
//! stores into its idle slot, mapped for the write (well under a
//! millisecond for 65 537 entries), instead of a batch syscall, whose
//! kernel side costs ~200 ns an entry: 13 ms a ring, 1.3 s for a reload
//! that changed the rings of 100 services.
//!
//! A `RINGS` pinned by an earlier version without the flag is adopted as it
//! is (aya adopts a pin of the same shape whatever its flags) and written
//! with batches (`Dataplane::write_ring`) until a start with fresh pins.

use std::{
    io,
    os::fd::{AsFd, AsRawFd},
    sync::atomic::{AtomicU32, Ordering, fence},
};

use aya::maps::MapData;

/// An array's elements are 8-byte aligned: a `u32` value takes 8 bytes.
const ELEM: usize = 8;

/// Writes rings through a mapping of `RINGS` made for each write: only the
/// pages of the slot written are mapped, and only meanwhile (a mapping
/// kept would count the whole map, hundreds of MB, in the daemon's RSS).
pub(super) struct RingMem {
    entries: usize,
    page: usize,
}

impl RingMem {
    /// For `map` (of `entries` entries); None if it is not mappable (an
    /// earlier version's pin).
    pub(super) fn open(map: &MapData, entries: u32) -> Option<RingMem> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
        let mem = RingMem {
            entries: entries as usize,
            page,
        };
        match Mapping::new(map, 0, page.min(mem.entries * ELEM)) {
            Ok(_) => Some(mem),
            Err(e) => {
                tracing::info!(
                    "RINGS is not mappable ({e}; pinned by an earlier version?): rings are \
                     written with batch syscalls, slower; a start with fresh pins makes it mappable"
                );
                None
            }
        }
    }

    /// Writes the ids of `ring` at entries `first..` of `map`. Each entry
    /// is one aligned 4-byte store (a reader sees the old or the new id);
    /// the fence orders them all before whatever the caller writes next
    /// (the service entry that points at them).
    pub(super) fn write(
        &self,
        map: &MapData,
        first: u32,
        ring: impl ExactSizeIterator<Item = u32>,
    ) -> io::Result<()> {
        let (first, end) = (first as usize, first as usize + ring.len());
        if end > self.entries {
            return Err(io::Error::other(format!(
                "entries {first}..{end} are past the map's {}",
                self.entries
            )));
        }
        if first == end {
            return Ok(());
        }
        let offset = first * ELEM / self.page * self.page;
        let mapping = Mapping::new(map, offset, end * ELEM - offset)?;
        for (i, id) in ring.enumerate() {
            // SAFETY: inside the mapping (`first..end` is, by its
            // construction), 8-byte aligned (page-aligned base); the
            // program reads it concurrently, hence an atomic.
            let entry = unsafe {
                &*mapping
                    .base
                    .add((first + i) * ELEM - offset)
                    .cast::<AtomicU32>()
            };
            entry.store(id, Ordering::Relaxed);
        }
        fence(Ordering::Release);
        Ok(())
    }
}

/// A shared mapping of part of a map, unmapped on drop.
struct Mapping {
    base: *mut u8,
    len: usize,
}

impl Mapping {
    /// Bytes `offset..offset + len` of `map` (`offset` page-aligned).
    fn new(map: &MapData, offset: usize, len: usize) -> io::Result<Mapping> {
        // SAFETY: a new shared mapping of the map's fd, where the kernel
        // picks; it checks the range against the map.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            base: base.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: mapped by `new` with this length, unmapped only here.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}
