//! The hand-off between the entry program and the stage it tail-calls.
//!
//! Why two programs: the verifier walks every path, and the parser alone
//! ends in many distinct states (VLAN tag or not, any IPv4 header length,
//! up to four IPv6 extension headers, TCP or UDP). Inlined into one
//! program, the balancing code behind it was verified once per parser
//! state: close to the 1M-instruction limit on 6.18, over it on 6.1. The
//! parser's results cross the tail call as plain numbers in a per-CPU
//! scratch entry, so the stage behind it is verified once, with offsets it
//! checks again. XDP runs a packet start to finish on one CPU, so nothing
//! else writes the scratch entry in between.

use aya_ebpf::{macros::map, maps::PerCpuArray, programs::XdpContext};
use lb_common::{FlowKey, PROTO_TCP, ServiceMeta};
use network_types::{eth::EthHdr, tcp::TcpHdr, udp::UdpHdr, vlan::VlanHdr};

use crate::parse::{Packet, ptr_at};

/// Offsets are checked against this before use: the verifier needs a bound
/// on them, and no XDP frame is this long.
const MAX_OFFSET: usize = 0x3fff;
const ETH_VLAN_LEN: usize = EthHdr::LEN + VlanHdr::LEN;

/// A parsed packet as plain numbers (see [`Packet`]), and for a packet to a
/// service, that service.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Handoff {
    pub key: FlowKey,
    pub svc: ServiceMeta,
    frame_len: u32,
    l2_len: u16,
    l4_off: u16,
    ip_len: u16,
    tcp_flags: u8,
    has_l4_check: u8,
    /// The entry program found no confirmed flow: for a packet to a
    /// service, no `FLOWS` entry (`flow::Fast::NoFlow`); for a reply, no
    /// `NAT_REV` entry.
    no_flow: u8,
    /// `flow::now_secs()` as the entry program read it (one clock read a
    /// packet).
    pub now: u32,
}

/// One entry: the packet in flight on this CPU.
#[map]
static HANDOFF: PerCpuArray<Handoff> = PerCpuArray::with_max_entries(1, 0);

/// Stores `pkt` (and `svc`, if any) for the stage about to be tail-called.
#[inline(always)]
pub fn save(
    ctx: &XdpContext,
    pkt: &Packet,
    svc: Option<&ServiceMeta>,
    no_flow: bool,
    now: u32,
) -> Option<()> {
    let h = HANDOFF.get_ptr_mut(0)?;
    let l4_off = pkt.ports as usize - ctx.data();
    unsafe {
        *h = Handoff {
            key: pkt.key,
            svc: svc.copied().unwrap_or_default(),
            frame_len: pkt.frame_len as u32,
            l2_len: pkt.l2_len as u16,
            l4_off: l4_off as u16,
            ip_len: pkt.ip_len,
            tcp_flags: pkt.tcp_flags,
            has_l4_check: pkt.has_l4_check as u8,
            no_flow: no_flow as u8,
            now,
        }
    };
    Some(())
}

impl Handoff {
    #[inline(always)]
    pub fn no_flow(&self) -> bool {
        self.no_flow != 0
    }

    /// Offset of the L4 header, bounded for the verifier (`None`: beyond
    /// any frame). A pointer difference would be unbounded to it.
    #[inline(always)]
    pub fn l4_offset(&self) -> Option<usize> {
        let l4 = self.l4_off as usize;
        (l4 <= MAX_OFFSET).then_some(l4)
    }
}

/// The packet `save` stored, its pointers taken (and checked) anew.
#[inline(always)]
pub fn restore(ctx: &XdpContext) -> Option<(Packet, &'static Handoff)> {
    let h: &'static Handoff = unsafe { &*HANDOFF.get_ptr(0)? };
    // Ethernet, or Ethernet and one 802.1Q tag: a constant offset is
    // cheaper to verify (and for LLVM to keep checked) than a variable one.
    let l2_len = if h.l2_len as usize == ETH_VLAN_LEN {
        ETH_VLAN_LEN
    } else {
        EthHdr::LEN
    };
    let l4 = h.l4_offset()?;
    let l4_check = if h.key.proto == PROTO_TCP {
        let tcp: *mut TcpHdr = ptr_at(ctx, l4)?;
        unsafe { &raw mut (*tcp).check }
    } else {
        let udp: *mut UdpHdr = ptr_at(ctx, l4)?;
        unsafe { &raw mut (*udp).check }
    };
    let pkt = Packet {
        l2_len,
        ports: ptr_at(ctx, l4)?,
        l4_check,
        has_l4_check: h.has_l4_check != 0,
        key: h.key,
        ip_len: h.ip_len,
        tcp_flags: h.tcp_flags,
        frame_len: h.frame_len as u64,
    };
    Some((pkt, h))
}
