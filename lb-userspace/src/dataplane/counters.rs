//! Reading the program's per-CPU counters.

use std::collections::HashMap;

use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray},
};
use lb_common::{BackendCounter, BackendLoad, Counter, GLOBAL_STATS_LEN, Handshakes};

use super::{Result, handles::open, map_err};

/// Counters summed over CPUs, except the per-CPU XDP action counts.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// `actions[cpu][action]`, action as in `lb_common::XDP_ACTIONS`.
    pub actions: Vec<[u64; lb_common::XDP_ACTIONS.len()]>,
    /// `GLOBAL_STATS` slots summed over CPUs.
    pub global: Vec<u64>,
    /// By service id (only ids asked for).
    pub services: HashMap<u32, Counter>,
    /// By backend id (only ids asked for).
    pub backends: HashMap<u32, BackendCounter>,
    /// Flows held and connection attempts unanswered, by backend id (as
    /// of the last expiry sweep: `lb_common::BackendLoad`).
    pub loads: HashMap<u32, BackendLoad>,
    /// Handshake latencies by backend id.
    pub handshakes: HashMap<u32, Handshakes>,
}

impl Counters {
    /// The golden signals of backend `id` of `svc` (`api_types::Signals`).
    pub fn signals(&self, svc: &crate::plan::ServicePlan, id: u32) -> crate::api_types::Signals {
        crate::api_types::Signals::new(
            &self.backends.get(&id).copied().unwrap_or_default(),
            &self.loads.get(&id).copied().unwrap_or_default(),
            &self.handshakes.get(&id).copied().unwrap_or_default(),
            svc.mode == lb_common::MODE_NAT,
            svc.key.proto == lb_common::PROTO_TCP,
        )
    }
}

/// The counter maps, on fds of their own (`handles`).
pub struct CounterReader {
    global: PerCpuArray<MapData, u64>,
    services: PerCpuArray<MapData, Counter>,
    backends: PerCpuArray<MapData, BackendCounter>,
    loads: Array<MapData, BackendLoad>,
    handshakes: PerCpuArray<MapData, Handshakes>,
}

impl CounterReader {
    pub(super) fn open(ebpf: &Ebpf) -> Result<Self> {
        Ok(CounterReader {
            global: open(ebpf, "GLOBAL_STATS")?,
            services: open(ebpf, "SERVICE_STATS")?,
            backends: open(ebpf, "BACKEND_STATS")?,
            loads: open(ebpf, "BACKEND_LOAD")?,
            handshakes: open(ebpf, "BACKEND_HANDSHAKE")?,
        })
    }

    /// The global counters and those of the given service and backend ids.
    pub fn read(&self, service_ids: &[u32], backend_ids: &[u32]) -> Result<Counters> {
        let mut out = Counters::default();
        for slot in 0..GLOBAL_STATS_LEN {
            let per_cpu = self.global.get(&slot, 0).map_err(map_err("GLOBAL_STATS"))?;
            out.global.push(per_cpu.iter().sum());
            if (slot as usize) < lb_common::XDP_ACTIONS.len() {
                out.actions.resize(per_cpu.len(), Default::default());
                for (cpu, v) in per_cpu.iter().enumerate() {
                    out.actions[cpu][slot as usize] = *v;
                }
            }
        }
        for &id in service_ids {
            let per_cpu = self
                .services
                .get(&id, 0)
                .map_err(map_err("SERVICE_STATS"))?;
            let sum = per_cpu.iter().fold(Counter::default(), |a, c| Counter {
                packets: a.packets + c.packets,
                bytes: a.bytes + c.bytes,
            });
            out.services.insert(id, sum);
        }
        for &id in backend_ids {
            let per_cpu = self
                .backends
                .get(&id, 0)
                .map_err(map_err("BACKEND_STATS"))?;
            let sum = per_cpu
                .iter()
                .fold(BackendCounter::default(), |a, c| BackendCounter {
                    packets: a.packets + c.packets,
                    bytes: a.bytes + c.bytes,
                    flows: a.flows + c.flows,
                    reply_bytes: a.reply_bytes + c.reply_bytes,
                    resets: a.resets + c.resets,
                    full: a.full + c.full,
                });
            out.backends.insert(id, sum);
            let load = self.loads.get(&id, 0).map_err(map_err("BACKEND_LOAD"))?;
            out.loads.insert(id, load);
            let per_cpu = self
                .handshakes
                .get(&id, 0)
                .map_err(map_err("BACKEND_HANDSHAKE"))?;
            let mut sum = Handshakes::default();
            for h in per_cpu.iter() {
                for (s, b) in sum.buckets.iter_mut().zip(h.buckets) {
                    *s += b;
                }
                sum.sum_us += h.sum_us;
            }
            out.handshakes.insert(id, sum);
        }
        Ok(out)
    }
}
