//! The Maglev rings' map (`RINGS`) made memory-mappable (`BPF_F_MMAPABLE`),
//! so a ring is written with plain stores into its idle slot, mapped for
//! the write (well under a millisecond for 65 537 entries), instead of a
//! batch syscall, whose kernel side costs ~200 ns an entry: 13 ms a ring,
//! 1.3 s for a reload that changed the rings of 100 services.
//!
//! The program's object is unchanged: aya adopts a map pinned where it
//! would pin its own, so this map is created here and pinned there first
//! (in the pin dir, or without one in a pin removed once loaded). A
//! `RINGS` an earlier version pinned without the flag is adopted as it is
//! and written with batches (`Dataplane::write_ring`).

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering, fence},
};

use aya::maps::MapData;

use super::{batch::bpf, pins::MapSpec};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_F_MMAPABLE: u32 = 1 << 10;
/// An array's elements are 8-byte aligned: a `u32` value takes 8 bytes.
const ELEM: usize = 8;

/// The head of `union bpf_attr` for `BPF_MAP_CREATE` (the kernel takes
/// the fields after it as zero).
#[repr(C)]
#[derive(Default)]
struct CreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// `union bpf_attr` for `BPF_OBJ_PIN`.
#[repr(C)]
#[derive(Default)]
struct PinAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// Pins a mappable `RINGS` of shape `spec` at `path` unless a map is
/// pinned there already (an earlier run's, adopted as it is). Whether
/// `path` holds one now; if the kernel refused it, aya makes the usual
/// map, and says why if it cannot either.
pub(super) fn pin_if_absent(path: &Path, spec: &MapSpec) -> bool {
    if path.exists() {
        return true;
    }
    create_pinned(path, spec)
        .inspect_err(|e| {
            tracing::debug!("no mappable RINGS ({e}): rings are written with batch syscalls")
        })
        .is_ok()
}

/// Creates the mappable `RINGS` of shape `spec` and pins it at `path`.
fn create_pinned(path: &Path, spec: &MapSpec) -> io::Result<()> {
    let mut name = [0u8; 16];
    name[..5].copy_from_slice(b"RINGS");
    let mut attr = CreateAttr {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: spec.key_size,
        value_size: spec.value_size,
        max_entries: spec.max_entries,
        map_flags: BPF_F_MMAPABLE,
        map_name: name,
        ..Default::default()
    };
    // SAFETY: `attr` holds no pointers; the call returns a new fd.
    let fd = unsafe { bpf(BPF_MAP_CREATE, &mut attr) }?;
    // SAFETY: the kernel just made `fd` ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let cpath = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut attr = PinAttr {
        pathname: cpath.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        ..Default::default()
    };
    // SAFETY: `pathname` is a NUL-terminated string that outlives the call.
    unsafe { bpf(BPF_OBJ_PIN, &mut attr) }.map(drop)
}

/// A pin that lasts until the object is loaded (a data plane without a
/// pin dir): in the host's bpf filesystem, if mounted.
pub(super) struct TempPin(PathBuf);

impl TempPin {
    pub(super) fn create(spec: &MapSpec) -> Option<TempPin> {
        let root = Path::new("/sys/fs/bpf");
        if !super::bpffs::is_bpffs(root) {
            return None;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = root.join(format!("xdplb-rings-{}-{nanos}", std::process::id()));
        pin_if_absent(&path, spec).then_some(TempPin(path))
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempPin {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

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
