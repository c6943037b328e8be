//! Address and port rewrite with incremental checksum updates.

use lb_common::{
    PROTO_UDP,
    csum::{replace2, replace4},
    v4_bytes, v6_bytes,
};

use crate::parse::{L3, Packet};

/// Rewrites the IP addresses and L4 ports (all in wire order), updating the
/// IPv4 header checksum and the TCP/UDP checksum (whose pseudo-header covers
/// the addresses). A UDP datagram without a checksum keeps none. IPv4 uses
/// word 0 of the addresses, IPv6 all four.
#[inline(always)]
pub fn rewrite(pkt: &mut Packet, src: &[u32; 4], dst: &[u32; 4], sport: u16, dport: u16) {
    let old = pkt.key;
    let v4 = match pkt.l3 {
        L3::V4(ip) => unsafe {
            let ip = &mut *ip;
            let mut check = u16::from_ne_bytes(ip.check);
            check = replace4(check, old.src[0], src[0]);
            check = replace4(check, old.dst[0], dst[0]);
            ip.check = check.to_ne_bytes();
            ip.src_addr = v4_bytes(src);
            ip.dst_addr = v4_bytes(dst);
            true
        },
        L3::V6(ip) => unsafe {
            let ip = &mut *ip;
            ip.src_addr = v6_bytes(src);
            ip.dst_addr = v6_bytes(dst);
            false
        },
    };
    // Read, update and write the L4 checksum in one place: split over
    // separate branches, LLVM's merged conditions lost the older verifiers
    // (6.1 walked a path writing through the absent pointer).
    if let Some(p) = pkt.l4_check {
        let mut c = u16::from_ne_bytes(unsafe { *p });
        let words = if v4 { 1 } else { 4 };
        for i in 0..4 {
            if i < words {
                c = replace4(replace4(c, old.src[i], src[i]), old.dst[i], dst[i]);
            }
        }
        c = replace2(replace2(c, old.sport, sport), old.dport, dport);
        // UDP: 0 means "no checksum", so a computed 0 is sent as 0xffff.
        if c == 0 && old.proto == PROTO_UDP {
            c = 0xffff;
        }
        unsafe { *p = c.to_ne_bytes() };
    }
    unsafe { *pkt.ports = [sport, dport] };
    pkt.key.src = *src;
    pkt.key.dst = *dst;
    pkt.key.sport = sport;
    pkt.key.dport = dport;
}
