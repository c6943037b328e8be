//! Per-packet cost as the state grows (docs/design.md section 8): the
//! established-flow path (nat, IPv4) with 1 to 1M flows in the table, and
//! with 1 to 256 services. Flows are put in the table by running their
//! handshake through the program (the real new-flow and confirmation
//! paths: SYN, the backend's SYN-ACK, the client's ACK); each sample
//! then runs one packet of a random existing flow with `repeat = 1`, so the
//! table's memory is touched as real traffic would. Needs root.

mod common;
#[path = "pktcost/frames.rs"]
mod frames;

use std::{fmt::Write as _, net::IpAddr, sync::Arc};

use aya::programs::Xdp;
use lb_testbed::{XDP_REDIRECT, fib_net::FibNet, fixtures::dataplane, run_frame};
use serde_json::json;
use xdplb::{controller::SharedPlan, metrics::DataplaneCollector};

use frames::{Family, establish, tcp};

/// 64 backends: SNAT room for 1M flows (64 x 64512 ports, a quarter used).
const BACKENDS: std::ops::RangeInclusive<u8> = 11..=74;

/// A cheap deterministic PRNG (xorshift): the same samples every run.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as u32
    }
}

/// Runs `frame` once; returns (verdict, test_run ns).
fn run(prog: &Xdp, frame: &[u8]) -> (u32, u64) {
    let r = run_frame(prog, frame);
    (r.verdict, r.duration.as_nanos() as u64)
}

/// (trimmed mean test_run ns, mean BPF-stats ns, packets not forwarded)
/// of one packet each of `samples` flows drawn by `pick`.
fn sample(prog: &Xdp, samples: usize, mut frame_of: impl FnMut() -> Vec<u8>) -> (f64, f64, u64) {
    let stats = || {
        let i = prog.info().expect("info");
        (i.run_time().as_nanos() as u64, i.run_count())
    };
    let frames: Vec<Vec<u8>> = (0..samples).map(|_| frame_of()).collect();
    let before = stats();
    let mut bad = 0;
    let ns: Vec<u64> = frames
        .iter()
        .map(|f| {
            let (verdict, ns) = run(prog, f);
            bad += (verdict != XDP_REDIRECT) as u64;
            ns
        })
        .collect();
    let after = stats();
    let stats_ns = (after.0 - before.0) as f64 / (after.1 - before.1).max(1) as f64;
    (common::trimmed_mean(ns), stats_ns, bad)
}

fn config(services: u32, backends: u8, ring: u32, flow_table: u32) -> String {
    let n_backends = backends as usize;
    let backends: String = (11..11 + backends)
        .map(|b| format!("{{ address: 198.18.1.{b}, port: 8080 }}, "))
        .collect();
    let mut y = format!(
        "interfaces: [lbc, lbb]\nsnat: {{ ipv4: 198.18.1.1, ports: 1024-65535 }}\n\
         limits: {{ max_services: {services}, max_backends: {}, maglev_table_size: {ring}, flow_table_size: {flow_table} }}\nservices:\n",
        services as usize * n_backends
    );
    for s in 0..services {
        let vip = Family::V4.vip(10);
        let port = 80 + s as u16;
        writeln!(
            y,
            "  - {{ name: s{s}, vip: {vip}, port: {port}, protocol: tcp, backends: [ {backends}] }}"
        )
        .unwrap();
    }
    y
}

fn main() {
    let quick = common::quick();
    let (flow_steps, samples, table): (&[u32], usize, u32) = if quick {
        (&[1, 100, 1_000], 1_000, 65_536)
    } else {
        (&[1, 100, 10_000, 100_000, 1_000_000], 20_000, 2_097_152)
    };
    let service_steps: &[u32] = if quick { &[1, 4] } else { &[1, 16, 64, 256] };
    let net = FibNet::create(BACKENDS).expect("namespace");
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS");
    let (flows, services) = net
        .run_in(|| {
            Ok((
                flows(flow_steps, samples, table),
                services(service_steps, samples),
            ))
        })
        .unwrap();
    drop(net);

    println!(
        "\nestablished flow (nat, IPv4), ns/packet vs flows in the table ({samples} samples of random flows, repeat=1)"
    );
    println!(
        "{:>9} {:>10} {:>10} {:>9}",
        "flows", "test_run", "bpf_stats", "not fwd"
    );
    println!(
        "{:>9} {:>10} {:>10} {:>10}",
        "", "count ms", "sweep ms", "scrape ms"
    );
    for r in &flows {
        println!(
            "{:>9} {:>10.1} {:>10.1} {:>9} {:>10.1} {:>10.1} {:>10.2}",
            r.0, r.1, r.2, r.3, r.4, r.5, r.6
        );
    }
    println!(
        "\nestablished flow (nat, IPv4), ns/packet vs services (10000 flows spread over them)"
    );
    println!(
        "{:>9} {:>10} {:>10} {:>9}",
        "services", "test_run", "bpf_stats", "not fwd"
    );
    for r in &services {
        println!("{:>9} {:>10.1} {:>10.1} {:>9}", r.0, r.1, r.2, r.3);
    }
    let rows = |v: &[(u32, f64, f64, u64)], key: &str| -> Vec<serde_json::Value> {
        v.iter()
            .map(|r| json!({key: r.0, "test_run_ns": r.1, "bpf_stats_ns": r.2, "not_forwarded": r.3}))
            .collect()
    };
    common::emit(
        "scale",
        json!({
            "samples": samples,
            "flow_table_size": table,
            "flows": flows
                .iter()
                .map(|r| json!({"flows": r.0, "test_run_ns": r.1, "bpf_stats_ns": r.2,
                    "not_forwarded": r.3, "count_ms": r.4, "sweep_ms": r.5,
                    "scrape_ms": r.6}))
                .collect::<Vec<_>>(),
            "services": rows(&services, "services"),
        }),
    );
}

/// A row of the flows table: flows, test_run ns, bpf_stats ns, packets not
/// forwarded, and the daemon's work on that table: counting its entries
/// by walking it, one expiry sweep, and rendering `/metrics` (the
/// daemon's collector, whose `xdplb_flow_table_entries` is the sweep's
/// count), in ms.
type FlowRow = (u32, f64, f64, u64, f64, f64, f64);

/// Grows the flow table through `steps` (cumulative), sampling at each.
fn flows(steps: &[u32], samples: usize, table: u32) -> Vec<FlowRow> {
    let (dp, plan) = dataplane(&config(1, *BACKENDS.end() - 10, 65537, table));
    // The daemon's sweep and scrape, on handles of their own as in the daemon.
    let mut sweep = dp.flow_table().expect("flow table handle");
    let registry = prometheus::Registry::new();
    registry
        .register(Box::new(DataplaneCollector::new(
            SharedPlan::new(Arc::new(plan)),
            dp.counter_reader().expect("counter reader"),
            sweep.swept_entries(),
        )))
        .expect("register");
    let vip: IpAddr = Family::V4.vip(10);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut have = 0;
    let mut out = Vec::new();
    for &n in steps {
        let prog = dp.program();
        let mut failed = 0u64;
        let run_out = |f: &[u8]| {
            let r = run_frame(prog, f);
            (r.verdict, r.out)
        };
        for flow in have..n {
            let (verdict, _) = establish(run_out, Family::V4, flow, (vip, 80), true);
            failed += (verdict != XDP_REDIRECT) as u64;
        }
        if failed > 0 {
            eprintln!("scale: {failed} of the new flows up to {n} were not forwarded");
        }
        have = n;
        let (t, s, bad) = sample(prog, samples, || tcp(Family::V4, rng.below(n), vip, 80));
        eprintln!("scale: {n} flows: {t:.1} ns (test_run), {s:.1} ns (bpf_stats)");
        let start = std::time::Instant::now();
        let counted = dp.flow_entries().expect("flow count");
        let count_ms = start.elapsed().as_secs_f64() * 1e3;
        assert_eq!(counted, n as u64, "flow table entries");
        let start = std::time::Instant::now();
        let expired = sweep.expire().expect("sweep");
        let sweep_ms = start.elapsed().as_secs_f64() * 1e3;
        assert_eq!(expired, 0, "no flow is idle past its timeout yet");
        let (scrape_ms, text) = scrape(&registry);
        let line = format!("xdplb_flow_table_entries {n}\n");
        assert!(text.contains(&line), "the scrape shows {n} flows");
        eprintln!(
            "scale: {n} flows: count {count_ms:.1} ms, sweep {sweep_ms:.1} ms, scrape {scrape_ms:.2} ms"
        );
        out.push((n, t, s, bad, count_ms, sweep_ms, scrape_ms));
    }
    out
}

/// Renders `/metrics` as `GET /metrics` does (gather and encode), best of
/// 5 (ms), and the text.
fn scrape(registry: &prometheus::Registry) -> (f64, String) {
    use prometheus::Encoder as _;
    let mut best = f64::MAX;
    let mut text = Vec::new();
    for _ in 0..5 {
        text.clear();
        let start = std::time::Instant::now();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut text)
            .expect("encode");
        best = best.min(start.elapsed().as_secs_f64() * 1e3);
    }
    (best, String::from_utf8(text).expect("utf-8"))
}

/// 10000 flows spread over the first `n` services of 256 (ports 80..).
fn services(steps: &[u32], samples: usize) -> Vec<(u32, f64, f64, u64)> {
    let max = *steps.iter().max().unwrap();
    // The established path never reads the Maglev ring: a small one keeps
    // writing 256 of them short.
    let (dp, _) = dataplane(&config(max, 3, 4093, 65_536));
    let prog = dp.program();
    let vip = Family::V4.vip(10);
    let mut out = Vec::new();
    let mut rng = Rng(7);
    for (step, &n) in steps.iter().enumerate() {
        // Flow f goes to service f % n; a fresh set of flows per step.
        let base = 20_000 * step as u32;
        let port = |f: u32| 80 + (f % n) as u16;
        let frame = |f: u32| tcp(Family::V4, base + f, vip, port(f));
        let run_out = |f: &[u8]| {
            let r = run_frame(prog, f);
            (r.verdict, r.out)
        };
        for f in 0..10_000 {
            establish(run_out, Family::V4, base + f, (vip, port(f)), true);
        }
        let (t, s, bad) = sample(prog, samples, || frame(rng.below(10_000)));
        eprintln!("scale: {n} services: {t:.1} ns (test_run), {s:.1} ns (bpf_stats)");
        out.push((n, t, s, bad));
    }
    out
}
