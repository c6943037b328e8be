//! The lab trap of TX checksum offload: a client veth with `tx` on hands
//! XDP frames whose L4 checksum is partial; forwarded, the backend drops
//! them. The program counts them on new flows and the daemon warns once
//! per interface, naming the fix. The real daemon, a real client socket.
//! Needs root and the built XDP program.

use std::time::Duration;

use lb_testbed::{
    HttpServer, Topology, backend_addr,
    fixtures::{backend, service},
    http_get, metric_sum,
    netns::{self, find_program, run},
    topology::CLIENT_IF,
    wait_until, xdplb_bin,
};

#[test]
fn partial_checksums_are_counted_and_warned_about_once_per_interface() {
    let topo = Topology::create(1).expect("topology");
    let be = std::net::SocketAddr::new(backend_addr(1).into(), 8080);
    let _server = HttpServer::start(&topo.backend_ns(1), be, "backend-1").unwrap();
    let yaml = topo.daemon_config(
        "snat: { ipv4: 198.18.1.1, ports: 20000-29999 }",
        &[service(
            "web",
            "198.18.100.10",
            80,
            &[],
            &[backend(backend_addr(1), 8080)],
        )],
    );
    let daemon = topo
        .start_daemon(xdplb_bin!(), &yaml)
        .expect("daemon starts");
    let vip = "198.18.100.10:80".parse().unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || http_get(
            &topo.client_ns(),
            vip,
            "/",
            Duration::from_secs(2)
        )
        .is_ok()),
        "answers with full checksums:\n{}",
        daemon.log()
    );
    let warning = "frames with a partial L4 checksum arrive on lbc";
    assert!(!daemon.log().contains(warning));

    // The lab mistake: the client's veth with TX checksum offload on.
    let ethtool = find_program("ethtool").unwrap();
    run(
        netns::command(&topo.client_ns(), &ethtool.to_string_lossy())
            .args(["-K", CLIENT_IF, "tx", "on"]),
    )
    .unwrap();
    for _ in 0..3 {
        // These connections fail: the backend drops what it gets.
        let _ = http_get(&topo.client_ns(), vip, "/", Duration::from_millis(300));
    }
    assert!(
        wait_until(Duration::from_secs(10), || daemon.log().contains(warning)),
        "the daemon warns:\n{}",
        daemon.log()
    );
    let log = daemon.log();
    assert_eq!(
        log.matches(warning).count(),
        1,
        "once per interface:\n{log}"
    );
    assert!(log.contains("ethtool -K SENDER tx off"), "{log}");
    let counted = metric_sum(
        &daemon.metrics().unwrap(),
        "xdplb_dataplane_events_total",
        &[("event", "partial_checksum")],
    );
    assert!(counted >= 3.0, "{counted} counted");
}
