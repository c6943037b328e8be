//! Forwarding: `bpf_fib_lookup` toward the packet's next destination gives
//! the egress interface and MACs; same interface -> XDP_TX, else
//! `bpf_redirect`. A rewritten packet is never passed to the kernel (its
//! addresses are now the balancer's own): without a resolved next hop it is
//! dropped, counted, and the daemon is asked to resolve the neighbour.
//! Answers are kept for a second (`lb_common::NextHop`): per backend toward
//! backends, per flow toward clients.

use core::mem;

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams,
        xdp_action::{XDP_DROP, XDP_TX},
    },
    helpers::{bpf_fib_lookup, bpf_redirect},
    programs::XdpContext,
};
use lb_common::{
    FAMILY_V4, FLAG_SKIP_FIB, NeighEvent, NextHop, STAT_FIB_CACHED, STAT_FIB_FAIL, STAT_NEIGH_MISS,
};

use network_types::eth::EthHdr;

use crate::{
    NEIGH_EVENTS,
    parse::{Packet, ptr_at},
    stats,
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// What the lookup is about: the (outer) IP header the frame leaves with,
/// and where it should go.
pub struct Route {
    pub family: u8,
    pub proto: u8,
    pub src: [u32; 4],
    /// The packet's destination, or in dsr mode the backend it is handed
    /// to unchanged.
    pub dst: [u32; 4],
    pub sport: u16,
    pub dport: u16,
    /// Whole IP packet length, host order (the MTU check).
    pub ip_len: u16,
}

impl Route {
    /// The packet as it is, sent toward `dst`.
    #[inline(always)]
    pub fn of(pkt: &Packet, dst: &[u32; 4]) -> Route {
        Route {
            family: pkt.key.family,
            proto: pkt.key.proto,
            src: pkt.key.src,
            dst: *dst,
            sport: pkt.key.sport,
            dport: pkt.key.dport,
            ip_len: pkt.ip_len,
        }
    }
}

/// Sets the frame's MACs for `route` and picks the way out. `hop`: the
/// cached answer for this destination, used if still good, else refreshed;
/// `now` in seconds of the monotonic clock.
#[inline(always)]
pub fn forward(
    ctx: &XdpContext,
    route: &Route,
    flags: u32,
    hop: Option<&mut NextHop>,
    now: u32,
) -> u32 {
    if flags & FLAG_SKIP_FIB != 0 {
        return XDP_TX;
    }
    let ingress = ctx.ingress_ifindex() as u32;
    if let Some(h) = &hop
        && h.ifindex != 0
        && h.stamp == now
        && h.ingress == ingress
        && route.ip_len <= h.max_len
    {
        stats::bump(STAT_FIB_CACHED);
        return send(ctx, h.ifindex, &h.smac, &h.dmac, ingress);
    }
    let mut p: FibParams = unsafe { mem::zeroed() };
    let v4 = route.family == FAMILY_V4;
    p.family = if v4 { AF_INET } else { AF_INET6 };
    p.l4_protocol = route.proto;
    p.sport = route.sport;
    p.dport = route.dport;
    p.__bindgen_anon_1.tot_len = route.ip_len;
    if v4 {
        p.__bindgen_anon_3.ipv4_src = route.src[0];
        p.__bindgen_anon_4.ipv4_dst = route.dst[0];
    } else {
        p.__bindgen_anon_3.ipv6_src = route.src;
        p.__bindgen_anon_4.ipv6_dst = route.dst;
    }
    p.ifindex = ingress;

    let rc = unsafe { bpf_fib_lookup(ctx.as_ptr(), &mut p, mem::size_of::<FibParams>() as i32, 0) };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {
            if let Some(h) = hop {
                let same = h.stamp == now
                    && h.ingress == ingress
                    && h.ifindex == p.ifindex
                    && h.smac == p.smac
                    && h.dmac == p.dmac;
                // The same route this second: it also passes this length.
                h.max_len = if same && h.max_len > route.ip_len {
                    h.max_len
                } else {
                    route.ip_len
                };
                h.ifindex = p.ifindex;
                h.ingress = ingress;
                h.stamp = now;
                h.smac = p.smac;
                h.dmac = p.dmac;
            }
            send(ctx, p.ifindex, &p.smac, &p.dmac, ingress)
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => {
            stats::bump(STAT_NEIGH_MISS);
            // The lookup left the next hop (gateway or destination) in the
            // destination field.
            let event = NeighEvent {
                addr: if v4 {
                    [unsafe { p.__bindgen_anon_4.ipv4_dst }, 0, 0, 0]
                } else {
                    unsafe { p.__bindgen_anon_4.ipv6_dst }
                },
                ifindex: p.ifindex,
                family: route.family,
                _pad: [0; 3],
            };
            let _ = NEIGH_EVENTS.output::<NeighEvent>(&event, 0);
            XDP_DROP
        }
        _ => {
            stats::bump(STAT_FIB_FAIL);
            XDP_DROP
        }
    }
}

/// Writes the MACs and leaves by `ifindex`.
#[inline(always)]
fn send(ctx: &XdpContext, ifindex: u32, smac: &[u8; 6], dmac: &[u8; 6], ingress: u32) -> u32 {
    // Pointers from before an encapsulation are stale: take it anew.
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return XDP_DROP;
    };
    unsafe {
        (*eth).dst_addr = *dmac;
        (*eth).src_addr = *smac;
    }
    if ifindex == ingress {
        XDP_TX
    } else {
        unsafe { bpf_redirect(ifindex, 0) as u32 }
    }
}
