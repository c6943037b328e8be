//! What the programs should do with a frame, worked out independently of
//! them: the balancer's header walk (lb-ebpf's parse.rs and icmp.rs) and
//! the decapsulator's (bin/decap.rs), written again from their documented
//! rules. A frame the model gives to a service that the program passes,
//! or the reverse, is a finding (of one or the other).

use std::net::IpAddr;

use lb_common::{FAMILY_V4, FAMILY_V6, FlowKey, MODE_ECHO, addr_words};

use super::{
    wire::{ETH_IP4, ETH_IP6, ETH_VLAN, ICMP, ICMP6, IP6IP, IPIP, TCP, UDP, be16},
    world::World,
};

/// Why a frame is passed to the kernel untouched: the documented classes
/// of PASS, which have no counter of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PassReason {
    /// Not IPv4 or IPv6 after at most one 802.1Q tag (ARP, 802.1ad QinQ,
    /// two 802.1Q tags, anything else).
    NotIp,
    /// Headers cut short or invalid (IP version, IHL below 5, the L4
    /// header or an IPv6 extension header beyond the frame).
    Malformed,
    /// An IPv4 or IPv6 fragment.
    Fragment,
    /// More than 4 IPv6 extension headers before the L4 header.
    LongExtChain,
    /// Neither TCP nor UDP (nor ICMP the balancer handles).
    NotTcpUdp,
    /// TCP/UDP to the SNAT address with no NAT entry: host traffic.
    NoNatEntry,
    /// TCP/UDP to an address, port and protocol with no service.
    NotAVip,
    /// An echo request to an address without `icmp_echo`.
    EchoNotEnabled,
    /// An ICMP error quoting a VIP's packet of a flow the table lacks.
    IcmpNoFlow,
    /// An ICMP error not about a VIP's TCP/UDP packet, or another ICMP
    /// type.
    IcmpOther,
}

impl PassReason {
    pub fn name(self) -> &'static str {
        match self {
            PassReason::NotIp => "not_ip",
            PassReason::Malformed => "malformed",
            PassReason::Fragment => "fragment",
            PassReason::LongExtChain => "ipv6_ext_chain_over_4",
            PassReason::NotTcpUdp => "not_tcp_udp",
            PassReason::NoNatEntry => "no_nat_entry",
            PassReason::NotAVip => "not_a_vip",
            PassReason::EchoNotEnabled => "echo_not_enabled",
            PassReason::IcmpNoFlow => "icmp_error_no_flow",
            PassReason::IcmpOther => "icmp_other",
        }
    }
}

/// A TCP/UDP packet as the balancer parses it.
#[derive(Clone, Copy, Debug)]
pub struct Pkt {
    pub key: FlowKey,
    pub l3: usize,
    pub l4: usize,
    /// The IP length as the program takes it: the field (IPv6: payload +
    /// 40, saturating), or what the frame carries if less.
    pub ip_len: u16,
    pub v4: bool,
}

/// An ICMP message as the balancer parses it.
#[derive(Clone, Copy, Debug)]
pub struct Msg {
    pub l3: usize,
    /// Offset of the ICMP header.
    pub at: usize,
    pub v4: bool,
    pub ip_len: u16,
    /// The message's source (the route toward the backend keeps it).
    pub src: IpAddr,
    /// Where the quoted IP header and its L4 header start.
    pub q_ip: usize,
    pub q_l4: usize,
}

/// What the balancer should do.
#[derive(Clone, Copy, Debug)]
pub enum Expect {
    Pass(PassReason),
    /// Balance it for service `svc` (index into the world's services).
    Balance {
        svc: usize,
        pkt: Pkt,
    },
    /// To the SNAT address: translated back if `NAT_REV` has `pkt.key`.
    Reply {
        pkt: Pkt,
    },
    /// Echo request to a VIP with `icmp_echo`: answered.
    Echo {
        msg: Msg,
    },
    /// An error about a packet of `flow` (as the client sent it): to its
    /// backend, if `FLOWS` has it.
    IcmpError {
        svc: usize,
        flow: FlowKey,
        msg: Msg,
    },
}

/// The balancer's walk (parse.rs): Ethernet, one 802.1Q tag, IPv4 or IPv6
/// (up to 4 extension headers), TCP or UDP; else its ICMP stage.
pub fn expect(f: &[u8], w: &World) -> Expect {
    match parse(f) {
        Ok(pkt) => {
            let snat = w.snat(pkt.v4);
            if pkt.key.dst == snat {
                return Expect::Reply { pkt };
            }
            match w.service_of(&pkt.key) {
                Some(svc) => Expect::Balance { svc, pkt },
                None => Expect::Pass(PassReason::NotAVip),
            }
        }
        Err(reason) => match icmp(f, w) {
            Some(e) => e,
            None if reason == PassReason::NotTcpUdp => Expect::Pass(icmp_reason(f)),
            None => Expect::Pass(reason),
        },
    }
}

/// Ethernet, then one 802.1Q tag at most: (EtherType, network offset).
fn l2(f: &[u8]) -> Result<(u16, usize), PassReason> {
    let et = be16(f, 12).ok_or(PassReason::Malformed)?;
    if et == ETH_VLAN {
        return Ok((be16(f, 16).ok_or(PassReason::Malformed)?, 18));
    }
    Ok((et, 14))
}

fn parse(f: &[u8]) -> Result<Pkt, PassReason> {
    let (et, l3) = l2(f)?;
    let (v4, proto, l4, src, dst, ip_len) = match et {
        ETH_IP4 => {
            if f.len() < l3 + 20 {
                return Err(PassReason::Malformed);
            }
            let ihl = (f[l3] & 0xf) as usize * 4;
            if f[l3] >> 4 != 4 || ihl < 20 {
                return Err(PassReason::Malformed);
            }
            if be16(f, l3 + 6).unwrap() & 0x3fff != 0 {
                return Err(PassReason::Fragment);
            }
            let src = ip_at(f, l3 + 12, true);
            let dst = ip_at(f, l3 + 16, true);
            let len = carried(f, l3, be16(f, l3 + 2).unwrap());
            (true, f[l3 + 9], l3 + ihl, src, dst, len)
        }
        ETH_IP6 => {
            if f.len() < l3 + 40 || f[l3] >> 4 != 6 {
                return Err(PassReason::Malformed);
            }
            let (mut next, mut l4) = (f[l3 + 6], l3 + 40);
            for _ in 0..4 {
                let unit = match next {
                    0 | 43 | 60 => 8,
                    51 => 4,
                    _ => break,
                };
                let (Some(&nh), Some(&len)) = (f.get(l4), f.get(l4 + 1)) else {
                    return Err(PassReason::Malformed);
                };
                next = nh;
                l4 += if unit == 8 {
                    (len as usize + 1) * 8
                } else {
                    (len as usize + 2) * 4
                };
            }
            if next == 44 {
                return Err(PassReason::Fragment);
            }
            if matches!(next, 0 | 43 | 60 | 51) {
                return Err(PassReason::LongExtChain);
            }
            let src = ip_at(f, l3 + 8, false);
            let dst = ip_at(f, l3 + 24, false);
            let len = carried(f, l3, be16(f, l3 + 4).unwrap().saturating_add(40));
            (false, next, l4, src, dst, len)
        }
        _ => return Err(PassReason::NotIp),
    };
    let need = match proto {
        TCP => 20,
        UDP => 8,
        _ => return Err(PassReason::NotTcpUdp),
    };
    if f.len() < l4 + need {
        return Err(PassReason::Malformed);
    }
    Ok(Pkt {
        key: FlowKey {
            src,
            dst,
            sport: u16::from_ne_bytes([f[l4], f[l4 + 1]]),
            dport: u16::from_ne_bytes([f[l4 + 2], f[l4 + 3]]),
            proto,
            family: if v4 { FAMILY_V4 } else { FAMILY_V6 },
            _pad: [0; 2],
        },
        l3,
        l4,
        ip_len,
        v4,
    })
}

/// An IP length as the frame carries it (parse.rs's `carried_len`): the
/// header's, or the bytes left in the frame if fewer.
fn carried(f: &[u8], l3: usize, len: u16) -> u16 {
    len.min((f.len() - l3) as u16)
}

/// Address words (as the program keys maps) of the address at `at`.
fn ip_at(f: &[u8], at: usize, v4: bool) -> [u32; 4] {
    let a = super::wire::addr(f, at, v4).expect("length checked");
    addr_words(a).0
}

/// The ICMP stage (icmp.rs): echo requests to a VIP with `icmp_echo`, and
/// errors quoting a packet a VIP sent.
fn icmp(f: &[u8], w: &World) -> Option<Expect> {
    let mut l3 = 14;
    let mut et = be16(f, 12)?;
    if et == ETH_VLAN {
        et = be16(f, 16)?;
        l3 = 18;
    }
    let (v4, at, ip_len, src, dst) = match et {
        ETH_IP4 => {
            let h = f.get(l3..l3 + 20)?;
            let ihl = (h[0] & 0xf) as usize * 4;
            if h[0] >> 4 != 4 || ihl < 20 || h[9] != ICMP || be16(h, 6)? & 0x3fff != 0 {
                return None;
            }
            let (src, dst) = (ip_at(f, l3 + 12, true), ip_at(f, l3 + 16, true));
            (true, l3 + ihl, carried(f, l3, be16(h, 2)?), src, dst)
        }
        // No extension headers (icmp.rs).
        ETH_IP6 => {
            let h = f.get(l3..l3 + 40)?;
            if h[0] >> 4 != 6 || h[6] != ICMP6 {
                return None;
            }
            let (src, dst) = (ip_at(f, l3 + 8, false), ip_at(f, l3 + 24, false));
            let len = carried(f, l3, be16(h, 4)?.saturating_add(40));
            (false, l3 + 40, len, src, dst)
        }
        _ => return None,
    };
    let kind = *f.get(at..at + 4)?.first()?;
    let family = if v4 { FAMILY_V4 } else { FAMILY_V6 };
    let mut msg = Msg {
        l3,
        at,
        v4,
        ip_len,
        src: key_addr(src, family),
        q_ip: at + 8,
        q_l4: 0,
    };
    match (v4, kind) {
        (true, 8) | (false, 128) => {
            let echo = w.service_key(dst, 0, if v4 { ICMP } else { ICMP6 }, family);
            match echo {
                Some(m) if m.mode == MODE_ECHO => Some(Expect::Echo { msg }),
                _ => Some(Expect::Pass(PassReason::EchoNotEnabled)),
            }
        }
        (true, 3 | 11) | (false, 1..=3) => {
            let q = msg.q_ip;
            let (proto, qsrc, qdst, ql4) = if v4 {
                let h = f.get(q..q + 20)?;
                let ihl = (h[0] & 0xf) as usize * 4;
                if h[0] >> 4 != 4 || ihl < 20 {
                    return None;
                }
                (
                    h[9],
                    ip_at(f, q + 12, true),
                    ip_at(f, q + 16, true),
                    q + ihl,
                )
            } else {
                let h = f.get(q..q + 40)?;
                (
                    h[6],
                    ip_at(f, q + 8, false),
                    ip_at(f, q + 24, false),
                    q + 40,
                )
            };
            // The quote ends with the ICMP message (not in padding).
            if proto != TCP && proto != UDP || ql4 + 4 > l3 + ip_len as usize {
                return None;
            }
            let ports = f.get(ql4..ql4 + 4)?;
            if qsrc != dst {
                return None;
            }
            let flow = FlowKey {
                src: qdst,
                dst: qsrc,
                sport: u16::from_ne_bytes([ports[2], ports[3]]),
                dport: u16::from_ne_bytes([ports[0], ports[1]]),
                proto,
                family,
                _pad: [0; 2],
            };
            msg.q_l4 = ql4;
            let svc = w.service_of(&flow)?;
            Some(Expect::IcmpError { svc, flow, msg })
        }
        _ => None,
    }
}

/// Why an ICMP (or other non-TCP/UDP) frame passed.
fn icmp_reason(f: &[u8]) -> PassReason {
    let Ok((et, l3)) = l2(f) else {
        return PassReason::Malformed;
    };
    let proto = match et {
        ETH_IP4 => f.get(l3 + 9),
        ETH_IP6 => f.get(l3 + 6),
        _ => None,
    };
    match proto {
        Some(&ICMP) | Some(&ICMP6) => PassReason::IcmpOther,
        _ => PassReason::NotTcpUdp,
    }
}

/// What the decapsulator (bin/decap.rs) should do with a frame: strip
/// `strip` bytes after the Ethernet header and set the EtherType to
/// `ethertype`, or (`None`) pass it unchanged: not IP, an IPv4 fragment or
/// header with IHL below 5, not IPIP, IPv6-in-IP or GUE to its port, or
/// cut before the inner packet's first 4 bytes. `ce`: see `check::decap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decap {
    pub strip: usize,
    pub ethertype: u16,
    /// The outer ECN field is CE (RFC 6040: carried into the inner packet).
    pub ce: bool,
}

pub fn decap(f: &[u8], gue_port: u16) -> Option<Decap> {
    let (proto, ip_len) = match be16(f, 12)? {
        ETH_IP4 => {
            let vihl = *f.get(14)?;
            let frags = be16(f, 20)?;
            if vihl >> 4 != 4 || vihl & 0xf < 5 || frags & 0x3fff != 0 {
                return None;
            }
            (*f.get(23)?, (vihl & 0xf) as usize * 4)
        }
        ETH_IP6 => (*f.get(20)?, 40),
        _ => return None,
    };
    let inner = 14 + ip_len;
    let (inner, proto) = match proto {
        IPIP | IP6IP => {
            f.get(inner..inner + 4)?;
            (inner, proto)
        }
        UDP => {
            if be16(f, inner + 2)? != gue_port {
                return None;
            }
            let version = f.get(inner + 8..inner + 12)?[0] >> 4;
            let p = match version {
                4 => IPIP,
                6 => IP6IP,
                _ => return None,
            };
            (inner + 8, p)
        }
        _ => return None,
    };
    let tc = if be16(f, 12)? == ETH_IP4 {
        f[15]
    } else {
        f[15] >> 4
    };
    Some(Decap {
        strip: inner - 14,
        ethertype: if proto == IPIP { ETH_IP4 } else { ETH_IP6 },
        ce: tc & 3 == 3,
    })
}

/// The IP address of a flow-key address field.
pub fn key_addr(words: [u32; 4], family: u8) -> IpAddr {
    lb_common::words_addr(words, family)
}
