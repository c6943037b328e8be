//! Per-CPU counters: no atomics needed, the daemon sums the CPUs.

use lb_common::XDP_ACTIONS;

use crate::{BACKEND_STATS, GLOBAL_STATS, SERVICE_STATS};

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
}
