//! Batched map access: many entries per syscall (aya 0.14 has no wrapper
//! for it). A Maglev ring is 65 537 entries and the flow table up to
//! millions: one `BPF_MAP_UPDATE_ELEM` per ring entry made a reload that
//! changed every ring of 100 services take seconds, and walking the flow
//! table with two syscalls per entry took seconds per million flows.

use std::{
    io,
    os::fd::{AsFd, AsRawFd},
};

use aya::{Pod, maps::MapData};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
/// Entries read per `BPF_MAP_LOOKUP_BATCH`.
const CHUNK: usize = 4096;

/// The `batch` member of the kernel's `union bpf_attr`; the kernel reads
/// only this many bytes of the union (its tail is taken as zero).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    /// In: entries to write; out: entries written.
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Writes `keys[i] -> values[i]` for every i (BPF_ANY), in as few syscalls
/// as the kernel allows (it may stop early; the rest is sent again).
pub fn update<K: Pod, V: Pod>(map: &MapData, keys: &[K], values: &[V]) -> io::Result<()> {
    assert_eq!(keys.len(), values.len(), "one value per key");
    let mut done = 0;
    while done < keys.len() {
        let mut attr = BatchAttr {
            keys: keys[done..].as_ptr() as u64,
            values: values[done..].as_ptr() as u64,
            count: u32::try_from(keys.len() - done).unwrap_or(u32::MAX),
            map_fd: map_fd(map),
            ..Default::default()
        };
        // SAFETY: `attr` points at `count` keys and values that outlive the
        // call; the kernel only reads them and writes `attr.count`.
        unsafe { bpf(BPF_MAP_UPDATE_BATCH, &mut attr) }?;
        if attr.count == 0 {
            return Err(io::Error::other("BPF_MAP_UPDATE_BATCH wrote nothing"));
        }
        done += attr.count as usize;
    }
    Ok(())
}

/// Every entry of a (non-per-CPU) hash map, `CHUNK` per syscall. Entries
/// added or removed meanwhile may or may not be seen, as with any walk.
pub fn entries<K: Pod, V: Pod>(map: &MapData) -> io::Result<Vec<(K, V)>> {
    // SAFETY: `Pod` types are plain integers and arrays: all-zero is valid.
    let mut keys: Vec<K> = vec![unsafe { std::mem::zeroed() }; CHUNK];
    let mut values: Vec<V> = vec![unsafe { std::mem::zeroed() }; CHUNK];
    // Where the walk stands (for hash maps a bucket index, a u32).
    let (mut token, mut next) = ([0u8; 8], [0u8; 8]);
    let mut out = Vec::new();
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { token.as_ptr() as u64 },
            out_batch: next.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: map_fd(map),
            ..Default::default()
        };
        // SAFETY: the buffers hold `count` keys and values and a token of
        // the size the kernel writes; all outlive the call.
        let rc = unsafe { bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) };
        let got = (attr.count as usize).min(CHUNK);
        out.extend(
            keys[..got]
                .iter()
                .copied()
                .zip(values[..got].iter().copied()),
        );
        match rc {
            Ok(_) => {}
            // The end of the map (the last entries came with it).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Err(e) => return Err(e),
        }
        token = next;
        first = false;
    }
}

fn map_fd(map: &MapData) -> u32 {
    map.fd().as_fd().as_raw_fd() as u32
}

/// The `bpf(2)` syscall: `cmd` with `attr` (its part of `union bpf_attr`);
/// returns what the kernel returns (an fd for commands that make one).
///
/// # Safety
/// The pointers in `attr` must be valid for what `cmd` reads and writes.
unsafe fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<i64> {
    // SAFETY: the caller vouches for the pointers inside `attr`.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut A, size_of::<A>() as u32) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}
