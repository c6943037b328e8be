//! Integration: every mode and family with the real daemon, real servers
//! and clients in the reference topology (IPv4 198.18.0.0/15 and IPv6
//! 2001:db8::/32): nat and dsr over IPv4 and IPv6, source-ip affinity and
//! all-ports VIPs. Needs root and the built XDP program.

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use lb_testbed::{
    Daemon, HttpServer, Topology, UdpEchoServer, backend_addr, backend_addr6,
    fixtures::{backend, service},
    http_get, http_request, is_pattern, metric_sum, netns,
    topology::CLIENT_ADDR6,
    udp_request, vip_backend, wait_answering, xdplb_bin,
};

const TIMEOUT: Duration = Duration::from_secs(3);
const N: usize = 3;

/// Backends 1..=N on `port`, by their IPv6 or IPv4 address.
fn backends(v6: bool, port: u16) -> Vec<String> {
    (1..=N)
        .map(|i| {
            let addr: IpAddr = if v6 {
                backend_addr6(i).into()
            } else {
                backend_addr(i).into()
            };
            backend(addr, port)
        })
        .collect()
}

/// Every service of this file; backends 1..=N.
fn config(topo: &Topology) -> String {
    let services = [
        service("web6", "2001:db8:100::10", 80, &[], &backends(true, 8080)),
        service(
            "dns6",
            "2001:db8:100::11",
            53,
            &["protocol: udp"],
            &backends(true, 5353),
        ),
        service(
            "dsr4",
            "198.18.100.20",
            80,
            &["mode: dsr"],
            &backends(false, 80),
        ),
        service(
            "dsr6",
            "2001:db8:100::20",
            80,
            &["mode: dsr"],
            &backends(true, 80),
        ),
        service(
            "dsr4u",
            "198.18.100.21",
            53,
            &["mode: dsr", "protocol: udp"],
            &backends(false, 53),
        ),
        service("any", "198.18.100.30", 0, &[], &backends(false, 0)),
        service(
            "sticky",
            "198.18.100.31",
            80,
            &["hash: source-ip"],
            &backends(false, 8080),
        ),
        service(
            "tun4",
            "198.18.100.40",
            80,
            &["mode: tunnel"],
            &backends(false, 80),
        ),
        service(
            "tun6",
            "2001:db8:100::40",
            80,
            &["mode: tunnel"],
            &backends(true, 80),
        ),
        service(
            "tun46",
            "198.18.100.41",
            80,
            &["mode: tunnel"],
            &backends(true, 80),
        ),
        service(
            "gue4",
            "198.18.100.42",
            80,
            &["mode: tunnel", "encap: gue"],
            &backends(false, 80),
        ),
        service(
            "gue6",
            "2001:db8:100::42",
            80,
            &["mode: tunnel", "encap: gue"],
            &backends(true, 80),
        ),
    ];
    // IPv4 tunnels leave from a prefix on no interface (per flow), IPv6
    // ones from snat.ipv6: backends' decapsulators take both.
    topo.daemon_config(
        "snat: { ipv4: 198.18.1.1, ipv6: \"2001:db8:1::1\", ports: 20000-29999 }\n\
         tunnel_source: { ipv4: 198.18.2.0/24 }\n\
         limits: { max_services: 16, max_backends: 64, maglev_table_size: 65537, flow_table_size: 65536 }",
        &services,
    )
}

/// VIPs the backends hold on lo (dsr and tunnel modes) and serve HTTP on,
/// then the dsr UDP VIP.
const HELD_VIPS: [&str; 7] = [
    "198.18.100.20",
    "2001:db8:100::20",
    "198.18.100.40",
    "2001:db8:100::40",
    "198.18.100.41",
    "198.18.100.42",
    "2001:db8:100::42",
];
const DSR_UDP_VIP: &str = "198.18.100.21";

struct Bed {
    topo: Topology,
    _servers: Vec<HttpServer>,
    _udp: Vec<UdpEchoServer>,
    daemon: Daemon,
}

fn bed() -> Bed {
    let topo = Topology::create(N).expect("topology");
    let mut servers = Vec::new();
    let mut udp = Vec::new();
    let held: Vec<IpAddr> = HELD_VIPS.iter().map(|v| v.parse().unwrap()).collect();
    let dsr_udp: IpAddr = DSR_UDP_VIP.parse().unwrap();
    for i in 1..=N {
        let ns = topo.backend_ns(i);
        let name = format!("backend-{i}");
        // dsr and tunnel backends hold the VIPs and answer on them; tunnel
        // backends decapsulate with xdplb's program.
        let mut vips = held.clone();
        vips.push(dsr_udp);
        vip_backend::setup(&ns, &vips, true).unwrap();
        let mut http_on = vec![
            SocketAddr::new(backend_addr6(i).into(), 8080),
            SocketAddr::new(backend_addr(i).into(), 8080),
            SocketAddr::new(backend_addr(i).into(), 9090),
        ];
        http_on.extend(held.iter().map(|v| SocketAddr::new(*v, 80)));
        for addr in http_on {
            servers.push(HttpServer::start(&ns, addr, &name).unwrap());
        }
        udp.push(
            UdpEchoServer::start(&ns, SocketAddr::new(backend_addr6(i).into(), 5353), &name)
                .unwrap(),
        );
        udp.push(UdpEchoServer::start(&ns, SocketAddr::new(dsr_udp, 53), &name).unwrap());
    }
    let daemon = topo
        .start_daemon(xdplb_bin!(), &config(&topo))
        .expect("daemon starts");
    Bed {
        topo,
        _servers: servers,
        _udp: udp,
        daemon,
    }
}

impl Drop for Bed {
    /// The decapsulators' links are pinned on the host: unpin them.
    fn drop(&mut self) {
        for i in 1..=N {
            vip_backend::detach_decap(&self.topo.backend_ns(i));
        }
    }
}

impl Bed {
    /// `count` new connections to `vip`; the backends that answered.
    fn spread(&self, vip: &str, count: usize) -> Vec<String> {
        let vip: SocketAddr = vip.parse().unwrap();
        // The first connection may wait for neighbour resolution.
        assert!(
            wait_answering(&self.topo.client_ns(), vip, Duration::from_secs(20)),
            "no answer from {vip}:\n{}",
            self.daemon.log()
        );
        (0..count)
            .map(|i| {
                let (status, body) = http_get(&self.topo.client_ns(), vip, "/", TIMEOUT)
                    .unwrap_or_else(|e| panic!("{vip} request {i}: {e:#}"));
                assert_eq!(status, 200);
                body.trim().to_owned()
            })
            .collect()
    }
}

fn distinct(names: &[String]) -> HashSet<&str> {
    names.iter().map(String::as_str).collect()
}

#[test]
fn every_mode_and_family_serves_from_every_backend() {
    let bed = bed();
    for vip in [
        "[2001:db8:100::10]:80",
        "198.18.100.20:80",
        "[2001:db8:100::20]:80",
        "198.18.100.40:80",
        "[2001:db8:100::40]:80",
        "198.18.100.41:80",
        "198.18.100.42:80",
        "[2001:db8:100::42]:80",
    ] {
        let served = bed.spread(vip, 60);
        assert_eq!(distinct(&served).len(), N, "{vip}: {:?}", distinct(&served));
    }
    // A large transfer over IPv6 nat, IPv4 dsr and GUE, intact.
    for vip in [
        "[2001:db8:100::10]:80",
        "198.18.100.20:80",
        "198.18.100.42:80",
    ] {
        let r = http_request(
            &bed.topo.client_ns(),
            vip.parse().unwrap(),
            "/bytes/4194304",
            TIMEOUT,
        )
        .unwrap();
        assert_eq!(r.body.len(), 4 << 20, "{vip}");
        assert!(is_pattern(&r.body), "{vip}: data intact");
    }
    // UDP over IPv6 nat and IPv4 dsr.
    for vip in ["[2001:db8:100::11]:53", "198.18.100.21:53"] {
        let vip: SocketAddr = vip.parse().unwrap();
        let answered = (0..20)
            .filter_map(|i| {
                udp_request(
                    &bed.topo.client_ns(),
                    vip,
                    format!("q{i}").as_bytes(),
                    Duration::from_secs(1),
                )
                .ok()
            })
            .collect::<Vec<_>>();
        assert!(
            answered.len() >= 18,
            "{vip}: {} of 20 answered",
            answered.len()
        );
        assert!(answered.iter().all(|a| a.starts_with(b"backend-")));
    }
}

#[test]
fn dsr_replies_do_not_come_back_through_the_balancer() {
    let bed = bed();
    let before = bed.daemon.metrics().unwrap();
    bed.spread("198.18.100.20:80", 20);
    let after = bed.daemon.metrics().unwrap();
    let count = |m: &str| metric_sum(m, "xdplb_service_packets_total", &[("service", "dsr4")]);
    let nat_like = |m: &str| metric_sum(m, "xdplb_service_packets_total", &[("service", "web6")]);
    // Only the client's packets cross the program for dsr (each connection:
    // SYN, ACK, request, FIN, ACK and such); the backends answer the client
    // without being translated back.
    let packets = count(&after) - count(&before);
    assert!(packets >= 60.0, "{packets}");
    assert_eq!(nat_like(&after), nat_like(&before));
    let flows = metric_sum(&after, "xdplb_backend_flows_total", &[("service", "dsr4")]);
    assert!(flows >= 21.0, "{flows}");
}

#[test]
fn all_ports_vips_and_source_ip_affinity() {
    let bed = bed();
    // Any port of the all-ports VIP reaches the same port on a backend.
    for port in [8080u16, 9090] {
        let served = bed.spread(&format!("198.18.100.30:{port}"), 30);
        assert_eq!(
            distinct(&served).len(),
            N,
            "port {port}: {:?}",
            distinct(&served)
        );
    }
    // source-ip: every connection of the one client on one backend.
    let served = bed.spread("198.18.100.31:80", 40);
    assert_eq!(distinct(&served).len(), 1, "{:?}", distinct(&served));
}

#[test]
fn explain_predicts_the_backend_the_program_picks() {
    let bed = bed();
    let vip: SocketAddr = "[2001:db8:100::11]:53".parse().unwrap();
    let explain = |src: SocketAddr| {
        netns::run_in(&bed.topo.lb_ns(), || {
            Ok(xdplb::client::Client::new("127.0.0.1:9100", None).explain(
                src,
                vip,
                xdplb::config::Protocol::Udp,
            ))
        })
        .unwrap()
        .unwrap()
    };
    for port in [45001u16, 45002, 45003, 45004, 45005] {
        let src = SocketAddr::new(CLIENT_ADDR6.into(), port);
        let before = explain(src);
        assert!(!before.existing_flow, "{before:?}");
        let predicted = before.backend.expect("a backend");
        // The same flow for real, from that source port.
        let sock = netns::run_in(&bed.topo.client_ns(), || {
            Ok(std::net::UdpSocket::bind(src)?)
        })
        .unwrap();
        sock.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut reply = Vec::new();
        for _ in 0..5 {
            sock.send_to(b"which", vip).unwrap();
            let mut buf = [0u8; 512];
            if let Ok(n) = sock.recv(&mut buf) {
                reply = buf[..n].to_vec();
                break;
            }
        }
        let name = String::from_utf8_lossy(&reply).into_owned();
        let i: usize = name
            .trim_start_matches("backend-")
            .split(':')
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("reply {name:?}"));
        assert_eq!(
            SocketAddr::new(backend_addr6(i).into(), 5353),
            predicted,
            "explain's prediction for {src}: {}",
            before.reason
        );
        let after = explain(src);
        assert!(after.existing_flow, "{after:?}");
        assert_eq!(after.backend, Some(predicted));
    }
    let stray = explain("[2001:db8::2]:1".parse().unwrap());
    assert!(stray.service.is_some());
    let not_vip = netns::run_in(&bed.topo.lb_ns(), || {
        Ok(xdplb::client::Client::new("127.0.0.1:9100", None).explain(
            "198.18.0.2:1".parse().unwrap(),
            "198.18.0.1:22".parse().unwrap(),
            xdplb::config::Protocol::Tcp,
        ))
    })
    .unwrap()
    .unwrap();
    assert!(not_vip.service.is_none() && not_vip.reason.contains("not a VIP"));
}
