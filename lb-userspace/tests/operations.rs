//! Operations while traffic flows (issue: health checks, backend states,
//! runtime API and CLI, reload, restart): the real daemon in the reference
//! topology, real servers, clients running continuously throughout.
//! Needs root and the built XDP program.

use std::{net::SocketAddr, process::Output, time::Duration};

use lb_testbed::backend_http as backend;
use lb_testbed::{
    ADMIN, Daemon, HttpServer, Load, Outcomes, Stream, Topology, backend_addr,
    fixtures::{backend as backend_yaml, service},
    http_get, metric_sum, netns, wait_answering, wait_until, xdplb_bin,
};
use xdplb::{
    api_types::{BackendState, Effective, Health},
    client::Client,
};

const VIP: &str = "198.18.100.10:80";
/// How long a test waits for what must happen (a state change, enough
/// requests): far more than a working daemon needs, even in a slow guest;
/// the tests count events rather than sleep for fixed times.
const PATIENCE: Duration = Duration::from_secs(20);
const ZERO: Duration = Duration::ZERO;

fn vip() -> SocketAddr {
    VIP.parse().unwrap()
}

/// Config for `backends` (indexes), health-checked every 100 ms; `extra`
/// is appended at the top level.
fn config(topo: &Topology, backends: &[usize], extra: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|i| backend_yaml(backend_addr(*i), 8080))
        .collect();
    let health = "health_check: { type: tcp, interval: 100ms, timeout: 100ms, rise: 2, fall: 3 }";
    topo.daemon_config(
        &format!(
            "snat: {{ ipv4: 198.18.1.1, ports: 20000-29999 }}\n\
             limits: {{ max_services: 8, max_backends: 16, maglev_table_size: 65537, flow_table_size: 65536 }}\n\
             {extra}"
        ),
        &[service("web", "198.18.100.10", 80, &["protocol: tcp", health], &list)],
    )
}

struct Bed {
    topo: Topology,
    servers: Vec<Option<HttpServer>>,
    daemon: Daemon,
}

impl Bed {
    /// `n` backend namespaces with a server each; the daemon balances over
    /// `configured` of them.
    fn new(n: usize, configured: &[usize], extra: &str) -> Bed {
        Bed::with_config(n, |topo| config(topo, configured, extra))
    }

    fn with_config(n: usize, yaml: impl FnOnce(&Topology) -> String) -> Bed {
        let topo = Topology::create(n).expect("topology");
        let servers = (1..=n).map(|i| Some(start_server(&topo, i))).collect();
        let daemon = topo
            .start_daemon(xdplb_bin!(), &yaml(&topo))
            .expect("daemon starts");
        let bed = Bed {
            topo,
            servers,
            daemon,
        };
        bed.warm_up();
        bed
    }

    fn client_ns(&self) -> String {
        self.topo.client_ns()
    }

    /// Runs the real CLI, `xdplb ARGS --admin ADMIN`, in the LB namespace.
    fn cli(&self, args: &[&str]) -> Output {
        netns::command(&self.topo.lb_ns(), env!("CARGO_BIN_EXE_xdplb"))
            .args(args)
            .args(["--admin", ADMIN])
            .output()
            .unwrap()
    }

    /// Runs an API call from inside the LB namespace.
    fn api<T: Send>(&self, f: impl FnOnce(&Client) -> T + Send) -> T {
        self.topo.api(f)
    }

    /// Health as the checks see it, and whether the data plane already
    /// applies it (`effective`): the latter ends the detection window.
    fn health(&self, i: usize) -> (Health, Effective) {
        let services = self.api(|c| c.services()).unwrap();
        services[0]
            .backends
            .iter()
            .find(|b| b.address == backend(i))
            .map(|b| (b.health, b.effective))
            .expect("backend listed")
    }

    /// Every backend answers through the VIP (ARP done, checks passing).
    fn warm_up(&self) {
        assert!(
            wait_answering(&self.client_ns(), vip(), Duration::from_secs(20)),
            "no answer through the VIP:\n{}",
            self.daemon.log()
        );
    }
}

fn start_server(topo: &Topology, i: usize) -> HttpServer {
    HttpServer::start(&topo.backend_ns(i), backend(i), &format!("backend-{i}")).unwrap()
}

fn name(i: usize) -> String {
    format!("backend-{i}")
}

#[test]
fn a_dead_backend_leaves_within_the_detection_window_and_comes_back() {
    let mut bed = Bed::new(3, &[1, 2, 3], "");
    let load = Load::start(&bed.client_ns(), vip(), Duration::from_millis(5));
    assert!(
        load.wait_for(PATIENCE, |o| (1..=3)
            .all(|i| o.served_by_since(&name(i), ZERO) > 0)),
        "every backend serves before the kill"
    );

    let killed_at = load.elapsed();
    bed.servers[1] = None; // backend-2 stops: connections to it are refused
    assert!(
        wait_until(PATIENCE, || bed.health(2)
            == (Health::Down, Effective::Down)),
        "backend-2 never marked down:\n{}",
        bed.daemon.log()
    );
    let down_seen_at = load.elapsed();
    let m = bed.daemon.metrics().unwrap();
    let up = |i: usize| {
        metric_sum(
            &m,
            "xdplb_backend_up",
            &[("backend", &backend(i).to_string())],
        )
    };
    assert_eq!((up(1), up(2), up(3)), (1.0, 0.0, 1.0));
    // Requests while it is out: none may fail.
    assert!(load.wait_for(PATIENCE, |o| o.started_since(down_seen_at) >= 50));

    bed.servers[1] = Some(start_server(&bed.topo, 2));
    let restarted_at = load.elapsed();
    assert!(
        wait_until(PATIENCE, || bed.health(2) == (Health::Up, Effective::Ready)),
        "backend-2 never came back"
    );
    let up_seen_at = load.elapsed();
    assert!(
        load.wait_for(PATIENCE, |o| o.served_by_since(&name(2), up_seen_at) > 0),
        "backend-2 takes new connections again"
    );
    let outcomes = load.stop();

    let failures = outcomes.failures();
    println!(
        "{} requests, {} failed; down seen {:?} after the kill, up seen {:?} after the restart",
        outcomes.len(),
        failures.len(),
        down_seen_at - killed_at,
        up_seen_at - restarted_at
    );
    // A request fails only if it was in flight between the kill and the
    // moment backend-2 was seen out: one that started just before the kill
    // and broke with it counts, one that started after the window (or
    // ended before it) is a failure of the balancer.
    for f in &failures {
        assert!(
            f.overlaps(killed_at, down_seen_at),
            "failure outside the detection window {killed_at:?}..{down_seen_at:?}: {f:?}"
        );
    }
    let m = bed.daemon.metrics().unwrap();
    let b = backend(2).to_string();
    assert_eq!(metric_sum(&m, "xdplb_backend_up", &[("backend", &b)]), 1.0);
    let transitions = |to: &str| {
        metric_sum(
            &m,
            "xdplb_backend_health_transitions_total",
            &[("backend", &b), ("to", to)],
        )
    };
    // The kill took it down and the restart brought it back (a slow guest
    // may see it flap once more; every down still ends up).
    let (downs, ups) = (transitions("down"), transitions("up"));
    assert!(downs >= 1.0 && ups == downs, "down {downs}, up {ups}");
}

#[test]
fn drain_keeps_existing_flows_and_maint_moves_them() {
    let bed = Bed::new(3, &[1, 2, 3], "");
    let stream = Stream::start(&bed.client_ns(), vip(), 64 * 1024).unwrap();
    let held = stream.backend().unwrap();
    let i: usize = held.trim_start_matches("backend-").parse().unwrap();

    // Drain with the real CLI, from the LB namespace.
    let out = bed.cli(&["backend", "state", "web", &backend(i).to_string(), "drain"]);
    assert!(out.status.success(), "{out:?}");
    let drained_at = stream.elapsed();
    let load = Load::start(&bed.client_ns(), vip(), Duration::from_millis(5));
    assert!(load.wait_for(PATIENCE, |o| o.len() >= 60));
    let new_conns = load.stop();
    assert!(
        new_conns.failures().is_empty(),
        "{:?}",
        new_conns.failures()
    );
    assert_eq!(
        new_conns.served_by_since(&held, ZERO),
        0,
        "a drained backend takes no new connection"
    );
    let status = bed.cli(&["status", "--interval", "0"]);
    assert!(status.status.success());
    assert!(String::from_utf8_lossy(&status.stdout).contains("drain"));
    assert!(
        stream.wait_for(PATIENCE, |o| o.started_since(drained_at) >= 5),
        "requests ran on the stream while drained: {:?}",
        stream.outcomes().last()
    );

    // Maint: the flow is taken away from it (the next backend resets it).
    let maint_at = stream.elapsed();
    bed.api(|c| c.set_state("web", backend(i), BackendState::Maint))
        .unwrap();
    assert!(
        wait_until(PATIENCE, || stream.ended()),
        "under maint the flow moved away from {held} (and broke)"
    );
    let streamed = stream.stop();
    // Up to maint, every request on it was answered by the drained backend.
    let before_maint: Vec<_> = streamed.iter().filter(|o| o.end < maint_at).collect();
    assert!(
        before_maint
            .iter()
            .all(|o| o.result.as_deref() == Ok(held.as_str())),
        "the drained flow kept working on {held}: {:?}",
        before_maint.iter().filter(|o| !o.ok()).collect::<Vec<_>>()
    );
    let last = streamed.last().unwrap();
    assert!(
        !last.ok() && last.end >= maint_at,
        "the stream broke under maint, not before: {last:?}"
    );

    // Ready again: it takes new connections.
    bed.api(|c| c.set_state("web", backend(i), BackendState::Ready))
        .unwrap();
    let load = Load::start(&bed.client_ns(), vip(), Duration::from_millis(5));
    let served = load.wait_for(PATIENCE, |o| o.served_by_since(&held, ZERO) > 0);
    let again = load.stop();
    assert!(served, "{held} takes new connections again");
    assert!(again.failures().is_empty(), "{:?}", again.failures());
}

#[test]
fn reload_adds_and_removes_backends_without_failed_requests() {
    let bed = Bed::new(4, &[1, 2, 3], "");
    let load = Load::start(&bed.client_ns(), vip(), Duration::from_millis(5));
    assert!(load.wait_for(PATIENCE, |o| {
        (1..=3).all(|i| o.served_by_since(&name(i), ZERO) > 0)
    }));
    bed.daemon
        .reload(Some(&config(&bed.topo, &[1, 2, 4], "")))
        .unwrap();
    let reload_at = load.elapsed();
    assert!(
        wait_until(PATIENCE, || {
            bed.api(|c| c.services())
                .is_ok_and(|s| s[0].backends.iter().any(|b| b.address == backend(4)))
        }),
        "reload not applied:\n{}",
        bed.daemon.log()
    );
    let applied_at = load.elapsed();
    // Enough requests after the reload to see every backend it keeps or adds.
    let seen = load.wait_for(PATIENCE, |o| {
        o.started_since(applied_at) >= 60
            && o.served_by_since(&name(4), applied_at) > 0
            && [1, 2]
                .iter()
                .all(|&i| o.served_by_since(&name(i), reload_at) > 0)
    });
    let outcomes = load.stop();
    println!(
        "{} requests across the reload, {} failed",
        outcomes.len(),
        outcomes.failures().len()
    );
    assert!(outcomes.failures().is_empty(), "{:?}", outcomes.failures());
    assert!(seen, "backends 1, 2 and 4 serve after the reload");
    assert_eq!(outcomes.served_by_since(&name(3), applied_at), 0);
}

#[test]
fn sigkill_and_restart_keep_flows_and_new_connections_work_throughout() {
    let mut bed = Bed::new(3, &[1, 2, 3], "on_exit: detach");
    let stream = Stream::start(&bed.client_ns(), vip(), 256 * 1024).unwrap();
    let held = stream.backend().unwrap();
    let load = Load::start(&bed.client_ns(), vip(), Duration::from_millis(10));
    // Requests on both after each event (times on each one's clock); a
    // failure ends the stream, and the checks below report it.
    let now = || (load.elapsed(), stream.elapsed());
    let traffic_since = |(on_load, on_stream): (Duration, Duration)| {
        load.wait_for(PATIENCE, |o| o.started_since(on_load) >= 20)
            && stream.wait_for(PATIENCE, |o| {
                o.started_since(on_stream) >= 3 || o.last().is_some_and(|o| !o.ok())
            })
    };
    assert!(traffic_since((ZERO, ZERO)));

    bed.daemon.kill().unwrap();
    // No daemon: the pinned program keeps forwarding.
    assert!(traffic_since(now()), "traffic while no daemon runs");
    bed.daemon.restart().unwrap();
    assert!(traffic_since(now()), "traffic after the restart");

    let streamed = stream.stop();
    let outcomes = load.stop();
    println!(
        "stream: {} requests on one connection; new connections: {} ({} failed)",
        streamed.len(),
        outcomes.len(),
        outcomes.failures().len()
    );
    assert!(
        streamed
            .iter()
            .all(|o| o.result.as_deref() == Ok(held.as_str())),
        "the long-lived connection survived on {held}: {:?}",
        streamed.failures()
    );
    assert!(outcomes.failures().is_empty(), "{:?}", outcomes.failures());
    let log = bed.daemon.log();
    assert!(log.contains("adopting pinned maps"), "{log}");
    assert!(log.contains("previous program"), "{log}");
}

/// The program declares `RINGS` mappable, so rings are written through a
/// mapping; a `RINGS` pinned by an earlier version without the flag is
/// adopted as it is and its rings written with batches: new flows still
/// reach every backend.
#[test]
fn a_rings_map_pinned_without_the_mappable_flag_is_adopted() {
    const NOT_MAPPABLE: &str = "RINGS is not mappable";
    let mut bed = Bed::new(3, &[1, 2, 3], "on_exit: detach");
    let log = bed.daemon.log();
    assert!(!log.contains(NOT_MAPPABLE), "a fresh start maps it:\n{log}");
    let cfg = xdplb::config::Config::load(bed.daemon.config_path()).unwrap();
    let pins = cfg.pin_dir.expect("the test config has a pin dir");

    // An earlier version's RINGS: same shape, no flag, all zero (every
    // entry backend id 0, until the daemon writes the rings).
    bed.daemon.kill().unwrap();
    let path = pins.join("RINGS");
    std::fs::remove_file(&path).unwrap();
    let entries =
        cfg.limits.max_services * lb_common::RING_SLOTS_PER_SERVICE * cfg.limits.maglev_table_size;
    let old = aya::maps::Array::<_, u32>::create(entries, 0).unwrap();
    old.pin(&path).unwrap();
    bed.daemon.restart().unwrap();
    let log = bed.daemon.log();
    assert!(log.contains("adopting pinned maps"), "{log}");
    assert!(log.contains(NOT_MAPPABLE), "{log}");

    let load = Load::start(&bed.client_ns(), vip(), Duration::from_millis(10));
    let every = load.wait_for(PATIENCE, |o| {
        (1..=3).all(|i| o.served_by_since(&name(i), ZERO) > 0)
    });
    let outcomes = load.stop();
    assert!(
        every,
        "new flows reach every backend: {:?}",
        (1..=3)
            .map(|i| outcomes.served_by_since(&name(i), ZERO))
            .collect::<Vec<_>>()
    );
    assert!(outcomes.failures().is_empty(), "{:?}", outcomes.failures());
}

#[test]
fn an_invalid_reload_changes_nothing() {
    let bed = Bed::new(3, &[1, 2, 3], "");
    let before = bed.api(|c| c.services()).unwrap();

    // Through the API: refused with the reason, 4xx.
    std::fs::write(bed.daemon.config_path(), config(&bed.topo, &[1, 1, 2], "")).unwrap();
    let err = bed.api(|c| c.reload()).unwrap_err();
    assert_eq!(err.exit_code(), 2, "a 4xx answer: {err}");
    assert!(err.to_string().contains("services[0].backends[1]"), "{err}");

    // A change only a restart can make: refused too.
    let other_limits = config(&bed.topo, &[1, 2, 3], "")
        .replace("flow_table_size: 65536", "flow_table_size: 131072");
    bed.daemon.reload(Some(&other_limits)).unwrap();
    assert!(wait_until(PATIENCE, || bed
        .daemon
        .log()
        .contains("reload refused")));
    assert!(bed.daemon.log().contains("limits cannot change on reload"));

    let after = bed.api(|c| c.services()).unwrap();
    let shape = |s: &[xdplb::api_types::Service]| {
        s.iter()
            .map(|s| {
                (
                    s.name.clone(),
                    s.vip,
                    s.backends
                        .iter()
                        .map(|b| (b.address, b.weight, b.state, b.effective))
                        .collect::<Vec<_>>(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(shape(&before), shape(&after));
    let load = Load::start(&bed.client_ns(), vip(), Duration::from_millis(5));
    let served = load.wait_for(PATIENCE, |o| o.len() >= 50);
    let outcomes = load.stop();
    assert!(served, "still serving: {} requests", outcomes.len());
    assert!(outcomes.failures().is_empty(), "{:?}", outcomes.failures());
}

#[test]
fn mutating_calls_need_the_bearer_token() {
    let token = std::env::temp_dir().join(format!("xdplb-token-{}", std::process::id()));
    std::fs::write(&token, "s3cret\n").unwrap();
    let bed = Bed::with_config(2, |topo| {
        config(topo, &[1, 2], "").replace(
            &format!("admin: {{ listen: {ADMIN} }}"),
            &format!(
                "admin: {{ listen: {ADMIN}, token_file: {} }}",
                token.display()
            ),
        )
    });
    let call = |token: Option<&str>| {
        netns::run_in(&bed.topo.lb_ns(), || {
            Ok(Client::new(ADMIN, token.map(str::to_owned)).set_state(
                "web",
                backend(1),
                BackendState::Drain,
            ))
        })
        .unwrap()
    };
    for wrong in [None, Some("wrong")] {
        let denied = call(wrong).unwrap_err();
        assert!(denied.to_string().contains("401"), "{denied}");
    }
    assert_eq!(
        bed.api(|c| c.services()).unwrap()[0].backends[0].state,
        BackendState::Ready
    );
    let ok = call(Some("s3cret")).unwrap();
    assert_eq!(ok.state, BackendState::Drain);
    // Reads need no token.
    assert_eq!(
        bed.api(|c| c.services()).unwrap()[0].backends[0].state,
        BackendState::Drain
    );
    drop(bed);
    std::fs::remove_file(&token).unwrap();
}

#[test]
fn weight_zero_takes_no_new_connections_and_weights_split_traffic() {
    let bed = Bed::new(2, &[1, 2], "");
    bed.api(|c| c.set_weight("web", backend(2), 0)).unwrap();
    let load = Load::start(&bed.client_ns(), vip(), Duration::from_millis(2));
    assert!(load.wait_for(PATIENCE, |o| o.len() >= 100));
    let outcomes = load.stop();
    assert!(outcomes.failures().is_empty());
    assert_eq!(outcomes.served_by_since(&name(2), ZERO), 0);

    // A canary split: 1 to 3.
    bed.api(|c| c.set_weight("web", backend(1), 300)).unwrap();
    let b = bed.api(|c| c.set_weight("web", backend(2), 100)).unwrap();
    assert_eq!(b.weight, 100);
    let mut canary = 0;
    for _ in 0..200 {
        let (_, body) = http_get(&bed.client_ns(), vip(), "/", Duration::from_secs(2)).unwrap();
        canary += usize::from(body.trim() == name(2));
    }
    println!("canary share with weights 300:100: {canary} of 200");
    assert!(
        (25..=80).contains(&canary),
        "about a quarter: {canary} of 200"
    );
}

#[test]
fn on_exit_keep_leaves_the_program_forwarding_for_the_next_run() {
    let mut bed = Bed::new(2, &[1, 2], "on_exit: keep");
    let stream = Stream::start(&bed.client_ns(), vip(), 64 * 1024).unwrap();
    let held = stream.backend().unwrap();
    let status = bed.daemon.sigterm().unwrap();
    let log = bed.daemon.log();
    assert!(status.success(), "{log}");
    assert!(log.contains("stays attached"), "{log}");
    let links = netns::ip(&["-n", &bed.topo.lb_ns(), "link", "show"]).unwrap();
    assert_eq!(
        links.matches("prog/xdp").count(),
        2,
        "still attached:\n{links}"
    );
    let stopped_at = stream.elapsed();
    let load = Load::start(&bed.client_ns(), vip(), Duration::from_millis(10));
    let served = load.wait_for(PATIENCE, |o| o.len() >= 30);
    let outcomes = load.stop();
    assert!(
        served && outcomes.failures().is_empty(),
        "forwarding with no daemon: {} requests, failed: {:?}",
        outcomes.len(),
        outcomes.failures()
    );
    // The open connection goes on too (until it fails, if it does).
    stream.wait_for(PATIENCE, |o| {
        o.started_since(stopped_at) >= 3 || o.last().is_some_and(|o| !o.ok())
    });
    let streamed = stream.stop();
    assert!(streamed.started_since(stopped_at) >= 3);
    assert!(
        streamed
            .iter()
            .all(|o| o.result.as_deref() == Ok(held.as_str())),
        "{:?}",
        streamed.failures()
    );
}
