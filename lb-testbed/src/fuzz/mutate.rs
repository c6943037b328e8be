//! Structured mutations of valid frames: each breaks (or stretches) one
//! thing a parser must get right, leaving the rest valid so the frame
//! gets that far: truncation at any offset, IP and L4 lengths, IHL, IPv4
//! options, IPv6 extension header chains (long, looping, running past the
//! frame), fragments, every TCP flag combination, VLAN and QinQ tags, ICMP
//! errors quoting the frame, checksums, addresses, stray bits.

// Every mutation has the same signature (`Mutation`); some grow the frame.
#![allow(clippy::ptr_arg)]

use std::net::IpAddr;

use rand::{Rng, seq::IndexedRandom};

use super::{
    config::SERVICES,
    generate::Gen,
    wire::{
        ETH_IP4, ETH_IP6, ETH_QINQ, ETH_VLAN, ICMP, ICMP6, TCP, UDP, addr, addr_bytes, be16,
        ext_len, fix_ip4_sum, fix_l4_sum, l2, set16,
    },
};

/// Largest frame built (BPF_PROG_TEST_RUN takes about 3.5 kB).
pub const MAX_FRAME: usize = 3000;

/// Where the headers of a (possibly already mutated) frame are.
#[derive(Clone, Copy, Debug)]
struct Layout {
    l3: usize,
    v4: bool,
    /// The L4 header and its protocol, if the walk got there.
    l4: Option<(usize, u8)>,
}

fn layout(f: &[u8]) -> Option<Layout> {
    let (et, l3) = l2(f)?;
    let v4 = match et {
        ETH_IP4 => true,
        ETH_IP6 => false,
        _ => return None,
    };
    let l4 = if v4 {
        let ihl = (*f.get(l3)? & 0xf) as usize * 4;
        (ihl >= 20 && f.len() >= l3 + 20).then(|| (l3 + ihl, f[l3 + 9]))
    } else {
        let (mut next, mut at) = (*f.get(l3 + 6)?, l3 + 40);
        let mut n = 0;
        while let Some(len) = f.get(at + 1).and_then(|b| ext_len(next, *b)) {
            next = f[at];
            at += len;
            n += 1;
            if n > 64 {
                break;
            }
        }
        Some((at, next))
    };
    Some(Layout {
        l3,
        v4,
        l4: l4.filter(|(at, _)| *at <= f.len()),
    })
}

type Mutation = fn(&mut Gen, &mut Vec<u8>) -> Option<()>;

/// The mutations, by name: each returns `None` when the frame has nothing
/// for it (then another is tried).
const MUTATIONS: &[(&str, Mutation)] = &[
    ("truncate", truncate),
    ("ip_length", ip_length),
    ("l4_length", l4_length),
    ("ihl", ihl),
    ("ipv4_options", ipv4_options),
    ("ipv6_ext_chain", ipv6_ext_chain),
    ("fragment", fragment),
    ("tcp_flags", tcp_flags),
    ("vlan", vlan),
    ("icmp_error_quoting", icmp_quoting),
    ("checksum", bad_checksum),
    ("bit_flip", bit_flip),
    ("header_byte", header_byte),
    ("padding", padding),
    ("readdress", readdress),
    ("ethertype", ethertype),
    ("grow", grow),
];

/// Applies 1 to 3 mutations (drawn by `g`), returns their names.
pub fn mutate(g: &mut Gen, f: &mut Vec<u8>) -> Vec<&'static str> {
    let n = match g.rng.random_range(0..10) {
        0..6 => 1,
        6..9 => 2,
        _ => 3,
    };
    let mut done = Vec::new();
    let mut tries = 0;
    while done.len() < n && tries < 12 {
        tries += 1;
        let (name, m) = MUTATIONS.choose(&mut g.rng).unwrap();
        let mut next = f.clone();
        if m(g, &mut next).is_some() && next.len() >= 14 && next.len() <= MAX_FRAME {
            *f = next;
            done.push(*name);
        }
    }
    done
}

fn truncate(g: &mut Gen, f: &mut Vec<u8>) -> Option<()> {
    if f.len() <= 14 {
        return None;
    }
    // Cuts inside the headers are the interesting ones: favour them.
    let top = if g.rng.random_bool(0.8) {
        f.len().min(14 + 100)
    } else {
        f.len()
    };
    let at = g.rng.random_range(14..top);
    f.truncate(at);
    Some(())
}

/// A wrong IPv4 total length or IPv6 payload length.
fn ip_length(g: &mut Gen, f: &mut Vec<u8>) -> Option<()> {
    let lay = layout(f)?;
    let at = lay.l3 + if lay.v4 { 2 } else { 4 };
    let old = be16(f, at)?;
    let new = if g.rng.random_bool(0.5) {
        g.rng.random()
    } else {
        old.wrapping_add(g.rng.random_range(1..64)).wrapping_sub(32)
    };
    set16(f, at, new);
    if lay.v4 && g.rng.random_bool(0.7) {
        fix_ip4_sum(f, lay.l3);
    }
    Some(())
}

/// A wrong UDP length or TCP data offset.
fn l4_length(g: &mut Gen, f: &mut Vec<u8>) -> Option<()> {
    let lay = layout(f)?;
    let (l4, proto) = lay.l4?;
    match proto {
        UDP if f.len() >= l4 + 8 => set16(f, l4 + 4, g.rng.random_range(0..2000)),
        TCP if f.len() >= l4 + 20 => {
            f[l4 + 12] = (g.rng.random_range(0..16u8) << 4) | (f[l4 + 12] & 0xf)
        }
        _ => return None,
    }
    if g.rng.random_bool(0.5) {
        fix_l4_sum(f, lay.l3, l4, proto);
    }
    Some(())
}

/// Any IHL, 0 to 15 (the header not grown to match).
fn ihl(g: &mut Gen, f: &mut Vec<u8>) -> Option<()> {
    let lay = layout(f)?;
    if !lay.v4 {
        return None;
    }
    let b = f.get_mut(lay.l3)?;
    *b = (*b & 0xf0) | g.rng.random_range(0..16u8);
    if g.rng.random_bool(0.5) {
        fix_ip4_sum(f, lay.l3);
    }
    Some(())
}

/// IPv4 options inserted (IHL, length and checksum made right): NOPs and
/// end of list, record route, timestamp, router alert, or random bytes.
fn ipv4_options(g: &mut Gen, f: &mut Vec<u8>) -> Option<()> {
    let lay = layout(f)?;
    let ihl = (*f.get(lay.l3)? & 0xf) as usize;
    if !lay.v4 || !(5..15).contains(&ihl) || f.len() < lay.l3 + ihl * 4 {
        return None;
    }
    let room = (15 - ihl) * 4;
    let mut opts = match g.rng.random_range(0..5) {
        0 => vec![1, 1, 1, 0],
        1 => {
            let n = g.rng.random_range(1..=9usize).min((room - 3) / 4).max(1);
            let mut o = vec![7, (3 + 4 * n) as u8, 4];
            o.resize(3 + 4 * n, 0);
            o
        }
        2 => vec![68, 12, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        3 => vec![148, 4, 0, 0],
        _ => {
            let mut o = vec![0u8; g.rng.random_range(1..=room)];
            g.rng.fill(&mut o[..]);
            o
        }
    };
    opts.truncate(room);
    while opts.len() % 4 != 0 {
        opts.push(0);
    }
    let at = lay.l3 + ihl * 4;
    f.splice(at..at, opts.iter().copied());
    f[lay.l3] = (f[lay.l3] & 0xf0) | (ihl + opts.len() / 4) as u8;
    let tot = be16(f, lay.l3 + 2)?;
    set16(f, lay.l3 + 2, tot.wrapping_add(opts.len() as u16));
    fix_ip4_sum(f, lay.l3);
    Some(())
}

/// A chain of IPv6 extension headers inserted after the fixed header,
/// lengths right: short (1-3), long (5-12: past the program's 4), looping
/// (the same type over and over), or with a length running past the
/// frame.
fn ipv6_ext_chain(g: &mut Gen, f: &mut Vec<u8>) -> Option<()> {
    let lay = layout(f)?;
    if lay.v4 || f.len() < lay.l3 + 40 {
        return None;
    }
    let style = g.rng.random_range(0..10);
    let n = match style {
        0..6 => g.rng.random_range(1..=3),
        6..8 => g.rng.random_range(4..=12),
        _ => g.rng.random_range(6..=20),
    };
    let looping = style >= 8;
    let first = *[0u8, 43, 60, 51].choose(&mut g.rng).unwrap();
    let mut types = Vec::new();
    for _ in 0..n {
        let t = if looping {
            first
        } else {
            *[0u8, 43, 60, 51, 60, 44].choose(&mut g.rng).unwrap()
        };
        types.push(t);
    }
    let mut chain = Vec::new();
    let mut next_of_ip = f[lay.l3 + 6];
    for (i, &t) in types.iter().enumerate() {
        let next = types.get(i + 1).copied().unwrap_or(next_of_ip);
        let mut h = match t {
            44 => {
                // Fragment: offset 0 and M set, or a later fragment.
                let off: u16 = if g.rng.random_bool(0.5) {
                    1
                } else {
                    g.rng.random_range(1..8000) << 3
                };
                let mut h = vec![next, 0];
                h.extend_from_slice(&off.to_be_bytes());
                h.extend_from_slice(&g.rng.random::<u32>().to_be_bytes());
                h
            }
            51 => {
                let units = g.rng.random_range(1..4usize); // (len + 2) * 4, a multiple of 8
                let len = units * 2;
                let mut h = vec![0u8; (len + 2) * 4];
                g.rng.fill(&mut h[2..]);
                h[0] = next;
                h[1] = len as u8;
                h
            }
            _ => {
                let len = if looping {
                    0
                } else {
                    g.rng.random_range(0..3usize)
                };
                let mut h = vec![0u8; (len + 1) * 8];
                // Padding options (PadN) are valid; random is fine too.
                if g.rng.random_bool(0.5) {
                    g.rng.fill(&mut h[2..]);
                } else if t != 43 {
                    h[2] = 1;
                    h[3] = (h.len() - 4) as u8;
                }
                h[0] = next;
                h[1] = len as u8;
                h
            }
        };
        if i == types.len() - 1 && g.rng.random_bool(0.1) {
            h[1] = 0xff; // runs past the frame
        }
        chain.extend_from_slice(&h);
    }
    next_of_ip = types[0];
    let at = lay.l3 + 40;
    f.splice(at..at, chain.iter().copied());
    f[lay.l3 + 6] = next_of_ip;
    let pl = be16(f, lay.l3 + 4)?;
    set16(f, lay.l3 + 4, pl.wrapping_add(chain.len() as u16));
    Some(())
}

/// An IPv4 fragment (first, later, or both flags), or an IPv6 fragment
/// header.
fn fragment(g: &mut Gen, f: &mut Vec<u8>) -> Option<()> {
    let lay = layout(f)?;
    if lay.v4 {
        let v = match g.rng.random_range(0..3) {
            0 => 0x2000,
            1 => g.rng.random_range(1..0x2000),
            _ => 0x2000 | g.rng.random_range(1..0x2000),
        } | (be16(f, lay.l3 + 6)? & 0x4000);
        set16(f, lay.l3 + 6, v);
        fix_ip4_sum(f, lay.l3);
        return Some(());
    }
    if f.len() < lay.l3 + 40 {
        return None;
    }
    let next = f[lay.l3 + 6];
    let off: u16 = match g.rng.random_range(0..3) {
        0 => 1,
        1 => g.rng.random_range(1..8000) << 3,
        _ => 0,
    };
    let mut h = vec![next, 0];
    h.extend_from_slice(&off.to_be_bytes());
    h.extend_from_slice(&g.rng.random::<u32>().to_be_bytes());
    let at = lay.l3 + 40;
    f.splice(at..at, h);
    f[lay.l3 + 6] = 44;
    let pl = be16(f, lay.l3 + 4)?;
    set16(f, lay.l3 + 4, pl.wrapping_add(8));
    Some(())
}

/// Any combination of the TCP flags (and the reserved bits).
fn tcp_flags(g: &mut Gen, f: &mut Vec<u8>) -> Option<()> {
    let lay = layout(f)?;
    let (l4, proto) = lay.l4?;
    if proto != TCP || f.len() < l4 + 20 {
        return None;
    }
    f[l4 + 13] = g.rng.random();
    if g.rng.random_bool(0.2) {
        f[l4 + 12] = (f[l4 + 12] & 0xf0) | g.rng.random_range(0..16u8);
    }
    if g.rng.random_bool(0.8) {
        fix_l4_sum(f, lay.l3, l4, proto);
    }
    Some(())
}

/// A VLAN tag (802.1Q), two (QinQ with 802.1ad or two 802.1Q), or a tag
/// naming another EtherType than what follows.
fn vlan(g: &mut Gen, f: &mut Vec<u8>) -> Option<()> {
    let vid: u16 = g.rng.random_range(0..4096);
    let tag = |tpid: u16, vid: u16| [tpid.to_be_bytes(), vid.to_be_bytes()].concat();
    let ins = match g.rng.random_range(0..10) {
        0..6 => tag(ETH_VLAN, vid),
        6..8 => [tag(ETH_QINQ, vid), tag(ETH_VLAN, vid ^ 1)].concat(),
        8 => [tag(ETH_VLAN, vid), tag(ETH_VLAN, vid ^ 1)].concat(),
        _ => {
            // The tag's own EtherType swapped for another family's.
            let mut t = tag(ETH_VLAN, vid);
            let et = be16(f, 12)?;
            let other = if et == ETH_IP4 { ETH_IP6 } else { ETH_IP4 };
            f[12..14].copy_from_slice(&other.to_be_bytes());
            t.truncate(4);
            t
        }
    };
    f.splice(12..12, ins);
    Some(())
}

/// The frame's IP packet, its direction reversed (as if the balancer's
/// VIP had sent it), quoted in an ICMP error to its (new) source: the
/// error path with whatever the mutations left in the quote.
fn icmp_quoting(g: &mut Gen, f: &mut Vec<u8>) -> Option<()> {
    let lay = layout(f)?;
    let mut ip = f[lay.l3..].to_vec();
    let v4 = lay.v4;
    let (sa, da, n) = if v4 { (12, 16, 4) } else { (8, 24, 16) };
    if ip.len() < da + n {
        return None;
    }
    let (src, dst) = (ip[sa..sa + n].to_vec(), ip[da..da + n].to_vec());
    if g.rng.random_bool(0.8) {
        ip[sa..sa + n].copy_from_slice(&dst);
        ip[da..da + n].copy_from_slice(&src);
        if let Some((l4, TCP | UDP)) = lay.l4 {
            let at = l4 - lay.l3;
            if ip.len() >= at + 4 {
                let (a, b) = (ip[at..at + 2].to_vec(), ip[at + 2..at + 4].to_vec());
                ip[at..at + 2].copy_from_slice(&b);
                ip[at + 2..at + 4].copy_from_slice(&a);
            }
        }
    }
    let to = addr(&ip, sa, v4)?;
    let from: IpAddr = if v4 {
        "198.18.0.254".parse().unwrap()
    } else {
        "2001:db8::fe".parse().unwrap()
    };
    let q = g.quote(&ip);
    let e = g.icmp_error_about(from, to, &q);
    // Keep the frame's tags (if any) in front.
    let mut out = f[..lay.l3 - 2].to_vec();
    out.extend_from_slice(&e[12..]);
    *f = out;
    Some(())
}

/// A wrong IPv4 header checksum, a wrong L4 checksum, or a UDP checksum
/// of 0 (none: valid for IPv4, not for IPv6).
fn bad_checksum(g: &mut Gen, f: &mut Vec<u8>) -> Option<()> {
    let lay = layout(f)?;
    match g.rng.random_range(0..3) {
        0 if lay.v4 && f.len() >= lay.l3 + 12 => f[lay.l3 + 10] ^= g.rng.random_range(1..=255),
        1 => {
            let (l4, proto) = lay.l4?;
            let at = l4
                + match proto {
                    TCP => 16,
                    UDP => 6,
                    ICMP | ICMP6 => 2,
                    _ => return None,
                };
            *f.get_mut(at)? ^= g.rng.random_range(1..=255);
        }
        _ => {
            let (l4, proto) = lay.l4?;
            if proto != UDP || f.len() < l4 + 8 {
                return None;
            }
            set16(f, l4 + 6, 0);
        }
    }
    Some(())
}

fn bit_flip(g: &mut Gen, f: &mut Vec<u8>) -> Option<()> {
    for _ in 0..g.rng.random_range(1..=4) {
        let at = g.rng.random_range(12..f.len().max(13));
        if let Some(b) = f.get_mut(at) {
            *b ^= 1 << g.rng.random_range(0..8);
        }
    }
    Some(())
}

/// One byte of the network or transport header set to anything.
fn header_byte(g: &mut Gen, f: &mut Vec<u8>) -> Option<()> {
    let lay = layout(f)?;
    let end = lay.l4.map_or(lay.l3 + 40, |(l4, _)| l4 + 20).min(f.len());
    if end <= lay.l3 {
        return None;
    }
    let at = g.rng.random_range(lay.l3..end);
    f[at] = g.rng.random();
    Some(())
}

/// Bytes after the IP packet (Ethernet padding, or garbage).
fn padding(g: &mut Gen, f: &mut Vec<u8>) -> Option<()> {
    let n = g.rng.random_range(1..64);
    let zero = g.rng.random_bool(0.5);
    for _ in 0..n {
        let b = if zero { 0 } else { g.rng.random() };
        f.push(b);
    }
    Some(())
}

/// Another destination (another VIP, a SNAT or LB address, broadcast,
/// multicast) or source (a VIP, multicast), or other ports; checksums
/// made right.
fn readdress(g: &mut Gen, f: &mut Vec<u8>) -> Option<()> {
    let lay = layout(f)?;
    let v4 = lay.v4;
    let (sa, da) = if v4 { (12, 16) } else { (8, 24) };
    let pick: Vec<IpAddr> = SERVICES
        .iter()
        .map(|s| s.vip())
        .chain(
            [
                "198.18.1.1",
                "198.18.0.1",
                "255.255.255.255",
                "224.0.0.1",
                "0.0.0.0",
                "2001:db8:1::1",
                "2001:db8::1",
                "ff02::1",
                "::",
            ]
            .map(|a| a.parse().unwrap()),
        )
        .filter(|a: &IpAddr| a.is_ipv4() == v4)
        .collect();
    let a = addr_bytes(*pick.choose(&mut g.rng).unwrap());
    match g.rng.random_range(0..4) {
        0 | 1 => {
            let at = lay.l3 + da;
            f.get_mut(at..at + a.len())?.copy_from_slice(&a);
        }
        2 => {
            let at = lay.l3 + sa;
            f.get_mut(at..at + a.len())?.copy_from_slice(&a);
        }
        _ => {
            let (l4, proto) = lay.l4?;
            if proto != TCP && proto != UDP {
                return None;
            }
            let ports: [u8; 4] = g.rng.random();
            f.get_mut(l4..l4 + 4)?.copy_from_slice(&ports);
        }
    }
    if v4 {
        fix_ip4_sum(f, lay.l3);
    }
    if let Some((l4, proto)) = lay.l4 {
        fix_l4_sum(f, lay.l3, l4, proto);
    }
    Some(())
}

/// Another EtherType: the other IP family's (a version mismatch), ARP,
/// or anything.
fn ethertype(g: &mut Gen, f: &mut Vec<u8>) -> Option<()> {
    let (et, l3) = l2(f)?;
    let new = match g.rng.random_range(0..3) {
        0 if et == ETH_IP4 => ETH_IP6,
        0 => ETH_IP4,
        1 => 0x0806,
        _ => g.rng.random(),
    };
    set16(f, l3 - 2, new);
    Some(())
}

/// More payload, lengths and checksums right (up to past the MTU).
fn grow(g: &mut Gen, f: &mut Vec<u8>) -> Option<()> {
    let lay = layout(f)?;
    let (l4, proto) = lay.l4?;
    let n = g
        .rng
        .random_range(1..1600)
        .min(MAX_FRAME.saturating_sub(f.len()));
    for _ in 0..n {
        let b = g.rng.random();
        f.push(b);
    }
    let at = lay.l3 + if lay.v4 { 2 } else { 4 };
    let len = be16(f, at)?;
    set16(f, at, len.wrapping_add(n as u16));
    if proto == UDP && f.len() >= l4 + 8 {
        let ul = be16(f, l4 + 4)?;
        set16(f, l4 + 4, ul.wrapping_add(n as u16));
    }
    if lay.v4 {
        fix_ip4_sum(f, lay.l3);
    }
    fix_l4_sum(f, lay.l3, l4, proto);
    Some(())
}
