//! Backend selection: the flow's hash picks an entry of the service's
//! active Maglev ring.

use lb_common::{Backend, FlowKey, Globals, NO_BACKEND, ServiceMeta, hash::flow_hash};

use crate::{BACKENDS, RINGS};

/// The backend id and entry for a new flow, or `None` when the service has
/// no usable backend (its ring holds `NO_BACKEND`).
#[inline(always)]
pub fn select(key: &FlowKey, svc: &ServiceMeta, globals: &Globals) -> Option<(u32, Backend)> {
    let m = globals.ring_size;
    if m == 0 {
        return None;
    }
    let h = flow_hash(key, svc.hash, globals.hash_seed);
    let idx = svc.ring.wrapping_mul(m).wrapping_add(h % m);
    let id = *RINGS.get(idx)?;
    if id == NO_BACKEND {
        return None;
    }
    Some((id, *BACKENDS.get(id)?))
}
