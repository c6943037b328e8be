//! The demo behind `cargo xtask demo`: builds the reference topology, runs
//! the real daemon with config/demo.yaml, drives HTTP and UDP traffic
//! through the VIPs, and prints packets per second per service and backend
//! every second, read from the daemon's /metrics. With `--nodes N`, the
//! multi-node bed instead (nodes.rs). Tears everything down at the end (or
//! on Ctrl-C). Needs root.

mod nodes;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::Parser;
use lb_testbed::{
    Daemon, HttpServer, Sample, Topology, UdpEchoServer, backend_addr, http_get, http_request,
    parse_metrics, udp_request,
};
use xdplb::config::Config;

#[derive(Parser)]
struct Args {
    /// The xdplb binary to run.
    #[arg(long)]
    xdplb: PathBuf,
    #[arg(long, default_value = "config/demo.yaml")]
    config: PathBuf,
    /// How long to drive traffic.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Run N LB nodes behind an ECMP router instead (docs/ha.md); `config`
    /// is not used then.
    #[arg(long, value_parser = clap::value_parser!(u8).range(2..=9))]
    nodes: Option<u8>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    // Before anything is created: a Ctrl-C at any point still tears down.
    static INTERRUPTED: OnceLock<Instant> = OnceLock::new();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc_stop(move || {
            let _ = INTERRUPTED.set(Instant::now());
            stop.store(true, Ordering::SeqCst)
        });
    }
    match args.nodes {
        Some(n) => nodes::run(&args.xdplb, n.into(), args.seconds, &INTERRUPTED),
        None => single_node(&args, &stop),
    }
}

/// The demo on one node with `args.config`.
fn single_node(args: &Args, stop: &Arc<AtomicBool>) -> Result<()> {
    let yaml = std::fs::read_to_string(&args.config)
        .with_context(|| format!("read {}", args.config.display()))?;
    let cfg = Config::from_yaml(&yaml).with_context(|| args.config.display().to_string())?;

    // Backends: every address the config names gets a namespace, an HTTP
    // server on each TCP port and a UDP echo server on each UDP port.
    let n_backends = (1..=200)
        .take_while(|i| {
            cfg.services
                .iter()
                .flat_map(|s| &s.backends)
                .any(|b| b.address == backend_addr(*i))
        })
        .count();
    println!("creating the topology (client, lb, switch, {n_backends} backends)...");
    let topo = Topology::create(n_backends.max(1))?;
    let mut http = Vec::new();
    let mut udp = Vec::new();
    for svc in &cfg.services {
        for b in &svc.backends {
            let i = (1..=n_backends).find(|i| b.address == backend_addr(*i));
            let Some(i) = i else { continue };
            let addr = SocketAddr::new(b.address, b.port);
            let name = format!("backend-{i}");
            match svc.protocol {
                xdplb::config::Protocol::Tcp => {
                    http.push(HttpServer::start(&topo.backend_ns(i), addr, &name)?)
                }
                xdplb::config::Protocol::Udp => {
                    udp.push(UdpEchoServer::start(&topo.backend_ns(i), addr, &name)?)
                }
            }
        }
    }
    println!("starting xdplb in {} ...", topo.lb_ns());
    let daemon = Daemon::start(&args.xdplb, &topo.lb_ns(), &yaml, cfg.admin.listen)?;

    let client = topo.client_ns();
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut workers = Vec::new();
    for svc in cfg.services.clone() {
        let vip = SocketAddr::new(svc.vip, svc.port);
        let threads = if svc.protocol == xdplb::config::Protocol::Tcp {
            3
        } else {
            1
        };
        for t in 0..threads {
            let (client, stop, done, failed) =
                (client.clone(), stop.clone(), done.clone(), failed.clone());
            let tcp = svc.protocol == xdplb::config::Protocol::Tcp;
            workers.push(thread::spawn(move || {
                while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    let ok = match (tcp, t) {
                        // One worker streams bulk data, the others make
                        // short connections.
                        (true, 0) => {
                            http_request(&client, vip, "/bytes/8388608", Duration::from_secs(5))
                                .is_ok()
                        }
                        (true, _) => http_get(&client, vip, "/", Duration::from_secs(2)).is_ok(),
                        (false, _) => {
                            udp_request(&client, vip, b"ping", Duration::from_secs(1)).is_ok()
                        }
                    };
                    let counter = if ok { &done } else { &failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                    if !ok && t0.elapsed() < Duration::from_millis(100) {
                        thread::sleep(Duration::from_millis(100));
                    }
                }
            }));
        }
    }

    println!(
        "driving traffic for {}s: HTTP to the TCP VIPs, UDP to the UDP VIPs\n",
        args.seconds
    );
    let mut prev = parse_metrics(&daemon.metrics()?);
    let mut prev_t = Instant::now();
    let mut second = 0;
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_secs(1));
        let now = parse_metrics(&daemon.metrics()?);
        let dt = prev_t.elapsed().as_secs_f64();
        prev_t = Instant::now();
        second += 1;
        print_rates(second, &prev, &now, dt);
        prev = now;
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        let _ = w.join();
    }
    println!(
        "\n{} requests answered, {} failed.",
        done.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    let end = parse_metrics(&daemon.metrics()?);
    let total = |name: &str, key: &str, value: &str| {
        end.iter()
            .filter(|s| s.name == name && label(&s.labels, key) == value)
            .map(|s| s.value)
            .sum::<f64>()
    };
    let reasons: Vec<String> = DROP_REASONS
        .iter()
        .map(|r| (r, total("xdplb_dataplane_events_total", "event", r)))
        .filter(|(_, n)| *n > 0.0)
        .map(|(r, n)| format!("{r} {n:.0}"))
        .collect();
    println!(
        "XDP dropped {:.0} packets{}. Tearing down.",
        total("xdplb_xdp_packets_total", "action", "drop"),
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        }
    );
    let (status, _) = daemon.stop()?;
    drop((http, udp, topo));
    println!("xdplb exited with {status}; topology removed.");
    Ok(())
}

/// Per-second rates of every series of `name`, keyed by their labels.
fn rates<'a>(
    name: &str,
    prev: &[Sample],
    now: &'a [Sample],
    dt: f64,
) -> Vec<(&'a [(String, String)], f64)> {
    let before: HashMap<&[(String, String)], f64> = prev
        .iter()
        .filter(|s| s.name == name)
        .map(|s| (s.labels.as_slice(), s.value))
        .collect();
    now.iter()
        .filter(|s| s.name == name)
        .map(|s| {
            let old = before.get(s.labels.as_slice()).copied().unwrap_or(0.0);
            (s.labels.as_slice(), (s.value - old).max(0.0) / dt)
        })
        .collect()
}

fn label<'a>(labels: &'a [(String, String)], key: &str) -> &'a str {
    labels
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// `xdplb_dataplane_events_total` events that are drops (the others count
/// what went well, or rejections answered).
const DROP_REASONS: [&str; 5] = [
    "neigh_miss",
    "fib_fail",
    "no_backend",
    "snat_exhausted",
    "reject_limited",
];

fn print_rates(second: u32, prev: &[Sample], now: &[Sample], dt: f64) {
    let mut by_action: HashMap<&str, f64> = HashMap::new();
    for (labels, r) in rates("xdplb_xdp_packets_total", prev, now, dt) {
        *by_action.entry(label(labels, "action")).or_default() += r;
    }
    let total: f64 = by_action.values().sum();
    let mut actions: Vec<_> = by_action.into_iter().filter(|(_, r)| *r > 0.0).collect();
    actions.sort_by(|a, b| b.1.total_cmp(&a.1));
    let actions: Vec<String> = actions.iter().map(|(a, r)| format!("{a} {r:.0}")).collect();
    println!(
        "[{second:>3}s] XDP {total:>9.0} pps ({})",
        actions.join(", ")
    );
    // Every drop has a counted reason: show them as they happen.
    let drops: Vec<String> = rates("xdplb_dataplane_events_total", prev, now, dt)
        .into_iter()
        .filter(|(l, r)| *r > 0.0 && DROP_REASONS.contains(&label(l, "event")))
        .map(|(l, r)| format!("{} {r:.0}/s", label(l, "event")))
        .collect();
    if !drops.is_empty() {
        println!("        dropped: {}", drops.join(", "));
    }
    let backends = rates("xdplb_backend_packets_total", prev, now, dt);
    for (labels, r) in rates("xdplb_service_packets_total", prev, now, dt) {
        let svc = label(labels, "service");
        let mut per_backend: Vec<String> = backends
            .iter()
            .filter(|(l, _)| label(l, "service") == svc)
            .map(|(l, r)| format!("{} {r:>7.0}", label(l, "backend")))
            .collect();
        per_backend.sort();
        println!(
            "        {svc:<8} {r:>9.0} pps | {}",
            per_backend.join(" | ")
        );
    }
}

/// Runs `f` on SIGINT/SIGTERM so the demo still tears down on Ctrl-C.
fn ctrlc_stop(f: impl Fn() + Send + 'static) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    thread::spawn(move || {
        rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
            f();
        })
    });
}
