//! Writing a plan into the maps, touching only what changed since the last
//! write (or since the state adopted from pinned maps).

use aya::maps::{Array, HashMap, PerCpuArray, PerCpuValues};
use lb_common::{
    Backend, BackendCounter, Counter, Globals, MODE_ECHO, RING_SLOTS_PER_SERVICE, STATE_DRAIN,
    ServiceBackends, ServiceKey, ServiceMeta,
};

use super::{Dataplane, DataplaneError, Result, batch, map_err};
use crate::plan::{Plan, Ring};

impl Dataplane {
    /// Writes `plan` into the maps, changes only. A service's new ring goes
    /// to its idle slot first; only then does the service entry point at it,
    /// so the program never reads a half-written ring. Ids new to the maps
    /// get zeroed counters. A backend that left the config is drained, as
    /// IPVS does: no new flows, its existing ones finish (its id is reused
    /// last, see `ids`).
    pub fn apply(&mut self, plan: &Plan) -> Result<()> {
        assert_eq!(
            plan.globals.ring_size, self.ring_size,
            "ring size is fixed at load"
        );
        self.forward_ipv6_if(plan)?;
        if self.shadow.globals != Some(plan.globals) {
            let mut config: Array<_, Globals> = self.typed("CONFIG")?;
            config.set(0, plan.globals, 0).map_err(map_err("CONFIG"))?;
            self.shadow.globals = Some(plan.globals);
        }

        let known_services: Vec<u32> = self.shadow.services.values().map(|m| m.id).collect();
        for svc in &plan.services {
            if !known_services.contains(&svc.id) {
                self.zero_service_counters(svc.id)?;
            }
        }
        self.write_backends(plan)?;
        self.remove_stale_services(plan)?;

        for svc in &plan.services {
            let current = self.shadow.services.get(&svc.key).copied();
            // (The same ring when the plan reused it: no entry compared.)
            let ring_changed = self.shadow.rings.get(&svc.id) != Some(&svc.ring)
                || current.is_none_or(|m| m.id != svc.id);
            let slot = match current {
                Some(m) if m.id == svc.id && !ring_changed => m.ring,
                Some(m) if m.id == svc.id => idle_slot(svc.id, m.ring),
                _ => svc.id * RING_SLOTS_PER_SERVICE,
            };
            if ring_changed {
                self.write_ring(slot, &svc.ring)?;
                self.shadow.rings.insert(svc.id, svc.ring.clone());
            }
            let list = svc.overflow_list();
            if self.shadow.overflow.get(&svc.id) != Some(&list) {
                let mut lists: Array<_, ServiceBackends> = self.typed("SERVICE_BACKENDS")?;
                lists
                    .set(svc.id, list, 0)
                    .map_err(map_err("SERVICE_BACKENDS"))?;
                self.shadow.overflow.insert(svc.id, list);
            }
            let meta = ServiceMeta {
                id: svc.id,
                ring: slot,
                mode: svc.mode,
                hash: svc.hash,
                encap: svc.encap,
                flags: svc.flags,
            };
            if current != Some(meta) {
                let mut services: HashMap<_, ServiceKey, ServiceMeta> = self.typed("SERVICES")?;
                services
                    .insert(svc.key, meta, 0)
                    .map_err(map_err("SERVICES"))?;
                self.shadow.services.insert(svc.key, meta);
            }
        }

        for (key, meta) in &plan.echo {
            if self.shadow.services.get(key) != Some(meta) {
                let mut services: HashMap<_, ServiceKey, ServiceMeta> = self.typed("SERVICES")?;
                services.insert(key, meta, 0).map_err(map_err("SERVICES"))?;
                self.shadow.services.insert(*key, *meta);
            }
        }

        Ok(())
    }

    /// Services no longer in the plan stop matching. This goes before any
    /// insert, so a map at capacity still takes a change (a VIP moved, one
    /// service replaced by another) and a reused id never has two keys.
    fn remove_stale_services(&mut self, plan: &Plan) -> Result<()> {
        let stale: Vec<ServiceKey> = self
            .shadow
            .services
            .keys()
            .filter(|k| !plan.services.iter().any(|s| s.key == **k))
            .filter(|k| !plan.echo.iter().any(|(e, _)| e == *k))
            .copied()
            .collect();
        for key in stale {
            let mut services: HashMap<_, ServiceKey, ServiceMeta> = self.typed("SERVICES")?;
            match services.remove(&key) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err("SERVICES")(e)),
            }
            if let Some(meta) = self.shadow.services.remove(&key)
                && meta.mode != MODE_ECHO
            {
                self.shadow.rings.remove(&meta.id);
                self.shadow.overflow.remove(&meta.id);
            }
        }
        Ok(())
    }

    fn write_backends(&mut self, plan: &Plan) -> Result<()> {
        let planned: Vec<(u32, Backend)> = plan
            .services
            .iter()
            .flat_map(|s| s.backends.iter().map(|b| (b.id, b.entry)))
            .collect();
        let removed: Vec<u32> = self
            .shadow
            .backends
            .keys()
            .filter(|id| !planned.iter().any(|(p, _)| p == *id))
            .copied()
            .collect();
        for (id, entry) in planned {
            match self.shadow.backends.get(&id) {
                Some(old) if *old == entry => continue,
                // Counters continue only for the same backend of the same service.
                Some(old)
                    if old.service == entry.service
                        && old.addr == entry.addr
                        && old.port == entry.port => {}
                _ => self.zero_backend_counters(id)?,
            }
            let mut backends: Array<_, Backend> = self.typed("BACKENDS")?;
            backends.set(id, entry, 0).map_err(map_err("BACKENDS"))?;
            self.shadow.backends.insert(id, entry);
        }
        for id in removed {
            let drained = Backend {
                state: STATE_DRAIN,
                ..self.shadow.backends[&id]
            };
            let mut backends: Array<_, Backend> = self.typed("BACKENDS")?;
            backends.set(id, drained, 0).map_err(map_err("BACKENDS"))?;
            self.shadow.backends.remove(&id);
        }
        Ok(())
    }

    /// Plain stores through the mapping (`ring_map`), else one syscall for
    /// the whole ring (`batch`).
    fn write_ring(&mut self, slot: u32, ring: &Ring) -> Result<()> {
        let base = slot * self.ring_size;
        let Some(aya::maps::Map::Array(rings)) = self.ebpf.map("RINGS") else {
            return Err(DataplaneError::MissingMap("RINGS"));
        };
        if let Some(mem) = &self.rings {
            return mem
                .write(rings, base, ring.iter())
                .map_err(|source| DataplaneError::Io {
                    what: format!("writing ring slot {slot} (RINGS, mapped)"),
                    source,
                });
        }
        let keys: Vec<u32> = (base..).take(ring.len()).collect();
        let ids: Vec<u32> = ring.iter().collect();
        batch::update(rings, &keys, &ids).map_err(|source| DataplaneError::Io {
            what: format!("writing ring slot {slot} (RINGS)"),
            source,
        })
    }

    fn zero_service_counters(&mut self, id: u32) -> Result<()> {
        let cpus = nr_cpus()?;
        let mut stats: PerCpuArray<_, Counter> = self.typed("SERVICE_STATS")?;
        let zeros = PerCpuValues::try_from(vec![Counter::default(); cpus]).map_err(cpus_err)?;
        stats.set(id, zeros, 0).map_err(map_err("SERVICE_STATS"))
    }

    fn zero_backend_counters(&mut self, id: u32) -> Result<()> {
        let cpus = nr_cpus()?;
        let mut stats: PerCpuArray<_, BackendCounter> = self.typed("BACKEND_STATS")?;
        let zeros =
            PerCpuValues::try_from(vec![BackendCounter::default(); cpus]).map_err(cpus_err)?;
        stats.set(id, zeros, 0).map_err(map_err("BACKEND_STATS"))
    }
}

/// The other ring slot of service `id`.
fn idle_slot(id: u32, active: u32) -> u32 {
    let first = id * RING_SLOTS_PER_SERVICE;
    if active == first { first + 1 } else { first }
}

fn cpus_err(source: std::io::Error) -> DataplaneError {
    DataplaneError::Io {
        what: "counting CPUs".into(),
        source,
    }
}

fn nr_cpus() -> Result<usize> {
    aya::util::nr_cpus().map_err(|(_, e)| cpus_err(e))
}
