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
//!
//! CPU scaling: the redirect baseline and xdplb again with the work on one
//! CPU (generator, balancer and sinks all on CPU 0) and on two (a generator
//! on each CPU, which fills the RX queue of that CPU's number, each queue's
//! NAPI thread and a sink on that CPU), next to the main layout (the
//! balancer alone on CPU 1). The CPU time of every thread
//! (`/proc/PID/schedstat`) says who used what.

mod common;
#[path = "pps/net.rs"]
mod pps_net;

use std::{
    sync::atomic::{AtomicBool, AtomicI32, Ordering},
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

use pps_net::{BACKENDS, NapiThread, PpsNet, QUEUES, VIP};

/// Flows the generator spreads its frames over (distinct source ports).
const FLOWS: u32 = 50_000;
/// CPUs: generator (and the sinks), balancer.
const GEN_CPU: usize = 0;
const LB_CPU: usize = 1;
/// CPUs the layouts use (the machine's, on the VM this runs on).
const CPUS: usize = 2;

/// Where the threads run: one generator thread per CPU in `generators`
/// (it fills `C`'s RX queue of that CPU's number), the NAPI thread of `C`'s
/// RX queue `q` on `lb[q]`, the sinks' queue `q` on `sink[q]`.
#[derive(Clone, Copy, Debug)]
struct Layout {
    key: &'static str,
    name: &'static str,
    generators: &'static [usize],
    lb: &'static [usize],
    sink: &'static [usize],
}

/// The main table's: the balancer alone on its CPU, one RX queue.
const DEDICATED: Layout = Layout {
    key: "dedicated",
    name: "1 queue: balancer NAPI alone on CPU 1, generator and sinks on CPU 0",
    generators: &[GEN_CPU],
    lb: &[LB_CPU],
    sink: &[GEN_CPU],
};
/// The scaling rows: the whole bed on one CPU, then on two.
const ONE_CPU: Layout = Layout {
    key: "one_cpu",
    name: "1 queue: generator, balancer NAPI and sinks all on CPU 0",
    generators: &[0],
    lb: &[0],
    sink: &[0],
};
const TWO_CPUS: Layout = Layout {
    key: "two_cpus",
    name: "2 queues: on each CPU a generator, one queue's balancer NAPI and a sink",
    generators: &[0, 1],
    lb: &[0, 1],
    sink: &[0, 1],
};

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
    layout: Layout,
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
    /// Per RX queue of the balancer's interface.
    queues: Vec<QueueRate>,
    /// Per CPU: the share of the wall time each kind of thread ran there.
    cpus: Vec<CpuUse>,
}

#[derive(Debug)]
struct QueueRate {
    rx_mpps: f64,
    napi_cpu: usize,
    napi_busy: f64,
    napi_ns_per_pkt: f64,
}

#[derive(Debug, Default)]
struct CpuUse {
    generator: f64,
    napi: f64,
    sink: f64,
    /// Everything else that ran there (`/proc/stat`: other processes,
    /// interrupts, the hypervisor's steal).
    other: f64,
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
    let (mut rates, mut scaling) = (Vec::new(), Vec::new());
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
        let rate = measure(&net, v, DEDICATED, warmup, span)?;
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
        // The same set-up (flows established) on one CPU, then two.
        if scaled(v, quick) {
            for layout in [ONE_CPU, TWO_CPUS] {
                eprintln!("pps: {}, {}", v.name(), layout.name);
                let rate = measure(&net, v, layout, warmup, span)?;
                eprintln!("pps: {rate:?}");
                scaling.push(rate);
            }
        }
        drop(setup);
    }
    drop(sinks);
    drop(net);
    report(&rates, &scaling, span);
    Ok(())
}

/// The variants measured on one and two CPUs too (`--quick`: xdplb nat).
fn scaled(v: Variant, quick: bool) -> bool {
    match v {
        Variant::XdplbNat => true,
        Variant::Redirect | Variant::XdplbDsr => !quick,
        _ => false,
    }
}

fn report(rates: &[Rate], scaling: &[Rate], span: Duration) {
    let get = |v: Variant| rates.iter().find(|r| r.variant == v);
    println!(
        "\npackets/s through veth, 64-byte TCP frames, {FLOWS} flows, {}s per row; generator CPU {GEN_CPU}, balancer NAPI CPU {LB_CPU}",
        span.as_secs_f64()
    );
    print_rows(rates);
    let ratio = |a: Variant, b: Variant| match (get(a), get(b)) {
        (Some(a), Some(b)) if b.fwd_mpps > 0.0 => Some(a.fwd_mpps / b.fwd_mpps),
        _ => None,
    };
    let ratios = json!({
        "xdplb_nat_vs_redirect": ratio(Variant::XdplbNat, Variant::Redirect),
        "xdplb_dsr_vs_redirect": ratio(Variant::XdplbDsr, Variant::Redirect),
        "xdplb_nat_vs_nftables": ratio(Variant::XdplbNat, Variant::Nftables),
        "xdplb_dsr_vs_nftables": ratio(Variant::XdplbDsr, Variant::Nftables),
    });
    println!("ratios: {ratios}");
    // The scaling rows, with the main layout's row of the same variant.
    let scaling: Vec<&Rate> = rates
        .iter()
        .filter(|r| scaling.iter().any(|s| s.variant == r.variant))
        .chain(scaling)
        .collect();
    println!("\nCPU scaling (NAPI ns/pkt per RX queue; per CPU: generator/NAPI/sink/other busy)");
    print_rows(scaling.iter().copied());
    let layouts: Vec<_> = [DEDICATED, ONE_CPU, TWO_CPUS]
        .iter()
        .map(|l| {
            json!({
                "key": l.key,
                "name": l.name,
                "generator_cpus": l.generators,
                "queues": l.generators.len(),
            })
        })
        .collect();
    common::emit(
        "pps",
        json!({
            "flows": FLOWS,
            "frame_bytes": pps_net::frame().len(),
            "seconds": span.as_secs_f64(),
            "gen_cpu": GEN_CPU,
            "lb_cpu": LB_CPU,
            "rows": rates.iter().map(row_json).collect::<Vec<_>>(),
            "ratios": ratios,
            "scaling": {
                "layouts": layouts,
                "rows": scaling.iter().copied().map(row_json).collect::<Vec<_>>(),
            },
        }),
    );
}

fn print_rows<'a>(rates: impl IntoIterator<Item = &'a Rate>) {
    println!(
        "{:<28} {:<10} {:>9} {:>8} {:>8} {:>9} {:>12} {:>7} {:>17} {:>17}",
        "program",
        "layout",
        "sent Mpps",
        "rx Mpps",
        "fwd Mpps",
        "NAPI busy",
        "NAPI ns/pkt",
        "daemon",
        "CPU 0 g/n/s/o %",
        "CPU 1 g/n/s/o %"
    );
    for r in rates {
        let per_queue: Vec<String> = r
            .queues
            .iter()
            .filter(|q| q.rx_mpps > 0.01 * r.rx_mpps) // not a stray frame
            .map(|q| format!("{:.0}", q.napi_ns_per_pkt))
            .collect();
        let cpu = |c: &CpuUse| {
            format!(
                "{:.0}/{:.0}/{:.0}/{:.0}",
                c.generator * 100.0,
                c.napi * 100.0,
                c.sink * 100.0,
                c.other * 100.0
            )
        };
        println!(
            "{:<28} {:<10} {:>9.2} {:>8.2} {:>8.2} {:>8.0}% {:>12} {:>7} {:>17} {:>17}",
            r.variant.name(),
            r.layout.key,
            r.gen_mpps,
            r.rx_mpps,
            r.fwd_mpps,
            r.napi_busy * 100.0,
            per_queue.join("+"),
            r.daemon_cpu
                .map(|c| format!("{:.0}%", c * 100.0))
                .unwrap_or_default(),
            cpu(&r.cpus[0]),
            cpu(&r.cpus[1]),
        );
    }
}

fn row_json(r: &Rate) -> serde_json::Value {
    json!({
        "key": r.variant.key(),
        "name": r.variant.name(),
        "layout": r.layout.key,
        "gen_mpps": r.gen_mpps,
        "rx_mpps": r.rx_mpps,
        "fwd_mpps": r.fwd_mpps,
        "napi_busy": r.napi_busy,
        "napi_ns_per_pkt": r.napi_ns_per_pkt,
        "daemon_cpu": r.daemon_cpu,
        "queues": r.queues.iter().map(|q| json!({
            "rx_mpps": q.rx_mpps,
            "napi_cpu": q.napi_cpu,
            "napi_busy": q.napi_busy,
            "napi_ns_per_pkt": q.napi_ns_per_pkt,
        })).collect::<Vec<_>>(),
        "cpus": r.cpus.iter().map(|c| json!({
            "generator": c.generator,
            "napi": c.napi,
            "sink": c.sink,
            "other": c.other,
        })).collect::<Vec<_>>(),
    })
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

/// Pins the NAPI threads as `layout` says, runs its generators for
/// `warmup + span` and reads the counters and every thread's CPU time over
/// the last `span`.
fn measure(
    net: &PpsNet,
    v: Variant,
    layout: Layout,
    warmup: Duration,
    span: Duration,
) -> Result<Rate> {
    let napi: Vec<NapiThread> = net.threaded_napi(layout.lb, layout.sink)?;
    let stop = AtomicBool::new(false);
    let gen_ebpf = load_baselines(net, &["generator"])?;
    let prog: &Xdp = gen_ebpf.program("generator").unwrap().try_into()?;
    let frame = pps_net::frame();
    let gen_ifindex = netns::ifindex(&net.gen_ns, &net.gen_if)?;
    let tids: Vec<AtomicI32> = layout.generators.iter().map(|_| 0.into()).collect();
    std::thread::scope(|s| -> Result<Rate> {
        let generators: Vec<_> = layout
            .generators
            .iter()
            .zip(&tids)
            .map(|(&cpu, tid)| {
                let (frame, stop) = (&frame, &stop);
                s.spawn(move || generate(prog, &net.gen_ns, gen_ifindex, frame, cpu, tid, stop))
            })
            .collect();
        std::thread::sleep(warmup);
        let gens: Vec<i32> = tids.iter().map(|t| t.load(Ordering::Relaxed)).collect();
        let runtimes = || -> Vec<u64> {
            gens.iter()
                .chain(napi.iter().map(|t| &t.pid))
                .map(|&p| common::task_runtime_ns(p))
                .collect()
        };
        let daemon = common::find_process(&format!("{}.yaml", net.lb_ns));
        let daemon_cpu = || daemon.map(common::process_cpu_secs);
        let jiffies = || (0..CPUS).map(common::cpu_jiffies).collect::<Vec<_>>();
        let (before, rt0, d0, j0) = (net.counters(v)?, runtimes(), daemon_cpu(), jiffies());
        let t0 = Instant::now();
        std::thread::sleep(span);
        let (after, rt1, d1, j1) = (net.counters(v)?, runtimes(), daemon_cpu(), jiffies());
        let secs = t0.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let mut gen_mpps = 0.0;
        for g in generators {
            let (sent, gen_secs) = g.join().expect("generator thread")?;
            gen_mpps += sent as f64 / gen_secs / 1e6;
        }
        // CPU time over the span: the generators first, then `napi`.
        let used: Vec<u64> = rt1.iter().zip(&rt0).map(|(a, b)| a - b).collect();
        let (gen_used, napi_used) = used.split_at(gens.len());
        let share = |ns: u64| ns as f64 / 1e9 / secs;
        let mut cpus: Vec<CpuUse> = (0..CPUS).map(|_| CpuUse::default()).collect();
        for (&cpu, &ns) in layout.generators.iter().zip(gen_used) {
            cpus[cpu].generator += share(ns);
        }
        let mut queue_ns = [0u64; QUEUES];
        for (t, &ns) in napi.iter().zip(napi_used) {
            match t.lb_queue {
                Some(q) => {
                    queue_ns[q] += ns;
                    cpus[t.cpu].napi += share(ns);
                }
                None => cpus[t.cpu].sink += share(ns),
            }
        }
        for (c, (a, b)) in cpus.iter_mut().zip(j1.iter().zip(&j0)) {
            let busy = (a.0 - b.0) as f64 / (a.1 - b.1).max(1) as f64;
            c.other = (busy - c.generator - c.napi - c.sink).max(0.0);
        }
        let rx: Vec<u64> = after
            .rx
            .iter()
            .zip(&before.rx)
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        let queues = (0..QUEUES)
            .map(|q| QueueRate {
                rx_mpps: rx[q] as f64 / secs / 1e6,
                napi_cpu: layout.lb[q % layout.lb.len()],
                napi_busy: share(queue_ns[q]),
                napi_ns_per_pkt: queue_ns[q] as f64 / rx[q].max(1) as f64,
            })
            .collect();
        let (rx, napi_ns): (u64, u64) = (rx.iter().sum(), queue_ns.iter().sum());
        Ok(Rate {
            variant: v,
            layout,
            gen_mpps,
            rx_mpps: rx as f64 / secs / 1e6,
            fwd_mpps: after.fwd.saturating_sub(before.fwd) as f64 / secs / 1e6,
            napi_busy: share(napi_ns),
            napi_ns_per_pkt: napi_ns as f64 / rx.max(1) as f64,
            daemon_cpu: d0.zip(d1).map(|(a, b)| (b - a) / secs),
            queues,
            cpus,
        })
    })
}

/// Repeats BPF_PROG_RUN in live-frames mode on `cpu` until `stop`, its
/// thread id in `tid`; returns the frames sent and the seconds it ran.
fn generate(
    prog: &Xdp,
    ns: &str,
    ifindex: u32,
    frame: &[u8],
    cpu: usize,
    tid: &AtomicI32,
    stop: &AtomicBool,
) -> Result<(u64, f64)> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
    // rx_queue_index, egress_ifindex. XDP_TX leaves by ingress_ifindex.
    let ctx: Vec<u8> = [0, frame.len() as u32, 0, ifindex, 0, 0]
        .iter()
        .flat_map(|w| w.to_ne_bytes())
        .collect();
    netns::run_in(ns, || {
        common::pin(None, cpu)?;
        tid.store(nix::unistd::gettid().as_raw(), Ordering::Relaxed);
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
