//! Header parsing: Ethernet (+ one 802.1Q tag), IPv4 (any IHL), TCP/UDP.
//! Returns `None` for anything the balancer leaves to the kernel:
//! other protocols, fragments, truncated or malformed headers.

use core::mem;

use aya_ebpf::programs::XdpContext;
use lb_common::{FAMILY_V4, FlowKey, PROTO_TCP, PROTO_UDP};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
    tcp::TcpHdr,
    udp::UdpHdr,
    vlan::VlanHdr,
};

/// A parsed packet: pointers into it (bounds already checked) and its
/// flow key in wire byte order.
pub struct Packet {
    pub eth: *mut EthHdr,
    pub ip: *mut Ipv4Hdr,
    /// Source and destination ports (first 4 bytes of TCP and UDP).
    pub ports: *mut [u16; 2],
    /// The L4 checksum field; `None` for a UDP datagram sent without one.
    pub l4_check: Option<*mut [u8; 2]>,
    pub key: FlowKey,
    pub frame_len: u64,
}

/// The one bounds-checked way to point into the packet.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
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
    if ether_type != EtherType::Ipv4 as u16 {
        return None;
    }

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
    let l4 = l3 + ihl;

    let l4_check = match proto {
        PROTO_TCP => {
            let tcp: *mut TcpHdr = ptr_at(ctx, l4)?;
            Some(unsafe { &raw mut (*tcp).check })
        }
        PROTO_UDP => {
            let udp: *mut UdpHdr = ptr_at(ctx, l4)?;
            let check = unsafe { &raw mut (*udp).check };
            if unsafe { *check } == [0, 0] {
                None
            } else {
                Some(check)
            }
        }
        _ => return None,
    };
    let ports: *mut [u16; 2] = ptr_at(ctx, l4)?;
    let [sport, dport] = unsafe { *ports };
    let (src, dst) = unsafe { ((*ip).src_addr, (*ip).dst_addr) };

    Some(Packet {
        eth,
        ip,
        ports,
        l4_check,
        key: FlowKey {
            src: [u32::from_ne_bytes(src), 0, 0, 0],
            dst: [u32::from_ne_bytes(dst), 0, 0, 0],
            sport,
            dport,
            proto,
            family: FAMILY_V4,
            _pad: [0; 2],
        },
        frame_len: (ctx.data_end() - ctx.data()) as u64,
    })
}
