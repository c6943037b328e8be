//! Reference XDP programs for benchmarks (not used by the daemon): their
//! cost, measured in the same run, is the floor xdplb's is compared with;
//! and `generator`, the traffic generator run with BPF_PROG_RUN live frames.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    helpers::{bpf_get_prandom_u32, bpf_redirect},
    macros::xdp,
    programs::XdpContext,
};

// Settings written by the loader (`EbpfLoader::set_global`); read-only data,
// so the verifier sees them as constants.

/// `redirect`: egress interface index.
#[unsafe(no_mangle)]
static REDIRECT_IFINDEX: u32 = 0;
/// `redirect`: destination and source MAC (12 bytes, as in the frame).
#[unsafe(no_mangle)]
static REDIRECT_MACS: [u8; 12] = [0; 12];
/// `generator`: the frame's TCP source port becomes one of `GEN_FLOWS` ports
/// from `GEN_PORT_BASE` (host order).
#[unsafe(no_mangle)]
static GEN_FLOWS: u32 = 1;
#[unsafe(no_mangle)]
static GEN_PORT_BASE: u32 = 1024;

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

/// Writes fixed MACs and redirects to a fixed interface: the least a
/// forwarder that leaves by another interface does (xdplb's exit path
/// without parsing, lookups or rewrite).
#[xdp]
pub fn redirect(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 12 > ctx.data_end() {
        return XDP_PASS;
    }
    unsafe {
        *(start as *mut [u8; 12]) = core::ptr::read_volatile(&REDIRECT_MACS);
        bpf_redirect(core::ptr::read_volatile(&REDIRECT_IFINDEX), 0) as u32
    }
}

/// `generator`: the headers every frame starts with (Ethernet, IPv4 with
/// IHL 5, TCP without options), source port `GEN_PORT_BASE`.
#[unsafe(no_mangle)]
static GEN_HEADERS: [u8; HEADERS_LEN] = [0; HEADERS_LEN];

const HEADERS_LEN: usize = 14 + 20 + 20;
const SPORT_OFF: usize = 14 + 20;
const TCP_CSUM_OFF: usize = SPORT_OFF + 16;

/// Traffic generator for BPF_PROG_RUN live frames (XDP_TX there sends the
/// frame out of the context's ingress interface). Live mode recycles pages
/// without resetting their data, and the receiver may have rewritten them
/// in place (NAT), so every frame gets its headers anew from
/// `GEN_HEADERS`, then a random source port of `GEN_FLOWS` (many flows from
/// one template) with the TCP checksum adjusted (RFC 1624).
#[xdp]
pub fn generator(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + HEADERS_LEN > ctx.data_end() {
        return XDP_DROP;
    }
    unsafe {
        let headers = core::ptr::read_volatile(&GEN_HEADERS);
        *(start as *mut [u8; HEADERS_LEN]) = headers;
        let flows = core::ptr::read_volatile(&GEN_FLOWS).max(1);
        let base = core::ptr::read_volatile(&GEN_PORT_BASE);
        let port = (base + bpf_get_prandom_u32() % flows) as u16;
        let check = u16::from_be_bytes([headers[TCP_CSUM_OFF], headers[TCP_CSUM_OFF + 1]]);
        // HC' = ~(~HC + ~m + m'), folded twice (no data-dependent loop).
        let mut sum = (!check) as u32 + (!(base as u16)) as u32 + port as u32;
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        *((start + SPORT_OFF) as *mut [u8; 2]) = port.to_be_bytes();
        *((start + TCP_CSUM_OFF) as *mut [u8; 2]) = (!(sum as u16)).to_be_bytes();
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
