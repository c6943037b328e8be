//! The backend side of tunnel mode (`xdplb decap attach IFACE`): strips
//! the outer header of IPIP / IP6IP6 / IPv4-in-IPv6 / IPv6-in-IPv4 packets
//! and of GUE packets (UDP to `GUE_PORT`, inner IP right after UDP), and
//! passes the inner packet, untouched, to the kernel, which delivers it to
//! the VIP held on `lo`. Everything else passes unchanged. Many hosts have
//! no ipip module; this needs none.
//!
//! ECN (RFC 6040, 4.2): the balancer copies the inner ECN field to the
//! outer header, so a router on the way may mark the outer one CE; that
//! mark is carried into an ECN-capable inner packet (CE), and a CE outer
//! packet whose inner one is not ECN-capable is dropped (the congestion
//! signal it can still give).
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext,
    bindings::xdp_action::{XDP_ABORTED, XDP_DROP, XDP_PASS},
    helpers::bpf_xdp_adjust_head,
    macros::xdp,
    programs::XdpContext,
};
use lb_common::csum;
use lb_ebpf::{ETH_P_IP, ETH_P_IPV6, IPPROTO_IPIP, IPPROTO_IPV6, ptr_at};

/// GUE destination port, host order; set at load time.
#[unsafe(no_mangle)]
static GUE_PORT: u16 = 6080;

const ETH_LEN: usize = 14;
const IPPROTO_UDP: u8 = 17;
/// ECN codepoint "congestion experienced"; 0 is "not ECN-capable".
const ECN_CE: u8 = 3;

#[xdp]
pub fn xdplb_decap(ctx: XdpContext) -> u32 {
    try_decap(&ctx).unwrap_or(XDP_ABORTED)
}

/// Outer header length, the inner packet's ethertype and the outer ECN
/// field, if `ctx` holds a tunnel packet for us.
#[inline(always)]
fn outer(ctx: &XdpContext) -> Option<(usize, u16, u8)> {
    let ethertype = u16::from_be_bytes(unsafe { *ptr_at::<[u8; 2]>(ctx, 12)? });
    let [_, b1] = unsafe { *ptr_at::<[u8; 2]>(ctx, ETH_LEN)? };
    let ecn = if ethertype == ETH_P_IP { b1 } else { b1 >> 4 } & 3;
    let (proto, ip_len) = match ethertype {
        ETH_P_IP => {
            let vihl = unsafe { *ptr_at::<u8>(ctx, ETH_LEN)? };
            let frags = u16::from_be_bytes(unsafe { *ptr_at::<[u8; 2]>(ctx, ETH_LEN + 6)? });
            // Fragments go to the kernel (it reassembles, its tunnel may decap);
            // an IHL below 5 is no header to strip.
            if vihl >> 4 != 4 || vihl & 0x0f < 5 || frags & 0x3fff != 0 {
                return None;
            }
            let proto = unsafe { *ptr_at::<u8>(ctx, ETH_LEN + 9)? };
            (proto, ((vihl & 0x0f) as usize) * 4)
        }
        ETH_P_IPV6 => (unsafe { *ptr_at::<u8>(ctx, ETH_LEN + 6)? }, 40),
        _ => return None,
    };
    let inner_at = ETH_LEN + ip_len;
    let (inner_at, inner_proto) = match proto {
        IPPROTO_IPIP | IPPROTO_IPV6 => {
            // The inner packet must be there: stripping past the frame's
            // end fails (XDP_ABORTED). 4 bytes, as for the GUE version below.
            ptr_at::<[u8; 4]>(ctx, inner_at)?;
            (inner_at, proto)
        }
        IPPROTO_UDP => {
            let dport = u16::from_be_bytes(unsafe { *ptr_at::<[u8; 2]>(ctx, inner_at + 2)? });
            if dport != unsafe { core::ptr::read_volatile(&GUE_PORT) } {
                return None;
            }
            // GUE variant 1: the version nibble says which IP follows. (Read
            // 4 bytes: LLVM turns a 1-byte bounds check at a variable
            // offset into a form the verifier does not follow.)
            let version = unsafe { *ptr_at::<[u8; 4]>(ctx, inner_at + 8)? }[0] >> 4;
            let p = match version {
                4 => IPPROTO_IPIP,
                6 => IPPROTO_IPV6,
                _ => return None,
            };
            (inner_at + 8, p)
        }
        _ => return None,
    };
    let inner_type = if inner_proto == IPPROTO_IPIP {
        ETH_P_IP
    } else {
        ETH_P_IPV6
    };
    Some((inner_at - ETH_LEN, inner_type, ecn))
}

#[inline(always)]
fn try_decap(ctx: &XdpContext) -> Option<u32> {
    let Some((strip, inner_type, ecn)) = outer(ctx) else {
        return Some(XDP_PASS);
    };
    // Drop the outer header from the front, then write the Ethernet header
    // anew at offset 0: every access at a fixed offset, as the verifier
    // wants.
    let macs: [u8; 12] = unsafe { *ptr_at::<[u8; 12]>(ctx, 0)? };
    if unsafe { bpf_xdp_adjust_head(ctx.as_ptr() as *mut _, strip as i32) } != 0 {
        return None;
    }
    let head: *mut [u8; 14] = ptr_at(ctx, 0)?;
    let mut h = [0u8; 14];
    h[..12].copy_from_slice(&macs);
    h[12..14].copy_from_slice(&inner_type.to_be_bytes());
    unsafe { head.write_unaligned(h) };
    if ecn == ECN_CE {
        return mark_ce(ctx, inner_type == ETH_P_IP);
    }
    Some(XDP_PASS)
}

/// The outer header was CE: the inner packet becomes CE, or is dropped
/// if not ECN-capable (RFC 6040, 4.2).
#[inline(always)]
fn mark_ce(ctx: &XdpContext, v4: bool) -> Option<u32> {
    if v4 {
        // Bytes 0-1 (version, IHL, TOS) and the checksum (10-11).
        // (An inner packet too short to hold them is passed as it is.)
        let Some(ip) = ptr_at::<[u8; 12]>(ctx, ETH_LEN) else {
            return Some(XDP_PASS);
        };
        let mut h = unsafe { *ip };
        if h[1] & 3 == 0 {
            return Some(XDP_DROP);
        }
        let old = u16::from_ne_bytes([h[0], h[1]]);
        h[1] |= ECN_CE;
        let new = u16::from_ne_bytes([h[0], h[1]]);
        let check = csum::replace2(u16::from_ne_bytes([h[10], h[11]]), old, new);
        h[10..12].copy_from_slice(&check.to_ne_bytes());
        unsafe { ip.write_unaligned(h) };
    } else {
        // The traffic class straddles bytes 0 and 1: ECN is byte 1's 0x30.
        let Some(ip) = ptr_at::<[u8; 2]>(ctx, ETH_LEN) else {
            return Some(XDP_PASS);
        };
        let mut h = unsafe { *ip };
        if h[1] & 0x30 == 0 {
            return Some(XDP_DROP);
        }
        h[1] |= ECN_CE << 4;
        unsafe { ip.write_unaligned(h) };
    }
    Some(XDP_PASS)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
