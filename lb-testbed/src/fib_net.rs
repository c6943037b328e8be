//! A single namespace shaped like the LB host, for running the program with
//! BPF_PROG_TEST_RUN (packet tests, benchmarks): interfaces `lbc`
//! (198.18.0.1/24, 2001:db8::1/64) and `lbb` (198.18.1.1/24,
//! 2001:db8:1::1/64) with fixed MACs, forwarding on, and static neighbours,
//! so `bpf_fib_lookup` answers without any traffic.
//! Test runs that pass no context enter on `lo`, hence forwarding on `lo`.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::Result;

use crate::netns::{self, Netns, mac_text};

pub const LBC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const LBB_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 0x01];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

/// IPv6 backend N, mirroring 198.18.1.N: 2001:db8:1::N, written with the
/// same digits (backend 11 is 2001:db8:1::11).
pub fn backend6(n: u8) -> Ipv6Addr {
    let last = u16::from_str_radix(&n.to_string(), 16).expect("decimal digits are hex digits");
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, last)
}

/// The static MAC of backend 198.18.1.N, also 2001:db8:1::N.
pub fn backend_mac(ip: impl Into<IpAddr>) -> [u8; 6] {
    let last = match ip.into() {
        IpAddr::V4(a) => a.octets()[3],
        IpAddr::V6(a) => a.octets()[15],
    };
    [0x02, 0, 0, 0, 1, last]
}

/// The namespace; deleted on drop.
pub struct FibNet {
    net: Netns,
}

impl FibNet {
    /// `backends`: the last octets (198.18.1.N) that get a static neighbour;
    /// any other backend address stays unresolved.
    pub fn create(backends: impl IntoIterator<Item = u8>) -> Result<FibNet> {
        static N: AtomicU32 = AtomicU32::new(0);
        let ns = format!(
            "xdplb-fib-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let net = FibNet {
            net: Netns::create(&ns)?,
        };
        let mut script = vec![
            "link add lbc type veth peer name cpeer".to_string(),
            "link add lbb type veth peer name bpeer".into(),
            format!("link set lbc address {}", mac_text(LBC_MAC)),
            format!("link set lbb address {}", mac_text(LBB_MAC)),
            "link set lbc up".into(),
            "link set lbb up".into(),
            "link set cpeer up".into(),
            "link set bpeer up".into(),
            "addr add 198.18.0.1/24 dev lbc".into(),
            "addr add 198.18.1.1/24 dev lbb".into(),
            "-6 addr add 2001:db8::1/64 dev lbc nodad".into(),
            "-6 addr add 2001:db8:1::1/64 dev lbb nodad".into(),
        ];
        for client in [IpAddr::V4(CLIENT), IpAddr::V6(CLIENT6)] {
            script.push(format!(
                "neigh replace {client} lladdr {} dev lbc nud permanent",
                mac_text(CLIENT_MAC)
            ));
        }
        for last in backends {
            for b in [
                IpAddr::V4(Ipv4Addr::new(198, 18, 1, last)),
                IpAddr::V6(backend6(last)),
            ] {
                script.push(format!(
                    "neigh replace {b} lladdr {} dev lbb nud permanent",
                    mac_text(backend_mac(b))
                ));
            }
        }
        netns::ip_script(&ns, &script)?;
        netns::run_in(&ns, || {
            for family in ["ipv4", "ipv6"] {
                for conf in ["all", "lo", "lbc", "lbb"] {
                    let path = format!("/proc/sys/net/{family}/conf/{conf}/forwarding");
                    std::fs::write(path, "1")?;
                }
            }
            Ok(())
        })?;
        Ok(net)
    }

    /// The namespace's name.
    pub fn ns(&self) -> &str {
        self.net.name()
    }

    pub fn ifindex(&self, iface: &str) -> Result<u32> {
        netns::ifindex(self.ns(), iface)
    }

    /// Runs `f` inside the namespace (see [`netns::run_in`]).
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        netns::run_in(self.ns(), f)
    }
}

/// The flow key of a TCP connection from [`CLIENT`]`:sport` to `vip`:80,
/// as the program's flow table holds it.
pub fn client_key4(sport: u16, vip: Ipv4Addr) -> lb_common::FlowKey {
    lb_common::FlowKey {
        src: lb_common::v4_words(CLIENT.octets()),
        dst: lb_common::v4_words(vip.octets()),
        sport: sport.to_be(),
        dport: 80u16.to_be(),
        proto: lb_common::PROTO_TCP,
        family: lb_common::FAMILY_V4,
        _pad: [0; 2],
    }
}
