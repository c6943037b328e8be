//! Turns a validated config into the exact contents of the data-plane maps:
//! service and backend ids, map entries, and each service's Maglev ring.
//! Pure, so it is unit-tested without a kernel.

use std::net::{IpAddr, SocketAddr};

use lb_common::{
    Backend, FAMILY_V4, FAMILY_V6, Globals, HASH_FIVE_TUPLE, HASH_SOURCE_IP, MODE_DSR, MODE_NAT,
    MODE_TUNNEL, NO_BACKEND, PROTO_TCP, PROTO_UDP, STATE_DRAIN, STATE_MAINT, STATE_READY,
    ServiceKey,
};

use crate::{
    config::{BackendState, Config, HashMode, Mode, Protocol},
    maglev::{MaglevBackend, build_table},
};

/// Everything the daemon writes into the maps for one config.
#[derive(Debug, Clone)]
pub struct Plan {
    pub globals: Globals,
    pub services: Vec<ServicePlan>,
}

#[derive(Debug, Clone)]
pub struct ServicePlan {
    pub name: String,
    /// Index into the per-service counters; also picks the ring slots.
    pub id: u32,
    pub key: ServiceKey,
    pub mode: u8,
    pub hash: u8,
    pub backends: Vec<BackendPlan>,
    /// Maglev ring: `M` backend ids (or `NO_BACKEND`).
    pub ring: Vec<u32>,
}

#[derive(Debug, Clone)]
pub struct BackendPlan {
    /// Index into `BACKENDS` and the per-backend counters.
    pub id: u32,
    /// Also its label in metrics and the API (`ADDR:PORT`).
    pub addr: SocketAddr,
    pub entry: Backend,
    pub weight: u32,
}

/// Address as four wire-order words and its family (see lb-common).
pub fn addr_words(addr: IpAddr) -> ([u32; 4], u8) {
    match addr {
        IpAddr::V4(a) => ([u32::from_ne_bytes(a.octets()), 0, 0, 0], FAMILY_V4),
        IpAddr::V6(a) => {
            let o = a.octets();
            let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            ([w(0), w(4), w(8), w(12)], FAMILY_V6)
        }
    }
}

/// Inverse of [`addr_words`].
pub fn words_addr(words: [u32; 4], family: u8) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::from(words[0].to_ne_bytes())
    } else {
        let mut o = [0u8; 16];
        for (i, w) in words.iter().enumerate() {
            o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::from(o)
    }
}

pub fn plan(cfg: &Config) -> Plan {
    let m = cfg.limits.maglev_table_size;
    let globals = Globals {
        snat_v4: cfg.snat.ipv4.map_or(0, |a| u32::from_ne_bytes(a.octets())),
        snat_port_min: cfg.snat.ports.min,
        snat_port_max: cfg.snat.ports.max,
        hash_seed: cfg.hash_seed,
        ring_size: m,
    };
    let mut next_backend = 0u32;
    let services = cfg
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let id = i as u32;
            let (addr, family) = addr_words(s.vip);
            let backends: Vec<BackendPlan> = s
                .backends
                .iter()
                .map(|b| {
                    let (baddr, bfamily) = addr_words(b.address);
                    let plan = BackendPlan {
                        id: next_backend,
                        addr: SocketAddr::new(b.address, b.port),
                        entry: Backend {
                            addr: baddr,
                            port: b.port.to_be(),
                            family: bfamily,
                            state: state_code(b.state),
                            service: id,
                        },
                        weight: b.weight,
                    };
                    next_backend += 1;
                    plan
                })
                .collect();
            let ring = ring_for(&backends, m, cfg.hash_seed);
            ServicePlan {
                name: s.name.clone(),
                id,
                key: ServiceKey {
                    addr,
                    port: s.port.to_be(),
                    proto: match s.protocol {
                        Protocol::Tcp => PROTO_TCP,
                        Protocol::Udp => PROTO_UDP,
                    },
                    family,
                },
                mode: match s.mode {
                    Mode::Nat => MODE_NAT,
                    Mode::Dsr => MODE_DSR,
                    Mode::Tunnel => MODE_TUNNEL,
                },
                hash: match s.hash {
                    HashMode::FiveTuple => HASH_FIVE_TUPLE,
                    HashMode::SourceIp => HASH_SOURCE_IP,
                },
                backends,
                ring,
            }
        })
        .collect();
    Plan { globals, services }
}

fn state_code(state: BackendState) -> u8 {
    match state {
        BackendState::Ready => STATE_READY,
        BackendState::Drain => STATE_DRAIN,
        BackendState::Maint => STATE_MAINT,
    }
}

/// Only `ready` backends with a weight take new flows.
fn ring_for(backends: &[BackendPlan], m: u32, seed: u32) -> Vec<u32> {
    let input: Vec<MaglevBackend> = backends
        .iter()
        .map(|b| MaglevBackend {
            addr: b.addr.ip(),
            port: b.addr.port(),
            weight: if b.entry.state == STATE_READY {
                b.weight
            } else {
                0
            },
        })
        .collect();
    build_table(&input, m, seed)
        .into_iter()
        .map(|i| {
            if i == NO_BACKEND {
                NO_BACKEND
            } else {
                backends[i as usize].id
            }
        })
        .collect()
}
