//! Reading frames byte by byte, whatever state they are in: header
//! locations, and what is wrong with an IP packet (`defects`), found by
//! recomputing every checksum in full.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::csum::checksum;

pub const ETH_IP4: u16 = 0x0800;
pub const ETH_IP6: u16 = 0x86dd;
pub const ETH_VLAN: u16 = 0x8100;
pub const ETH_QINQ: u16 = 0x88a8;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMP6: u8 = 58;
pub const IPIP: u8 = 4;
pub const IP6IP: u8 = 41;

pub fn be16(f: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*f.get(at)?, *f.get(at + 1)?]))
}

pub fn set16(f: &mut [u8], at: usize, v: u16) {
    if at + 2 <= f.len() {
        f[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
}

/// The address at `at`: 4 bytes for IPv4, 16 for IPv6.
pub fn addr(f: &[u8], at: usize, v4: bool) -> Option<IpAddr> {
    if v4 {
        let b: [u8; 4] = f.get(at..at + 4)?.try_into().ok()?;
        Some(Ipv4Addr::from(b).into())
    } else {
        let b: [u8; 16] = f.get(at..at + 16)?.try_into().ok()?;
        Some(Ipv6Addr::from(b).into())
    }
}

pub fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Ethernet: every VLAN tag (802.1Q or 802.1ad) walked, the EtherType
/// after them and where the network header starts. (The balancer itself
/// reads one 802.1Q tag: see `model`.)
pub fn l2(f: &[u8]) -> Option<(u16, usize)> {
    let mut at = 12;
    let mut et = be16(f, at)?;
    while et == ETH_VLAN || et == ETH_QINQ {
        at += 4;
        et = be16(f, at)?;
    }
    Some((et, at + 2))
}

/// The IPv6 extension header types the walk below knows, with the unit of
/// their length byte.
pub fn ext_len(next: u8, len_byte: u8) -> Option<usize> {
    match next {
        0 | 43 | 60 | 135 | 139 | 140 => Some((len_byte as usize + 1) * 8),
        51 => Some((len_byte as usize + 2) * 4),
        // Fragment: fixed 8 bytes.
        44 => Some(8),
        _ => None,
    }
}

/// What is wrong with an IP packet, by kind. A frame leaving the balancer
/// may only have the defects it arrived with (the balancer verifies no
/// checksum and no length: it forwards what it got, fixed up
/// incrementally), never new ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Defects {
    /// Version, IHL or header cut short: nothing further is read.
    pub header: bool,
    /// IPv4 header checksum wrong.
    pub ip_sum: bool,
    /// IP length field beyond the frame, or shorter than its headers.
    pub ip_len: bool,
    /// TCP data offset or UDP length inconsistent, or L4 header cut.
    pub l4_len: bool,
    /// TCP, UDP, ICMP or ICMPv6 checksum wrong (full recomputation).
    pub l4_sum: bool,
}

impl Defects {
    /// Every defect of `self` is also one of `other`.
    pub fn within(&self, other: &Defects) -> bool {
        (!self.header || other.header)
            && (!self.ip_sum || other.ip_sum)
            && (!self.ip_len || other.ip_len)
            && (!self.l4_len || other.l4_len)
            && (!self.l4_sum || other.l4_sum)
    }

    pub fn any(&self) -> bool {
        *self != Defects::default()
    }

    /// Names of the defects present.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.header, "ip_header"),
            (self.ip_sum, "ip_checksum"),
            (self.ip_len, "ip_length"),
            (self.l4_len, "l4_length"),
            (self.l4_sum, "l4_checksum"),
        ]
        .into_iter()
        .filter_map(|(on, n)| on.then_some(n))
        .collect()
    }
}

/// The defects of the IP packet at `l3` of `f` (`v4`: IPv4 or IPv6, as
/// the frame's EtherType says). The packet is taken to end where its
/// length field says (the rest of the frame is Ethernet padding).
pub fn defects(f: &[u8], l3: usize, v4: bool) -> Defects {
    let mut d = Defects::default();
    let avail = f.len().saturating_sub(l3);
    let (proto, l4, end, src, dst) = if v4 {
        if avail < 20 || f[l3] >> 4 != 4 || (f[l3] & 0xf) < 5 || avail < (f[l3] & 0xf) as usize * 4
        {
            d.header = true;
            return d;
        }
        let ihl = (f[l3] & 0xf) as usize * 4;
        d.ip_sum = checksum(&f[l3..l3 + ihl]) != 0;
        let tot = be16(f, l3 + 2).unwrap() as usize;
        if tot < ihl || tot > avail {
            d.ip_len = true;
            return d;
        }
        // A fragment's L4 header is not all there: not checked.
        if be16(f, l3 + 6).unwrap() & 0x3fff != 0 {
            return d;
        }
        (
            f[l3 + 9],
            l3 + ihl,
            l3 + tot,
            &f[l3 + 12..l3 + 16],
            &f[l3 + 16..l3 + 20],
        )
    } else {
        if avail < 40 || f[l3] >> 4 != 6 {
            d.header = true;
            return d;
        }
        let end = l3 + 40 + be16(f, l3 + 4).unwrap() as usize;
        if end > f.len() {
            d.ip_len = true;
            return d;
        }
        let (mut next, mut at) = (f[l3 + 6], l3 + 40);
        while let Some(len) = f.get(at + 1).and_then(|b| ext_len(next, *b)) {
            if next == 44 {
                return d; // a fragment
            }
            if at + len > end {
                d.ip_len = true;
                return d;
            }
            next = f[at];
            at += len;
        }
        (next, at, end, &f[l3 + 8..l3 + 24], &f[l3 + 24..l3 + 40])
    };
    let seg = &f[l4.min(end)..end];
    let min = match proto {
        TCP => 20,
        UDP => 8,
        ICMP | ICMP6 => 4,
        _ => return d,
    };
    if seg.len() < min {
        d.l4_len = true;
        return d;
    }
    let mut covered = seg;
    match proto {
        TCP => {
            let off = (seg[12] >> 4) as usize * 4;
            d.l4_len = off < 20 || off > seg.len();
        }
        UDP => {
            let len = be16(seg, 4).unwrap() as usize;
            if len < 8 || len > seg.len() {
                d.l4_len = true;
                return d;
            }
            covered = &seg[..len];
            // IPv4 only: zero means "no checksum".
            if v4 && be16(seg, 6) == Some(0) {
                return d;
            }
        }
        _ => {}
    }
    let sum = if proto == ICMP {
        checksum(covered)
    } else {
        checksum(&pseudo(src, dst, proto, covered))
    };
    d.l4_sum = sum != 0;
    d
}

/// Pseudo-header (either family) followed by `seg`.
pub fn pseudo(src: &[u8], dst: &[u8], proto: u8, seg: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(40 + seg.len());
    p.extend_from_slice(src);
    p.extend_from_slice(dst);
    if src.len() == 4 {
        p.extend_from_slice(&[0, proto]);
        p.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    } else {
        p.extend_from_slice(&(seg.len() as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, proto]);
    }
    p.extend_from_slice(seg);
    p
}

/// Sets the IPv4 header checksum of the header at `l3` (IHL as found).
pub fn fix_ip4_sum(f: &mut [u8], l3: usize) {
    let ihl = (f[l3] & 0xf) as usize * 4;
    if ihl < 20 || l3 + ihl > f.len() {
        return;
    }
    f[l3 + 10..l3 + 12].fill(0);
    let c = checksum(&f[l3..l3 + ihl]);
    f[l3 + 10..l3 + 12].copy_from_slice(&c.to_ne_bytes());
}

/// Sets the L4 checksum (TCP, UDP, ICMP, ICMPv6) of the IP packet at `l3`,
/// over the segment from `l4` to the packet's end; nothing if the lengths
/// do not allow it.
pub fn fix_l4_sum(f: &mut [u8], l3: usize, l4: usize, proto: u8) {
    let v4 = f[l3] >> 4 == 4;
    let end = if v4 {
        l3 + be16(f, l3 + 2).unwrap_or(0) as usize
    } else {
        l3 + 40 + be16(f, l3 + 4).unwrap_or(0) as usize
    };
    let at = match proto {
        TCP => 16,
        UDP => 6,
        ICMP | ICMP6 => 2,
        _ => return,
    };
    if end > f.len() || l4 + at + 2 > end {
        return;
    }
    f[l4 + at..l4 + at + 2].fill(0);
    let (src, dst) = if v4 {
        (f[l3 + 12..l3 + 16].to_vec(), f[l3 + 16..l3 + 20].to_vec())
    } else {
        (f[l3 + 8..l3 + 24].to_vec(), f[l3 + 24..l3 + 40].to_vec())
    };
    let seg = &f[l4..end];
    let mut c = if proto == ICMP {
        checksum(seg)
    } else {
        checksum(&pseudo(&src, &dst, proto, seg))
    };
    if c == 0 && proto == UDP {
        c = 0xffff;
    }
    f[l4 + at..l4 + at + 2].copy_from_slice(&c.to_ne_bytes());
}

pub fn hex(f: &[u8]) -> String {
    f.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames;

    #[test]
    fn built_frames_have_no_defects_and_a_flipped_byte_is_found() {
        let a: Ipv4Addr = "198.18.0.2".parse().unwrap();
        let b: Ipv4Addr = "198.18.100.10".parse().unwrap();
        let f = frames::syn(a, 1000, b, 80);
        assert!(!defects(&f, 14, true).any());
        let mut g = f.clone();
        g[14 + 20 + 20] ^= 1;
        assert_eq!(defects(&g, 14, true).names(), ["l4_checksum"]);
        let mut g = f.clone();
        g[14 + 8] ^= 1;
        assert_eq!(defects(&g, 14, true).names(), ["ip_checksum"]);
        let f = frames::udp(
            "2001:db8::2".parse::<Ipv6Addr>().unwrap(),
            5,
            "2001:db8:100::10".parse::<Ipv6Addr>().unwrap(),
            53,
            b"x",
        );
        assert!(!defects(&f, 14, false).any());
        let mut g = f.clone();
        set16(&mut g, 14 + 4, 100);
        assert_eq!(defects(&g, 14, false).names(), ["ip_length"]);
    }
}
