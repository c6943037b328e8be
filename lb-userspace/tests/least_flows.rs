//! Load-aware balancing (`balance: least-flows`) and per-backend limits
//! (`max_flows`, `on_full`); docs/operations.md, "Least flows and
//! max_flows".
//!
//! Packet tests: SYNs through the real XDP program (BPF_PROG_TEST_RUN),
//! the flows it counts per backend as the daemon reads them.
//! Integration: the real daemon, real HTTP servers, a client holding long
//! connections and making new ones; the distributions are printed.
//!
//! Needs root and the built XDP program.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream},
    thread,
    time::{Duration, Instant},
};

use lb_common::{FlowKey, STAT_FULL_ADMIT, STAT_FULL_DROP, STAT_FULL_REDIRECT};
use lb_testbed::{
    Daemon, HttpServer, Topology, XDP_DROP, XDP_REDIRECT, XDP_TX, backend_http,
    fib_net::{CLIENT, FibNet, client_key4},
    fixtures::{SERVICES, WEB_VIP, dataplane, service},
    frames::{ack_of, syn},
    http_get_from, metric_sum, run_frame, tcp_connect_from, xdplb_bin,
};
use xdplb::{api_types::Service, dataplane::Dataplane, plan};

// --- packet tests ---

/// The fixture's `web` service (three backends, nat) with `keys` added and
/// each backend's entry extended by `backend_keys`.
fn web_with(keys: &str, backend_keys: &str) -> String {
    let head = "  - name: web\n    vip: 198.18.100.10\n    port: 80\n    protocol: tcp\n";
    assert!(SERVICES.contains(head));
    let mut yaml = SERVICES.replacen(head, &format!("{head}{keys}"), 1);
    for i in 11..=13 {
        let b = format!("{{ address: 198.18.1.{i}, port: 8080 }}");
        let with = format!("{{ address: 198.18.1.{i}, port: 8080{backend_keys} }}");
        yaml = yaml.replacen(&b, &with, 1);
    }
    yaml
}

fn key(sport: u16) -> FlowKey {
    client_key4(sport, WEB_VIP)
}

/// `web`'s backend ids, in config order (.11, .12, .13).
fn web_ids(p: &plan::Plan) -> Vec<u32> {
    p.services[0].backends.iter().map(|b| b.id).collect()
}

/// Sends a SYN from `sport`; the backend id its flow went to, or None if
/// the program dropped it.
fn open(dp: &Dataplane, sport: u16) -> Option<u32> {
    let r = run_frame(dp.program(), &syn(CLIENT, sport, WEB_VIP, 80));
    if r.verdict == XDP_DROP {
        return None;
    }
    assert!(
        r.verdict == XDP_REDIRECT || r.verdict == XDP_TX,
        "SYN from {sport}: verdict {}",
        r.verdict
    );
    Some(dp.flow(&key(sport)).unwrap().expect("a flow").0.backend)
}

/// New flows from `sports`, counted per backend id (dropped ones as None).
fn open_many(dp: &Dataplane, sports: impl Iterator<Item = u16>) -> BTreeMap<Option<u32>, usize> {
    let mut got = BTreeMap::new();
    for sport in sports {
        *got.entry(open(dp, sport)).or_default() += 1;
    }
    got
}

/// Backend .11 holds 30 flows (the others were drained while they came),
/// then all three take new flows: how many of 60 new flows go to .11.
fn new_flows_to_the_loaded_backend(balance: &str) -> usize {
    let bed = FibNet::create(11..=13).unwrap();
    bed.run_in(|| {
        let keys = format!("    balance: {balance}\n");
        let drained = web_with(&keys, "").replace(
            "{ address: 198.18.1.12, port: 8080 }\n      - { address: 198.18.1.13, port: 8080 }",
            "{ address: 198.18.1.12, port: 8080, state: drain }\n      - { address: 198.18.1.13, port: 8080, state: drain }",
        );
        let (mut dp, p) = dataplane(&drained);
        let ids = web_ids(&p);
        let loaded = open_many(&dp, 30000..30030);
        assert_eq!(loaded.get(&Some(ids[0])), Some(&30), "{loaded:?}");
        let all = plan::from_config(&xdplb::config::Config::from_yaml(&web_with(&keys, "")).unwrap())
            .unwrap();
        assert_eq!(web_ids(&all), ids);
        dp.apply(&all).unwrap();
        let got = open_many(&dp, 31000..31060);
        println!("balance {balance}: 60 new flows with .11 holding 30: {got:?} (ids {ids:?})");
        assert_eq!(got.get(&None), None, "none dropped");
        Ok(got.get(&Some(ids[0])).copied().unwrap_or(0))
    })
    .unwrap()
}

#[test]
fn least_flows_steers_new_flows_away_from_a_loaded_backend_and_maglev_does_not() {
    // Maglev: a third, whatever the load. Least flows: .11 only when both
    // draws (and the redraw) give it, 1 in 27.
    let maglev = new_flows_to_the_loaded_backend("maglev");
    let least = new_flows_to_the_loaded_backend("least-flows");
    assert!(maglev >= 10, "maglev gave .11 only {maglev} of 60");
    assert!(least <= 8, "least-flows gave .11 {least} of 60");
}

#[test]
fn a_full_backend_passes_new_flows_on_and_on_full_decides_when_all_are() {
    let bed = FibNet::create(11..=13).unwrap();
    bed.run_in(|| {
        let (dp, p) = dataplane(&web_with("", ", max_flows: 2"));
        let ids = web_ids(&p);
        let got = open_many(&dp, 32000..32006);
        let each: Vec<_> = ids.iter().map(|id| got.get(&Some(*id)).copied()).collect();
        assert_eq!(each, [Some(2); 3], "two flows each: {got:?}");
        let c = dp.counters(&[], &ids).unwrap();
        let redirected = c.global[STAT_FULL_REDIRECT as usize];
        let refused: u64 = ids.iter().map(|id| c.backends[id].full).sum();
        assert_eq!(refused, redirected, "every refusal went elsewhere");
        for id in &ids {
            assert_eq!(c.loads[id].flows(), 2);
        }

        // All full: dropped and counted.
        assert_eq!(open(&dp, 32100), None, "a 7th flow is dropped");
        let c = dp.counters(&[], &ids).unwrap();
        assert_eq!(c.global[STAT_FULL_DROP as usize], 1);
        assert_eq!(c.global[STAT_FULL_ADMIT as usize], 0);

        // A client's RST closes flow 32000: its backend has room at once.
        let freed = dp.flow(&key(32000)).unwrap().unwrap().0.backend;
        let mut rst = ack_of(CLIENT, 32000, WEB_VIP, 80, 1);
        rst[14 + 20 + 13] = 0x14; // RST|ACK
        run_frame(dp.program(), &rst);
        let c = dp.counters(&[], &ids).unwrap();
        assert_eq!(c.loads[&freed].closed, 1);
        assert_eq!(c.loads[&freed].flows(), 1);
        assert_eq!(open(&dp, 32101), Some(freed), "the freed backend takes it");
        assert_eq!(open(&dp, 32102), None, "and then all are full again");
        Ok(())
    })
    .unwrap();

    // `on_full: admit`: the flow goes to the backend drawn all the same.
    let bed = FibNet::create(11..=13).unwrap();
    bed.run_in(|| {
        let (dp, p) = dataplane(&web_with("    on_full: admit\n", ", max_flows: 2"));
        let ids = web_ids(&p);
        open_many(&dp, 33000..33006);
        let admitted = open(&dp, 33100).expect("admitted over the limit");
        let c = dp.counters(&[], &ids).unwrap();
        assert_eq!(c.global[STAT_FULL_ADMIT as usize], 1);
        assert_eq!(c.global[STAT_FULL_DROP as usize], 0);
        assert_eq!(c.loads[&admitted].flows(), 3);
        Ok(())
    })
    .unwrap();
}

#[test]
fn least_flows_with_a_limit_takes_the_other_choice_then_any_backend_with_room() {
    let bed = FibNet::create(11..=13).unwrap();
    bed.run_in(|| {
        // Only .11 has a limit, of 1: once it holds a flow, every flow
        // drawn for it goes to the other choice or, with both draws .11,
        // to the lightest backend with room.
        let yaml = web_with("    balance: least-flows\n", "").replacen(
            "{ address: 198.18.1.11, port: 8080 }",
            "{ address: 198.18.1.11, port: 8080, max_flows: 1 }",
            1,
        );
        let (dp, p) = dataplane(&yaml);
        let ids = web_ids(&p);
        let got = open_many(&dp, 34000..34090);
        assert_eq!(got.get(&Some(ids[0])), Some(&1), "{got:?}");
        assert_eq!(got.get(&None), None, "none dropped: {got:?}");
        // Least flows keeps the other two within a few flows of each other.
        let (b, c) = (got[&Some(ids[1])], got[&Some(ids[2])]);
        assert!(b.abs_diff(c) <= 4, "{got:?}");
        Ok(())
    })
    .unwrap();
}

// --- integration ---

const VIP: &str = "198.18.100.10:80";
const CONNECT: Duration = Duration::from_secs(2);

fn vip() -> SocketAddr {
    VIP.parse().unwrap()
}

fn name(i: usize) -> String {
    format!("backend-{i}")
}

/// `web` over backends 1..=n with `keys`, each backend's entry extended by
/// `backend_keys(i)`.
fn config(
    topo: &Topology,
    n: usize,
    keys: &[&str],
    backend_keys: impl Fn(usize) -> String,
) -> String {
    let list: Vec<String> = (1..=n)
        .map(|i| {
            let b = backend_http(i);
            format!(
                "{{ address: \"{}\", port: {}{} }}",
                b.ip(),
                b.port(),
                backend_keys(i)
            )
        })
        .collect();
    let mut all = vec!["protocol: tcp"];
    all.extend(keys);
    topo.daemon_config(
        "snat: { ipv4: 198.18.1.1, ports: 20000-29999 }\n\
         limits: { max_services: 8, max_backends: 16, maglev_table_size: 65537, flow_table_size: 65536 }\n",
        &[service("web", "198.18.100.10", 80, &all, &list)],
    )
}

struct Bed {
    topo: Topology,
    _servers: Vec<HttpServer>,
    daemon: Daemon,
}

impl Bed {
    fn new(n: usize, config: impl Fn(&Topology) -> String) -> Bed {
        let topo = Topology::create(n).expect("topology");
        let servers = (1..=n)
            .map(|i| HttpServer::start(&topo.backend_ns(i), backend_http(i), &name(i)).unwrap())
            .collect();
        let daemon = topo.start_daemon_serving(xdplb_bin!(), &config(&topo), vip());
        Bed {
            topo,
            _servers: servers,
            daemon,
        }
    }

    /// Rewrites the config and reloads it through the API (done when it
    /// answers, unlike SIGHUP).
    fn reload(&self, yaml: &str) {
        std::fs::write(self.daemon.config_path(), yaml).unwrap();
        self.topo.api(|c| c.reload()).expect("reload");
    }

    fn service(&self) -> Service {
        self.topo.api(|c| c.services()).unwrap().remove(0)
    }

    /// A connection from local port `port` held open, and the backend that
    /// answered a request on it (keep-alive).
    fn hold(&self, port: u16) -> anyhow::Result<(TcpStream, String)> {
        let mut s = tcp_connect_from(&self.topo.client_ns(), port, vip(), CONNECT)?;
        s.set_read_timeout(Some(CONNECT))?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: keep-alive\r\n\r\n")?;
        let mut r = BufReader::new(s.try_clone()?);
        let mut backend = None;
        loop {
            let mut line = String::new();
            r.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(v) = line.strip_prefix("X-Backend: ") {
                backend = Some(v.to_owned());
            }
        }
        let mut body = String::new();
        r.read_line(&mut body)?;
        Ok((s, backend.unwrap_or_default()))
    }

    /// New short connections from local ports `ports`, counted by the
    /// backend that answered.
    fn requests(&self, ports: std::ops::Range<u16>) -> BTreeMap<String, usize> {
        let mut got = BTreeMap::new();
        for port in ports {
            let (status, body) = http_get_from(&self.topo.client_ns(), port, vip(), "/", CONNECT)
                .unwrap_or_else(|e| panic!("request from port {port}: {e:#}"));
            assert_eq!(status, 200);
            *got.entry(body.trim().to_owned()).or_default() += 1;
        }
        got
    }
}

fn share(got: &BTreeMap<String, usize>, i: usize) -> f64 {
    let total: usize = got.values().sum();
    got.get(&name(i)).copied().unwrap_or(0) as f64 / total.max(1) as f64
}

#[test]
fn new_connections_avoid_a_backend_holding_long_ones_under_least_flows_only() {
    // Backends 2 and 3 drained while backend 1 takes 40 long connections.
    let drained = |i: usize| {
        if i == 1 {
            String::new()
        } else {
            ", state: drain".into()
        }
    };
    let bed = Bed::new(3, |t| config(t, 3, &[], drained));
    let held: Vec<(TcpStream, String)> = (40000..40040)
        .map(|port| bed.hold(port).expect("a long connection"))
        .collect();
    assert!(held.iter().all(|(_, b)| *b == name(1)));

    let mut shares = Vec::new();
    for (balance, ports) in [("maglev", 41000..41120), ("least-flows", 42000..42120)] {
        let keys = format!("balance: {balance}");
        bed.reload(&config(&bed.topo, 3, &[&keys], |_| String::new()));
        let got = bed.requests(ports);
        println!("balance {balance}: 120 new connections while backend-1 holds 40: {got:?}");
        shares.push(share(&got, 1));
    }
    // Between the daemon's sweeps (every 5 s) the gauge is the program's
    // running count, which may be off by a flow whose two FINs two CPUs
    // saw at once; the next sweep counts exactly.
    let deadline = Instant::now() + Duration::from_secs(12);
    let active = loop {
        let active: Vec<u64> = (bed.service().backends.iter())
            .map(|b| b.signals.active_flows)
            .collect();
        if active[0] >= 40 || Instant::now() > deadline {
            break active;
        }
        thread::sleep(Duration::from_millis(500));
    };
    println!("active flows per backend after: {active:?}");
    assert!(
        active[0] >= 40,
        "the long connections are counted by the next sweep: {active:?}"
    );
    let [maglev, least] = shares[..] else {
        unreachable!()
    };
    assert!(maglev > 0.2, "maglev: backend-1 got {:.0}%", maglev * 100.0);
    assert!(
        least < 0.1,
        "least-flows: backend-1 got {:.0}%",
        least * 100.0
    );
    drop(held);
}

#[test]
fn max_flows_caps_each_backend_and_on_full_drops_or_admits_the_rest() {
    let limit = |_| ", max_flows: 3".to_string();
    let bed = Bed::new(2, |t| config(t, 2, &[], limit));
    // Health probes of wait_answering are closed: wait for the sweep to
    // count them out (closing flows leave `flows` at once anyway).
    let mut held: Vec<(TcpStream, String)> = (43000..43006)
        .map(|port| bed.hold(port).expect("room for six"))
        .collect();
    let on =
        |i: usize, held: &[(TcpStream, String)]| held.iter().filter(|(_, b)| *b == name(i)).count();
    assert_eq!((on(1, &held), on(2, &held)), (3, 3));
    let web = bed.service();
    for b in &web.backends {
        assert_eq!(b.max_flows, Some(3));
        assert_eq!(b.signals.active_flows, 3, "{}", b.address);
    }

    // Both full: a 7th connection's SYNs are dropped.
    let err = bed.hold(43100).expect_err("no room");
    println!("a 7th connection with both backends full: {err:#}");
    let m = bed.daemon.metrics().unwrap();
    assert!(
        metric_sum(
            &m,
            "xdplb_dataplane_events_total",
            &[("event", "full_drop")]
        ) >= 1.0,
        "{m}"
    );
    assert!(metric_sum(&m, "xdplb_backend_full_total", &[]) >= 1.0);
    assert_eq!(metric_sum(&m, "xdplb_backend_max_flows", &[]), 6.0);

    // One closes: its backend takes the next one.
    let i = held.iter().position(|(_, b)| *b == name(1)).unwrap();
    drop(held.remove(i));
    thread::sleep(Duration::from_millis(200));
    let (s, b) = bed.hold(43101).expect("room again");
    assert_eq!(b, name(1));
    held.push((s, b));

    // `on_full: admit`: over the limit rather than refused.
    bed.reload(&config(&bed.topo, 2, &["on_full: admit"], limit));
    let (_s, b) = bed.hold(43102).expect("admitted");
    println!("admitted over the limit by {b}");
    let m = bed.daemon.metrics().unwrap();
    assert!(
        metric_sum(
            &m,
            "xdplb_dataplane_events_total",
            &[("event", "full_admit")]
        ) >= 1.0
    );
}
