//! Reading output frames back: addresses, ports and payload, after checking
//! every checksum in them (a test that reads a field has checked the frame).

use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use lb_common::csum::checksum;

use crate::frames::icmp6_pseudo;

/// Fields of an output frame.
#[derive(Debug, PartialEq)]
pub struct Out<A> {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub src: A,
    pub dst: A,
    pub sport: u16,
    pub dport: u16,
    /// TTL or hop limit.
    pub ttl: u8,
    pub payload: Vec<u8>,
}

/// (destination, source) MAC of `frame`.
pub fn macs(frame: &[u8]) -> ([u8; 6], [u8; 6]) {
    (
        frame[0..6].try_into().unwrap(),
        frame[6..12].try_into().unwrap(),
    )
}

/// An IPv4 TCP or UDP frame; panics on a wrong checksum.
pub fn inspect(frame: &[u8]) -> Out<Ipv4Addr> {
    let p = SlicedPacket::from_ethernet(frame).expect("output parses");
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not IPv4")
    };
    let iph = ip.header().to_header();
    assert_eq!(
        iph.header_checksum,
        iph.calc_header_checksum(),
        "IPv4 header checksum"
    );
    let (sport, dport, payload) = transport(
        &p,
        |t, pl| t.calc_checksum_ipv4(&iph, pl).unwrap(),
        |u, pl| u.calc_checksum_ipv4(&iph, pl).unwrap(),
    );
    let (dst_mac, src_mac) = macs(frame);
    Out {
        dst_mac,
        src_mac,
        src: Ipv4Addr::from(iph.source),
        dst: Ipv4Addr::from(iph.destination),
        sport,
        dport,
        ttl: iph.time_to_live,
        payload,
    }
}

/// [`inspect`] for IPv6 frames.
pub fn inspect6(frame: &[u8]) -> Out<Ipv6Addr> {
    let p = SlicedPacket::from_ethernet(frame).expect("output parses");
    let Some(NetSlice::Ipv6(ip)) = &p.net else {
        panic!("not IPv6")
    };
    let iph = ip.header().to_header();
    let (sport, dport, payload) = transport(
        &p,
        |t, pl| t.calc_checksum_ipv6(&iph, pl).unwrap(),
        |u, pl| u.calc_checksum_ipv6(&iph, pl).unwrap(),
    );
    let (dst_mac, src_mac) = macs(frame);
    Out {
        dst_mac,
        src_mac,
        src: Ipv6Addr::from(iph.source),
        dst: Ipv6Addr::from(iph.destination),
        sport,
        dport,
        ttl: iph.hop_limit,
        payload,
    }
}

/// Ports and payload of the L4 header, its checksum verified with the
/// given pseudo-header computations (a UDP checksum of 0 means none).
fn transport(
    p: &SlicedPacket,
    tcp_sum: impl Fn(&etherparse::TcpHeader, &[u8]) -> u16,
    udp_sum: impl Fn(&etherparse::UdpHeader, &[u8]) -> u16,
) -> (u16, u16, Vec<u8>) {
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            let h = t.to_header();
            assert_eq!(h.checksum, tcp_sum(&h, t.payload()), "TCP checksum");
            (h.source_port, h.destination_port, t.payload().to_vec())
        }
        Some(TransportSlice::Udp(u)) => {
            let h = u.to_header();
            if h.checksum != 0 {
                assert_eq!(h.checksum, udp_sum(&h, u.payload()), "UDP checksum");
            }
            (h.source_port, h.destination_port, u.payload().to_vec())
        }
        other => panic!("unexpected transport {other:?}"),
    }
}

/// The Internet checksum of `data` is valid (sums to zero).
pub fn sums_to_zero(data: &[u8]) -> bool {
    checksum(data) == 0
}

/// The ICMPv6 checksum of an IPv6 frame (no extension headers) is valid.
pub fn icmp6_valid(frame: &[u8]) -> bool {
    let ip = &frame[14..];
    let len = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    let addr = |at: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&ip[at..at + 16]).unwrap());
    sums_to_zero(&icmp6_pseudo(addr(8), addr(24), &ip[40..40 + len]))
}
