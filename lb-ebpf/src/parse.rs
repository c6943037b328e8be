//! Header parsing: Ethernet (+ one 802.1Q tag), IPv4 (any IHL) or IPv6
//! (extension headers walked up to a fixed depth), then TCP/UDP.
//! Returns `None` for anything the balancer leaves to the kernel:
//! other protocols, fragments, truncated or malformed headers.

use aya_ebpf::programs::XdpContext;
use lb_common::{FAMILY_V4, FAMILY_V6, FlowKey, PROTO_TCP, PROTO_UDP, v4_words, v6_words};
pub use lb_ebpf::ptr_at;
use network_types::{
    eth::{EthHdr, EtherType},
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
    vlan::VlanHdr,
};

/// IPv6 extension headers walked before giving up (and passing the packet):
/// the verifier needs a bound, and real traffic rarely has more than one.
const MAX_EXT_HEADERS: usize = 4;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// A parsed packet: pointers into it (bounds already checked) and its
/// flow key in wire byte order.
pub struct Packet {
    /// Bytes before the IP header: Ethernet, plus 4 for an 802.1Q tag.
    /// (The header is taken anew where it is written, `nat::rewrite`: a
    /// pointer kept here lost its bounds to 5.10's verifier.)
    pub l2_len: usize,
    /// Source and destination ports (first 4 bytes of TCP and UDP).
    pub ports: *mut [u16; 2],
    /// The L4 checksum field (TCP's or UDP's), bounds-checked on every
    /// path; whether it holds a checksum is `has_l4_check` (not an
    /// `Option`: 5.10's verifier, losing which variant was taken, walked the
    /// `Some` arm with the `None` path's unwritten pointer).
    pub l4_check: *mut [u8; 2],
    /// False for a UDP datagram sent without a checksum (IPv4 only).
    pub has_l4_check: bool,
    pub key: FlowKey,
    /// Whole IP packet length, host order, as carried (`carried_len`).
    pub ip_len: u16,
    /// TCP flags (byte 13 of the header: CWR ECE URG ACK PSH RST SYN FIN);
    /// 0 for UDP.
    pub tcp_flags: u8,
    pub frame_len: u64,
}

/// Network header fields the rest of parsing needs.
struct Net {
    /// Offset of the L4 header.
    l4: usize,
    proto: u8,
    src: [u32; 4],
    dst: [u32; 4],
    family: u8,
    ip_len: u16,
}

impl Packet {
    /// A TCP SYN without ACK: a connection's first packet.
    #[inline(always)]
    pub fn opens_connection(&self) -> bool {
        self.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
    }
}

#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Option<Packet> {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    let mut l3 = EthHdr::LEN;
    let mut ether_type = unsafe { (*eth).ether_type };
    if ether_type == EtherType::Ieee8021q as u16 {
        let vlan: *mut VlanHdr = ptr_at(ctx, l3)?;
        ether_type = unsafe { (*vlan).ether_type };
        l3 += VlanHdr::LEN;
    }
    let net = if ether_type == EtherType::Ipv4 as u16 {
        parse_v4(ctx, l3)?
    } else if ether_type == EtherType::Ipv6 as u16 {
        parse_v6(ctx, l3)?
    } else {
        return None;
    };

    let mut tcp_flags = 0;
    let (l4_check, has_l4_check) = match net.proto {
        PROTO_TCP => {
            let tcp: *mut TcpHdr = ptr_at(ctx, net.l4)?;
            // Byte 13: CWR ECE URG ACK PSH RST SYN FIN.
            tcp_flags = unsafe { *(tcp as *const u8).add(13) };
            (unsafe { &raw mut (*tcp).check }, true)
        }
        PROTO_UDP => {
            let udp: *mut UdpHdr = ptr_at(ctx, net.l4)?;
            let check = unsafe { &raw mut (*udp).check };
            // IPv4 only: a zero UDP checksum means "none" (mandatory in IPv6).
            (
                check,
                net.family != FAMILY_V4 || unsafe { *check } != [0, 0],
            )
        }
        _ => return None,
    };
    let ports: *mut [u16; 2] = ptr_at(ctx, net.l4)?;
    let [sport, dport] = unsafe { *ports };

    Some(Packet {
        l2_len: l3,
        ports,
        l4_check,
        has_l4_check,
        key: FlowKey {
            src: net.src,
            dst: net.dst,
            sport,
            dport,
            proto: net.proto,
            family: net.family,
            _pad: [0; 2],
        },
        ip_len: net.ip_len,
        tcp_flags,
        frame_len: (ctx.data_end() - ctx.data()) as u64,
    })
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext, l3: usize) -> Option<Net> {
    let ip: *mut Ipv4Hdr = ptr_at(ctx, l3)?;
    let (vihl, frags, proto) = unsafe { ((*ip).vihl, (*ip).frags, (*ip).proto) };
    // IHL counts 32-bit words; 5..=15 is valid.
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
        return None;
    }
    // More-fragments flag or a fragment offset: not ours to balance.
    if u16::from_be_bytes(frags) & 0x3fff != 0 {
        return None;
    }
    let (src, dst, tot_len) = unsafe { ((*ip).src_addr, (*ip).dst_addr, (*ip).tot_len) };
    Some(Net {
        l4: l3 + ihl,
        proto,
        src: v4_words(src),
        dst: v4_words(dst),
        family: FAMILY_V4,
        ip_len: carried_len(ctx, l3, u16::from_be_bytes(tot_len)),
    })
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext, l3: usize) -> Option<Net> {
    let ip: *mut Ipv6Hdr = ptr_at(ctx, l3)?;
    if unsafe { (*ip).vcf[0] } >> 4 != 6 {
        return None;
    }
    let mut next = unsafe { (*ip).next_hdr };
    let mut l4 = l3 + Ipv6Hdr::LEN;
    for _ in 0..MAX_EXT_HEADERS {
        let len_unit = match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => 8,
            IPPROTO_AH => 4,
            // Fragments are not ours to balance (nor ESP, nor anything else).
            _ => break,
        };
        let hdr: *const [u8; 2] = ptr_at(ctx, l4)?;
        let [nh, len] = unsafe { *hdr };
        next = nh;
        // AH counts 4-byte units minus 2, the others 8-byte units minus 1.
        l4 += if len_unit == 8 {
            (len as usize + 1) * 8
        } else {
            (len as usize + 2) * 4
        };
    }
    if next == IPPROTO_FRAGMENT || (next != PROTO_TCP && next != PROTO_UDP) {
        return None;
    }
    let (src, dst, payload_len) = unsafe { ((*ip).src_addr, (*ip).dst_addr, (*ip).payload_len) };
    Some(Net {
        l4,
        proto: next,
        src: v6_words(src),
        dst: v6_words(dst),
        family: FAMILY_V6,
        ip_len: carried_len(
            ctx,
            l3,
            u16::from_be_bytes(payload_len).saturating_add(Ipv6Hdr::LEN as u16),
        ),
    })
}

/// An IP length as the frame carries it: the header's, or the bytes from
/// `l3` to the frame's end if fewer (a packet cut short, or lying about
/// its length). What is sent on is that long: the FIB's MTU check and a
/// tunnel's outer length go by it (computed from the field alone, the
/// outer length wrapped past 65535).
#[inline(always)]
pub fn carried_len(ctx: &XdpContext, l3: usize, len: u16) -> u16 {
    let room = ctx.data_end() - ctx.data() - l3;
    if len as usize > room {
        room as u16
    } else {
        len
    }
}
