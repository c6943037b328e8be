//! Packet tests: frames run through the real XDP program with
//! BPF_PROG_TEST_RUN, its maps filled by the daemon's own code from a YAML
//! config. They run inside a namespace whose routes and static neighbours
//! let `bpf_fib_lookup` answer, so the forwarding step is real too.
//! Every output is checked field by field, checksums recomputed.
//!
//! Needs root and the built XDP program.

use std::{
    cell::RefCell,
    net::{Ipv4Addr, Ipv6Addr},
};

use aya::{
    maps::{MapData, RingBuf},
    programs::{TestRun, TestRunOptions},
};
use etherparse::{
    IpHeaders, IpNumber, Ipv4Header, Ipv4Options, NetSlice, PacketBuilder, SlicedPacket,
    TransportSlice,
};
use lb_common::{NeighEvent, STAT_FIB_CACHED, STAT_NEIGH_MISS};
use lb_testbed::{
    fib_net::{CLIENT, CLIENT_MAC, CLIENT6, FibNet, LBB_MAC, LBC_MAC, backend_mac, backend6},
    netns,
};
use xdplb::{config::Config, dataplane::Dataplane, plan};

const PASS: u32 = 2;
const DROP: u32 = 1;
const REDIRECT: u32 = 4;

const SNAT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const WEB_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
const DNS_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 11);
const LOST_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 12);

const CONFIG: &str = r#"
interfaces: [lbc, lbb]
snat: { ipv4: 198.18.1.1, ipv6: "2001:db8:1::1", ports: 20000-29999 }
limits: { max_services: 16, max_backends: 32, maglev_table_size: 1021, flow_table_size: 4096 }
flow_timeouts: { tcp: 1h, tcp_closing: 1s, udp: 1s }
services:
  - name: web
    vip: 198.18.100.10
    port: 80
    protocol: tcp
    icmp_echo: true
    backends:
      - { address: 198.18.1.11, port: 8080 }
      - { address: 198.18.1.12, port: 8080 }
      - { address: 198.18.1.13, port: 8080 }
  - name: dns
    vip: 198.18.100.11
    port: 53
    protocol: udp
    backends:
      - { address: 198.18.1.11, port: 5353 }
      - { address: 198.18.1.12, port: 5353 }
  - name: lost
    vip: 198.18.100.12
    port: 80
    protocol: tcp
    backends:
      - { address: 198.18.1.14, port: 8080 }
  - name: web6
    vip: "2001:db8:100::10"
    port: 80
    protocol: tcp
    icmp_echo: true
    backends:
      - { address: "2001:db8:1::11", port: 8080 }
      - { address: "2001:db8:1::12", port: 8080 }
  - name: dns6
    vip: "2001:db8:100::11"
    port: 53
    protocol: udp
    backends:
      - { address: "2001:db8:1::11", port: 5353 }
  - name: dsr
    vip: 198.18.100.20
    port: 80
    protocol: tcp
    mode: dsr
    backends:
      - { address: 198.18.1.11, port: 80 }
      - { address: 198.18.1.12, port: 80 }
  - name: any
    vip: 198.18.100.30
    port: 0
    protocol: tcp
    backends:
      - { address: 198.18.1.11, port: 0 }
      - { address: 198.18.1.12, port: 0 }
  - name: sticky
    vip: 198.18.100.31
    port: 80
    protocol: tcp
    hash: source-ip
    backends:
      - { address: 198.18.1.11, port: 8080 }
      - { address: 198.18.1.12, port: 8080 }
      - { address: 198.18.1.13, port: 8080 }
  - name: tun4
    vip: 198.18.100.40
    port: 80
    mode: tunnel
    backends: [{ address: 198.18.1.11, port: 80 }]
  - name: tun6
    vip: "2001:db8:100::40"
    port: 80
    mode: tunnel
    backends: [{ address: "2001:db8:1::11", port: 80 }]
  - name: tun46
    vip: 198.18.100.41
    port: 80
    mode: tunnel
    backends: [{ address: "2001:db8:1::12", port: 80 }]
  - name: gue4
    vip: 198.18.100.42
    port: 80
    mode: tunnel
    encap: gue
    backends: [{ address: 198.18.1.12, port: 80 }]
  - name: gue6
    vip: "2001:db8:100::42"
    port: 80
    mode: tunnel
    encap: gue
    backends: [{ address: "2001:db8:1::13", port: 80 }]
  - name: dsr6
    vip: "2001:db8:100::20"
    port: 80
    protocol: tcp
    mode: dsr
    backends:
      - { address: "2001:db8:1::11", port: 80 }
      - { address: "2001:db8:1::12", port: 80 }
"#;

const WEB6_VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10);
const DNS6_VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x11);
const DSR_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 20);
const DSR6_VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x20);
const SNAT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);

fn tcp6(src_mac: [u8; 6], src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(src_mac, LBC_MAC)
        .ipv6(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1000, 64240)
        .syn()
        .write(&mut v, b"hello6")
        .unwrap();
    v
}

/// The program loaded and configured, inside the bed's namespace.
struct Lb {
    dp: Dataplane,
    plan: plan::Plan,
    neigh_events: RefCell<RingBuf<MapData>>,
}

impl Lb {
    fn new() -> Lb {
        let cfg = Config::from_yaml(CONFIG).expect("test config is valid");
        let plan = plan::from_config(&cfg).unwrap();
        let mut dp = Dataplane::load(&cfg.limits, None).expect("program loads (verifier)");
        dp.apply(&plan).unwrap();
        let neigh_events = RefCell::new(dp.take_neigh_events().unwrap());
        Lb {
            dp,
            plan,
            neigh_events,
        }
    }

    /// Runs one frame; returns the verdict and the output frame.
    fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        let mut out = vec![0u8; frame.len() + 256];
        let r = self
            .dp
            .program()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }

    fn global(&self, slot: u32) -> u64 {
        self.dp.counters(&[], &[]).unwrap().global[slot as usize]
    }
}

/// Runs `f` with a fresh namespace and program, inside the namespace.
/// Backends .11-.13 have static neighbours, .14 (service `lost`) none.
fn with_lb(f: impl FnOnce(&FibNet, &mut Lb) + Send) {
    let bed = FibNet::create(11..=13).unwrap();
    netns::run_in(&bed.ns.clone(), || {
        let mut lb = Lb::new();
        f(&bed, &mut lb);
        Ok(())
    })
    .unwrap();
}

fn tcp_syn(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LBC_MAC)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1000, 64240)
        .syn()
        .write(&mut v, b"hello")
        .unwrap();
    v
}

fn tcp_from(src_mac: [u8; 6], src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(src_mac, LBB_MAC)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 5000, 64240)
        .syn()
        .ack(1001)
        .write(&mut v, b"world")
        .unwrap();
    v
}

fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LBC_MAC)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(sport, dport)
        .write(&mut v, payload)
        .unwrap();
    v
}

/// Fields of an output frame, after checking every checksum in it.
#[derive(Debug, PartialEq)]
struct Out<A> {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: A,
    dst: A,
    sport: u16,
    dport: u16,
    /// TTL or hop limit.
    ttl: u8,
    payload: Vec<u8>,
}

/// Ports and payload of the L4 header, its checksum verified with the
/// given pseudo-header computations.
fn transport(
    p: &SlicedPacket,
    tcp_sum: impl Fn(&etherparse::TcpHeader, &[u8]) -> u16,
    udp_sum: impl Fn(&etherparse::UdpHeader, &[u8]) -> u16,
) -> (u16, u16, Vec<u8>) {
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            let h = t.to_header();
            assert_eq!(h.checksum, tcp_sum(&h, t.payload()), "TCP checksum");
            (h.source_port, h.destination_port, t.payload().to_vec())
        }
        Some(TransportSlice::Udp(u)) => {
            let h = u.to_header();
            if h.checksum != 0 {
                assert_eq!(h.checksum, udp_sum(&h, u.payload()), "UDP checksum");
            }
            (h.source_port, h.destination_port, u.payload().to_vec())
        }
        other => panic!("unexpected transport {other:?}"),
    }
}

fn macs(frame: &[u8]) -> ([u8; 6], [u8; 6]) {
    (
        frame[0..6].try_into().unwrap(),
        frame[6..12].try_into().unwrap(),
    )
}

fn inspect(frame: &[u8]) -> Out<Ipv4Addr> {
    let p = SlicedPacket::from_ethernet(frame).expect("output parses");
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not IPv4")
    };
    let iph = ip.header().to_header();
    assert_eq!(
        iph.header_checksum,
        iph.calc_header_checksum(),
        "IPv4 header checksum"
    );
    let (sport, dport, payload) = transport(
        &p,
        |t, pl| t.calc_checksum_ipv4(&iph, pl).unwrap(),
        |u, pl| u.calc_checksum_ipv4(&iph, pl).unwrap(),
    );
    let (dst_mac, src_mac) = macs(frame);
    Out {
        dst_mac,
        src_mac,
        src: Ipv4Addr::from(iph.source),
        dst: Ipv4Addr::from(iph.destination),
        sport,
        dport,
        ttl: iph.time_to_live,
        payload,
    }
}

fn inspect6(frame: &[u8]) -> Out<Ipv6Addr> {
    let p = SlicedPacket::from_ethernet(frame).expect("output parses");
    let Some(NetSlice::Ipv6(ip)) = &p.net else {
        panic!("not IPv6")
    };
    let iph = ip.header().to_header();
    let (sport, dport, payload) = transport(
        &p,
        |t, pl| t.calc_checksum_ipv6(&iph, pl).unwrap(),
        |u, pl| u.calc_checksum_ipv6(&iph, pl).unwrap(),
    );
    let (dst_mac, src_mac) = macs(frame);
    Out {
        dst_mac,
        src_mac,
        src: Ipv6Addr::from(iph.source),
        dst: Ipv6Addr::from(iph.destination),
        sport,
        dport,
        ttl: iph.hop_limit,
        payload,
    }
}

fn web_backends() -> Vec<Ipv4Addr> {
    (11..=13).map(|i| Ipv4Addr::new(198, 18, 1, i)).collect()
}

#[test]
fn traffic_the_balancer_does_not_own_passes_untouched() {
    with_lb(|_, lb| {
        let mut arp = Vec::new();
        arp.extend_from_slice(&[0xff; 6]);
        arp.extend_from_slice(&CLIENT_MAC);
        arp.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        arp.extend_from_slice(&CLIENT_MAC);
        arp.extend_from_slice(&CLIENT.octets());
        arp.extend_from_slice(&[0; 6]);
        arp.extend_from_slice(&[198, 18, 0, 1]);

        let mut ipv6 = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, LBC_MAC)
            .ipv6(
                [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                64,
            )
            .tcp(40000, 80, 1, 100)
            .write(&mut ipv6, &[])
            .unwrap();
        let mut icmp = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, LBC_MAC)
            .ipv4(CLIENT.octets(), DNS_VIP.octets(), 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut icmp, b"ping")
            .unwrap();

        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("ARP request", arp),
            ("IPv6", ipv6),
            ("ICMP echo to a VIP without icmp_echo", icmp),
            (
                "TCP to a non-VIP address",
                tcp_syn(CLIENT, 40000, Ipv4Addr::new(198, 18, 0, 1), 22),
            ),
            (
                "TCP to a VIP on another port",
                tcp_syn(CLIENT, 40000, WEB_VIP, 81),
            ),
            (
                "UDP to a TCP service",
                udp(CLIENT, 40000, WEB_VIP, 80, b"x"),
            ),
            (
                "TCP to the SNAT address, no NAT entry",
                tcp_from(
                    backend_mac(web_backends()[0]),
                    web_backends()[0],
                    8080,
                    SNAT,
                    20001,
                ),
            ),
        ];
        for (name, frame) in cases {
            let (verdict, out) = lb.run(&frame);
            assert_eq!(verdict, PASS, "{name}");
            assert_eq!(out, frame, "{name}: must not be modified");
        }
    });
}

#[test]
fn malformed_and_fragmented_packets_pass_untouched() {
    with_lb(|_, lb| {
        let syn = tcp_syn(CLIENT, 40000, WEB_VIP, 80);
        let mut cases: Vec<(&str, Vec<u8>)> = vec![
            // (test_run refuses frames shorter than an Ethernet header.)
            ("Ethernet header alone, type IPv4", syn[..14].to_vec()),
            ("IPv4 header cut", syn[..14 + 12].to_vec()),
            ("TCP header cut", syn[..14 + 20 + 10].to_vec()),
        ];
        let mut bad_ihl = syn.clone();
        bad_ihl[14] = 0x44; // IHL 4 words: shorter than the fixed header
        cases.push(("IHL below 5", bad_ihl));
        let mut bad_version = syn.clone();
        bad_version[14] = 0x65;
        cases.push(("IP version 6 in an IPv4 frame", bad_version));
        // Fragments are not ours (the L4 header is only in the first one).
        // Checksums are left stale on purpose: the program must not care.
        let mut first_frag = syn.clone();
        first_frag[14 + 6] = 0x20; // MF
        cases.push(("first fragment", first_frag));
        let mut later_frag = syn.clone();
        later_frag[14 + 7] = 0x10; // offset 16*8 bytes
        cases.push(("later fragment", later_frag));
        for (name, frame) in cases {
            let (verdict, out) = lb.run(&frame);
            assert_eq!(verdict, PASS, "{name}");
            assert_eq!(out, frame, "{name}: must not be modified");
        }
    });
}

#[test]
fn syn_to_vip_is_nat_ed_and_the_reply_translated_back() {
    with_lb(|_, lb| {
        let syn = tcp_syn(CLIENT, 40000, WEB_VIP, 80);
        let (verdict, out) = lb.run(&syn);
        assert_eq!(verdict, REDIRECT, "forwarded out of lbb");
        let o = inspect(&out);
        assert!(web_backends().contains(&o.dst), "{o:?}");
        assert_eq!(o.dport, 8080);
        assert_eq!(o.src, SNAT);
        assert!((20000..=29999).contains(&o.sport), "{o:?}");
        assert_eq!(o.dst_mac, backend_mac(o.dst));
        assert_eq!(o.src_mac, LBB_MAC);
        assert_eq!(o.ttl, 64);
        assert_eq!(o.payload, b"hello");
        // TCP fields other than ports are untouched.
        assert_eq!(
            &out[14 + 20 + 4..14 + 20 + 16],
            &syn[14 + 20 + 4..14 + 20 + 16]
        );

        // The same 5-tuple: the same backend and SNAT port, every time.
        for _ in 0..20 {
            let (v, again) = lb.run(&syn);
            assert_eq!(v, REDIRECT);
            assert_eq!(inspect(&again), o);
        }

        // The backend's reply goes back as VIP -> client.
        let reply = tcp_from(backend_mac(o.dst), o.dst, 8080, SNAT, o.sport);
        let (verdict, back) = lb.run(&reply);
        assert_eq!(verdict, REDIRECT, "forwarded out of lbc");
        let b = inspect(&back);
        assert_eq!((b.src, b.sport), (WEB_VIP, 80));
        assert_eq!((b.dst, b.dport), (CLIENT, 40000));
        assert_eq!(b.dst_mac, CLIENT_MAC);
        assert_eq!(b.src_mac, LBC_MAC);
        assert_eq!(b.payload, b"world");

        let web = &lb.plan.services[0];
        let c = lb
            .dp
            .counters(
                &[web.id],
                &web.backends.iter().map(|b| b.id).collect::<Vec<_>>(),
            )
            .unwrap();
        assert_eq!(c.services[&web.id].packets, 22, "21 forward + 1 reply");
        let flows: u64 = c.backends.values().map(|b| b.flows).sum();
        assert_eq!(flows, 1, "one new flow");
    });
}

#[test]
fn flows_spread_over_backends_and_stick() {
    with_lb(|_, lb| {
        let mut seen = std::collections::HashMap::new();
        for sport in 30000..30300u16 {
            let (v, out) = lb.run(&tcp_syn(CLIENT, sport, WEB_VIP, 80));
            assert_eq!(v, REDIRECT);
            let o = inspect(&out);
            *seen.entry(o.dst).or_insert(0) += 1;
            let (_, again) = lb.run(&tcp_syn(CLIENT, sport, WEB_VIP, 80));
            assert_eq!(inspect(&again).dst, o.dst, "flow {sport} sticks");
        }
        assert_eq!(seen.len(), 3, "all backends used: {seen:?}");
        for (b, n) in &seen {
            assert!((60..=140).contains(n), "{b}: {n} of 300");
        }
    });
}

#[test]
fn udp_is_nat_ed_both_ways() {
    with_lb(|_, lb| {
        let req = udp(CLIENT, 5555, DNS_VIP, 53, b"query");
        let (v, out) = lb.run(&req);
        assert_eq!(v, REDIRECT);
        let o = inspect(&out);
        assert!([11, 12].contains(&o.dst.octets()[3]), "{o:?}");
        assert_eq!((o.src, o.dport), (SNAT, 5353));
        assert_eq!(o.payload, b"query");
        assert_ne!(u16::from_be_bytes([out[14 + 20 + 6], out[14 + 20 + 7]]), 0);

        let mut reply = Vec::new();
        PacketBuilder::ethernet2(backend_mac(o.dst), LBB_MAC)
            .ipv4(o.dst.octets(), SNAT.octets(), 64)
            .udp(5353, o.sport)
            .write(&mut reply, b"answer")
            .unwrap();
        let (v, back) = lb.run(&reply);
        assert_eq!(v, REDIRECT);
        let b = inspect(&back);
        assert_eq!(
            (b.src, b.sport, b.dst, b.dport),
            (DNS_VIP, 53, CLIENT, 5555)
        );
        assert_eq!(b.payload, b"answer");

        // A datagram sent without a checksum keeps none.
        let mut no_sum = udp(CLIENT, 5556, DNS_VIP, 53, b"query");
        no_sum[14 + 20 + 6] = 0;
        no_sum[14 + 20 + 7] = 0;
        let (v, out) = lb.run(&no_sum);
        assert_eq!(v, REDIRECT);
        assert_eq!(&out[14 + 20 + 6..14 + 20 + 8], &[0, 0]);
        inspect(&out);
    });
}

#[test]
fn ipv4_options_and_vlan_tags_are_handled() {
    with_lb(|_, lb| {
        // IHL 7: 8 bytes of options (NOPs and an end marker) must survive.
        let mut ip =
            Ipv4Header::new(5, 64, IpNumber::TCP, CLIENT.octets(), WEB_VIP.octets()).unwrap();
        ip.options = Ipv4Options::try_from(&[1u8, 1, 1, 1, 1, 1, 1, 0][..]).unwrap();
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, LBC_MAC)
            .ip(IpHeaders::Ipv4(ip, Default::default()))
            .tcp(41000, 80, 1, 100)
            .syn()
            .write(&mut frame, b"hello")
            .unwrap();
        assert_eq!(frame[14] & 0x0f, 7);
        let (v, out) = lb.run(&frame);
        assert_eq!(v, REDIRECT);
        let o = inspect(&out);
        assert_eq!((o.src, o.dport), (SNAT, 8080));
        assert_eq!(
            &out[14 + 20..14 + 28],
            &frame[14 + 20..14 + 28],
            "options kept"
        );

        let mut tagged = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, LBC_MAC)
            .single_vlan(100.try_into().unwrap())
            .ipv4(CLIENT.octets(), WEB_VIP.octets(), 64)
            .tcp(41001, 80, 1, 100)
            .syn()
            .write(&mut tagged, b"hello")
            .unwrap();
        let (v, out) = lb.run(&tagged);
        assert_eq!(v, REDIRECT);
        let p = SlicedPacket::from_ethernet(&out).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            panic!()
        };
        let h = ip.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        assert_eq!(Ipv4Addr::from(h.source), SNAT);
    });
}

#[test]
fn unresolved_next_hop_drops_counts_and_asks_the_daemon() {
    with_lb(|bed, lb| {
        let before = lb.global(STAT_NEIGH_MISS);
        let (v, _) = lb.run(&tcp_syn(CLIENT, 42000, LOST_VIP, 80));
        assert_eq!(v, DROP, "never passed half-rewritten");
        assert_eq!(lb.global(STAT_NEIGH_MISS), before + 1);
        let c = lb.dp.counters(&[], &[]).unwrap();
        let drops: u64 = c.actions.iter().map(|a| a[DROP as usize]).sum();
        assert_eq!(drops, 1, "counted as a drop");

        let mut events = lb.neigh_events.borrow_mut();
        let item = events.next().expect("a neighbour event for the daemon");
        let ev: NeighEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
        assert_eq!(ev.addr[0].to_ne_bytes(), [198, 18, 1, 14]);
        assert_eq!(ev.ifindex, bed.ifindex("lbb").unwrap());
    });
}

/// A TCP segment of `payload_len` bytes on an existing flow.
fn tcp_data(src: Ipv4Addr, sport: u16, payload_len: usize) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LBC_MAC)
        .ipv4(src.octets(), WEB_VIP.octets(), 64)
        .tcp(sport, 80, 2000, 64240)
        .ack(1)
        .write(&mut v, &vec![7u8; payload_len])
        .unwrap();
    v
}

#[test]
fn forwarding_reuses_fib_answers_for_a_second() {
    with_lb(|bed, lb| {
        // The cache toward backends is per CPU: stay on one.
        let mut cpu0 = nix::sched::CpuSet::new();
        cpu0.set(0).unwrap();
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpu0).unwrap();
        let cached = |lb: &Lb| lb.global(STAT_FIB_CACHED);
        let short = tcp_data(CLIENT, 43000, 10);
        // The first packet to a backend is looked up, and the answer kept.
        let (v, first) = lb.run(&short);
        assert_eq!(v, REDIRECT);
        let backend = inspect(&first).dst;
        // Of the next four, at most one (crossing a second) looks up again.
        let before = cached(lb);
        for _ in 0..4 {
            let (v, out) = lb.run(&short);
            assert_eq!(v, REDIRECT);
            assert_eq!(macs(&out), macs(&first), "same MACs from the cache");
        }
        assert!(cached(lb) - before >= 3, "served from the cache");
        // The answer is per backend: new flows use it too. 30 new flows
        // over 3 backends: at most one lookup per backend, and one more
        // each if a second went by.
        let before = cached(lb);
        for sport in 43100..43130 {
            let (v, out) = lb.run(&tcp_data(CLIENT, sport, 10));
            assert_eq!(v, REDIRECT);
            assert_eq!(macs(&out).0, backend_mac(inspect(&out).dst));
        }
        assert!(cached(lb) - before >= 24, "new flows served from the cache");

        // Longer than any packet the lookup checked (MTU): looked up again.
        let before = cached(lb);
        assert_eq!(lb.run(&tcp_data(CLIENT, 43000, 1000)).0, REDIRECT);
        assert_eq!(cached(lb), before, "a longer packet is looked up");

        // Replies use their own cache the same way.
        let o = inspect(&first);
        let reply = tcp_from(backend_mac(o.dst), o.dst, 8080, SNAT, o.sport);
        assert_eq!(lb.run(&reply).0, REDIRECT);
        let before = cached(lb);
        for _ in 0..4 {
            assert_eq!(lb.run(&reply).0, REDIRECT);
        }
        assert!(cached(lb) - before >= 3, "replies served from the cache");

        // The backend's MAC changes: within about a second, packets use the
        // new one (the cached answer is good for the second it was made in).
        let new_mac = "02:00:00:00:0a:0b";
        netns::ip(&[
            "-n",
            &bed.ns,
            "neigh",
            "replace",
            &backend.to_string(),
            "lladdr",
            new_mac,
            "dev",
            "lbb",
            "nud",
            "permanent",
        ])
        .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            let (v, out) = lb.run(&short);
            assert_eq!(v, REDIRECT);
            if macs(&out).0 == [0x02, 0, 0, 0, 0x0a, 0x0b] {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the new neighbour MAC is not used after 3 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    });
}

#[test]
fn ipv6_is_nat_ed_both_ways() {
    with_lb(|_, lb| {
        let syn = tcp6(CLIENT_MAC, CLIENT6, 40000, WEB6_VIP, 80);
        let (v, out) = lb.run(&syn);
        assert_eq!(v, REDIRECT);
        let o = inspect6(&out);
        assert!([backend6(11), backend6(12)].contains(&o.dst), "{o:?}");
        assert_eq!((o.src, o.dport), (SNAT6, 8080));
        assert!((20000..=29999).contains(&o.sport));
        assert_eq!((o.dst_mac, o.src_mac), (backend_mac(o.dst), LBB_MAC));
        assert_eq!((o.ttl, o.payload.as_slice()), (64, &b"hello6"[..]));
        let (_, again) = lb.run(&syn);
        assert_eq!(inspect6(&again), o, "same flow, same backend and port");

        let mut reply = Vec::new();
        PacketBuilder::ethernet2(backend_mac(o.dst), LBB_MAC)
            .ipv6(o.dst.octets(), SNAT6.octets(), 64)
            .tcp(8080, o.sport, 5000, 64240)
            .syn()
            .ack(1001)
            .write(&mut reply, b"world6")
            .unwrap();
        let (v, back) = lb.run(&reply);
        assert_eq!(v, REDIRECT);
        let b = inspect6(&back);
        assert_eq!(
            (b.src, b.sport, b.dst, b.dport),
            (WEB6_VIP, 80, CLIENT6, 40000)
        );
        assert_eq!((b.dst_mac, b.src_mac), (CLIENT_MAC, LBC_MAC));

        let mut dns = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, LBC_MAC)
            .ipv6(CLIENT6.octets(), DNS6_VIP.octets(), 64)
            .udp(5555, 53)
            .write(&mut dns, b"query6")
            .unwrap();
        let (v, out) = lb.run(&dns);
        assert_eq!(v, REDIRECT);
        let o = inspect6(&out);
        assert_eq!((o.src, o.dst, o.dport), (SNAT6, backend6(11), 5353));
    });
}

#[test]
fn ipv6_extension_headers_are_walked_and_fragments_passed() {
    with_lb(|_, lb| {
        // Hop-by-hop options (8 bytes: next header, length 0, PadN) between
        // the IPv6 and TCP headers.
        let plain = tcp6(CLIENT_MAC, CLIENT6, 41000, WEB6_VIP, 80);
        let with_ext = |next_hdr: u8, ext: &[u8]| {
            let mut f = plain[..14 + 40].to_vec();
            let proto = f[14 + 6];
            f[14 + 6] = next_hdr;
            let mut ext = ext.to_vec();
            ext[0] = proto;
            f.extend_from_slice(&ext);
            f.extend_from_slice(&plain[14 + 40..]);
            let len = u16::from_be_bytes([f[14 + 4], f[14 + 5]]) + ext.len() as u16;
            f[14 + 4..14 + 6].copy_from_slice(&len.to_be_bytes());
            f
        };
        let hop = with_ext(0, &[0, 0, 1, 4, 0, 0, 0, 0]);
        let (v, out) = lb.run(&hop);
        assert_eq!(v, REDIRECT, "balanced through a hop-by-hop header");
        let o = inspect6(&out);
        assert_eq!((o.src, o.dport), (SNAT6, 8080));
        assert_eq!(
            &out[14 + 40..14 + 48],
            &hop[14 + 40..14 + 48],
            "header kept"
        );

        // A fragment header: not ours, untouched.
        let frag = with_ext(44, &[0, 0, 0, 1, 0, 0, 0, 7]);
        let (v, out) = lb.run(&frag);
        assert_eq!((v, out), (PASS, frag));
        // Five extension headers: beyond the walk, untouched.
        let mut deep = plain.clone();
        for _ in 0..5 {
            deep = {
                let proto = deep[14 + 6];
                let mut f = deep[..14 + 40].to_vec();
                f[14 + 6] = 60;
                f.extend_from_slice(&[proto, 0, 1, 4, 0, 0, 0, 0]);
                f.extend_from_slice(&deep[14 + 40..]);
                let len = u16::from_be_bytes([f[18], f[19]]) + 8;
                f[18..20].copy_from_slice(&len.to_be_bytes());
                f
            };
        }
        let (v, out) = lb.run(&deep);
        assert_eq!((v, out), (PASS, deep));
    });
}

#[test]
fn dsr_changes_only_the_destination_mac() {
    with_lb(|_, lb| {
        let syn = tcp_syn(CLIENT, 43000, DSR_VIP, 80);
        let (v, out) = lb.run(&syn);
        assert_eq!(v, REDIRECT);
        let o = inspect(&out);
        assert_eq!(
            (o.src, o.sport, o.dst, o.dport),
            (CLIENT, 43000, DSR_VIP, 80)
        );
        assert!(
            [11, 12]
                .map(|n| backend_mac(Ipv4Addr::new(198, 18, 1, n)))
                .contains(&o.dst_mac),
            "{o:?}"
        );
        assert_eq!(o.src_mac, LBB_MAC);
        assert_eq!(
            &out[12..],
            &syn[12..],
            "everything after the MACs unchanged"
        );

        let syn6 = tcp6(CLIENT_MAC, CLIENT6, 43000, DSR6_VIP, 80);
        let (v, out) = lb.run(&syn6);
        assert_eq!(v, REDIRECT);
        assert!(
            [11, 12]
                .map(|n| backend_mac(backend6(n)))
                .contains(&out[0..6].try_into().unwrap())
        );
        assert_eq!(&out[12..], &syn6[12..]);
        // The same flow sticks to its backend.
        let (_, again) = lb.run(&syn6);
        assert_eq!(again, out);
    });
}

#[test]
fn all_ports_vips_keep_the_port_and_source_ip_hashing_sticks_a_client() {
    with_lb(|_, lb| {
        let any = Ipv4Addr::new(198, 18, 100, 30);
        for port in [22u16, 443, 8443] {
            let (v, out) = lb.run(&tcp_syn(CLIENT, 44000, any, port));
            assert_eq!(v, REDIRECT, "port {port}");
            let o = inspect(&out);
            assert_eq!((o.src, o.dport), (SNAT, port), "the packet's own port");
            // The reply of an all-ports flow comes from that port.
            let reply = tcp_from(backend_mac(o.dst), o.dst, port, SNAT, o.sport);
            let (v, back) = lb.run(&reply);
            assert_eq!(v, REDIRECT);
            let b = inspect(&back);
            assert_eq!((b.src, b.sport, b.dst, b.dport), (any, port, CLIENT, 44000));
        }
        // An exact-port service still wins, and other VIPs are untouched.
        let (v, _) = lb.run(&tcp_syn(CLIENT, 44000, Ipv4Addr::new(198, 18, 100, 32), 22));
        assert_eq!(v, PASS);

        // source-ip: every connection of one client on one backend...
        let sticky = Ipv4Addr::new(198, 18, 100, 31);
        let mut seen = std::collections::HashSet::new();
        for sport in 45000..45050 {
            let (_, out) = lb.run(&tcp_syn(CLIENT, sport, sticky, 80));
            seen.insert(inspect(&out).dst);
        }
        assert_eq!(seen.len(), 1, "one backend for one client: {seen:?}");
        // ...while clients spread.
        let mut spread = std::collections::HashSet::new();
        for last in 1..=60u8 {
            let client = Ipv4Addr::new(198, 18, 0, last);
            let (_, out) = lb.run(&tcp_syn(client, 45000, sticky, 80));
            spread.insert(inspect(&out).dst);
        }
        assert_eq!(spread.len(), 3, "{spread:?}");
    });
}

#[test]
fn flows_expire_after_their_idle_timeout_and_the_daemon_deletes_them() {
    with_lb(|_, lb| {
        let ids: Vec<u32> = lb
            .plan
            .services
            .iter()
            .flat_map(|s| s.backends.iter().map(|b| b.id))
            .collect();
        // New flows, all services.
        let flows = |lb: &Lb| -> u64 {
            let c = lb.dp.counters(&[], &ids).unwrap();
            c.backends.values().map(|b| b.flows).sum()
        };
        // A TCP flow that saw a FIN expires after tcp_closing (1 s); one
        // that did not lives on (tcp: 1 h).
        let open = tcp_syn(CLIENT, 46000, WEB_VIP, 80);
        let mut fin = tcp_syn(CLIENT, 46001, WEB_VIP, 80);
        lb.run(&open);
        lb.run(&fin);
        fin[14 + 20 + 13] = 0x11; // FIN|ACK (checksums are not the point here)
        let before = flows(lb);
        lb.run(&fin);
        assert_eq!(flows(lb), before, "a FIN is part of its flow");
        let udp_req = udp(CLIENT, 46002, DNS_VIP, 53, b"q");
        lb.run(&udp_req);
        let before = flows(lb);
        std::thread::sleep(std::time::Duration::from_millis(2100));

        lb.run(&open);
        assert_eq!(flows(lb), before, "an open TCP flow lives on");
        lb.run(&fin);
        assert_eq!(flows(lb), before + 1, "a closed TCP flow is over: new flow");
        // The daemon's sweep deletes what expired: the UDP flow (1 s idle).
        let entries = lb.dp.flow_entries().unwrap();
        assert_eq!(lb.dp.expire_flows().unwrap(), 1, "the idle UDP flow");
        assert_eq!(lb.dp.flow_entries().unwrap(), entries - 1);
        lb.run(&udp_req);
        assert_eq!(flows(lb), before + 2, "its next datagram is a new flow");
    });
}

/// The IP packet of `frame` (after the Ethernet header).
fn ip_of(frame: &[u8]) -> &[u8] {
    &frame[14..]
}

#[test]
fn tunnel_mode_wraps_the_packet_unchanged_and_decap_unwraps_it() {
    with_lb(|_, lb| {
        let mut decap = xdplb::decap::load(6080).expect("decap program loads");
        let decap = xdplb::decap::program(&mut decap).unwrap();
        let v4 = |d: u8| Ipv4Addr::new(198, 18, 100, d);
        let v6 = |d: u16| Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, d);
        // (name, frame, outer is IPv6, outer destination, GUE)
        let cases: Vec<(&str, Vec<u8>, bool, std::net::IpAddr, bool)> = vec![
            (
                "ipip",
                tcp_syn(CLIENT, 47000, v4(40), 80),
                false,
                Ipv4Addr::new(198, 18, 1, 11).into(),
                false,
            ),
            (
                "ip6ip6",
                tcp6(CLIENT_MAC, CLIENT6, 47000, v6(0x40), 80),
                true,
                backend6(11).into(),
                false,
            ),
            (
                "ipv4 in ipv6",
                tcp_syn(CLIENT, 47000, v4(41), 80),
                true,
                backend6(12).into(),
                false,
            ),
            (
                "gue over ipv4",
                tcp_syn(CLIENT, 47000, v4(42), 80),
                false,
                Ipv4Addr::new(198, 18, 1, 12).into(),
                true,
            ),
            (
                "gue over ipv6",
                tcp6(CLIENT_MAC, CLIENT6, 47000, v6(0x42), 80),
                true,
                backend6(13).into(),
                true,
            ),
        ];
        for (name, frame, outer6, dst, gue) in cases {
            let (v, out) = lb.run(&frame);
            assert_eq!(v, REDIRECT, "{name}");
            let p = SlicedPacket::from_ethernet(&out).expect("outer parses");
            let (outer_dst, inner_at) = match &p.net {
                Some(NetSlice::Ipv4(ip)) => {
                    assert!(!outer6, "{name}: outer family");
                    let h = ip.header().to_header();
                    assert_eq!(h.header_checksum, h.calc_header_checksum(), "{name}");
                    assert_eq!(Ipv4Addr::from(h.source), SNAT, "{name}");
                    assert!(h.dont_fragment, "{name}");
                    (std::net::IpAddr::from(h.destination), 14 + 20)
                }
                Some(NetSlice::Ipv6(ip)) => {
                    assert!(outer6, "{name}: outer family");
                    let h = ip.header().to_header();
                    assert_eq!(Ipv6Addr::from(h.source), SNAT6, "{name}");
                    (std::net::IpAddr::from(h.destination), 14 + 40)
                }
                other => panic!("{name}: {other:?}"),
            };
            assert_eq!(outer_dst, dst, "{name}");
            assert_eq!(macs(&out), (backend_mac(dst), LBB_MAC), "{name}");
            let inner_at = if gue {
                let Some(TransportSlice::Udp(u)) = &p.transport else {
                    panic!("{name}: no UDP")
                };
                assert_eq!(u.destination_port(), 6080, "{name}");
                assert!(u.source_port() >= 0xc000, "{name}");
                inner_at + 8
            } else {
                inner_at
            };
            assert_eq!(
                &out[inner_at..],
                ip_of(&frame),
                "{name}: inner packet unchanged"
            );

            // The backend's decapsulator gives back the client's packet.
            let mut back = vec![0u8; out.len() + 64];
            let r = decap
                .test_run(TestRunOptions {
                    data_in: Some(&out),
                    data_out: Some(&mut back),
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(r.return_value, PASS, "{name}");
            back.truncate(r.data_size_out as usize);
            assert_eq!(&back[..12], &out[..12], "{name}: MACs kept");
            assert_eq!(&back[12..], &frame[12..], "{name}: the original packet");
        }
        // Other traffic passes the decapsulator untouched.
        let plain = tcp_syn(CLIENT, 47001, v4(40), 80);
        let mut back = vec![0u8; plain.len() + 64];
        let r = decap
            .test_run(TestRunOptions {
                data_in: Some(&plain),
                data_out: Some(&mut back),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            (r.return_value, &back[..r.data_size_out as usize]),
            (PASS, &plain[..])
        );
    });
}

/// Internet checksum of `data` is valid (sums to zero).
fn sums_to_zero(data: &[u8]) -> bool {
    lb_common::csum::checksum(data) == 0
}

/// ICMPv6: the checksum covers a pseudo-header too.
fn icmp6_valid(frame: &[u8]) -> bool {
    let ip = &frame[14..];
    let len = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip[8..40]);
    pseudo.extend_from_slice(&(len as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(&ip[40..40 + len]);
    sums_to_zero(&pseudo)
}

fn icmp4_frame(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    kind: u8,
    code: u8,
    rest: [u8; 4],
    body: &[u8],
) -> Vec<u8> {
    let mut icmp = vec![kind, code, 0, 0];
    icmp.extend_from_slice(&rest);
    icmp.extend_from_slice(body);
    let c = lb_common::csum::checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_ne_bytes());
    let mut ip = Ipv4Header::new(
        icmp.len() as u16,
        64,
        IpNumber::ICMP,
        src.octets(),
        dst.octets(),
    )
    .unwrap();
    ip.header_checksum = ip.calc_header_checksum();
    let mut f = Vec::new();
    f.extend_from_slice(&LBC_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    ip.write(&mut f).unwrap();
    f.extend_from_slice(&icmp);
    f
}

fn icmp6_frame(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    kind: u8,
    code: u8,
    rest: [u8; 4],
    body: &[u8],
) -> Vec<u8> {
    let mut icmp = vec![kind, code, 0, 0];
    icmp.extend_from_slice(&rest);
    icmp.extend_from_slice(body);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(&icmp);
    let c = lb_common::csum::checksum(&pseudo);
    icmp[2..4].copy_from_slice(&c.to_ne_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&LBC_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&[0x86, 0xdd]);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 64]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&icmp);
    f
}

#[test]
fn echo_requests_to_vips_are_answered_when_enabled() {
    with_lb(|_, lb| {
        let req = icmp4_frame(CLIENT, WEB_VIP, 8, 0, [0, 7, 0, 1], b"ping");
        let (v, out) = lb.run(&req);
        assert_eq!(v, 3, "XDP_TX");
        assert_eq!(macs(&out), (CLIENT_MAC, LBC_MAC), "back to the sender");
        assert_eq!(&out[14 + 12..14 + 16], &WEB_VIP.octets(), "from the VIP");
        assert_eq!(&out[14 + 16..14 + 20], &CLIENT.octets());
        assert_eq!(out[14 + 20], 0, "echo reply");
        assert!(sums_to_zero(&out[14..14 + 20]) && sums_to_zero(&out[14 + 20..]));
        assert_eq!(
            &out[14 + 24..],
            &req[14 + 24..],
            "identifier, sequence, data"
        );

        let req6 = icmp6_frame(CLIENT6, WEB6_VIP, 128, 0, [0, 7, 0, 1], b"ping6");
        let (v, out) = lb.run(&req6);
        assert_eq!(v, 3);
        assert_eq!(out[14 + 40], 129, "echo reply");
        assert_eq!(&out[14 + 8..14 + 24], &WEB6_VIP.octets());
        assert!(icmp6_valid(&out));

        // A VIP whose services do not enable it: the kernel's business.
        let other = icmp4_frame(CLIENT, DNS_VIP, 8, 0, [0, 7, 0, 1], b"ping");
        let (v, out) = lb.run(&other);
        assert_eq!((v, out), (PASS, other));
    });
}

#[test]
fn icmp_errors_about_a_flow_reach_its_backend() {
    with_lb(|_, lb| {
        let router = Ipv4Addr::new(198, 18, 0, 254);
        // nat: the flow, and the reply the client's side could not take.
        let (_, fwd) = lb.run(&tcp_syn(CLIENT, 48000, WEB_VIP, 80));
        let f = inspect(&fwd);
        let reply = tcp_from(backend_mac(f.dst), f.dst, 8080, SNAT, f.sport);
        let (_, back) = lb.run(&reply);
        // "Fragmentation needed, MTU 1400" quoting the translated reply.
        let quoted = &back[14..14 + 40];
        let err = icmp4_frame(router, WEB_VIP, 3, 4, [0, 0, 0x05, 0x78], quoted);
        let (v, out) = lb.run(&err);
        assert_eq!(v, REDIRECT, "on to the backend");
        assert_eq!(macs(&out), (backend_mac(f.dst), LBB_MAC));
        let ip = &out[14..34];
        assert!(sums_to_zero(ip), "outer IPv4 checksum");
        assert_eq!(
            (&ip[12..16], &ip[16..20]),
            (&router.octets()[..], &f.dst.octets()[..])
        );
        assert!(sums_to_zero(&out[34..]), "ICMP checksum");
        // The quoted packet is now the one the backend sent.
        let q = &out[42..];
        assert!(sums_to_zero(&q[..20]), "quoted IPv4 checksum");
        assert_eq!(
            (&q[12..16], &q[16..20]),
            (&f.dst.octets()[..], &SNAT.octets()[..])
        );
        assert_eq!(u16::from_be_bytes([q[20], q[21]]), 8080);
        assert_eq!(u16::from_be_bytes([q[22], q[23]]), f.sport);
        assert_eq!(&q[24..40], &reply[14 + 24..14 + 40], "rest of TCP as sent");

        // dsr: handed to the backend unchanged.
        let (_, _) = lb.run(&tcp_syn(CLIENT, 48001, DSR_VIP, 80));
        let mut from_vip = tcp_syn(DSR_VIP, 80, CLIENT, 48001);
        from_vip.drain(..14);
        let err = icmp4_frame(router, DSR_VIP, 3, 4, [0, 0, 0x05, 0x78], &from_vip[..28]);
        let (v, out) = lb.run(&err);
        assert_eq!(v, REDIRECT);
        assert!(
            [11, 12]
                .map(|n| backend_mac(Ipv4Addr::new(198, 18, 1, n)))
                .contains(&macs(&out).0)
        );
        assert_eq!(&out[12..], &err[12..]);

        // An error about no flow of ours: the kernel's.
        let mut stray = tcp_syn(WEB_VIP, 80, CLIENT, 1);
        stray.drain(..14);
        let err = icmp4_frame(router, WEB_VIP, 3, 4, [0, 0, 0x05, 0x78], &stray[..28]);
        let (v, _) = lb.run(&err);
        assert_eq!(v, PASS);

        // IPv6 nat: "packet too big" quoting the translated reply.
        let (_, fwd6) = lb.run(&tcp6(CLIENT_MAC, CLIENT6, 48002, WEB6_VIP, 80));
        let f6 = inspect6(&fwd6);
        let mut reply6 = Vec::new();
        PacketBuilder::ethernet2(backend_mac(f6.dst), LBB_MAC)
            .ipv6(f6.dst.octets(), SNAT6.octets(), 64)
            .tcp(8080, f6.sport, 5000, 64240)
            .ack(1001)
            .write(&mut reply6, b"world6")
            .unwrap();
        let (_, back6) = lb.run(&reply6);
        let router6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe);
        let err6 = icmp6_frame(router6, WEB6_VIP, 2, 0, [0, 0, 0x05, 0x00], &back6[14..]);
        let (v, out) = lb.run(&err6);
        assert_eq!(v, REDIRECT);
        assert_eq!(&out[14 + 24..14 + 40], &f6.dst.octets(), "to the backend");
        assert!(icmp6_valid(&out), "ICMPv6 checksum");
        let q = &out[14 + 48..];
        assert_eq!(
            (&q[8..24], &q[24..40]),
            (&f6.dst.octets()[..], &SNAT6.octets()[..])
        );
        assert_eq!(u16::from_be_bytes([q[42], q[43]]), f6.sport);
    });
}
