//! Canary rollouts (`xdplb rollout`) with the real daemon, real servers
//! and a client making new connections all the time: a good canary goes
//! through its steps to 100% and then takes every new flow; a canary
//! whose port resets connections is rolled back within its first step; a
//! reload keeps a running rollout (and aborts it when the canary is gone);
//! the API refuses bad requests and changes nothing. Needs root and the
//! built XDP program.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use lb_testbed::backend_http as backend;
use lb_testbed::{
    ADMIN, Daemon, HttpServer, Load, Outcomes, Topology, fixtures::service, metric_sum, netns,
    wait_until, xdplb_bin,
};
use xdplb::{
    api_types::{Rollout, RolloutRequest, RolloutState, Service},
    client::{Client, ClientError},
};

const VIP: &str = "198.18.100.10:80";
const PATIENCE: Duration = Duration::from_secs(20);
/// Backend 3 is the canary, at weight 0 in the config.
const CANARY: usize = 3;

fn vip() -> SocketAddr {
    VIP.parse().unwrap()
}

fn name(i: usize) -> String {
    format!("backend-{i}")
}

/// `web` over backends 1 and 2 at `weight2` (1 at 100) and the canary at 0,
/// or without the canary.
fn config(topo: &Topology, weight2: u32, with_canary: bool) -> String {
    let mut list = vec![
        format!(
            "{{ address: \"{}\", port: 8080, weight: 100 }}",
            backend(1).ip()
        ),
        format!(
            "{{ address: \"{}\", port: 8080, weight: {weight2} }}",
            backend(2).ip()
        ),
    ];
    if with_canary {
        list.push(format!(
            "{{ address: \"{}\", port: 8080, weight: 0 }}",
            backend(CANARY).ip()
        ));
    }
    // The client's kernel hands out its ephemeral ports again after a few
    // thousand connections (10 s of the load): a closed flow must be gone
    // by then, or a reused port finds it and keeps its old backend.
    topo.daemon_config(
        "snat: { ipv4: 198.18.1.1, ports: 20000-29999 }\n\
         flow_timeouts: { tcp_closing: 1s }\n\
         limits: { max_services: 8, max_backends: 16, maglev_table_size: 65537, flow_table_size: 65536 }\n",
        &[service("web", "198.18.100.10", 80, &["protocol: tcp"], &list)],
    )
}

struct Bed {
    topo: Topology,
    _servers: Vec<HttpServer>,
    daemon: Daemon,
}

impl Bed {
    /// Servers on backends 1 and 2, and on the canary if `good_canary`
    /// (else nothing listens there: its kernel answers every SYN with a
    /// RST).
    fn new(good_canary: bool) -> Bed {
        let topo = Topology::create(3).expect("topology");
        let up: &[usize] = if good_canary { &[1, 2, 3] } else { &[1, 2] };
        let servers = up
            .iter()
            .map(|&i| HttpServer::start(&topo.backend_ns(i), backend(i), &name(i)).unwrap())
            .collect();
        let daemon = topo.start_daemon_serving(xdplb_bin!(), &config(&topo, 100, true), vip());
        Bed {
            topo,
            _servers: servers,
            daemon,
        }
    }

    fn api<T: Send>(&self, f: impl FnOnce(&Client) -> T + Send) -> T {
        self.topo.api(f)
    }

    fn service(&self) -> Service {
        self.api(|c| c.service("web")).unwrap()
    }

    fn rollout(&self) -> Rollout {
        self.api(|c| c.rollout("web")).unwrap()
    }

    /// The real CLI: its exit code and stdout + stderr.
    fn xdplb(&self, args: &[&str]) -> (i32, String) {
        let out = netns::command(&self.topo.lb_ns(), env!("CARGO_BIN_EXE_xdplb"))
            .args(args)
            .args(["--admin", ADMIN])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// `xdplb rollout start web CANARY ARGS...`, which must succeed.
    fn start(&self, args: &[&str]) -> Instant {
        let canary = backend(CANARY).to_string();
        let mut all = vec!["rollout", "start", "web", canary.as_str()];
        all.extend(args);
        let at = Instant::now();
        let (code, out) = self.xdplb(&all);
        assert_eq!(code, 0, "{out}\n{}", self.daemon.log());
        assert!(out.starts_with("rollout web: running at step 1/"), "{out}");
        at
    }

    /// Each backend's (weight, new flows so far), by index.
    fn weights_and_flows(&self) -> Vec<(u32, u64)> {
        let s = self.service();
        (1..=3)
            .map(|i| {
                let b = s.backends.iter().find(|b| b.address == backend(i)).unwrap();
                (b.weight, b.flows)
            })
            .collect()
    }

    fn wait_state(&self, patience: Duration, done: impl Fn(&Rollout) -> bool) -> Rollout {
        let mut last = None;
        let ok = wait_until(patience, || {
            let r = self.rollout();
            let done = done(&r);
            last = Some(r);
            done
        });
        let r = last.expect("read at least once");
        assert!(ok, "{r:#?}\n{}", self.daemon.log());
        r
    }
}

#[test]
fn a_good_canary_reaches_100_percent_and_then_takes_every_new_flow() {
    let bed = Bed::new(true);
    let load = Load::start(&bed.topo.client_ns(), vip(), Duration::from_millis(3));
    let started = bed.start(&["--steps", "10,50,100", "--every", "2s"]);

    // Shown while it runs: the API, `xdplb status`, /metrics.
    let r = bed.wait_state(PATIENCE, |r| r.step == 50);
    assert_eq!(r.state, RolloutState::Running);
    assert!((r.canary_share - 50.0).abs() < 1.0, "{r:?}");
    let (_, status) = bed.xdplb(&["status", "--interval", "0"]);
    assert!(
        status.contains("rollout web: running at step 2/3 (50%)"),
        "{status}"
    );
    let m = bed.daemon.metrics().unwrap();
    assert_eq!(
        metric_sum(&m, "xdplb_rollout_step_percent", &[("service", "web")]),
        50.0
    );
    assert_eq!(
        metric_sum(
            &m,
            "xdplb_rollout_state",
            &[("service", "web"), ("state", "running")]
        ),
        1.0
    );

    let r = bed.wait_state(PATIENCE, |r| r.state != RolloutState::Running);
    assert_eq!(r.state, RolloutState::Completed, "{r:?}");
    println!(
        "good canary: completed after {:.1} s (steps 10,50,100 every 2s; measured {:.1} s)",
        r.elapsed_ms as f64 / 1000.0,
        started.elapsed().as_secs_f64()
    );
    assert_eq!((r.step, r.reason.as_deref()), (100, None));
    // The final weights stay: the canary alone takes new flows.
    let before = bed.weights_and_flows();
    assert_eq!(
        before.iter().map(|w| w.0).collect::<Vec<_>>(),
        [0, 0, 100],
        "{before:?}"
    );
    let done_at = load.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let after = bed.weights_and_flows();
    let outcomes = load.stop();
    let new: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a.1 - b.1).collect();
    println!("new flows per backend in the 2 s after completion: {new:?}");
    assert_eq!((new[0], new[1]), (0, 0), "{new:?}");
    assert!(new[2] > 50, "{new:?}");
    let since = done_at + Duration::from_millis(100);
    assert_eq!(
        outcomes.served_by_since(&name(CANARY), since),
        outcomes.started_since(since)
            - outcomes
                .iter()
                .filter(|o| o.start >= since && !o.ok())
                .count(),
        "every answer after completion is the canary's"
    );
    assert!(
        outcomes.failures().is_empty(),
        "{:?}",
        &outcomes.failures()[..3.min(outcomes.failures().len())]
    );
    let m = bed.daemon.metrics().unwrap();
    assert_eq!(
        metric_sum(
            &m,
            "xdplb_rollout_state",
            &[("service", "web"), ("state", "completed")]
        ),
        1.0
    );
}

#[test]
fn a_canary_that_resets_connections_is_rolled_back_within_its_first_step() {
    let bed = Bed::new(false);
    let baseline = bed.weights_and_flows();
    let load = Load::start(&bed.topo.client_ns(), vip(), Duration::from_millis(3));
    // A long first step: the rollback must come within it.
    let started = bed.start(&["--steps", "10,50,100", "--every", "10s"]);
    let r = bed.wait_state(PATIENCE, |r| r.state != RolloutState::Running);
    let took = started.elapsed();
    let outcomes = load.stop();
    assert_eq!(r.state, RolloutState::RolledBack, "{r:?}");
    let reason = r.reason.clone().unwrap();
    assert!(reason.starts_with("rst_ratio "), "{reason}");
    assert!(reason.contains("at step 10%"), "{reason}");
    assert_eq!(
        (r.step, r.step_number),
        (10, 1),
        "never left its first step"
    );
    println!(
        "bad canary: rolled back after {:.1} s at step {}% ({:.1} s measured by the client \
         side from the start command): {reason}",
        r.elapsed_ms as f64 / 1000.0,
        r.step,
        took.as_secs_f64()
    );
    // The weights are back as they were.
    let now = bed.weights_and_flows();
    assert_eq!(
        now.iter().map(|w| w.0).collect::<Vec<_>>(),
        baseline.iter().map(|w| w.0).collect::<Vec<_>>()
    );
    assert_eq!(r.canary_share, 0.0);
    let weights: Vec<u32> = r.baseline.iter().map(|b| b.weight).collect();
    assert_eq!(weights, [100, 100, 0]);
    // The clients saw the resets while it lasted, then none.
    let failed = outcomes.failures().len();
    assert!(failed > 0, "the canary took no connection");
    let m = bed.daemon.metrics().unwrap();
    assert_eq!(
        metric_sum(
            &m,
            "xdplb_rollouts_rolled_back_total",
            &[("service", "web")]
        ),
        1.0
    );
    assert!(
        bed.daemon.log().contains("rollout rolled back: rst_ratio"),
        "{}",
        bed.daemon.log()
    );
    let (_, status) = bed.xdplb(&["rollout", "status", "web"]);
    assert!(status.contains("rolled back at step 1/3 (10%)"), "{status}");
}

#[test]
fn a_reload_keeps_a_running_rollout_and_bad_requests_change_nothing() {
    let bed = Bed::new(true);
    let canary = backend(CANARY);
    let refused = |req: RolloutRequest, status: u16, says: &str| {
        let e = bed.api(|c| c.start_rollout(&req)).unwrap_err();
        match &e {
            ClientError::Api {
                status: s, message, ..
            } => assert!(*s == status && message.contains(says), "{e}"),
            _ => panic!("{e}"),
        }
    };
    let req = |service: &str, canaries: Vec<SocketAddr>| RolloutRequest {
        service: service.into(),
        canaries,
        ..RolloutRequest::default()
    };
    refused(req("nope", vec![canary]), 404, "no service named \"nope\"");
    refused(
        req("web", vec!["198.18.1.99:8080".parse().unwrap()]),
        404,
        "service web has no backend 198.18.1.99:8080",
    );
    refused(
        RolloutRequest {
            steps: Some(vec![50, 10, 100]),
            ..req("web", vec![canary])
        },
        400,
        "steps 50,10,100 must increase",
    );
    refused(
        RolloutRequest {
            abort_if: Some("rst_ratio>lots".into()),
            ..req("web", vec![canary])
        },
        400,
        "rst_ratio takes a ratio",
    );
    refused(
        req("web", vec![backend(1), backend(2), canary]),
        400,
        "every backend of web is a canary",
    );
    // The CLI says the same, exit 2.
    let (code, out) = bed.xdplb(&[
        "rollout",
        "start",
        "web",
        &canary.to_string(),
        "--steps",
        "10,50",
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("steps 10,50 must end at 100 (HTTP 400)"),
        "{out}"
    );
    let (code, out) = bed.xdplb(&["rollout", "pause", "web"]);
    assert!(
        code == 2 && out.contains("service web has no rollout"),
        "{out}"
    );
    assert!(
        bed.api(|c| c.rollouts()).unwrap().is_empty(),
        "nothing started"
    );
    assert_eq!(
        bed.weights_and_flows()
            .iter()
            .map(|w| w.0)
            .collect::<Vec<_>>(),
        [100, 100, 0]
    );

    bed.start(&["--steps", "10,100", "--every", "60s"]);
    let share = bed.rollout().canary_share;
    assert!((share - 10.0).abs() < 0.5, "{share}");
    refused(
        req("web", vec![canary]),
        409,
        "a rollout of web is running already",
    );
    let e = bed.api(|c| c.set_weight("web", backend(1), 5)).unwrap_err();
    assert!(
        e.to_string()
            .contains("a rollout of web is running and sets its weights"),
        "{e}"
    );
    let (code, out) = bed.xdplb(&["rollout", "pause", "web"]);
    assert!(
        code == 0 && out.starts_with("rollout web: paused at step 1/2"),
        "{out}"
    );
    let (code, out) = bed.xdplb(&["rollout", "resume", "web"]);
    assert!(
        code == 0 && out.starts_with("rollout web: running"),
        "{out}"
    );

    // A reload that changes another backend's weight: the rollout goes on
    // and its weights follow (10% of 100 + 200).
    bed.daemon
        .reload(Some(&config(&bed.topo, 200, true)))
        .unwrap();
    assert!(
        wait_until(PATIENCE, || bed.weights_and_flows()[1].0 == 200),
        "reload not applied:\n{}",
        bed.daemon.log()
    );
    let r = bed.rollout();
    assert_eq!((r.state, r.step), (RolloutState::Running, 10), "{r:?}");
    assert_eq!(
        bed.weights_and_flows()[2].0,
        33,
        "the canary's weight on the new config"
    );
    // One that removes the canary aborts it, and says why.
    bed.daemon
        .reload(Some(&config(&bed.topo, 200, false)))
        .unwrap();
    let r = bed.wait_state(PATIENCE, |r| r.state != RolloutState::Running);
    assert_eq!(r.state, RolloutState::Aborted);
    assert_eq!(
        r.reason.as_deref(),
        Some(format!("the reload removed canary {canary}").as_str())
    );
    assert_eq!(
        bed.service()
            .backends
            .iter()
            .map(|b| b.weight)
            .collect::<Vec<_>>(),
        [100, 200]
    );
}
