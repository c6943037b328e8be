//! Weighted Maglev lookup table (Eisenbud et al., NSDI 2016), built in pure
//! Rust and copied into a service's ring slot by the data-plane sync.
//!
//! Each backend walks its own permutation of the table (offset, skip) and
//! claims the next free entry of it when its turn comes. Turns follow
//! Katran's maglev v2: every round each backend gains credit equal to its
//! weight and takes a turn when its credit reaches the largest weight, so
//! shares are proportional to weight.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::IpAddr;

use lb_common::NO_BACKEND;
use lb_common::hash::hash_words;

/// One backend as the table sees it: identity (address, port) and weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevBackend {
    pub addr: IpAddr,
    pub port: u16,
    pub weight: u32,
}

// Seed tweaks so that offset and skip come from independent hashes.
const OFFSET_SEED: u32 = 0x6d61_676c; // "magl"
const SKIP_SEED: u32 = 0x736b_6970; // "skip"
/// Up to this many backends, whose turn it is comes from a scan, not a heap.
const SCAN_BACKENDS: usize = 8;

/// The backend's identity as words, in network byte order so the table is
/// the same on every machine (never a process- or build-dependent hasher).
fn words(b: &MaglevBackend) -> [u32; 6] {
    let (family, a) = match b.addr {
        IpAddr::V4(v4) => (4, [u32::from_be_bytes(v4.octets()), 0, 0, 0]),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            (6, [w(0), w(4), w(8), w(12)])
        }
    };
    [family, a[0], a[1], a[2], a[3], b.port as u32]
}

/// Returns a table of `m` entries (`m` should be prime); each entry is an
/// index into `backends`, or `NO_BACKEND` for every entry when no backend
/// has weight > 0. The result does not depend on the order of `backends`.
pub fn build_table(backends: &[MaglevBackend], m: u32, seed: u32) -> Vec<u32> {
    let mut table = vec![NO_BACKEND; m as usize];
    // Sorted by identity so that input order cannot change the table.
    let mut order: Vec<u32> = (0..backends.len() as u32)
        .filter(|&i| backends[i as usize].weight > 0)
        .collect();
    if order.is_empty() || m == 0 {
        return table;
    }
    order.sort_by_key(|&i| {
        let b = &backends[i as usize];
        (b.addr, b.port, b.weight, i)
    });
    let m64 = m as u64;

    // Position of each backend in its permutation: current entry and skip.
    let mut cur = Vec::with_capacity(order.len());
    let mut skip = Vec::with_capacity(order.len());
    for &i in &order {
        let w = words(&backends[i as usize]);
        cur.push(hash_words(&w, seed ^ OFFSET_SEED) as u64 % m64);
        skip.push(if m > 1 {
            hash_words(&w, seed ^ SKIP_SEED) as u64 % (m64 - 1) + 1
        } else {
            0
        });
    }
    let mut probes = vec![0u64; order.len()];

    // Turn order. With max weight W, backend j (weight w) takes its k-th turn
    // (k from 0) in round ceil((k + 1) * W / w) - 1: exactly Katran's credit
    // loop, but a heap of (round, j) makes it O(m log n) however skewed the
    // weights are, instead of O(rounds * n).
    let max_w = order
        .iter()
        .map(|&i| backends[i as usize].weight)
        .max()
        .unwrap_or(1) as u64;
    let n = order.len();
    let mut rounds: Vec<Round> = order
        .iter()
        .map(|&i| Round::new(max_w, backends[i as usize].weight as u64))
        .collect();
    // Equal weights take turns in order: the heap would give the same. So
    // does a scan for the earliest (round, j), cheaper for a few backends.
    let equal = order
        .iter()
        .all(|&i| backends[i as usize].weight as u64 == max_w);
    let scan = n <= SCAN_BACKENDS;
    let mut heap: BinaryHeap<Reverse<(u64, u32)>> = if scan {
        BinaryHeap::new()
    } else {
        (0..n)
            .map(|j| Reverse((rounds[j].round(), j as u32)))
            .collect()
    };
    // Which entries are taken: probes read this (8 KiB at m = 65537, in
    // the L1 cache) rather than the table (four times the size).
    let mut taken = vec![0u64; (m as usize).div_ceil(64)];
    let is_taken = |taken: &[u64], e: u64| taken[(e >> 6) as usize] >> (e & 63) & 1 != 0;

    for entry in 0..m as usize {
        let j = if equal {
            entry % n
        } else if scan {
            // The first of the earliest: the lowest j, as in the heap.
            (0..n).min_by_key(|&j| rounds[j].round()).expect("n > 0")
        } else {
            let Reverse((_, j)) = heap.pop().expect("heap holds every backend");
            j as usize
        };
        // Next free entry of j's permutation. With m prime the permutation
        // visits every entry within m probes; past that (m not prime) fall
        // back to a linear scan so a bad m can never loop forever.
        while is_taken(&taken, cur[j]) {
            if probes[j] < m64 {
                probes[j] += 1;
                cur[j] += skip[j];
                if cur[j] >= m64 {
                    cur[j] -= m64;
                }
            } else {
                cur[j] = (cur[j] + 1) % m64;
            }
        }
        let e = cur[j];
        taken[(e >> 6) as usize] |= 1 << (e & 63);
        table[e as usize] = order[j];
        if !equal {
            rounds[j].next();
            if !scan {
                heap.push(Reverse((rounds[j].round(), j as u32)));
            }
        }
    }
    table
}

/// The round of a backend's next turn, ceil((k + 1) * W / w) - 1 for its
/// k-th, kept without a division a turn: with a = (k + 1) * W written
/// c * w - s (0 <= s < w), each turn adds W = q * w + r to a.
struct Round {
    c: u64,
    s: u64,
    q: u64,
    r: u64,
    w: u64,
}

impl Round {
    /// Max weight `max_w`, its own `w` (> 0); at its first turn.
    fn new(max_w: u64, w: u64) -> Round {
        let c = max_w.div_ceil(w);
        Round {
            c,
            s: c * w - max_w,
            q: max_w / w,
            r: max_w % w,
            w,
        }
    }

    fn round(&self) -> u64 {
        self.c - 1
    }

    fn next(&mut self) {
        if self.r > self.s {
            self.c += self.q + 1;
            self.s = self.w - (self.r - self.s);
        } else {
            self.c += self.q;
            self.s -= self.r;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const M: u32 = 65537;
    const SEED: u32 = 0x5eed;

    fn backend(i: u32, weight: u32) -> MaglevBackend {
        MaglevBackend {
            addr: IpAddr::V4(Ipv4Addr::new(
                198,
                18,
                1 + (i / 250) as u8,
                (i % 250) as u8 + 1,
            )),
            port: 8080,
            weight,
        }
    }

    fn counts(table: &[u32], n: usize) -> Vec<u32> {
        let mut c = vec![0u32; n];
        for &e in table {
            c[e as usize] += 1;
        }
        c
    }

    /// Asserts every backend's share is within `tol` (relative) of its
    /// weight's share; returns the worst relative error.
    fn check_shares(weights: &[u32], tol: f64) -> f64 {
        let bs: Vec<_> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| backend(i as u32, w))
            .collect();
        let total: u64 = weights.iter().map(|&w| w as u64).sum();
        let c = counts(&build_table(&bs, M, SEED), bs.len());
        let mut worst = 0f64;
        for (i, &w) in weights.iter().enumerate() {
            let expect = M as f64 * w as f64 / total as f64;
            let err = (c[i] as f64 - expect).abs() / expect;
            assert!(
                err <= tol,
                "backend {i} weight {w}: {} entries, expected {expect:.1}",
                c[i]
            );
            worst = worst.max(err);
        }
        worst
    }

    #[test]
    fn equal_weights_balance_within_1_percent() {
        for n in [3, 10, 100] {
            let worst = check_shares(&vec![100; n], 0.01);
            let c = counts(
                &build_table(
                    &(0..n as u32).map(|i| backend(i, 100)).collect::<Vec<_>>(),
                    M,
                    SEED,
                ),
                n,
            );
            println!(
                "equal weights n={n} m={M}: entries per backend {}..={} (ideal {:.2}), worst relative error {:.4}%",
                c.iter().min().unwrap(),
                c.iter().max().unwrap(),
                M as f64 / n as f64,
                worst * 100.0
            );
        }
    }

    #[test]
    fn shares_proportional_to_weight_within_2_percent() {
        // Each share is >= ~100 entries, so +-1 entry of rounding stays under 1%.
        let mixes: [&[u32]; 3] = [
            &[100, 200, 300, 400],
            &[1, 2, 3, 5, 8, 13, 21],
            &[65535, 5000, 1000, 1000],
        ];
        for w in mixes {
            let worst = check_shares(w, 0.02);
            println!("weights {w:?}: worst relative error {:.4}%", worst * 100.0);
        }
    }

    #[test]
    fn weight_zero_gets_nothing() {
        let bs = [backend(0, 100), backend(1, 0), backend(2, 100)];
        let c = counts(&build_table(&bs, M, SEED), 3);
        assert_eq!(c[1], 0);
        assert_eq!(c[0] + c[2], M);
    }

    /// Fraction of the table that moved between surviving backends when one
    /// of `n` is removed (entries of the removed backend must move, so they
    /// are not counted).
    fn disruption(n: u32, removed: u32) -> f64 {
        let all: Vec<_> = (0..n).map(|i| backend(i, 100)).collect();
        let rest: Vec<_> = all
            .iter()
            .copied()
            .filter(|b| *b != all[removed as usize])
            .collect();
        let before = build_table(&all, M, SEED);
        let after = build_table(&rest, M, SEED);
        let moved = before
            .iter()
            .zip(&after)
            .filter(|&(&b, &a)| b != removed && all[b as usize] != rest[a as usize])
            .count();
        moved as f64 / M as f64
    }

    #[test]
    fn removing_a_backend_moves_few_other_entries() {
        for (n, bound) in [(10, 0.02), (100, 0.02)] {
            let worst = (0..n)
                .step_by((n / 10) as usize)
                .map(|r| disruption(n, r))
                .fold(0f64, f64::max);
            println!(
                "remove 1 of {n}: worst {:.3}% of m moved between survivors (removed backend owned {:.2}%)",
                worst * 100.0,
                100.0 / n as f64
            );
            assert!(worst <= bound, "n={n}: {worst}");
        }
    }

    #[test]
    fn deterministic_order_independent_and_seeded() {
        let bs: Vec<_> = (0..50).map(|i| backend(i, 50 + i)).collect();
        let t = build_table(&bs, M, SEED);
        assert_eq!(t, build_table(&bs, M, SEED));

        // Reversed input: same owners, indices into the reversed slice.
        let rev: Vec<_> = bs.iter().rev().copied().collect();
        let t_rev = build_table(&rev, M, SEED);
        assert!(
            t.iter()
                .zip(&t_rev)
                .all(|(&a, &b)| bs[a as usize] == rev[b as usize])
        );

        let other = build_table(&bs, M, SEED + 1);
        let same = t.iter().zip(&other).filter(|(a, b)| a == b).count();
        assert!(
            same < M as usize / 10,
            "{same} entries equal with another seed"
        );
    }

    #[test]
    fn no_usable_backend_gives_no_backend_everywhere() {
        assert_eq!(build_table(&[], 7, SEED), vec![NO_BACKEND; 7]);
        let zero = [backend(0, 0), backend(1, 0)];
        assert!(build_table(&zero, M, SEED).iter().all(|&e| e == NO_BACKEND));
    }

    #[test]
    fn small_odd_sizes_terminate_and_fill() {
        let v6 = MaglevBackend {
            addr: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            port: 80,
            weight: 1,
        };
        for m in [1, 2, 9, 100] {
            // m = 9 and 100 are not prime: the linear fallback still fills them.
            let t = build_table(&[backend(0, 3), v6, backend(1, 2)], m, SEED);
            assert!(t.iter().all(|&e| e < 3), "m={m}: {t:?}");
        }
    }

    /// Build time, printed only (timings are benchmarks, never asserted);
    /// run with `--release -- --nocapture` for the real figure.
    #[test]
    fn build_time_1000_backends() {
        let bs: Vec<_> = (0..1000).map(|i| backend(i, 100)).collect();
        let skewed: Vec<_> = (0..1000)
            .map(|i| backend(i, if i == 0 { 65535 } else { 1 }))
            .collect();
        for (name, bs) in [("equal weights", bs), ("one 65535, rest 1", skewed)] {
            let start = std::time::Instant::now();
            let t = build_table(&bs, M, SEED);
            println!(
                "build 1000 backends ({name}), m={M}: {:?} ({})",
                start.elapsed(),
                if cfg!(debug_assertions) {
                    "debug"
                } else {
                    "release"
                }
            );
            assert!(t.iter().all(|&e| e < 1000));
        }
    }
}
