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

use aya::maps::{MapData, RingBuf};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use lb_common::{
    FAMILY_V4, FlowKey, NeighEvent, PROTO_UDP, STAT_FIB_CACHED, STAT_FLOW_CONFIRMED,
    STAT_NEIGH_MISS, STAT_NO_BACKEND, STAT_PARTIAL_CSUM, STAT_REJECT, STAT_REJECT_LIMITED,
    addr_words, hash::flow_hash, tunnel_flow_label, v4_words,
};
use lb_testbed::{
    XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX,
    fib_net::{CLIENT, CLIENT_MAC, CLIENT6, FibNet, LBB_MAC, LBC_MAC, backend_mac, backend6},
    fixtures::{
        DNS_VIP, DNS6_VIP, DSR_VIP, DSR6_VIP, EMPTY_VIP, EMPTY6_VIP, LOST_VIP, QUIET_VIP, SERVICES,
        SNAT, SNAT6, WEB_BACKENDS, WEB_VIP, WEB6_VIP, dataplane, vip4, vip6,
    },
    frames::{
        Tcp, ack_of, arp_request, icmp, icmp4, icmp6, malformed, syn, syn_ack, syn_with_ip_options,
        syn_with_vlan, tcp, udp, with_ipv6_ext, with_tos,
    },
    inspect::{icmp6_valid, inspect, inspect6, macs, sums_to_zero},
    netns, run_frame,
    topology::LB_CLIENT_ADDR6,
};
use xdplb::{dataplane::Dataplane, plan};

/// The program loaded and configured, inside the bed's namespace.
struct Lb {
    dp: Dataplane,
    plan: plan::Plan,
    neigh_events: RefCell<RingBuf<MapData>>,
}

impl Lb {
    fn with_config(yaml: &str) -> Lb {
        let (mut dp, plan) = dataplane(yaml);
        let neigh_events = RefCell::new(dp.take_neigh_events().unwrap());
        Lb {
            dp,
            plan,
            neigh_events,
        }
    }

    /// Runs one frame; returns the verdict and the output frame.
    fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        let r = run_frame(self.dp.program(), frame);
        (r.verdict, r.out)
    }

    fn global(&self, slot: u32) -> u64 {
        self.dp.counters(&[], &[]).unwrap().global[slot as usize]
    }
}

/// Runs `f` with a fresh namespace and program, inside the namespace.
/// Backends .11-.13 have static neighbours, .14 (service `lost`) none.
fn with_lb(f: impl FnOnce(&FibNet, &mut Lb) + Send) {
    with_lb_config(SERVICES, f)
}

/// [`with_lb`] with the program configured by `yaml`.
fn with_lb_config(yaml: &str, f: impl FnOnce(&FibNet, &mut Lb) + Send) {
    let bed = FibNet::create(11..=13).unwrap();
    bed.run_in(|| {
        let mut lb = Lb::with_config(yaml);
        f(&bed, &mut lb);
        Ok(())
    })
    .unwrap();
}

#[test]
fn traffic_the_balancer_does_not_own_passes_untouched() {
    with_lb(|_, lb| {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("ARP request", arp_request()),
            ("IPv6", syn(CLIENT6, 40000, LB_CLIENT_ADDR6, 80)),
            (
                "ICMP echo to a VIP without icmp_echo",
                icmp4(CLIENT, DNS_VIP, icmp(8, 0, [0, 1, 0, 1], b"ping")),
            ),
            (
                "TCP to a non-VIP address",
                syn(CLIENT, 40000, Ipv4Addr::new(198, 18, 0, 1), 22),
            ),
            (
                "TCP to a VIP on another port",
                syn(CLIENT, 40000, WEB_VIP, 81),
            ),
            (
                "UDP to a TCP service",
                udp(CLIENT, 40000, WEB_VIP, 80, b"x"),
            ),
            (
                "TCP to the SNAT address, no NAT entry",
                syn_ack(WEB_BACKENDS[0], 8080, SNAT, 20001),
            ),
        ];
        for (name, frame) in cases {
            let (verdict, out) = lb.run(&frame);
            assert_eq!(verdict, XDP_PASS, "{name}");
            assert_eq!(out, frame, "{name}: must not be modified");
        }
    });
}

#[test]
fn malformed_and_fragmented_packets_pass_untouched() {
    with_lb(|_, lb| {
        for (name, frame) in malformed(&syn(CLIENT, 40000, WEB_VIP, 80)) {
            let (verdict, out) = lb.run(&frame);
            assert_eq!(verdict, XDP_PASS, "{name}");
            assert_eq!(out, frame, "{name}: must not be modified");
        }
    });
}

#[test]
fn syn_to_vip_is_nat_ed_and_the_reply_translated_back() {
    with_lb(|_, lb| {
        let syn = syn(CLIENT, 40000, WEB_VIP, 80);
        let (verdict, out) = lb.run(&syn);
        assert_eq!(verdict, XDP_REDIRECT, "forwarded out of lbb");
        let o = inspect(&out);
        assert!(WEB_BACKENDS.contains(&o.dst), "{o:?}");
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
            assert_eq!(v, XDP_REDIRECT);
            assert_eq!(inspect(&again), o);
        }

        // The backend's reply goes back as VIP -> client.
        let reply = syn_ack(o.dst, 8080, SNAT, o.sport);
        let (verdict, back) = lb.run(&reply);
        assert_eq!(verdict, XDP_REDIRECT, "forwarded out of lbc");
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
            let (v, out) = lb.run(&syn(CLIENT, sport, WEB_VIP, 80));
            assert_eq!(v, XDP_REDIRECT);
            let o = inspect(&out);
            *seen.entry(o.dst).or_insert(0) += 1;
            let (_, again) = lb.run(&syn(CLIENT, sport, WEB_VIP, 80));
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
        assert_eq!(v, XDP_REDIRECT);
        let o = inspect(&out);
        assert!([11, 12].contains(&o.dst.octets()[3]), "{o:?}");
        assert_eq!((o.src, o.dport), (SNAT, 5353));
        assert_eq!(o.payload, b"query");
        assert_ne!(u16::from_be_bytes([out[14 + 20 + 6], out[14 + 20 + 7]]), 0);

        let reply = udp(o.dst, 5353, SNAT, o.sport, b"answer");
        let (v, back) = lb.run(&reply);
        assert_eq!(v, XDP_REDIRECT);
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
        assert_eq!(v, XDP_REDIRECT);
        assert_eq!(&out[14 + 20 + 6..14 + 20 + 8], &[0, 0]);
        inspect(&out);
    });
}

#[test]
fn ipv4_options_and_vlan_tags_are_handled() {
    with_lb(|_, lb| {
        // IHL 7: 8 bytes of options (NOPs and an end marker) must survive.
        let frame = syn_with_ip_options(41000, WEB_VIP);
        assert_eq!(frame[14] & 0x0f, 7);
        let (v, out) = lb.run(&frame);
        assert_eq!(v, XDP_REDIRECT);
        let o = inspect(&out);
        assert_eq!((o.src, o.dport), (SNAT, 8080));
        assert_eq!(
            &out[14 + 20..14 + 28],
            &frame[14 + 20..14 + 28],
            "options kept"
        );

        let tagged = syn_with_vlan(100, 41001, WEB_VIP);
        let (v, out) = lb.run(&tagged);
        assert_eq!(v, XDP_REDIRECT);
        assert_eq!(inspect(&out).src, SNAT, "checksums valid, tag kept");
        assert_eq!(&out[12..16], &tagged[12..16]);
    });
}

#[test]
fn unresolved_next_hop_drops_counts_and_asks_the_daemon() {
    with_lb(|bed, lb| {
        let before = lb.global(STAT_NEIGH_MISS);
        let (v, _) = lb.run(&syn(CLIENT, 42000, LOST_VIP, 80));
        assert_eq!(v, XDP_DROP, "never passed half-rewritten");
        assert_eq!(lb.global(STAT_NEIGH_MISS), before + 1);
        let c = lb.dp.counters(&[], &[]).unwrap();
        let drops: u64 = c.actions.iter().map(|a| a[XDP_DROP as usize]).sum();
        assert_eq!(drops, 1, "counted as a drop");

        let mut events = lb.neigh_events.borrow_mut();
        let item = events.next().expect("a neighbour event for the daemon");
        let ev: NeighEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
        assert_eq!(ev.addr[0].to_ne_bytes(), [198, 18, 1, 14]);
        assert_eq!(ev.ifindex, bed.ifindex("lbb").unwrap());
    });
}

#[test]
fn forwarding_reuses_fib_answers_for_a_second() {
    with_lb(|bed, lb| {
        // The cache toward backends is per CPU: stay on one.
        let mut cpu0 = nix::sched::CpuSet::new();
        cpu0.set(0).unwrap();
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpu0).unwrap();
        let cached = |lb: &Lb| lb.global(STAT_FIB_CACHED);
        // Segments on an established flow.
        let data = |sport, len| tcp(CLIENT, sport, WEB_VIP, 80, Tcp::Ack, &vec![7; len]);
        let short = data(43000, 10);
        // The first packet to a backend is looked up, and the answer kept.
        let (v, first) = lb.run(&short);
        assert_eq!(v, XDP_REDIRECT);
        let backend = inspect(&first).dst;
        // Of the next four, at most one (crossing a second) looks up again.
        let before = cached(lb);
        for _ in 0..4 {
            let (v, out) = lb.run(&short);
            assert_eq!(v, XDP_REDIRECT);
            assert_eq!(macs(&out), macs(&first), "same MACs from the cache");
        }
        assert!(cached(lb) - before >= 3, "served from the cache");
        // The answer is per backend: new flows use it too. 30 new flows
        // over 3 backends: at most one lookup per backend, and one more
        // each if a second went by.
        let before = cached(lb);
        for sport in 43100..43130 {
            let (v, out) = lb.run(&data(sport, 10));
            assert_eq!(v, XDP_REDIRECT);
            assert_eq!(macs(&out).0, backend_mac(inspect(&out).dst));
        }
        assert!(cached(lb) - before >= 24, "new flows served from the cache");

        // Longer than any packet the lookup checked (MTU): looked up again.
        let before = cached(lb);
        assert_eq!(lb.run(&data(43000, 1000)).0, XDP_REDIRECT);
        assert_eq!(cached(lb), before, "a longer packet is looked up");

        // Replies use their own cache the same way.
        let o = inspect(&first);
        let reply = syn_ack(o.dst, 8080, SNAT, o.sport);
        assert_eq!(lb.run(&reply).0, XDP_REDIRECT);
        let before = cached(lb);
        for _ in 0..4 {
            assert_eq!(lb.run(&reply).0, XDP_REDIRECT);
        }
        assert!(cached(lb) - before >= 3, "replies served from the cache");

        // The backend's MAC changes: within about a second, packets use the
        // new one (the cached answer is good for the second it was made in).
        let new_mac = "02:00:00:00:0a:0b";
        netns::ip(&[
            "-n",
            bed.ns(),
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
            assert_eq!(v, XDP_REDIRECT);
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
        let syn = syn(CLIENT6, 40000, WEB6_VIP, 80);
        let (v, out) = lb.run(&syn);
        assert_eq!(v, XDP_REDIRECT);
        let o = inspect6(&out);
        assert!([backend6(11), backend6(12)].contains(&o.dst), "{o:?}");
        assert_eq!((o.src, o.dport), (SNAT6, 8080));
        assert!((20000..=29999).contains(&o.sport));
        assert_eq!((o.dst_mac, o.src_mac), (backend_mac(o.dst), LBB_MAC));
        assert_eq!((o.ttl, o.payload.as_slice()), (64, &b"hello"[..]));
        let (_, again) = lb.run(&syn);
        assert_eq!(inspect6(&again), o, "same flow, same backend and port");

        let reply = syn_ack(o.dst, 8080, SNAT6, o.sport);
        let (v, back) = lb.run(&reply);
        assert_eq!(v, XDP_REDIRECT);
        let b = inspect6(&back);
        assert_eq!(
            (b.src, b.sport, b.dst, b.dport),
            (WEB6_VIP, 80, CLIENT6, 40000)
        );
        assert_eq!((b.dst_mac, b.src_mac), (CLIENT_MAC, LBC_MAC));

        let dns = udp(CLIENT6, 5555, DNS6_VIP, 53, b"query6");
        let (v, out) = lb.run(&dns);
        assert_eq!(v, XDP_REDIRECT);
        let o = inspect6(&out);
        assert_eq!((o.src, o.dst, o.dport), (SNAT6, backend6(11), 5353));
    });
}

#[test]
fn ipv6_extension_headers_are_walked_and_fragments_passed() {
    with_lb(|_, lb| {
        // Hop-by-hop options (8 bytes: next header, length 0, PadN) between
        // the IPv6 and TCP headers.
        let plain = syn(CLIENT6, 41000, WEB6_VIP, 80);
        let hop = with_ipv6_ext(&plain, 0, &[0, 0, 1, 4, 0, 0, 0, 0]);
        let (v, out) = lb.run(&hop);
        assert_eq!(v, XDP_REDIRECT, "balanced through a hop-by-hop header");
        let o = inspect6(&out);
        assert_eq!((o.src, o.dport), (SNAT6, 8080));
        assert_eq!(
            &out[14 + 40..14 + 48],
            &hop[14 + 40..14 + 48],
            "header kept"
        );

        // A fragment header: not ours, untouched.
        let frag = with_ipv6_ext(&plain, 44, &[0, 0, 0, 1, 0, 0, 0, 7]);
        let (v, out) = lb.run(&frag);
        assert_eq!((v, out), (XDP_PASS, frag));
        // Five extension headers (destination options): beyond the walk,
        // untouched.
        let mut deep = plain.clone();
        for _ in 0..5 {
            deep = with_ipv6_ext(&deep, 60, &[0, 0, 1, 4, 0, 0, 0, 0]);
        }
        let (v, out) = lb.run(&deep);
        assert_eq!((v, out), (XDP_PASS, deep));
    });
}

#[test]
fn dsr_changes_only_the_destination_mac() {
    with_lb(|_, lb| {
        let syn4 = syn(CLIENT, 43000, DSR_VIP, 80);
        let (v, out) = lb.run(&syn4);
        assert_eq!(v, XDP_REDIRECT);
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
            &syn4[12..],
            "everything after the MACs unchanged"
        );

        let syn6 = syn(CLIENT6, 43000, DSR6_VIP, 80);
        let (v, out) = lb.run(&syn6);
        assert_eq!(v, XDP_REDIRECT);
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
            let (v, out) = lb.run(&syn(CLIENT, 44000, any, port));
            assert_eq!(v, XDP_REDIRECT, "port {port}");
            let o = inspect(&out);
            assert_eq!((o.src, o.dport), (SNAT, port), "the packet's own port");
            // The reply of an all-ports flow comes from that port.
            let reply = syn_ack(o.dst, port, SNAT, o.sport);
            let (v, back) = lb.run(&reply);
            assert_eq!(v, XDP_REDIRECT);
            let b = inspect(&back);
            assert_eq!((b.src, b.sport, b.dst, b.dport), (any, port, CLIENT, 44000));
        }
        // An exact-port service still wins, and other VIPs are untouched.
        let (v, _) = lb.run(&syn(CLIENT, 44000, Ipv4Addr::new(198, 18, 100, 32), 22));
        assert_eq!(v, XDP_PASS);

        // source-ip: every connection of one client on one backend...
        let sticky = Ipv4Addr::new(198, 18, 100, 31);
        let mut seen = std::collections::HashSet::new();
        for sport in 45000..45050 {
            let (_, out) = lb.run(&syn(CLIENT, sport, sticky, 80));
            seen.insert(inspect(&out).dst);
        }
        assert_eq!(seen.len(), 1, "one backend for one client: {seen:?}");
        // ...while clients spread.
        let mut spread = std::collections::HashSet::new();
        for last in 1..=60u8 {
            let client = Ipv4Addr::new(198, 18, 0, last);
            let (_, out) = lb.run(&syn(client, 45000, sticky, 80));
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
        // A TCP flow that saw a FIN expires after tcp_closing (1 s); an
        // established one that did not lives on (tcp: 1 h).
        let open = syn(CLIENT, 46000, WEB_VIP, 80);
        let mut fin = syn(CLIENT, 46001, WEB_VIP, 80);
        handshake(lb, 46000, WEB_VIP);
        handshake(lb, 46001, WEB_VIP);
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
        // The daemon's sweep deletes what expired: the UDP flow (1 s idle,
        // unconfirmed: it saw one datagram).
        let udp_key = key4(46002, DNS_VIP, 53, PROTO_UDP);
        assert!(lb.dp.flow(&udp_key).unwrap().is_some());
        assert_eq!(lb.dp.expire_flows().unwrap(), 1, "the idle UDP flow");
        assert_eq!(lb.dp.flow(&udp_key).unwrap(), None);
        lb.run(&udp_req);
        assert_eq!(flows(lb), before + 2, "its next datagram is a new flow");
    });
}

/// The flow key of a client's IPv4 flow from `CLIENT:sport`.
fn key4(sport: u16, vip: Ipv4Addr, dport: u16, proto: u8) -> FlowKey {
    FlowKey {
        src: v4_words(CLIENT.octets()),
        dst: v4_words(vip.octets()),
        sport: sport.to_be(),
        dport: dport.to_be(),
        proto,
        family: FAMILY_V4,
        _pad: [0; 2],
    }
}

/// A nat TCP handshake through the program: the client's SYN, the
/// backend's SYN-ACK (sequence 5000) to the SNAT port the program chose,
/// the client's ACK of it (5001), which confirms the flow. Returns the
/// backend and SNAT port.
fn handshake(lb: &Lb, sport: u16, vip: Ipv4Addr) -> (Ipv4Addr, u16) {
    let (v, out) = lb.run(&syn(CLIENT, sport, vip, 80));
    assert_eq!(v, XDP_REDIRECT, "SYN");
    let to_backend = inspect(&out);
    let (v, _) = lb.run(&syn_ack(
        to_backend.dst,
        to_backend.dport,
        SNAT,
        to_backend.sport,
    ));
    assert_eq!(v, XDP_REDIRECT, "SYN-ACK");
    let (v, _) = lb.run(&ack_of(CLIENT, sport, vip, 80, 5001));
    assert_eq!(v, XDP_REDIRECT, "ACK");
    (to_backend.dst, to_backend.sport)
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
        // (name, frame, outer is IPv6, outer destination, GUE)
        let cases: Vec<(&str, Vec<u8>, bool, std::net::IpAddr, bool)> = vec![
            (
                "ipip",
                syn(CLIENT, 47000, vip4(40), 80),
                false,
                Ipv4Addr::new(198, 18, 1, 11).into(),
                false,
            ),
            (
                "ip6ip6",
                syn(CLIENT6, 47000, vip6(0x40), 80),
                true,
                backend6(11).into(),
                false,
            ),
            (
                "ipv4 in ipv6",
                syn(CLIENT, 47000, vip4(41), 80),
                true,
                backend6(12).into(),
                false,
            ),
            (
                "gue over ipv4",
                syn(CLIENT, 47000, vip4(42), 80),
                false,
                Ipv4Addr::new(198, 18, 1, 12).into(),
                true,
            ),
            (
                "gue over ipv6",
                syn(CLIENT6, 47000, vip6(0x42), 80),
                true,
                backend6(13).into(),
                true,
            ),
        ];
        for (name, frame, outer6, dst, gue) in cases {
            let (v, out) = lb.run(&frame);
            assert_eq!(v, XDP_REDIRECT, "{name}");
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
            let back = run_frame(decap, &out);
            assert_eq!(back.verdict, XDP_PASS, "{name}");
            let back = back.out;
            assert_eq!(&back[..12], &out[..12], "{name}: MACs kept");
            assert_eq!(&back[12..], &frame[12..], "{name}: the original packet");
        }
        // Other traffic passes the decapsulator untouched.
        let plain = syn(CLIENT, 47001, vip4(40), 80);
        let back = run_frame(decap, &plain);
        assert_eq!((back.verdict, back.out), (XDP_PASS, plain));
    });
}

/// [`SERVICES`] with an IPv6-in-IPv4 tunnel service too (`tun64`,
/// 2001:db8:100::41 to 198.18.1.13), and `extra` top-level settings.
fn tunnel_services(extra: &str) -> String {
    let text = SERVICES.replacen("services:\n", &format!("{extra}services:\n"), 1);
    format!(
        "{text}  - name: tun64\n    vip: \"2001:db8:100::41\"\n    port: 80\n    mode: tunnel\n    \
         backends: [{{ address: 198.18.1.13, port: 80 }}]\n"
    )
}

/// A tunnel packet's outer header: (source, DSCP+ECN byte, IPv6 flow
/// label), the IPv4 header checksum checked.
fn outer_of(out: &[u8]) -> (std::net::IpAddr, u8, Option<u32>) {
    let p = SlicedPacket::from_ethernet(out).expect("outer parses");
    match &p.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header().to_header();
            assert_eq!(
                h.header_checksum,
                h.calc_header_checksum(),
                "outer checksum"
            );
            (h.source.into(), out[15], None)
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header().to_header();
            (h.source.into(), h.traffic_class, Some(h.flow_label.value()))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn tunnel_outer_headers_carry_the_inner_dscp_and_ecn() {
    with_lb_config(&tunnel_services(""), |_, lb| {
        let v6 = |a: u16| std::net::IpAddr::from(vip6(a));
        let v4 = |a: u8| std::net::IpAddr::from(vip4(a));
        // (name, client, VIP): every pair of families, IPIP and GUE.
        let cases: [(&str, std::net::IpAddr, std::net::IpAddr); 6] = [
            ("ipip", CLIENT.into(), v4(40)),
            ("ip6ip6", CLIENT6.into(), v6(0x40)),
            ("ipv4 in ipv6", CLIENT.into(), v4(41)),
            ("ipv6 in ipv4", CLIENT6.into(), v6(0x41)),
            ("gue over ipv4", CLIENT.into(), v4(42)),
            ("gue over ipv6", CLIENT6.into(), v6(0x42)),
        ];
        // AF41 not ECN-capable, CS0 with ECT(1), EF with CE, all ones.
        for tos in [0x8c, 0x01, 0xbb, 0xff, 0x00] {
            for (name, client, vip) in cases {
                let frame = with_tos(syn(client, 47000, vip, 80), tos);
                let (v, out) = lb.run(&frame);
                assert_eq!(v, XDP_REDIRECT, "{name}");
                let (src, outer_tos, label) = outer_of(&out);
                assert_eq!(outer_tos, tos, "{name}: outer DSCP/ECN");
                // Without tunnel_source: the SNAT address, as ever.
                let snat: std::net::IpAddr = if label.is_some() {
                    SNAT6.into()
                } else {
                    SNAT.into()
                };
                assert_eq!(src, snat, "{name}");
                if let Some(label) = label {
                    assert_ne!(label, 0, "{name}: flow label");
                }
                // The inner packet is untouched (its TOS too).
                assert!(out.ends_with(&frame[14..]), "{name}: inner packet");
            }
        }
    });
}

#[test]
fn decap_carries_a_ce_mark_into_the_inner_packet() {
    with_lb(|_, lb| {
        let mut decap = xdplb::decap::load(6080).expect("decap program loads");
        let decap = xdplb::decap::program(&mut decap).unwrap();
        // (name, client, VIP): IPv4 and IPv6 inside IPv4 and IPv6.
        let cases: [(&str, std::net::IpAddr, std::net::IpAddr); 4] = [
            ("ipip", CLIENT.into(), vip4(40).into()),
            ("ip6ip6", CLIENT6.into(), vip6(0x40).into()),
            ("ipv4 in ipv6", CLIENT.into(), vip4(41).into()),
            ("gue over ipv4", CLIENT.into(), vip4(42).into()),
        ];
        for (name, client, vip) in cases {
            // (inner DSCP+ECN, what the backend's kernel gets): ECT(0),
            // ECT(1) and CE become CE; not ECN-capable is dropped.
            for (tos, want) in [
                (0xb8 | 2, Some(0xbb)),
                (1, Some(3)),
                (3, Some(3)),
                (0x8c, None),
            ] {
                let frame = with_tos(syn(client, 47000, vip, 80), tos);
                let (_, out) = lb.run(&frame);
                // A router on the way marks the outer header CE.
                let (_, outer_tos, _) = outer_of(&out);
                let marked = with_tos(out, outer_tos | 3);
                let back = run_frame(decap, &marked);
                match want {
                    None => assert_eq!(back.verdict, XDP_DROP, "{name} {tos:#x}"),
                    Some(ce) => {
                        assert_eq!(back.verdict, XDP_PASS, "{name} {tos:#x}");
                        let expect = with_tos(frame.clone(), ce);
                        assert_eq!(&back.out[12..], &expect[12..], "{name} {tos:#x}");
                    }
                }
                // Unmarked, the inner packet is as it was.
                let plain = run_frame(decap, &lb.run(&frame).1);
                assert_eq!((plain.verdict, &plain.out[12..]), (XDP_PASS, &frame[12..]));
            }
        }
    });
}

#[test]
fn tunnel_source_spreads_flows_over_the_prefix() {
    let yaml =
        tunnel_services("tunnel_source: { ipv4: 198.18.2.0/24, ipv6: \"2001:db8:2::/64\" }\n");
    // Neither prefix is on any interface of the bed: the FIB lookup with
    // such a source must still forward.
    with_lb_config(&yaml, |_, lb| {
        let g = lb.plan.globals;
        let prefix4 = |a: std::net::IpAddr| match a {
            std::net::IpAddr::V4(a) => a.octets()[..3] == [198, 18, 2],
            _ => false,
        };
        let prefix6 = |a: std::net::IpAddr| match a {
            std::net::IpAddr::V6(a) => a.segments()[..4] == [0x2001, 0xdb8, 2, 0],
            _ => false,
        };
        // (name, client, VIP, outer is IPv4)
        let cases: [(&str, std::net::IpAddr, std::net::IpAddr, bool); 4] = [
            ("ipip", CLIENT.into(), vip4(40).into(), true),
            ("ip6ip6", CLIENT6.into(), vip6(0x40).into(), false),
            ("ipv4 in ipv6", CLIENT.into(), vip4(41).into(), false),
            ("gue over ipv4", CLIENT.into(), vip4(42).into(), true),
        ];
        for (name, client, vip, outer4) in cases {
            let mut sources = std::collections::BTreeSet::new();
            let mut labels = std::collections::BTreeSet::new();
            for sport in 40000..40064u16 {
                let frame = with_tos(syn(client, sport, vip, 80), 0x8c);
                let (v, out) = lb.run(&frame);
                assert_eq!(v, XDP_REDIRECT, "{name}: forwarded from the prefix");
                let (src, tos, label) = outer_of(&out);
                assert_eq!(tos, 0x8c, "{name}");
                assert!(
                    if outer4 { prefix4(src) } else { prefix6(src) },
                    "{name}: {src}"
                );
                // The program's choice is the shared one, from the flow hash.
                let (s, family) = addr_words(client);
                let key = FlowKey {
                    src: s,
                    dst: addr_words(vip).0,
                    sport: sport.to_be(),
                    dport: 80u16.to_be(),
                    proto: lb_common::PROTO_TCP,
                    family,
                    _pad: [0; 2],
                };
                let h = flow_hash(&key, lb_common::HASH_FIVE_TUPLE, g.hash_seed);
                let outer_family = if outer4 {
                    FAMILY_V4
                } else {
                    lb_common::FAMILY_V6
                };
                let want = lb_common::words_addr(g.tunnel_source(outer_family, h), outer_family);
                assert_eq!(src, want, "{name}");
                if let std::net::IpAddr::V4(a) = src {
                    assert!(![0, 255].contains(&a.octets()[3]), "{name}: {a}");
                }
                assert_eq!(label, (!outer4).then(|| tunnel_flow_label(h)), "{name}");
                // One flow, one source: the next packet leaves the same way.
                let (_, again) = lb.run(&frame);
                assert_eq!(outer_of(&again).0, src, "{name}: same flow, same source");
                sources.insert(src);
                labels.insert(label);
            }
            // 64 flows over 254 (or 2^32) sources: they spread.
            assert!(sources.len() > 40, "{name}: {} sources", sources.len());
            if !outer4 {
                assert!(labels.len() > 60, "{name}: {} labels", labels.len());
            }
        }
        // An IPv6 packet in IPv4 leaves from the IPv4 prefix.
        let (v, out) = lb.run(&syn(CLIENT6, 40000, vip6(0x41), 80));
        assert_eq!(v, XDP_REDIRECT);
        assert!(prefix4(outer_of(&out).0));
    });
}

#[test]
fn echo_requests_to_vips_are_answered_when_enabled() {
    with_lb(|_, lb| {
        let req = icmp4(CLIENT, WEB_VIP, icmp(8, 0, [0, 7, 0, 1], b"ping"));
        let (v, out) = lb.run(&req);
        assert_eq!(v, XDP_TX);
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

        let req6 = icmp6(CLIENT6, WEB6_VIP, icmp(128, 0, [0, 7, 0, 1], b"ping6"));
        let (v, out) = lb.run(&req6);
        assert_eq!(v, XDP_TX);
        assert_eq!(out[14 + 40], 129, "echo reply");
        assert_eq!(&out[14 + 8..14 + 24], &WEB6_VIP.octets());
        assert!(icmp6_valid(&out));

        // A VIP whose services do not enable it: the kernel's business.
        let other = icmp4(CLIENT, DNS_VIP, icmp(8, 0, [0, 7, 0, 1], b"ping"));
        let (v, out) = lb.run(&other);
        assert_eq!((v, out), (XDP_PASS, other));
    });
}

#[test]
fn icmp_errors_about_a_flow_reach_its_backend() {
    with_lb(|_, lb| {
        let router = Ipv4Addr::new(198, 18, 0, 254);
        // nat: the flow, and the reply the client's side could not take.
        let (_, fwd) = lb.run(&syn(CLIENT, 48000, WEB_VIP, 80));
        let f = inspect(&fwd);
        let reply = syn_ack(f.dst, 8080, SNAT, f.sport);
        let (_, back) = lb.run(&reply);
        // "Fragmentation needed, MTU 1400" quoting the translated reply.
        let quoted = &back[14..14 + 40];
        let err = icmp4(router, WEB_VIP, icmp(3, 4, [0, 0, 0x05, 0x78], quoted));
        let (v, out) = lb.run(&err);
        assert_eq!(v, XDP_REDIRECT, "on to the backend");
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
        let (_, _) = lb.run(&syn(CLIENT, 48001, DSR_VIP, 80));
        let mut from_vip = syn(DSR_VIP, 80, CLIENT, 48001);
        from_vip.drain(..14);
        let err = icmp4(
            router,
            DSR_VIP,
            icmp(3, 4, [0, 0, 0x05, 0x78], &from_vip[..28]),
        );
        let (v, out) = lb.run(&err);
        assert_eq!(v, XDP_REDIRECT);
        assert!(
            [11, 12]
                .map(|n| backend_mac(Ipv4Addr::new(198, 18, 1, n)))
                .contains(&macs(&out).0)
        );
        assert_eq!(&out[12..], &err[12..]);

        // An error about no flow of ours: the kernel's.
        let mut stray = syn(WEB_VIP, 80, CLIENT, 1);
        stray.drain(..14);
        let err = icmp4(
            router,
            WEB_VIP,
            icmp(3, 4, [0, 0, 0x05, 0x78], &stray[..28]),
        );
        let (v, _) = lb.run(&err);
        assert_eq!(v, XDP_PASS);

        // IPv6 nat: "packet too big" quoting the translated reply.
        let (_, fwd6) = lb.run(&syn(CLIENT6, 48002, WEB6_VIP, 80));
        let f6 = inspect6(&fwd6);
        let reply6 = syn_ack(f6.dst, 8080, SNAT6, f6.sport);
        let (_, back6) = lb.run(&reply6);
        let router6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe);
        let err6 = icmp6(
            router6,
            WEB6_VIP,
            icmp(2, 0, [0, 0, 0x05, 0x00], &back6[14..]),
        );
        let (v, out) = lb.run(&err6);
        assert_eq!(v, XDP_REDIRECT);
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

/// (verdict, output, answered, rate-limited): one frame to a service with
/// no usable backend, and the reject counters' increase.
fn reject(lb: &Lb, frame: &[u8]) -> (u32, Vec<u8>, u64, u64) {
    let (r0, l0) = (lb.global(STAT_REJECT), lb.global(STAT_REJECT_LIMITED));
    let (v, out) = lb.run(frame);
    (
        v,
        out,
        lb.global(STAT_REJECT) - r0,
        lb.global(STAT_REJECT_LIMITED) - l0,
    )
}

/// TCP header fields of a frame `inspect` has checked: (seq, ack, flags,
/// header length).
fn tcp_fields(frame: &[u8], l4: usize) -> (u32, u32, u8, usize) {
    let t = &frame[l4..];
    (
        u32::from_be_bytes(t[4..8].try_into().unwrap()),
        u32::from_be_bytes(t[8..12].try_into().unwrap()),
        t[13],
        (t[12] >> 4) as usize * 4,
    )
}

#[test]
fn tcp_to_a_service_with_no_usable_backend_is_answered_with_a_rst() {
    with_lb(|_, lb| {
        // A SYN carrying 5 bytes (seq 1000): RST+ACK acknowledging all of it.
        let (v, out, answered, _) = reject(lb, &syn(CLIENT, 41000, EMPTY_VIP, 80));
        assert_eq!((v, answered), (XDP_TX, 1));
        assert_eq!(macs(&out), (CLIENT_MAC, LBC_MAC), "back to the sender");
        let o = inspect(&out);
        assert_eq!(
            (o.src, o.dst, o.sport, o.dport),
            (EMPTY_VIP, CLIENT, 80, 41000)
        );
        assert_eq!(out.len(), 14 + 20 + 20, "no options, no payload");
        assert_eq!(tcp_fields(&out, 34), (0, 1000 + 5 + 1, 0x14, 20), "RST+ACK");

        // A segment with ACK (ack 1): a RST whose sequence number is that ack.
        let ack = tcp(CLIENT, 41001, EMPTY_VIP, 80, Tcp::Ack, b"data");
        let (v, out, _, _) = reject(lb, &ack);
        assert_eq!(v, XDP_TX);
        inspect(&out);
        assert_eq!(tcp_fields(&out, 34), (1, 0, 0x04, 20), "RST");

        // IPv4 options and a VLAN tag: options dropped, tag kept.
        let (v, out, _, _) = reject(lb, &syn_with_ip_options(41002, EMPTY_VIP));
        assert_eq!(v, XDP_TX);
        assert_eq!(out[14] & 0x0f, 5, "IHL 5");
        assert_eq!(inspect(&out).dport, 41002);
        let (v, out, _, _) = reject(lb, &syn_with_vlan(7, 41003, EMPTY_VIP));
        assert_eq!(v, XDP_TX);
        assert_eq!(&out[12..16], &[0x81, 0x00, 0x00, 0x07], "the tag stays");
        assert_eq!(out.len(), 18 + 40);

        // IPv6.
        let (v, out, answered, _) = reject(lb, &syn(CLIENT6, 41004, EMPTY6_VIP, 80));
        assert_eq!((v, answered), (XDP_TX, 1));
        let o = inspect6(&out);
        assert_eq!(
            (o.src, o.dst, o.sport, o.dport),
            (EMPTY6_VIP, CLIENT6, 80, 41004)
        );
        assert_eq!(tcp_fields(&out, 54), (0, 1006, 0x14, 20));

        // A RST is never answered.
        let mut rst = tcp(CLIENT, 41005, EMPTY_VIP, 80, Tcp::Ack, b"");
        rst[14 + 20 + 13] = 0x04;
        let (v, _, answered, _) = reject(lb, &rst);
        assert_eq!((v, answered), (XDP_DROP, 0));
    });
}

#[test]
fn udp_to_a_service_with_no_usable_backend_gets_port_unreachable() {
    with_lb(|_, lb| {
        let dgram = udp(CLIENT, 42000, EMPTY_VIP, 53, b"query");
        let (v, out, answered, _) = reject(lb, &dgram);
        assert_eq!((v, answered), (XDP_TX, 1));
        assert_eq!(macs(&out), (CLIENT_MAC, LBC_MAC));
        let ip = &out[14..];
        assert!(sums_to_zero(&ip[..20]), "IPv4 header checksum");
        assert_eq!(
            (ip[9], &ip[12..16], &ip[16..20]),
            (1, &EMPTY_VIP.octets()[..], &CLIENT.octets()[..])
        );
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, ip.len());
        assert_eq!(&ip[20..22], &[3, 3], "port unreachable");
        assert!(sums_to_zero(&ip[20..]), "ICMP checksum");
        assert_eq!(
            &ip[28..],
            &dgram[14..14 + 28],
            "quotes the IP header and 8 bytes"
        );

        let dgram6 = udp(CLIENT6, 42001, EMPTY6_VIP, 53, b"query6");
        let (v, out, answered, _) = reject(lb, &dgram6);
        assert_eq!((v, answered), (XDP_TX, 1));
        assert!(icmp6_valid(&out), "ICMPv6 checksum");
        let ip = &out[14..];
        assert_eq!((ip[6], &ip[8..24]), (58, &EMPTY6_VIP.octets()[..]));
        assert_eq!(&ip[24..40], &CLIENT6.octets());
        assert_eq!(&ip[40..42], &[1, 4], "port unreachable");
        assert_eq!(&ip[48..], &dgram6[14..14 + 48], "quotes the headers");
    });
}

#[test]
fn on_empty_drop_answers_nothing_and_rejections_are_rate_limited() {
    with_lb(|_, lb| {
        let no_backend = lb.global(STAT_NO_BACKEND);
        let (v, _, answered, _) = reject(lb, &syn(CLIENT, 43000, QUIET_VIP, 80));
        assert_eq!((v, answered), (XDP_DROP, 0));
        assert_eq!(lb.global(STAT_NO_BACKEND), no_backend + 1);
    });
    let cfg = format!("{SERVICES}\nreject_limit: 3\n");
    let bed = FibNet::create(11..=13).unwrap();
    bed.run_in(|| {
        let lb = Lb::with_config(&cfg);
        let (mut sent, mut limited) = (0, 0);
        for port in 0..10 {
            let (v, _, a, l) = reject(&lb, &syn(CLIENT, 44000 + port, EMPTY_VIP, 80));
            assert_eq!(v, if a == 1 { XDP_TX } else { XDP_DROP });
            (sent, limited) = (sent + a, limited + l);
        }
        // 3 a second per CPU: 3, or 6 if a second began during the loop.
        assert!(sent == 3 || sent == 6, "{sent} answered");
        assert_eq!(sent + limited, 10);
        Ok(())
    })
    .unwrap();
}

/// `frame` (IPv4, no options) as a sender with TX checksum offload hands
/// it over: the TCP/UDP checksum field holds only the pseudo-header's sum.
fn with_partial_checksum(mut frame: Vec<u8>) -> Vec<u8> {
    let ip = &frame[14..34];
    let l4_len = (u16::from_be_bytes([ip[2], ip[3]]) - 20).to_be_bytes();
    let pseudo = [&ip[12..20], &[0, ip[9]], &l4_len[..]].concat();
    let at = 34 + if ip[9] == 6 { 16 } else { 6 };
    let partial = !lb_common::csum::checksum(&pseudo);
    frame[at..at + 2].copy_from_slice(&partial.to_ne_bytes());
    frame
}

#[test]
fn partial_checksums_on_new_flows_are_counted_by_interface() {
    with_lb(|_, lb| {
        let seen = lb.dp.take_partial_csum().unwrap();
        let before = lb.global(STAT_PARTIAL_CSUM);
        // Full checksums: nothing counted.
        assert_eq!(lb.run(&syn(CLIENT, 45000, WEB_VIP, 80)).0, XDP_REDIRECT);
        assert_eq!(lb.global(STAT_PARTIAL_CSUM), before);

        let partial = with_partial_checksum(syn(CLIENT, 45001, WEB_VIP, 80));
        assert_eq!(lb.run(&partial).0, XDP_REDIRECT, "still forwarded");
        let udp_partial = with_partial_checksum(udp(CLIENT, 45002, DNS_VIP, 53, b"q"));
        assert_eq!(lb.run(&udp_partial).0, XDP_REDIRECT);
        assert_eq!(lb.global(STAT_PARTIAL_CSUM), before + 2);
        // Only a flow's first packet is looked at.
        lb.run(&partial);
        assert_eq!(lb.global(STAT_PARTIAL_CSUM), before + 2);

        // Noted by ingress interface (BPF_PROG_TEST_RUN's: loopback).
        let keys: Vec<u32> = seen.keys().map(Result::unwrap).collect();
        assert_eq!(keys, [1], "ifindex of lo");
    });
}

#[test]
fn only_a_real_client_confirms_a_flow_and_a_flood_churns_only_unconfirmed_ones() {
    with_lb(|_, lb| {
        let state = |sport: u16, vip: Ipv4Addr, dport: u16, proto: u8| {
            let key = key4(sport, vip, dport, proto);
            lb.dp.flow(&key).unwrap().map(|(_, confirmed)| confirmed)
        };
        let tcp_state = |sport| state(sport, WEB_VIP, 80, 6);
        let confirmed_before = lb.global(STAT_FLOW_CONFIRMED);

        // nat TCP: only the ACK of the backend's SYN-ACK confirms.
        let (v, out) = lb.run(&syn(CLIENT, 47000, WEB_VIP, 80));
        assert_eq!(v, XDP_REDIRECT);
        let to_backend = inspect(&out);
        assert_eq!(
            tcp_state(47000),
            Some(false),
            "a SYN makes an unconfirmed flow"
        );
        lb.run(&ack_of(CLIENT, 47000, WEB_VIP, 80, 5001));
        assert_eq!(tcp_state(47000), Some(false), "an ACK before any SYN-ACK");
        let (v, _) = lb.run(&syn_ack(to_backend.dst, 8080, SNAT, to_backend.sport));
        assert_eq!(
            v, XDP_REDIRECT,
            "the SYN-ACK of an unconfirmed flow goes back"
        );
        lb.run(&ack_of(CLIENT, 47000, WEB_VIP, 80, 1234));
        assert_eq!(
            tcp_state(47000),
            Some(false),
            "an ACK of the wrong number (spoofed)"
        );
        lb.run(&ack_of(CLIENT, 47000, WEB_VIP, 80, 5001));
        assert_eq!(tcp_state(47000), Some(true), "the client's real ACK");
        assert_eq!(lb.global(STAT_FLOW_CONFIRMED), confirmed_before + 1);

        // dsr TCP: replies bypass the balancer; a second packet (an ACK) confirms.
        lb.run(&syn(CLIENT, 47001, DSR_VIP, 80));
        assert_eq!(state(47001, DSR_VIP, 80, 6), Some(false));
        lb.run(&tcp(CLIENT, 47001, DSR_VIP, 80, Tcp::Ack, b""));
        assert_eq!(state(47001, DSR_VIP, 80, 6), Some(true));

        // nat UDP: a second datagram confirms once the backend answered.
        let q = udp(CLIENT, 47002, DNS_VIP, 53, b"q");
        let to_backend = inspect(&lb.run(&q).1);
        lb.run(&q);
        assert_eq!(
            state(47002, DNS_VIP, 53, PROTO_UDP),
            Some(false),
            "no answer yet"
        );
        let answer = udp(to_backend.dst, 5353, SNAT, to_backend.sport, b"a");
        assert_eq!(lb.run(&answer).0, XDP_REDIRECT, "the answer goes back");
        lb.run(&q);
        assert_eq!(state(47002, DNS_VIP, 53, PROTO_UDP), Some(true));

        // A flood of first packets, 3x the unconfirmed table (1024 for a
        // flow table of 4096): the confirmed nat flow keeps its entries,
        // replies included.
        let confirmed_now = lb.global(STAT_FLOW_CONFIRMED);
        for i in 0..3 * 1024u32 {
            let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 128, 0)) + i);
            lb.run(&syn(src, 50000, WEB_VIP, 80));
        }
        assert_eq!(
            lb.global(STAT_FLOW_CONFIRMED),
            confirmed_now,
            "a flood confirms nothing"
        );
        assert_eq!(tcp_state(47000), Some(true));
        let mut reply = syn_ack(
            to_backend_of(lb, 47000),
            8080,
            SNAT,
            snat_port_of(lb, 47000),
        );
        reply[14 + 20 + 13] = 0x10; // an ACK carrying data (checksum not checked on the way)
        assert_eq!(
            lb.run(&reply).0,
            XDP_REDIRECT,
            "its replies are still translated"
        );
    });
}

/// The backend address of the client flow from `CLIENT:sport` to `web`.
fn to_backend_of(lb: &Lb, sport: u16) -> Ipv4Addr {
    let (flow, _) = lb.dp.flow(&key4(sport, WEB_VIP, 80, 6)).unwrap().unwrap();
    let id = flow.backend;
    lb.plan
        .services
        .iter()
        .flat_map(|s| &s.backends)
        .find(|b| b.id == id)
        .map(|b| match b.addr.ip() {
            std::net::IpAddr::V4(a) => a,
            _ => unreachable!(),
        })
        .unwrap()
}

/// The SNAT port of that flow.
fn snat_port_of(lb: &Lb, sport: u16) -> u16 {
    let (flow, _) = lb.dp.flow(&key4(sport, WEB_VIP, 80, 6)).unwrap().unwrap();
    u16::from_be(flow.snat_port)
}
