//! Address and port rewrite with incremental checksum updates.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    FAMILY_V4, PROTO_UDP,
    csum::{replace2, replace4},
    v4_bytes, v6_bytes,
};
use network_types::ip::{Ipv4Hdr, Ipv6Hdr};

use crate::parse::{Packet, ptr_at};

/// Rewrites the IP addresses and L4 ports (all in wire order), updating the
/// IPv4 header checksum and the TCP/UDP checksum (whose pseudo-header covers
/// the addresses). A UDP datagram without a checksum keeps none. IPv4 uses
/// word 0 of the addresses, IPv6 all four. `None` (the packet untouched):
/// its IP header is not all there, which parsing already ruled out.
#[inline(always)]
pub fn rewrite(
    ctx: &XdpContext,
    pkt: &mut Packet,
    src: &[u32; 4],
    dst: &[u32; 4],
    sport: u16,
    dport: u16,
) -> Option<()> {
    let old = pkt.key;
    // The header is taken here, bounds-checked for its own family: carried
    // from parsing, a pointer checked for IPv4 reached the IPv6 writes on
    // 5.10's verifier, which lost which family it was.
    let v4 = old.family == FAMILY_V4;
    if v4 {
        let ip = unsafe { &mut *ptr_at::<Ipv4Hdr>(ctx, pkt.l2_len)? };
        let mut check = u16::from_ne_bytes(ip.check);
        check = replace4(check, old.src[0], src[0]);
        check = replace4(check, old.dst[0], dst[0]);
        ip.check = check.to_ne_bytes();
        ip.src_addr = v4_bytes(src);
        ip.dst_addr = v4_bytes(dst);
    } else {
        let ip = unsafe { &mut *ptr_at::<Ipv6Hdr>(ctx, pkt.l2_len)? };
        ip.src_addr = v6_bytes(src);
        ip.dst_addr = v6_bytes(dst);
    }
    // Read, update and write the L4 checksum in one place: split over
    // separate branches, LLVM's merged conditions lost the older verifiers
    // (6.1 walked a path writing through the absent pointer).
    if pkt.has_l4_check {
        let p = pkt.l4_check;
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
    Some(())
}
