//! Two builds of the program side by side (`PKTCOST_BASELINE=FILE`, set by
//! `cargo xtask bench --ab REV`): the baseline build from FILE ("A") and
//! this build ("B"), each loaded with its own maps, are run on the same
//! frames in alternating turns (which goes first alternates too), so both
//! see the same machine noise. The figure per path is the median over the
//! rounds of each build's mean program time (bpf_stats); the verdict is
//! the median of the per-round B/A ratios. Only code changes compare this
//! way: the baseline's maps must have this build's layout.

use lb_testbed::{XDP_PASS, XDP_REDIRECT, fixtures::dataplane_of};
use serde_json::json;
use xdplb::dataplane::{Dataplane, PROGRAM};

use super::{
    CONFIG, Prog, SERVICE_PATHS,
    frames::{Family, establish, reply_to, tcp},
};

/// Runs per path, per build and round; rounds.
const RUNS: usize = 4_000;
const ROUNDS: usize = 15;

/// A path: its name, and its frames for round `r` (new flows: fresh ones).
struct Path {
    name: String,
    frames: Box<dyn Fn(usize) -> Vec<Vec<u8>>>,
    verdict: u32,
}

pub fn compare(baseline: &str) {
    let object = std::fs::read(baseline)
        .unwrap_or_else(|e| panic!("PKTCOST_BASELINE={baseline}: cannot read it: {e}"));
    let a = dataplane_of(&object, CONFIG).0;
    let b = dataplane_of(PROGRAM, CONFIG).0;
    let paths = paths(&[&a, &b]);
    let (pa, pb) = (Prog { xdp: a.program() }, Prog { xdp: b.program() });

    let mut per_path = Vec::new();
    for p in &paths {
        let (mut ta, mut tb, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..ROUNDS {
            let frames = (p.frames)(r);
            let (x, y) = if r % 2 == 0 {
                let x = pa.cost(&p.name, &frames, p.verdict);
                (x, pb.cost(&p.name, &frames, p.verdict))
            } else {
                let y = pb.cost(&p.name, &frames, p.verdict);
                (pa.cost(&p.name, &frames, p.verdict), y)
            };
            ratios.push(y.stats_ns / x.stats_ns);
            ta.push(x.stats_ns);
            tb.push(y.stats_ns);
        }
        per_path.push((p.name.clone(), median(ta), median(tb), median(ratios)));
    }
    println!(
        "\nA/B, bpf_stats ns (median of {ROUNDS} rounds x {RUNS} runs); A = {baseline}, B = this build"
    );
    println!("{:<44} {:>9} {:>9} {:>7}", "path", "A", "B", "B/A");
    for (name, a, b, ratio) in &per_path {
        println!("{name:<44} {a:>9.1} {b:>9.1} {ratio:>7.3}");
    }
    let rows: Vec<_> = per_path
        .iter()
        .map(|(name, a, b, ratio)| json!({"path": name, "a_ns": a, "b_ns": b, "ratio": ratio}))
        .collect();
    println!(
        "BENCH_RESULT {}",
        json!({"bench": "pktcost_ab", "baseline": baseline, "rounds": ROUNDS, "runs": RUNS, "rows": rows})
    );
}

/// The paths of the main table, their flows established in every build.
fn paths(dps: &[&Dataplane]) -> Vec<Path> {
    let v4 = Family::V4;
    let any = tcp(v4, 0, v4.lb_addr(), 22);
    let mut paths = vec![Path {
        name: "non-VIP pass".into(),
        frames: Box::new(move |_| vec![any.clone(); RUNS]),
        verdict: XDP_PASS,
    }];
    for (family, mode, n) in SERVICE_PATHS {
        let vip = family.vip(n);
        let tag = format!("{mode} {}", family.name());
        let mut reply = None;
        for dp in dps {
            let lb = Prog { xdp: dp.program() };
            let run = |f: &[u8]| {
                let (v, _, out) = lb.run_once(f);
                (v, out)
            };
            let (_, out) = establish(run, family, 0, (vip, 80), mode == "nat");
            // The builds pick the same SNAT port: the same reply serves both.
            if mode == "nat" {
                reply = Some(reply_to(family, &out));
            }
        }
        let established = tcp(family, 0, vip, 80);
        paths.push(Path {
            name: format!("{tag}: established flow"),
            frames: Box::new(move |_| vec![established.clone(); RUNS]),
            verdict: XDP_REDIRECT,
        });
        if mode == "nat" {
            let reply = reply.expect("a reply");
            paths.push(Path {
                name: format!("{tag}: nat reply"),
                frames: Box::new(move |_| vec![reply.clone(); RUNS]),
                verdict: XDP_REDIRECT,
            });
        }
        if family == Family::V4 {
            paths.push(Path {
                name: format!("{tag}: new flow"),
                frames: Box::new(move |r| {
                    (0..RUNS)
                        .map(|i| tcp(family, 1 + (r * RUNS + i) as u32, vip, 80))
                        .collect()
                }),
                verdict: XDP_REDIRECT,
            });
        }
    }
    paths
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
