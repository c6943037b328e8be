//! ns/packet of each path through the XDP program, from BPF_PROG_TEST_RUN,
//! beside reference programs measured in the same run (design.md section 8).
//!
//! Every run uses `repeat = 1`: with `repeat > 1` the kernel does not reset
//! the packet, so a rewritten frame would take another path on its second
//! run. Each figure is the trimmed mean of many runs; the fixed cost of a test run
//! is in the empty program's figure too, so "minus empty" is the program's
//! own work. Needs root and the built program.
//!
//! `cargo xtask bench` runs this; `-- --quick` makes every piece brief.

use std::net::Ipv4Addr;

use aya::{
    Ebpf,
    programs::{TestRun, TestRunOptions, Xdp},
};
use etherparse::PacketBuilder;
use xdplb::{
    config::Config,
    dataplane::{BASELINES, Dataplane},
    plan,
    testbed::{
        fib_net::{CLIENT, CLIENT_MAC, FibNet, LBB_MAC, LBC_MAC, backend_mac},
        netns,
    },
};

const CONFIG: &str = r#"
interfaces: [lbc, lbb]
snat: { ipv4: 198.18.1.1, ports: 1024-65535 }  # room for every new flow below
limits: { max_services: 4, max_backends: 16, maglev_table_size: 65537, flow_table_size: 1048576 }
services:
  - name: web
    vip: 198.18.100.10
    port: 80
    protocol: tcp
    backends:
      - { address: 198.18.1.11, port: 8080 }
      - { address: 198.18.1.12, port: 8080 }
      - { address: 198.18.1.13, port: 8080 }
"#;

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);

fn syn(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LBC_MAC)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1000, 64240)
        .ack(1)
        .write(&mut v, &[0u8; 64])
        .unwrap();
    v
}

/// One run of `frame`; returns (verdict, ns, output frame).
fn run_once(prog: &Xdp, frame: &[u8]) -> (u32, u64, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 256];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    (r.return_value, r.duration.as_nanos() as u64, out)
}

/// Mean of the middle 80%: finer than the median (durations are whole ns)
/// and robust to the odd interrupt.
fn trimmed_mean(mut v: Vec<u64>) -> f64 {
    v.sort_unstable();
    let cut = v.len() / 10;
    let mid = &v[cut..v.len() - cut];
    mid.iter().sum::<u64>() as f64 / mid.len() as f64
}

/// ns per run of running each frame once (frames may repeat).
fn cost<'a>(what: &str, prog: &Xdp, frames: impl Iterator<Item = &'a [u8]>, expect: u32) -> f64 {
    trimmed_mean(
        frames
            .map(|f| {
                let (verdict, ns, _) = run_once(prog, f);
                assert_eq!(verdict, expect, "unexpected verdict for {what}");
                ns
            })
            .collect(),
    )
}

struct Row {
    path: &'static str,
    ns: f64,
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runs = if quick { 2_000 } else { 50_000 };
    let net = FibNet::create(11..=13).expect("namespace");
    let (rows, repeated) = netns::run_in(&net.ns.clone(), || Ok(measure(runs))).unwrap();
    drop(net);

    let floor = rows.iter().find(|r| r.path == "empty program").unwrap().ns;
    println!("\nns/packet, BPF_PROG_TEST_RUN, repeat=1, trimmed mean of {runs} runs each");
    println!("{:<28} {:>10} {:>14}", "path", "ns/pkt", "minus empty");
    for r in &rows {
        println!("{:<28} {:>10.1} {:>14.1}", r.path, r.ns, r.ns - floor);
    }
    // At repeat=1 the timer's own cost (tens of ns, noisy) hides differences
    // of a few ns; programs that leave the packet as they found it (or take
    // the same path again) can be timed over many repeats in one run.
    println!("\nsame-path programs, repeat={REPEAT} per run, mean of {REPEATED_RUNS} runs");
    for r in &repeated {
        println!("{:<28} {:>10.2}", r.path, r.ns);
    }
}

const REPEAT: u32 = 10_000;
const REPEATED_RUNS: usize = 20;

/// Mean ns per packet of `frame` over `REPEAT` repeats, `REPEATED_RUNS` times.
fn cost_repeated(prog: &Xdp, frame: &[u8]) -> f64 {
    let total: f64 = (0..REPEATED_RUNS)
        .map(|_| {
            prog.test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: REPEAT,
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN")
            .duration
            .as_nanos() as f64
        })
        .sum();
    total / REPEATED_RUNS as f64
}

fn measure(runs: usize) -> (Vec<Row>, Vec<Row>) {
    let mut base = Ebpf::load(BASELINES).expect("baselines object");
    for name in ["empty", "macswap"] {
        let p: &mut Xdp = base.program_mut(name).unwrap().try_into().unwrap();
        p.load().unwrap();
    }
    let prog = |name: &str| -> &Xdp { base.program(name).unwrap().try_into().unwrap() };

    let cfg = Config::from_yaml(CONFIG).unwrap();
    let mut dp = Dataplane::load(&cfg.limits, None).expect("program loads");
    dp.apply(&plan::from_config(&cfg).unwrap()).unwrap();
    let lb = dp.program();

    let established = syn(CLIENT, 40000, VIP, 80);
    let (_, _, out) = run_once(lb, &established);
    let backend = Ipv4Addr::new(out[30], out[31], out[32], out[33]);
    let snat_port = u16::from_be_bytes([out[34], out[35]]);
    let mut reply = Vec::new();
    PacketBuilder::ethernet2(backend_mac(backend), LBB_MAC)
        .ipv4(backend.octets(), [198, 18, 1, 1], 64)
        .tcp(8080, snat_port, 5000, 64240)
        .ack(1001)
        .write(&mut reply, &[0u8; 64])
        .unwrap();
    let not_vip = syn(CLIENT, 40000, Ipv4Addr::new(198, 18, 0, 1), 22);
    // New flows: a distinct 5-tuple each (60000 ports per client address).
    let new_flows: Vec<Vec<u8>> = (0..runs)
        .map(|i| {
            let src = Ipv4Addr::new(198, 18, 2 + (i / 60_000) as u8, 1);
            syn(src, 1024 + (i % 60_000) as u16, VIP, 80)
        })
        .collect();

    let same = |f: &Vec<u8>| std::iter::repeat_n(f.clone(), runs).collect::<Vec<_>>();
    let rows = vec![
        Row {
            path: "empty program",
            ns: cost(
                "empty program",
                prog("empty"),
                same(&established).iter().map(|f| &f[..]),
                2,
            ),
        },
        Row {
            path: "MAC-swap XDP_TX",
            ns: cost(
                "MAC-swap XDP_TX",
                prog("macswap"),
                same(&established).iter().map(|f| &f[..]),
                3,
            ),
        },
        Row {
            path: "xdplb: non-VIP pass",
            ns: cost(
                "xdplb: non-VIP pass",
                lb,
                same(&not_vip).iter().map(|f| &f[..]),
                2,
            ),
        },
        Row {
            path: "xdplb: new flow",
            ns: cost("xdplb: new flow", lb, new_flows.iter().map(|f| &f[..]), 4),
        },
        Row {
            path: "xdplb: established flow",
            ns: cost(
                "xdplb: established flow",
                lb,
                same(&established).iter().map(|f| &f[..]),
                4,
            ),
        },
        Row {
            path: "xdplb: nat reply",
            ns: cost(
                "xdplb: nat reply",
                lb,
                same(&reply).iter().map(|f| &f[..]),
                4,
            ),
        },
    ];
    // The MAC swap, run twice, is where it started; a non-VIP packet stays one.
    let repeated = vec![
        Row {
            path: "empty program",
            ns: cost_repeated(prog("empty"), &established),
        },
        Row {
            path: "MAC-swap XDP_TX",
            ns: cost_repeated(prog("macswap"), &established),
        },
        Row {
            path: "xdplb: non-VIP pass",
            ns: cost_repeated(lb, &not_vip),
        },
    ];
    (rows, repeated)
}
