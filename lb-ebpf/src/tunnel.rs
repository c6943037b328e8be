//! Tunnel mode: the client's packet, unchanged, goes to the backend inside
//! an outer IP header (IPIP, IP6IP6, IPv4-in-IPv6, IPv6-in-IPv4), or an
//! outer IP + UDP header (GUE variant 1: the inner packet right after UDP).
//! The backend decapsulates (`xdplb decap`, or a kernel tunnel device) and
//! answers the client directly.
//!
//! The outer header carries the inner one's DSCP and ECN (RFC 2983's
//! uniform model, RFC 6040's normal mode: the network on the way treats
//! the packet as it would the client's), and per-flow entropy for the
//! backend's RSS: the GUE source port, the IPv6 flow label, and with
//! `tunnel_source` the outer source address.

use aya_ebpf::{EbpfContext, helpers::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::{
    Backend, ENCAP_GUE, FAMILY_V4, FlowKey, Globals, HASH_FIVE_TUPLE, PROTO_UDP, csum,
    hash::flow_hash, tunnel_flow_label, v4_bytes, v6_bytes,
};
use lb_ebpf::{ETH_P_IP, ETH_P_IPV6, IPPROTO_IPIP, IPPROTO_IPV6};

use crate::{
    fib::Route,
    parse::{Packet, ptr_at},
};

const OUTER_TTL: u8 = 64;
const V4_HDR: usize = 20;
const V6_HDR: usize = 40;
const UDP_HDR: usize = 8;

/// The packet to wrap: where its IP header starts, how long it is, and the
/// flow it belongs to (the GUE source port comes from it).
pub struct Inner<'a> {
    pub l2_len: usize,
    pub ip_len: u16,
    pub key: &'a FlowKey,
}

impl<'a> Inner<'a> {
    #[inline(always)]
    pub fn of(pkt: &'a Packet) -> Inner<'a> {
        Inner {
            l2_len: pkt.l2_len,
            ip_len: pkt.ip_len,
            key: &pkt.key,
        }
    }
}

/// Wraps the packet for `backend`; returns the outer header's route, or
/// `None` if the frame could not grow (dropped).
#[inline(always)]
pub fn encap(
    ctx: &XdpContext,
    pkt: &Inner,
    backend: &Backend,
    encap: u8,
    globals: &Globals,
) -> Option<Route> {
    let gue = encap == ENCAP_GUE;
    let outer_v4 = backend.family == FAMILY_V4;
    let ip_hdr = if outer_v4 { V4_HDR } else { V6_HDR };
    let added = ip_hdr + if gue { UDP_HDR } else { 0 };
    let inner_len = pkt.ip_len as usize;
    let outer_len = (inner_len + added) as u16;
    let proto = if gue {
        PROTO_UDP
    } else if pkt.key.family == FAMILY_V4 {
        IPPROTO_IPIP
    } else {
        IPPROTO_IPV6
    };
    // Outer source, GUE source port and flow label from the flow: spread
    // tunnels over the backend's receive queues (and ECMP paths) as the
    // flows themselves would be.
    let hash = flow_hash(pkt.key, HASH_FIVE_TUPLE, globals.hash_seed);
    let src = globals.tunnel_source(backend.family, hash);
    let sport = if gue { gue_source_port(hash) } else { 0 };

    // The L2 header moves to the new front; keep it (tag included). The
    // first 2 bytes of the inner IP header come along: its DSCP and ECN.
    let tagged = pkt.l2_len > 14;
    let l2: [u8; 20] = unsafe { *ptr_at::<[u8; 20]>(ctx, 0)? };
    let ip2 = if tagged {
        [l2[18], l2[19]]
    } else {
        [l2[14], l2[15]]
    };
    let tos = if pkt.key.family == FAMILY_V4 {
        ip2[1]
    } else {
        (ip2[0] << 4) | (ip2[1] >> 4)
    };
    if unsafe { bpf_xdp_adjust_head(ctx.as_ptr() as *mut _, -(added as i32)) } != 0 {
        return None;
    }
    // Every pointer into the packet is stale now: work from offsets.
    let ethertype = if outer_v4 { ETH_P_IP } else { ETH_P_IPV6 }.to_be_bytes();
    let ip_at = if tagged {
        let head: *mut [u8; 18] = ptr_at(ctx, 0)?;
        let mut h = [0u8; 18];
        h.copy_from_slice(&l2[..18]);
        h[16..18].copy_from_slice(&ethertype);
        unsafe { head.write_unaligned(h) };
        18
    } else {
        let head: *mut [u8; 14] = ptr_at(ctx, 0)?;
        let mut h = [0u8; 14];
        h.copy_from_slice(&l2[..14]);
        h[12..14].copy_from_slice(&ethertype);
        unsafe { head.write_unaligned(h) };
        14
    };
    if outer_v4 {
        let mut h = [0u8; V4_HDR];
        h[0] = 0x45;
        h[1] = tos;
        h[2..4].copy_from_slice(&outer_len.to_be_bytes());
        h[6] = 0x40; // don't fragment: the inner packet may not be split
        h[8] = OUTER_TTL;
        h[9] = proto;
        h[12..16].copy_from_slice(&v4_bytes(&src));
        h[16..20].copy_from_slice(&v4_bytes(&backend.addr));
        let check = csum::checksum(&h);
        h[10..12].copy_from_slice(&check.to_ne_bytes());
        unsafe { ptr_at::<[u8; V4_HDR]>(ctx, ip_at)?.write_unaligned(h) };
    } else {
        let mut h = [0u8; V6_HDR];
        let label = tunnel_flow_label(hash);
        h[0] = 0x60 | (tos >> 4);
        h[1] = (tos << 4) | (label >> 16) as u8;
        h[2] = (label >> 8) as u8;
        h[3] = label as u8;
        let payload = outer_len - V6_HDR as u16;
        h[4..6].copy_from_slice(&payload.to_be_bytes());
        h[6] = proto;
        h[7] = OUTER_TTL;
        h[8..24].copy_from_slice(&v6_bytes(&src));
        h[24..40].copy_from_slice(&v6_bytes(&backend.addr));
        unsafe { ptr_at::<[u8; V6_HDR]>(ctx, ip_at)?.write_unaligned(h) };
    }
    if gue {
        let mut u = [0u8; UDP_HDR];
        u[0..2].copy_from_slice(&sport.to_ne_bytes());
        u[2..4].copy_from_slice(&globals.gue_port.to_ne_bytes());
        let udp_len = (inner_len + UDP_HDR) as u16;
        u[4..6].copy_from_slice(&udp_len.to_be_bytes());
        // Checksum 0: the inner packet carries its own; the decapsulator
        // does not check the outer one.
        unsafe { ptr_at::<[u8; UDP_HDR]>(ctx, ip_at + ip_hdr)?.write_unaligned(u) };
    }
    Some(Route {
        family: backend.family,
        proto,
        src,
        dst: backend.addr,
        sport,
        dport: if gue { globals.gue_port } else { 0 },
        ip_len: outer_len,
    })
}

/// A port in 49152..=65535 from the flow hash, wire order.
#[inline(always)]
fn gue_source_port(h: u32) -> u16 {
    (0xc000 | (h as u16 & 0x3fff)).to_be()
}
