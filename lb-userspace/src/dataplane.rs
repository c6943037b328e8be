//! The XDP program's lifecycle: load it with map sizes from the config,
//! attach it to interfaces, write plans into its maps, read its counters.

use std::collections::HashMap as StdHashMap;

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{ProgramError, Xdp, XdpMode},
};
use lb_common::{
    BackendCounter, Counter, FlowKey, GLOBAL_STATS_LEN, Globals, RING_SLOTS_PER_SERVICE,
    ServiceKey, ServiceMeta,
};

use crate::{
    config::{Limits, XdpModeSetting},
    plan::Plan,
};

/// The XDP object built by build.rs (empty when built with AYA_BUILD_SKIP).
pub static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdplb"));
/// Reference programs `empty`, `drop_all`, `macswap` for benchmarks.
pub static BASELINES: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/baselines"));

const PROGRAM_NAME: &str = "xdplb";

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("this xdplb was built without its XDP program (AYA_BUILD_SKIP); rebuild without it")]
    NotBuilt,
    #[error("loading the XDP object: {0}")]
    Load(#[from] EbpfError),
    #[error("loading the XDP program into the kernel: {0}")]
    Program(#[source] ProgramError),
    #[error("attaching XDP to {iface} ({mode}): {source}")]
    Attach {
        iface: String,
        mode: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("map {0} is missing from the XDP object")]
    MissingMap(&'static str),
    #[error("program {0} is missing from the XDP object")]
    MissingProgram(&'static str),
}

type Result<T> = std::result::Result<T, DataplaneError>;

fn map_err(map: &'static str) -> impl Fn(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, source }
}

pub struct Dataplane {
    ebpf: Ebpf,
    ring_size: u32,
    /// Ring slot each service id currently reads.
    active_slot: StdHashMap<u32, u32>,
}

/// Counters summed over CPUs, except the per-CPU XDP action counts.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// `actions[cpu][action]`, action as in `lb_common::XDP_ACTIONS`.
    pub actions: Vec<[u64; lb_common::XDP_ACTIONS.len()]>,
    /// `GLOBAL_STATS` slots summed over CPUs.
    pub global: Vec<u64>,
    /// By service id (only ids asked for).
    pub services: StdHashMap<u32, Counter>,
    /// By backend id (only ids asked for).
    pub backends: StdHashMap<u32, BackendCounter>,
}

impl Dataplane {
    /// Loads the program (the verifier runs here) with map sizes from `limits`.
    pub fn load(limits: &Limits) -> Result<Self> {
        if PROGRAM.is_empty() {
            return Err(DataplaneError::NotBuilt);
        }
        let rings = limits
            .max_services
            .saturating_mul(RING_SLOTS_PER_SERVICE)
            .saturating_mul(limits.maglev_table_size);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("SERVICES", limits.max_services)
            .map_max_entries("SERVICE_STATS", limits.max_services)
            .map_max_entries("RINGS", rings)
            .map_max_entries("BACKENDS", limits.max_backends)
            .map_max_entries("BACKEND_STATS", limits.max_backends)
            .map_max_entries("FLOWS", limits.flow_table_size)
            .map_max_entries("NAT_REV", limits.flow_table_size)
            .load(PROGRAM)?;
        program_mut(&mut ebpf)?
            .load()
            .map_err(DataplaneError::Program)?;
        Ok(Self {
            ebpf,
            ring_size: limits.maglev_table_size,
            active_slot: StdHashMap::new(),
        })
    }

    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program(PROGRAM_NAME)
            .expect("program present after load")
            .try_into()
            .expect("program is XDP")
    }

    /// Attaches to `iface`; returns the mode used ("native" or "generic").
    /// `Auto` tries native first, then falls back to generic.
    pub fn attach(&mut self, iface: &str, mode: XdpModeSetting) -> Result<&'static str> {
        let prog = program_mut(&mut self.ebpf)?;
        let mut try_mode = |m: XdpMode, name: &'static str| {
            prog.attach(iface, m)
                .map(|_| name)
                .map_err(|source| DataplaneError::Attach {
                    iface: iface.to_string(),
                    mode: name,
                    source,
                })
        };
        match mode {
            XdpModeSetting::Native => try_mode(XdpMode::Driver, "native"),
            XdpModeSetting::Generic => try_mode(XdpMode::Skb, "generic"),
            XdpModeSetting::Auto => {
                try_mode(XdpMode::Driver, "native").or_else(|_| try_mode(XdpMode::Skb, "generic"))
            }
        }
    }

    /// Writes `plan` into the maps. Each service's new ring goes to its idle
    /// slot first; only then does the service entry point at it, so the
    /// program never reads a half-written ring.
    pub fn apply(&mut self, plan: &Plan) -> Result<()> {
        assert_eq!(
            plan.globals.ring_size, self.ring_size,
            "ring size is fixed at load"
        );
        let mut config: Array<_, Globals> = self.typed("CONFIG")?;
        config.set(0, plan.globals, 0).map_err(map_err("CONFIG"))?;

        let mut backends: Array<_, lb_common::Backend> = self.typed("BACKENDS")?;
        for b in plan.services.iter().flat_map(|s| &s.backends) {
            backends
                .set(b.id, b.entry, 0)
                .map_err(map_err("BACKENDS"))?;
        }

        for svc in &plan.services {
            let first = svc.id * RING_SLOTS_PER_SERVICE;
            let slot = match self.active_slot.get(&svc.id) {
                Some(&active) if active == first => first + 1,
                _ => first,
            };
            let base = slot * self.ring_size;
            let mut rings: Array<_, u32> = self.typed("RINGS")?;
            for (i, backend) in svc.ring.iter().enumerate() {
                rings
                    .set(base + i as u32, backend, 0)
                    .map_err(map_err("RINGS"))?;
            }
            let meta = ServiceMeta {
                id: svc.id,
                ring: slot,
                mode: svc.mode,
                hash: svc.hash,
                _pad: [0; 2],
            };
            let mut services: HashMap<_, ServiceKey, ServiceMeta> = self.typed("SERVICES")?;
            services
                .insert(svc.key, meta, 0)
                .map_err(map_err("SERVICES"))?;
            self.active_slot.insert(svc.id, slot);
        }

        // Services no longer in the plan stop matching.
        let mut services: HashMap<_, ServiceKey, ServiceMeta> = self.typed("SERVICES")?;
        let stale: Vec<ServiceKey> = services
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !plan.services.iter().any(|s| s.key == *k))
            .collect();
        for key in stale {
            services.remove(&key).map_err(map_err("SERVICES"))?;
        }
        Ok(())
    }

    /// Reads the counters of the given service and backend ids.
    pub fn counters(&self, service_ids: &[u32], backend_ids: &[u32]) -> Result<Counters> {
        let global: PerCpuArray<_, u64> = self.typed_ref("GLOBAL_STATS")?;
        let mut out = Counters::default();
        for slot in 0..GLOBAL_STATS_LEN {
            let per_cpu = global.get(&slot, 0).map_err(map_err("GLOBAL_STATS"))?;
            out.global.push(per_cpu.iter().sum());
            if (slot as usize) < lb_common::XDP_ACTIONS.len() {
                out.actions.resize(per_cpu.len(), Default::default());
                for (cpu, v) in per_cpu.iter().enumerate() {
                    out.actions[cpu][slot as usize] = *v;
                }
            }
        }
        let services: PerCpuArray<_, Counter> = self.typed_ref("SERVICE_STATS")?;
        for &id in service_ids {
            let per_cpu = services.get(&id, 0).map_err(map_err("SERVICE_STATS"))?;
            let sum = per_cpu.iter().fold(Counter::default(), |a, c| Counter {
                packets: a.packets + c.packets,
                bytes: a.bytes + c.bytes,
            });
            out.services.insert(id, sum);
        }
        let backends: PerCpuArray<_, BackendCounter> = self.typed_ref("BACKEND_STATS")?;
        for &id in backend_ids {
            let per_cpu = backends.get(&id, 0).map_err(map_err("BACKEND_STATS"))?;
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

    /// Entries in the flow table. Walks the keys (one syscall each): fine
    /// for a scrape every few seconds, slow for millions of flows.
    pub fn flow_entries(&self) -> Result<u64> {
        let flows: HashMap<_, FlowKey, lb_common::Flow> = self.typed_ref("FLOWS")?;
        Ok(flows.keys().filter(|k| k.is_ok()).count() as u64)
    }

    /// The ring buffer on which the program asks for neighbour resolution.
    pub fn take_neigh_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map("NEIGH_EVENTS")
            .ok_or(DataplaneError::MissingMap("NEIGH_EVENTS"))?;
        RingBuf::try_from(map).map_err(map_err("NEIGH_EVENTS"))
    }

    fn typed<'a, T>(&'a mut self, name: &'static str) -> Result<T>
    where
        T: TryFrom<&'a mut aya::maps::Map, Error = MapError>,
    {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(DataplaneError::MissingMap(name))?;
        T::try_from(map).map_err(map_err(name))
    }

    fn typed_ref<'a, T>(&'a self, name: &'static str) -> Result<T>
    where
        T: TryFrom<&'a aya::maps::Map, Error = MapError>,
    {
        let map = self
            .ebpf
            .map(name)
            .ok_or(DataplaneError::MissingMap(name))?;
        T::try_from(map).map_err(map_err(name))
    }
}

fn program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    let prog = ebpf
        .program_mut(PROGRAM_NAME)
        .ok_or(DataplaneError::MissingProgram(PROGRAM_NAME))?;
    prog.try_into().map_err(DataplaneError::Program)
}
