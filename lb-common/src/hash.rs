//! The flow hash, shared so that the daemon (`xdplb explain`, tests) and the
//! XDP program compute exactly the same value. MurmurHash3's 32-bit mixing
//! over whole words: no loops, so the verifier accepts it as is.

use crate::maps::{FAMILY_V4, FlowKey, HASH_SOURCE_IP};

#[inline(always)]
fn mix(h: u32, k: u32) -> u32 {
    let k = k
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

#[inline(always)]
fn finish(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[inline(always)]
fn mix_addr(h: u32, family: u8, addr: &[u32; 4]) -> u32 {
    let h = mix(h, addr[0]);
    if family == FAMILY_V4 {
        h
    } else {
        mix(mix(mix(h, addr[1]), addr[2]), addr[3])
    }
}

/// Hash of the fields `hash_mode` selects (`HASH_FIVE_TUPLE` or
/// `HASH_SOURCE_IP`), seeded so that every LB node with the same seed makes
/// the same choice.
#[inline(always)]
pub fn flow_hash(key: &FlowKey, hash_mode: u8, seed: u32) -> u32 {
    let h = mix_addr(seed, key.family, &key.src);
    if hash_mode == HASH_SOURCE_IP {
        return finish(h);
    }
    let h = mix_addr(h, key.family, &key.dst);
    let ports = ((key.sport as u32) << 16) | key.dport as u32;
    finish(mix(mix(h, ports), key.proto as u32))
}

/// The ring index of a flow's second candidate (`balance: least-flows`),
/// from its flow hash: a fresh mix, so the two draws are independent (the
/// ring size is prime, and `h % m` and this differ for most flows).
#[inline(always)]
pub fn second_hash(h: u32) -> u32 {
    finish(mix(h, 0x5bd1_e995))
}

/// General-purpose hash of a few words (Maglev permutations, SNAT ports).
#[inline(always)]
pub fn hash_words(words: &[u32], seed: u32) -> u32 {
    let mut h = seed;
    for w in words {
        h = mix(h, *w);
    }
    finish(h ^ words.len() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{addr::v4_words, maps::PROTO_TCP};

    fn key(sport: u16) -> FlowKey {
        FlowKey {
            src: v4_words([198, 18, 0, 2]),
            dst: v4_words([198, 18, 100, 10]),
            sport: sport.to_be(),
            dport: 80u16.to_be(),
            proto: PROTO_TCP,
            family: FAMILY_V4,
            _pad: [0; 2],
        }
    }

    #[test]
    fn same_key_same_hash_and_seed_matters() {
        assert_eq!(flow_hash(&key(1000), 0, 7), flow_hash(&key(1000), 0, 7));
        assert_ne!(flow_hash(&key(1000), 0, 7), flow_hash(&key(1000), 0, 8));
        assert_ne!(flow_hash(&key(1000), 0, 7), flow_hash(&key(1001), 0, 7));
    }

    #[test]
    fn source_ip_mode_ignores_ports() {
        assert_eq!(
            flow_hash(&key(1000), HASH_SOURCE_IP, 7),
            flow_hash(&key(2000), HASH_SOURCE_IP, 7)
        );
    }

    #[test]
    fn spreads_sequential_ports_evenly() {
        // 64k sequential source ports into 16 buckets: each near 1/16.
        let mut buckets = [0u32; 16];
        for p in 0..65536u32 {
            buckets[(flow_hash(&key(p as u16), 0, 0x5eed) % 16) as usize] += 1;
        }
        for b in buckets {
            assert!((3800..4400).contains(&b), "{buckets:?}");
        }
    }
}
