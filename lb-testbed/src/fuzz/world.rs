//! The configuration as the checks need it: the plan the program was
//! loaded with (service and backend ids, rings), looked up the way the
//! program looks it up.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use lb_common::{
    Backend, FAMILY_V4, FLAG_ALL_PORTS, FlowKey, Globals, MODE_DSR, MODE_NAT, MODE_TUNNEL,
    NO_BACKEND, ServiceKey, ServiceMeta, addr_words, words_addr,
};
use xdplb::plan::Plan;

use super::config::{Mode, SERVICES, reachable};

/// A service of the plan, with what the checks ask of it.
pub struct Svc {
    pub id: u32,
    pub name: String,
    pub mode: Mode,
    /// Backend ids in its ring: the only ones new flows may get.
    pub ring: HashSet<u32>,
    /// Its backends have `max_flows` and `on_full: drop`: a new flow may
    /// find them all full.
    pub drops_when_full: bool,
}

pub struct World {
    pub globals: Globals,
    pub services: Vec<Svc>,
    /// Backend id -> (service index, entry).
    pub backends: HashMap<u32, (usize, Backend)>,
    keys: HashMap<ServiceKey, ServiceMeta>,
    index: HashMap<u32, usize>,
}

impl World {
    pub fn new(plan: &Plan) -> World {
        let mut keys = HashMap::new();
        let mut backends = HashMap::new();
        let mut index = HashMap::new();
        let services = plan
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| {
                keys.insert(
                    s.key,
                    ServiceMeta {
                        id: s.id,
                        mode: s.mode,
                        hash: s.hash,
                        encap: s.encap,
                        ..ServiceMeta::default()
                    },
                );
                index.insert(s.id, i);
                for b in &s.backends {
                    backends.insert(b.id, (i, b.entry));
                }
                let def = SERVICES
                    .iter()
                    .find(|d| d.name == s.name)
                    .expect("the plan's services are the table's");
                Svc {
                    id: s.id,
                    name: s.name.clone(),
                    mode: def.mode,
                    drops_when_full: s.flags & lb_common::SVC_LIMITED != 0
                        && s.flags & lb_common::SVC_ADMIT_FULL == 0,
                    ring: s.ring.iter().filter(|&b| b != NO_BACKEND).collect(),
                }
            })
            .collect();
        for (k, m) in &plan.echo {
            keys.insert(*k, *m);
        }
        World {
            globals: plan.globals,
            services,
            backends,
            keys,
            index,
        }
    }

    /// The SNAT address words of a family.
    pub fn snat(&self, v4: bool) -> [u32; 4] {
        self.globals
            .snat(if v4 { FAMILY_V4 } else { lb_common::FAMILY_V6 })
    }

    pub fn snat_addr(&self, v4: bool) -> IpAddr {
        words_addr(
            self.snat(v4),
            if v4 { FAMILY_V4 } else { lb_common::FAMILY_V6 },
        )
    }

    /// The `SERVICES` entry of (address, port, protocol, family).
    pub fn service_key(
        &self,
        addr: [u32; 4],
        port: u16,
        proto: u8,
        family: u8,
    ) -> Option<ServiceMeta> {
        let k = ServiceKey {
            addr,
            port: port.to_be(),
            proto,
            family,
        };
        self.keys.get(&k).copied()
    }

    /// The service a flow key belongs to (exact port, then port 0 if some
    /// service has all ports), as an index into `services`.
    pub fn service_of(&self, key: &FlowKey) -> Option<usize> {
        let mut k = ServiceKey {
            addr: key.dst,
            port: key.dport,
            proto: key.proto,
            family: key.family,
        };
        let meta = self.keys.get(&k).or_else(|| {
            (self.globals.flags & FLAG_ALL_PORTS != 0)
                .then(|| {
                    k.port = 0;
                    self.keys.get(&k)
                })
                .flatten()
        })?;
        // Echo entries have no service behind them.
        if ![MODE_NAT, MODE_DSR, MODE_TUNNEL].contains(&meta.mode) {
            return None;
        }
        self.index.get(&meta.id).copied()
    }

    /// A backend's address.
    pub fn backend_addr(&self, id: u32) -> Option<IpAddr> {
        self.backends
            .get(&id)
            .map(|(_, b)| words_addr(b.addr, b.family))
    }

    /// The drop reasons a packet of service `svc` may be counted under,
    /// whichever ring backend it gets: the forwarding step toward a backend
    /// without a neighbour or a route, or too long for the MTU (`len`: the
    /// IP length it leaves with, before any encapsulation); no backend at
    /// all; no SNAT port (nat).
    /// `src`: the packet's source (dsr sends it on as it is).
    pub fn drop_reasons(&self, svc: usize, len: u32, src: IpAddr) -> Vec<u32> {
        let s = &self.services[svc];
        let mut r = Vec::new();
        if s.ring.is_empty() {
            r.push(lb_common::STAT_NO_BACKEND);
        }
        if s.drops_when_full {
            r.push(lb_common::STAT_FULL_DROP);
        }
        if s.mode == Mode::Nat {
            r.push(lb_common::STAT_SNAT_EXHAUSTED);
        }
        if s.mode == Mode::Dsr && odd_source(src) {
            r.push(lb_common::STAT_FIB_FAIL);
        }
        for id in &s.ring {
            let addr = self.backend_addr(*id).expect("ring ids are backends");
            let added = match s.mode {
                Mode::Ipip if addr.is_ipv4() => 20,
                Mode::Ipip => 40,
                Mode::Gue if addr.is_ipv4() => 28,
                Mode::Gue => 48,
                _ => 0,
            };
            r.extend(route_reasons(addr, len + added));
        }
        r
    }
}

/// The drop reasons of the forwarding step toward `addr` for an IP packet
/// of `len` bytes (interfaces of MTU 1500): no route or too long
/// (`fib_fail`), no neighbour (`neigh_miss`).
pub fn route_reasons(addr: IpAddr, len: u32) -> Vec<u32> {
    let mut r = Vec::new();
    match reachable(addr) {
        None => r.push(lb_common::STAT_FIB_FAIL),
        Some(neigh) => {
            if len > 1500 {
                r.push(lb_common::STAT_FIB_FAIL);
            }
            if !neigh {
                r.push(lb_common::STAT_NEIGH_MISS);
            }
        }
    }
    r
}

/// Not a global unicast address (multicast, unspecified, loopback,
/// link-local, broadcast): the kernel's FIB may refuse a route from it
/// (it does for ICMPv6 errors from link-local, loopback and multicast
/// sources), counted as `fib_fail`.
pub fn odd_source(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => {
            a.is_multicast()
                || a.is_unspecified()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_broadcast()
                || a.octets()[0] == 0
                || a.octets()[0] >= 240
        }
        IpAddr::V6(a) => {
            a.is_multicast()
                || a.is_unspecified()
                || a.is_loopback()
                || a.segments()[0] & 0xffc0 == 0xfe80
        }
    }
}

/// Address words of an address.
pub fn words(a: IpAddr) -> [u32; 4] {
    addr_words(a).0
}
