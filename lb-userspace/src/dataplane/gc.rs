//! Deleting flows that are over (idle past their timeout), so the flow
//! table holds live flows and `xdplb_flow_table_entries` means something.
//! The program already treats such a flow as new on its next packet; this
//! only frees the entries (and their NAT reverse entries).

use aya::maps::{HashMap, MapError};
use lb_common::{Flow, FlowKey, NatRev, nat_rev_key};

use super::{Dataplane, DataplaneError, Result, batch, map_err};

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

impl Dataplane {
    /// Deletes expired flows; returns how many. Reads the whole table
    /// (thousands of entries per syscall), then deletes one by one.
    pub fn expire_flows(&mut self) -> Result<u64> {
        let Some(globals) = self.shadow.globals else {
            return Ok(0);
        };
        let now = monotonic_secs();
        let expired: Vec<FlowKey> = self
            .flow_table()?
            .into_iter()
            .filter(|(k, f)| f.expired(k.proto, &globals, now))
            .map(|(k, _)| k)
            .collect();
        let mut flows: HashMap<_, FlowKey, Flow> = self.typed("FLOWS")?;
        let mut gone = Vec::new();
        for key in expired {
            // A packet may have revived it since the walk: look again.
            let Ok(flow) = flows.get(&key, 0) else {
                continue;
            };
            if !flow.expired(key.proto, &globals, now) {
                continue;
            }
            match flows.remove(&key) {
                Ok(()) | Err(MapError::KeyNotFound) => gone.push((key, flow)),
                Err(e) => return Err(map_err("FLOWS")(e)),
            }
        }
        let backends = self.shadow.backends.clone();
        let mut rev: HashMap<_, FlowKey, NatRev> = self.typed("NAT_REV")?;
        for (key, flow) in &gone {
            if flow.snat_port == 0 {
                continue;
            }
            let Some(backend) = backends.get(&flow.backend) else {
                continue;
            };
            let rk = nat_rev_key(key, &backend.addr, flow, globals.snat(key.family));
            match rev.remove(&rk) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err("NAT_REV")(e)),
            }
        }
        Ok(gone.len() as u64)
    }

    /// Every entry of the flow table.
    pub(super) fn flow_table(&self) -> Result<Vec<(FlowKey, Flow)>> {
        let Some(aya::maps::Map::LruHashMap(flows)) = self.ebpf.map("FLOWS") else {
            return Err(DataplaneError::MissingMap("FLOWS"));
        };
        batch::entries(flows).map_err(|source| DataplaneError::Io {
            what: "reading the flow table (FLOWS)".into(),
            source,
        })
    }
}
