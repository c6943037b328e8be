//! Addresses as the maps hold them: four words whose bytes are the
//! address's bytes in wire order (`u32::from_ne_bytes`), IPv4 in word 0 with
//! the rest zero. The program converts header bytes, the daemon `IpAddr`s;
//! both go through here so the layout is written down once.
//! (`core::net` is std's `IpAddr`, so the daemon's helpers need no feature.)

use core::net::IpAddr;

use crate::maps::{FAMILY_V4, FAMILY_V6};

/// An IPv4 header address as map words.
#[inline(always)]
pub fn v4_words(a: [u8; 4]) -> [u32; 4] {
    [u32::from_ne_bytes(a), 0, 0, 0]
}

/// An IPv6 header address as map words.
#[inline(always)]
pub fn v6_words(a: [u8; 16]) -> [u32; 4] {
    let w = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

/// Inverse of [`v4_words`].
#[inline(always)]
pub fn v4_bytes(w: &[u32; 4]) -> [u8; 4] {
    w[0].to_ne_bytes()
}

/// Inverse of [`v6_words`].
#[inline(always)]
pub fn v6_bytes(w: &[u32; 4]) -> [u8; 16] {
    let mut b = [0u8; 16];
    for i in 0..4 {
        b[i * 4..i * 4 + 4].copy_from_slice(&w[i].to_ne_bytes());
    }
    b
}

/// An address as map words and its family (`FAMILY_V4` or `FAMILY_V6`).
pub fn addr_words(addr: IpAddr) -> ([u32; 4], u8) {
    match addr {
        IpAddr::V4(a) => (v4_words(a.octets()), FAMILY_V4),
        IpAddr::V6(a) => (v6_words(a.octets()), FAMILY_V6),
    }
}

/// Inverse of [`addr_words`].
pub fn words_addr(words: [u32; 4], family: u8) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::from(v4_bytes(&words))
    } else {
        IpAddr::from(v6_bytes(&words))
    }
}

#[cfg(test)]
mod tests {
    use core::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn words_hold_the_wire_bytes() {
        let v4 = IpAddr::V4(Ipv4Addr::new(198, 18, 1, 2));
        let (w, family) = addr_words(v4);
        assert_eq!(
            (w[0].to_ne_bytes(), &w[1..], family),
            ([198, 18, 1, 2], &[0; 3][..], FAMILY_V4)
        );
        assert_eq!(words_addr(w, family), v4);

        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0x1234, 0x5678));
        let (w, family) = addr_words(v6);
        assert_eq!(family, FAMILY_V6);
        assert_eq!(w[0].to_ne_bytes(), [0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(w[3].to_ne_bytes(), [0x12, 0x34, 0x56, 0x78]);
        assert_eq!(words_addr(w, family), v6);
    }
}
