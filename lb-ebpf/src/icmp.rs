//! ICMP for VIPs. Echo requests to a VIP whose service enables it are
//! answered here. Errors about a balanced flow (destination unreachable,
//! fragmentation needed / packet too big, time exceeded) arrive at the VIP
//! (they are about packets the VIP sent: nat replies, or dsr/tunnel backends'
//! own replies) and are handed to that flow's backend — translated in nat
//! mode, so it recognises its own packet — as Katran does: path MTU
//! discovery keeps working through the balancer.

use aya_ebpf::{bindings::xdp_action::XDP_TX, programs::XdpContext};
use lb_common::{
    Backend, FAMILY_V4, FAMILY_V6, Flow, FlowKey, Globals, MODE_DSR, MODE_ECHO, MODE_TUNNEL,
    PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, ServiceKey,
    csum::{replace2, replace4},
    v4_bytes, v4_words, v6_bytes, v6_words,
};
use lb_ebpf::{ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6};
use network_types::ip::{Ipv4Hdr, Ipv6Hdr};

use crate::{
    BACKENDS, FLOWS, PENDING, SERVICES,
    fib::{self, Route},
    parse::{self, ptr_at},
    service, stats,
    tunnel::{self, Inner},
};

/// The outer IP header of an ICMP packet.
#[derive(Clone, Copy)]
enum Outer {
    V4(*mut Ipv4Hdr),
    V6(*mut Ipv6Hdr),
}

struct Msg {
    l2_len: usize,
    outer: Outer,
    family: u8,
    src: [u32; 4],
    dst: [u32; 4],
    ip_len: u16,
    /// Offset of the ICMP header.
    at: usize,
    kind: u8,
}

/// An ICMP or ICMPv6 message (no fragments, no IPv6 extension headers).
#[inline(always)]
fn parse(ctx: &XdpContext) -> Option<Msg> {
    let mut l2 = 14;
    let mut ethertype = u16::from_be_bytes(unsafe { *ptr_at::<[u8; 2]>(ctx, 12)? });
    if ethertype == ETH_P_8021Q {
        ethertype = u16::from_be_bytes(unsafe { *ptr_at::<[u8; 2]>(ctx, 16)? });
        l2 = 18;
    }
    let (outer, family, src, dst, ip_len, at) = if ethertype == ETH_P_IP {
        let ip: *mut Ipv4Hdr = ptr_at(ctx, l2)?;
        let h = unsafe { &*ip };
        let ihl = ((h.vihl & 0x0f) as usize) * 4;
        if h.vihl >> 4 != 4
            || ihl < 20
            || h.proto != PROTO_ICMP
            || u16::from_be_bytes(h.frags) & 0x3fff != 0
        {
            return None;
        }
        let src = v4_words(h.src_addr);
        let dst = v4_words(h.dst_addr);
        let len = parse::carried_len(ctx, l2, u16::from_be_bytes(h.tot_len));
        (Outer::V4(ip), FAMILY_V4, src, dst, len, l2 + ihl)
    } else if ethertype == ETH_P_IPV6 {
        let ip: *mut Ipv6Hdr = ptr_at(ctx, l2)?;
        let h = unsafe { &*ip };
        if h.vcf[0] >> 4 != 6 || h.next_hdr != PROTO_ICMPV6 {
            return None;
        }
        let len = parse::carried_len(
            ctx,
            l2,
            u16::from_be_bytes(h.payload_len).saturating_add(40),
        );
        let (src, dst) = (v6_words(h.src_addr), v6_words(h.dst_addr));
        (Outer::V6(ip), FAMILY_V6, src, dst, len, l2 + 40)
    } else {
        return None;
    };
    let head: [u8; 4] = unsafe { *ptr_at::<[u8; 4]>(ctx, at)? };
    Some(Msg {
        l2_len: l2,
        outer,
        family,
        src,
        dst,
        ip_len,
        at,
        kind: head[0],
    })
}

/// `None`: not for the balancer; the caller passes it to the kernel.
#[inline(always)]
pub fn handle(ctx: &XdpContext, globals: &Globals) -> Option<u32> {
    let msg = parse(ctx)?;
    let v4 = msg.family == FAMILY_V4;
    match (v4, msg.kind) {
        (true, 8) | (false, 128) => echo(ctx, &msg),
        (true, 3 | 11) | (false, 1..=3) => error(ctx, &msg, globals),
        _ => None,
    }
}

/// Echo request to a VIP with `icmp_echo`: answered from the VIP.
#[inline(always)]
fn echo(ctx: &XdpContext, msg: &Msg) -> Option<u32> {
    let proto = if msg.family == FAMILY_V4 {
        PROTO_ICMP
    } else {
        PROTO_ICMPV6
    };
    let key = ServiceKey {
        addr: msg.dst,
        port: 0,
        proto,
        family: msg.family,
    };
    let svc = unsafe { SERVICES.get(key) }?;
    if svc.mode != MODE_ECHO {
        return None;
    }
    stats::count_service(svc.id, (ctx.data_end() - ctx.data()) as u64);
    let reply = if msg.family == FAMILY_V4 { 0 } else { 129 };
    // Back to where it came from: swap MACs and addresses (the checksums do
    // not mind a swap), and the type.
    let eth: *mut [u8; 12] = ptr_at(ctx, 0)?;
    unsafe {
        let mut m = *eth;
        m.rotate_left(6);
        *eth = m;
    }
    match msg.outer {
        Outer::V4(ip) => unsafe {
            let h = &mut *ip;
            core::mem::swap(&mut h.src_addr, &mut h.dst_addr);
        },
        Outer::V6(ip) => unsafe {
            let h = &mut *ip;
            core::mem::swap(&mut h.src_addr, &mut h.dst_addr);
        },
    }
    let head: *mut [u8; 4] = ptr_at(ctx, msg.at)?;
    unsafe {
        let mut h = *head;
        let old = u16::from_ne_bytes([h[0], h[1]]);
        h[0] = reply;
        let new = u16::from_ne_bytes([h[0], h[1]]);
        let c = replace2(u16::from_ne_bytes([h[2], h[3]]), old, new);
        h[2..4].copy_from_slice(&c.to_ne_bytes());
        *head = h;
    }
    Some(XDP_TX)
}

/// Where an error's quoted packet sits and what it is.
struct Quoted {
    /// Offset of the quoted IP header.
    ip: usize,
    /// Offset of its L4 header.
    l4: usize,
    proto: u8,
    src: [u32; 4],
    dst: [u32; 4],
    sport: u16,
    dport: u16,
}

#[inline(always)]
fn quoted(ctx: &XdpContext, msg: &Msg) -> Option<Quoted> {
    let ip = msg.at + 8;
    let (proto, src, dst, l4) = if msg.family == FAMILY_V4 {
        let h: *const Ipv4Hdr = ptr_at(ctx, ip)?;
        let h = unsafe { &*h };
        let ihl = ((h.vihl & 0x0f) as usize) * 4;
        if h.vihl >> 4 != 4 || ihl < 20 {
            return None;
        }
        let src = v4_words(h.src_addr);
        let dst = v4_words(h.dst_addr);
        (h.proto, src, dst, ip + ihl)
    } else {
        let h: *const Ipv6Hdr = ptr_at(ctx, ip)?;
        let h = unsafe { &*h };
        (
            h.next_hdr,
            v6_words(h.src_addr),
            v6_words(h.dst_addr),
            ip + 40,
        )
    };
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    let ports = ptr_at::<[u16; 2]>(ctx, l4)?;
    // The quote ends where the ICMP message does: bytes after it in the
    // frame (padding) are not the quoted packet's. (Compared after the
    // bounds check: before it, LLVM would take it as proof enough and drop
    // the check the verifier needs.)
    if l4 + 4 > msg.l2_len + msg.ip_len as usize {
        return None;
    }
    let [sport, dport] = unsafe { *ports };
    Some(Quoted {
        ip,
        l4,
        proto,
        src,
        dst,
        sport,
        dport,
    })
}

/// An error about a packet the VIP sent: to the backend of its flow.
#[inline(always)]
fn error(ctx: &XdpContext, msg: &Msg, globals: &Globals) -> Option<u32> {
    let q = quoted(ctx, msg)?;
    if q.src != msg.dst {
        return None; // not about a packet from this VIP
    }
    // The flow as the client sent it.
    let key = FlowKey {
        src: q.dst,
        dst: q.src,
        sport: q.dport,
        dport: q.sport,
        proto: q.proto,
        family: msg.family,
        _pad: [0; 2],
    };
    let svc = service(&key, globals.flags)?;
    // Confirmed or not (path MTU discovery during a handshake too).
    let flow = unsafe { FLOWS.get(key).or_else(|| PENDING.get(key)) }.copied()?;
    let backend = *BACKENDS.get(flow.backend)?;
    stats::count_service(svc.id, (ctx.data_end() - ctx.data()) as u64);
    let proto = if msg.family == FAMILY_V4 {
        PROTO_ICMP
    } else {
        PROTO_ICMPV6
    };
    let route = match svc.mode {
        MODE_DSR => Route {
            family: msg.family,
            proto,
            src: msg.src,
            dst: backend.addr,
            sport: 0,
            dport: 0,
            ip_len: msg.ip_len,
        },
        MODE_TUNNEL => {
            let inner = Inner {
                l2_len: msg.l2_len,
                ip_len: msg.ip_len,
                key: &key,
            };
            tunnel::encap(ctx, &inner, &backend, svc.encap, globals)?
        }
        _ => {
            translate(ctx, msg, &q, &flow, &backend, globals)?;
            Route {
                family: msg.family,
                proto,
                src: msg.src,
                dst: backend.addr,
                sport: 0,
                dport: 0,
                ip_len: msg.ip_len,
            }
        }
    };
    Some(fib::forward(ctx, &route, globals.flags, None, 0))
}

/// nat mode: make the error look like it is about the packet the backend
/// really sent (backend:port -> SNAT address:port), addressed to the
/// backend. Every checksum covering a changed byte is updated: the outer
/// IPv4 header, the quoted IPv4 header and L4 header (when quoted in full),
/// and the ICMP checksum over all of it (ICMPv6: also its pseudo-header).
#[inline(always)]
fn translate(
    ctx: &XdpContext,
    msg: &Msg,
    q: &Quoted,
    flow: &Flow,
    backend: &Backend,
    globals: &Globals,
) -> Option<()> {
    let new_src = backend.addr;
    let new_dst = globals.snat(msg.family);
    let (new_sport, new_dport) = (flow.backend_port, flow.snat_port);
    let n = if msg.family == FAMILY_V4 { 1 } else { 4 };
    let mut c = u16::from_ne_bytes(unsafe { *ptr_at::<[u8; 2]>(ctx, msg.at + 2)? });

    // Outer destination: the VIP becomes the backend.
    match msg.outer {
        Outer::V4(ip) => unsafe {
            let h = &mut *ip;
            let check = replace4(u16::from_ne_bytes(h.check), msg.dst[0], backend.addr[0]);
            h.check = check.to_ne_bytes();
            h.dst_addr = v4_bytes(&backend.addr);
        },
        Outer::V6(ip) => unsafe {
            // ICMPv6's pseudo-header holds the outer addresses.
            for i in 0..4 {
                c = replace4(c, msg.dst[i], backend.addr[i]);
            }
            (*ip).dst_addr = v6_bytes(&backend.addr);
        },
    }

    // The quoted L4 checksum, if quoted (its pseudo-header and ports change).
    let l4_check_at = q.l4 + if q.proto == PROTO_TCP { 16 } else { 6 };
    if let Some(p) = ptr_at::<[u8; 2]>(ctx, l4_check_at)
        && l4_check_at + 2 <= msg.l2_len + msg.ip_len as usize
    {
        let old = u16::from_ne_bytes(unsafe { *p });
        if old != 0 || q.proto == PROTO_TCP {
            let mut l4 = old;
            for i in 0..n {
                l4 = replace4(replace4(l4, q.src[i], new_src[i]), q.dst[i], new_dst[i]);
            }
            l4 = replace2(replace2(l4, q.sport, new_sport), q.dport, new_dport);
            unsafe { *p = l4.to_ne_bytes() };
            c = replace2(c, old, l4);
        }
    }

    // The quoted IP header.
    if msg.family == FAMILY_V4 {
        let h: *mut Ipv4Hdr = ptr_at(ctx, q.ip)?;
        let h = unsafe { &mut *h };
        let old = u16::from_ne_bytes(h.check);
        let check = replace4(replace4(old, q.src[0], new_src[0]), q.dst[0], new_dst[0]);
        h.check = check.to_ne_bytes();
        h.src_addr = v4_bytes(&new_src);
        h.dst_addr = v4_bytes(&new_dst);
        c = replace2(c, old, check);
    } else {
        let h: *mut Ipv6Hdr = ptr_at(ctx, q.ip)?;
        let h = unsafe { &mut *h };
        h.src_addr = v6_bytes(&new_src);
        h.dst_addr = v6_bytes(&new_dst);
    }
    for i in 0..n {
        c = replace4(replace4(c, q.src[i], new_src[i]), q.dst[i], new_dst[i]);
    }
    let ports: *mut [u16; 2] = ptr_at(ctx, q.l4)?;
    unsafe { *ports = [new_sport, new_dport] };
    c = replace2(replace2(c, q.sport, new_sport), q.dport, new_dport);
    let check: *mut [u8; 2] = ptr_at(ctx, msg.at + 2)?;
    unsafe { *check = c.to_ne_bytes() };
    Some(())
}
