//! Spotting frames with a partial L4 checksum. A sender with TX checksum
//! offload (a veth or a VM's tap with `tx` on) leaves in the checksum field
//! only the sum of the pseudo-header, for the NIC to finish; a real NIC's
//! receiver never sees one, but XDP on the peer of such a device does. The
//! balancer forwards it as it is (its incremental update keeps it partial)
//! and the backend drops it (`TcpInCsumErrors`): "xdplb does not forward".
//! Checked on a flow's first packet only, counted and reported by ingress
//! interface so the daemon can name the fix (`ethtool -K SENDER tx off`).
//! A full checksum equal to the pseudo-header's sum is possible but rare
//! (one in 65536): a count, not a verdict (the daemon warns only when
//! they are a real share of new flows).

use aya_ebpf::{macros::map, maps::HashMap, programs::XdpContext};
use lb_common::{
    FlowKey, PARTIAL_CSUM_IFACES, STAT_PARTIAL_CSUM,
    csum::{addr_sum, fold},
};

use crate::{parse::Packet, stats};

/// Ingress ifindex -> 1: interfaces a partial checksum arrived on.
#[map]
static PARTIAL_CSUM: HashMap<u32, u32> = HashMap::with_max_entries(PARTIAL_CSUM_IFACES, 0);

/// Counts `pkt` if its L4 checksum holds only the pseudo-header's sum.
/// `l4_len`: TCP/UDP header and payload, bytes.
#[inline(always)]
pub fn check(ctx: &XdpContext, pkt: &Packet, l4_len: u16) {
    if !pkt.has_l4_check {
        return;
    }
    let field = pkt.l4_check;
    let key: &FlowKey = &pkt.key;
    // The pseudo-header: addresses, protocol, L4 length (wire order words).
    let sum = fold(addr_sum(&key.src)) as u32
        + fold(addr_sum(&key.dst)) as u32
        + u16::from_ne_bytes([0, key.proto]) as u32
        + u16::from_ne_bytes(l4_len.to_be_bytes()) as u32;
    let partial = fold(sum);
    if u16::from_ne_bytes(unsafe { *field }) == partial {
        stats::bump(STAT_PARTIAL_CSUM);
        let _ = PARTIAL_CSUM.insert(ctx.ingress_ifindex() as u32, 1, 0);
    }
}

/// The L4 length of `pkt` (from its IP header's length), or `None` if the
/// header's length is shorter than its own headers.
#[inline(always)]
pub fn l4_len(pkt: &Packet, l4: usize) -> Option<u16> {
    // `ip_len` counts the IP headers (IPv6: its extension headers too).
    pkt.ip_len.checked_sub(l4.checked_sub(pkt.l2_len)? as u16)
}
