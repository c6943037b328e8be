//! Ethernet frames for BPF_PROG_TEST_RUN and `xdplb trace`, addressed as
//! [`FibNet`](crate::fib_net::FibNet) expects them: a backend's frame
//! (source in 198.18.1.0/24 or 2001:db8:1::/64) from its MAC to `lbb`,
//! anything else from the client's MAC to `lbc`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{IpHeaders, IpNumber, Ipv4Header, Ipv4Options, PacketBuilder, PacketBuilderStep};
use lb_common::csum::checksum;

use crate::fib_net::{CLIENT, CLIENT_MAC, LBB_MAC, LBC_MAC, backend_mac};

/// The TCP segments the tests send: a client's SYN (seq 1000), a client's
/// ACK on an open flow, a backend's SYN-ACK (seq 5000, ack 1001).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tcp {
    Syn,
    Ack,
    SynAck,
}

/// Whether `addr` is a backend's (behind `lbb`).
fn is_backend(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.octets()[..3] == [198, 18, 1],
        IpAddr::V6(a) => a.segments()[..4] == [0x2001, 0xdb8, 1, 0],
    }
}

/// Source and destination MAC of a frame sent from `src`.
fn macs_from(src: IpAddr) -> ([u8; 6], [u8; 6]) {
    if is_backend(src) {
        (backend_mac(src), LBB_MAC)
    } else {
        (CLIENT_MAC, LBC_MAC)
    }
}

/// Ethernet and IP headers from `src` to `dst`.
fn ip_step(src: IpAddr, dst: IpAddr) -> PacketBuilderStep<IpHeaders> {
    let (smac, dmac) = macs_from(src);
    let eth = PacketBuilder::ethernet2(smac, dmac);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => panic!("{src} -> {dst}: mixed address families"),
    }
}

/// A TCP segment of `kind` carrying `payload`, IPv4 or IPv6 by the addresses.
pub fn tcp(
    src: impl Into<IpAddr>,
    sport: u16,
    dst: impl Into<IpAddr>,
    dport: u16,
    kind: Tcp,
    payload: &[u8],
) -> Vec<u8> {
    let step = ip_step(src.into(), dst.into());
    let mut v = Vec::new();
    match kind {
        Tcp::Syn => step.tcp(sport, dport, 1000, 64240).syn(),
        Tcp::Ack => step.tcp(sport, dport, 1000, 64240).ack(1),
        Tcp::SynAck => step.tcp(sport, dport, 5000, 64240).syn().ack(1001),
    }
    .write(&mut v, payload)
    .expect("frame");
    v
}

/// A client's ACK (no payload) acknowledging `ack`: the last packet of a
/// handshake whose SYN-ACK had sequence number `ack - 1`.
pub fn ack_of(
    src: impl Into<IpAddr>,
    sport: u16,
    dst: impl Into<IpAddr>,
    dport: u16,
    ack: u32,
) -> Vec<u8> {
    let mut v = Vec::new();
    ip_step(src.into(), dst.into())
        .tcp(sport, dport, 1001, 64240)
        .ack(ack)
        .write(&mut v, &[])
        .expect("frame");
    v
}

/// A client's SYN.
pub fn syn(src: impl Into<IpAddr>, sport: u16, dst: impl Into<IpAddr>, dport: u16) -> Vec<u8> {
    tcp(src, sport, dst, dport, Tcp::Syn, b"hello")
}

/// A backend's SYN-ACK (to the SNAT address in nat mode).
pub fn syn_ack(src: impl Into<IpAddr>, sport: u16, dst: impl Into<IpAddr>, dport: u16) -> Vec<u8> {
    tcp(src, sport, dst, dport, Tcp::SynAck, b"world")
}

/// A UDP datagram carrying `payload`.
pub fn udp(
    src: impl Into<IpAddr>,
    sport: u16,
    dst: impl Into<IpAddr>,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut v = Vec::new();
    ip_step(src.into(), dst.into())
        .udp(sport, dport)
        .write(&mut v, payload)
        .expect("frame");
    v
}

/// The client's SYN to `dst`, with 8 bytes of IPv4 options (NOPs and an end
/// marker: IHL 7).
pub fn syn_with_ip_options(sport: u16, dst: Ipv4Addr) -> Vec<u8> {
    let mut ip = Ipv4Header::new(5, 64, IpNumber::TCP, CLIENT.octets(), dst.octets()).unwrap();
    ip.options = Ipv4Options::try_from(&[1u8, 1, 1, 1, 1, 1, 1, 0][..]).unwrap();
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LBC_MAC)
        .ip(IpHeaders::Ipv4(ip, Default::default()))
        .tcp(sport, 80, 1, 100)
        .syn()
        .write(&mut v, b"hello")
        .expect("frame");
    v
}

/// The client's SYN to `dst` port 80 in an 802.1Q frame of `vlan`.
pub fn syn_with_vlan(vlan: u16, sport: u16, dst: Ipv4Addr) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LBC_MAC)
        .single_vlan(vlan.try_into().expect("a 12-bit VLAN id"))
        .ipv4(CLIENT.octets(), dst.octets(), 64)
        .tcp(sport, 80, 1, 100)
        .syn()
        .write(&mut v, b"hello")
        .expect("frame");
    v
}

/// The client's ARP request for the LB's client-side address.
pub fn arp_request() -> Vec<u8> {
    let mut arp = Vec::new();
    arp.extend_from_slice(&[0xff; 6]);
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&CLIENT.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&[198, 18, 0, 1]);
    arp
}

/// `frame` (IPv6) with one more extension header of type `next_hdr` right
/// after the IPv6 header; `ext`'s first byte (its next header) is set to
/// what the IPv6 header named.
pub fn with_ipv6_ext(frame: &[u8], next_hdr: u8, ext: &[u8]) -> Vec<u8> {
    let mut f = frame[..14 + 40].to_vec();
    let mut ext = ext.to_vec();
    ext[0] = f[14 + 6];
    f[14 + 6] = next_hdr;
    f.extend_from_slice(&ext);
    f.extend_from_slice(&frame[14 + 40..]);
    let len = u16::from_be_bytes([f[14 + 4], f[14 + 5]]) + ext.len() as u16;
    f[14 + 4..14 + 6].copy_from_slice(&len.to_be_bytes());
    f
}

/// An ICMP or ICMPv6 message: type `kind`, `code`, the 4 bytes after the
/// checksum, then `body`; [`icmp4`] and [`icmp6`] set the checksum.
pub fn icmp(kind: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    [&[kind, code, 0, 0][..], &rest, body].concat()
}

/// The ICMP message `msg` (from [`icmp`]) from `src` to `dst`.
pub fn icmp4(src: Ipv4Addr, dst: Ipv4Addr, mut msg: Vec<u8>) -> Vec<u8> {
    let c = checksum(&msg);
    msg[2..4].copy_from_slice(&c.to_ne_bytes());
    let mut f = Vec::new();
    ip_step(src.into(), dst.into())
        .write(&mut f, IpNumber::ICMP, &msg)
        .expect("frame");
    f
}

/// The ICMPv6 message `msg` (from [`icmp`]) from `src` to `dst`, its
/// checksum over the pseudo-header.
pub fn icmp6(src: Ipv6Addr, dst: Ipv6Addr, mut msg: Vec<u8>) -> Vec<u8> {
    let c = checksum(&icmp6_pseudo(src, dst, &msg));
    msg[2..4].copy_from_slice(&c.to_ne_bytes());
    let mut f = Vec::new();
    ip_step(src.into(), dst.into())
        .write(&mut f, IpNumber::IPV6_ICMP, &msg)
        .expect("frame");
    f
}

/// The bytes an ICMPv6 checksum covers: pseudo-header, then the message.
pub fn icmp6_pseudo(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> Vec<u8> {
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(icmp);
    pseudo
}

/// Frames the balancer must leave alone however it is configured, named:
/// not IP, broken, or fragments of `syn` (a client's IPv4 SYN to a VIP,
/// whose header fields are changed in place; checksums left stale on
/// purpose: the program must not care). The packet tests and the trace
/// tests both run this table.
pub fn malformed(syn: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let with = |at: usize, byte: u8| {
        let mut f = syn.to_vec();
        f[at] = byte;
        f
    };
    vec![
        // (test_run refuses frames shorter than an Ethernet header.)
        ("Ethernet header alone, type IPv4", syn[..14].to_vec()),
        ("IPv4 header cut", syn[..14 + 12].to_vec()),
        ("TCP header cut", syn[..14 + 20 + 10].to_vec()),
        // IHL 4 words: shorter than the fixed header.
        ("IHL below 5", with(14, 0x44)),
        ("IP version 6 in an IPv4 frame", with(14, 0x65)),
        // Fragments are not ours (the L4 header is only in the first one).
        ("first fragment", with(14 + 6, 0x20)), // MF
        ("later fragment", with(14 + 7, 0x10)), // offset 16*8 bytes
    ]
}

/// `frame` (untagged, IPv4 or IPv6) with its DSCP and ECN byte set to
/// `tos` (the IPv4 header checksum updated).
pub fn with_tos(mut frame: Vec<u8>, tos: u8) -> Vec<u8> {
    if frame[14] >> 4 == 4 {
        let ihl = (frame[14] & 0x0f) as usize * 4;
        frame[15] = tos;
        frame[24..26].fill(0);
        let sum = checksum(&frame[14..14 + ihl]);
        frame[24..26].copy_from_slice(&sum.to_ne_bytes());
    } else {
        frame[14] = (frame[14] & 0xf0) | (tos >> 4);
        frame[15] = (frame[15] & 0x0f) | (tos << 4);
    }
    frame
}
