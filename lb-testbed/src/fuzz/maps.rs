//! The program's state, read and reset between epochs: the flow and NAT
//! tables (confirmed: `FLOWS`, `NAT_REV`; unconfirmed: `PENDING`,
//! `PENDING_REV`) and the global counters, on handles opened from the pins
//! the daemon's own loader made (`Dataplane::load` with a pin directory).

use std::{
    collections::{HashMap as StdHashMap, HashSet},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use aya::maps::{HashMap, Map, MapData, PerCpuArray};
use lb_common::{
    Flow, FlowKey, GLOBAL_STATS_LEN, NatRev, STAT_FIB_FAIL, STAT_FULL_DROP, STAT_NEIGH_MISS,
    STAT_NO_BACKEND, STAT_REJECT_LIMITED, STAT_SNAT_EXHAUSTED, XDP_ACTIONS, nat_rev_key,
};

use super::{config::Mode, world::World};

/// The counters that say why a packet was dropped. (The other slots count
/// what went well: answers, new and confirmed flows, partial checksums.)
pub const DROP_SLOTS: [u32; 6] = [
    STAT_NEIGH_MISS,
    STAT_SNAT_EXHAUSTED,
    STAT_NO_BACKEND,
    STAT_FIB_FAIL,
    STAT_REJECT_LIMITED,
    STAT_FULL_DROP,
];

pub fn slot_name(slot: u32) -> String {
    match slot {
        STAT_NEIGH_MISS => "neigh_miss".into(),
        STAT_SNAT_EXHAUSTED => "snat_exhausted".into(),
        STAT_NO_BACKEND => "no_backend".into(),
        STAT_FIB_FAIL => "fib_fail".into(),
        STAT_REJECT_LIMITED => "reject_limited".into(),
        STAT_FULL_DROP => "full_drop".into(),
        s => format!("slot {s}"),
    }
}

/// A flow table and the NAT table of its nat flows.
pub struct Tables {
    pub flows: HashMap<MapData, FlowKey, Flow>,
    pub revs: HashMap<MapData, FlowKey, NatRev>,
    name: &'static str,
}

pub struct Maps {
    pub confirmed: Tables,
    pub unconfirmed: Tables,
    stats: PerCpuArray<MapData, u64>,
}

fn open(dir: &Path, name: &str) -> Result<Map> {
    let path: PathBuf = dir.join(name);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    Map::from_map_data(data).with_context(|| format!("map {name}"))
}

impl Maps {
    pub fn open(pin_dir: &Path) -> Result<Maps> {
        let tables = |flows, revs, name| -> Result<Tables> {
            Ok(Tables {
                flows: HashMap::try_from(open(pin_dir, flows)?)?,
                revs: HashMap::try_from(open(pin_dir, revs)?)?,
                name,
            })
        };
        Ok(Maps {
            confirmed: tables("FLOWS", "NAT_REV", "confirmed")?,
            unconfirmed: tables("PENDING", "PENDING_REV", "unconfirmed")?,
            stats: PerCpuArray::try_from(open(pin_dir, "GLOBAL_STATS")?)?,
        })
    }

    fn both(&self) -> [&Tables; 2] {
        [&self.confirmed, &self.unconfirmed]
    }

    /// The flow of `key`, confirmed or not.
    pub fn flow(&self, key: &FlowKey) -> Option<Flow> {
        self.both().iter().find_map(|t| t.flows.get(key, 0).ok())
    }

    /// The NAT entry of `key`, confirmed or not.
    pub fn rev(&self, key: &FlowKey) -> Option<NatRev> {
        self.both().iter().find_map(|t| t.revs.get(key, 0).ok())
    }

    /// Forgets the flow `key` and the NAT entry `rev_key`, wherever they are.
    pub fn forget(&mut self, key: &FlowKey, rev_key: Option<&FlowKey>) {
        for t in [&mut self.confirmed, &mut self.unconfirmed] {
            let _ = t.flows.remove(key);
            if let Some(rk) = rev_key {
                let _ = t.revs.remove(rk);
            }
        }
    }

    /// One global counter, summed over CPUs.
    pub fn stat(&self, slot: u32) -> Result<u64> {
        Ok(self.stats.get(&slot, 0)?.iter().sum())
    }

    pub fn stats(&self) -> Result<Vec<u64>> {
        (0..GLOBAL_STATS_LEN).map(|s| self.stat(s)).collect()
    }

    /// Makes a flow look idle past its timeout: its next packet starts it
    /// anew (re-selected, with a new SNAT port in nat mode).
    pub fn age(&mut self, key: &FlowKey) -> Result<bool> {
        for t in [&mut self.confirmed, &mut self.unconfirmed] {
            if let Ok(mut f) = t.flows.get(key, 0) {
                f.last_seen = xdplb::dataplane::monotonic_secs().wrapping_sub(4 * 3600);
                t.flows.insert(key, f, 0)?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Empties the flow and NAT tables (a new epoch).
    pub fn clear(&mut self) -> Result<()> {
        for t in [&mut self.confirmed, &mut self.unconfirmed] {
            let keys: Vec<FlowKey> = t.flows.keys().filter_map(|k| k.ok()).collect();
            for k in keys {
                let _ = t.flows.remove(&k);
            }
            let keys: Vec<FlowKey> = t.revs.keys().filter_map(|k| k.ok()).collect();
            for k in keys {
                let _ = t.revs.remove(&k);
            }
        }
        Ok(())
    }

    /// The tables agree with each other and with the plan, the confirmed
    /// and the unconfirmed pair each (`Tables::check`), and no flow is in
    /// both. Returns (flows, NAT entries).
    pub fn check(&self, w: &World, insert_failed: bool) -> Result<(usize, usize)> {
        let (confirmed, c_revs) = self.confirmed.check(w, insert_failed)?;
        let (unconfirmed, u_revs) = self.unconfirmed.check(w, insert_failed)?;
        if let Some(k) = confirmed.keys().find(|k| unconfirmed.contains_key(k)) {
            bail!(
                "flow {} is both confirmed and unconfirmed",
                super::report::key_text(k)
            );
        }
        Ok((confirmed.len() + unconfirmed.len(), c_revs + u_revs))
    }
}

impl Tables {
    /// Every flow belongs to the service of its key and points at a
    /// backend of its ring with the right port; a nat flow has a SNAT port
    /// in range and its NAT entry, which points back at it; every NAT entry
    /// belongs to a flow. Returns the flows and the count of NAT entries.
    fn check(&self, w: &World, insert_failed: bool) -> Result<(StdHashMap<FlowKey, Flow>, usize)> {
        let flows: StdHashMap<FlowKey, Flow> = self
            .flows
            .iter()
            .collect::<Result<_, _>>()
            .with_context(|| format!("reading the {} flows", self.name))?;
        let revs: StdHashMap<FlowKey, NatRev> = self
            .revs
            .iter()
            .collect::<Result<_, _>>()
            .with_context(|| format!("reading the {} NAT entries", self.name))?;
        let (lo, hi) = (w.globals.snat_port_min, w.globals.snat_port_max);
        let mut paired = 0;
        for (k, f) in &flows {
            let what = || format!("{} flow {} -> {f:?}", self.name, super::report::key_text(k));
            let Some(svc) = w.service_of(k) else {
                bail!("{}: no service has this key", what());
            };
            let s = &w.services[svc];
            let Some((owner, b)) = w.backends.get(&f.backend) else {
                bail!("{}: backend {} does not exist", what(), f.backend);
            };
            if *owner != svc || !s.ring.contains(&f.backend) {
                bail!(
                    "{}: backend {} is not in the ring of {}",
                    what(),
                    f.backend,
                    s.name
                );
            }
            let port = if b.port == 0 { k.dport } else { b.port };
            if f.backend_port != port {
                bail!("{}: backend port should be {}", what(), u16::from_be(port));
            }
            if s.mode != Mode::Nat {
                if f.snat_port != 0 {
                    bail!("{}: a SNAT port in {:?} mode", what(), s.mode);
                }
                continue;
            }
            if !(lo..=hi).contains(&u16::from_be(f.snat_port)) {
                bail!("{}: SNAT port outside {lo}-{hi}", what());
            }
            let rk = nat_rev_key(k, &b.addr, f, w.globals.snat(k.family));
            let Some(r) = revs.get(&rk) else {
                bail!("{}: no NAT entry {}", what(), super::report::key_text(&rk));
            };
            if r.client != k.src
                || r.vip != k.dst
                || r.client_port != k.sport
                || r.vip_port != k.dport
                || r.backend != f.backend
                || r.service != s.id
            {
                bail!("{}: its NAT entry points elsewhere: {r:?}", what());
            }
            paired += 1;
        }
        if paired != revs.len() && !insert_failed {
            let orphan = revs.iter().find(|(rk, r)| {
                let k = FlowKey {
                    src: r.client,
                    dst: r.vip,
                    sport: r.client_port,
                    dport: r.vip_port,
                    proto: rk.proto,
                    family: rk.family,
                    _pad: [0; 2],
                };
                flows.get(&k).is_none_or(|f| {
                    w.backends.get(&f.backend).is_none_or(|(_, b)| {
                        nat_rev_key(&k, &b.addr, f, w.globals.snat(k.family)) != **rk
                    })
                })
            });
            if let Some((rk, r)) = orphan {
                bail!(
                    "NAT entry {} -> {r:?} belongs to no flow ({} NAT entries, {paired} nat flows)",
                    super::report::key_text(rk),
                    revs.len()
                );
            }
        }
        Ok((flows, revs.len()))
    }
}

impl Maps {
    /// Flow sync: every nat flow of the table was announced to the peers
    /// (unless the ring overflowed, `lost`), and no flow both is here and
    /// has another owner (creating a flow claims it).
    pub fn check_sync(
        &self,
        w: &World,
        announced: &HashSet<FlowKey>,
        owners: &HashSet<FlowKey>,
        lost: bool,
    ) -> Result<()> {
        // Only confirmed flows are announced (and claimed).
        for item in self.confirmed.flows.iter() {
            let (k, _) = item.context("reading FLOWS")?;
            let nat = w
                .service_of(&k)
                .is_some_and(|s| w.services[s].mode == Mode::Nat);
            if !nat {
                continue;
            }
            if !lost && !announced.contains(&k) {
                bail!(
                    "nat flow {} was not announced to the peers",
                    super::report::key_text(&k)
                );
            }
            if owners.contains(&k) {
                bail!(
                    "nat flow {} is here and owned by a peer too",
                    super::report::key_text(&k)
                );
            }
        }
        Ok(())
    }
}

/// The action counters (slots 0-4) in `stats`.
pub fn actions(stats: &[u64]) -> [u64; 5] {
    let mut a = [0; 5];
    a.copy_from_slice(&stats[..XDP_ACTIONS.len()]);
    a
}
