//! Connection tracking: a flow keeps its backend while that backend is
//! `ready` or `drain` and the flow has not been idle past its timeout
//! (shorter once a TCP FIN or RST went by); new flows (and flows whose
//! backend went `maint` or `down`, or that expired) are (re)selected and,
//! in nat mode, get a SNAT port.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::bpf_ktime_get_coarse_ns,
};
use lb_common::{
    Backend, FLAG_FLOW_SYNC, Flow, FlowKey, Globals, HASH_FIVE_TUPLE, MODE_NAT, NatRev, NextHop,
    SNAT_PORT_TRIES, STAT_FLOW_INSERT_FAIL, STAT_NO_BACKEND, STAT_SNAT_EXHAUSTED, STATE_DRAIN,
    STATE_READY, ServiceMeta, hash::flow_hash, nat_rev_key,
};

use crate::{BACKENDS, FLOWS, NAT_REV, owner, select, stats};

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

#[inline(always)]
fn usable(state: u8) -> bool {
    state == STATE_READY || state == STATE_DRAIN
}

/// Seconds of the kernel's monotonic clock (coarse: a tick is plenty).
#[inline(always)]
pub fn now_secs() -> u32 {
    (unsafe { bpf_ktime_get_coarse_ns() } / 1_000_000_000) as u32
}

/// Why a packet got no flow (it is dropped or, `reject`, answered); counted.
pub enum Miss {
    /// The service has no usable backend.
    NoBackend,
    /// No free SNAT port (nat mode).
    SnatExhausted,
}

/// `Err`: no flow for this packet.
/// `fin_or_rst`: the packet is a TCP FIN or RST (the flow is closing).
/// `now`: `now_secs()`.
#[inline(always)]
pub fn lookup_or_create(
    key: &FlowKey,
    svc: &ServiceMeta,
    globals: &Globals,
    fin_or_rst: bool,
    now: u32,
) -> Result<Conn, Miss> {
    let existing = FLOWS.get_ptr_mut(key);
    if let Some(flow) = existing {
        let f = unsafe { &mut *flow };
        if let Some(backend) = BACKENDS.get(f.backend)
            && usable(backend.state)
            && backend.service == svc.id
            && !f.expired(key.proto, globals, now)
        {
            // One write a second at most per flow, and one on closing.
            if f.last_seen != now {
                f.last_seen = now;
            }
            if fin_or_rst && f.closing == 0 {
                f.closing = 1;
            }
            return Ok(Conn {
                backend_id: f.backend,
                backend: *backend,
                snat_port: f.snat_port,
                backend_port: f.backend_port,
                new: false,
            });
        }
    }
    let existing = existing.map(|f| unsafe { *f });

    let Some((backend_id, backend)) = select::select(key, svc, globals) else {
        stats::bump(STAT_NO_BACKEND);
        return Err(Miss::NoBackend);
    };
    // A re-selected flow's old reverse entry would only linger until evicted.
    if let Some(old) = existing
        && old.snat_port != 0
        && let Some(old_backend) = BACKENDS.get(old.backend)
    {
        let _ = NAT_REV.remove(nat_rev_key(
            key,
            &old_backend.addr,
            &old,
            globals.snat(key.family),
        ));
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
        if globals.flags & FLAG_FLOW_SYNC != 0 {
            owner::claim(key);
        }
        port
    } else {
        0
    };
    let flow = Flow {
        backend: backend_id,
        snat_port,
        backend_port,
        last_seen: now,
        closing: fin_or_rst as u8,
        _pad: [0; 3],
    };
    if FLOWS.insert(key, flow, BPF_ANY as u64).is_err() {
        stats::bump(STAT_FLOW_INSERT_FAIL);
    }
    Ok(Conn {
        backend_id,
        backend,
        snat_port,
        backend_port,
        new: true,
    })
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
    let rev = NatRev {
        client: key.src,
        vip: key.dst,
        client_port: key.sport,
        vip_port: key.dport,
        backend: backend_id,
        service: svc.id,
        hop: NextHop::default(),
    };
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
        if NAT_REV.insert(rk, rev, BPF_NOEXIST as u64).is_ok() {
            return Some(port);
        }
    }
    None
}
