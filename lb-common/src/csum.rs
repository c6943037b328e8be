//! Incremental Internet checksum updates (RFC 1624, eqn. 3).
//!
//! Checksums and the words they cover are taken as native integers read
//! from the packet's bytes; the one's-complement sum does not depend on
//! byte order as long as both are read the same way.

/// Folds a 32-bit one's-complement sum to 16 bits. Two fixed folds (enough
/// for any sum of up to 65537 16-bit words): the verifier refuses a
/// data-dependent `while sum >> 16 != 0` loop.
#[inline(always)]
pub fn fold(sum: u32) -> u16 {
    let s = (sum & 0xffff) + (sum >> 16);
    ((s & 0xffff) + (s >> 16)) as u16
}

/// One's-complement sum (unfolded) of an address as map words: its part of
/// a pseudo-header.
#[inline(always)]
pub fn addr_sum(w: &[u32; 4]) -> u32 {
    let mut s = 0u32;
    for x in w {
        s += (x & 0xffff) + (x >> 16);
    }
    s
}

/// New checksum after a 32-bit word covered by `check` changed.
#[inline(always)]
pub fn replace4(check: u16, old: u32, new: u32) -> u16 {
    let sum =
        (!check as u32 & 0xffff) + (!old >> 16) + (!old & 0xffff) + (new >> 16) + (new & 0xffff);
    !fold(sum)
}

/// New checksum after a 16-bit word covered by `check` changed.
#[inline(always)]
pub fn replace2(check: u16, old: u16, new: u16) -> u16 {
    let sum = (!check as u32 & 0xffff) + (!old as u32 & 0xffff) + new as u32;
    !fold(sum)
}

/// Full checksum of `data` (even length not required), for tests and for
/// building headers from scratch on the host.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u16::from_ne_bytes([c[0], c[1]]) as u32;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    if let [last] = chunks.remainder() {
        sum += u16::from_ne_bytes([*last, 0]) as u32;
    }
    !fold(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    // An IPv4 header with its checksum field zeroed (RFC 1071 example style).
    const HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 0xc6, 0x12, 0x00,
        0x02, 0xc6, 0x12, 0x64, 0x0a,
    ];

    fn with_check(mut h: [u8; 20]) -> [u8; 20] {
        let c = checksum(&h);
        h[10..12].copy_from_slice(&c.to_ne_bytes());
        h
    }

    #[test]
    fn full_checksum_verifies_to_zero() {
        let h = with_check(HDR);
        assert_eq!(checksum(&h), 0);
        // Same value as an independent big-endian computation (Python, RFC 1071).
        assert_eq!(u16::from_be_bytes([h[10], h[11]]), 0x2e45);
    }

    #[test]
    fn replace4_matches_recompute() {
        let h = with_check(HDR);
        let old_check = u16::from_ne_bytes([h[10], h[11]]);
        let old = u32::from_ne_bytes([h[16], h[17], h[18], h[19]]);
        let new_bytes = [198, 18, 1, 11];
        let new = u32::from_ne_bytes(new_bytes);
        let mut m = h;
        m[16..20].copy_from_slice(&new_bytes);
        m[10..12].copy_from_slice(&replace4(old_check, old, new).to_ne_bytes());
        assert_eq!(checksum(&m), 0);
        assert_eq!(
            m,
            with_check({
                let mut z = m;
                z[10] = 0;
                z[11] = 0;
                z
            })
        );
    }

    #[test]
    fn replace2_matches_recompute() {
        let h = with_check(HDR);
        let old_check = u16::from_ne_bytes([h[10], h[11]]);
        let old = u16::from_ne_bytes([h[4], h[5]]);
        let mut m = h;
        m[4..6].copy_from_slice(&0xfffeu16.to_be_bytes());
        let new = u16::from_ne_bytes([m[4], m[5]]);
        m[10..12].copy_from_slice(&replace2(old_check, old, new).to_ne_bytes());
        assert_eq!(checksum(&m), 0);
    }

    #[test]
    fn fold_handles_double_carry() {
        assert_eq!(fold(0xffff_ffff), 0xffff);
        assert_eq!(fold(0x0001_fffe), 0xffff);
        assert_eq!(fold(0x0002_ffff), 0x0002);
    }

    #[test]
    fn many_random_updates_match_recompute() {
        // xorshift for deterministic pseudo-random headers and replacements.
        let mut x: u32 = 0x1234_5678;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for _ in 0..10_000 {
            let mut h = HDR;
            for b in h.iter_mut() {
                *b = next() as u8;
            }
            h[10] = 0;
            h[11] = 0;
            let h = with_check(h);
            let old_check = u16::from_ne_bytes([h[10], h[11]]);
            let off = 12 + 4 * (next() as usize % 2);
            let old = u32::from_ne_bytes(h[off..off + 4].try_into().unwrap());
            let new = next();
            let mut m = h;
            m[off..off + 4].copy_from_slice(&new.to_ne_bytes());
            m[10..12].copy_from_slice(&replace4(old_check, old, new).to_ne_bytes());
            assert_eq!(checksum(&m), 0, "{h:?} -> {m:?}");
        }
    }
}
