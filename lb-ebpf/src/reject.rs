//! Failing fast when a service has nothing to serve (`on_empty: reject`):
//! a TCP segment is answered with a RST and a UDP datagram with ICMP (or
//! ICMPv6) port unreachable, from the VIP, so the client gives up at once
//! instead of waiting for its own timeout. What a host with no listener
//! does, rate-limited per CPU (`Globals::reject_limit` a second) as the
//! kernel limits its own ICMP errors.
//!
//! The answer is built in the frame itself: the L2 header stays (MACs
//! swapped, VLAN tag kept) and goes back out where it came in (XDP_TX).
//! Every checksum is computed from scratch: nothing of the old one is kept.

use aya_ebpf::{
    EbpfContext,
    bindings::xdp_action::{XDP_DROP, XDP_TX},
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    macros::map,
    maps::PerCpuArray,
    programs::XdpContext,
};
use lb_common::{
    FAMILY_V4, FlowKey, Globals, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, STAT_REJECT,
    STAT_REJECT_LIMITED,
    csum::{addr_sum, fold},
    v4_bytes, v6_bytes,
};

use crate::{
    parse::{Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, ptr_at},
    stats,
};

const TTL: u8 = 64;
/// ICMPv6 quotes at most this much of the datagram (RFC 4443 allows any
/// amount up to the minimum MTU; the headers are what the client needs).
const V6_QUOTE_MAX: usize = 256;
/// IPv4 quotes the IP header (with options) and 8 bytes: at most 68.
const V4_QUOTE_MAX: usize = 68;

/// Per CPU: the current second and the answers sent in it.
#[map]
static REJECT_BUDGET: PerCpuArray<[u32; 2]> = PerCpuArray::with_max_entries(1, 0);

/// Answers the packet in flight (`handoff`'s, unchanged so far; its L4
/// header at `l4`) or drops
/// it: over the rate limit, a RST (never answered), or a frame the answer
/// cannot be built in.
#[inline(always)]
pub fn answer(ctx: &XdpContext, pkt: &Packet, l4: usize, g: &Globals) -> Option<u32> {
    let (key, l2_len, ip_len) = (&pkt.key, pkt.l2_len, pkt.ip_len);
    // First, while no variable offset was checked: LLVM drops a constant
    // offset's bounds check that a later variable one implies, and the
    // verifier cannot follow that. (A dropped frame may be left swapped.)
    swap_macs(ctx)?;
    if key.proto == PROTO_TCP {
        let flags = unsafe { *ptr_at::<u8>(ctx, l4 + 13)? };
        if flags & TCP_RST != 0 {
            return Some(XDP_DROP);
        }
    }
    if !take_budget(g.reject_limit as u32, crate::flow::now_secs()) {
        stats::bump(STAT_REJECT_LIMITED);
        return Some(XDP_DROP);
    }
    let built = if key.proto == PROTO_TCP {
        rst(ctx, key, l2_len, l4, ip_len)
    } else if key.family == FAMILY_V4 {
        unreachable_v4(ctx, key, l2_len, l4)
    } else {
        unreachable_v6(ctx, key, l2_len, l4)
    };
    built?;
    stats::bump(STAT_REJECT);
    Some(XDP_TX)
}

#[inline(always)]
fn take_budget(limit: u32, now: u32) -> bool {
    let Some(b) = REJECT_BUDGET.get_ptr_mut(0) else {
        return false;
    };
    let b = unsafe { &mut *b };
    if b[0] != now {
        b[0] = now;
        b[1] = 0;
    }
    if b[1] >= limit {
        return false;
    }
    b[1] += 1;
    true
}

/// Back to the sender: swaps the MACs of the frame's first 12 bytes.
#[inline(always)]
fn swap_macs(ctx: &XdpContext) -> Option<()> {
    let eth: *mut [u8; 12] = ptr_at(ctx, 0)?;
    unsafe {
        let mut m = *eth;
        m.rotate_left(6);
        *eth = m;
    }
    Some(())
}

/// Cuts the frame to `len` bytes (never grows it).
#[inline(always)]
fn truncate(ctx: &XdpContext, len: usize) -> Option<()> {
    let have = ctx.data_end() - ctx.data();
    if len > have {
        return None;
    }
    let delta = -((have - len) as i32);
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.as_ptr() as *mut _, delta) } != 0 {
        return None;
    }
    Some(())
}

/// One's-complement sum of `b`'s 16-bit words (as read natively).
#[inline(always)]
fn sum<const N: usize>(b: &[u8; N]) -> u32 {
    let mut s = 0u32;
    let mut i = 0;
    while i + 1 < N {
        s += u16::from_ne_bytes([b[i], b[i + 1]]) as u32;
        i += 2;
    }
    s
}

/// The pseudo-header's address part, source and destination.
#[inline(always)]
fn sum_addrs(src: &[u32; 4], dst: &[u32; 4]) -> u32 {
    fold(addr_sum(src)) as u32 + fold(addr_sum(dst)) as u32
}

/// An IPv4 header from the VIP (`key.dst`) to the client (`key.src`).
#[inline(always)]
fn ipv4_header(key: &FlowKey, proto: u8, total: u16) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[8] = TTL;
    h[9] = proto;
    h[12..16].copy_from_slice(&v4_bytes(&key.dst));
    h[16..20].copy_from_slice(&v4_bytes(&key.src));
    let c = !fold(sum(&h));
    h[10..12].copy_from_slice(&c.to_ne_bytes());
    h
}

/// An IPv6 header from the VIP to the client.
#[inline(always)]
fn ipv6_header(key: &FlowKey, next: u8, payload: u16) -> [u8; 40] {
    let mut h = [0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&payload.to_be_bytes());
    h[6] = next;
    h[7] = TTL;
    h[8..24].copy_from_slice(&v6_bytes(&key.dst));
    h[24..40].copy_from_slice(&v6_bytes(&key.src));
    h
}

/// The RST a host with no listener sends (RFC 9293 3.10.7.1): it
/// acknowledges a segment without ACK, else takes its sequence number from
/// the segment's acknowledgment. No options, no payload.
#[inline(always)]
fn rst(ctx: &XdpContext, key: &FlowKey, l2_len: usize, l4: usize, ip_len: u16) -> Option<()> {
    let tcp: [u8; 14] = unsafe { *ptr_at::<[u8; 14]>(ctx, l4)? };
    let flags = tcp[13];
    let in_seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let in_ack = [tcp[8], tcp[9], tcp[10], tcp[11]];
    let hdr_len = ((tcp[12] >> 4) as u32) * 4;
    let payload = (ip_len as u32)
        .saturating_sub((l4 - l2_len) as u32)
        .saturating_sub(hdr_len);

    let mut t = [0u8; 20];
    t[0..2].copy_from_slice(&key.dport.to_ne_bytes());
    t[2..4].copy_from_slice(&key.sport.to_ne_bytes());
    if flags & TCP_ACK != 0 {
        t[4..8].copy_from_slice(&in_ack);
        t[13] = TCP_RST;
    } else {
        let ack = in_seq
            .wrapping_add(payload)
            .wrapping_add((flags & TCP_SYN != 0) as u32)
            .wrapping_add((flags & TCP_FIN != 0) as u32);
        t[8..12].copy_from_slice(&ack.to_be_bytes());
        t[13] = TCP_RST | TCP_ACK;
    }
    t[12] = 5 << 4;
    let pseudo = sum_addrs(&key.src, &key.dst)
        + u16::from_ne_bytes([0, PROTO_TCP]) as u32
        + u16::from_ne_bytes([0, 20]) as u32;
    let c = !fold(pseudo + sum(&t));
    t[16..18].copy_from_slice(&c.to_ne_bytes());

    if key.family == FAMILY_V4 {
        truncate(ctx, l2_len + 40)?;
        let ip = ipv4_header(key, PROTO_TCP, 40);
        unsafe { *ptr_at::<[u8; 20]>(ctx, l2_len)? = ip };
        unsafe { *ptr_at::<[u8; 20]>(ctx, l2_len + 20)? = t };
    } else {
        truncate(ctx, l2_len + 60)?;
        let ip = ipv6_header(key, PROTO_TCP, 20);
        unsafe { *ptr_at::<[u8; 40]>(ctx, l2_len)? = ip };
        unsafe { *ptr_at::<[u8; 20]>(ctx, l2_len + 40)? = t };
    }
    Some(())
}

/// Makes room for `added` bytes of new headers in front of the IP packet:
/// the L2 header moves to the new front.
#[inline(always)]
fn push_headers(ctx: &XdpContext, l2_len: usize, added: usize) -> Option<()> {
    let l2: [u8; 18] = unsafe { *ptr_at::<[u8; 18]>(ctx, 0)? };
    if unsafe { bpf_xdp_adjust_head(ctx.as_ptr() as *mut _, -(added as i32)) } != 0 {
        return None;
    }
    // Every pointer into the packet is stale now: work from offsets.
    if l2_len == 18 {
        unsafe { *ptr_at::<[u8; 18]>(ctx, 0)? = l2 };
    } else {
        let mut eth = [0u8; 14];
        eth.copy_from_slice(&l2[..14]);
        unsafe { *ptr_at::<[u8; 14]>(ctx, 0)? = eth };
    }
    Some(())
}

/// Sum of the `len` bytes at `at` (a multiple of 4, at most `MAX` bytes),
/// one bounds-checked word at a time.
#[inline(always)]
fn sum_packet<const MAX: usize>(ctx: &XdpContext, at: usize, len: usize) -> Option<u32> {
    let mut s = 0u32;
    let mut i = 0;
    while i < MAX {
        if i >= len {
            break;
        }
        let w = unsafe { *ptr_at::<[u8; 4]>(ctx, at + i)? };
        s += sum(&w);
        i += 4;
    }
    Some(s)
}

/// ICMP destination unreachable, port unreachable (type 3, code 3),
/// quoting the datagram's IP header and its first 8 bytes (RFC 792).
#[inline(always)]
fn unreachable_v4(ctx: &XdpContext, key: &FlowKey, l2_len: usize, l4: usize) -> Option<()> {
    let quote = l4 - l2_len + 8;
    if quote > V4_QUOTE_MAX || !quote.is_multiple_of(4) {
        return None;
    }
    push_headers(ctx, l2_len, 28)?;
    truncate(ctx, l2_len + 28 + quote)?;
    let ip = ipv4_header(key, PROTO_ICMP, (28 + quote) as u16);
    let mut icmp = [3u8, 3, 0, 0, 0, 0, 0, 0];
    let c = !fold(sum(&icmp) + sum_packet::<V4_QUOTE_MAX>(ctx, l2_len + 28, quote)?);
    icmp[2..4].copy_from_slice(&c.to_ne_bytes());
    unsafe { *ptr_at::<[u8; 20]>(ctx, l2_len)? = ip };
    unsafe { *ptr_at::<[u8; 8]>(ctx, l2_len + 20)? = icmp };
    Some(())
}

/// ICMPv6 destination unreachable, port unreachable (type 1, code 4),
/// quoting the datagram's headers (RFC 4443).
#[inline(always)]
fn unreachable_v6(ctx: &XdpContext, key: &FlowKey, l2_len: usize, l4: usize) -> Option<()> {
    let mut quote = l4 - l2_len + 8;
    if quote > V6_QUOTE_MAX {
        quote = V6_QUOTE_MAX;
    }
    if !quote.is_multiple_of(4) {
        return None;
    }
    push_headers(ctx, l2_len, 48)?;
    truncate(ctx, l2_len + 48 + quote)?;
    let len = (8 + quote) as u16;
    let ip = ipv6_header(key, PROTO_ICMPV6, len);
    let mut icmp = [1u8, 4, 0, 0, 0, 0, 0, 0];
    let pseudo = sum_addrs(&key.src, &key.dst)
        + u16::from_ne_bytes(len.to_be_bytes()) as u32
        + u16::from_ne_bytes([0, PROTO_ICMPV6]) as u32;
    let body = sum_packet::<V6_QUOTE_MAX>(ctx, l2_len + 48, quote)?;
    let c = !fold(pseudo + sum(&icmp) + body);
    icmp[2..4].copy_from_slice(&c.to_ne_bytes());
    unsafe { *ptr_at::<[u8; 40]>(ctx, l2_len)? = ip };
    unsafe { *ptr_at::<[u8; 8]>(ctx, l2_len + 40)? = icmp };
    Some(())
}
