//! Flow sync across the LB nodes of a tier (docs/ha.md, "nat across
//! nodes"). A nat flow's state (its SNAT port, the reverse entry the
//! backend's replies need) lives on the node that created it. ECMP is
//! stateless: when that node withdraws its VIPs (`xdplb node drain`), the
//! router sends the flow's next packets to another node, which has no state
//! for it. So each node announces the nat flows it creates (`SYNC_EVENTS`);
//! its daemon tells the other nodes' daemons, which record the owner
//! (`OWNERS`). A node that misses its flow table on a packet of a flow
//! another live node owns hands the frame, unchanged but for its MACs, to
//! that node, which translates it as before. This runs in a program of its
//! own (`xdplb_owner`, tail-called before balancing), so that balancing's
//! verification does not grow with it.

use aya_ebpf::programs::XdpContext;
use lb_common::{FlowKey, STAT_OWNER_FORWARD, STAT_SYNC_LOST, mac_key};
use network_types::eth::EthHdr;

use crate::{
    OWNERS, PEER_MACS, PEERS, SYNC_EVENTS,
    fib::{self, Route},
    parse::{Packet, ptr_at},
    stats,
};

/// This node created the nat flow `key`: announce it, and forget any older
/// owner of the same 5-tuple.
#[inline(always)]
pub fn claim(key: &FlowKey) {
    if SYNC_EVENTS.output::<FlowKey>(key, 0).is_err() {
        stats::bump(STAT_SYNC_LOST);
    }
    let _ = OWNERS.remove(key);
}

/// The live peer that owns `key`, if the frame should go there: not when
/// it came from a peer (two stale owner entries must not bounce a frame
/// back and forth).
#[inline(always)]
pub fn owner(ctx: &XdpContext, key: &FlowKey) -> Option<u32> {
    let peer = *unsafe { OWNERS.get(key) }?;
    if PEERS.get(peer)?.alive == 0 {
        return None;
    }
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    let from = mac_key(unsafe { &(*eth).src_addr });
    if unsafe { PEER_MACS.get(from) }.is_some() {
        return None;
    }
    Some(peer)
}

/// Hands the frame to peer `peer`: only the MACs change, toward the peer's
/// address (the FIB's answer, cached per peer).
#[inline(always)]
pub fn forward(ctx: &XdpContext, pkt: &Packet, peer: u32, flags: u32, now: u32) -> Option<u32> {
    let p = unsafe { &mut *PEERS.get_ptr_mut(peer)? };
    stats::bump(STAT_OWNER_FORWARD);
    let route = Route {
        family: p.family,
        proto: 0,
        src: [0; 4],
        dst: p.addr,
        sport: 0,
        dport: 0,
        ip_len: pkt.ip_len,
    };
    Some(fib::forward(ctx, &route, flags, Some(&mut p.hop), now))
}
