//! Pieces shared by the crate's XDP programs (the `xdplb` balancer and the
//! `decap` backend program): bounds-checked packet access, wire constants,
//! address conversions. Everything is `#[inline(always)]`: BPF has no
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

/// An IPv6 address's bytes as four wire-order words (see lb-common).
#[inline(always)]
pub fn words(a: [u8; 16]) -> [u32; 4] {
    let w = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

/// Inverse of [`words`].
#[inline(always)]
pub fn bytes(w: &[u32; 4]) -> [u8; 16] {
    let mut b = [0u8; 16];
    for i in 0..4 {
        b[i * 4..i * 4 + 4].copy_from_slice(&w[i].to_ne_bytes());
    }
    b
}
