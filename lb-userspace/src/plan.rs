//! Turns a validated config, plus what the daemon learned at run time
//! (admin changes, health), into the exact contents of the data-plane maps:
//! map entries and each service's Maglev ring. Pure, so it is unit-tested
//! without a kernel.
//!
//! A ring is rebuilt only when what it is built from changed (`ring_from`):
//! slow start re-plans every step, and only the ramping service's ring is
//! computed again.

mod ramp;
mod ring;

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
};

use lb_common::{
    Backend, ENCAP_GUE, ENCAP_IPIP, FLAG_ALL_PORTS, FLAG_FLOW_SYNC, Globals, HASH_FIVE_TUPLE,
    HASH_SOURCE_IP, MODE_DSR, MODE_ECHO, MODE_NAT, MODE_TUNNEL, NO_BACKEND, PROTO_ICMP,
    PROTO_ICMPV6, STATE_DOWN, STATE_DRAIN, STATE_MAINT, STATE_READY, SVC_ADMIT_FULL,
    SVC_LEAST_FLOWS, SVC_LIMITED, SVC_REJECT, ServiceBackends, ServiceKey, ServiceMeta, v4_words,
    v6_words,
};

use crate::{
    config::{
        self, BackendConfig, BackendState, Balance, Config, Encap, HashMode, Mode, OnEmpty, OnFull,
    },
    ids::{BackendKey, Ids},
    maglev::{MaglevBackend, build_table},
};

pub use ramp::{MIN_STEP as SLOW_START_MIN_STEP, Ramp, next_change as ramp_next_change, ramp};
pub use ring::Ring;

/// Everything the daemon writes into the maps for one config.
#[derive(Debug, Clone)]
pub struct Plan {
    pub globals: Globals,
    pub services: Vec<ServicePlan>,
    /// `SERVICES` entries of VIPs that answer echo requests (port 0,
    /// protocol ICMP or ICMPv6, `MODE_ECHO`).
    pub echo: Vec<(ServiceKey, ServiceMeta)>,
}

impl Plan {
    /// Every service's id and every backend's id, as the counter maps are
    /// read by.
    pub fn ids(&self) -> (Vec<u32>, Vec<u32>) {
        let services = self.services.iter().map(|s| s.id).collect();
        let backends = self
            .services
            .iter()
            .flat_map(|s| s.backends.iter().map(|b| b.id))
            .collect();
        (services, backends)
    }

    /// The VIPs this node can serve: those with at least one service whose
    /// ring has a backend (ready, weight > 0, healthy). What BGP announces
    /// while the node is ready (docs/ha.md).
    pub fn usable_vips(&self) -> BTreeSet<IpAddr> {
        self.services
            .iter()
            .filter(|s| s.ring.iter().any(|id| id != NO_BACKEND))
            .map(|s| lb_common::words_addr(s.key.addr, s.key.family))
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct ServicePlan {
    pub name: String,
    /// Index into the per-service counters; also picks the ring slots.
    pub id: u32,
    pub key: ServiceKey,
    pub mode: u8,
    pub hash: u8,
    /// `ENCAP_*` (tunnel mode).
    pub encap: u8,
    /// `SVC_*` bits.
    pub flags: u8,
    pub backends: Vec<BackendPlan>,
    /// Maglev ring: `M` backend ids (or `NO_BACKEND`), held compactly
    /// (`Ring`). Shared: a plan reuses the rings of the one before whose
    /// inputs did not change.
    pub ring: Ring,
    /// What `ring` was built from (`RingInput`).
    ring_input: RingInput,
}

impl ServicePlan {
    /// Its `SERVICE_BACKENDS` entry: the backends a new flow looks at for
    /// room when those drawn are full (the first `OVERFLOW_SCAN`).
    pub fn overflow_list(&self) -> ServiceBackends {
        let mut list = ServiceBackends::default();
        for (slot, b) in list.ids.iter_mut().zip(&self.backends) {
            *slot = b.id;
        }
        list
    }
}

/// Everything a service's ring depends on: size, seed, and each backend's
/// identity, id and weight as Maglev sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RingInput {
    m: u32,
    seed: u32,
    backends: Vec<(MaglevBackend, u32)>,
}

#[derive(Debug, Clone)]
pub struct BackendPlan {
    /// Index into `BACKENDS` and the per-backend counters.
    pub id: u32,
    /// Also its label in metrics and the API (`ADDR:PORT`).
    pub addr: SocketAddr,
    pub entry: Backend,
    /// Admin state and weight in force (config, or changed at run time).
    pub admin: BackendState,
    pub weight: u32,
    /// Health: false once its checks failed (always true without checks).
    pub up: bool,
    /// Slow start: where its weight's ramp is, while it ramps.
    pub ramp: Option<Ramp>,
}

impl BackendPlan {
    /// The weight new flows see: 0 while it takes none (drain, maint,
    /// down, weight 0), its weight times the ramp's progress while slow
    /// start ramps it, else its weight.
    pub fn effective_weight(&self) -> f64 {
        if self.entry.state != STATE_READY {
            return 0.0;
        }
        let share = self
            .ramp
            .map_or(1.0, |r| f64::from(r.permille) / f64::from(ramp::SCALE));
        f64::from(self.weight) * share
    }
}

/// A backend's run-time status, as the daemon knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub admin: BackendState,
    pub weight: u32,
    pub up: bool,
}

impl Status {
    /// Whether it takes new flows (is in its service's ring): ready, up,
    /// with a weight. Slow start begins when this becomes true.
    pub fn takes_new_flows(&self) -> bool {
        self.admin == BackendState::Ready && self.up && self.weight > 0
    }
}

// Re-exported until controller.rs, neigh.rs and trace/ import them from
// lb-common; then this becomes `use lb_common::addr_words;`.
use lb_common::addr_words;

/// The config's own view of a backend, with no run-time changes.
pub fn configured(b: &BackendConfig) -> Status {
    Status {
        admin: b.state,
        weight: b.weight,
        up: true,
    }
}

/// The plan of `cfg` alone: fresh ids, states and weights as configured
/// (tests and tools that load their own data plane).
pub fn from_config(cfg: &Config) -> Result<Plan, String> {
    let mut ids = Ids::default();
    ids.assign(cfg)?;
    Ok(plan(cfg, &ids, |_, b| configured(b)))
}

/// `status` says what the daemon knows of each backend beyond the config.
pub fn plan(
    cfg: &Config,
    ids: &Ids,
    status: impl Fn(&BackendKey, &BackendConfig) -> Status,
) -> Plan {
    plan_ramped(cfg, ids, status, |_| None, &[])
}

/// `plan`, with the slow-start ramp of each backend (`ramps`), reusing the
/// rings of the plans in `previous` whose inputs did not change.
pub fn plan_ramped(
    cfg: &Config,
    ids: &Ids,
    status: impl Fn(&BackendKey, &BackendConfig) -> Status,
    ramps: impl Fn(&BackendKey) -> Option<Ramp>,
    previous: &[&Plan],
) -> Plan {
    let m = cfg.limits.maglev_table_size;
    let tunnel = &cfg.tunnel_source;
    let globals = Globals {
        snat_v4: cfg.snat.ipv4.map_or(0, |a| v4_words(a.octets())[0]),
        snat_port_min: cfg.snat.ports.min,
        snat_port_max: cfg.snat.ports.max,
        hash_seed: cfg.hash_seed,
        ring_size: m,
        // Only then does a miss on the exact port cost a second lookup.
        flags: if cfg.services.iter().any(|s| s.port == 0) {
            FLAG_ALL_PORTS
        } else {
            0
        } | if cfg.flow_sync.is_some() {
            FLAG_FLOW_SYNC
        } else {
            0
        },
        snat_v6: cfg.snat.ipv6.map_or([0; 4], |a| v6_words(a.octets())),
        udp_timeout: cfg.flow_timeouts.udp.as_secs() as u32,
        tcp_timeout: cfg.flow_timeouts.tcp.as_secs() as u32,
        tcp_closing_timeout: cfg.flow_timeouts.tcp_closing.as_secs() as u32,
        pending_timeout: cfg.flow_timeouts.unconfirmed.as_secs() as u32,
        gue_port: cfg.gue_port.to_be(),
        reject_limit: cfg.reject_limit,
        tunnel_v4: tunnel.ipv4.map_or(0, |p| addr_words(p.addr).0[0]),
        tunnel_v4_host: tunnel.ipv4.map_or(0, |p| p.varied_host_bits()),
        tunnel_v6: tunnel.ipv6.map_or([0; 4], |p| addr_words(p.addr).0),
        tunnel_v6_host: tunnel.ipv6.map_or(0, |p| p.varied_host_bits()),
    };
    // Rings not reused are built after, all at once (`build_rings`).
    let mut unbuilt = Vec::new();
    let mut services: Vec<ServicePlan> = cfg
        .services
        .iter()
        .map(|s| {
            let id = ids.service(&s.name);
            let backends: Vec<BackendPlan> = s
                .backends
                .iter()
                .map(|b| {
                    let key = (s.name.clone(), SocketAddr::new(b.address, b.port));
                    let st = status(&key, b);
                    let (addr, family) = addr_words(b.address);
                    BackendPlan {
                        id: ids.backend(&key),
                        addr: key.1,
                        entry: Backend {
                            addr,
                            port: b.port.to_be(),
                            family,
                            state: state_code(st),
                            service: id,
                            // Set below, as the ring sees it.
                            weight: 0,
                            max_flows: b.max_flows.unwrap_or(0),
                        },
                        admin: st.admin,
                        weight: st.weight,
                        up: st.up,
                        ramp: ramps(&key).filter(|_| st.takes_new_flows()),
                    }
                })
                .collect();
            let ring_input = ring_input(&backends, m, cfg.hash_seed);
            let mut backends = backends;
            for (b, (mb, _)) in backends.iter_mut().zip(&ring_input.backends) {
                b.entry.weight = mb.weight;
            }
            let reused = previous
                .iter()
                .filter_map(|p| p.services.iter().find(|p| p.id == id))
                .find(|p| p.ring_input == ring_input)
                .map(|p| p.ring.clone());
            if reused.is_none() {
                unbuilt.push(id);
            }
            ServicePlan {
                name: s.name.clone(),
                id,
                key: ServiceKey::new(s.vip, s.port, s.protocol.number()),
                mode: match s.mode {
                    Mode::Nat => MODE_NAT,
                    Mode::Dsr => MODE_DSR,
                    Mode::Tunnel => MODE_TUNNEL,
                },
                encap: match s.encap {
                    Encap::Ipip => ENCAP_IPIP,
                    Encap::Gue => ENCAP_GUE,
                },
                hash: match s.hash {
                    HashMode::FiveTuple => HASH_FIVE_TUPLE,
                    HashMode::SourceIp => HASH_SOURCE_IP,
                },
                flags: service_flags(s),
                ring: reused.unwrap_or_default(),
                ring_input,
                backends,
            }
        })
        .collect();
    let todo: Vec<&mut ServicePlan> = services
        .iter_mut()
        .filter(|s| unbuilt.contains(&s.id))
        .collect();
    build_rings(todo);
    let echo = cfg
        .echo_services()
        .map(|s| {
            let proto = if s.vip.is_ipv4() {
                PROTO_ICMP
            } else {
                PROTO_ICMPV6
            };
            let meta = ServiceMeta {
                id: ids.service(&s.name),
                mode: MODE_ECHO,
                ..ServiceMeta::default()
            };
            (ServiceKey::new(s.vip, 0, proto), meta)
        })
        .collect();
    Plan {
        globals,
        services,
        echo,
    }
}

/// `ServiceMeta::flags` of `s`.
fn service_flags(s: &config::Service) -> u8 {
    let mut flags = 0;
    if s.on_empty == OnEmpty::Reject {
        flags |= SVC_REJECT;
    }
    if s.balance == Balance::LeastFlows {
        flags |= SVC_LEAST_FLOWS;
    }
    if s.backends.iter().any(|b| b.max_flows.is_some()) {
        flags |= SVC_LIMITED;
    }
    if s.on_full == OnFull::Admit {
        flags |= SVC_ADMIT_FULL;
    }
    flags
}

/// What the data plane does with a backend: `maint` wins (an operator said
/// so), then `down` (health), then `drain`.
fn state_code(st: Status) -> u8 {
    match (st.admin, st.up) {
        (BackendState::Maint, _) => STATE_MAINT,
        (_, false) => STATE_DOWN,
        (BackendState::Drain, true) => STATE_DRAIN,
        (BackendState::Ready, true) => STATE_READY,
    }
}

/// Only `ready` backends with a weight take new flows; while one of the
/// service's backends ramps, every weight is scaled so the ramp is exact.
fn ring_input(backends: &[BackendPlan], m: u32, seed: u32) -> RingInput {
    let ramping = backends.iter().any(|b| b.ramp.is_some());
    let backends = backends
        .iter()
        .map(|b| {
            let weight = match (b.entry.state == STATE_READY, ramping) {
                (false, _) => 0,
                (true, false) => b.weight,
                (true, true) => ramp::scaled_weight(b.weight, b.ramp),
            };
            let mb = MaglevBackend {
                addr: b.addr.ip(),
                port: b.addr.port(),
                weight,
            };
            (mb, b.id)
        })
        .collect();
    RingInput { m, seed, backends }
}

/// Builds the rings of `services` from their `ring_input`, spread over the
/// CPUs: each is independent, ~1-3 ms at m = 65537, and a reload may
/// change hundreds.
fn build_rings(mut services: Vec<&mut ServicePlan>) {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(services.len());
    let build = |part: &mut [&mut ServicePlan]| {
        for s in part {
            s.ring = ring_for(&s.ring_input);
        }
    };
    if threads <= 1 {
        return build(&mut services);
    }
    let per = services.len().div_ceil(threads);
    std::thread::scope(|scope| {
        for part in services.chunks_mut(per) {
            scope.spawn(move || build(part));
        }
    });
}

fn ring_for(input: &RingInput) -> Ring {
    let (table, ids): (Vec<MaglevBackend>, Vec<u32>) = input.backends.iter().copied().unzip();
    Ring::new(&build_table(&table, input.m, input.seed), &ids)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    const CFG: &str = "interfaces: [eth0]\nsnat: { ipv4: 198.18.1.1 }\nlimits: { maglev_table_size: 1021 }\nservices:\n  - name: web\n    vip: 198.18.100.10\n    port: 80\n    backends:\n      - { address: 198.18.1.11, port: 80 }\n      - { address: 198.18.1.12, port: 80, state: drain }\n      - { address: 198.18.1.13, port: 80 }\n";

    fn planned(status: impl Fn(&BackendKey, &BackendConfig) -> Status) -> ServicePlan {
        let cfg = Config::from_yaml(CFG).unwrap();
        let mut ids = Ids::default();
        ids.assign(&cfg).unwrap();
        plan(&cfg, &ids, status).services.remove(0)
    }

    fn owners(s: &ServicePlan) -> Vec<u8> {
        let mut o: Vec<u8> = s
            .ring
            .iter()
            .map(|id| s.backends.iter().find(|b| b.id == id).unwrap().addr.ip())
            .map(|ip| match ip {
                IpAddr::V4(v4) => v4.octets()[3],
                IpAddr::V6(_) => unreachable!(),
            })
            .collect();
        o.sort();
        o.dedup();
        o
    }

    #[test]
    fn only_ready_backends_are_in_the_ring() {
        let s = planned(|_, b| configured(b));
        assert_eq!(owners(&s), [11, 13]);
        assert_eq!(s.backends[1].entry.state, STATE_DRAIN);
    }

    #[test]
    fn health_and_admin_state_combine() {
        let s = planned(|k, b| Status {
            up: k.1.port() != 80 || !k.1.ip().to_string().ends_with(".11"),
            ..configured(b)
        });
        assert_eq!(owners(&s), [13], "a down backend leaves the ring");
        assert_eq!(s.backends[0].entry.state, STATE_DOWN);

        let s = planned(|_, b| Status {
            admin: BackendState::Maint,
            up: false,
            ..configured(b)
        });
        assert!(s.ring.iter().all(|id| id == NO_BACKEND));
        assert!(s.backends.iter().all(|b| b.entry.state == STATE_MAINT));
    }

    #[test]
    fn usable_vips_are_those_with_a_backend_in_a_ring() {
        const TWO: &str = "interfaces: [eth0]\nsnat: { ipv4: 198.18.1.1, ipv6: \"2001:db8:1::1\" }\nlimits: { maglev_table_size: 1021 }\nservices:\n  - { name: web, vip: 198.18.100.10, port: 80, backends: [ { address: 198.18.1.11, port: 80 } ] }\n  - { name: web-udp, vip: 198.18.100.10, port: 80, protocol: udp, backends: [ { address: 198.18.1.12, port: 80 } ] }\n  - { name: web6, vip: \"2001:db8:100::10\", port: 80, backends: [ { address: \"2001:db8:1::11\", port: 80 } ] }\n";
        let cfg = Config::from_yaml(TWO).unwrap();
        let mut ids = Ids::default();
        ids.assign(&cfg).unwrap();
        let vips = |down: &[&str]| {
            plan(&cfg, &ids, |k, b| Status {
                up: !down.contains(&k.0.as_str()),
                ..configured(b)
            })
            .usable_vips()
            .into_iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
        };
        assert_eq!(vips(&[]), ["198.18.100.10", "2001:db8:100::10"]);
        assert_eq!(
            vips(&["web"]),
            ["198.18.100.10", "2001:db8:100::10"],
            "one service of the VIP is enough"
        );
        assert_eq!(vips(&["web", "web-udp"]), ["2001:db8:100::10"]);
        assert!(vips(&["web", "web-udp", "web6"]).is_empty());
        // Drain and weight 0 take a backend out of the ring too.
        let drained = plan(&cfg, &ids, |k, b| Status {
            admin: if k.0 == "web6" {
                BackendState::Drain
            } else {
                b.state
            },
            weight: if k.0.starts_with("web") && k.0 != "web6" {
                0
            } else {
                b.weight
            },
            ..configured(b)
        });
        assert!(drained.usable_vips().is_empty());
    }

    #[test]
    fn backend_entries_carry_the_ring_weight_limit_and_overflow_list() {
        let cfg = Config::from_yaml(
            &CFG.replace(
                "port: 80 }\n      - { address: 198.18.1.12",
                "port: 80, max_flows: 7 }\n      - { address: 198.18.1.12",
            )
            .replace(
                "    port: 80\n    backends",
                "    port: 80\n    balance: least-flows\n    on_full: admit\n    backends",
            ),
        )
        .unwrap();
        let p = from_config(&cfg).unwrap();
        let s = &p.services[0];
        assert_eq!(
            s.flags,
            SVC_REJECT | SVC_LEAST_FLOWS | SVC_LIMITED | SVC_ADMIT_FULL
        );
        let entries: Vec<(u32, u32)> = s
            .backends
            .iter()
            .map(|b| (b.entry.weight, b.entry.max_flows))
            .collect();
        // .12 drains: weight 0 as the ring sees it.
        assert_eq!(entries, [(100, 7), (0, 0), (100, 0)]);
        let list = s.overflow_list();
        let ids: Vec<u32> = s.backends.iter().map(|b| b.id).collect();
        assert_eq!(list.ids[..3], ids[..]);
        assert!(list.ids[3..].iter().all(|&id| id == NO_BACKEND));
        // Without the keys: maglev, no limit, drop.
        assert_eq!(planned(|_, b| configured(b)).flags, SVC_REJECT);
    }

    #[test]
    fn weight_zero_is_out_of_the_ring_but_keeps_flows() {
        let s = planned(|k, b| Status {
            weight: if k.1.ip().to_string().ends_with(".13") {
                0
            } else {
                b.weight
            },
            ..configured(b)
        });
        assert_eq!(owners(&s), [11]);
        assert_eq!(s.backends[2].entry.state, STATE_READY);
    }

    #[test]
    fn a_ring_is_rebuilt_only_when_its_inputs_change() {
        let cfg = Config::from_yaml(CFG).unwrap();
        let mut ids = Ids::default();
        ids.assign(&cfg).unwrap();
        let mut before = plan(&cfg, &ids, |_, b| configured(b));
        // Marked, so a ring taken over (not rebuilt) shows.
        let mut marked: Vec<u32> = before.services[0].ring.iter().collect();
        marked[0] = 12345;
        before.services[0].ring = Ring::from_ids(&marked);
        let same = plan_ramped(&cfg, &ids, |_, b| configured(b), |_| None, &[&before]);
        assert_eq!(same.services[0].ring.get(0), 12345, "same inputs: reused");

        let half = Ramp {
            permille: 500,
            remaining: std::time::Duration::from_secs(5),
        };
        let ramped = |k: &BackendKey| k.1.ip().to_string().ends_with(".13").then_some(half);
        let p = plan_ramped(&cfg, &ids, |_, b| configured(b), ramped, &[&before]);
        assert_ne!(
            p.services[0].ring.get(0),
            12345,
            "a ramp changed it: rebuilt"
        );
        let count = |p: &ServicePlan, last: &str| {
            let id = p
                .backends
                .iter()
                .find(|b| b.addr.ip().to_string().ends_with(last))
                .unwrap()
                .id;
            p.ring.iter().filter(|e| *e == id).count()
        };
        // .11 at full weight, .13 at half (.12 drains): about 2:1.
        let (b11, b13) = (count(&p.services[0], ".11"), count(&p.services[0], ".13"));
        assert!(
            (600..=760).contains(&b11) && b11 + b13 == 1021,
            "{b11} {b13}"
        );
        assert_eq!(p.services[0].backends[2].effective_weight(), 50.0);
        assert_eq!(p.services[0].backends[1].effective_weight(), 0.0, "drain");
        assert_eq!(
            p.services[0].backends[1].ramp, None,
            "no ramp unless in the ring"
        );
    }

    /// The ring held compactly reads back exactly Maglev's table in
    /// backend ids (what the daemon held, and wrote, before it was compact).
    #[test]
    fn a_ring_reads_back_maglevs_table_in_backend_ids() {
        let cfg = Config::from_yaml(CFG).unwrap();
        // Ids that are not positions: those of another config come first.
        let mut ids = Ids::default();
        ids.assign(&Config::from_yaml(&CFG.replace("web", "other")).unwrap())
            .unwrap();
        ids.assign(&cfg).unwrap();
        let p = plan(&cfg, &ids, |_, b| configured(b));
        let s = &p.services[0];
        let backend_ids: Vec<u32> = s.backends.iter().map(|b| b.id).collect();
        assert!(backend_ids.iter().all(|&id| id >= 3), "{backend_ids:?}");
        let table: Vec<MaglevBackend> = s.ring_input.backends.iter().map(|(b, _)| *b).collect();
        let want: Vec<u32> = build_table(&table, 1021, cfg.hash_seed)
            .into_iter()
            .map(|i| {
                if i == NO_BACKEND {
                    NO_BACKEND
                } else {
                    backend_ids[i as usize]
                }
            })
            .collect();
        assert_eq!(s.ring.len(), 1021);
        assert_eq!(s.ring.iter().collect::<Vec<_>>(), want);
        assert!((0..1021).all(|i| s.ring.get(i) == want[i]));
    }
}
