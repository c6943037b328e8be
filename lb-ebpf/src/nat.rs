//! Address and port rewrite with incremental checksum updates.

use lb_common::csum::{replace2, replace4};

use crate::parse::Packet;

/// Rewrites the IPv4 addresses and L4 ports (all in wire order), updating
/// the IP checksum and the TCP/UDP checksum (whose pseudo-header covers the
/// addresses). A UDP datagram without a checksum keeps none.
#[inline(always)]
pub fn rewrite(pkt: &mut Packet, src: u32, dst: u32, sport: u16, dport: u16) {
    let old = &pkt.key;
    let (old_src, old_dst, old_sport, old_dport) = (old.src[0], old.dst[0], old.sport, old.dport);
    unsafe {
        let ip = &mut *pkt.ip;
        let mut check = u16::from_ne_bytes(ip.check);
        check = replace4(check, old_src, src);
        check = replace4(check, old_dst, dst);
        ip.check = check.to_ne_bytes();
        ip.src_addr = src.to_ne_bytes();
        ip.dst_addr = dst.to_ne_bytes();

        if let Some(l4_check) = pkt.l4_check {
            let mut c = u16::from_ne_bytes(*l4_check);
            c = replace4(c, old_src, src);
            c = replace4(c, old_dst, dst);
            c = replace2(c, old_sport, sport);
            c = replace2(c, old_dport, dport);
            // UDP: 0 means "no checksum", so a computed 0 is sent as 0xffff.
            if c == 0 && pkt.key.proto == lb_common::PROTO_UDP {
                c = 0xffff;
            }
            *l4_check = c.to_ne_bytes();
        }
        *pkt.ports = [sport, dport];
    }
    pkt.key.src[0] = src;
    pkt.key.dst[0] = dst;
    pkt.key.sport = sport;
    pkt.key.dport = dport;
}
