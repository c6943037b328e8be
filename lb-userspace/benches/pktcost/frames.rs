//! Test frames for the per-packet benches, as `FibNet` expects them: from
//! the client's MAC to `lbc`, or from a backend's MAC to `lbb`.
#![allow(dead_code)] // shared by pktcost and scale, which use different parts

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use lb_testbed::fib_net::{CLIENT, CLIENT_MAC, CLIENT6, LBB_MAC, LBC_MAC, backend_mac};

#[derive(Clone, Copy, PartialEq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// VIP number `n`: 198.18.100.n or 2001:db8:100::n.
    pub fn vip(self, n: u16) -> IpAddr {
        match self {
            Family::V4 => Ipv4Addr::new(198, 18, 100, n as u8).into(),
            Family::V6 => Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, n).into(),
        }
    }

    /// The LB's own client-side address (not a VIP).
    pub fn lb_addr(self) -> IpAddr {
        match self {
            Family::V4 => Ipv4Addr::new(198, 18, 0, 1).into(),
            Family::V6 => Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(),
        }
    }
}

/// Flow number `flow` as a client address and port: 60000 ports per
/// address; flow 0 is the client `FibNet` knows (port 1024).
pub fn client(family: Family, flow: u32) -> (IpAddr, u16) {
    let (k, port) = (flow / 60_000, 1024 + (flow % 60_000) as u16);
    let addr: IpAddr = match (family, k) {
        (Family::V4, 0) => CLIENT.into(),
        (Family::V6, 0) => CLIENT6.into(),
        (Family::V4, k) => {
            Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 2)) + (k << 8)).into()
        }
        (Family::V6, k) => Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, k as u16, 2).into(),
    };
    (addr, port)
}

/// A TCP ACK with 64 bytes of payload from client flow `flow` to `dst`.
/// (`_sport` is kept for call sites that read better with it; the flow
/// number decides the port.)
pub fn tcp(family: Family, flow: u32, _sport: u16, dst: IpAddr, dport: u16) -> Vec<u8> {
    let (src, sport) = client(family, flow);
    build(CLIENT_MAC, LBC_MAC, src, sport, dst, dport)
}

fn build(
    smac: [u8; 6],
    dmac: [u8; 6],
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(smac, dmac);
    let ip = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families"),
    };
    let mut v = Vec::new();
    ip.tcp(sport, dport, 1000, 64240)
        .ack(1)
        .write(&mut v, &[0u8; 64])
        .expect("frame");
    v
}

/// The backend's answer to `out` (a frame the balancer sent to it in nat
/// mode): from the backend to the SNAT address and port.
pub fn reply_to(_family: Family, out: &[u8]) -> Vec<u8> {
    let p = SlicedPacket::from_ethernet(out).expect("the balancer's output parses");
    let (src, dst): (IpAddr, IpAddr) = match p.net.expect("IP") {
        NetSlice::Ipv4(h) => (
            h.header().source_addr().into(),
            h.header().destination_addr().into(),
        ),
        NetSlice::Ipv6(h) => (
            h.header().source_addr().into(),
            h.header().destination_addr().into(),
        ),
        _ => panic!("not IP"),
    };
    let Some(TransportSlice::Tcp(t)) = p.transport else {
        panic!("not TCP")
    };
    build(
        backend_mac(dst),
        LBB_MAC,
        dst,
        t.destination_port(),
        src,
        t.source_port(),
    )
}
