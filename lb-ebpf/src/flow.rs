//! Connection tracking: a flow keeps its backend while that backend is
//! `ready` or `drain`; new flows (and flows whose backend went `maint` or
//! `down`) are (re)selected and, in nat mode, get a SNAT port.

use aya_ebpf::bindings::{BPF_ANY, BPF_NOEXIST};
use lb_common::{
    Backend, Flow, FlowKey, Globals, HASH_FIVE_TUPLE, MODE_NAT, NatRev, SNAT_PORT_TRIES,
    STAT_FLOW_INSERT_FAIL, STAT_NO_BACKEND, STAT_SNAT_EXHAUSTED, STATE_DRAIN, STATE_READY,
    ServiceMeta, hash::flow_hash,
};

use crate::{BACKENDS, FLOWS, NAT_REV, select, stats};

/// Where a packet of this flow goes.
pub struct Conn {
    pub backend_id: u32,
    pub backend: Backend,
    /// Source port toward the backend, wire order (nat mode; else 0).
    pub snat_port: u16,
    /// This packet created the flow.
    pub new: bool,
}

#[inline(always)]
fn usable(state: u8) -> bool {
    state == STATE_READY || state == STATE_DRAIN
}

/// `None`: drop the packet (no backend, or no free SNAT port); counted.
#[inline(always)]
pub fn lookup_or_create(key: &FlowKey, svc: &ServiceMeta, globals: &Globals) -> Option<Conn> {
    let existing = unsafe { FLOWS.get(key) }.copied();
    if let Some(flow) = existing
        && let Some(backend) = BACKENDS.get(flow.backend)
        && usable(backend.state)
        && backend.service == svc.id
    {
        return Some(Conn {
            backend_id: flow.backend,
            backend: *backend,
            snat_port: flow.snat_port,
            new: false,
        });
    }

    let Some((backend_id, backend)) = select::select(key, svc, globals) else {
        stats::bump(STAT_NO_BACKEND);
        return None;
    };
    // A re-selected flow's old reverse entry would only linger until evicted.
    if let Some(old) = existing
        && old.snat_port != 0
        && let Some(old_backend) = BACKENDS.get(old.backend)
    {
        let _ = NAT_REV.remove(rev_key(key, old_backend, globals, old.snat_port));
    }
    // Only nat mode translates the source (and so needs a port and replies).
    let snat_port = if svc.mode == MODE_NAT {
        let Some(port) = alloc_snat_port(key, svc, backend_id, &backend, globals) else {
            stats::bump(STAT_SNAT_EXHAUSTED);
            return None;
        };
        port
    } else {
        0
    };
    let flow = Flow {
        backend: backend_id,
        snat_port,
        _pad: [0; 2],
    };
    if FLOWS.insert(key, flow, BPF_ANY as u64).is_err() {
        stats::bump(STAT_FLOW_INSERT_FAIL);
    }
    Some(Conn {
        backend_id,
        backend,
        snat_port,
        new: true,
    })
}

/// The 5-tuple of the backend's replies: backend -> SNAT address:port.
#[inline(always)]
fn rev_key(key: &FlowKey, backend: &Backend, globals: &Globals, snat_port: u16) -> FlowKey {
    FlowKey {
        src: backend.addr,
        dst: globals.snat(key.family),
        sport: backend.port,
        dport: snat_port,
        proto: key.proto,
        family: key.family,
        _pad: [0; 2],
    }
}

/// Picks a SNAT port from the configured range, hashed from the flow so
/// that retries spread out; a port already used toward this backend
/// address:port (its reverse entry exists) is a collision: try the next
/// candidate, at most `SNAT_PORT_TRIES` times. Claims the port by inserting
/// the reverse entry.
#[inline(always)]
fn alloc_snat_port(
    key: &FlowKey,
    svc: &ServiceMeta,
    backend_id: u32,
    backend: &Backend,
    globals: &Globals,
) -> Option<u16> {
    let min = globals.snat_port_min as u32;
    let span = (globals.snat_port_max as u32)
        .wrapping_sub(min)
        .wrapping_add(1);
    if span == 0 || span > 65536 {
        return None;
    }
    let rev = NatRev {
        client: key.src,
        vip: key.dst,
        client_port: key.sport,
        vip_port: key.dport,
        backend: backend_id,
        service: svc.id,
    };
    for attempt in 0..SNAT_PORT_TRIES {
        let h = flow_hash(
            key,
            HASH_FIVE_TUPLE,
            globals.hash_seed ^ attempt.wrapping_mul(0x9e37_79b9).wrapping_add(1),
        );
        let port = ((min + h % span) as u16).to_be();
        let rk = rev_key(key, backend, globals, port);
        if NAT_REV.insert(rk, rev, BPF_NOEXIST as u64).is_ok() {
            return Some(port);
        }
    }
    None
}
