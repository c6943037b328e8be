//! Forwarding: `bpf_fib_lookup` toward the packet's next destination gives
//! the egress interface and MACs; same interface -> XDP_TX, else
//! `bpf_redirect`. A rewritten packet is never passed to the kernel (its
//! addresses are now the balancer's own): without a resolved next hop it is
//! dropped, counted, and the daemon is asked to resolve the neighbour.

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
use lb_common::{FAMILY_V4, FLAG_SKIP_FIB, NeighEvent, STAT_FIB_FAIL, STAT_NEIGH_MISS};

use crate::{NEIGH_EVENTS, parse::Packet, stats};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Sends `pkt` toward `dst` (its own destination, or in dsr mode the
/// backend it is handed to unchanged).
#[inline(always)]
pub fn forward(ctx: &XdpContext, pkt: &Packet, dst: &[u32; 4], flags: u32) -> u32 {
    if flags & FLAG_SKIP_FIB != 0 {
        return XDP_TX;
    }
    let mut p: FibParams = unsafe { mem::zeroed() };
    let ingress = ctx.ingress_ifindex() as u32;
    let v4 = pkt.key.family == FAMILY_V4;
    p.family = if v4 { AF_INET } else { AF_INET6 };
    p.l4_protocol = pkt.key.proto;
    p.sport = pkt.key.sport;
    p.dport = pkt.key.dport;
    p.__bindgen_anon_1.tot_len = pkt.ip_len;
    if v4 {
        p.__bindgen_anon_3.ipv4_src = pkt.key.src[0];
        p.__bindgen_anon_4.ipv4_dst = dst[0];
    } else {
        p.__bindgen_anon_3.ipv6_src = pkt.key.src;
        p.__bindgen_anon_4.ipv6_dst = *dst;
    }
    p.ifindex = ingress;

    let rc = unsafe { bpf_fib_lookup(ctx.as_ptr(), &mut p, mem::size_of::<FibParams>() as i32, 0) };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {
            unsafe {
                (*pkt.eth).dst_addr = p.dmac;
                (*pkt.eth).src_addr = p.smac;
            }
            if p.ifindex == ingress {
                XDP_TX
            } else {
                unsafe { bpf_redirect(p.ifindex, 0) as u32 }
            }
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
                family: pkt.key.family,
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
