//! `demo --nodes N`: the multi-node bed (docs/ha.md, lb-testbed's
//! multinode): a router running BIRD with ECMP, N LB nodes each running
//! the daemon with its own BIRD, three backends behind a dsr service.
//! Many short HTTP connections from the client spread over the nodes by
//! the router's 5-tuple hash; every second a line gives each node's
//! packets per second (its `xdplb_service_packets_total`) and the router's
//! next hops for the VIP. At a third of the run node 1 stops politely
//! (SIGTERM: it withdraws the VIP over BGP, then detaches) and the others
//! take its traffic.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    sync::OnceLock,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use lb_testbed::{
    ADMIN, Daemon, HttpServer, Load, Outcome, Outcomes, backend_addr,
    fixtures::{backend, service},
    http_get, metric_sum,
    multinode::{MultiNode, node_addr},
    vip_backend, wait_until,
};

const BACKENDS: usize = 3;
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
/// Clients making short connections one after another: each a new source
/// port, so a new 5-tuple for the router's ECMP hash.
const CLIENTS: usize = 12;
const PAUSE: Duration = Duration::from_millis(10);

/// Runs the demo; `interrupted` is set on Ctrl-C.
pub fn run(
    xdplb: &Path,
    nodes: usize,
    seconds: u64,
    interrupted: &OnceLock<Instant>,
) -> Result<()> {
    let stopping = || interrupted.get().is_some();
    let mut bed = Bed::start(xdplb, nodes)?;
    println!("waiting for the router to learn {VIP} from every node over BGP...");
    let learnt = wait_until(Duration::from_secs(30), || {
        stopping() || bed.net.next_hops(VIP.into()).len() == nodes
    });
    if stopping() {
        return Ok(());
    }
    if !learnt {
        bail!(
            "the router has next hops {:?} for {VIP}, not {nodes}:\n{}",
            bed.net.next_hops(VIP.into()),
            bed.net.router().birdc(&["show", "protocols"])?
        );
    }

    let vip = SocketAddr::new(VIP.into(), 80);
    let loads: Vec<Load> = (0..CLIENTS)
        .map(|_| Load::start(&bed.net.client_ns(), vip, PAUSE))
        .collect();
    let stop_second = (seconds / 3).max(1);
    println!(
        "\n{CLIENTS} clients making short HTTP connections to {vip} (dsr) for {seconds}s; \
         node 1 stops at {stop_second}s.\npackets per second per node (its \
         xdplb_service_packets_total), requests per second, the router's next hops for {VIP}:\n"
    );
    let mut table = Table::start(&bed.net);
    let mut stopped: Option<Stopped> = None;
    let start = Instant::now();
    for second in 1..=seconds {
        // Wait for the tick in small steps: node 1's stop is reported as
        // it happens, between the lines.
        let tick = start + Duration::from_secs(second);
        while Instant::now() < tick && !stopping() {
            thread::sleep(Duration::from_millis(100).min(tick - Instant::now()));
            if let Some(s) = &mut stopped {
                s.report(&bed.net);
            }
        }
        if stopping() {
            break;
        }
        table.row(second, &bed.net, &loads);
        if second == stop_second {
            let node1 = bed.daemons.remove(0);
            stopped = Some(Stopped::start(node1, &loads, table.last.clone()));
        }
    }

    let outcomes = stop_clients(loads, interrupted);
    summary(&table.last, stopped.as_ref(), &outcomes);
    if let Some(mut s) = stopped {
        s.finish();
    }
    println!("tearing down (the nodes withdraw and detach, then the namespaces go)...");
    drop(bed);
    println!("done.");
    Ok(())
}

/// The multi-node bed with the dsr service on every node.
struct Bed {
    daemons: Vec<Daemon>,
    _servers: Vec<HttpServer>,
    // Last: the namespaces go after the daemons and servers.
    net: MultiNode,
}

impl Bed {
    fn start(xdplb: &Path, nodes: usize) -> Result<Bed> {
        println!(
            "creating the multi-node bed: client, router (BIRD, ECMP), {nodes} LB nodes, \
             {BACKENDS} backends..."
        );
        let net = MultiNode::create(nodes, BACKENDS)?;
        let vip = SocketAddr::new(VIP.into(), 80);
        let mut servers = Vec::new();
        for i in 1..=BACKENDS {
            let ns = net.backend_ns(i);
            // dsr backends hold the VIP themselves.
            vip_backend::setup(&ns, &[vip.ip()], false)?;
            servers.push(HttpServer::start(&ns, vip, &format!("backend-{i}"))?);
        }
        let backends: Vec<String> = (1..=BACKENDS)
            .map(|i| backend(backend_addr(i), 80))
            .collect();
        let services = [service("web", VIP, 80, &["mode: dsr"], &backends)];
        let mut daemons = Vec::new();
        for k in 1..=nodes {
            println!(
                "starting xdplb and its BIRD in node {k} ({})...",
                net.node_ns(k)
            );
            // Same services and hash_seed everywhere: every node picks the
            // same backend for a flow.
            let yaml = net.node_config(
                k,
                "hash_seed: 0x5eed\n\
                 limits: { max_services: 4, max_backends: 8, maglev_table_size: 65537, flow_table_size: 65536 }",
                &services,
            );
            daemons.push(net.start_daemon(k, xdplb, &yaml)?);
        }
        Ok(Bed {
            daemons,
            _servers: servers,
            net,
        })
    }
}

/// The per-second lines: each node's packets per second from the
/// difference of its counter, the requests, the router's next hops.
struct Table {
    prev: Vec<Option<f64>>,
    /// The last value read from each node (a stopped node keeps its last).
    last: Vec<f64>,
    prev_req: (usize, usize),
    prev_t: Instant,
}

impl Table {
    fn start(net: &MultiNode) -> Table {
        let header: String = (1..=net.nodes()).map(|k| format!("  node {k}")).collect();
        println!("  time |{header} | req ok/failed | next hops");
        let prev: Vec<Option<f64>> = (1..=net.nodes()).map(|k| service_packets(net, k)).collect();
        Table {
            last: prev.iter().map(|p| p.unwrap_or(0.0)).collect(),
            prev,
            prev_req: (0, 0),
            prev_t: Instant::now(),
        }
    }

    fn row(&mut self, second: u64, net: &MultiNode, loads: &[Load]) {
        let now: Vec<Option<f64>> = (1..=net.nodes()).map(|k| service_packets(net, k)).collect();
        let dt = self.prev_t.elapsed().as_secs_f64();
        self.prev_t = Instant::now();
        let cells: String = now
            .iter()
            .zip(&self.prev)
            .map(|(n, p)| match (n, p) {
                (Some(n), Some(p)) => format!(" {:>7.0}", (n - p).max(0.0) / dt),
                (Some(_), None) => format!(" {:>7}", "-"),
                (None, _) => format!(" {:>7}", "stopped"),
            })
            .collect();
        for (l, n) in self.last.iter_mut().zip(&now) {
            *l = n.unwrap_or(*l);
        }
        let req = loads
            .iter()
            .map(|l| tally(&l.outcomes()))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        let hops: Vec<String> = net
            .next_hops(VIP.into())
            .iter()
            .map(IpAddr::to_string)
            .collect();
        println!(
            "[{second:>3}s] |{cells} | {:>6} {:>6} | {}",
            req.0 - self.prev_req.0,
            req.1 - self.prev_req.1,
            hops.join(" ")
        );
        self.prev = now;
        self.prev_req = req;
    }
}

/// Stops every client at once (each finishes its request in flight) and
/// returns their outcomes. After a Ctrl-C, which reached the daemons too
/// (they withdraw and stop), requests still running then fail because of
/// the teardown: they are not counted.
fn stop_clients(loads: Vec<Load>, interrupted: &OnceLock<Instant>) -> Vec<Vec<Outcome>> {
    if interrupted.get().is_some() {
        println!("\ninterrupted: tearing down (requests running at the Ctrl-C are not counted)");
    }
    // The Ctrl-C on each client's clock, read before any stops.
    let cuts: Vec<Duration> = loads
        .iter()
        .map(|l| match interrupted.get() {
            Some(at) => l.elapsed().saturating_sub(at.elapsed()),
            None => Duration::MAX,
        })
        .collect();
    thread::scope(|s| {
        let stopping: Vec<_> = loads.into_iter().map(|l| s.spawn(|| l.stop())).collect();
        stopping
            .into_iter()
            .zip(cuts)
            .map(|(h, cut)| {
                let mut o = h.join().expect("client thread");
                o.retain(|o| o.end < cut);
                o
            })
            .collect()
    })
}

/// Each node's packets before and after the stop; requests ok and failed.
fn summary(last: &[f64], stopped: Option<&Stopped>, outcomes: &[Vec<Outcome>]) {
    println!("\nsummary (service packets per node):");
    for (k, total) in (1..).zip(last) {
        match stopped {
            None => println!("  node {k}: {total:>8.0}"),
            Some(s) if k == 1 => println!(
                "  node 1: {:>8.0} before the stop, then stopped (its counters went with it)",
                s.packets[0]
            ),
            Some(s) => println!(
                "  node {k}: {:>8.0} before the stop, {:>8.0} after",
                s.packets[k - 1],
                total - s.packets[k - 1]
            ),
        }
    }
    // Each client's requests that started before `until` on its clock.
    let before = |until: &dyn Fn(usize) -> Duration| {
        let mut v: Vec<&Outcome> = Vec::new();
        for (c, o) in outcomes.iter().enumerate() {
            v.extend(o.iter().filter(|o| o.start < until(c)));
        }
        v
    };
    let all = tally(&before(&|_| Duration::MAX));
    match stopped {
        None => println!("requests: {} ok, {} failed", all.0, all.1),
        Some(s) => {
            let b = tally(&before(&|c| s.clocks[c]));
            println!(
                "requests: {} ok, {} failed before node 1 stopped; {} ok, {} failed after",
                b.0,
                b.1,
                all.0 - b.0,
                all.1 - b.1
            );
        }
    }
    for f in outcomes.iter().flat_map(|o| o.failures()).take(3) {
        println!(
            "  failed at {:.1?}: {}",
            f.start,
            f.result.as_ref().unwrap_err()
        );
    }
}

/// Requests answered and failed among `outcomes`.
fn tally<O: std::borrow::Borrow<Outcome>>(outcomes: &[O]) -> (usize, usize) {
    let failed = outcomes.iter().filter(|o| !o.borrow().ok()).count();
    (outcomes.len() - failed, failed)
}

/// Packets of the VIP node `k` has seen so far; `None` once its daemon
/// no longer answers.
fn service_packets(net: &MultiNode, k: usize) -> Option<f64> {
    let admin = ADMIN.parse().ok()?;
    match http_get(&net.node_ns(k), admin, "/metrics", Duration::from_secs(1)) {
        Ok((200, body)) => Some(metric_sum(&body, "xdplb_service_packets_total", &[])),
        _ => None,
    }
}

/// Node 1's polite stop, running in a thread of its own so that the table
/// goes on while the daemon withdraws and detaches.
struct Stopped {
    at: Instant,
    /// Each client's clock at the stop (to split its outcomes).
    clocks: Vec<Duration>,
    /// Each node's packets at the stop.
    packets: Vec<f64>,
    /// Its exit status and when it exited (since the SIGTERM).
    stopper: Option<thread::JoinHandle<(Result<std::process::ExitStatus>, Duration)>>,
    rerouted: bool,
}

impl Stopped {
    fn start(node1: Daemon, loads: &[Load], packets: Vec<f64>) -> Stopped {
        println!(
            ">>> stopping node 1: SIGTERM to its xdplb (it withdraws {VIP} over BGP, then detaches)"
        );
        let at = Instant::now();
        let stopper = thread::spawn(move || (node1.stop().map(|(s, _log)| s), at.elapsed()));
        Stopped {
            at,
            clocks: loads.iter().map(Load::elapsed).collect(),
            packets,
            stopper: Some(stopper),
            rerouted: false,
        }
    }

    /// Says when the router dropped node 1 and when its daemon exited.
    fn report(&mut self, net: &MultiNode) {
        if !self.rerouted {
            let hops = net.next_hops(VIP.into());
            if !hops.contains(&IpAddr::V4(node_addr(1))) {
                self.rerouted = true;
                println!(
                    ">>> the router dropped node 1's next hop ({} left), {:.1?} after the SIGTERM",
                    hops.len(),
                    self.at.elapsed()
                );
            }
        }
        if self.stopper.as_ref().is_some_and(|s| s.is_finished()) {
            self.finish();
        }
    }

    /// Waits for node 1's daemon to exit and says how it ended.
    fn finish(&mut self) {
        let Some(stopper) = self.stopper.take() else {
            return;
        };
        match stopper.join() {
            Ok((Ok(status), after)) => {
                println!(">>> node 1's xdplb exited ({status}), {after:.1?} after the SIGTERM")
            }
            Ok((Err(e), _)) => println!(">>> stopping node 1 failed: {e:#}"),
            Err(_) => println!(">>> stopping node 1 panicked"),
        }
    }
}
