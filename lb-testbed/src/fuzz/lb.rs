//! The programs under test, loaded and configured as the daemon does it
//! (`Dataplane::load` and `apply`, `decap::load`), with handles on the
//! maps the checks read and the fuzzer writes (flows aged or handed to a
//! flow sync peer, the peers' state), and one frame's run and check.

use std::{
    collections::HashSet,
    net::IpAddr,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context, Result};
use aya::Ebpf;
use lb_common::{FAMILY_V4, FlowKey, Peer, STAT_FLOW_INSERT_FAIL, mac_key, nat_rev_key};
use xdplb::{config::Config, dataplane::Dataplane, plan};

use super::{
    check::{self, Before, Checked, Failure, Run},
    config::{self, Variant},
    maps::{DROP_SLOTS, Maps},
    model::{self, Expect},
    wire::{self, hex},
    world::{self, World},
};
use crate::{XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX, run_frame};

/// The programs, loaded as the daemon loads them, and the state the
/// checks read.
pub struct Lb {
    pub dp: Dataplane,
    pub maps: Maps,
    /// Flow sync's maps, which the daemon's sync task would fill.
    pub sync: xdplb::sync::Maps,
    pub decap: Ebpf,
    pub world: World,
    pub yaml: String,
    /// Flow sync on, and which peers are alive.
    pub peers_alive: Option<[bool; 2]>,
    /// The drop counters as last read (they only grow on a DROP or an
    /// answer, when they are read again).
    pub counters: Vec<u64>,
}

impl Lb {
    pub fn load(variant: &Variant) -> Result<Lb> {
        static N: AtomicU32 = AtomicU32::new(0);
        let yaml = variant.yaml();
        let cfg = Config::from_yaml(&yaml).context("the fuzzing config")?;
        // Pinned, so the checks can open the maps the daemon's loader made.
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/xdplb-fuzz-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let mut dp = Dataplane::load(&cfg.limits, Some(&pin_dir)).inspect_err(|_| {
            // A refused program leaves the maps pinned.
            let _ = std::fs::remove_dir_all(&pin_dir);
        })?;
        // Pins go now: the handles below keep the maps.
        let maps = Maps::open(&pin_dir);
        dp.unpin_all()?;
        let maps = maps?;
        let sync = dp.sync_maps()?;
        let counters = maps.stats()?;
        let plan = plan::from_config(&cfg).map_err(anyhow::Error::msg)?;
        let mut lb = Lb {
            dp,
            maps,
            sync,
            decap: xdplb::decap::load(cfg.gue_port)?,
            world: World::new(&plan),
            yaml,
            peers_alive: None,
            counters,
        };
        lb.set_variant(variant)?;
        Ok(lb)
    }

    /// Switches to another variant of the config (ids stay: same names),
    /// and sets flow sync's peers as the daemon would.
    pub fn set_variant(&mut self, variant: &Variant) -> Result<()> {
        self.yaml = variant.yaml();
        let cfg = Config::from_yaml(&self.yaml).context("the fuzzing config")?;
        let plan = plan::from_config(&cfg).map_err(anyhow::Error::msg)?;
        self.dp.apply(&plan)?;
        self.world = World::new(&plan);
        self.peers_alive = variant.sync;
        let alive = variant.sync.unwrap_or_default();
        for (i, addr) in config::PEERS.iter().enumerate() {
            let peer = Peer {
                addr: world::words((*addr).into()),
                family: FAMILY_V4,
                alive: alive[i] as u8,
                ..Peer::default()
            };
            self.sync.peers.set(i as u32, peer, 0)?;
        }
        self.sync
            .peer_macs
            .insert(mac_key(&config::PEER_MAC), 0, 0)?;
        Ok(())
    }

    /// Another node takes flow `key` over (as after a failover): this node
    /// forgets it, and `OWNERS` names the peer.
    pub fn hand_over(&mut self, key: &FlowKey, peer: u32) -> Result<()> {
        if let Some(f) = self.maps.flow(key) {
            let rk = match self.world.backends.get(&f.backend) {
                Some((_, b)) if f.snat_port != 0 => Some(nat_rev_key(
                    key,
                    &b.addr,
                    &f,
                    self.world.globals.snat(key.family),
                )),
                _ => None,
            };
            self.maps.forget(key, rk.as_ref());
        }
        self.sync.owners.insert(key, peer, 0)?;
        Ok(())
    }

    /// The peer a nat packet should be handed to (`xdplb_owner`): flow
    /// sync on, not a connection's first packet, no flow here, an owner
    /// that is alive, and not from a peer.
    pub fn owner_of(&self, frame: &[u8], svc: usize, pkt: &model::Pkt) -> Option<IpAddr> {
        let alive = self.peers_alive?;
        let opens = pkt.key.proto == wire::TCP && frame[pkt.l4 + 13] & 0x12 == 0x02;
        if self.world.services[svc].mode != config::Mode::Nat
            || opens
            || frame[6..12] == config::PEER_MAC
            || self.maps.flow(&pkt.key).is_some()
        {
            return None;
        }
        let peer = self.sync.owners.get(&pkt.key, 0).ok()? as usize;
        (*alive.get(peer)?).then(|| config::PEERS[peer].into())
    }

    /// Runs one frame through the balancer and checks what it did.
    pub fn step(&mut self, frame: &[u8]) -> Result<Stepped> {
        let expect = model::expect(frame, &self.world);
        let before = match expect {
            Expect::Reply { pkt } => Before::Rev(self.maps.rev(&pkt.key)),
            Expect::IcmpError { flow, .. } => Before::Flow(self.maps.flow(&flow)),
            Expect::Balance { svc, pkt } => match self.owner_of(frame, svc, &pkt) {
                Some(peer) => Before::Owner(peer),
                None => Before::None,
            },
            _ => Before::None,
        };
        let ran = run_frame(self.dp.program(), frame);
        let sent = ran.verdict == XDP_TX || ran.verdict == XDP_REDIRECT;
        let mut flow_after = None;
        let mut keys = Vec::new();
        let mut read = ran.verdict == XDP_DROP;
        match expect {
            Expect::Balance { svc, pkt } => {
                keys.push(pkt.key);
                if sent {
                    flow_after = self.maps.flow(&pkt.key);
                    read |= flow_after.is_none() || self.world.services[svc].ring.is_empty();
                }
                if let Some(f) = flow_after
                    && let Some((_, b)) = self.world.backends.get(&f.backend)
                {
                    keys.push(nat_rev_key(
                        &pkt.key,
                        &b.addr,
                        &f,
                        self.world.globals.snat(pkt.key.family),
                    ));
                }
            }
            Expect::Reply { pkt } => {
                keys.push(pkt.key);
                if let Before::Rev(Some(r)) = before {
                    keys.push(FlowKey {
                        src: r.client,
                        dst: r.vip,
                        sport: r.client_port,
                        dport: r.vip_port,
                        ..pkt.key
                    });
                }
            }
            Expect::IcmpError { flow, .. } => keys.push(flow),
            _ => {}
        }
        let grown = if read { self.grown()? } else { Vec::new() };
        let mut checked = check::check(&Run {
            w: &self.world,
            input: frame,
            expect,
            before,
            verdict: ran.verdict,
            output: &ran.out,
            grown: &grown,
            flow_after,
        });
        // A tunnel packet must come out of the decapsulator as it went in.
        let mut round_trip = false;
        if let Ok(Checked {
            round_trip: Some(expected),
            ..
        }) = &checked
        {
            round_trip = true;
            let (v, got) = self.decap(&ran.out)?;
            if v != XDP_PASS || got != *expected {
                checked = Err(Failure {
                    class: "tunnel_round_trip",
                    detail: format!(
                        "the balancer's tunnel packet, decapsulated by xdplb_decap ({}), is not \
                         the frame the client sent: {}",
                        check::verdict_name(v),
                        hex(&got)
                    ),
                });
            }
        }
        Ok(Stepped {
            checked,
            keys,
            verdict: ran.verdict,
            out: ran.out,
            round_trip,
        })
    }

    /// The flows the program announced to flow sync's peers since this
    /// was last called (the daemon's sync task would send them).
    pub fn announced(&mut self) -> HashSet<FlowKey> {
        let mut keys = HashSet::new();
        while let Some(item) = self.sync.events.next() {
            if item.len() >= std::mem::size_of::<FlowKey>() {
                // SAFETY: the program writes whole `FlowKey`s (repr(C),
                // integers only); the length was checked.
                keys.insert(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<FlowKey>()) });
            }
        }
        keys
    }

    /// The counters that grew since they were last read.
    pub fn grown(&mut self) -> Result<Vec<u32>> {
        let mut grown = Vec::new();
        for slot in DROP_SLOTS.into_iter().chain([STAT_FLOW_INSERT_FAIL]) {
            let v = self.maps.stat(slot)?;
            if v > self.counters[slot as usize] {
                grown.push(slot);
            }
            self.counters[slot as usize] = v;
        }
        Ok(grown)
    }

    pub fn decap(&mut self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        let ran = run_frame(xdplb::decap::program(&mut self.decap)?, frame);
        Ok((ran.verdict, ran.out))
    }
}

/// One balancer frame's run: the check's result, the flow keys it
/// touched (for reproducers), the verdict and the output.
pub struct Stepped {
    pub checked: Result<Checked, Failure>,
    pub keys: Vec<FlowKey>,
    pub verdict: u32,
    pub out: Vec<u8>,
    /// The output went through the decapsulator too.
    pub round_trip: bool,
}
