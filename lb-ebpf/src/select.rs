//! Backend selection for a new flow: the flow's hash picks an entry of the
//! service's active Maglev ring (`balance: maglev`), or the less loaded of
//! two entries (`balance: least-flows`: power of two choices, the second
//! drawn with `second_hash`, again if it drew the first backend). A
//! backend at its `max_flows` is passed over for the other candidate, then
//! for the first of the service's backends with room (`SERVICE_BACKENDS`,
//! from a place the flow's hash picks); with none, `on_full` drops the
//! flow or admits it all the same (docs/operations.md, "Least flows and
//! max_flows").

use lb_common::{
    Backend, BackendLoad, FlowKey, Globals, NO_BACKEND, OVERFLOW_SCAN, STAT_FULL_ADMIT,
    STAT_FULL_DROP, STAT_FULL_REDIRECT, STATE_READY, SVC_ADMIT_FULL, SVC_LEAST_FLOWS, SVC_LIMITED,
    ServiceMeta,
    hash::{flow_hash, second_hash},
    less_loaded,
};

use crate::{BACKEND_LOAD, BACKENDS, RINGS, SERVICE_BACKENDS, flow::Miss, stats};

/// A backend the flow could go to (its entry in place: the BPF stack is
/// too small for copies).
#[derive(Clone, Copy)]
struct Candidate {
    id: u32,
    backend: &'static Backend,
}

impl Candidate {
    #[inline(always)]
    fn of(id: u32) -> Option<Candidate> {
        if id == NO_BACKEND {
            return None;
        }
        Some(Candidate {
            id,
            backend: BACKENDS.get(id)?,
        })
    }

    /// The flows it holds (read only where least-flows or a limit needs it).
    #[inline(always)]
    fn flows(&self) -> u64 {
        BACKEND_LOAD.get(self.id).map_or(0, BackendLoad::flows)
    }

    #[inline(always)]
    fn full(&self) -> bool {
        self.backend.max_flows != 0 && self.flows() >= self.backend.max_flows as u64
    }

    /// Whether it is less loaded for its weight than `other`.
    #[inline(always)]
    fn lighter_than(&self, other: &Candidate) -> bool {
        less_loaded(
            self.flows(),
            self.backend.weight,
            other.flows(),
            other.backend.weight,
        )
    }
}

/// The backend id and entry for a new flow; `Miss::NoBackend` when the
/// service has no usable backend (its ring holds `NO_BACKEND`),
/// `Miss::Full` when every backend looked at is full and `on_full` drops.
#[inline(always)]
pub fn select(key: &FlowKey, svc: &ServiceMeta, globals: &Globals) -> Result<(u32, Backend), Miss> {
    let m = globals.ring_size;
    if m == 0 {
        return Err(Miss::NoBackend);
    }
    let h = flow_hash(key, svc.hash, globals.hash_seed);
    let base = svc.ring.wrapping_mul(m);
    let entry = |h: u32| RINGS.get(base.wrapping_add(h % m)).copied();
    let first = entry(h).and_then(Candidate::of).ok_or(Miss::NoBackend)?;
    // `other`: the other backend drawn, or `pick` again when there is none.
    // Not an `Option`: LLVM spills its payload only where it is `Some` and
    // reloads it on every path, a read 5.10's verifier refuses.
    let (pick, other) = if svc.flags & SVC_LEAST_FLOWS != 0 {
        // A second draw that gives the first backend again draws once
        // more, so one backend rarely is both choices.
        let h2 = second_hash(h);
        let second = match entry(h2).and_then(Candidate::of) {
            Some(c) if c.id == first.id => entry(second_hash(h2)).and_then(Candidate::of),
            c => c,
        };
        match second {
            Some(s) if s.id != first.id && s.lighter_than(&first) => (s, first),
            Some(s) if s.id != first.id => (first, s),
            _ => (first, first),
        }
    } else {
        (first, first)
    };
    if !pick.full() {
        return Ok((pick.id, *pick.backend));
    }
    stats::count_full(pick.id);
    let room = match other {
        o if o.id != pick.id && !o.full() => Some(o),
        _ if svc.flags & SVC_LIMITED != 0 => first_with_room(svc.id, h),
        _ => None,
    };
    if let Some(c) = room {
        stats::bump(STAT_FULL_REDIRECT);
        return Ok((c.id, *c.backend));
    }
    if svc.flags & SVC_ADMIT_FULL != 0 {
        stats::bump(STAT_FULL_ADMIT);
        return Ok((pick.id, *pick.backend));
    }
    stats::bump(STAT_FULL_DROP);
    Err(Miss::Full)
}

/// The first of service `service`'s backends that takes new flows and is
/// below its `max_flows`, looking from a place the flow's hash `h` picks
/// (so overflowing flows spread). It carries nothing from one backend to
/// the next, so the verifier walks it once per backend (keeping the least
/// loaded would double its paths at every step).
#[inline(always)]
fn first_with_room(service: u32, h: u32) -> Option<Candidate> {
    let list = SERVICE_BACKENDS.get(service)?;
    for i in 0..OVERFLOW_SCAN {
        let slot = (h as usize).wrapping_add(i) & (OVERFLOW_SCAN - 1);
        let Some(c) = Candidate::of(list.ids[slot]) else {
            continue;
        };
        let b = c.backend;
        if b.service == service && b.state == STATE_READY && b.weight != 0 && !c.full() {
            return Some(c);
        }
    }
    None
}
