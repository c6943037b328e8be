//! The flow table seen from userspace: deleting flows that are over (idle
//! past their timeout), so the table holds live flows, and counting its
//! entries. The program already treats an expired flow as new on its next
//! packet; the sweep only frees the entries (and their NAT reverse
//! entries). It runs on its own map fds (`handles`), off the controller.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, IterableMap, MapData, MapError},
};
use lb_common::{Backend, Flow, FlowKey, Globals, NatRev, nat_rev_key};

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
    /// Backend addresses, for the reverse keys of expired NAT flows.
    backends: Array<MapData, Backend>,
    /// Timeouts and SNAT addresses as the daemon last wrote them.
    config: Array<MapData, Globals>,
    /// Entries left after the last sweep (`xdplb_flow_table_entries`).
    swept: Arc<AtomicU64>,
}

impl FlowTable {
    pub(super) fn open(ebpf: &Ebpf) -> Result<Self> {
        Ok(FlowTable {
            flows: open(ebpf, "FLOWS")?,
            nat_rev: open(ebpf, "NAT_REV")?,
            backends: open(ebpf, "BACKENDS")?,
            config: open(ebpf, "CONFIG")?,
            swept: Arc::default(),
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

    /// Deletes expired flows and returns how many; records how many are
    /// left. Reads the whole table, then deletes one by one.
    pub fn expire(&mut self) -> Result<u64> {
        let globals = self.config.get(&0, 0).map_err(map_err("CONFIG"))?;
        let table = self.entries()?;
        if globals.ring_size == 0 {
            // No config written yet: nothing can be judged expired.
            self.swept.store(table.len() as u64, Ordering::Relaxed);
            return Ok(0);
        }
        let now = monotonic_secs();
        let expired: Vec<FlowKey> = table
            .iter()
            .filter(|(k, f)| f.expired(k.proto, &globals, now))
            .map(|(k, _)| *k)
            .collect();
        let mut gone = 0;
        for key in expired {
            // A packet may have revived it since the walk: look again.
            let Ok(flow) = self.flows.get(&key, 0) else {
                continue;
            };
            if !flow.expired(key.proto, &globals, now) {
                continue;
            }
            match self.flows.remove(&key) {
                Ok(()) | Err(MapError::KeyNotFound) => gone += 1,
                Err(e) => return Err(map_err("FLOWS")(e)),
            }
            if flow.snat_port != 0 {
                self.forget_nat(&key, &flow, &globals)?;
            }
        }
        self.swept
            .store((table.len() as u64).saturating_sub(gone), Ordering::Relaxed);
        Ok(gone)
    }

    fn forget_nat(&mut self, key: &FlowKey, flow: &Flow, globals: &Globals) -> Result<()> {
        let backend = self
            .backends
            .get(&flow.backend, 0)
            .map_err(map_err("BACKENDS"))?;
        let rk = nat_rev_key(key, &backend.addr, flow, globals.snat(key.family));
        match self.nat_rev.remove(&rk) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("NAT_REV")(e)),
        }
    }
}
