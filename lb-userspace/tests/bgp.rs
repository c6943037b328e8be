//! VIP announcement over BGP (docs/ha.md): the real daemon with its BIRD in
//! the LB namespace, a peer BIRD in the client namespace standing for the
//! router (it installs what it learns into the client's routing table, so
//! the client reaches the VIP only through the announced route), real
//! servers and clients. Needs root, BIRD 2 and the built XDP program.
//!
//! Every expected event is awaited with a generous deadline (slow guests);
//! the measured times are printed, not asserted.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::Output,
    time::{Duration, Instant},
};

use lb_testbed::backend_http as backend;
use lb_testbed::{
    ADMIN, HttpServer, Stream, Topology, backend_addr,
    bird::{PeerBird, router_conf},
    fixtures::{backend as backend_yaml, service},
    metric_sum, netns, wait_answering, wait_until, xdplb_bin,
};
use xdplb::{api_types::NodeState, client::Client};

const VIP: &str = "198.18.100.10";
/// Longest wait for anything expected (it only bounds a failing test).
const WAIT: Duration = Duration::from_secs(30);

fn vip() -> SocketAddr {
    format!("{VIP}:80").parse().unwrap()
}

/// The daemon's run dir, removed even when the test fails.
struct RunDir(PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The router's view: its kernel route to the VIP learnt over BGP.
fn bgp_route(topo: &Topology) -> Option<String> {
    let out = netns::ip(&[
        "-n",
        &topo.client_ns(),
        "route",
        "show",
        &format!("{VIP}/32"),
    ])
    .ok()?;
    out.lines()
        .find(|l| l.contains("proto bird"))
        .map(str::to_owned)
}

/// Waits until the route is there (`present`) or gone; how long it took.
#[track_caller]
fn wait_route(topo: &Topology, present: bool, what: &str) -> Duration {
    let start = Instant::now();
    assert!(
        wait_until(WAIT, || bgp_route(topo).is_some() == present),
        "{what}: the route to {VIP} is {}",
        if present { "missing" } else { "still there" }
    );
    start.elapsed()
}

fn cli(topo: &Topology, args: &[&str]) -> Output {
    netns::command(&topo.lb_ns(), env!("CARGO_BIN_EXE_xdplb"))
        .args(args)
        .args(["--admin", ADMIN])
        .output()
        .unwrap()
}

#[test]
fn vips_are_announced_while_usable_and_withdrawn_on_failure_drain_and_stop() {
    let topo = Topology::create(1).expect("topology");
    // The client reaches the VIPs only through what BGP announces.
    netns::ip(&["-n", &topo.client_ns(), "route", "del", "198.18.100.0/24"]).unwrap();
    let router = PeerBird::start(
        &topo.client_ns(),
        &router_conf("198.18.0.2", 65000, "198.18.0.1", 65001),
    )
    .expect("router bird");
    let run_dir = RunDir(std::env::temp_dir().join(format!("{}run", topo.prefix())));
    let health = "health_check: { type: tcp, interval: 200ms, timeout: 200ms, rise: 2, fall: 2 }";
    let yaml = topo.daemon_config(
        &format!(
            "snat: {{ ipv4: 198.18.1.1 }}\n\
             limits: {{ max_services: 4, max_backends: 4, maglev_table_size: 251, flow_table_size: 4096 }}\n\
             run_dir: {}\n\
             bgp:\n  local_as: 65001\n  peers: [ {{ address: 198.18.0.2, as: 65000 }} ]\n  hold_time: 3s\n",
            run_dir.0.display()
        ),
        &[service(
            "web",
            VIP,
            80,
            &[health],
            &[backend_yaml(backend_addr(1), 8080)],
        )],
    );
    let mut server = Some(HttpServer::start(&topo.backend_ns(1), backend(1), "backend-1").unwrap());
    let start = Instant::now();
    let daemon = topo
        .start_daemon(xdplb_bin!(), &yaml)
        .expect("daemon starts");

    // Announced after start; traffic flows through the announced route.
    wait_route(&topo, true, "after start");
    println!(
        "announced {:?} after the daemon started: {}",
        start.elapsed(),
        bgp_route(&topo).unwrap()
    );
    assert!(bgp_route(&topo).unwrap().contains("via 198.18.0.1"));
    assert!(
        wait_answering(&topo.client_ns(), vip(), WAIT),
        "no answer through the VIP:\n{}",
        daemon.log()
    );

    // Status, API and metrics: the peer established, the VIP announced.
    let status = netns::run_in(&topo.lb_ns(), || Ok(Client::new(ADMIN, None).node_status()))
        .unwrap()
        .unwrap();
    assert_eq!(status.node, NodeState::Ready);
    let bgp = status.bgp.expect("bgp status");
    assert_eq!(
        bgp.router_id,
        Some("198.18.0.1".parse().unwrap()),
        "the first IPv4 of lbc"
    );
    assert_eq!(bgp.announced, [VIP.parse::<std::net::IpAddr>().unwrap()]);
    assert!(
        wait_until(WAIT, || {
            let s = netns::run_in(&topo.lb_ns(), || Ok(Client::new(ADMIN, None).node_status()))
                .unwrap()
                .unwrap();
            s.bgp.unwrap().peers[0].up
        }),
        "the session is established"
    );
    let out = cli(&topo, &["status", "--interval", "0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.starts_with(&format!("node: ready, announcing {VIP}\n")),
        "{text}"
    );
    assert!(text.contains("198.18.0.2  65000  Established"), "{text}");
    assert!(text.contains("web: 198.18.100.10:80 tcp"), "{text}");
    let metrics = daemon.metrics().unwrap();
    assert_eq!(
        metric_sum(&metrics, "xdplb_bgp_session_up", &[("peer", "198.18.0.2")]),
        1.0
    );
    assert_eq!(
        metric_sum(&metrics, "xdplb_vip_announced", &[("vip", VIP)]),
        1.0
    );
    assert_eq!(metric_sum(&metrics, "xdplb_node_drained", &[]), 0.0);

    // The VIP's last backend fails its checks: withdrawn.
    let killed = Instant::now();
    drop(server.take());
    wait_route(&topo, false, "after the last backend failed");
    let withdraw = killed.elapsed();
    println!(
        "BGP_WITHDRAW: the route left the router {} ms after the last backend's server was killed \
         (checks every 200 ms, fall 2)",
        withdraw.as_millis()
    );
    let metrics = daemon.metrics().unwrap();
    assert_eq!(
        metric_sum(&metrics, "xdplb_vip_announced", &[("vip", VIP)]),
        0.0
    );

    // It comes back: announced again.
    let back = Instant::now();
    server = Some(HttpServer::start(&topo.backend_ns(1), backend(1), "backend-1").unwrap());
    wait_route(&topo, true, "after the backend came back");
    println!(
        "announced again {} ms after the server came back",
        back.elapsed().as_millis()
    );
    assert!(wait_answering(&topo.client_ns(), vip(), WAIT));

    // Drain: withdrawn while the node keeps forwarding what still reaches it
    // (a fallback route stands for traffic already on its way).
    netns::ip(&[
        "-n",
        &topo.client_ns(),
        "route",
        "add",
        "198.18.100.0/24",
        "via",
        "198.18.0.1",
        "metric",
        "1000",
    ])
    .unwrap();
    let stream = Stream::start(&topo.client_ns(), vip(), 1000).expect("stream");
    assert_eq!(stream.backend().unwrap(), "backend-1");
    let out = cli(&topo, &["node", "drain"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("node: drain"),
        "{out:?}"
    );
    wait_route(&topo, false, "after node drain");
    let drained_at = stream.elapsed();
    assert!(
        wait_until(WAIT, || cli(&topo, &["status", "--interval", "0"])
            .stdout
            .starts_with(b"node: drain, announcing nothing\n")),
        "status shows the drain"
    );
    assert_eq!(
        metric_sum(&daemon.metrics().unwrap(), "xdplb_node_drained", &[]),
        1.0
    );
    std::thread::sleep(Duration::from_millis(500));
    let outcomes = stream.stop();
    let failures: Vec<_> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    assert!(
        failures.is_empty(),
        "the existing stream broke: {failures:?}"
    );
    let after = outcomes.iter().filter(|o| o.start > drained_at).count();
    assert!(after > 0, "served after the withdrawal: {after} requests");
    netns::ip(&[
        "-n",
        &topo.client_ns(),
        "route",
        "del",
        "198.18.100.0/24",
        "metric",
        "1000",
    ])
    .unwrap();

    // Ready: announced again.
    let out = cli(&topo, &["node", "ready"]);
    assert!(out.status.success(), "{out:?}");
    wait_route(&topo, true, "after node ready");
    assert!(wait_answering(&topo.client_ns(), vip(), WAIT));

    // SIGTERM: withdrawn before the daemon exits.
    let pid = nix::unistd::Pid::from_raw(daemon_pid(&daemon));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut gone_while_running = false;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let running = nix::sys::signal::kill(pid, None).is_ok() && !is_zombie(pid.as_raw());
        if bgp_route(&topo).is_none() {
            gone_while_running = running;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, log) = daemon.stop().unwrap();
    assert!(status.success(), "{status}\n{log}");
    assert!(
        gone_while_running,
        "the route was withdrawn before the daemon exited:\n{log}"
    );
    let withdrew = log
        .find("bgp: withdrew every VIP")
        .expect("withdrawal logged");
    let detached = log.find("detached, exiting").expect("detach logged");
    assert!(withdrew < detached, "withdraw first, then detach:\n{log}");
    drop(router);
    drop(server);
}

fn daemon_pid(daemon: &lb_testbed::Daemon) -> i32 {
    daemon.pid() as i32
}

/// An exited child not reaped yet still answers kill(pid, 0).
fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}
