//! The flow table seen from userspace: deleting flows that are over (idle
//! past their timeout), so the table holds live flows, and counting its
//! entries. The program already treats an expired flow as new on its next
//! packet; the sweep only frees the entries (and their NAT reverse
//! entries, and so their SNAT ports). Confirmed flows (`FLOWS`, `NAT_REV`)
//! and unconfirmed ones (`PENDING`, `PENDING_REV`, a shorter timeout) are
//! swept alike. It runs on its own map fds (`handles`), off the controller.
//!
//! The sweep also counts, per backend, what the program cannot count
//! exactly itself (`lb_common::BackendLoad`): the confirmed flows still
//! open (the full sweep writes them to `BACKEND_LOAD`, so the gauge is as
//! old as the last full sweep), and the TCP connection attempts that
//! expired unanswered (counted by every sweep, written by the next full
//! one).

use std::{
    collections::HashMap as StdHashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, IterableMap, MapData, MapError},
};
use lb_common::{
    Backend, BackendLoad, Flow, FlowKey, Globals, NatRev, PROTO_TCP, STATE_DRAIN, STATE_READY,
    nat_rev_key,
};

use super::{DataplaneError, Result, batch, handles::open, map_err};

/// Seconds of CLOCK_MONOTONIC, the clock of `bpf_ktime_get_coarse_ns`.
pub fn monotonic_secs() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: plain syscall writing into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u32
}

pub struct FlowTable {
    /// An LRU hash map (aya's `HashMap` type covers both kinds).
    flows: HashMap<MapData, FlowKey, Flow>,
    nat_rev: HashMap<MapData, FlowKey, NatRev>,
    /// The unconfirmed flows and their reverse entries.
    pending: HashMap<MapData, FlowKey, Flow>,
    pending_rev: HashMap<MapData, FlowKey, NatRev>,
    /// Backend addresses, for the reverse keys of expired NAT flows.
    backends: Array<MapData, Backend>,
    /// Timeouts and SNAT addresses as the daemon last wrote them.
    config: Array<MapData, Globals>,
    /// Entries left after the last sweep (`xdplb_flow_table_entries`).
    swept: Arc<AtomicU64>,
    /// Per-backend flow counts, for the program and the metrics.
    load: Array<MapData, BackendLoad>,
    /// Unanswered connection attempts by backend id counted since the
    /// last write of `load`.
    unanswered: StdHashMap<u32, u64>,
}

impl FlowTable {
    pub(super) fn open(ebpf: &Ebpf) -> Result<Self> {
        Ok(FlowTable {
            flows: open(ebpf, "FLOWS")?,
            nat_rev: open(ebpf, "NAT_REV")?,
            pending: open(ebpf, "PENDING")?,
            pending_rev: open(ebpf, "PENDING_REV")?,
            backends: open(ebpf, "BACKENDS")?,
            config: open(ebpf, "CONFIG")?,
            swept: Arc::default(),
            load: open(ebpf, "BACKEND_LOAD")?,
            unanswered: StdHashMap::new(),
        })
    }

    /// The entry count as of the last `expire` (0 before the first): what
    /// a metrics scrape reads instead of walking the table itself.
    pub fn swept_entries(&self) -> Arc<AtomicU64> {
        self.swept.clone()
    }

    /// Every entry (thousands per syscall).
    pub fn entries(&self) -> Result<Vec<(FlowKey, Flow)>> {
        batch::entries(self.flows.map()).map_err(|source| DataplaneError::Io {
            what: "reading the flow table (FLOWS)".into(),
            source,
        })
    }

    /// Deletes expired flows, confirmed and unconfirmed, and returns how
    /// many; records how many confirmed ones are left. Reads each table
    /// whole, then deletes one by one.
    pub fn expire(&mut self) -> Result<u64> {
        let Some(globals) = self.globals()? else {
            // No config written yet: nothing can be judged expired.
            self.swept
                .store(self.entries()?.len() as u64, Ordering::Relaxed);
            return Ok(0);
        };
        let now = monotonic_secs();
        let usable = self.usable_backends()?;
        let mut active: StdHashMap<u32, u64> = StdHashMap::new();
        let confirmed = Table {
            flows: &mut self.flows,
            rev: &mut self.nat_rev,
            names: ("FLOWS", "NAT_REV"),
        };
        let (left, gone) = confirmed.sweep(
            &self.backends,
            &globals,
            |f, proto| f.expired(proto, &globals, now),
            |_, f, deleted| {
                if !deleted && f.closing == 0 && usable.get(f.backend as usize) == Some(&true) {
                    *active.entry(f.backend).or_default() += 1;
                }
            },
        )?;
        self.swept.store(left, Ordering::Relaxed);
        let gone = gone + self.sweep_unconfirmed(&globals, now)?;
        self.write_load(&active)?;
        Ok(gone)
    }

    /// By backend id: whether its flows stand (`ready` or `drain`; the
    /// program re-selects the others' on their next packet).
    fn usable_backends(&self) -> Result<Vec<bool>> {
        let entries = batch::entries::<u32, Backend>(self.backends.map()).map_err(|source| {
            DataplaneError::Io {
                what: "reading the backends (BACKENDS)".into(),
                source,
            }
        })?;
        let mut usable = vec![false; entries.len()];
        for (id, b) in entries {
            if let Some(u) = usable.get_mut(id as usize) {
                *u = b.family != 0 && (b.state == STATE_READY || b.state == STATE_DRAIN);
            }
        }
        Ok(usable)
    }

    /// Writes `BACKEND_LOAD`: the active flows counted, the program's
    /// new and closed flows since the last write back to 0, the unanswered attempts
    /// counted since added. Only entries that change are written.
    fn write_load(&mut self, active: &StdHashMap<u32, u64>) -> Result<()> {
        let io = |source| DataplaneError::Io {
            what: "reading the backend loads (BACKEND_LOAD)".into(),
            source,
        };
        let (mut ids, mut loads) = (Vec::new(), Vec::new());
        for (id, old) in batch::entries::<u32, BackendLoad>(self.load.map()).map_err(io)? {
            let new = BackendLoad {
                active: active.get(&id).copied().unwrap_or(0),
                recent: 0,
                closed: 0,
                unanswered: old.unanswered + self.unanswered.get(&id).copied().unwrap_or(0),
            };
            if new != old {
                ids.push(id);
                loads.push(new);
            }
        }
        batch::update(self.load.map(), &ids, &loads).map_err(|source| DataplaneError::Io {
            what: "writing the backend loads (BACKEND_LOAD)".into(),
            source,
        })?;
        self.unanswered.clear();
        Ok(())
    }

    /// Deletes expired unconfirmed flows only (their timeout is short and
    /// their SNAT ports are wanted back soon); returns how many.
    pub fn expire_unconfirmed(&mut self) -> Result<u64> {
        match self.globals()? {
            Some(globals) => self.sweep_unconfirmed(&globals, monotonic_secs()),
            None => Ok(0),
        }
    }

    /// The settings the program runs with, once the daemon wrote them.
    fn globals(&self) -> Result<Option<Globals>> {
        let globals = self.config.get(&0, 0).map_err(map_err("CONFIG"))?;
        Ok((globals.ring_size != 0).then_some(globals))
    }

    fn sweep_unconfirmed(&mut self, globals: &Globals, now: u32) -> Result<u64> {
        let unconfirmed = Table {
            flows: &mut self.pending,
            rev: &mut self.pending_rev,
            names: ("PENDING", "PENDING_REV"),
        };
        let unanswered = &mut self.unanswered;
        let (_, gone) = unconfirmed.sweep(
            &self.backends,
            globals,
            |f, _| f.pending_expired(globals, now),
            |k, f, deleted| {
                // A nat TCP flow whose backend sent neither a SYN-ACK nor
                // a RST (`closing`: a RST, or the client's FIN or RST).
                if deleted
                    && k.proto == PROTO_TCP
                    && f.snat_port != 0
                    && f.confirm == 0
                    && f.closing == 0
                {
                    *unanswered.entry(f.backend).or_default() += 1;
                }
            },
        )?;
        Ok(gone)
    }
}

/// A flow table and the reverse entries of its nat flows.
struct Table<'a> {
    flows: &'a mut HashMap<MapData, FlowKey, Flow>,
    rev: &'a mut HashMap<MapData, FlowKey, NatRev>,
    names: (&'static str, &'static str),
}

impl Table<'_> {
    /// Deletes the flows `expired` says are over (and their reverse
    /// entries); returns (entries left, entries deleted). `seen` is told
    /// every flow and whether it was deleted (as last read).
    fn sweep(
        self,
        backends: &Array<MapData, Backend>,
        globals: &Globals,
        expired: impl Fn(&Flow, u8) -> bool,
        mut seen: impl FnMut(&FlowKey, &Flow, bool),
    ) -> Result<(u64, u64)> {
        let (flows_name, rev_name) = self.names;
        let table = batch::entries::<FlowKey, Flow>(self.flows.map()).map_err(|source| {
            DataplaneError::Io {
                what: format!("reading the flow table ({flows_name})"),
                source,
            }
        })?;
        let mut gone = 0;
        for (key, walked) in &table {
            if !expired(walked, key.proto) {
                seen(key, walked, false);
                continue;
            }
            // A packet may have revived it since the walk: look again.
            let Ok(flow) = self.flows.get(key, 0) else {
                continue;
            };
            if !expired(&flow, key.proto) {
                seen(key, &flow, false);
                continue;
            }
            match self.flows.remove(key) {
                Ok(()) | Err(MapError::KeyNotFound) => gone += 1,
                Err(e) => return Err(map_err(flows_name)(e)),
            }
            seen(key, &flow, true);
            if flow.snat_port == 0 {
                continue;
            }
            let backend = backends
                .get(&flow.backend, 0)
                .map_err(map_err("BACKENDS"))?;
            let rk = nat_rev_key(key, &backend.addr, &flow, globals.snat(key.family));
            match self.rev.remove(&rk) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(rev_name)(e)),
            }
        }
        Ok(((table.len() as u64).saturating_sub(gone), gone))
    }
}
