//! Pieces shared by the crate's XDP programs (the `xdplb` balancer and the
//! `decap` backend program): bounds-checked packet access, wire constants.
//! (Address conversions are lb-common's `addr`, shared with the daemon.)
//! Everything is `#[inline(always)]`: BPF has no
//! shared library, each program gets its own copy.
#![no_std]

use aya_ebpf::programs::XdpContext;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
/// IP protocol numbers of the tunnel encapsulations.
pub const IPPROTO_IPIP: u8 = 4;
pub const IPPROTO_IPV6: u8 = 41;

/// The one bounds-checked way to point into the packet.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    if start + offset + core::mem::size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + offset) as *mut T)
}
