//! One-line summaries of frames (parsed with etherparse, leniently: a
//! truncated or malformed frame is summarised as far as it goes).

use std::{fmt::Write as _, net::IpAddr};

use etherparse::{
    EtherType, IpNumber, LaxLinkExtSlice, LaxNetSlice, LaxSlicedPacket, LinkSlice, TcpSlice,
    TransportSlice, err::packet::SliceError,
};
use serde::Serialize;

/// The headers of a frame, as `xdplb trace` reports them (`in` and `out`
/// in its JSON lines).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Frame length in bytes (as captured).
    pub len: usize,
    pub src_mac: String,
    pub dst_mac: String,
    /// 802.1Q VLAN id of the (outer) tag, if tagged.
    pub vlan: Option<u16>,
    /// `ipv4`, `ipv6`, `arp`, or the EtherType in hex (`0x88cc`).
    pub ethertype: String,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, or the IP protocol number.
    pub proto: Option<String>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// TCP flags in tcpdump's letters: `S` SYN, `F` FIN, `R` RST, `P` PSH,
    /// `.` ACK, `U` URG, `E` ECE, `W` CWR (a SYN-ACK is `S.`).
    pub flags: Option<String>,
    /// An IP fragment (the transport header is in the first one only).
    pub fragment: bool,
    /// Inner packet of an IP-in-IP encapsulation (tunnel mode).
    pub inner: Option<Box<Summary>>,
    /// What made the frame impossible to parse further, if anything.
    pub malformed: Option<String>,
    /// VLAN tags seen.
    #[serde(skip)]
    tags: usize,
    /// ICMP message type, in words (text only).
    #[serde(skip)]
    icmp: Option<String>,
    /// The one-line text form (what the text output prints).
    pub text: String,
}

impl Summary {
    fn empty(len: usize) -> Summary {
        Summary {
            len,
            src_mac: String::new(),
            dst_mac: String::new(),
            vlan: None,
            ethertype: String::new(),
            src: None,
            dst: None,
            proto: None,
            sport: None,
            dport: None,
            flags: None,
            fragment: false,
            inner: None,
            malformed: None,
            tags: 0,
            icmp: None,
            text: String::new(),
        }
    }

    /// More than one VLAN tag (the program reads one).
    pub fn stacked_vlans(&self) -> bool {
        self.tags > 1
    }

    /// Summarises an Ethernet frame.
    pub fn of_frame(frame: &[u8]) -> Summary {
        let mut s = Summary::empty(frame.len());
        let packet = match LaxSlicedPacket::from_ethernet(frame) {
            Ok(p) => p,
            Err(_) => {
                s.malformed = Some(format!(
                    "{} bytes: shorter than an Ethernet header",
                    frame.len()
                ));
                s.text = format!("({} bytes: not even an Ethernet header)", frame.len());
                return s;
            }
        };
        let mut ether_type = None;
        if let Some(LinkSlice::Ethernet2(eth)) = &packet.link {
            s.dst_mac = mac(eth.destination());
            s.src_mac = mac(eth.source());
            ether_type = Some(eth.ether_type());
        }
        for ext in &packet.link_exts {
            if let LaxLinkExtSlice::Vlan(v) = ext {
                if s.vlan.is_none() {
                    s.vlan = Some(v.vlan_identifier().value());
                }
                s.tags += 1;
                ether_type = Some(v.ether_type());
            }
        }
        if let Some(t) = ether_type {
            s.ethertype = match t {
                EtherType::IPV4 => "ipv4".into(),
                EtherType::IPV6 => "ipv6".into(),
                EtherType::ARP => "arp".into(),
                other => format!("0x{:04x}", other.0),
            };
        }
        // etherparse goes by the IP version field; the EtherType decides.
        let version = match &packet.net {
            Some(LaxNetSlice::Ipv4(_)) => Some("ipv4"),
            Some(LaxNetSlice::Ipv6(_)) => Some("ipv6"),
            _ => None,
        };
        match version {
            Some(v) if v != s.ethertype => {
                s.malformed = Some(format!(
                    "IP version {} in an {} frame",
                    &v[3..],
                    ip_name(&s.ethertype)
                ));
            }
            _ => {
                s.fill_net(&packet);
                if let Some((err, layer)) = &packet.stop_err {
                    s.malformed = Some(match err {
                        SliceError::Len(_) => format!("{layer} cut short"),
                        _ => format!("invalid {layer}"),
                    });
                }
            }
        }
        let mut text = String::new();
        if let Some(v) = s.vlan {
            let _ = write!(text, "vlan {v}{} ", if s.tags > 1 { "+" } else { "" });
        }
        text.push_str(&s.headline(frame));
        if let Some(m) = &s.malformed {
            let _ = write!(text, " ({m})");
        }
        s.text = text;
        s
    }

    /// Summarises an IP packet (the inside of a tunnel).
    fn of_ip(packet: &[u8]) -> Summary {
        let mut s = Summary::empty(packet.len());
        match LaxSlicedPacket::from_ip(packet) {
            Ok(p) => {
                s.fill_net(&p);
                if let Some((_, layer)) = &p.stop_err {
                    s.malformed = Some(format!("{layer} cut short"));
                }
            }
            Err(_) => s.malformed = Some("unparsable inner IP header".into()),
        }
        s.text = s.headline(packet);
        if let Some(m) = &s.malformed {
            let _ = write!(s.text, " ({m})");
        }
        s
    }

    fn fill_net(&mut self, packet: &LaxSlicedPacket) {
        let payload = match &packet.net {
            Some(LaxNetSlice::Ipv4(ip)) => {
                let h = ip.header();
                self.src = Some(h.source_addr().into());
                self.dst = Some(h.destination_addr().into());
                self.fragment = h.is_fragmenting_payload();
                Some(ip.payload())
            }
            Some(LaxNetSlice::Ipv6(ip)) => {
                let h = ip.header();
                self.src = Some(h.source_addr().into());
                self.dst = Some(h.destination_addr().into());
                self.fragment = ip.is_payload_fragmented();
                Some(ip.payload())
            }
            Some(LaxNetSlice::Arp(_)) | None => None,
        };
        let Some(payload) = payload else { return };
        self.proto = Some(proto_name(payload.ip_number));
        match &packet.transport {
            Some(TransportSlice::Tcp(t)) => {
                self.sport = Some(t.source_port());
                self.dport = Some(t.destination_port());
                self.flags = Some(tcp_flags(t));
            }
            Some(TransportSlice::Udp(u)) => {
                self.sport = Some(u.source_port());
                self.dport = Some(u.destination_port());
            }
            Some(TransportSlice::Icmpv4(i)) => self.icmp = Some(icmp_text(4, i.type_u8())),
            Some(TransportSlice::Icmpv6(i)) => self.icmp = Some(icmp_text(6, i.type_u8())),
            _ => {}
        }
        if !self.fragment
            && (payload.ip_number == IpNumber::IPV4 || payload.ip_number == IpNumber::IPV6)
        {
            self.inner = Some(Box::new(Summary::of_ip(payload.payload)));
        }
    }

    /// Addresses, ports, protocol and flags (no VLAN, no notes).
    fn headline(&self, frame: &[u8]) -> String {
        let (Some(src), Some(dst)) = (self.src, self.dst) else {
            return match self.ethertype.as_str() {
                "arp" => arp_text(frame, self.vlan.is_some()),
                "" => "(no Ethernet header)".into(),
                "ipv4" | "ipv6" => ip_name(&self.ethertype).into(),
                other => format!("ethertype {other}"),
            };
        };
        let proto = self.proto.clone().unwrap_or_default();
        let mut t = match (self.sport, self.dport) {
            (Some(sp), Some(dp)) => format!(
                "{} -> {} {}",
                std::net::SocketAddr::new(src, sp),
                std::net::SocketAddr::new(dst, dp),
                proto.to_uppercase()
            ),
            _ => format!("{src} -> {dst} {}", proto_text(&proto)),
        };
        if let Some(i) = &self.icmp {
            let _ = write!(t, " {i}");
        }
        if let Some(f) = &self.flags {
            let _ = write!(t, " [{f}]");
        }
        if self.fragment {
            t.push_str(" fragment");
        }
        if let Some(inner) = &self.inner {
            let _ = write!(t, " [{}]", inner.text);
        }
        t
    }
}

fn ip_name(ethertype: &str) -> &str {
    match ethertype {
        "ipv4" => "IPv4",
        "ipv6" => "IPv6",
        other => other,
    }
}

fn proto_name(n: IpNumber) -> String {
    match n {
        IpNumber::TCP => "tcp".into(),
        IpNumber::UDP => "udp".into(),
        IpNumber::ICMP => "icmp".into(),
        IpNumber::IPV6_ICMP => "icmpv6".into(),
        IpNumber::IPV4 => "ipip".into(),
        IpNumber::IPV6 => "ipv6-in-ip".into(),
        other => other.0.to_string(),
    }
}

fn icmp_text(version: u8, kind: u8) -> String {
    match (version, kind) {
        (4, 0) | (6, 129) => "echo reply".into(),
        (4, 8) | (6, 128) => "echo request".into(),
        (4, 3) | (6, 1) => "unreachable".into(),
        (4, 11) | (6, 3) => "time exceeded".into(),
        (6, 2) => "packet too big".into(),
        (6, 135) => "neighbor solicitation".into(),
        (6, 136) => "neighbor advertisement".into(),
        (_, k) => format!("type {k}"),
    }
}

fn proto_text(proto: &str) -> String {
    match proto {
        "icmp" => "ICMP".into(),
        "icmpv6" => "ICMPv6".into(),
        "ipip" => "IPIP".into(),
        "ipv6-in-ip" => "IPv6-in-IP".into(),
        "tcp" | "udp" => proto.to_uppercase(),
        number => format!("IP proto {number}"),
    }
}

/// TCP flags in tcpdump's letters and order (`flags`).
fn tcp_flags(t: &TcpSlice) -> String {
    let set = [
        t.fin(),
        t.syn(),
        t.rst(),
        t.psh(),
        t.ack(),
        t.urg(),
        t.ece(),
        t.cwr(),
    ];
    "FSRP.UEW"
        .chars()
        .zip(set)
        .filter_map(|(letter, on)| on.then_some(letter))
        .collect()
}

/// `ARP who-has 198.18.0.1 tell 198.18.0.2` (Ethernet/IPv4 ARP).
fn arp_text(frame: &[u8], tagged: bool) -> String {
    let start = if tagged { 18 } else { 14 };
    let arp = frame.get(start..start + 28);
    let Some(a) = arp.filter(|a| a[4] == 6 && a[5] == 4) else {
        return "ARP".into();
    };
    let ip = |o: usize| std::net::Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]);
    match u16::from_be_bytes([a[6], a[7]]) {
        1 => format!("ARP who-has {} tell {}", ip(24), ip(14)),
        2 => format!(
            "ARP reply {} is-at {}",
            ip(14),
            mac(a[8..14].try_into().unwrap())
        ),
        op => format!("ARP op {op}"),
    }
}

pub fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
