//! Slow start (a service's `slow_start`, HAProxy's `slowstart`) with the
//! real daemon, real servers and a client making new connections all the
//! time: a backend that comes back, or that a reload adds, gets a share of
//! NEW connections that grows over the ramp, where without slow start it
//! takes its full share at once. Needs root and the built XDP program.

use std::{net::SocketAddr, time::Duration};

use lb_testbed::backend_http as backend;
use lb_testbed::{
    ADMIN, Daemon, HttpServer, Load, Outcome, Topology, backend_addr,
    fixtures::{backend as backend_yaml, service},
    metric_sum, netns, wait_until, xdplb_bin,
};
use xdplb::{
    api_types::{Backend, Effective, Health},
    client::Client,
};

const VIP: &str = "198.18.100.10:80";
const PATIENCE: Duration = Duration::from_secs(20);
/// The ramp under test, and the windows its shares are measured in
/// (from when the backend is seen back): the first quarter and the last.
const RAMP: Duration = Duration::from_secs(10);
const EARLY: (Duration, Duration) = (Duration::ZERO, Duration::from_millis(2500));
const LATE: (Duration, Duration) = (Duration::from_millis(7500), RAMP);
/// After the ramp: the full share.
const AFTER: (Duration, Duration) = (Duration::from_millis(10_500), Duration::from_secs(13));

fn vip() -> SocketAddr {
    VIP.parse().unwrap()
}

fn name(i: usize) -> String {
    format!("backend-{i}")
}

/// `web` over `backends` (indexes), health-checked every 100 ms, with
/// `slow_start` if given.
fn config(topo: &Topology, backends: &[usize], slow_start: Option<&str>) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|i| backend_yaml(backend_addr(*i), 8080))
        .collect();
    let health = "health_check: { type: tcp, interval: 100ms, timeout: 100ms, rise: 2, fall: 3 }";
    let ramp = slow_start.map(|s| format!("slow_start: {s}"));
    let mut keys = vec!["protocol: tcp", health];
    keys.extend(ramp.as_deref());
    topo.daemon_config(
        "snat: { ipv4: 198.18.1.1, ports: 20000-29999 }\n\
         limits: { max_services: 8, max_backends: 16, maglev_table_size: 65537, flow_table_size: 65536 }\n",
        &[service("web", "198.18.100.10", 80, &keys, &list)],
    )
}

struct Bed {
    topo: Topology,
    servers: Vec<Option<HttpServer>>,
    daemon: Daemon,
}

impl Bed {
    fn new(n: usize, configured: &[usize], slow_start: Option<&str>) -> Bed {
        let topo = Topology::create(n).expect("topology");
        let servers = (1..=n).map(|i| Some(start_server(&topo, i))).collect();
        let daemon =
            topo.start_daemon_serving(xdplb_bin!(), &config(&topo, configured, slow_start), vip());
        Bed {
            topo,
            servers,
            daemon,
        }
    }

    fn api<T: Send>(&self, f: impl FnOnce(&Client) -> T + Send) -> T {
        self.topo.api(f)
    }

    /// Backend `i` as the API shows it, if listed.
    fn backend(&self, i: usize) -> Option<Backend> {
        let services = self.api(|c| c.services()).ok()?;
        services[0]
            .backends
            .iter()
            .find(|b| b.address == backend(i))
            .cloned()
    }

    /// `xdplb status`, the real CLI.
    fn status(&self) -> String {
        let out = netns::command(&self.topo.lb_ns(), env!("CARGO_BIN_EXE_xdplb"))
            .args(["status", "--admin", ADMIN])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn start_server(topo: &Topology, i: usize) -> HttpServer {
    HttpServer::start(&topo.backend_ns(i), backend(i), &name(i)).unwrap()
}

/// Share of the new connections started in `from..to` (after `at`) that
/// backend `i` answered, and how many there were.
fn share(
    outcomes: &[Outcome],
    i: usize,
    at: Duration,
    (from, to): (Duration, Duration),
) -> (f64, usize) {
    let window: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.ok() && o.start >= at + from && o.start < at + to)
        .collect();
    let mine = window
        .iter()
        .filter(|o| o.result.as_deref() == Ok(name(i).as_str()))
        .count();
    (mine as f64 / window.len().max(1) as f64, window.len())
}

/// The shares of backend `i` in the early, late and after windows from
/// `at`, once the load went past them (and, printed, second by second).
fn shares(load: Load, i: usize, at: Duration) -> [(f64, usize); 3] {
    assert!(
        load.wait_for(PATIENCE + AFTER.1, |o| o
            .last()
            .is_some_and(|o| o.start >= at + AFTER.1)),
        "the load stopped"
    );
    let outcomes = load.stop();
    let second = |s: u64| (Duration::from_secs(s), Duration::from_secs(s + 1));
    let curve: Vec<String> = (0..AFTER.1.as_secs())
        .map(|s| format!("{:.0}", share(&outcomes, i, at, second(s)).0 * 100.0))
        .collect();
    println!(
        "  share of {} second by second (%): {}",
        name(i),
        curve.join(" ")
    );
    [EARLY, LATE, AFTER].map(|w| share(&outcomes, i, at, w))
}

fn print(what: &str, [early, late, after]: [(f64, usize); 3]) {
    println!(
        "{what}: early {:.1}% of {}, late {:.1}% of {}, after {:.1}% of {}",
        early.0 * 100.0,
        early.1,
        late.0 * 100.0,
        late.1,
        after.0 * 100.0,
        after.1
    );
}

/// Backend 2 of 2 is killed, comes back, and is seen back by the API; the
/// shares of new connections it gets from then on.
fn comes_back(slow_start: Option<&str>) -> [(f64, usize); 3] {
    let mut bed = Bed::new(2, &[1, 2], slow_start);
    let load = Load::start(&bed.topo.client_ns(), vip(), Duration::from_millis(3));
    bed.servers[1] = None;
    assert!(
        wait_until(PATIENCE, || bed
            .backend(2)
            .is_some_and(|b| b.effective == Effective::Down)),
        "backend-2 never marked down:\n{}",
        bed.daemon.log()
    );
    bed.servers[1] = Some(start_server(&bed.topo, 2));
    assert!(
        wait_until(PATIENCE, || bed.backend(2).is_some_and(|b| (
            b.health,
            b.effective
        ) == (
            Health::Up,
            Effective::Ready
        ))),
        "backend-2 never came back"
    );
    let back_at = load.elapsed();
    let b = bed.backend(2).unwrap();
    match slow_start {
        Some(_) => {
            // Visible while it ramps: the API, `xdplb status`, /metrics.
            let ramp = b.slow_start.expect("ramping");
            assert!(ramp.percent < 25, "{ramp:?}");
            assert!(
                ramp.remaining_ms > 7000 && ramp.remaining_ms <= 10_000,
                "{ramp:?}"
            );
            assert!(b.effective_weight < 25.0, "{}", b.effective_weight);
            let status = bed.status();
            assert!(status.contains("100 (slow start "), "{status}");
            let m = bed.daemon.metrics().unwrap();
            let labels = [("backend", &*backend(2).to_string())];
            let eff = metric_sum(&m, "xdplb_backend_effective_weight", &labels);
            assert!(eff < 50.0, "effective weight {eff}");
        }
        None => {
            assert_eq!((b.slow_start, b.effective_weight), (None, 100.0));
        }
    }
    let s = shares(load, 2, back_at);
    let b = bed.backend(2).unwrap();
    assert_eq!((b.slow_start, b.effective_weight), (None, 100.0), "over");
    s
}

#[test]
fn a_backend_that_comes_back_ramps_its_share_of_new_connections() {
    let plain = comes_back(None);
    print("backend back, no slow start (full share 50%)", plain);
    let slow = comes_back(Some("10s"));
    print("backend back, slow_start 10s (full share 50%)", slow);
    let [(early, _), (late, _), (after, _)] = slow;
    // The ramp's average in the first quarter is under 10%; in the last
    // it is 40-47% (shares f / (1 + f) for f = 0.7..0.9).
    assert!(early < 0.2, "early {early}");
    assert!(
        late > 0.3 && late > 2.0 * early,
        "late {late}, early {early}"
    );
    assert!(after > 0.4, "after {after}");
    // Without slow start it takes its full share at once.
    let [(plain_early, _), _, (plain_after, _)] = plain;
    assert!(plain_early > 0.4 && plain_after > 0.4, "{plain:?}");
    assert!(plain_early > 2.0 * early, "{plain_early} vs {early}");
}

#[test]
fn a_reload_adding_a_backend_ramps_it() {
    let bed = Bed::new(3, &[1, 2], Some("10s"));
    let load = Load::start(&bed.topo.client_ns(), vip(), Duration::from_millis(3));
    bed.daemon
        .reload(Some(&config(&bed.topo, &[1, 2, 3], Some("10s"))))
        .unwrap();
    assert!(
        wait_until(PATIENCE, || bed.backend(3).is_some()),
        "reload not applied:\n{}",
        bed.daemon.log()
    );
    let added_at = load.elapsed();
    let b = bed.backend(3).unwrap();
    assert!(b.slow_start.is_some_and(|r| r.percent < 25), "{b:?}");
    let s = shares(load, 3, added_at);
    print(
        "backend added by a reload, slow_start 10s (full share 33%)",
        s,
    );
    let [(early, _), (late, _), (after, _)] = s;
    // First quarter: under 10% on average; last: 26-31% (f / (2 + f)).
    assert!(early < 0.15, "early {early}");
    assert!(
        late > 0.18 && late > 2.0 * early,
        "late {late}, early {early}"
    );
    assert!(after > 0.25, "after {after}");
    assert!(bed.backend(3).unwrap().slow_start.is_none());
}
