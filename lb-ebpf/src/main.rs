//! xdplb's XDP program: a layer-4 load balancer in the kernel.
//!
//! Packet walk (one module per stage): `parse` -> service lookup -> (tail
//! call, `handoff`) -> `flow` (conntrack, `select` on a miss) -> `nat`
//! rewrite, `tunnel` encapsulation or neither (dsr) -> `fib` forward, with
//! `stats` counting along the way. A packet of an established flow, and a
//! backend's reply on one, take the fast path: rewritten and forwarded by
//! the entry program itself (`flow::established` and `deliver`,
//! `send_back`). Anything that is not for a VIP or a NAT
//! reply leaves untouched with XDP_PASS.
#![no_std]
// `atomic_xadd` (stats.rs): shared counters.
#![feature(core_intrinsics)]
#![allow(internal_features)]
#![no_main]

mod fib;
mod flow;
mod handoff;
mod icmp;
mod nat;
mod offload;
mod owner;
mod parse;
mod reject;
mod select;
mod stats;
mod tunnel;

use aya_ebpf::{
    bindings::xdp_action::{XDP_ABORTED, XDP_DROP, XDP_PASS},
    macros::{map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
    programs::XdpContext,
};
use fib::Route;
use lb_common::{
    Backend, BackendCounter, BackendLoad, Counter, FLAG_ALL_PORTS, FLAG_FLOW_SYNC, Flow, FlowKey,
    GLOBAL_STATS_LEN, Globals, Handshakes, MAX_PEERS, MODE_DSR, MODE_NAT, MODE_TUNNEL, NatRev,
    NextHop, PROTO_TCP, Peer, SVC_REJECT, ServiceBackends, ServiceKey, ServiceMeta,
};
use parse::Packet;
use tunnel::Inner;

// Map sizes below are placeholders: the daemon sets them from the config at
// load time (`EbpfLoader::set_max_entries`), except where noted.

/// Settings for every packet (SNAT address and ports, hash seed, M). 1 entry.
#[map]
static CONFIG: Array<Globals> = Array::with_max_entries(1, 0);
/// (VIP, port, protocol) -> service.
#[map]
static SERVICES: HashMap<ServiceKey, ServiceMeta> = HashMap::with_max_entries(1, 0);
/// Maglev rings: slot `s` holds backend ids at `s * M .. s * M + M`.
/// Mappable: the daemon writes a ring with plain stores.
#[map]
static RINGS: Array<u32> = Array::with_max_entries(1, aya_ebpf::bindings::BPF_F_MMAPABLE);
/// Backend id -> address, port, state.
#[map]
static BACKENDS: Array<Backend> = Array::with_max_entries(1, 0);
/// Client-side 5-tuple -> chosen backend and SNAT port.
#[map]
static FLOWS: LruHashMap<FlowKey, Flow> = LruHashMap::with_max_entries(1, 0);
/// Backend-side 5-tuple of a NAT flow (backend -> snat:port) -> client and VIP.
#[map]
static NAT_REV: LruHashMap<FlowKey, NatRev> = LruHashMap::with_max_entries(1, 0);
/// Unconfirmed flows (`flow.rs`): `FLOWS` and `NAT_REV` of flows whose
/// client has not yet shown it is real. A flood churns only these.
#[map]
static PENDING: LruHashMap<FlowKey, Flow> = LruHashMap::with_max_entries(1, 0);
#[map]
static PENDING_REV: LruHashMap<FlowKey, NatRev> = LruHashMap::with_max_entries(1, 0);
/// Per-CPU next-hop cache by backend id (`lb_common::NextHop`).
#[map]
static BACKEND_HOPS: PerCpuArray<NextHop> = PerCpuArray::with_max_entries(1, 0);
/// Per-CPU counters by service id.
#[map]
static SERVICE_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(1, 0);
/// Per-CPU counters by backend id.
#[map]
static BACKEND_STATS: PerCpuArray<BackendCounter> = PerCpuArray::with_max_entries(1, 0);
/// Flows per backend id (`lb_common::BackendLoad`): counted by the
/// daemon's sweep, plus the new flows since (added here).
#[map]
static BACKEND_LOAD: Array<BackendLoad> = Array::with_max_entries(1, 0);
/// Service id -> the backends a new flow looks at for room when those
/// drawn for it are at their `max_flows` (`lb_common::ServiceBackends`).
#[map]
static SERVICE_BACKENDS: Array<ServiceBackends> = Array::with_max_entries(1, 0);
/// Per-CPU handshake-latency histograms by backend id (nat mode).
#[map]
static BACKEND_HANDSHAKE: PerCpuArray<Handshakes> = PerCpuArray::with_max_entries(1, 0);
/// Per-CPU global counters: XDP actions, then the `lb_common::STAT_*` slots. Fixed size.
#[map]
static GLOBAL_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(GLOBAL_STATS_LEN, 0);
/// Next hops the daemon should make the kernel resolve. Fixed size.
#[map]
static NEIGH_EVENTS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);
/// Flow sync (`owner`): nat flows this node created, for the daemon to
/// tell its peers. Fixed size (about 5,400 flows between two reads).
#[map]
static SYNC_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);
/// Flow sync: client-side 5-tuple -> index of the peer that owns the flow.
#[map]
static OWNERS: LruHashMap<FlowKey, u32> = LruHashMap::with_max_entries(1, 0);
/// Flow sync: the peers, by index. Fixed size (`MAX_PEERS`).
#[map]
static PEERS: Array<Peer> = Array::with_max_entries(MAX_PEERS, 0);
/// Flow sync: the peers' link-layer addresses (`lb_common::mac_key`).
/// Fixed size.
#[map]
static PEER_MACS: HashMap<[u8; 8], u32> = HashMap::with_max_entries(4 * MAX_PEERS, 0);

/// Programs reached by tail call, by slot (`JUMP_*`). Fixed size.
#[map]
static JUMP: ProgramArray = ProgramArray::with_max_entries(5, 0);
const JUMP_ICMP: u32 = 0;
const JUMP_BALANCE: u32 = 1;
const JUMP_REPLY: u32 = 2;
const JUMP_OWNER: u32 = 3;
const JUMP_REJECT: u32 = 4;

/// Entry: parses, and hands packets for a service to `xdplb_balance` (with
/// flow sync, nat ones but SYNs to `xdplb_owner` first), nat replies to
/// `xdplb_reply`, ICMP to `xdplb_icmp` (see `handoff.rs` for
/// why these are programs of their own). Everything else passes.
#[xdp]
pub fn xdplb(ctx: XdpContext) -> u32 {
    let action = entry(&ctx).unwrap_or(XDP_ABORTED);
    stats::count_action(action);
    action
}

/// `Err` only for states that should not exist (a map or program slot the
/// daemon fills is empty): those abort, so they show up in the action
/// counters.
#[inline(always)]
fn entry(ctx: &XdpContext) -> Result<u32, ()> {
    let globals = CONFIG.get(0).ok_or(())?;
    let Some(mut pkt) = parse::parse(ctx) else {
        // Not TCP/UDP: maybe ICMP for a VIP; without the handler, pass.
        unsafe { JUMP.tail_call(ctx, JUMP_ICMP) };
        return Ok(XDP_PASS);
    };
    // Each tail call names its slot as a constant: the JIT then makes it a
    // direct jump instead of an indirect one (a retpoline on most CPUs).
    // Replies from backends (nat mode) arrive at the SNAT address.
    if pkt.key.dst == globals.snat(pkt.key.family) {
        let now = flow::now_secs();
        // Fast path: a confirmed nat flow's reply is sent back right here.
        let Some(rev) = NAT_REV.get_ptr_mut(pkt.key) else {
            handoff::save(ctx, &pkt, None, true, now).ok_or(())?;
            unsafe { JUMP.tail_call(ctx, JUMP_REPLY) };
            return Err(());
        };
        return Ok(send_back(ctx, &mut pkt, unsafe { &mut *rev }, globals, now));
    } else {
        let Some(svc) = service(&pkt.key, globals.flags) else {
            return Ok(XDP_PASS);
        };
        // Fast path: most packets belong to an established flow, which
        // needs neither the tail call nor the hand-off.
        let now = flow::now_secs();
        let seen = flow::Seen {
            tcp_flags: pkt.tcp_flags,
            ack: 0, // only confirming an unconfirmed flow reads it
            now,
        };
        let no_flow = match flow::established(&pkt.key, svc, globals, &seen) {
            flow::Fast::Established(conn) => {
                stats::count_service(svc.id, pkt.frame_len);
                return Ok(deliver(ctx, &mut pkt, svc, &conn, globals, now));
            }
            flow::Fast::NoFlow => true,
            flow::Fast::Stale => false,
        };
        handoff::save(ctx, &pkt, Some(svc), no_flow, now).ok_or(())?;
        // With flow sync, a nat packet that does not open a connection may
        // belong to another node's flow (`owner`). A SYN starts one anew.
        if svc.mode == MODE_NAT && globals.flags & FLAG_FLOW_SYNC != 0 && !pkt.opens_connection() {
            unsafe { JUMP.tail_call(ctx, JUMP_OWNER) };
        }
        unsafe { JUMP.tail_call(ctx, JUMP_BALANCE) };
    }
    Err(())
}

/// A nat packet with flow sync on: handed to the peer that owns its flow
/// if this node has none and a live peer does, else balanced here.
#[xdp]
pub fn xdplb_owner(ctx: XdpContext) -> u32 {
    let action = to_owner(&ctx).unwrap_or(XDP_ABORTED);
    stats::count_action(action);
    action
}

#[inline(always)]
fn to_owner(ctx: &XdpContext) -> Result<u32, ()> {
    let globals = CONFIG.get(0).ok_or(())?;
    let (pkt, h) = handoff::restore(ctx).ok_or(())?;
    if unsafe { FLOWS.get(pkt.key) }.is_none()
        && unsafe { PENDING.get(pkt.key) }.is_none()
        && let Some(peer) = owner::owner(ctx, &pkt.key)
    {
        return owner::forward(ctx, &pkt, peer, globals.flags, h.now).ok_or(());
    }
    unsafe { JUMP.tail_call(ctx, JUMP_BALANCE) };
    Err(())
}

/// ICMP for VIPs (`icmp.rs`).
#[xdp]
pub fn xdplb_icmp(ctx: XdpContext) -> u32 {
    let action = CONFIG
        .get(0)
        .and_then(|g| icmp::handle(&ctx, g))
        .unwrap_or(XDP_PASS);
    stats::count_action(action);
    action
}

/// A packet to a service: its flow's backend, the mode's rewrite, out.
#[xdp]
pub fn xdplb_balance(ctx: XdpContext) -> u32 {
    let action = balance(&ctx).unwrap_or(XDP_ABORTED);
    stats::count_action(action);
    action
}

#[inline(always)]
fn balance(ctx: &XdpContext) -> Result<u32, ()> {
    let globals = CONFIG.get(0).ok_or(())?;
    let (mut pkt, h) = handoff::restore(ctx).ok_or(())?;
    let svc = &h.svc;
    stats::count_service(svc.id, pkt.frame_len);

    let now = h.now;
    let l4 = h.l4_offset().ok_or(())?;
    let seen = flow::Seen {
        tcp_flags: pkt.tcp_flags,
        ack: if pkt.key.proto == PROTO_TCP {
            u32::from_be_bytes(unsafe { *parse::ptr_at::<[u8; 4]>(ctx, l4 + 8).ok_or(())? })
        } else {
            0
        },
        now,
    };
    let conn = match flow::lookup_or_create(&pkt.key, svc, globals, &seen, h.no_flow()) {
        Ok(conn) => conn,
        Err(flow::Miss::NoBackend) if svc.flags & SVC_REJECT != 0 => {
            unsafe { JUMP.tail_call(ctx, JUMP_REJECT) };
            return Ok(XDP_DROP);
        }
        Err(_) => return Ok(XDP_DROP),
    };
    if conn.new
        && let Some(len) = offload::l4_len(&pkt, l4)
    {
        offload::check(ctx, &pkt, len);
    }
    Ok(deliver(ctx, &mut pkt, svc, &conn, globals, now))
}

/// A packet of a flow whose backend is known: counted, rewritten for the
/// service's mode, forwarded.
#[inline(always)]
fn deliver(
    ctx: &XdpContext,
    pkt: &mut Packet,
    svc: &ServiceMeta,
    conn: &flow::Conn,
    globals: &Globals,
    now: u32,
) -> u32 {
    stats::count_backend(conn.backend_id, pkt.frame_len, conn.new);
    let backend = conn.backend.addr;
    let route = match svc.mode {
        // Only the destination MAC changes: the backend holds the VIP.
        MODE_DSR => Route::of(pkt, &backend),
        // The packet goes unchanged inside an outer header to the backend.
        MODE_TUNNEL => {
            match tunnel::encap(ctx, &Inner::of(pkt), &conn.backend, svc.encap, globals) {
                Some(route) => route,
                None => return XDP_DROP,
            }
        }
        _ => {
            let snat = globals.snat(pkt.key.family);
            if nat::rewrite(ctx, pkt, &snat, &backend, conn.snat_port, conn.backend_port).is_none()
            {
                return XDP_DROP;
            }
            Route::of(pkt, &backend)
        }
    };
    let hop = BACKEND_HOPS.get_ptr_mut(conn.backend_id);
    let hop = hop.map(|h| unsafe { &mut *h });
    fib::forward(ctx, &route, globals.flags, hop, now)
}

/// A packet to a service with no usable backend and `on_empty: reject`:
/// answered (`reject.rs`), the packet still as `xdplb_balance` got it.
#[xdp]
pub fn xdplb_reject(ctx: XdpContext) -> u32 {
    let action = CONFIG
        .get(0)
        .and_then(|g| {
            let (pkt, h) = handoff::restore(&ctx)?;
            reject::answer(&ctx, &pkt, h.l4_offset()?, g)
        })
        .unwrap_or(XDP_DROP);
    stats::count_action(action);
    action
}

/// A backend's reply to a nat-mode flow: back to VIP -> client.
#[xdp]
pub fn xdplb_reply(ctx: XdpContext) -> u32 {
    let action = reply(&ctx).unwrap_or(XDP_ABORTED);
    stats::count_action(action);
    action
}

#[inline(always)]
fn reply(ctx: &XdpContext) -> Result<u32, ()> {
    let globals = CONFIG.get(0).ok_or(())?;
    let (mut pkt, h) = handoff::restore(ctx).ok_or(())?;
    // The entry program looked in `NAT_REV` already (`no_flow`).
    let confirmed = if h.no_flow() {
        None
    } else {
        NAT_REV.get_ptr_mut(pkt.key)
    };
    let rev = match confirmed {
        Some(rev) => rev,
        // An unconfirmed flow's reply: note what will confirm it.
        None => {
            let Some(rev) = PENDING_REV.get_ptr_mut(pkt.key) else {
                return Ok(XDP_PASS);
            };
            let syn_ack = pkt.tcp_flags & (parse::TCP_SYN | parse::TCP_ACK)
                == parse::TCP_SYN | parse::TCP_ACK;
            let seq = match h.l4_offset() {
                Some(l4) if syn_ack => match parse::ptr_at::<[u8; 4]>(ctx, l4 + 4) {
                    Some(p) => (u32::from_be_bytes(unsafe { *p }), true),
                    None => (0, false),
                },
                _ => (0, false),
            };
            flow::answered(unsafe { &*rev }, &pkt.key, pkt.tcp_flags, seq);
            rev
        }
    };
    Ok(send_back(
        ctx,
        &mut pkt,
        unsafe { &mut *rev },
        globals,
        h.now,
    ))
}

/// A backend's reply on the nat flow of `rev`: counted, rewritten to VIP ->
/// client, forwarded toward the client.
#[inline(always)]
fn send_back(
    ctx: &XdpContext,
    pkt: &mut Packet,
    rev: &mut NatRev,
    globals: &Globals,
    now: u32,
) -> u32 {
    stats::count_service(rev.service, pkt.frame_len);
    stats::count_reply(rev.backend, pkt.frame_len, pkt.tcp_flags);
    // The backend closes: its flow stops counting as active (and expires
    // sooner), as when the client closes.
    if pkt.tcp_flags & (parse::TCP_FIN | parse::TCP_RST) != 0 {
        flow::closed_by_backend(rev, &pkt.key);
    }
    if nat::rewrite(
        ctx,
        pkt,
        &rev.vip,
        &rev.client,
        rev.vip_port,
        rev.client_port,
    )
    .is_none()
    {
        return XDP_DROP;
    }
    let route = Route::of(pkt, &rev.client);
    fib::forward(ctx, &route, globals.flags, Some(&mut rev.hop), now)
}

/// The service of (destination, port, protocol); with all-ports services
/// configured, a miss is retried with port 0.
#[inline(always)]
pub(crate) fn service(key: &FlowKey, flags: u32) -> Option<&'static ServiceMeta> {
    let mut skey = ServiceKey {
        addr: key.dst,
        port: key.dport,
        proto: key.proto,
        family: key.family,
    };
    if let Some(svc) = unsafe { SERVICES.get(skey) } {
        return Some(svc);
    }
    if flags & FLAG_ALL_PORTS == 0 {
        return None;
    }
    skey.port = 0;
    unsafe { SERVICES.get(skey) }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
