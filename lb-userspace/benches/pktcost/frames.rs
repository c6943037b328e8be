//! Frames of many flows for the per-packet benches (pktcost, scale), built
//! with the test bed's frame builders: flow number N is a client address
//! and port of its own.
#![allow(dead_code)] // shared by pktcost and scale, which use different parts

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_testbed::{
    fib_net::{CLIENT, CLIENT6},
    fixtures::{vip4, vip6},
    frames::{self as tb_frames, Tcp},
    inspect::{inspect, inspect6},
    topology::{LB_CLIENT_ADDR, LB_CLIENT_ADDR6},
};

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
            Family::V4 => vip4(n as u8).into(),
            Family::V6 => vip6(n).into(),
        }
    }

    /// The LB's own client-side address (not a VIP).
    pub fn lb_addr(self) -> IpAddr {
        match self {
            Family::V4 => LB_CLIENT_ADDR.into(),
            Family::V6 => LB_CLIENT_ADDR6.into(),
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
pub fn tcp(family: Family, flow: u32, dst: IpAddr, dport: u16) -> Vec<u8> {
    let (src, sport) = client(family, flow);
    tb_frames::tcp(src, sport, dst, dport, Tcp::Ack, &[0u8; 64])
}

/// Opens flow `flow` to `vip`:`dport` as a real client does, so that the
/// balancer confirms it (`FLOWS`, the established path): the client's SYN;
/// in nat mode the backend's SYN-ACK (sequence 5000) to the SNAT port the
/// balancer chose; the client's ACK of it. `run` runs one frame and gives
/// back (verdict, output). Returns the ACK's verdict and what the balancer
/// sent for the SYN.
pub fn establish(
    mut run: impl FnMut(&[u8]) -> (u32, Vec<u8>),
    family: Family,
    flow: u32,
    (vip, dport): (IpAddr, u16),
    nat: bool,
) -> (u32, Vec<u8>) {
    let (src, sport) = client(family, flow);
    let (_, out) = run(&tb_frames::tcp(src, sport, vip, dport, Tcp::Syn, b""));
    if nat {
        let (backend, bport, snat, snat_port) = addresses(family, &out);
        let _ = run(&tb_frames::syn_ack(backend, bport, snat, snat_port));
    }
    let (verdict, _) = run(&tb_frames::ack_of(src, sport, vip, dport, 5001));
    (verdict, out)
}

/// (destination, its port, source, its port) of an IPv4 or IPv6 frame.
fn addresses(family: Family, out: &[u8]) -> (IpAddr, u16, IpAddr, u16) {
    match family {
        Family::V4 => {
            let o = inspect(out);
            (o.dst.into(), o.dport, o.src.into(), o.sport)
        }
        Family::V6 => {
            let o = inspect6(out);
            (o.dst.into(), o.dport, o.src.into(), o.sport)
        }
    }
}

/// The backend's answer to `out` (a frame the balancer sent to it in nat
/// mode): from the backend to the SNAT address and port.
pub fn reply_to(family: Family, out: &[u8]) -> Vec<u8> {
    let (dst, dport, src, sport) = addresses(family, out);
    tb_frames::tcp(dst, dport, src, sport, Tcp::Ack, &[0u8; 64])
}
