//! Every verdict checked. PASS: the model says why, and the frame is
//! untouched. DROP: a drop counter grew, one the configuration allows for
//! that packet. TX/REDIRECT: the output is exactly the input with the
//! mode's rewrite applied (addresses, ports, MACs, outer headers) toward
//! a backend of the service's ring (or the client, for replies; or the
//! sender, for answers the program makes itself); every checksum is
//! recomputed in full, and the output has no defect the input did not
//! have. XDP_ABORTED, or any other value, is a failure.

use std::net::IpAddr;

use lb_common::{
    FAMILY_V4, FAMILY_V6, Flow, FlowKey, HASH_FIVE_TUPLE, NatRev, STAT_FLOW_INSERT_FAIL,
    hash::flow_hash, tunnel_flow_label, words_addr,
};

use super::{
    config::{GUE_PORT, Mode},
    maps::slot_name,
    model,
    model::{Expect, Msg, PassReason, Pkt, key_addr},
    wire::{
        Defects, ETH_IP4, ETH_IP6, ICMP, ICMP6, IP6IP, IPIP, TCP, UDP, addr_bytes, be16, defects,
    },
    world::{World, odd_source, route_reasons},
};
use crate::{
    XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX,
    fib_net::{CLIENT_MAC, LBB_MAC, LBC_MAC, backend_mac},
};

/// What a frame turned out to be (for the report's tallies).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Pass(PassReason),
    /// Forwarded: nat, dsr, tunnel, reply, echo, icmp error, answer.
    Sent(&'static str),
    Dropped(u32),
}

/// A checked frame: its outcome, the defects it arrived with and was sent
/// on with, and (tunnel) the frame the decapsulator should turn the output
/// into.
pub struct Checked {
    pub outcome: Outcome,
    pub inherited: Defects,
    pub round_trip: Option<Vec<u8>>,
}

/// A check that failed: its class (to tell one failure from another when
/// a reproducer is replayed) and what was seen.
#[derive(Debug, Clone)]
pub struct Failure {
    pub class: &'static str,
    pub detail: String,
}

fn fail<T>(class: &'static str, detail: impl Into<String>) -> Result<T, Failure> {
    Err(Failure {
        class,
        detail: detail.into(),
    })
}

/// The program's state the expectation depends on, read before the run:
/// the NAT entry of a reply, the flow an ICMP error is about.
#[derive(Clone, Copy, Debug)]
pub enum Before {
    None,
    Rev(Option<NatRev>),
    Flow(Option<Flow>),
    /// Flow sync: the live peer that owns the packet's flow (this node has
    /// none): the packet goes there.
    Owner(IpAddr),
}

/// One run of the balancer.
pub struct Run<'a> {
    pub w: &'a World,
    pub input: &'a [u8],
    pub expect: Expect,
    pub before: Before,
    pub verdict: u32,
    pub output: &'a [u8],
    /// Counter slots that grew during the run (read after a DROP or an
    /// answer only; empty otherwise).
    pub grown: &'a [u32],
    /// The flow entry of the packet's key after the run (balanced packets
    /// sent on).
    pub flow_after: Option<Flow>,
}

pub fn check(r: &Run) -> Result<Checked, Failure> {
    let v = r.verdict;
    if v == 0 {
        return fail("aborted", "XDP_ABORTED");
    }
    if ![XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT].contains(&v) {
        return fail("bad_verdict", format!("unknown verdict {v}"));
    }
    // The expectation, with the state it depends on.
    let expect = match (r.expect, r.before) {
        (Expect::Reply { .. }, Before::Rev(None)) => Expect::Pass(PassReason::NoNatEntry),
        (Expect::IcmpError { .. }, Before::Flow(None)) => Expect::Pass(PassReason::IcmpNoFlow),
        (e, _) => e,
    };
    let plain = |outcome| {
        Ok(Checked {
            outcome,
            inherited: Defects::default(),
            round_trip: None,
        })
    };
    match (expect, v) {
        (Expect::Pass(reason), XDP_PASS) => {
            if r.output != r.input {
                return fail("pass_modified", "passed with bytes changed");
            }
            plain(Outcome::Pass(reason))
        }
        (Expect::Pass(reason), _) => fail(
            "unexpected_verdict",
            format!(
                "{} for a frame that should pass ({})",
                verdict_name(v),
                reason.name()
            ),
        ),
        (e, XDP_PASS) => fail(
            "unexplained_pass",
            format!(
                "PASS for a frame the program should handle: {}",
                describe(&e)
            ),
        ),
        (e, XDP_DROP) => {
            let allowed = drop_reasons(r, &e);
            match r.grown.iter().find(|s| allowed.contains(s) || **s >= 13) {
                Some(&slot) => plain(Outcome::Dropped(slot)),
                None => fail(
                    "unexplained_drop",
                    format!(
                        "DROP of {}: counters grown {:?}, expected one of {:?}",
                        describe(&e),
                        r.grown.iter().map(|s| slot_name(*s)).collect::<Vec<_>>(),
                        allowed.iter().map(|s| slot_name(*s)).collect::<Vec<_>>()
                    ),
                ),
            }
        }
        (Expect::Balance { svc, pkt }, _) => match r.before {
            Before::Owner(peer) => sent("to owner", macs_only(r, pkt.l3, pkt.v4, peer)?, None),
            _ => balanced(r, svc, &pkt),
        },
        (Expect::Reply { pkt }, _) => {
            let Before::Rev(Some(rev)) = r.before else {
                unreachable!("refined above")
            };
            nat_reply(r, &pkt, &rev)
        }
        (Expect::Echo { msg }, _) => echo(r, &msg),
        (
            Expect::IcmpError {
                svc,
                msg,
                flow: key,
            },
            _,
        ) => {
            let Before::Flow(Some(flow)) = r.before else {
                unreachable!("refined above")
            };
            icmp_error(r, svc, &msg, &key, &flow)
        }
    }
}

pub fn verdict_name(v: u32) -> &'static str {
    match v {
        0 => "ABORTED",
        XDP_DROP => "DROP",
        XDP_PASS => "PASS",
        XDP_TX => "TX",
        XDP_REDIRECT => "REDIRECT",
        _ => "UNKNOWN",
    }
}

fn describe(e: &Expect) -> String {
    match e {
        Expect::Pass(r) => format!("a frame to pass ({})", r.name()),
        Expect::Balance { svc, .. } => format!("a packet for service #{svc}"),
        Expect::Reply { .. } => "a backend's reply with a NAT entry".into(),
        Expect::Echo { .. } => "an echo request to a VIP with icmp_echo".into(),
        Expect::IcmpError { svc, .. } => format!("an ICMP error about a flow of service #{svc}"),
    }
}

/// The drop reasons the configuration allows for the packet.
fn drop_reasons(r: &Run, e: &Expect) -> Vec<u32> {
    match e {
        Expect::Balance { svc, pkt } => match r.before {
            Before::Owner(peer) => route_reasons(peer, pkt.ip_len as u32),
            _ => {
                let src = key_addr(pkt.key.src, pkt.key.family);
                r.w.drop_reasons(*svc, pkt.ip_len as u32, src)
            }
        },
        Expect::Reply { pkt } => match r.before {
            Before::Rev(Some(rev)) => {
                route_reasons(key_addr(rev.client, pkt.key.family), pkt.ip_len as u32)
            }
            _ => Vec::new(),
        },
        Expect::IcmpError { svc, msg, .. } => {
            let Before::Flow(Some(flow)) = r.before else {
                return Vec::new();
            };
            let Some(addr) = r.w.backend_addr(flow.backend) else {
                return Vec::new();
            };
            let (added, from_packet) = match r.w.services[*svc].mode {
                Mode::Ipip | Mode::Gue => (48, false),
                _ => (0, true),
            };
            let mut reasons = route_reasons(addr, msg.ip_len as u32 + added);
            if from_packet && odd_source(msg.src) {
                reasons.push(lb_common::STAT_FIB_FAIL);
            }
            reasons
        }
        _ => Vec::new(),
    }
}

/// MACs of a frame sent toward `addr` out of lbb (backends) or lbc.
fn macs_toward(addr: IpAddr) -> ([u8; 6], [u8; 6]) {
    let backend_side = match addr {
        IpAddr::V4(a) => a.octets()[..3] == [198, 18, 1],
        IpAddr::V6(a) => a.segments()[..4] == [0x2001, 0xdb8, 1, 0],
    };
    if backend_side {
        (backend_mac(addr), LBB_MAC)
    } else {
        (CLIENT_MAC, LBC_MAC)
    }
}

/// The output must be `expected` byte for byte, but for the checksum
/// fields in `skip` (offset, length), checked by recomputation instead.
fn same_but(out: &[u8], expected: &[u8], skip: &[(usize, usize)]) -> Result<(), Failure> {
    if out.len() != expected.len() {
        return fail(
            "wrong_output",
            format!("{} bytes out, {} expected", out.len(), expected.len()),
        );
    }
    let diff: Vec<usize> = (0..out.len())
        .filter(|&i| out[i] != expected[i])
        .filter(|&i| !skip.iter().any(|&(at, n)| (at..at + n).contains(&i)))
        .collect();
    if !diff.is_empty() {
        return fail(
            "wrong_output",
            format!(
                "output differs from the expected rewrite at bytes {:?}{}",
                &diff[..diff.len().min(16)],
                if diff.len() > 16 { " ..." } else { "" }
            ),
        );
    }
    Ok(())
}

/// The output's defects must be among the input's (at network offset
/// `l3` of both).
fn no_new_defects(
    input: &[u8],
    out: &[u8],
    l3: usize,
    v4: bool,
    what: &str,
) -> Result<Defects, Failure> {
    let (din, dout) = (defects(input, l3, v4), defects(out, l3, v4));
    if !dout.within(&din) {
        return fail(
            "malformed_output",
            format!(
                "{what}: the output has {:?}, the input had {:?}",
                dout.names(),
                din.names()
            ),
        );
    }
    Ok(dout)
}

fn write_addr(f: &mut [u8], at: usize, a: IpAddr) {
    let b = addr_bytes(a);
    f[at..at + b.len()].copy_from_slice(&b);
}

/// Offsets of the source and destination addresses in an IP header.
fn addr_offsets(v4: bool) -> (usize, usize) {
    if v4 { (12, 16) } else { (8, 24) }
}

/// A packet of service `svc` sent on: to a backend of its ring, rewritten
/// as its mode says; or an answer to its sender.
fn balanced(r: &Run, svc: usize, pkt: &Pkt) -> Result<Checked, Failure> {
    let s = &r.w.services[svc];
    if s.ring.is_empty() {
        return answer(r, pkt);
    }
    let Some(flow) = r.flow_after else {
        if r.grown.contains(&STAT_FLOW_INSERT_FAIL) {
            return fail("flow_insert_failed", "the flow table refused an insert");
        }
        return fail(
            "no_flow",
            "sent on to a backend but no flow entry holds the packet's key",
        );
    };
    if !s.ring.contains(&flow.backend) {
        return fail(
            "wrong_backend",
            format!(
                "flow points at backend {}, not in the ring of {}",
                flow.backend, s.name
            ),
        );
    }
    let (_, b) = r.w.backends[&flow.backend];
    let baddr = key_addr(b.addr, b.family);
    let port = if b.port == 0 { pkt.key.dport } else { b.port };
    if flow.backend_port != port {
        return fail("wrong_port", format!("flow {flow:?}: backend port"));
    }
    match s.mode {
        Mode::Nat => {
            let (lo, hi) = (r.w.globals.snat_port_min, r.w.globals.snat_port_max);
            if !(lo..=hi).contains(&u16::from_be(flow.snat_port)) {
                return fail("snat_port", format!("SNAT port {flow:?} outside {lo}-{hi}"));
            }
            let snat = r.w.snat_addr(pkt.v4);
            let d = rewritten(
                r,
                pkt,
                baddr,
                (snat, baddr),
                (flow.snat_port, flow.backend_port),
            )?;
            sent("nat", d, None)
        }
        Mode::Dsr => {
            let d = macs_only(r, pkt.l3, pkt.v4, baddr)?;
            sent("dsr", d, None)
        }
        Mode::Ipip | Mode::Gue => {
            let gue = s.mode == Mode::Gue;
            let (d, rt) = tunnel(r, pkt.l3, pkt.v4, pkt.ip_len, &pkt.key, baddr, gue)?;
            sent("tunnel", d, rt)
        }
    }
}

fn sent(kind: &'static str, inherited: Defects, rt: Option<Vec<u8>>) -> Result<Checked, Failure> {
    Ok(Checked {
        outcome: Outcome::Sent(kind),
        inherited,
        round_trip: rt,
    })
}

fn redirect_toward(r: &Run, to: IpAddr) -> Result<(), Failure> {
    if r.verdict != XDP_REDIRECT {
        return fail(
            "wrong_verdict",
            format!("{} toward {to}: REDIRECT expected", verdict_name(r.verdict)),
        );
    }
    Ok(())
}

/// nat, both ways: addresses and ports replaced, MACs toward `to`,
/// everything else as it came, checksums valid whenever they were.
fn rewritten(
    r: &Run,
    pkt: &Pkt,
    to: IpAddr,
    (src, dst): (IpAddr, IpAddr),
    (sport, dport): (u16, u16),
) -> Result<Defects, Failure> {
    redirect_toward(r, to)?;
    let mut e = r.input.to_vec();
    let (dmac, smac) = macs_toward(to);
    e[0..6].copy_from_slice(&dmac);
    e[6..12].copy_from_slice(&smac);
    let (sa, da) = addr_offsets(pkt.v4);
    write_addr(&mut e, pkt.l3 + sa, src);
    write_addr(&mut e, pkt.l3 + da, dst);
    e[pkt.l4..pkt.l4 + 2].copy_from_slice(&sport.to_ne_bytes());
    e[pkt.l4 + 2..pkt.l4 + 4].copy_from_slice(&dport.to_ne_bytes());
    let l4_sum = pkt.l4 + if pkt.key.proto == TCP { 16 } else { 6 };
    let mut skip = vec![(l4_sum, 2)];
    if pkt.v4 {
        skip.push((pkt.l3 + 10, 2));
    }
    same_but(r.output, &e, &skip)?;
    // No checksum stays none (IPv4 UDP).
    if pkt.v4
        && pkt.key.proto == UDP
        && be16(r.input, l4_sum) == Some(0)
        && be16(r.output, l4_sum) != Some(0)
    {
        return fail("udp_checksum", "a UDP datagram without checksum got one");
    }
    no_new_defects(r.input, r.output, pkt.l3, pkt.v4, "nat rewrite")
}

/// dsr (and ICMP errors in dsr mode): only the MACs change.
fn macs_only(r: &Run, l3: usize, v4: bool, to: IpAddr) -> Result<Defects, Failure> {
    redirect_toward(r, to)?;
    let mut e = r.input.to_vec();
    let (dmac, smac) = macs_toward(to);
    e[0..6].copy_from_slice(&dmac);
    e[6..12].copy_from_slice(&smac);
    same_but(r.output, &e, &[])?;
    Ok(defects(r.input, l3, v4))
}

/// Tunnel mode: the frame from its network header on, unchanged, after
/// a new outer IP header (and UDP header for GUE) toward the backend,
/// VLAN tag kept. The outer header has the inner one's DSCP and ECN, and
/// from flow `key`'s hash its source (`tunnel_source`) and IPv6 flow label. Returns the inherited defects and what the
/// decapsulator should make of the output (untagged frames only: it
/// reads no tag).
fn tunnel(
    r: &Run,
    l3: usize,
    inner_v4: bool,
    inner_len: u16,
    key: &FlowKey,
    to: IpAddr,
    gue: bool,
) -> Result<(Defects, Option<Vec<u8>>), Failure> {
    redirect_toward(r, to)?;
    let (f, out) = (r.input, r.output);
    let outer_v4 = to.is_ipv4();
    let hdr = if outer_v4 { 20 } else { 40 };
    let added = hdr + if gue { 8 } else { 0 };
    if out.len() != f.len() + added {
        return fail(
            "wrong_output",
            format!("{} bytes out, {} + {added} expected", out.len(), f.len()),
        );
    }
    let (dmac, smac) = macs_toward(to);
    let et = if outer_v4 { ETH_IP4 } else { ETH_IP6 };
    let mut l2 = [&dmac[..], &smac[..], &f[12..l3 - 2], &et.to_be_bytes()].concat();
    l2.truncate(l3);
    if out[..l3] != l2[..] {
        return fail("wrong_output", "outer Ethernet header");
    }
    if out[l3 + added..] != f[l3..] {
        return fail("wrong_output", "the inner packet changed");
    }
    let o = &out[l3..l3 + hdr];
    // The outer header covers what the frame carries (less than the inner
    // length says, if the frame is shorter).
    let inner_len = (inner_len as usize).min(f.len() - l3) as u16;
    let want_len = inner_len as u32 + added as u32;
    let proto = if gue {
        UDP
    } else if inner_v4 {
        IPIP
    } else {
        IP6IP
    };
    let g = &r.w.globals;
    let hash = flow_hash(key, HASH_FIVE_TUPLE, g.hash_seed);
    let family = if outer_v4 { FAMILY_V4 } else { FAMILY_V6 };
    let src = words_addr(g.tunnel_source(family, hash), family);
    let tos = if inner_v4 {
        f[l3 + 1]
    } else {
        (f[l3] << 4) | (f[l3 + 1] >> 4)
    };
    let label = tunnel_flow_label(hash);
    let ok = if outer_v4 {
        o[0] == 0x45
            && o[1] == tos
            && be16(o, 2) == Some(want_len as u16)
            && o[4..8] == [0, 0, 0x40, 0]
            && o[8] == 64
            && o[9] == proto
            && o[12..16] == addr_bytes(src)[..]
            && o[16..20] == addr_bytes(to)[..]
    } else {
        o[0..4]
            == [
                0x60 | tos >> 4,
                tos << 4 | (label >> 16) as u8,
                (label >> 8) as u8,
                label as u8,
            ]
            && be16(o, 4) == Some((want_len - 40) as u16)
            && o[6] == proto
            && o[7] == 64
            && o[8..24] == addr_bytes(src)[..]
            && o[24..40] == addr_bytes(to)[..]
    };
    if !ok {
        return fail("wrong_output", "outer IP header");
    }
    if outer_v4 && lb_common::csum::checksum(o) != 0 {
        return fail("malformed_output", "outer IPv4 header checksum");
    }
    if gue {
        let u = &out[l3 + hdr..l3 + added];
        let sport = be16(u, 0).unwrap();
        if sport < 0xc000
            || be16(u, 2) != Some(GUE_PORT)
            || be16(u, 4) != Some(inner_len.wrapping_add(8))
            || be16(u, 6) != Some(0)
        {
            return fail("wrong_output", "outer UDP (GUE) header");
        }
    }
    let inherited = defects(f, l3, inner_v4);
    // What the decapsulator makes of it (it reads no VLAN tag, and finds a
    // GUE packet's family in the inner IP version).
    let rt = (l3 == 14 && !inherited.header).then(|| {
        let et = if inner_v4 { ETH_IP4 } else { ETH_IP6 };
        [&out[..12], &et.to_be_bytes()[..], &f[l3..]].concat()
    });
    Ok((inherited, rt))
}

/// A backend's reply, translated back to VIP -> client.
fn nat_reply(r: &Run, pkt: &Pkt, rev: &NatRev) -> Result<Checked, Failure> {
    let fam = pkt.key.family;
    let (client, vip) = (key_addr(rev.client, fam), key_addr(rev.vip, fam));
    let d = rewritten(
        r,
        pkt,
        client,
        (vip, client),
        (rev.vip_port, rev.client_port),
    )?;
    sent("reply", d, None)
}

/// An echo reply: MACs and addresses swapped, the type made a reply.
fn echo(r: &Run, msg: &Msg) -> Result<Checked, Failure> {
    if r.verdict != XDP_TX {
        return fail(
            "wrong_verdict",
            format!("{} for an echo reply", verdict_name(r.verdict)),
        );
    }
    let f = r.input;
    let mut e = f.to_vec();
    e[0..6].copy_from_slice(&f[6..12]);
    e[6..12].copy_from_slice(&f[0..6]);
    let (sa, da) = addr_offsets(msg.v4);
    let n = if msg.v4 { 4 } else { 16 };
    e[msg.l3 + sa..msg.l3 + sa + n].copy_from_slice(&f[msg.l3 + da..msg.l3 + da + n]);
    e[msg.l3 + da..msg.l3 + da + n].copy_from_slice(&f[msg.l3 + sa..msg.l3 + sa + n]);
    e[msg.at] = if msg.v4 { 0 } else { 129 };
    same_but(r.output, &e, &[(msg.at + 2, 2)])?;
    let d = no_new_defects(f, r.output, msg.l3, msg.v4, "echo reply")?;
    sent("echo", d, None)
}

/// An ICMP error about a flow's packet, to the flow's backend: as it came
/// (dsr), inside a tunnel, or translated to be about the packet the
/// backend sent (nat).
fn icmp_error(
    r: &Run,
    svc: usize,
    msg: &Msg,
    key: &FlowKey,
    flow: &Flow,
) -> Result<Checked, Failure> {
    let Some((_, b)) = r.w.backends.get(&flow.backend) else {
        return fail(
            "wrong_backend",
            format!("flow names backend {}", flow.backend),
        );
    };
    let to = key_addr(b.addr, b.family);
    match r.w.services[svc].mode {
        Mode::Dsr => sent("icmp error", macs_only(r, msg.l3, msg.v4, to)?, None),
        Mode::Ipip | Mode::Gue => {
            let gue = r.w.services[svc].mode == Mode::Gue;
            let (d, rt) = tunnel(r, msg.l3, msg.v4, msg.ip_len, key, to, gue)?;
            sent("icmp error", d, rt)
        }
        Mode::Nat => {
            redirect_toward(r, to)?;
            let f = r.input;
            let mut e = f.to_vec();
            let (dmac, smac) = macs_toward(to);
            e[0..6].copy_from_slice(&dmac);
            e[6..12].copy_from_slice(&smac);
            let (sa, da) = addr_offsets(msg.v4);
            write_addr(&mut e, msg.l3 + da, to);
            let snat = r.w.snat_addr(msg.v4);
            write_addr(&mut e, msg.q_ip + sa, to);
            write_addr(&mut e, msg.q_ip + da, snat);
            e[msg.q_l4..msg.q_l4 + 2].copy_from_slice(&flow.backend_port.to_ne_bytes());
            e[msg.q_l4 + 2..msg.q_l4 + 4].copy_from_slice(&flow.snat_port.to_ne_bytes());
            let qproto = f[msg.q_ip + if msg.v4 { 9 } else { 6 }];
            let mut skip = vec![
                (msg.at + 2, 2),
                (msg.q_l4 + if qproto == TCP { 16 } else { 6 }, 2),
            ];
            if msg.v4 {
                skip.push((msg.l3 + 10, 2));
                skip.push((msg.q_ip + 10, 2));
            }
            same_but(r.output, &e, &skip)?;
            let d = no_new_defects(f, r.output, msg.l3, msg.v4, "ICMP error")?;
            // The quote ends with the message (bytes after it are padding).
            let end = (msg.l3 + msg.ip_len as usize).min(f.len());
            no_new_defects(
                &f[..end],
                &r.output[..end],
                msg.q_ip,
                msg.v4,
                "the packet quoted in the ICMP error",
            )?;
            sent("icmp error", d, None)
        }
    }
}

/// An answer the program makes itself to a packet for a service with no
/// usable backend: a TCP RST, or an ICMP port unreachable quoting it,
/// from the VIP back to the sender; well formed.
fn answer(r: &Run, pkt: &Pkt) -> Result<Checked, Failure> {
    let out = r.output;
    let (sa, da) = addr_offsets(pkt.v4);
    let fam = pkt.key.family;
    let (client, vip) = (key_addr(pkt.key.src, fam), key_addr(pkt.key.dst, fam));
    let l3 = pkt.l3;
    let get = |at: usize, v4| super::wire::addr(out, l3 + at, v4);
    if get(sa, pkt.v4) != Some(vip) || get(da, pkt.v4) != Some(client) {
        return fail(
            "wrong_answer",
            "sent on for a service with no usable backend, not back to the sender",
        );
    }
    let proto = out.get(l3 + if pkt.v4 { 9 } else { 6 }).copied();
    let ok = match (pkt.key.proto, proto) {
        (TCP, Some(TCP)) => out
            .get(l3 + if pkt.v4 { 20 } else { 40 } + 13)
            .is_some_and(|fl| fl & 0x04 != 0),
        (UDP, Some(ICMP)) => out.get(l3 + 20) == Some(&3),
        (UDP, Some(ICMP6)) => out.get(l3 + 40) == Some(&1),
        _ => false,
    };
    if !ok {
        return fail(
            "wrong_answer",
            "not a TCP RST or an ICMP destination unreachable",
        );
    }
    let d = defects(out, l3, pkt.v4);
    if d.any() {
        return fail(
            "malformed_output",
            format!("answer to the sender: {:?}", d.names()),
        );
    }
    sent("answer", d, None)
}

/// The decapsulator's verdict and output on `frame`: PASS, the frame
/// stripped of its outer header as the model says (a CE mark carried
/// in), or unchanged; DROP for a CE mark on a packet not ECN-capable.
pub fn decap(frame: &[u8], verdict: u32, out: &[u8]) -> Result<&'static str, Failure> {
    let fail = |class, detail: String| Err(Failure { class, detail });
    let model = model::decap(frame, GUE_PORT);
    let expected = match model {
        Some(d) => {
            let mut e = frame[..12].to_vec();
            e.extend_from_slice(&d.ethertype.to_be_bytes());
            e.extend_from_slice(&frame[14 + d.strip..]);
            (!d.ce || carry_ce(&mut e, d.ethertype == ETH_IP4)).then_some(e)
        }
        None => Some(frame.to_vec()),
    };
    let want = if expected.is_some() {
        XDP_PASS
    } else {
        XDP_DROP
    };
    if verdict != want {
        return fail(
            "decap_verdict",
            format!("xdplb_decap returned {}", verdict_name(verdict)),
        );
    }
    if verdict == XDP_DROP {
        return Ok("dropped (CE on a packet not ECN-capable)");
    }
    match model {
        None if out == frame => Ok("passed unchanged"),
        None => fail(
            "decap_modified",
            "changed a frame that is not a tunnel packet".into(),
        ),
        Some(d) => {
            if Some(out) != expected.as_deref() {
                return fail(
                    "decap_wrong_output",
                    format!(
                        "expected {} stripped bytes and EtherType {:#06x}",
                        d.strip, d.ethertype
                    ),
                );
            }
            Ok(if d.ce {
                "decapsulated, CE carried in"
            } else {
                "decapsulated"
            })
        }
    }
}

/// RFC 6040's decapsulation of an outer CE into the frame `e` (inner
/// packet after 14 bytes): its ECN becomes CE (IPv4 checksum updated), or
/// false (drop) if it is not ECN-capable. An inner IPv4 header shorter
/// than its checksum field is left alone.
fn carry_ce(e: &mut [u8], v4: bool) -> bool {
    if v4 {
        if e.len() < 14 + 12 {
            return true;
        }
        if e[15] & 3 == 0 {
            return false;
        }
        // Incrementally: a header with a wrong checksum keeps it wrong.
        let old = u16::from_ne_bytes([e[14], e[15]]);
        e[15] |= 3;
        let new = u16::from_ne_bytes([e[14], e[15]]);
        let check = lb_common::csum::replace2(u16::from_ne_bytes([e[24], e[25]]), old, new);
        e[24..26].copy_from_slice(&check.to_ne_bytes());
        return true;
    }
    if e[15] & 0x30 == 0 {
        return false;
    }
    e[15] |= 0x30;
    true
}
