//! Connection tracking: a flow keeps its backend while that backend is
//! `ready` or `drain` and the flow has not been idle past its timeout
//! (shorter once a TCP FIN or RST went by); new flows (and flows whose
//! backend went `maint` or `down`, or that expired) are (re)selected and,
//! in nat mode, get a SNAT port.
//!
//! Flood-proofing: a new flow starts unconfirmed, in tables of its own
//! (`PENDING`, and in nat mode `PENDING_REV` holding its SNAT port), and
//! moves to `FLOWS` / `NAT_REV` once confirmed: TCP in nat mode by the
//! client's ACK of the backend's SYN-ACK (its acknowledgment number is the
//! backend's initial sequence number + 1, which a spoofed source never
//! sees), elsewhere by the client's second packet (TCP: an ACK without
//! SYN; UDP in nat mode: after the backend answered). A flood of first
//! packets from random sources only churns the unconfirmed tables (whose
//! LRU eviction frees their SNAT ports); established flows stay.

use aya_ebpf::bindings::{BPF_ANY, BPF_NOEXIST};
use aya_ebpf::helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns};
use lb_common::{
    Backend, FLAG_FLOW_SYNC, Flow, FlowKey, Globals, HASH_FIVE_TUPLE, MODE_NAT, NatRev, NextHop,
    PROTO_TCP, SNAT_PORT_TRIES, STAT_FLOW_CONFIRMED, STAT_FLOW_INSERT_FAIL, STAT_FLOW_NEW,
    STAT_NO_BACKEND, STAT_SNAT_EXHAUSTED, STATE_DRAIN, STATE_READY, ServiceMeta, hash::flow_hash,
    nat_rev_key,
};

use crate::{
    BACKENDS, FLOWS, NAT_REV, PENDING, PENDING_REV, owner,
    parse::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    select, stats,
};

/// Where a packet of this flow goes.
pub struct Conn {
    pub backend_id: u32,
    pub backend: Backend,
    /// Source port toward the backend, wire order (nat mode; else 0).
    pub snat_port: u16,
    /// Destination port toward the backend, wire order.
    pub backend_port: u16,
    /// This packet created the flow.
    pub new: bool,
}

/// Why a packet got no flow (it is dropped or, `reject`, answered); counted.
pub enum Miss {
    /// The service has no usable backend.
    NoBackend,
    /// No free SNAT port (nat mode).
    SnatExhausted,
    /// Every backend looked at holds its `max_flows` (`on_full: drop`).
    Full,
}

/// What of a packet the flow table looks at.
pub struct Seen {
    /// TCP flags (0 for UDP).
    pub tcp_flags: u8,
    /// TCP acknowledgment number, host order (0 for UDP).
    pub ack: u32,
    /// `now_secs()`.
    pub now: u32,
}

#[inline(always)]
fn usable(state: u8) -> bool {
    state == STATE_READY || state == STATE_DRAIN
}

/// Whether the kernel has `bpf_ktime_get_coarse_ns` (5.11): set by the
/// daemon at load time (`EbpfLoader::set_global`, its probe in
/// `dataplane::features`). Read-only data, so the verifier takes it as a
/// constant and never walks the call a kernel without the helper refuses.
#[unsafe(no_mangle)]
static COARSE_CLOCK: u8 = 1;

/// Seconds of the kernel's monotonic clock (coarse where the kernel has
/// it: a tick is plenty).
#[inline(always)]
pub fn now_secs() -> u32 {
    let ns = if unsafe { core::ptr::read_volatile(&COARSE_CLOCK) } != 0 {
        unsafe { bpf_ktime_get_coarse_ns() }
    } else {
        unsafe { bpf_ktime_get_ns() }
    };
    (ns / 1_000_000_000) as u32
}

/// Microseconds of the kernel's monotonic clock, wrapping (`Flow::born_us`):
/// precise, for the handshake latency; only new flows and SYN-ACKs read it.
#[inline(always)]
pub fn now_us() -> u32 {
    (unsafe { bpf_ktime_get_ns() } / 1000) as u32
}

/// The flow's backend, if the flow still stands: the backend is usable,
/// still in this service, and the flow not idle past `timeout`.
#[inline(always)]
fn standing(f: &Flow, svc: &ServiceMeta, idle_ok: bool) -> Option<Backend> {
    let backend = BACKENDS.get(f.backend)?;
    (usable(backend.state) && backend.service == svc.id && idle_ok).then_some(*backend)
}

/// Notes a packet on a standing flow: at most one write a second, and one
/// on closing.
#[inline(always)]
fn touch(f: &mut Flow, seen: &Seen) {
    if f.last_seen != seen.now {
        f.last_seen = seen.now;
    }
    if seen.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        closing(f);
    }
}

/// The flow is closing: it gets the shorter timeout, and its backend's
/// load counts it out (`BackendLoad::closed`) the first time.
#[inline(always)]
fn closing(f: &mut Flow) {
    if f.closing == 0 {
        f.closing = 1;
        stats::count_closed(f.backend);
    }
}

#[inline(always)]
fn conn(f: &Flow, backend: Backend, new: bool) -> Conn {
    Conn {
        backend_id: f.backend,
        backend,
        snat_port: f.snat_port,
        backend_port: f.backend_port,
        new,
    }
}

/// Whether this packet confirms the unconfirmed flow `f` (module doc).
#[inline(always)]
fn confirms(f: &Flow, key: &FlowKey, svc: &ServiceMeta, seen: &Seen) -> bool {
    let ack_only = seen.tcp_flags & (TCP_ACK | TCP_SYN | TCP_RST) == TCP_ACK;
    match (svc.mode == MODE_NAT, key.proto == PROTO_TCP) {
        (true, true) => ack_only && f.confirm != 0 && seen.ack == f.confirm,
        (true, false) => f.confirm != 0,
        (false, true) => ack_only,
        (false, false) => true,
    }
}

/// A confirmed flow that keeps its backend: where this packet goes.
#[inline(always)]
fn carry_on(
    f: &mut Flow,
    key: &FlowKey,
    svc: &ServiceMeta,
    globals: &Globals,
    seen: &Seen,
) -> Option<Conn> {
    let backend = standing(f, svc, !f.expired(key.proto, globals, seen.now))?;
    touch(f, seen);
    Some(conn(f, backend, false))
}

/// What the entry program's fast path found.
pub enum Fast {
    /// An established (confirmed, standing) flow: where the packet goes.
    Established(Conn),
    /// No confirmed flow: [`lookup_or_create`] need not look again.
    NoFlow,
    /// A confirmed flow that does not stand (expired, backend gone):
    /// [`lookup_or_create`] replaces it.
    Stale,
}

/// The fast path: most packets belong to an established flow. Anything
/// else takes [`lookup_or_create`] behind the tail call.
#[inline(always)]
pub fn established(key: &FlowKey, svc: &ServiceMeta, globals: &Globals, seen: &Seen) -> Fast {
    let Some(flow) = FLOWS.get_ptr_mut(key) else {
        return Fast::NoFlow;
    };
    match carry_on(unsafe { &mut *flow }, key, svc, globals, seen) {
        Some(conn) => Fast::Established(conn),
        None => Fast::Stale,
    }
}

/// `Err`: no flow for this packet. `no_flow`: the fast path found no
/// confirmed flow (`Fast::NoFlow`), so `FLOWS` is not read again.
#[inline(always)]
pub fn lookup_or_create(
    key: &FlowKey,
    svc: &ServiceMeta,
    globals: &Globals,
    seen: &Seen,
    no_flow: bool,
) -> Result<Conn, Miss> {
    let confirmed = if no_flow {
        None
    } else {
        FLOWS.get_ptr_mut(key)
    };
    if let Some(flow) = confirmed
        && let Some(conn) = carry_on(unsafe { &mut *flow }, key, svc, globals, seen)
    {
        return Ok(conn);
    }
    let stale = confirmed.map(|f| unsafe { *f });
    let pending = if stale.is_none() {
        PENDING.get_ptr_mut(key)
    } else {
        None
    };
    if let Some(flow) = pending {
        let f = unsafe { &mut *flow };
        if let Some(backend) = standing(f, svc, !f.pending_expired(globals, seen.now)) {
            touch(f, seen);
            if confirms(f, key, svc, seen) {
                confirm(key, f, svc, &backend, globals);
            }
            return Ok(conn(f, backend, false));
        }
    }
    let stale_pending = pending.map(|f| unsafe { *f });

    let (backend_id, backend) = match select::select(key, svc, globals) {
        Ok(chosen) => chosen,
        Err(Miss::NoBackend) => {
            stats::bump(STAT_NO_BACKEND);
            return Err(Miss::NoBackend);
        }
        Err(miss) => return Err(miss),
    };
    // A re-selected flow's old entries would only linger until evicted;
    // a confirmed one would be found (and re-selected) on every packet.
    if let Some(old) = stale {
        let _ = FLOWS.remove(key);
        forget_rev(key, &old, globals, true);
    }
    if let Some(old) = stale_pending {
        forget_rev(key, &old, globals, false);
    }
    // Port 0: an all-ports service keeps the packet's own port.
    let backend_port = if backend.port == 0 {
        key.dport
    } else {
        backend.port
    };
    // Only nat mode translates the source (and so needs a port and replies).
    let snat_port = if svc.mode == MODE_NAT {
        let Some(port) = alloc_snat_port(key, svc, backend_id, &backend, backend_port, globals)
        else {
            stats::bump(STAT_SNAT_EXHAUSTED);
            return Err(Miss::SnatExhausted);
        };
        port
    } else {
        0
    };
    let mut flow = Flow {
        backend: backend_id,
        snat_port,
        backend_port,
        last_seen: seen.now,
        born_us: if svc.mode == MODE_NAT { now_us() } else { 0 },
        ..Flow::default()
    };
    if seen.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        closing(&mut flow);
    }
    stats::bump(STAT_FLOW_NEW);
    if PENDING.insert(key, flow, BPF_ANY as u64).is_err() {
        stats::bump(STAT_FLOW_INSERT_FAIL);
    }
    Ok(conn(&flow, backend, true))
}

/// The reverse entry of a nat flow that is being replaced, from the
/// confirmed or the unconfirmed table.
#[inline(always)]
fn forget_rev(key: &FlowKey, old: &Flow, globals: &Globals, confirmed: bool) {
    if old.snat_port == 0 {
        return;
    }
    let Some(old_backend) = BACKENDS.get(old.backend) else {
        return;
    };
    let rk = nat_rev_key(key, &old_backend.addr, old, globals.snat(key.family));
    let _ = if confirmed {
        NAT_REV.remove(rk)
    } else {
        PENDING_REV.remove(rk)
    };
}

/// Moves the unconfirmed flow `f` (and its reverse entry) to the confirmed
/// tables; with flow sync, announces it to the peers.
#[inline(always)]
fn confirm(key: &FlowKey, f: &Flow, svc: &ServiceMeta, backend: &Backend, globals: &Globals) {
    if FLOWS.insert(key, f, BPF_ANY as u64).is_err() {
        stats::bump(STAT_FLOW_INSERT_FAIL);
        return;
    }
    let _ = PENDING.remove(key);
    stats::bump(STAT_FLOW_CONFIRMED);
    if f.snat_port == 0 {
        return;
    }
    let rk = nat_rev_key(key, &backend.addr, f, globals.snat(key.family));
    let _ = NAT_REV.insert(rk, reverse(key, svc, f.backend), BPF_ANY as u64);
    let _ = PENDING_REV.remove(rk);
    if globals.flags & FLAG_FLOW_SYNC != 0 {
        owner::claim(key);
    }
}

/// The reverse entry of a nat flow: how its replies go back.
#[inline(always)]
fn reverse(key: &FlowKey, svc: &ServiceMeta, backend_id: u32) -> NatRev {
    NatRev {
        client: key.src,
        vip: key.dst,
        client_port: key.sport,
        vip_port: key.dport,
        backend: backend_id,
        service: svc.id,
        hop: NextHop::default(),
    }
}

/// A backend answered the unconfirmed nat flow of `rev` (`xdplb_reply`
/// found it in `PENDING_REV`): record what confirms it (module doc).
/// `syn_ack_seq`: the answer's sequence number, and whether it is a TCP
/// SYN-ACK (not an `Option`: 5.10's verifier refuses the reload LLVM makes
/// of a `None`'s unwritten payload).
/// The first SYN-ACK also ends the handshake the backend is timed on; a
/// RST refuses it (the flow is closing: answered, not confirmable).
#[inline(always)]
pub fn answered(rev: &NatRev, key: &FlowKey, tcp_flags: u8, syn_ack_seq: (u32, bool)) {
    let Some(flow) = PENDING.get_ptr_mut(client_key(rev, key)) else {
        return;
    };
    let f = unsafe { &mut *flow };
    let confirm = if key.proto == PROTO_TCP {
        match syn_ack_seq {
            (seq, true) => seq.wrapping_add(1),
            (_, false) => {
                if tcp_flags & TCP_RST != 0 {
                    closing(f);
                }
                return;
            }
        }
    } else {
        1
    };
    if f.confirm != confirm {
        if f.confirm == 0 && key.proto == PROTO_TCP {
            stats::count_handshake(rev.backend, now_us().wrapping_sub(f.born_us));
        }
        f.confirm = confirm;
    }
}

/// The client-side key of the nat flow whose reply (`key`) found `rev`.
#[inline(always)]
fn client_key(rev: &NatRev, key: &FlowKey) -> FlowKey {
    FlowKey {
        src: rev.client,
        dst: rev.vip,
        sport: rev.client_port,
        dport: rev.vip_port,
        proto: key.proto,
        family: key.family,
        _pad: [0; 2],
    }
}

/// A backend sent a TCP FIN or RST on the confirmed nat flow of `rev`:
/// the flow is closing (`BackendLoad::active` no longer counts it).
#[inline(always)]
pub fn closed_by_backend(rev: &NatRev, key: &FlowKey) {
    if let Some(flow) = FLOWS.get_ptr_mut(client_key(rev, key)) {
        closing(unsafe { &mut *flow });
    }
}

/// Picks a SNAT port from the configured range, hashed from the flow so
/// that retries spread out; a port already used toward this backend
/// address:port (a confirmed or unconfirmed reverse entry exists) is a
/// collision: try the next candidate, at most `SNAT_PORT_TRIES` times.
/// Claims the port by inserting the unconfirmed reverse entry.
#[inline(always)]
fn alloc_snat_port(
    key: &FlowKey,
    svc: &ServiceMeta,
    backend_id: u32,
    backend: &Backend,
    backend_port: u16,
    globals: &Globals,
) -> Option<u16> {
    let min = globals.snat_port_min as u32;
    let span = (globals.snat_port_max as u32)
        .wrapping_sub(min)
        .wrapping_add(1);
    if span == 0 || span > 65536 {
        return None;
    }
    let rev = reverse(key, svc, backend_id);
    let snat = globals.snat(key.family);
    for attempt in 0..SNAT_PORT_TRIES {
        let h = flow_hash(
            key,
            HASH_FIVE_TUPLE,
            globals.hash_seed ^ attempt.wrapping_mul(0x9e37_79b9).wrapping_add(1),
        );
        let port = ((min + h % span) as u16).to_be();
        let candidate = Flow {
            backend_port,
            snat_port: port,
            ..Flow::default()
        };
        let rk = nat_rev_key(key, &backend.addr, &candidate, snat);
        if unsafe { NAT_REV.get(rk) }.is_some() {
            continue;
        }
        if PENDING_REV.insert(rk, rev, BPF_NOEXIST as u64).is_ok() {
            return Some(port);
        }
    }
    None
}
