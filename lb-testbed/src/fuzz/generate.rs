//! Valid frames, with the state a real balancer sees: clients opening
//! flows to every service and sending on them, backends answering nat
//! flows (to the SNAT address and port the balancer picked, learned from
//! its output), ICMP errors about packets the VIPs sent, echo requests,
//! host traffic; then frames for the decapsulator, tunnels in tunnels.
//! Everything is drawn from one seeded generator: a seed replays a run.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::{FAMILY_V4, FAMILY_V6, FlowKey};
use rand::{Rng, SeedableRng, seq::IndexedRandom};
use rand_chacha::ChaCha8Rng;

use super::{
    config::{GUE_PORT, Mode, SERVICES},
    wire::{
        ETH_IP4, ETH_IP6, ICMP, ICMP6, IP6IP, IPIP, TCP, UDP, addr_bytes, fix_ip4_sum, fix_l4_sum,
    },
    world::{World, words},
};
use crate::fib_net::{CLIENT, CLIENT_MAC, CLIENT6, LBB_MAC, LBC_MAC, backend_mac};

/// Flows kept per epoch; a new one replaces a random old one beyond.
const MAX_FLOWS: usize = 512;

/// A client flow the generator opened, and what it learned of it.
#[derive(Clone, Debug)]
pub struct GFlow {
    pub svc: usize,
    pub client: IpAddr,
    pub cport: u16,
    pub vport: u16,
    pub sent: u32,
    /// nat: the backend address and port and the SNAT port, from the
    /// balancer's output for the flow's first packet.
    pub nat: Option<(IpAddr, u16, u16)>,
}

impl GFlow {
    /// The flow key of its client's packets.
    pub fn key(&self) -> FlowKey {
        let s = &SERVICES[self.svc];
        FlowKey {
            src: words(self.client),
            dst: words(s.vip()),
            sport: self.cport.to_be(),
            dport: self.vport.to_be(),
            proto: s.proto(),
            family: if s.vip().is_ipv4() {
                FAMILY_V4
            } else {
                FAMILY_V6
            },
            _pad: [0; 2],
        }
    }
}

/// A frame and where it came from (for the report and reproducers).
pub struct Made {
    pub frame: Vec<u8>,
    pub kind: &'static str,
    pub mutations: Vec<&'static str>,
    /// An unmutated packet of flow N to its VIP: learn from the output.
    pub learn: Option<usize>,
}

pub struct Gen {
    pub rng: ChaCha8Rng,
    pub flows: Vec<GFlow>,
    /// Flow sync is on: some client packets come from a peer's MAC (a
    /// frame another node handed over).
    pub from_peer: bool,
}

impl Gen {
    pub fn new(seed: u64) -> Gen {
        Gen {
            rng: ChaCha8Rng::seed_from_u64(seed),
            flows: Vec::new(),
            from_peer: false,
        }
    }

    /// A new epoch: the balancer's tables are empty again.
    pub fn reset(&mut self) {
        self.flows.clear();
    }

    /// A valid frame for the balancer, of a kind drawn by weight.
    pub fn valid(&mut self, w: &World) -> Made {
        let roll = self.rng.random_range(0..100);
        let learned = self.flows.iter().any(|f| f.nat.is_some());
        let (frame, kind, learn) = match roll {
            0..55 => {
                let (f, i) = self.flow_packet();
                (f, "client packet", Some(i))
            }
            55..70 if learned => (self.nat_reply(), "backend reply", None),
            55..70 => {
                let (f, i) = self.flow_packet();
                (f, "client packet", Some(i))
            }
            70..80 if !self.flows.is_empty() => (self.icmp_error(), "icmp error", None),
            70..80 => (self.echo(), "echo", None),
            80..87 => (self.echo(), "echo", None),
            87..92 => (self.stale_reply(w), "reply without flow", None),
            _ => (self.host_traffic(), "host traffic", None),
        };
        Made {
            frame,
            kind,
            mutations: Vec::new(),
            learn,
        }
    }

    /// Fully random bytes after an Ethernet header, often with a
    /// plausible EtherType, IP version and a VIP as destination.
    pub fn random(&mut self) -> Made {
        let len = if self.rng.random_bool(0.9) {
            self.rng.random_range(14..120)
        } else {
            self.rng.random_range(14..1600)
        };
        let mut f = vec![0u8; len];
        self.rng.fill(&mut f[..]);
        if len >= 14 && self.rng.random_bool(0.8) {
            let et = *[ETH_IP4, ETH_IP6, 0x8100, 0x88a8, 0x0806]
                .choose(&mut self.rng)
                .unwrap();
            f[12..14].copy_from_slice(&et.to_be_bytes());
            if len > 14 && self.rng.random_bool(0.7) {
                let v4 = et != ETH_IP6;
                f[14] = if v4 { 0x45 } else { 0x60 | (f[14] & 0xf) };
                let dst = if v4 { 30 } else { 38 };
                if self.rng.random_bool(0.5) {
                    let vip = SERVICES.choose(&mut self.rng).unwrap().vip();
                    let b = addr_bytes(vip);
                    if b.len() == if v4 { 4 } else { 16 } && f.len() >= dst + b.len() {
                        f[dst..dst + b.len()].copy_from_slice(&b);
                    }
                }
            }
        }
        Made {
            frame: f,
            kind: "random bytes",
            mutations: Vec::new(),
            learn: None,
        }
    }

    /// A packet of a flow: a new one (a SYN for TCP) or the next of an
    /// existing one.
    fn flow_packet(&mut self) -> (Vec<u8>, usize) {
        let new = self.flows.is_empty() || self.rng.random_bool(0.3);
        let i = if new {
            let svc = self.rng.random_range(0..SERVICES.len());
            let s = &SERVICES[svc];
            let v4 = s.vip().is_ipv4();
            let flow = GFlow {
                svc,
                client: self.client(v4),
                cport: self.rng.random_range(1024..=65535),
                vport: if s.port == 0 {
                    self.rng.random_range(1..=65535)
                } else {
                    s.port
                },
                sent: 0,
                nat: None,
            };
            if self.flows.len() < MAX_FLOWS {
                self.flows.push(flow);
                self.flows.len() - 1
            } else {
                let at = self.rng.random_range(0..MAX_FLOWS);
                self.flows[at] = flow;
                at
            }
        } else {
            self.rng.random_range(0..self.flows.len())
        };
        let fl = self.flows[i].clone();
        self.flows[i].sent += 1;
        let s = &SERVICES[fl.svc];
        let payload = self.payload();
        let l4 = if s.udp {
            udp(fl.cport, fl.vport, &payload)
        } else {
            let flags = if fl.sent == 0 { SYN } else { self.tcp_flags() };
            self.tcp(fl.cport, fl.vport, flags, &payload)
        };
        let smac = if self.from_peer && self.rng.random_bool(0.1) {
            super::config::PEER_MAC
        } else {
            CLIENT_MAC
        };
        let f = self.ip_frame((smac, LBC_MAC), fl.client, s.vip(), s.proto(), &l4);
        (f, i)
    }

    /// A backend's packet back to the SNAT address and port of a nat flow.
    fn nat_reply(&mut self) -> Vec<u8> {
        let learned: Vec<usize> = (0..self.flows.len())
            .filter(|&i| self.flows[i].nat.is_some())
            .collect();
        let fl = self.flows[*learned.choose(&mut self.rng).unwrap()].clone();
        let (backend, bport, sport) = fl.nat.unwrap();
        let s = &SERVICES[fl.svc];
        let payload = self.payload();
        let l4 = if s.udp {
            udp(bport, sport, &payload)
        } else {
            let flags = if self.rng.random_bool(0.3) {
                SYN | ACK
            } else {
                self.tcp_flags()
            };
            self.tcp(bport, sport, flags, &payload)
        };
        let snat = snat_of(backend);
        self.ip_frame(
            (backend_mac(backend), LBB_MAC),
            backend,
            snat,
            s.proto(),
            &l4,
        )
    }

    /// A packet to the SNAT address for a port no flow holds (or from a
    /// backend no flow uses).
    fn stale_reply(&mut self, w: &World) -> Vec<u8> {
        let v4 = self.rng.random_bool(0.6);
        let backend = if v4 {
            IpAddr::V4(Ipv4Addr::new(198, 18, 1, self.rng.random_range(11..=14)))
        } else {
            let last = self.rng.random_range(0x11..=0x14);
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, last))
        };
        let proto = if self.rng.random_bool(0.5) { TCP } else { UDP };
        let (sp, dp) = (self.rng.random(), self.rng.random_range(19990..21010));
        let payload = self.payload();
        let l4 = if proto == UDP {
            udp(sp, dp, &payload)
        } else {
            let flags = self.tcp_flags();
            self.tcp(sp, dp, flags, &payload)
        };
        let snat = w.snat_addr(v4);
        self.ip_frame((backend_mac(backend), LBB_MAC), backend, snat, proto, &l4)
    }

    /// An ICMP error from a router about a packet a VIP sent to a client
    /// of a flow: destination unreachable (fragmentation needed, ...),
    /// time exceeded, packet too big.
    fn icmp_error(&mut self) -> Vec<u8> {
        let fl = self.flows.choose(&mut self.rng).unwrap().clone();
        let s = &SERVICES[fl.svc];
        let vip = s.vip();
        let payload = self.payload();
        let l4 = if s.udp {
            udp(fl.vport, fl.cport, &payload)
        } else {
            let flags = self.tcp_flags();
            self.tcp(fl.vport, fl.cport, flags, &payload)
        };
        let quoted = self.ip_frame((LBC_MAC, CLIENT_MAC), vip, fl.client, s.proto(), &l4);
        let q = self.quote(&quoted[14..]);
        let router = if vip.is_ipv4() {
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, self.rng.random_range(2..=254)))
        } else {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe))
        };
        self.icmp_error_about(router, vip, &q)
    }

    /// The first bytes of an IP packet, as an ICMP error quotes them:
    /// mostly its headers and 8 bytes more, sometimes all, rarely less.
    pub fn quote(&mut self, ip: &[u8]) -> Vec<u8> {
        let hdr = if ip.first().is_some_and(|b| b >> 4 == 4) {
            (ip[0] & 0xf) as usize * 4
        } else {
            40
        };
        let n = match self.rng.random_range(0..10) {
            0..6 => hdr + 8,
            6..9 => ip.len(),
            _ => self.rng.random_range(0..hdr + 8),
        };
        ip[..n.min(ip.len())].to_vec()
    }

    /// An ICMP or ICMPv6 error from `from` to `to` quoting `q`.
    pub fn icmp_error_about(&mut self, from: IpAddr, to: IpAddr, q: &[u8]) -> Vec<u8> {
        let v4 = to.is_ipv4();
        let (kind, code, rest) = if v4 {
            match self.rng.random_range(0..4) {
                0 => (3, 4, [0, 0, 0x05, 0xdc]), // fragmentation needed, MTU 1500
                1 => (11, self.rng.random_range(0..2), [0; 4]),
                _ => (3, self.rng.random_range(0..16), [0; 4]),
            }
        } else {
            match self.rng.random_range(0..4) {
                0 => (2, 0, [0, 0, 0x05, 0x00]), // packet too big, MTU 1280
                1 => (3, self.rng.random_range(0..2), [0; 4]),
                _ => (1, self.rng.random_range(0..7), [0; 4]),
            }
        };
        let msg = [&[kind, code, 0, 0][..], &rest, q].concat();
        let proto = if v4 { ICMP } else { ICMP6 };
        self.ip_frame((CLIENT_MAC, LBC_MAC), from, to, proto, &msg)
    }

    /// Echo requests: to VIPs with and without `icmp_echo`, to the LB.
    fn echo(&mut self) -> Vec<u8> {
        let v4 = self.rng.random_bool(0.6);
        let dst = match self.rng.random_range(0..4) {
            0 | 1 => SERVICES
                .iter()
                .filter(|s| s.vip().is_ipv4() == v4)
                .collect::<Vec<_>>()
                .choose(&mut self.rng)
                .unwrap()
                .vip(),
            2 if v4 => "198.18.100.10".parse().unwrap(),
            2 => "2001:db8:100::10".parse().unwrap(),
            _ if v4 => "198.18.0.1".parse().unwrap(),
            _ => "2001:db8::1".parse().unwrap(),
        };
        let kind = match (v4, self.rng.random_range(0..10)) {
            (true, 0) => self.rng.random(),
            (false, 0) => *[129, 133, 134, 135, 136, 4].choose(&mut self.rng).unwrap(),
            (true, _) => 8,
            (false, _) => 128,
        };
        let mut body = vec![0u8; self.rng.random_range(0..64)];
        self.rng.fill(&mut body[..]);
        let id: [u8; 4] = self.rng.random();
        let msg = [&[kind, 0, 0, 0][..], &id, &body].concat();
        let client = self.client(v4);
        let proto = if v4 { ICMP } else { ICMP6 };
        self.ip_frame((CLIENT_MAC, LBC_MAC), client, dst, proto, &msg)
    }

    /// Traffic that is not the balancer's: to the LB's own addresses, to a
    /// VIP's other ports or protocol, ARP, other protocols.
    fn host_traffic(&mut self) -> Vec<u8> {
        let v4 = self.rng.random_bool(0.6);
        let client = self.client(v4);
        let payload = self.payload();
        let dst: IpAddr = match self.rng.random_range(0..3) {
            0 if v4 => "198.18.0.1".parse().unwrap(),
            0 => "2001:db8::1".parse().unwrap(),
            _ => SERVICES
                .iter()
                .filter(|s| s.vip().is_ipv4() == v4)
                .collect::<Vec<_>>()
                .choose(&mut self.rng)
                .unwrap()
                .vip(),
        };
        match self.rng.random_range(0..6) {
            0 => crate::frames::arp_request(),
            1 => {
                let proto = *[47u8, 50, 132, 2, 89].choose(&mut self.rng).unwrap();
                self.ip_frame((CLIENT_MAC, LBC_MAC), client, dst, proto, &payload)
            }
            2..4 => {
                let l4 = udp(self.rng.random(), self.rng.random(), &payload);
                self.ip_frame((CLIENT_MAC, LBC_MAC), client, dst, UDP, &l4)
            }
            _ => {
                let (sp, dp) = (self.rng.random(), self.rng.random());
                let flags = self.tcp_flags();
                let l4 = self.tcp(sp, dp, flags, &payload);
                self.ip_frame((CLIENT_MAC, LBC_MAC), client, dst, TCP, &l4)
            }
        }
    }

    /// A frame for the decapsulator: a tunnel packet (IPIP, IP6IP6,
    /// 4-in-6, 6-in-4, GUE over either family, or GUE to another port),
    /// whose inner packet is a client's packet or another tunnel packet.
    pub fn decap_frame(&mut self) -> Made {
        let depth = match self.rng.random_range(0..10) {
            0..6 => 1,
            6..9 => 2,
            _ => self.rng.random_range(3..=6),
        };
        let inner_v4 = self.rng.random_bool(0.5);
        let payload = self.payload();
        let client = self.client(inner_v4);
        let vip = SERVICES
            .iter()
            .filter(|s| s.vip().is_ipv4() == inner_v4)
            .collect::<Vec<_>>()
            .choose(&mut self.rng)
            .unwrap()
            .vip();
        let l4 = udp(self.rng.random(), 80, &payload);
        let frame = self.ip_frame((CLIENT_MAC, LBC_MAC), client, vip, UDP, &l4);
        let mut ip = self.some_tos(frame)[14..].to_vec();
        for _ in 0..depth {
            ip = self.encapsulate(&ip);
        }
        let v4 = ip[0] >> 4 == 4;
        let et = if v4 { ETH_IP4 } else { ETH_IP6 };
        let frame = [&LBB_MAC[..], &backend_mac(vip)[..], &et.to_be_bytes(), &ip].concat();
        Made {
            frame,
            kind: "tunnel packet",
            mutations: Vec::new(),
            learn: None,
        }
    }

    /// `ip` inside an outer IPv4 or IPv6 header, IP-in-IP or GUE.
    fn encapsulate(&mut self, ip: &[u8]) -> Vec<u8> {
        let outer_v4 = self.rng.random_bool(0.5);
        let (src, dst): (IpAddr, IpAddr) = if outer_v4 {
            (
                "198.18.1.1".parse().unwrap(),
                Ipv4Addr::new(198, 18, 1, self.rng.random_range(11..=13)).into(),
            )
        } else {
            (
                "2001:db8:1::1".parse().unwrap(),
                "2001:db8:1::11".parse().unwrap(),
            )
        };
        let inner_v4 = ip.first().is_some_and(|b| b >> 4 == 4);
        let f = if self.rng.random_bool(0.4) {
            let port = if self.rng.random_bool(0.9) {
                GUE_PORT
            } else {
                self.rng.random()
            };
            let mut u = udp(self.rng.random_range(0xc000..=0xffff), port, ip);
            u[6..8].fill(0); // no checksum, as the balancer sends it
            let mut f = self.ip_frame((LBB_MAC, LBB_MAC), src, dst, UDP, &[]);
            append_l4(&mut f, &u);
            f
        } else {
            let proto = if inner_v4 { IPIP } else { IP6IP };
            let mut f = self.ip_frame((LBB_MAC, LBB_MAC), src, dst, proto, &[]);
            append_l4(&mut f, ip);
            f
        };
        self.some_tos(f)[14..].to_vec()
    }

    /// Half the time, `frame` with a random DSCP and ECN (the decapsulator
    /// carries an outer CE into the inner packet, or drops it).
    fn some_tos(&mut self, frame: Vec<u8>) -> Vec<u8> {
        if self.rng.random_bool(0.5) {
            let tos = self.rng.random();
            crate::frames::with_tos(frame, tos)
        } else {
            frame
        }
    }

    /// A client address: the reachable client mostly, sometimes one with
    /// no neighbour or no route (its replies are dropped, counted).
    fn client(&mut self, v4: bool) -> IpAddr {
        let r = self.rng.random_range(0..10);
        match (v4, r) {
            (true, 0..7) => CLIENT.into(),
            (true, 7..9) => Ipv4Addr::new(198, 18, 0, self.rng.random_range(3..10)).into(),
            (true, _) => {
                Ipv4Addr::new(198, 19, self.rng.random_range(1..9), self.rng.random()).into()
            }
            (false, 0..7) => CLIENT6.into(),
            (false, 7..9) => {
                Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, self.rng.random_range(3..10)).into()
            }
            (false, _) => {
                Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, self.rng.random_range(1..999)).into()
            }
        }
    }

    pub fn payload(&mut self) -> Vec<u8> {
        let n = match self.rng.random_range(0..100) {
            0..70 => self.rng.random_range(0..48),
            70..97 => self.rng.random_range(48..1400),
            _ => self.rng.random_range(1400..2900),
        };
        let mut p = vec![0u8; n];
        self.rng.fill(&mut p[..]);
        p
    }

    /// TCP flags of an established flow's packet (or, rarely, any).
    fn tcp_flags(&mut self) -> u8 {
        match self.rng.random_range(0..20) {
            0..10 => ACK,
            10..14 => PSH | ACK,
            14 => FIN | ACK,
            15 => RST,
            16 => RST | ACK,
            17 => SYN,
            _ => self.rng.random(),
        }
    }

    pub fn tcp(&mut self, sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; 20];
        h[0..2].copy_from_slice(&sport.to_be_bytes());
        h[2..4].copy_from_slice(&dport.to_be_bytes());
        self.rng.fill(&mut h[4..12]);
        h[12] = 5 << 4;
        h[13] = flags;
        h[14..16].copy_from_slice(&self.rng.random::<u16>().to_be_bytes());
        if flags & SYN != 0 && self.rng.random_bool(0.5) {
            // MSS 1460, SACK permitted, NOP, NOP: data offset 8.
            h.extend_from_slice(&[2, 4, 0x05, 0xb4, 4, 2, 1, 1, 1, 1, 1, 0]);
            h[12] = 8 << 4;
        }
        h.extend_from_slice(payload);
        h
    }

    /// Ethernet, then an IPv4 or IPv6 header (by the addresses) for `l4`
    /// of protocol `proto`, lengths and checksums right.
    pub fn ip_frame(
        &mut self,
        (smac, dmac): ([u8; 6], [u8; 6]),
        src: IpAddr,
        dst: IpAddr,
        proto: u8,
        l4: &[u8],
    ) -> Vec<u8> {
        let v4 = src.is_ipv4();
        let mut f = Vec::with_capacity(14 + 40 + l4.len());
        f.extend_from_slice(&dmac);
        f.extend_from_slice(&smac);
        if v4 {
            f.extend_from_slice(&ETH_IP4.to_be_bytes());
            let len = (20 + l4.len()) as u16;
            let id: u16 = self.rng.random();
            let df = if self.rng.random_bool(0.7) { 0x40 } else { 0 };
            f.extend_from_slice(&[0x45, 0]);
            f.extend_from_slice(&len.to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
            f.extend_from_slice(&[df, 0, 64, proto, 0, 0]);
        } else {
            f.extend_from_slice(&ETH_IP6.to_be_bytes());
            let label: u32 = self.rng.random::<u32>() & 0xfffff;
            f.extend_from_slice(&(0x6000_0000u32 | label).to_be_bytes());
            f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            f.extend_from_slice(&[proto, 64]);
        }
        f.extend_from_slice(&addr_bytes(src));
        f.extend_from_slice(&addr_bytes(dst));
        if v4 {
            fix_ip4_sum(&mut f, 14);
        }
        let l4_at = f.len();
        f.extend_from_slice(l4);
        fix_l4_sum(&mut f, 14, l4_at, proto);
        f
    }

    /// A few of the flows (to age, or to hand over to a peer).
    pub fn some_flows(&mut self) -> Vec<FlowKey> {
        let n = self.rng.random_range(1..=4).min(self.flows.len());
        (0..n)
            .map(|_| self.flows.choose(&mut self.rng).unwrap().key())
            .collect()
    }

    /// Learns a nat flow's backend and SNAT port from the balancer's
    /// output for one of its packets (untagged, as the generator sends).
    pub fn learn(&mut self, i: usize, out: &[u8]) {
        let Some(fl) = self.flows.get_mut(i) else {
            return;
        };
        if SERVICES[fl.svc].mode != Mode::Nat || out.len() < 14 + 40 {
            return;
        }
        let v4 = fl.client.is_ipv4();
        let (dst_at, l4) = if v4 {
            (14 + 16, 14 + 20)
        } else {
            (14 + 24, 14 + 40)
        };
        let Some(backend) = super::wire::addr(out, dst_at, v4) else {
            return;
        };
        let (Some(sport), Some(dport)) =
            (super::wire::be16(out, l4), super::wire::be16(out, l4 + 2))
        else {
            return;
        };
        fl.nat = Some((backend, dport, sport));
    }
}

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(8 + payload.len());
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(payload);
    h
}

/// Appends `l4` to a frame built with an empty L4 part, fixing the IP
/// length (and IPv4 checksum); the L4 checksum is left as it is.
fn append_l4(f: &mut Vec<u8>, l4: &[u8]) {
    f.extend_from_slice(l4);
    if f[14] >> 4 == 4 {
        let len = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&len.to_be_bytes());
        fix_ip4_sum(f, 14);
    } else {
        let len = (f.len() - 54) as u16;
        f[18..20].copy_from_slice(&len.to_be_bytes());
    }
}

/// The SNAT address of a backend's family.
fn snat_of(backend: IpAddr) -> IpAddr {
    if backend.is_ipv4() {
        super::config::SNAT4.into()
    } else {
        super::config::SNAT6.into()
    }
}
