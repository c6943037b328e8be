//! Reference XDP programs for benchmarks (not used by the daemon): their
//! cost, measured in the same run, is the floor xdplb's is compared with.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    macros::xdp,
    programs::XdpContext,
};

/// Does nothing: the cost of running any XDP program at all.
#[xdp]
pub fn empty(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

/// Drops everything: the fastest possible verdict.
#[xdp]
pub fn drop_all(_ctx: XdpContext) -> u32 {
    XDP_DROP
}

/// Swaps the Ethernet addresses and bounces the frame: the simplest
/// program that touches the packet and transmits it.
#[xdp]
pub fn macswap(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 12 > ctx.data_end() {
        return XDP_PASS;
    }
    let eth = start as *mut [u8; 12];
    unsafe {
        let mut macs = *eth;
        macs.rotate_left(6);
        *eth = macs;
    }
    XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
