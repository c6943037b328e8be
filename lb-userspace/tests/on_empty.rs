//! Failing fast: a service whose backends are all in maint, at weight 0 or
//! down answers a TCP connect with a RST and a UDP datagram with ICMP port
//! unreachable (`on_empty: reject`, the default), so real clients fail at
//! once; `on_empty: drop` leaves them to their own timeout. IPv4 and IPv6,
//! the real daemon and real sockets. Needs root and the built XDP program.

use std::{
    io::ErrorKind,
    net::SocketAddr,
    time::{Duration, Instant},
};

use lb_testbed::{
    Topology, backend_addr, backend_addr6,
    fixtures::{backend, service},
    metric_sum, tcp_connect, udp_request, wait_until, xdplb_bin,
};

/// Far longer than a RST or an ICMP error takes to come back.
const FAST: Duration = Duration::from_secs(1);

fn config(topo: &Topology) -> String {
    let b4 = |keys: &str| format!("{{ address: \"{}\", port: 8080{keys} }}", backend_addr(1));
    let b6 = |keys: &str| format!("{{ address: \"{}\", port: 8080{keys} }}", backend_addr6(1));
    // Nothing listens on port 9: the health check takes the backend down.
    let check =
        "health_check: { type: tcp, port: 9, interval: 100ms, timeout: 100ms, rise: 1, fall: 1 }";
    topo.daemon_config(
        "snat: { ipv4: 198.18.1.1, ipv6: \"2001:db8:1::1\", ports: 20000-29999 }",
        &[
            service("maint4", "198.18.100.10", 80, &[], &[b4(", state: maint")]),
            service(
                "weight0_6",
                "2001:db8:100::10",
                80,
                &[],
                &[b6(", weight: 0")],
            ),
            service(
                "down4",
                "198.18.100.11",
                53,
                &["protocol: udp", check],
                &[backend(backend_addr(1), 5353)],
            ),
            service(
                "maint6",
                "2001:db8:100::11",
                53,
                &["protocol: udp"],
                &[b6(", state: maint")],
            ),
            service(
                "quiet",
                "198.18.100.12",
                80,
                &["on_empty: drop"],
                &[b4(", state: maint")],
            ),
        ],
    )
}

/// How a TCP connect from the client ends, and how long it took.
fn connect(topo: &Topology, vip: &str, timeout: Duration) -> (ErrorKind, Duration) {
    let start = Instant::now();
    let addr: SocketAddr = vip.parse().unwrap();
    let err = tcp_connect(&topo.client_ns(), addr, timeout).expect_err("nothing serves it");
    let kind = err
        .downcast_ref::<std::io::Error>()
        .map_or(ErrorKind::Other, |e| e.kind());
    (kind, start.elapsed())
}

/// How a UDP request from the client ends.
fn request(topo: &Topology, vip: &str) -> ErrorKind {
    let err = udp_request(&topo.client_ns(), vip.parse().unwrap(), b"query", FAST)
        .expect_err("nothing serves it");
    err.downcast_ref::<std::io::Error>()
        .map_or(ErrorKind::Other, |e| e.kind())
}

#[test]
fn clients_of_a_service_with_no_usable_backend_fail_at_once() {
    let topo = Topology::create(1).expect("topology");
    let daemon = topo
        .start_daemon(xdplb_bin!(), &config(&topo))
        .expect("daemon starts");

    for vip in ["198.18.100.10:80", "[2001:db8:100::10]:80"] {
        let (kind, took) = connect(&topo, vip, Duration::from_secs(5));
        assert_eq!(
            kind,
            ErrorKind::ConnectionRefused,
            "{vip}: {}",
            daemon.log()
        );
        assert!(took < FAST, "{vip}: refused after {took:?}");
    }
    assert_eq!(
        request(&topo, "[2001:db8:100::11]:53"),
        ErrorKind::ConnectionRefused
    );
    // Down by health check (fall 1): refused once the check has run.
    assert!(
        wait_until(Duration::from_secs(10), || request(
            &topo,
            "198.18.100.11:53"
        )
            == ErrorKind::ConnectionRefused),
        "UDP to a service whose backend is down is refused:\n{}",
        daemon.log()
    );

    // on_empty: drop: the client waits for its own timeout.
    let (kind, took) = connect(&topo, "198.18.100.12:80", Duration::from_millis(500));
    assert_eq!(kind, ErrorKind::TimedOut);
    assert!(took >= Duration::from_millis(500));

    let metrics = daemon.metrics().unwrap();
    let rejected = metric_sum(
        &metrics,
        "xdplb_dataplane_events_total",
        &[("event", "reject")],
    );
    assert!(rejected >= 4.0, "{rejected} rejections counted");
}
