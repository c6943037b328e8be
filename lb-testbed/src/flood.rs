//! A SYN flood against established connections, as an attacker would run
//! it: idle keep-alive connections through a nat VIP (four backends) (connection pools,
//! sessions), then SYNs from random spoofed sources, many times the flow
//! table's size, while new clients keep connecting; then every idle
//! connection is used again. Shared by the flood test (a short pass) and
//! the flood bench (docs/benchmarks.md).

use std::{
    io::{BufReader, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use etherparse::PacketBuilder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{
    HttpServer, Topology, backend_addr,
    clients::{read_response, tcp_connect_from},
    daemon::{Daemon, metric_sum},
    fixtures::{backend, service},
    netns::run_in,
    topology::{CLIENT_IF, LB_CLIENT_IF},
    wait_answering,
};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
/// Spoofed sources: 198.18.128.0/17 (inside the test range, routed nowhere).
const SPOOFED_NET: u32 = u32::from_be_bytes([198, 18, 128, 0]);
/// Local ports of the idle connections: 40000 and up.
const FIRST_PORT: u16 = 40000;
const TIMEOUT: Duration = Duration::from_secs(3);
/// Backends, and SNAT ports toward each: room for 91,072 nat flows, more
/// than the bench's flow table, so the table (not the ports) is what a
/// flood fills.
const BACKENDS: usize = 4;
const SNAT_PORTS: &str = "10000-32767";

/// What to run.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub flow_table_size: u32,
    /// Idle established connections (distinct client ports).
    pub connections: usize,
    /// SYNs sent, as a multiple of `flow_table_size`.
    pub flood_factor: u32,
}

/// What happened.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub plan: Plan,
    pub syns_sent: u64,
    pub flood_secs: f64,
    /// Idle connections that answered again after the flood.
    pub survived: usize,
    /// New connections (one request each) made during the flood.
    pub new_ok: usize,
    pub new_failed: usize,
    /// `xdplb_dataplane_events_total` after the flood, by event.
    pub events: Vec<(String, f64)>,
}

/// Runs `plan` in a fresh topology (two backends, the real daemon `bin`).
pub fn run(plan: Plan, bin: &Path) -> Result<Outcome> {
    ensure!(plan.connections <= 20000, "at most 20000 connections");
    let topo = Topology::create(BACKENDS)?;
    let servers: Vec<HttpServer> = (1..=BACKENDS)
        .map(|i| {
            let addr = SocketAddr::new(backend_addr(i).into(), 8080);
            HttpServer::start(&topo.backend_ns(i), addr, &format!("backend-{i}"))
        })
        .collect::<Result<_>>()?;
    let backends: Vec<String> = (1..=BACKENDS)
        .map(|i| backend(backend_addr(i), 8080))
        .collect();
    let yaml = topo.daemon_config(
        &format!(
            "snat: {{ ipv4: 198.18.1.1, ports: {SNAT_PORTS} }}\n\
             limits: {{ max_services: 4, max_backends: 8, maglev_table_size: 251, \
             flow_table_size: {} }}",
            plan.flow_table_size
        ),
        &[service("web", VIP, 80, &[], &backends)],
    );
    let daemon = topo.start_daemon(bin, &yaml)?;
    let vip = SocketAddr::new(VIP.into(), 80);
    let cli = topo.client_ns();
    if !wait_answering(&cli, vip, Duration::from_secs(20)) {
        bail!("no answer through the VIP:\n{}", daemon.log());
    }

    let mut idle = Vec::with_capacity(plan.connections);
    for i in 0..plan.connections {
        let port = FIRST_PORT + i as u16;
        let stream = tcp_connect_from(&cli, port, vip, TIMEOUT)?;
        request(&stream).with_context(|| format!("first request on connection {i}"))?;
        idle.push(stream);
    }

    // The flood, with new clients connecting meanwhile.
    let flooding = Arc::new(AtomicBool::new(true));
    let newcomers = {
        let (cli, flooding) = (cli.clone(), flooding.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, 0);
            let mut port = FIRST_PORT + 20000;
            while flooding.load(Ordering::Relaxed) {
                let fresh = tcp_connect_from(&cli, port, vip, TIMEOUT).and_then(|s| request(&s));
                if fresh.is_ok() {
                    ok += 1
                } else {
                    failed += 1
                }
                port = port.wrapping_add(1).max(FIRST_PORT + 20000);
                std::thread::sleep(Duration::from_millis(20));
            }
            (ok, failed)
        })
    };
    let started = Instant::now();
    let sent = flood(
        &topo,
        plan.flow_table_size as u64 * plan.flood_factor as u64,
    );
    let flood_secs = started.elapsed().as_secs_f64();
    flooding.store(false, Ordering::Relaxed);
    let (new_ok, new_failed) = newcomers.join().expect("the newcomers' thread");
    let sent = sent?;

    // Every idle connection at once: a broken one may wait out its timeout.
    let survived = std::thread::scope(|s| {
        let checks: Vec<_> = idle
            .iter()
            .map(|c| s.spawn(move || request(c).is_ok()))
            .collect();
        checks
            .into_iter()
            .filter_map(|c| c.join().ok())
            .filter(|ok| *ok)
            .count()
    });
    let metrics = daemon.metrics()?;
    let events = event_names(&metrics)
        .into_iter()
        .map(|e| {
            let v = metric_sum(&metrics, "xdplb_dataplane_events_total", &[("event", &e)]);
            (e, v)
        })
        .collect();
    drop(idle);
    drop(servers);
    shut_down(daemon);
    Ok(Outcome {
        plan,
        syns_sent: sent,
        flood_secs,
        survived,
        new_ok,
        new_failed,
        events,
    })
}

fn shut_down(daemon: Daemon) {
    let _ = daemon.stop();
}

fn event_names(metrics: &str) -> Vec<String> {
    crate::daemon::parse_metrics(metrics)
        .into_iter()
        .filter(|s| s.name == "xdplb_dataplane_events_total")
        .filter_map(|s| {
            s.labels
                .into_iter()
                .find(|(k, _)| k == "event")
                .map(|(_, v)| v)
        })
        .collect()
}

/// One keep-alive request on `stream`: a 200 back within the timeout.
fn request(stream: &TcpStream) -> Result<()> {
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let mut w = stream;
    w.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: keep-alive\r\n\r\n")?;
    let r = read_response(BufReader::new(stream))?;
    ensure!(r.status == 200, "status {}", r.status);
    Ok(())
}

/// Sends `count` SYNs to the VIP from random sources in 198.18.128.0/17
/// on the client's veth (an AF_PACKET socket: the frames start there, as
/// from a host behind it); returns how many were sent.
fn flood(topo: &Topology, count: u64) -> Result<u64> {
    let cli = topo.client_ns();
    let src_mac = mac(&cli, CLIENT_IF)?;
    let dst_mac = mac(&topo.lb_ns(), LB_CLIENT_IF)?;
    let sock = run_in(&cli, || packet_socket(CLIENT_IF))?;
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
    let mut frame = Vec::with_capacity(64);
    for _ in 0..count {
        let src = Ipv4Addr::from(SPOOFED_NET | rng.random_range(0..1 << 15));
        frame.clear();
        PacketBuilder::ethernet2(src_mac, dst_mac)
            .ipv4(src.octets(), VIP.octets(), 64)
            .tcp(rng.random_range(1024..=u16::MAX), 80, rng.random(), 64240)
            .syn()
            .write(&mut frame, &[])?;
        loop {
            // SAFETY: a plain send of an initialised buffer on our socket.
            let n = unsafe { libc::send(sock.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            if n >= 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            // The veth's queue is full: wait for it rather than lose SYNs.
            if e.raw_os_error() != Some(libc::ENOBUFS) {
                return Err(e).context("sending a SYN");
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    Ok(count)
}

/// An AF_PACKET socket bound to `dev` (in the calling thread's namespace),
/// for sending whole frames.
fn packet_socket(dev: &str) -> Result<OwnedFd> {
    let ifindex = nix::net::if_::if_nametoindex(dev).with_context(|| format!("no {dev}"))?;
    // SAFETY: plain syscalls; the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    ensure!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as i32;
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    ensure!(
        rc == 0,
        "bind to {dev}: {}",
        std::io::Error::last_os_error()
    );
    Ok(fd)
}

/// The MAC address of `dev` in namespace `ns`.
fn mac(ns: &str, dev: &str) -> Result<[u8; 6]> {
    run_in(ns, || {
        let addrs = nix::ifaddrs::getifaddrs()?;
        addrs
            .filter(|a| a.interface_name == dev)
            .find_map(|a| a.address?.as_link_addr()?.addr())
            .with_context(|| format!("no MAC address of {dev} in {ns}"))
    })
}
