//! The test bed itself, without any load balancer (needs root).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::SocketAddr,
    time::Duration,
};

use lb_testbed::{
    HttpServer, Topology, UdpEchoServer, http_get, http_request, is_pattern, netns, tcp_connect,
    udp_request,
};

const T: Duration = Duration::from_secs(5);

fn leftovers(prefix: &str) -> Vec<String> {
    let list = netns::ip(&["netns", "list"]).unwrap();
    list.lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

fn sa(ip: std::net::Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

#[test]
fn topology_connects_client_lb_and_backends() {
    let topo = Topology::create(2).unwrap();
    let prefix = topo.prefix().to_owned();
    assert_eq!(topo.namespaces().len(), 5);

    // Client -> lb ns kernel.
    let lb_srv = HttpServer::start(&topo.lb_ns(), sa(topo.lb_client_addr(), 8080), "lb").unwrap();
    assert_eq!(
        http_get(&topo.client_ns(), lb_srv.addr(), "/", T).unwrap(),
        (200, "lb\n".to_owned())
    );

    // lb ns kernel -> every backend, TCP and UDP.
    let mut servers = Vec::new();
    for i in 1..=topo.n_backends() {
        let (ns, addr) = (topo.backend_ns(i), topo.backend_addr(i));
        let name = format!("backend-{i}");
        let http = HttpServer::start(&ns, sa(addr, 8080), &name).unwrap();
        let udp = UdpEchoServer::start(&ns, sa(addr, 9000), &name).unwrap();
        let (status, body) = http_get(&topo.lb_ns(), sa(addr, 8080), "/", T).unwrap();
        assert_eq!((status, body), (200, format!("{name}\n")));
        let reply = udp_request(&topo.lb_ns(), sa(addr, 9000), b"hello", T).unwrap();
        assert_eq!(reply, format!("{name}:hello").into_bytes());
        assert_eq!((http.requests(), udp.requests()), (1, 1));
        servers.push((http, udp));
    }

    // Health toggle and the large body.
    let be1 = sa(topo.backend_addr(1), 8080);
    assert_eq!(http_get(&topo.lb_ns(), be1, "/healthz", T).unwrap().0, 200);
    servers[0].0.set_healthy(false);
    assert_eq!(http_get(&topo.lb_ns(), be1, "/healthz", T).unwrap().0, 503);
    let big = http_request(&topo.lb_ns(), be1, "/bytes/10000000", T).unwrap();
    assert_eq!(big.status, 200);
    assert_eq!(big.backend.as_deref(), Some("backend-1"));
    assert_eq!(big.body.len(), 10_000_000);
    assert!(is_pattern(&big.body));

    // Keep-alive: two requests on one connection, then Connection: close.
    let conn = tcp_connect(&topo.lb_ns(), be1, T).unwrap();
    conn.set_read_timeout(Some(T)).unwrap();
    let mut r = BufReader::new(conn.try_clone().unwrap());
    for close in [false, true] {
        let hdr = if close { "Connection: close\r\n" } else { "" };
        write!(&conn, "GET / HTTP/1.1\r\nHost: x\r\n{hdr}\r\n").unwrap();
        let mut head = String::new();
        while !head.ends_with("\r\n\r\n") {
            assert!(
                r.read_line(&mut head).unwrap() > 0,
                "closed early: {head:?}"
            );
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let mut body = [0u8; 10];
        r.read_exact(&mut body).unwrap();
        assert_eq!(&body, b"backend-1\n");
    }
    assert_eq!(
        r.read(&mut [0u8; 1]).unwrap(),
        0,
        "server must close after Connection: close"
    );

    // Forwarding on in the lb ns; GRO on where XDP redirects frames to.
    let fwd = netns::run_in(&topo.lb_ns(), || {
        Ok(std::fs::read_to_string(
            "/proc/sys/net/ipv4/conf/lbc/forwarding",
        )?)
    })
    .unwrap();
    assert_eq!(fwd.trim(), "1");
    let mut cmd = netns::command(&topo.client_ns(), "ethtool");
    let features = netns::run(cmd.args(["-k", "cli0"])).unwrap();
    assert!(
        features.contains("generic-receive-offload: on"),
        "{features}"
    );

    drop(servers);
    drop(lb_srv);
    drop(topo);
    assert_eq!(leftovers(&prefix), Vec::<String>::new());
}

#[test]
fn teardown_even_after_panic() {
    let mut prefix = String::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let topo = Topology::create(1).unwrap();
        prefix = topo.prefix().to_owned();
        let _srv =
            HttpServer::start(&topo.backend_ns(1), sa(topo.backend_addr(1), 8080), "b").unwrap();
        assert_eq!(leftovers(&prefix).len(), 4);
        panic!("test failure inside the topology");
    }));
    assert!(result.is_err());
    assert!(!prefix.is_empty());
    assert_eq!(leftovers(&prefix), Vec::<String>::new());
}

#[test]
fn errors_name_the_command() {
    let err = netns::ip(&["netns", "exec", "xdplb-no-such-ns", "true"]).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("ip netns exec xdplb-no-such-ns true"), "{msg}");
}
