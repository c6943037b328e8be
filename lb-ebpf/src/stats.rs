//! Per-CPU counters: no atomics needed, the daemon sums the CPUs. The
//! backend loads (`BACKEND_LOAD`) are shared, added to atomically.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use lb_common::{XDP_ACTIONS, handshake_bucket};

use crate::{
    BACKEND_HANDSHAKE, BACKEND_LOAD, BACKEND_STATS, GLOBAL_STATS, SERVICE_STATS, parse::TCP_RST,
};

#[inline(always)]
pub fn bump(slot: u32) {
    if let Some(c) = GLOBAL_STATS.get_ptr_mut(slot) {
        unsafe { *c += 1 };
    }
}

/// Counts the final verdict (slots 0..=4 hold the XDP actions by value).
#[inline(always)]
pub fn count_action(action: u32) {
    if (action as usize) < XDP_ACTIONS.len() {
        bump(action);
    }
}

#[inline(always)]
pub fn count_service(id: u32, bytes: u64) {
    if let Some(c) = SERVICE_STATS.get_ptr_mut(id) {
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

#[inline(always)]
pub fn count_backend(id: u32, bytes: u64, new_flow: bool) {
    if let Some(c) = BACKEND_STATS.get_ptr_mut(id) {
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
            if new_flow {
                (*c).flows += 1;
            }
        }
    }
    // Shared by the CPUs (the program reads it back): an atomic add (BPF's
    // XADD, its result unused, which every kernel we support accepts).
    if new_flow && let Some(load) = BACKEND_LOAD.get_ptr_mut(id) {
        add_shared(unsafe { &raw mut (*load).recent });
    }
}

/// Adds 1 to a u64 that several CPUs write at once.
#[inline(always)]
fn add_shared(n: *mut u64) {
    // Core's AtomicU64 has no fetch_add on this target (no compare and
    // swap), so the intrinsic: LLVM makes it XADD as the result is unused.
    // Safety: `n` points into a map value, 8-byte aligned, alive for the
    // program run.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(n, 1) };
}

/// A flow of backend `id` is closing (a TCP FIN or RST went by).
#[inline(always)]
pub fn count_closed(id: u32) {
    if let Some(load) = BACKEND_LOAD.get_ptr_mut(id) {
        add_shared(unsafe { &raw mut (*load).closed });
    }
}

/// A new flow drawn for backend `id` found it at its `max_flows`.
#[inline(always)]
pub fn count_full(id: u32) {
    if let Some(c) = BACKEND_STATS.get_ptr_mut(id) {
        unsafe { (*c).full += 1 };
    }
}

/// A backend's reply (nat mode): `tcp_flags` 0 for UDP.
#[inline(always)]
pub fn count_reply(id: u32, bytes: u64, tcp_flags: u8) {
    if let Some(c) = BACKEND_STATS.get_ptr_mut(id) {
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
            (*c).reply_bytes += bytes;
            if tcp_flags & TCP_RST != 0 {
                (*c).resets += 1;
            }
        }
    }
}

/// A backend's handshake took `us` microseconds.
#[inline(always)]
pub fn count_handshake(id: u32, us: u32) {
    if let Some(h) = BACKEND_HANDSHAKE.get_ptr_mut(id) {
        let h = unsafe { &mut *h };
        if let Some(b) = h.buckets.get_mut(handshake_bucket(us)) {
            *b += 1;
        }
        h.sum_us += us as u64;
    }
}
