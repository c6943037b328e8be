//! Per-backend golden signals (docs/operations.md, "Golden signals").
//!
//! Packet tests: frames through the real XDP program (BPF_PROG_TEST_RUN),
//! the daemon's own sweep, the counters as the daemon reads them.
//! Integration: the real daemon with real servers and clients: a backend
//! that resets connections, one whose SYNs nftables drops, open and closed
//! connections, handshakes timed.
//!
//! Needs root and the built XDP program.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    time::{Duration, Instant},
};

use lb_common::{FlowKey, HANDSHAKE_BUCKETS};
use lb_testbed::{
    HttpServer, Topology, XDP_REDIRECT, XDP_TX, backend_addr,
    fib_net::{CLIENT, FibNet},
    fixtures::{DSR_VIP, SERVICES, SNAT, WEB_VIP, backend, dataplane, service},
    frames::{ack_of, syn, syn_ack},
    http_get,
    inspect::inspect,
    metric_sum, netns, run_frame, wait_answering, xdplb_bin,
};
use xdplb::dataplane::{Counters, Dataplane};

// --- packet tests ---

/// Offset of the TCP flags in an IPv4 frame without options.
const FLAGS: usize = 14 + 20 + 13;

struct Lb {
    dp: Dataplane,
    ids: Vec<u32>,
}

impl Lb {
    fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        let r = run_frame(self.dp.program(), frame);
        (r.verdict, r.out)
    }

    fn counters(&self) -> Counters {
        self.dp.counters(&[], &self.ids).unwrap()
    }

    /// The backend id of the client flow `CLIENT:sport` -> `vip`:80.
    fn backend_of(&self, sport: u16, vip: Ipv4Addr) -> u32 {
        self.dp.flow(&key4(sport, vip)).unwrap().unwrap().0.backend
    }
}

fn key4(sport: u16, vip: Ipv4Addr) -> FlowKey {
    lb_testbed::fib_net::client_key4(sport, vip)
}

fn with_lb(f: impl FnOnce(&mut Lb) + Send) {
    let bed = FibNet::create(11..=13).unwrap();
    bed.run_in(|| {
        let (dp, plan) = dataplane(SERVICES);
        let ids = plan
            .services
            .iter()
            .flat_map(|s| &s.backends)
            .map(|b| b.id)
            .collect();
        f(&mut Lb { dp, ids });
        Ok(())
    })
    .unwrap();
}

/// The SYN of a nat flow and, `wait` later, the backend's SYN-ACK; returns
/// the backend's side (address, SNAT port) and the frames' lengths.
fn syn_then_syn_ack(lb: &Lb, sport: u16, wait: Duration) -> ((Ipv4Addr, u16), usize, usize) {
    let s = syn(CLIENT, sport, WEB_VIP, 80);
    let (v, out) = lb.run(&s);
    assert!(v == XDP_REDIRECT || v == XDP_TX, "SYN: {v}");
    let o = inspect(&out);
    std::thread::sleep(wait);
    let sa = syn_ack(o.dst, o.dport, SNAT, o.sport);
    let (v, _) = lb.run(&sa);
    assert!(v == XDP_REDIRECT || v == XDP_TX, "SYN-ACK: {v}");
    ((o.dst, o.sport), s.len(), sa.len())
}

#[test]
fn nat_bytes_each_way_resets_and_the_handshake_latency_are_counted() {
    with_lb(|lb| {
        let ((backend, snat_port), syn_len, syn_ack_len) =
            syn_then_syn_ack(lb, 47000, Duration::from_millis(3));
        let id = lb.backend_of(47000, WEB_VIP);
        let c = lb.counters();
        let bc = c.backends[&id];
        assert_eq!(bc.flows, 1);
        assert_eq!(bc.reply_bytes, syn_ack_len as u64, "the SYN-ACK came back");
        assert_eq!(
            bc.bytes - bc.reply_bytes,
            syn_len as u64,
            "the SYN went out"
        );
        assert_eq!(c.loads[&id].recent, 1, "the new flow is counted at once");
        let h = c.handshakes[&id];
        let timed: u64 = h.buckets.iter().sum();
        assert_eq!(timed, 1, "{h:?}");
        // 3 ms at least, well under a second: buckets 12 (4.1 ms) .. 19.
        let bucket = h.buckets.iter().position(|&n| n == 1).unwrap();
        assert!((12..20).contains(&bucket), "bucket {bucket}: {h:?}");
        assert!(h.sum_us >= 3000 && h.sum_us < 500_000, "{h:?}");

        // A retransmitted SYN-ACK is not a second handshake.
        lb.run(&syn_ack(backend, 8080, SNAT, snat_port));
        let h = lb.counters().handshakes[&id];
        assert_eq!(h.buckets.iter().sum::<u64>(), 1);

        // Confirmed, then reset by the backend: counted, and the flow is
        // closing (it no longer counts as active).
        let (v, _) = lb.run(&ack_of(CLIENT, 47000, WEB_VIP, 80, 5001));
        assert!(v == XDP_REDIRECT || v == XDP_TX);
        let (flow, confirmed) = lb.dp.flow(&key4(47000, WEB_VIP)).unwrap().unwrap();
        assert!(confirmed && flow.closing == 0);
        let mut rst = syn_ack(backend, 8080, SNAT, snat_port);
        rst[FLAGS] = 0x14; // RST|ACK (checksums are not the point here)
        lb.run(&rst);
        let c = lb.counters();
        assert_eq!(c.backends[&id].resets, 1);
        let (flow, _) = lb.dp.flow(&key4(47000, WEB_VIP)).unwrap().unwrap();
        assert_eq!(flow.closing, 1, "a backend's RST closes the flow");
        // No other backend counted anything of it.
        for (other, bc) in &c.backends {
            if *other != id {
                assert_eq!((bc.resets, bc.reply_bytes), (0, 0), "backend {other}");
                assert_eq!(c.handshakes[other].sum_us, 0);
            }
        }
    });
}

#[test]
fn the_sweep_counts_active_flows_exactly_and_unanswered_attempts() {
    with_lb(|lb| {
        // Three confirmed flows and one SYN nobody answers.
        let mut held = Vec::new();
        for sport in 48000..48003 {
            let ((backend, snat_port), _, _) = syn_then_syn_ack(lb, sport, Duration::ZERO);
            lb.run(&ack_of(CLIENT, sport, WEB_VIP, 80, 5001));
            held.push((sport, lb.backend_of(sport, WEB_VIP), backend, snat_port));
        }
        let (v, _) = lb.run(&syn(CLIENT, 48010, WEB_VIP, 80));
        assert!(v == XDP_REDIRECT || v == XDP_TX);
        let silent = lb.backend_of(48010, WEB_VIP);
        // One more answered but never confirmed: answered, so not counted.
        syn_then_syn_ack(lb, 48011, Duration::ZERO);
        let answered = lb.backend_of(48011, WEB_VIP);

        let active = |lb: &Lb| -> Vec<(u32, u64)> {
            let c = lb.counters();
            let mut v: Vec<(u32, u64)> = c
                .loads
                .iter()
                .filter(|(_, l)| l.active > 0)
                .map(|(id, l)| (*id, l.active))
                .collect();
            v.sort();
            v
        };
        let expected = |held: &[(u16, u32, Ipv4Addr, u16)]| {
            let mut e: Vec<(u32, u64)> = Vec::new();
            for (_, id, _, _) in held {
                match e.iter_mut().find(|(i, _)| i == id) {
                    Some((_, n)) => *n += 1,
                    None => e.push((*id, 1)),
                }
            }
            e.sort();
            e
        };
        assert_eq!(active(lb), vec![], "nothing counted before a sweep");
        let recent: u64 = lb.counters().loads.values().map(|l| l.recent).sum();
        assert_eq!(recent, 5, "new flows, counted by the program");
        lb.dp.expire_flows().unwrap();
        assert_eq!(active(lb), expected(&held));
        let c = lb.counters();
        assert!(
            c.loads.values().all(|l| l.recent == 0),
            "the sweep took over"
        );
        assert!(c.loads.values().all(|l| l.flows() == l.active));

        // The client closes one (FIN), the backend resets another.
        let (sport, _, _, _) = held.remove(0);
        let mut fin = ack_of(CLIENT, sport, WEB_VIP, 80, 5001);
        fin[FLAGS] = 0x11;
        lb.run(&fin);
        let (_, _, backend, snat_port) = held.remove(0);
        let mut rst = syn_ack(backend, 8080, SNAT, snat_port);
        rst[FLAGS] = 0x04;
        lb.run(&rst);
        lb.dp.expire_flows().unwrap();
        assert_eq!(active(lb), expected(&held));

        // Past the unconfirmed timeout (1 s): the unanswered SYN is
        // counted against its backend, the answered one is not.
        std::thread::sleep(Duration::from_millis(2100));
        lb.dp.expire_flows().unwrap();
        let c = lb.counters();
        let unanswered: Vec<(u32, u64)> = c
            .loads
            .iter()
            .filter(|(_, l)| l.unanswered > 0)
            .map(|(id, l)| (*id, l.unanswered))
            .collect();
        assert_eq!(
            unanswered,
            vec![(silent, 1)],
            "answered one went to {answered}"
        );
        // Still counted after another sweep (a counter), and the gauge
        // holds (nothing else changed).
        lb.dp.expire_flows().unwrap();
        assert_eq!(lb.counters().loads[&silent].unanswered, 1);
        assert_eq!(active(lb), expected(&held));
    });
}

#[test]
fn dsr_counts_new_flows_bytes_and_active_flows_from_the_client_side() {
    with_lb(|lb| {
        let s = syn(CLIENT, 49000, DSR_VIP, 80);
        lb.run(&s);
        let id = lb.backend_of(49000, DSR_VIP);
        let (flow, confirmed) = lb.dp.flow(&key4(49000, DSR_VIP)).unwrap().unwrap();
        assert!(!confirmed);
        assert_eq!(flow.born_us, 0, "dsr times no handshake");
        let ack = ack_of(CLIENT, 49000, DSR_VIP, 80, 5001);
        lb.run(&ack);
        lb.dp.expire_flows().unwrap();
        let c = lb.counters();
        let bc = c.backends[&id];
        assert_eq!((bc.flows, bc.reply_bytes, bc.resets), (1, 0, 0));
        assert_eq!(bc.bytes, (s.len() + ack.len()) as u64);
        assert_eq!(c.loads[&id].active, 1);
        assert_eq!(c.handshakes[&id].buckets, [0; HANDSHAKE_BUCKETS]);
    });
}

// --- integration: real servers and clients ---

const TIMEOUT: Duration = Duration::from_secs(5);

/// `good` (backend-1 serves HTTP), `reset` (backend-2: no listener on the
/// port, so its kernel answers every SYN with a RST), `silent` (backend-3:
/// nftables drops its SYNs).
fn config(topo: &Topology) -> String {
    topo.daemon_config(
        "snat: { ipv4: 198.18.1.1, ports: 20000-29999 }\n\
         flow_timeouts: { unconfirmed: 1s }",
        &[
            service(
                "good",
                "198.18.100.10",
                80,
                &["protocol: tcp"],
                &[backend(backend_addr(1), 8080)],
            ),
            service(
                "reset",
                "198.18.100.11",
                80,
                &["protocol: tcp"],
                &[backend(backend_addr(2), 8081)],
            ),
            service(
                "silent",
                "198.18.100.12",
                80,
                &["protocol: tcp"],
                &[backend(backend_addr(3), 8080)],
            ),
        ],
    )
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> Option<f64>, want: f64) {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < limit {
        last = f();
        if last == Some(want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what}: {last:?} after {limit:?}, expected {want}");
}

#[test]
fn golden_signals_with_real_servers() {
    let topo = Topology::create(3).expect("topology");
    let _good = HttpServer::start(
        &topo.backend_ns(1),
        SocketAddr::V4(SocketAddrV4::new(backend_addr(1), 8080)),
        "backend-1",
    )
    .unwrap();
    let _silent = HttpServer::start(
        &topo.backend_ns(3),
        SocketAddr::V4(SocketAddrV4::new(backend_addr(3), 8080)),
        "backend-3",
    )
    .unwrap();
    let be3 = topo.backend_ns(3);
    for rule in [
        "add table inet signals",
        "add chain inet signals input { type filter hook input priority 0 ; }",
        "add rule inet signals input tcp dport 8080 drop",
    ] {
        netns::run(netns::command(&be3, "nft").args(rule.split(' '))).unwrap();
    }
    let daemon = topo
        .start_daemon(xdplb_bin!(), &config(&topo))
        .expect("daemon starts");
    let good: SocketAddr = "198.18.100.10:80".parse().unwrap();
    assert!(
        wait_answering(&topo.client_ns(), good, Duration::from_secs(20)),
        "no answer through the VIP:\n{}",
        daemon.log()
    );
    let metric = |name: &str, svc: &str| -> Option<f64> {
        let text = daemon.metrics().ok()?;
        text.lines()
            .any(|l| l.starts_with(name) && l.contains(&format!("service=\"{svc}\"")))
            .then(|| metric_sum(&text, name, &[("service", svc)]))
    };

    // Handshakes of real requests are timed.
    for _ in 0..10 {
        let r = http_get(&topo.client_ns(), good, "/", TIMEOUT).unwrap();
        assert_eq!(r.0, 200);
    }
    let timed = metric("xdplb_backend_handshake_seconds_count", "good").unwrap();
    assert!(timed >= 10.0, "{timed} handshakes timed");
    let sum = metric("xdplb_backend_handshake_seconds_sum", "good").unwrap();
    println!(
        "SIGNALS: {timed} handshakes, mean {:.1} us",
        sum / timed * 1e6
    );
    assert!(sum > 0.0 && sum / timed < 0.1, "mean {} s", sum / timed);

    // Active flows: exactly the connections held open, then 0.
    wait_for(
        "active flows, nothing open",
        Duration::from_secs(15),
        || metric("xdplb_backend_active_flows", "good"),
        0.0,
    );
    let held: Vec<TcpStream> = netns::run_in(&topo.client_ns(), || {
        Ok((0..7)
            .map(|_| TcpStream::connect_timeout(&good, TIMEOUT).unwrap())
            .collect())
    })
    .unwrap();
    wait_for(
        "active flows, 7 open",
        Duration::from_secs(15),
        || metric("xdplb_backend_active_flows", "good"),
        7.0,
    );
    drop(held);
    wait_for(
        "active flows, all closed",
        Duration::from_secs(15),
        || metric("xdplb_backend_active_flows", "good"),
        0.0,
    );

    // A backend that resets: every attempt refused, each RST counted.
    let reset: SocketAddr = "198.18.100.11:80".parse().unwrap();
    for _ in 0..5 {
        let refused = netns::run_in(&topo.client_ns(), || {
            Ok(TcpStream::connect_timeout(&reset, TIMEOUT).err())
        })
        .unwrap();
        let e = refused.expect("the reset backend refuses");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    }
    assert_eq!(metric("xdplb_backend_resets_total", "reset"), Some(5.0));
    assert_eq!(metric("xdplb_backend_resets_total", "good"), Some(0.0));

    // A backend whose SYNs are dropped: unanswered, once each attempt's
    // unconfirmed flow expires (1 s) and a full sweep (5 s) ran.
    let silent: SocketAddr = "198.18.100.12:80".parse().unwrap();
    for _ in 0..3 {
        let r = netns::run_in(&topo.client_ns(), || {
            Ok(TcpStream::connect_timeout(&silent, Duration::from_millis(300)).err())
        })
        .unwrap();
        assert!(r.is_some(), "the silent backend must not answer");
    }
    // Each attempt is one flow (its retransmitted SYNs included).
    wait_for(
        "unanswered attempts",
        Duration::from_secs(15),
        || metric("xdplb_backend_unanswered_total", "silent"),
        3.0,
    );
    assert_eq!(metric("xdplb_backend_unanswered_total", "good"), Some(0.0));
    assert_eq!(
        metric("xdplb_backend_unanswered_total", "reset"),
        Some(0.0),
        "a RST is an answer"
    );
    assert_eq!(
        metric("xdplb_backend_handshake_seconds_count", "silent"),
        Some(0.0)
    );
    // Bytes each way for the good backend.
    let sent = metric("xdplb_backend_sent_bytes_total", "good").unwrap();
    let received = metric("xdplb_backend_received_bytes_total", "good").unwrap();
    assert!(sent > 0.0 && received > 0.0, "{sent} {received}");
    println!("SIGNALS: good sent {sent} B, received {received} B");
}
