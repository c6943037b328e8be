//! The control plane (docs/design.md section 8): Maglev table build time for
//! 10, 100 and 1000 backends; the real daemon's start and reload times
//! and its resident memory with 100 services (default ring size) and with
//! 1000 services; how long `GET /metrics` and `GET /api/v1/services` take
//! idle and while a reload rewrites every ring. Needs root (the daemon
//! loads and attaches the program).

mod common;

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use lb_testbed::{
    ADMIN, Daemon,
    fixtures::daemon_config,
    netns::{self, Netns},
    tcp_connect, xdplb_bin,
};
use serde_json::json;
use xdplb::maglev::{MaglevBackend, build_table};

fn main() -> Result<()> {
    let quick = common::quick();
    let maglev = maglev(if quick { 3 } else { 21 });
    let (small, large) = if quick { (10, 20) } else { (100, 1000) };
    let ns = Netns::create(&format!("xdplb-ctl-{}", std::process::id()))?;
    netns::ip_script(
        ns.name(),
        [
            "link add ca type veth peer name cb",
            "link set ca up",
            "link set cb up",
            "addr add 198.18.1.1/24 dev ca",
        ],
    )?;
    let daemons = [
        daemon_run(&ns, small, 65_537, 2)?,
        daemon_run(&ns, large, 4_093, 2)?,
    ];
    drop(ns);

    println!("\nMaglev table build (M = 65537, equal weights), median");
    for (n, ms) in &maglev {
        println!("{n:>6} backends {ms:>10.2} ms");
    }
    println!("\ndaemon (2 backends per service)");
    println!(
        "{:>9} {:>7} {:>10} {:>12} {:>12} {:>12} {:>8}",
        "services", "M", "start s", "reload same", "reload one", "reload all", "RSS MB"
    );
    for d in &daemons {
        println!(
            "{:>9} {:>7} {:>10.2} {:>10.1}ms {:>10.1}ms {:>10.1}ms {:>8.1}",
            d.services,
            d.ring,
            d.start_s,
            d.reload_same_ms,
            d.reload_one_ms,
            d.reload_all_ms,
            d.rss_mb
        );
    }
    println!(
        "\nreads while a reload rewrites every ring (max ms; idle: median ms; n: reads during the reload)"
    );
    println!(
        "{:>9} {:>14} {:>14} {:>14} {:>14} {:>4}",
        "services", "metrics idle", "metrics max", "services idle", "services max", "n"
    );
    for d in &daemons {
        println!(
            "{:>9} {:>14.2} {:>14.2} {:>14.2} {:>14.2} {:>4}",
            d.services,
            d.reads.idle_ms[0],
            d.reads.during_max_ms[0],
            d.reads.idle_ms[1],
            d.reads.during_max_ms[1],
            d.reads.during
        );
    }
    common::emit(
        "control",
        json!({
            "maglev": maglev.iter().map(|(n, ms)| json!({"backends": n, "ms": ms})).collect::<Vec<_>>(),
            "daemon": daemons.iter().map(|d| json!({
                "services": d.services,
                "ring": d.ring,
                "start_s": d.start_s,
                "reload_same_ms": d.reload_same_ms,
                "reload_one_ms": d.reload_one_ms,
                "reload_all_ms": d.reload_all_ms,
                "rss_mb": d.rss_mb,
                "reads": READS.iter().enumerate().map(|(i, path)| json!({
                    "path": path,
                    "idle_ms": d.reads.idle_ms[i],
                    "during_reload_max_ms": d.reads.during_max_ms[i],
                })).collect::<Vec<_>>(),
                "reads_during_reload": d.reads.during,
                "reload_with_reads_ms": d.reads.reload_ms,
            })).collect::<Vec<_>>(),
        }),
    );
    Ok(())
}

/// Median build time in ms for 10, 100 and 1000 backends.
fn maglev(runs: usize) -> Vec<(usize, f64)> {
    [10usize, 100, 1000]
        .into_iter()
        .map(|n| {
            let backends: Vec<MaglevBackend> = (0..n)
                .map(|i| MaglevBackend {
                    addr: IpAddr::V4(Ipv4Addr::from(0xc612_0100u32 + i as u32)),
                    port: 8080,
                    weight: 100,
                })
                .collect();
            let times = (0..runs)
                .map(|_| {
                    let t = Instant::now();
                    std::hint::black_box(build_table(&backends, 65_537, 0x5eed));
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            (n, common::median(times))
        })
        .collect()
}

struct DaemonRun {
    services: usize,
    ring: u32,
    start_s: f64,
    reload_same_ms: f64,
    reload_one_ms: f64,
    reload_all_ms: f64,
    rss_mb: f64,
    reads: Reads,
}

/// What a scrape and an API call read, timed idle and during a reload.
const READS: [&str; 2] = ["/metrics", "/api/v1/services"];

/// Per `READS` path: median idle time and the longest during a reload
/// that rewrites every ring; reads made during it; that reload's time.
struct Reads {
    idle_ms: [f64; 2],
    during_max_ms: [f64; 2],
    during: usize,
    reload_ms: f64,
}

/// `services` services of 2 backends each on one veth end (`ca`).
fn config(ns: &str, services: usize, ring: u32, weight: impl Fn(usize) -> u32) -> String {
    let settings = format!(
        "xdp_mode: native\nsnat: {{ ipv4: 198.18.1.1, ports: 20000-29999 }}\n\
         limits: {{ max_services: {}, max_backends: {}, maglev_table_size: {ring}, flow_table_size: 65536 }}",
        services.next_power_of_two(),
        (services * 2).next_power_of_two()
    );
    // Flow style, one line a service: the file stays short at 1000.
    let entries: Vec<String> = (0..services)
        .map(|s| {
            let vip = Ipv4Addr::from(0xc612_6400u32 + (s / 200) as u32); // 198.18.100.x
            let port = 1000 + (s % 200) as u16;
            format!(
                "  - {{ name: s{s}, vip: {vip}, port: {port}, protocol: tcp, backends: [ \
                 {{ address: 198.18.1.11, port: {port}, weight: {w} }}, {{ address: 198.18.1.12, port: {port} }} ] }}\n",
                w = weight(s)
            )
        })
        .collect();
    daemon_config(&["ca"], &format!("/sys/fs/bpf/{ns}"), &settings, &entries)
}

fn daemon_run(ns: &Netns, services: usize, ring: u32, _backends: usize) -> Result<DaemonRun> {
    let ns = ns.name();
    let admin: SocketAddr = ADMIN.parse()?;
    let yaml = config(ns, services, ring, |_| 100);
    let t = Instant::now();
    let daemon = Daemon::start(xdplb_bin!(), ns, &yaml, admin)?;
    let start_s = t.elapsed().as_secs_f64();
    let pid = common::find_process(&format!("{ns}.yaml")).context("daemon pid")?;
    let reload = |yaml: &str| -> Result<f64> {
        std::fs::write(daemon.config_path(), yaml)?;
        let t = Instant::now();
        post_reload(ns, admin)?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    let reload_same_ms = reload(&yaml)?;
    let reload_one_ms = reload(&config(
        ns,
        services,
        ring,
        |s| {
            if s == 0 { 50 } else { 100 }
        },
    ))?;
    let reload_all_ms = reload(&config(ns, services, ring, |_| 50))?;
    let rss_mb = rss_kb(pid) as f64 / 1024.0;
    let reads = reads_during(ns, admin, || reload(&config(ns, services, ring, |_| 70)))?;
    eprintln!("control: {services} services: start {start_s:.2}s, RSS {rss_mb:.1} MB");
    drop(daemon);
    Ok(DaemonRun {
        services,
        ring,
        start_s,
        reload_same_ms,
        reload_one_ms,
        reload_all_ms,
        rss_mb,
        reads,
    })
}

/// Times the `READS` idle, then over and over (in turn) while `reload`
/// runs on another thread: a read that waited for the reload shows as a
/// maximum near the reload's time.
fn reads_during(
    ns: &str,
    admin: SocketAddr,
    reload: impl FnOnce() -> Result<f64> + Send,
) -> Result<Reads> {
    let mut idle_ms = [0.0; 2];
    for (i, path) in READS.iter().enumerate() {
        let times = (0..11)
            .map(|_| get_ms(ns, admin, path))
            .collect::<Result<Vec<_>>>()?;
        idle_ms[i] = common::median(times);
    }
    let mut during_max_ms = [0f64; 2];
    let mut during = 0;
    let reload_ms = std::thread::scope(|s| -> Result<f64> {
        let reloading = s.spawn(reload);
        while !reloading.is_finished() {
            for (i, path) in READS.iter().enumerate() {
                during_max_ms[i] = during_max_ms[i].max(get_ms(ns, admin, path)?);
                during += 1;
            }
        }
        reloading.join().expect("the reload thread")
    })?;
    Ok(Reads {
        idle_ms,
        during_max_ms,
        during,
        reload_ms,
    })
}

/// `GET path`: ms until the whole answer is read.
fn get_ms(ns: &str, admin: SocketAddr, path: &str) -> Result<f64> {
    let t = Instant::now();
    request(ns, admin, "GET", path)?;
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

/// `POST /api/v1/reload`, which answers once the new config is applied.
fn post_reload(ns: &str, admin: SocketAddr) -> Result<()> {
    request(ns, admin, "POST", "/api/v1/reload")
}

/// `method path` with no body; fails unless the answer is 200.
fn request(ns: &str, admin: SocketAddr, method: &str, path: &str) -> Result<()> {
    let mut s = tcp_connect(ns, admin, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(600)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    if !answer.starts_with("HTTP/1.1 200") {
        bail!(
            "{method} {path} answered: {}",
            answer.lines().next().unwrap_or("")
        );
    }
    Ok(())
}

fn rss_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
