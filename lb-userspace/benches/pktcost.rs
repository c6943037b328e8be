//! ns/packet of each path through the XDP program, from BPF_PROG_TEST_RUN,
//! beside reference programs measured in the same run (docs/design.md section 8),
//! for each mode and address family.
//!
//! Every run uses `repeat = 1`: with `repeat > 1` the kernel does not reset
//! the packet, so a rewritten frame would take another path on its second
//! run. Two clocks per figure:
//! - `test_run`: the kernel's duration of the run, trimmed mean of many runs;
//!   it includes the fixed cost of a test run (in the empty program's figure
//!   too, so "minus empty" is the program's own work);
//! - `bpf_stats`: the kernel's per-program run time (BPF_ENABLE_STATS), which
//!   times only the program itself, mean over the same runs.
//!
//! Paths that leave the packet as they found it (non-VIP pass, dsr
//! established: only the destination MAC changes, to the same value) are
//! also timed over many repeats in one run, warm caches and no per-run
//! overhead. Needs root and the built program.
//!
//! `cargo xtask bench` runs this; `-- --quick` makes every piece brief.
//! `cargo xtask bench --ab REV` compares this build with REV's (`ab.rs`).

#[path = "pktcost/ab.rs"]
mod ab;
mod common;
#[path = "pktcost/frames.rs"]
mod frames;

use aya::{
    Ebpf,
    programs::{TestRun, TestRunOptions, Xdp},
};
use lb_testbed::{XDP_PASS, XDP_REDIRECT, XDP_TX, fib_net::FibNet, fixtures::dataplane, run_frame};
use serde_json::json;
use xdplb::dataplane::BASELINES;

use frames::{Family, establish, reply_to, tcp};
use lb_common::FLAG_SKIP_FIB;

const CONFIG: &str = r#"
interfaces: [lbc, lbb]
snat: { ipv4: 198.18.1.1, ipv6: "2001:db8:1::1", ports: 1024-65535 }  # room for every new flow below
limits: { max_services: 8, max_backends: 32, maglev_table_size: 65537, flow_table_size: 1048576 }
services:
  - { name: nat4, vip: 198.18.100.10, port: 80, protocol: tcp, mode: nat, backends: [ { address: 198.18.1.11, port: 8080 }, { address: 198.18.1.12, port: 8080 }, { address: 198.18.1.13, port: 8080 } ] }
  - { name: dsr4, vip: 198.18.100.20, port: 80, protocol: tcp, mode: dsr, backends: [ { address: 198.18.1.11, port: 80 }, { address: 198.18.1.12, port: 80 }, { address: 198.18.1.13, port: 80 } ] }
  - { name: nat6, vip: "2001:db8:100::10", port: 80, protocol: tcp, mode: nat, backends: [ { address: "2001:db8:1::11", port: 8080 }, { address: "2001:db8:1::12", port: 8080 }, { address: "2001:db8:1::13", port: 8080 } ] }
  - { name: dsr6, vip: "2001:db8:100::20", port: 80, protocol: tcp, mode: dsr, backends: [ { address: "2001:db8:1::11", port: 80 }, { address: "2001:db8:1::12", port: 80 }, { address: "2001:db8:1::13", port: 80 } ] }
  - { name: tun4, vip: 198.18.100.40, port: 80, protocol: tcp, mode: tunnel, backends: [ { address: 198.18.1.11, port: 80 }, { address: 198.18.1.12, port: 80 }, { address: 198.18.1.13, port: 80 } ] }
  - { name: tun6, vip: "2001:db8:100::40", port: 80, protocol: tcp, mode: tunnel, backends: [ { address: "2001:db8:1::11", port: 80 }, { address: "2001:db8:1::12", port: 80 }, { address: "2001:db8:1::13", port: 80 } ] }
  - { name: lf4, vip: 198.18.100.11, port: 80, protocol: tcp, mode: nat, balance: least-flows, backends: [ { address: 198.18.1.11, port: 8081, max_flows: 10000000 }, { address: 198.18.1.12, port: 8081, max_flows: 10000000 }, { address: 198.18.1.13, port: 8081, max_flows: 10000000 } ] }
  - { name: gue4, vip: 198.18.100.42, port: 80, protocol: tcp, mode: tunnel, encap: gue, backends: [ { address: 198.18.1.11, port: 80 }, { address: 198.18.1.12, port: 80 }, { address: 198.18.1.13, port: 80 } ] }
"#;

/// The services of `CONFIG` each path goes to: family, mode, VIP number.
const SERVICE_PATHS: [(Family, &str, u16); 7] = [
    (Family::V4, "nat", 10),
    (Family::V6, "nat", 0x10),
    (Family::V4, "dsr", 20),
    (Family::V6, "dsr", 0x20),
    (Family::V4, "tunnel ipip", 40),
    (Family::V6, "tunnel ip6ip6", 0x40),
    (Family::V4, "tunnel gue", 42),
];

/// One measured path.
struct Row {
    path: String,
    /// Trimmed mean of the test_run durations.
    ns: f64,
    /// Mean program run time from BPF stats.
    stats_ns: f64,
}

struct Prog<'a> {
    xdp: &'a Xdp,
}

impl Prog<'_> {
    /// One run of `frame`; returns (verdict, ns, output frame).
    fn run_once(&self, frame: &[u8]) -> (u32, u64, Vec<u8>) {
        let r = run_frame(self.xdp, frame);
        (r.verdict, r.duration.as_nanos() as u64, r.out)
    }

    /// (run time ns, run count) so far, from BPF stats.
    fn stats(&self) -> (u64, u64) {
        let info = self.xdp.info().expect("program info");
        (info.run_time().as_nanos() as u64, info.run_count())
    }

    /// Runs each frame once; both clocks.
    fn cost(&self, what: &str, frames: &[Vec<u8>], expect: u32) -> Row {
        let before = self.stats();
        let durations: Vec<u64> = frames
            .iter()
            .map(|f| {
                let (verdict, ns, _) = self.run_once(f);
                assert_eq!(verdict, expect, "unexpected verdict for {what}");
                ns
            })
            .collect();
        let after = self.stats();
        Row {
            path: what.to_owned(),
            ns: common::trimmed_mean(durations),
            stats_ns: (after.0 - before.0) as f64 / (after.1 - before.1).max(1) as f64,
        }
    }

    /// Mean ns per packet over `repeat` repeats in one run, `runs` times.
    fn cost_repeated(&self, what: &str, frame: &[u8], repeat: u32, runs: usize) -> Row {
        let before = self.stats();
        let total: f64 = (0..runs)
            .map(|_| {
                self.xdp
                    .test_run(TestRunOptions {
                        data_in: Some(frame),
                        repeat,
                        ..Default::default()
                    })
                    .expect("BPF_PROG_TEST_RUN")
                    .duration
                    .as_nanos() as f64
            })
            .sum();
        let after = self.stats();
        Row {
            path: what.to_owned(),
            ns: total / runs as f64,
            stats_ns: (after.0 - before.0) as f64 / (after.1 - before.1).max(1) as f64,
        }
    }
}

fn main() {
    if let Ok(baseline) = std::env::var("PKTCOST_BASELINE") {
        let net = FibNet::create(11..=13).expect("namespace");
        let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS");
        net.run_in(|| {
            ab::compare(&baseline);
            Ok(())
        })
        .unwrap();
        return;
    }
    let quick = common::quick();
    let runs = if quick { 2_000 } else { 50_000 };
    let repeat: u32 = if quick { 1_000 } else { 10_000 };
    let net = FibNet::create(11..=13).expect("namespace");
    // Stats are on while this fd is open (and only then).
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS");
    let (rows, repeated) = net.run_in(|| Ok(measure(runs, repeat))).unwrap();
    drop(net);

    let floor = |rows: &[Row]| {
        rows.iter()
            .find(|r| r.path == "empty program")
            .map(|r| (r.ns, r.stats_ns))
            .unwrap()
    };
    let (f_ns, f_stats) = floor(&rows);
    println!("\nns/packet, BPF_PROG_TEST_RUN, repeat=1, {runs} runs each");
    println!(
        "{:<34} {:>10} {:>12} {:>11} {:>12}",
        "path", "test_run", "minus empty", "bpf_stats", "minus empty"
    );
    for r in &rows {
        println!(
            "{:<34} {:>10.1} {:>12.1} {:>11.1} {:>12.1}",
            r.path,
            r.ns,
            r.ns - f_ns,
            r.stats_ns,
            r.stats_ns - f_stats
        );
    }
    println!("\nsame-path programs, repeat={repeat} per run (warm)");
    for r in &repeated {
        println!(
            "{:<34} {:>10.2} {:>12} {:>11.2}",
            r.path, r.ns, "", r.stats_ns
        );
    }
    let to_json = |rows: &[Row]| -> Vec<serde_json::Value> {
        rows.iter()
            .map(|r| json!({"path": r.path, "test_run_ns": r.ns, "bpf_stats_ns": r.stats_ns}))
            .collect()
    };
    common::emit(
        "pktcost",
        json!({
            "runs": runs,
            "repeat": repeat,
            "rows": to_json(&rows),
            "repeated": to_json(&repeated),
        }),
    );
}

fn measure(runs: usize, repeat: u32) -> (Vec<Row>, Vec<Row>) {
    let mut base = Ebpf::load(BASELINES).expect("baselines object");
    for name in ["empty", "macswap"] {
        let p: &mut Xdp = base.program_mut(name).unwrap().try_into().unwrap();
        p.load().unwrap();
    }
    let empty = Prog {
        xdp: base.program("empty").unwrap().try_into().unwrap(),
    };
    let macswap = Prog {
        xdp: base.program("macswap").unwrap().try_into().unwrap(),
    };

    let (mut dp, plan) = dataplane(CONFIG);
    let (mut nofib, mut nofib_repeated) = (Vec::new(), Vec::new());
    // Evidence for where the time goes: the established flow with the FIB
    // lookup skipped (FLAG_SKIP_FIB: XDP_TX, MACs untouched; trace's mode).
    {
        let lb = Prog { xdp: dp.program() };
        let run = |f: &[u8]| {
            let (v, _, out) = lb.run_once(f);
            (v, out)
        };
        establish(run, Family::V4, 0, (Family::V4.vip(20), 80), false);
        establish(run, Family::V4, 0, (Family::V4.vip(10), 80), true);
    }
    let mut skip = plan.clone();
    skip.globals.flags |= FLAG_SKIP_FIB;
    dp.apply(&skip).unwrap();
    {
        let lb = Prog { xdp: dp.program() };
        let same = |f: &[u8]| std::iter::repeat_n(f.to_vec(), runs).collect::<Vec<_>>();
        let dsr = tcp(Family::V4, 0, Family::V4.vip(20), 80);
        let nat = tcp(Family::V4, 0, Family::V4.vip(10), 80);
        nofib.push(lb.cost("xdplb nat IPv4: established, no FIB", &same(&nat), XDP_TX));
        nofib_repeated.push(lb.cost_repeated(
            "xdplb dsr IPv4: established, no FIB",
            &dsr,
            repeat,
            20,
        ));
    }
    dp.apply(&plan).unwrap();
    let lb = Prog { xdp: dp.program() };

    let v4 = Family::V4;
    let any = tcp(v4, 0, v4.lb_addr(), 22);
    let same = |f: &[u8]| std::iter::repeat_n(f.to_vec(), runs).collect::<Vec<_>>();
    let mut rows = Vec::from([
        empty.cost("empty program", &same(&any), XDP_PASS),
        macswap.cost("MAC-swap XDP_TX", &same(&any), XDP_TX),
        lb.cost("xdplb: non-VIP pass", &same(&any), XDP_PASS),
    ]);
    let mut repeated = Vec::from([
        empty.cost_repeated("empty program", &any, repeat, 20),
        macswap.cost_repeated("MAC-swap XDP_TX", &any, repeat, 20),
        lb.cost_repeated("xdplb: non-VIP pass", &any, repeat, 20),
    ]);
    for (family, mode, n) in SERVICE_PATHS {
        let vip = family.vip(n);
        let tag = format!("{mode} {}", family.name());
        // New flows: a distinct 5-tuple each.
        let new_flows: Vec<Vec<u8>> = (0..runs)
            .map(|i| tcp(family, 1 + i as u32, vip, 80))
            .collect();
        rows.push(lb.cost(&format!("xdplb {tag}: new flow"), &new_flows, XDP_REDIRECT));
        if tag == "nat IPv4" {
            // Right after, as the flow tables fill: the same under
            // `balance: least-flows` with limits (never reached): two ring
            // draws, their loads and limits read. (Its backends listen on
            // another port, so its SNAT ports do not collide with the
            // flows just made.)
            let least: Vec<Vec<u8>> = (0..runs)
                .map(|i| tcp(family, 1 + i as u32, family.vip(11), 80))
                .collect();
            rows.push(lb.cost(
                "xdplb nat IPv4, least-flows with max_flows: new flow",
                &least,
                XDP_REDIRECT,
            ));
        }
        let established = tcp(family, 0, vip, 80);
        let run = |f: &[u8]| {
            let (v, _, out) = lb.run_once(f);
            (v, out)
        };
        let (_, out) = establish(run, family, 0, (vip, 80), mode == "nat");
        rows.push(lb.cost(
            &format!("xdplb {tag}: established flow"),
            &same(&established),
            XDP_REDIRECT,
        ));
        if mode == "nat" {
            let reply = reply_to(family, &out);
            rows.push(lb.cost(
                &format!("xdplb {tag}: nat reply"),
                &same(&reply),
                XDP_REDIRECT,
            ));
        } else if mode == "dsr" {
            // Only the destination MAC changes, to the same value each time.
            repeated.push(lb.cost_repeated(
                &format!("xdplb {tag}: established flow"),
                &established,
                repeat,
                20,
            ));
        }
    }
    rows.extend(nofib);
    repeated.extend(nofib_repeated);
    (rows, repeated)
}
