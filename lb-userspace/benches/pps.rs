//! Packets per second through veth (docs/design.md section 8): a generator on
//! CPU 0 (BPF_PROG_RUN live frames, `generator` in baselines.rs) sends
//! 64-byte TCP frames of many flows out of `gen`; the balancer side
//! (`lbc`, threaded NAPI pinned to CPU 1) runs the program under test and
//! forwards out of `lbb` to a sink that drops everything (XDP_DROP on the
//! peer). Same run, same frames: XDP_DROP, MAC-swap XDP_TX and redirect
//! baselines, xdplb (nat, dsr) under the real daemon, and nftables DNAT
//! (kube-proxy style) through the kernel's stack.
//!
//! Rates come from the veth drivers' own counters (`ethtool -S`), not from
//! the programs: received on `lbc`, delivered to the sink. Needs root.

mod common;
#[path = "pps/net.rs"]
mod pps_net;

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::{
    Ebpf, EbpfLoader,
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
};
use lb_testbed::{ADMIN, Daemon, fib_net::LBB_MAC, netns, xdplb_bin};
use serde_json::json;
use xdplb::dataplane::BASELINES;

use pps_net::{BACKENDS, PpsNet, VIP};

/// Flows the generator spreads its frames over (distinct source ports).
const FLOWS: u32 = 50_000;
/// CPUs: generator (and the sinks), balancer.
const GEN_CPU: usize = 0;
const LB_CPU: usize = 1;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Variant {
    Drop,
    MacSwap,
    Redirect,
    XdplbNat,
    XdplbDsr,
    Nftables,
}

impl Variant {
    const ALL: [Variant; 6] = [
        Variant::Drop,
        Variant::MacSwap,
        Variant::Redirect,
        Variant::XdplbNat,
        Variant::XdplbDsr,
        Variant::Nftables,
    ];
    fn name(self) -> &'static str {
        match self {
            Variant::Drop => "XDP_DROP (baseline)",
            Variant::MacSwap => "MAC-swap XDP_TX (baseline)",
            Variant::Redirect => "redirect (baseline)",
            Variant::XdplbNat => "xdplb nat",
            Variant::XdplbDsr => "xdplb dsr",
            Variant::Nftables => "nftables DNAT",
        }
    }
    fn key(self) -> &'static str {
        match self {
            Variant::Drop => "drop",
            Variant::MacSwap => "macswap",
            Variant::Redirect => "redirect",
            Variant::XdplbNat => "xdplb_nat",
            Variant::XdplbDsr => "xdplb_dsr",
            Variant::Nftables => "nftables",
        }
    }
}

/// One measured run.
#[derive(Debug)]
struct Rate {
    variant: Variant,
    /// Frames the generator produced per second.
    gen_mpps: f64,
    /// Frames the balancer side received (its NAPI ran them) per second.
    rx_mpps: f64,
    /// Frames that reached the sink (forwarded) per second.
    fwd_mpps: f64,
    /// Share of the time the balancer's NAPI thread ran: near 100% means
    /// the balancer was the bottleneck, well below means the generator was.
    napi_busy: f64,
    /// CPU time of the balancer's NAPI thread per received frame: the
    /// live path's own ns/packet (driver + program + transmit).
    napi_ns_per_pkt: f64,
    /// CPU share of the xdplb daemon (control plane) while it forwarded.
    daemon_cpu: Option<f64>,
}

/// What keeps a variant set up; dropping it tears the variant down.
enum Setup {
    Xdp(#[allow(dead_code)] Ebpf),
    Daemon(Daemon),
    Nft(#[allow(dead_code)] common::Undo),
}

fn main() -> Result<()> {
    let quick = common::quick();
    let (warmup, span) = if quick {
        (Duration::from_millis(300), Duration::from_millis(700))
    } else {
        (Duration::from_secs(2), Duration::from_secs(5))
    };
    if !common::ensure_debian_packages(&["nftables"]).is_empty() {
        eprintln!("pps: nftables missing, its row will fail");
    }
    let net = PpsNet::create()?;
    let mut sinks = load_baselines(&net, &["drop_all"])?;
    net.attach_sinks(&mut sinks)?;
    let mut rates = Vec::new();
    let only = std::env::var("PPS_ONLY").ok();
    for v in Variant::ALL {
        if only
            .as_ref()
            .is_some_and(|o| !o.split(',').any(|k| k == v.key()))
        {
            continue;
        }
        eprintln!("pps: {}", v.name());
        let setup = match setup(&net, v) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("pps: {} not measured: {e:#}", v.name());
                continue;
            }
        };
        net.threaded_napi(LB_CPU, GEN_CPU)?;
        let rate = measure(&net, v, warmup, span)?;
        if let (Setup::Daemon(d), Some(_)) = (&setup, std::env::var_os("PPS_DEBUG")) {
            let m = d.metrics()?;
            for l in m
                .lines()
                .filter(|l| l.contains("xdp_packets") || l.contains("events"))
            {
                eprintln!("  {l}");
            }
        }
        eprintln!("pps: {rate:?}");
        rates.push(rate);
        drop(setup);
    }
    drop(sinks);
    drop(net);
    report(&rates, span);
    Ok(())
}

fn report(rates: &[Rate], span: Duration) {
    let get = |v: Variant| rates.iter().find(|r| r.variant == v);
    println!(
        "\npackets/s through veth, 64-byte TCP frames, {FLOWS} flows, {}s per row; generator CPU {GEN_CPU}, balancer NAPI CPU {LB_CPU}",
        span.as_secs_f64()
    );
    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>9} {:>12} {:>8}",
        "program", "sent Mpps", "rx Mpps", "fwd Mpps", "NAPI busy", "NAPI ns/pkt", "daemon"
    );
    for r in rates {
        println!(
            "{:<28} {:>10.2} {:>10.2} {:>10.2} {:>8.0}% {:>12.0} {:>8}",
            r.variant.name(),
            r.gen_mpps,
            r.rx_mpps,
            r.fwd_mpps,
            r.napi_busy * 100.0,
            r.napi_ns_per_pkt,
            r.daemon_cpu
                .map(|c| format!("{:.0}%", c * 100.0))
                .unwrap_or_default()
        );
    }
    let ratio = |a: Variant, b: Variant| match (get(a), get(b)) {
        (Some(a), Some(b)) if b.fwd_mpps > 0.0 => Some(a.fwd_mpps / b.fwd_mpps),
        _ => None,
    };
    let rows: Vec<_> = rates
        .iter()
        .map(|r| {
            json!({
                "key": r.variant.key(),
                "name": r.variant.name(),
                "gen_mpps": r.gen_mpps,
                "rx_mpps": r.rx_mpps,
                "fwd_mpps": r.fwd_mpps,
                "napi_busy": r.napi_busy,
                "napi_ns_per_pkt": r.napi_ns_per_pkt,
                "daemon_cpu": r.daemon_cpu,
            })
        })
        .collect();
    let ratios = json!({
        "xdplb_nat_vs_redirect": ratio(Variant::XdplbNat, Variant::Redirect),
        "xdplb_dsr_vs_redirect": ratio(Variant::XdplbDsr, Variant::Redirect),
        "xdplb_nat_vs_nftables": ratio(Variant::XdplbNat, Variant::Nftables),
        "xdplb_dsr_vs_nftables": ratio(Variant::XdplbDsr, Variant::Nftables),
    });
    println!("ratios: {ratios}");
    common::emit(
        "pps",
        json!({
            "flows": FLOWS,
            "frame_bytes": pps_net::frame().len(),
            "seconds": span.as_secs_f64(),
            "gen_cpu": GEN_CPU,
            "lb_cpu": LB_CPU,
            "rows": rows,
            "ratios": ratios,
        }),
    );
}

/// The baselines object with `redirect` aimed at the sink.
fn load_baselines(net: &PpsNet, programs: &[&str]) -> Result<Ebpf> {
    let ifindex = netns::ifindex(&net.lb_ns, &net.lbb)?;
    let macs: [u8; 12] = {
        let mut m = [0u8; 12];
        m[..6].copy_from_slice(&pps_net::SINK_MAC);
        m[6..].copy_from_slice(&LBB_MAC);
        m
    };
    let flows = FLOWS;
    let headers: [u8; 54] = pps_net::frame()[..54].try_into().unwrap();
    let mut ebpf = EbpfLoader::new()
        .override_global("REDIRECT_IFINDEX", &ifindex, true)
        .override_global("REDIRECT_MACS", &macs, true)
        .override_global("GEN_FLOWS", &flows, true)
        .override_global("GEN_HEADERS", &headers, true)
        .load(BASELINES)
        .context("load the baselines object")?;
    for name in programs {
        let p: &mut Xdp = ebpf
            .program_mut(name)
            .with_context(|| name.to_string())?
            .try_into()?;
        p.load()?;
    }
    Ok(ebpf)
}

fn attach(ebpf: &mut Ebpf, name: &str, ns: &str, dev: &str) -> Result<()> {
    let p: &mut Xdp = ebpf.program_mut(name).context("program")?.try_into()?;
    netns::run_in(ns, || {
        p.attach(dev, XdpMode::Driver)
            .with_context(|| format!("attach {name} to {dev} (native)"))?;
        Ok(())
    })
}

fn setup(net: &PpsNet, v: Variant) -> Result<Setup> {
    let baseline = |name: &str| -> Result<Setup> {
        let mut ebpf = load_baselines(net, &[name])?;
        attach(&mut ebpf, name, &net.lb_ns, &net.lbc)?;
        Ok(Setup::Xdp(ebpf))
    };
    match v {
        Variant::Drop => baseline("drop_all"),
        Variant::MacSwap => baseline("macswap"),
        Variant::Redirect => baseline("redirect"),
        Variant::XdplbNat | Variant::XdplbDsr => {
            let mode = if v == Variant::XdplbNat { "nat" } else { "dsr" };
            let yaml = net.daemon_config(mode);
            let daemon = Daemon::start(xdplb_bin!(), &net.lb_ns, &yaml, ADMIN.parse()?)?;
            Ok(Setup::Daemon(daemon))
        }
        Variant::Nftables => {
            let backends = BACKENDS.map(|b| b.to_string());
            Ok(Setup::Nft(common::kube_proxy_nft(
                &net.lb_ns, VIP, &backends,
            )?))
        }
    }
}

/// Runs the generator for `warmup + span` and reads the counters over the
/// last `span`.
fn measure(net: &PpsNet, v: Variant, warmup: Duration, span: Duration) -> Result<Rate> {
    let stop = AtomicBool::new(false);
    let gen_ebpf = load_baselines(net, &["generator"])?;
    let prog: &Xdp = gen_ebpf.program("generator").unwrap().try_into()?;
    let frame = pps_net::frame();
    let gen_ifindex = netns::ifindex(&net.gen_ns, &net.gen_if)?;
    std::thread::scope(|s| -> Result<Rate> {
        let generator = s.spawn(|| generate(prog, &net.gen_ns, gen_ifindex, &frame, &stop));
        std::thread::sleep(warmup);
        let napi: Vec<i32> = common::kthreads(&format!("napi/{}-", net.lbc))
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        let napi_ns = || {
            napi.iter()
                .map(|&p| common::task_runtime_ns(p))
                .sum::<u64>()
        };
        let daemon = common::find_process(&format!("{}.yaml", net.lb_ns));
        let daemon_cpu = || daemon.map(common::process_cpu_secs);
        let (before, napi0, d0) = (net.counters(v)?, napi_ns(), daemon_cpu());
        let t0 = Instant::now();
        std::thread::sleep(span);
        let (after, napi1, d1) = (net.counters(v)?, napi_ns(), daemon_cpu());
        let secs = t0.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let (sent, gen_secs) = generator.join().expect("generator thread")?;
        let mpps = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs / 1e6;
        Ok(Rate {
            variant: v,
            gen_mpps: sent as f64 / gen_secs / 1e6,
            rx_mpps: mpps(after.rx, before.rx),
            fwd_mpps: mpps(after.fwd, before.fwd),
            napi_busy: (napi1 - napi0) as f64 / 1e9 / secs,
            napi_ns_per_pkt: (napi1 - napi0) as f64
                / after.rx.saturating_sub(before.rx).max(1) as f64,
            daemon_cpu: d0.zip(d1).map(|(a, b)| (b - a) / secs),
        })
    })
}

/// Repeats BPF_PROG_RUN in live-frames mode until `stop`; returns the
/// frames sent and the seconds it ran.
fn generate(
    prog: &Xdp,
    ns: &str,
    ifindex: u32,
    frame: &[u8],
    stop: &AtomicBool,
) -> Result<(u64, f64)> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
    // rx_queue_index, egress_ifindex. XDP_TX leaves by ingress_ifindex.
    let ctx: Vec<u8> = [0, frame.len() as u32, 0, ifindex, 0, 0]
        .iter()
        .flat_map(|w| w.to_ne_bytes())
        .collect();
    netns::run_in(ns, || {
        common::pin(None, GEN_CPU)?;
        const REPEAT: u32 = 50_000;
        let start = Instant::now();
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            prog.test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&ctx),
                repeat: REPEAT,
                attrs: TestRunAttrs::new().xdp_live_frames(64),
                ..Default::default()
            })
            .context("BPF_PROG_RUN live frames")?;
            sent += REPEAT as u64;
        }
        Ok((sent, start.elapsed().as_secs_f64()))
    })
}
