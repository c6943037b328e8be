//! The fuzzed balancer's config: services of every mode (nat, dsr, tunnel
//! with IPIP and GUE, across families), TCP and UDP, IPv4 and IPv6, an
//! all-ports and a source-hash service (least-flows, with limits that
//! fill), backends without a neighbour or a
//! route, a service with no usable backend. Written as YAML (what the
//! reproducer hands to `xdplb trace`); each epoch of a run draws a
//! variant: backends drained, in maintenance or at weight 0.
//!
//! Addresses fit [`FibNet`](crate::fib_net::FibNet): backends 198.18.1.11-13
//! and 2001:db8:1::11-13 have static neighbours, .14 and ::14 none,
//! 198.19.0.0/16 and 2001:db8:5::/48 no route.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use rand::Rng;

/// SNAT addresses and port range (a narrow range: new flows collide on
/// ports, and sometimes exhaust them, within an epoch).
pub const SNAT4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const SNAT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
pub const SNAT_PORTS: (u16, u16) = (20000, 20099);
pub const GUE_PORT: u16 = 6080;
/// Flow table size: an epoch opens fewer flows than this, so nothing is
/// ever evicted and the map checks can be exact.
pub const FLOW_TABLE_SIZE: u32 = 65536;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Nat,
    Dsr,
    Ipip,
    Gue,
}

/// One service of the table below.
pub struct ServiceDef {
    pub name: &'static str,
    pub vip: &'static str,
    pub port: u16,
    pub udp: bool,
    pub mode: Mode,
    pub echo: bool,
    pub source_hash: bool,
    /// Backends, `ADDR` with the port (its own, or the VIP's).
    pub backends: &'static [(&'static str, u16)],
    /// Every backend is in maintenance, in every variant.
    pub empty: bool,
    /// `balance: least-flows` with a small `max_flows` on every backend
    /// (`on_full: drop`): new flows pass over full backends, then drop.
    pub limited: bool,
}

/// The `max_flows` of a `limited` service's backends: an epoch fills it.
pub const MAX_FLOWS: u32 = 4;

const fn svc(
    name: &'static str,
    vip: &'static str,
    port: u16,
    udp: bool,
    mode: Mode,
    backends: &'static [(&'static str, u16)],
) -> ServiceDef {
    ServiceDef {
        name,
        vip,
        port,
        udp,
        mode,
        echo: false,
        source_hash: false,
        backends,
        empty: false,
        limited: false,
    }
}

pub const SERVICES: &[ServiceDef] = &[
    ServiceDef {
        echo: true,
        ..svc(
            "web",
            "198.18.100.10",
            80,
            false,
            Mode::Nat,
            &[
                ("198.18.1.11", 8080),
                ("198.18.1.12", 8080),
                ("198.18.1.13", 8080),
            ],
        )
    },
    svc(
        "dns",
        "198.18.100.10",
        53,
        true,
        Mode::Nat,
        &[("198.18.1.11", 5353), ("198.18.1.12", 5353)],
    ),
    svc(
        "any",
        "198.18.100.30",
        0,
        false,
        Mode::Nat,
        &[("198.18.1.11", 0), ("198.18.1.12", 0)],
    ),
    ServiceDef {
        source_hash: true,
        limited: true,
        ..svc(
            "sticky",
            "198.18.100.31",
            443,
            false,
            Mode::Nat,
            &[
                ("198.18.1.11", 8443),
                ("198.18.1.12", 8443),
                ("198.18.1.13", 8443),
            ],
        )
    },
    // No neighbour for its backend: drops counted as neigh_miss.
    svc(
        "lost",
        "198.18.100.12",
        80,
        false,
        Mode::Nat,
        &[("198.18.1.14", 8080)],
    ),
    // No route to its backend: drops counted as fib_fail.
    svc(
        "far",
        "198.18.100.13",
        53,
        true,
        Mode::Dsr,
        &[("198.19.0.14", 53)],
    ),
    ServiceDef {
        empty: true,
        ..svc(
            "empty",
            "198.18.100.14",
            80,
            false,
            Mode::Nat,
            &[("198.18.1.11", 8080)],
        )
    },
    svc(
        "dsr",
        "198.18.100.20",
        80,
        false,
        Mode::Dsr,
        &[("198.18.1.11", 80), ("198.18.1.12", 80)],
    ),
    svc(
        "dsr-udp",
        "198.18.100.20",
        53,
        true,
        Mode::Dsr,
        &[("198.18.1.12", 53), ("198.18.1.13", 53)],
    ),
    ServiceDef {
        echo: true,
        ..svc(
            "web6",
            "2001:db8:100::10",
            80,
            false,
            Mode::Nat,
            &[("2001:db8:1::11", 8080), ("2001:db8:1::12", 8080)],
        )
    },
    svc(
        "dns6",
        "2001:db8:100::10",
        53,
        true,
        Mode::Nat,
        &[("2001:db8:1::12", 5353), ("2001:db8:1::13", 5353)],
    ),
    svc(
        "dsr6",
        "2001:db8:100::20",
        80,
        false,
        Mode::Dsr,
        &[("2001:db8:1::11", 80), ("2001:db8:1::12", 80)],
    ),
    svc(
        "lost6",
        "2001:db8:100::12",
        53,
        true,
        Mode::Nat,
        &[("2001:db8:1::14", 5353)],
    ),
    svc(
        "far6",
        "2001:db8:100::13",
        80,
        false,
        Mode::Ipip,
        &[("2001:db8:5::14", 80)],
    ),
    svc(
        "tun4",
        "198.18.100.40",
        80,
        false,
        Mode::Ipip,
        &[("198.18.1.11", 80), ("198.18.1.12", 80)],
    ),
    svc(
        "tun6",
        "2001:db8:100::40",
        53,
        true,
        Mode::Ipip,
        &[("2001:db8:1::11", 53), ("2001:db8:1::13", 53)],
    ),
    svc(
        "tun46",
        "198.18.100.41",
        80,
        false,
        Mode::Ipip,
        &[("2001:db8:1::12", 80)],
    ),
    svc(
        "tun64",
        "2001:db8:100::41",
        80,
        false,
        Mode::Ipip,
        &[("198.18.1.13", 80)],
    ),
    svc(
        "gue4",
        "198.18.100.42",
        53,
        true,
        Mode::Gue,
        &[("198.18.1.12", 53), ("198.18.1.13", 53)],
    ),
    svc(
        "gue6",
        "2001:db8:100::42",
        80,
        false,
        Mode::Gue,
        &[("2001:db8:1::13", 80), ("2001:db8:1::11", 80)],
    ),
    svc(
        "gue46",
        "198.18.100.43",
        80,
        false,
        Mode::Gue,
        &[("2001:db8:1::11", 80)],
    ),
];

impl ServiceDef {
    pub fn vip(&self) -> IpAddr {
        self.vip.parse().expect("the table's VIPs parse")
    }

    pub fn proto(&self) -> u8 {
        if self.udp { 17 } else { 6 }
    }
}

/// A backend's state in a variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Ready,
    Drain,
    Maint,
    /// Ready at weight 0.
    Zero,
}

/// Flow sync's peers (`flow_sync.peers`, by index): the first has a
/// neighbour (it is the FibNet's client address), the second none. A frame
/// from `PEER_MAC` came from a peer (it is never handed on again).
pub const PEERS: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 0, 3)];
pub const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x09];

/// One epoch's config: the backends' states, per service then backend,
/// whether flow sync is on (with which peers alive), and whether tunnel
/// packets leave from `TUNNEL_SOURCE`'s prefixes (else the SNAT address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variant {
    pub states: Vec<Vec<State>>,
    /// Flow sync on, and each peer's `alive` flag.
    pub sync: Option<[bool; 2]>,
    pub tunnel_source: bool,
}

/// `tunnel_source` of the epochs that have one: addresses no frame the
/// fuzzer makes is to or from, on no interface of the bed.
pub const TUNNEL_SOURCE: &str = "{ ipv4: 198.18.2.0/24, ipv6: \"2001:db8:2::/64\" }";

impl Variant {
    /// Every backend ready (but `empty`'s), no flow sync.
    pub fn base() -> Variant {
        Variant {
            states: SERVICES
                .iter()
                .map(|s| {
                    let st = if s.empty { State::Maint } else { State::Ready };
                    vec![st; s.backends.len()]
                })
                .collect(),
            sync: None,
            tunnel_source: false,
        }
    }

    /// A third of the epochs run flow sync, half have a `tunnel_source`.
    /// Half run the base states; the others change about a third of the
    /// backends.
    pub fn draw(rng: &mut impl Rng) -> Variant {
        let mut v = Variant::base();
        if rng.random_bool(0.33) {
            v.sync = Some([rng.random_bool(0.8), rng.random_bool(0.8)]);
        }
        v.tunnel_source = rng.random_bool(0.5);
        if rng.random_bool(0.5) {
            return v;
        }
        for (s, states) in SERVICES.iter().zip(&mut v.states) {
            for st in states.iter_mut().filter(|_| !s.empty) {
                *st = match rng.random_range(0..9) {
                    0 => State::Drain,
                    1 => State::Maint,
                    2 => State::Zero,
                    _ => State::Ready,
                };
            }
        }
        v
    }

    /// The config of this variant, as YAML.
    pub fn yaml(&self) -> String {
        let mut y = String::new();
        y.push_str(
            "# The config of a packet fuzzing run (lb-testbed's fuzz module): the\n\
             # services of every mode; addresses as in lb-testbed's FibNet.\n",
        );
        let _ = writeln!(
            y,
            "interfaces: [lbc, lbb]\n\
             snat: {{ ipv4: {SNAT4}, ipv6: \"{SNAT6}\", ports: {}-{} }}\n\
             hash_seed: 7\n\
             gue_port: {GUE_PORT}\n\
             limits: {{ max_services: 32, max_backends: 64, maglev_table_size: 251, flow_table_size: {FLOW_TABLE_SIZE} }}\n\
             # Long timeouts: nothing expires by itself, so a seed replays a run\n\
             # exactly (the fuzzer ages flows itself).\n\
             flow_timeouts: {{ tcp: 1h, tcp_closing: 1h, udp: 1h, unconfirmed: 1h }}",
            SNAT_PORTS.0, SNAT_PORTS.1
        );
        if self.sync.is_some() {
            let _ = writeln!(
                y,
                "# Flow sync: the fuzzer writes the peers' state (PEERS) itself.\n\
                 flow_sync: {{ address: 198.18.0.1, peers: [{}, {}] }}",
                PEERS[0], PEERS[1]
            );
        }
        if self.tunnel_source {
            let _ = writeln!(y, "tunnel_source: {TUNNEL_SOURCE}");
        }
        y.push_str("services:\n");
        for (s, states) in SERVICES.iter().zip(&self.states) {
            let _ = writeln!(
                y,
                "  - name: {}\n    vip: \"{}\"\n    port: {}\n    protocol: {}",
                s.name,
                s.vip,
                s.port,
                if s.udp { "udp" } else { "tcp" }
            );
            match s.mode {
                Mode::Nat => {}
                Mode::Dsr => y.push_str("    mode: dsr\n"),
                Mode::Ipip => y.push_str("    mode: tunnel\n"),
                Mode::Gue => y.push_str("    mode: tunnel\n    encap: gue\n"),
            }
            if s.echo {
                y.push_str("    icmp_echo: true\n");
            }
            if s.source_hash {
                y.push_str("    hash: source-ip\n");
            }
            let limit = if s.limited {
                y.push_str("    balance: least-flows\n");
                format!(", max_flows: {MAX_FLOWS}")
            } else {
                String::new()
            };
            y.push_str("    backends:\n");
            for ((addr, port), st) in s.backends.iter().zip(states) {
                let extra = match st {
                    State::Ready => "",
                    State::Drain => ", state: drain",
                    State::Maint => ", state: maint",
                    State::Zero => ", weight: 0",
                };
                let _ = writeln!(
                    y,
                    "      - {{ address: \"{addr}\", port: {port}{extra}{limit} }}"
                );
            }
        }
        y
    }
}

/// Whether `bpf_fib_lookup` in a [`FibNet`](crate::fib_net::FibNet) finds
/// a neighbour for `addr` (`Some(true)`), a route but no neighbour
/// (`Some(false)`), or no route to forward on (`None`: none at all, or the
/// LB's own addresses, which are local).
pub fn reachable(addr: IpAddr) -> Option<bool> {
    match addr {
        IpAddr::V4(a) => {
            let o = a.octets();
            match (o[0], o[1], o[2]) {
                (198, 18, 0 | 1) if o[3] == 1 => None,
                (198, 18, 0) => Some(o[3] == 2),
                (198, 18, 1) => Some((11..=13).contains(&o[3])),
                _ => None,
            }
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            let host = &s[4..];
            match s[..4] {
                [0x2001, 0xdb8, 0 | 1, 0] if host == [0, 0, 0, 1] => None,
                [0x2001, 0xdb8, 0, 0] => Some(host == [0, 0, 0, 2]),
                [0x2001, 0xdb8, 1, 0] => {
                    Some(host[..3] == [0, 0, 0] && (0x11..=0x13).contains(&host[3]))
                }
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_is_a_valid_config() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..50 {
            let y = Variant::draw(&mut rng).yaml();
            xdplb::config::Config::from_yaml(&y).unwrap_or_else(|e| panic!("{e}\n{y}"));
        }
    }
}
