//! Reading the program's per-CPU counters.

use std::collections::HashMap;

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
};
use lb_common::{BackendCounter, Counter, GLOBAL_STATS_LEN};

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
}

/// The three counter maps, on fds of their own (`handles`).
pub struct CounterReader {
    global: PerCpuArray<MapData, u64>,
    services: PerCpuArray<MapData, Counter>,
    backends: PerCpuArray<MapData, BackendCounter>,
}

impl CounterReader {
    pub(super) fn open(ebpf: &Ebpf) -> Result<Self> {
        Ok(CounterReader {
            global: open(ebpf, "GLOBAL_STATS")?,
            services: open(ebpf, "SERVICE_STATS")?,
            backends: open(ebpf, "BACKEND_STATS")?,
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
                });
            out.backends.insert(id, sum);
        }
        Ok(out)
    }
}
