//! High availability (docs/ha.md): three LB nodes, each the real daemon
//! with its own BIRD, behind a router running BIRD with ECMP
//! (lb-testbed's multinode bed). For each mode, one bed goes through three
//! failures of node 1, each with fresh streams spread over all three nodes:
//!
//! - drain: `xdplb node drain` withdraws its VIPs while it keeps
//!   forwarding (then `xdplb node ready` brings it back);
//! - stop: SIGTERM with `on_exit: detach`: withdraw, then detach and exit
//!   (then it starts again);
//! - cut: its links go down, no withdrawal; the router notices when the
//!   hold time runs out (last: the node does not come back).
//!
//! Either way the router drops node 1's next hop and sends its streams to
//! the others (and, its ECMP hash being stateless, moves some streams
//! between the others too). In dsr and tunnel modes the new node picks
//! the same backend (same config and hash_seed), so no stream breaks. In
//! nat mode the flow state (the SNAT port) lives on one node: without flow
//! sync a stream moved to a node without it breaks; with it, the node it
//! reaches hands it to its owner, so only the streams of a node that is
//! gone (stopped, cut) break. Before the failures, `xdplb explain` on every
//! running node must name the same backend for 200 flows.
//!
//! Needs root, BIRD 2 and the built XDP program. The measured times are
//! printed (`HA_DRAIN`, `HA_STOP`, `HA_FAILOVER`), not asserted; which
//! streams break is.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use lb_testbed::{
    ADMIN, Daemon, HttpServer, Outcome, Stream, backend_addr,
    fixtures::{backend, service},
    metric_sum,
    multinode::{MultiNode, node_addr},
    netns,
    topology::CLIENT_ADDR,
    vip_backend, wait_until, xdplb_bin,
};
use xdplb::{client::Client, config::Protocol};

const NODES: usize = 3;
const BACKENDS: usize = 3;
/// The node every failure hits.
const FAILED: usize = 1;
/// Long-lived streams (the issue asks for N >= 50).
const STREAMS: usize = 60;
const WAIT: Duration = Duration::from_secs(30);
/// A stream that goes this long without an answer has stalled.
const STALL: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Dsr,
    Tunnel,
    Nat,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Dsr => "dsr",
            Mode::Tunnel => "tunnel",
            Mode::Nat => "nat",
        }
    }
}

/// What a failure of a node may do to the streams.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// None breaks: every node picks the same backend (dsr, tunnel).
    NoneBroken,
    /// Only node 1's streams and those ECMP moved to another node may
    /// break: the node they moved to has no state for them (nat without
    /// flow-state sync).
    OnlyMovedBreak,
    /// nat with flow sync: a moved stream is handed to the node that owns
    /// it, so none breaks while node 1 still forwards (drain); once it is
    /// gone (stop, cut) only its own streams may break.
    OwnersKeepTheirs,
}

/// How node [`FAILED`] goes out of service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// `xdplb node drain`.
    Drain,
    /// SIGTERM (the config says `on_exit: detach`).
    Stop,
    /// Links cut.
    Cut,
}

impl Failure {
    /// In the order one bed goes through them: the cut node stays down.
    const ALL: [Failure; 3] = [Failure::Drain, Failure::Stop, Failure::Cut];

    fn tag(self) -> &'static str {
        match self {
            Failure::Drain => "HA_DRAIN",
            Failure::Stop => "HA_STOP",
            Failure::Cut => "HA_FAILOVER",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Failure::Drain => "drained (xdplb node drain)",
            Failure::Stop => "stopped (SIGTERM, on_exit: detach)",
            Failure::Cut => "cut (links down)",
        }
    }
}

/// The bed with `mode`'s service on `vip` running on every node.
struct Bed {
    mode: Mode,
    vip: SocketAddr,
    daemons: Vec<Daemon>,
    _servers: Vec<HttpServer>,
    // Last: the namespaces go after the daemons and servers.
    net: MultiNode,
}

impl Bed {
    /// `flow_sync`: the nodes sync their nat flows (each node's address
    /// toward the router, the others its peers).
    fn start(mode: Mode, vip: Ipv4Addr, flow_sync: bool) -> Bed {
        let net = MultiNode::create(NODES, BACKENDS).expect("multi-node bed");
        let vip = SocketAddr::new(vip.into(), 80);
        let mut servers = Vec::new();
        for i in 1..=BACKENDS {
            let ns = net.backend_ns(i);
            // dsr and tunnel backends hold the VIP (tunnel ones decapsulate);
            // nat ones serve on their own address.
            let at = match mode {
                Mode::Nat => SocketAddr::new(backend_addr(i).into(), 80),
                Mode::Dsr | Mode::Tunnel => {
                    vip_backend::setup(&ns, &[vip.ip()], mode == Mode::Tunnel).unwrap();
                    vip
                }
            };
            servers.push(HttpServer::start(&ns, at, &format!("backend-{i}")).unwrap());
        }
        let backends: Vec<String> = (1..=BACKENDS)
            .map(|i| backend(backend_addr(i), 80))
            .collect();
        let services = [service(
            "web",
            vip.ip(),
            80,
            &[&format!("mode: {}", mode.name())],
            &backends,
        )];
        // on_exit: detach (the default, said out loud): a polite stop
        // withdraws, then detaches.
        let settings = "hash_seed: 0xc0ffee\n\
             limits: { max_services: 4, max_backends: 8, maglev_table_size: 65537, flow_table_size: 65536 }\n\
             on_exit: detach\n";
        let daemons = (1..=NODES)
            .map(|k| {
                let mut settings = settings.to_string();
                if flow_sync {
                    settings += &net.flow_sync_settings(k);
                }
                let yaml = net.node_config(k, &settings, &services);
                net.start_daemon(k, xdplb_bin!(), &yaml)
                    .unwrap_or_else(|e| panic!("node {k}: {e:#}"))
            })
            .collect();
        Bed {
            mode,
            vip,
            daemons,
            _servers: servers,
            net,
        }
    }

    /// Waits until the router's route to the VIP has `n` next hops.
    #[track_caller]
    fn wait_next_hops(&self, n: usize) {
        let vip = self.vip.ip();
        assert!(
            wait_until(WAIT, || self.net.next_hops(vip).len() == n),
            "the router's route to {vip} has {:?}, not {n} next hops\n{}\n{}",
            self.net.next_hops(vip),
            self.net
                .router()
                .birdc(&["show", "protocols"])
                .unwrap_or_default(),
            self.daemons[FAILED - 1].log()
        );
    }

    fn daemon(&mut self, k: usize) -> &mut Daemon {
        &mut self.daemons[k - 1]
    }

    /// The clients of node `k`'s flows to the VIP (from its flow table).
    /// Packets the nodes other than [`FAILED`] handed to the owner of their
    /// flow (`owner_forward`), so far.
    fn handed_to_owner(&self) -> f64 {
        (1..=NODES)
            .filter(|&k| k != FAILED)
            .map(|k| {
                let m = self.daemons[k - 1]
                    .metrics()
                    .unwrap_or_else(|e| panic!("node {k}'s metrics: {e:#}"));
                metric_sum(
                    &m,
                    "xdplb_dataplane_events_total",
                    &[("event", "owner_forward")],
                )
            })
            .sum()
    }

    fn clients_of(&self, k: usize) -> BTreeSet<SocketAddr> {
        let flows = self.daemons[k - 1]
            .flows()
            .unwrap_or_else(|e| panic!("node {k}'s flow table: {e:#}"));
        flows
            .into_iter()
            .filter(|(_, vip)| *vip == self.vip)
            .map(|(client, _)| client)
            .collect()
    }

    /// `xdplb node STATE` on node `k`.
    fn set_node(&self, k: usize, state: &str) {
        let out = self
            .net
            .cli(k, xdplb_bin!(), &["node", state])
            .unwrap_or_else(|e| panic!("xdplb node {state} on node {k}: {e:#}"));
        assert!(out.starts_with(&format!("node: {state}")), "{out}");
    }

    fn fail(&mut self, failure: Failure) {
        match failure {
            Failure::Drain => self.set_node(FAILED, "drain"),
            Failure::Stop => self.daemon(FAILED).send_sigterm(),
            Failure::Cut => self.net.cut_node(FAILED).unwrap(),
        }
    }

    /// Brings node [`FAILED`] back after `failure` and waits until the
    /// router uses it again; how long that took.
    fn restore(&mut self, failure: Failure) -> Duration {
        let start = Instant::now();
        match failure {
            Failure::Drain => self.set_node(FAILED, "ready"),
            Failure::Stop => self.daemon(FAILED).restart().unwrap(),
            Failure::Cut => unreachable!("a cut node stays down"),
        }
        self.wait_next_hops(NODES);
        start.elapsed()
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        if self.mode == Mode::Tunnel {
            for i in 1..=BACKENDS {
                vip_backend::detach_decap(&self.net.backend_ns(i));
            }
        }
    }
}

/// What one failure did to the streams (stream numbers index `STREAMS`).
struct Measured {
    failure: Failure,
    /// Streams per node before the failure.
    spread: Vec<usize>,
    /// The streams node [`FAILED`] carried.
    on_failed: BTreeSet<usize>,
    /// The streams found on a node other than their first after it: ECMP
    /// moved them.
    moved: BTreeSet<usize>,
    /// Each broken stream's first failure.
    broken: BTreeMap<usize, Outcome>,
    /// The streams that went longer than [`STALL`] without an answer.
    stalled: BTreeSet<usize>,
    longest_stall: Duration,
    /// From the failure until the router dropped the node's next hop.
    converged: Duration,
    /// Packets the surviving nodes handed to the node owning their flow
    /// (flow sync), from the failure until the streams stopped.
    handed_to_owner: f64,
}

impl Measured {
    fn print(&self, mode: Mode) {
        let (tag, mode) = (self.failure.tag(), mode.name());
        let on_failed = self.on_failed.len();
        let broken_failed = self
            .broken
            .keys()
            .filter(|s| self.on_failed.contains(s))
            .count();
        println!(
            "HA_SPREAD {mode} {:?}: {STREAMS} streams, per node {:?}",
            self.failure, self.spread
        );
        println!(
            "{tag} {mode}: node {FAILED} of {NODES} {}; the router dropped its next hop after {} ms; \
             {} streams moved to a new flow on another node ({} of node {FAILED}'s, {} between the others); \
             {} stalled over {} ms, the longest {} ms; \
             {} of {STREAMS} streams broken ({broken_failed} of node {FAILED}'s {on_failed}); \
             {} packets handed to their flow's owner",
            self.failure.what(),
            self.converged.as_millis(),
            self.moved.len(),
            self.moved.intersection(&self.on_failed).count(),
            self.moved.difference(&self.on_failed).count(),
            self.stalled.len(),
            STALL.as_millis(),
            self.longest_stall.as_millis(),
            self.broken.len(),
            self.handed_to_owner,
        );
    }

    #[track_caller]
    fn check(&self, expect: Expect) {
        let broken: BTreeSet<usize> = self.broken.keys().copied().collect();
        // The failure was real: every stream node 1 carried reached another
        // node (and went on or broke there), or broke (a nat stream waiting
        // for an answer that node 1 took down with it sends nothing more).
        // With flow sync a drained node's streams go on through the node
        // they reach, handed back to it without a flow there: the hand-offs
        // show it (each stream makes 20 requests a second).
        if expect == Expect::OwnersKeepTheirs && self.failure == Failure::Drain {
            assert!(
                self.handed_to_owner >= 50.0 * self.on_failed.len() as f64,
                "drain: {} packets handed to node {FAILED} for its {} streams",
                self.handed_to_owner,
                self.on_failed.len()
            );
        } else {
            let gone: BTreeSet<usize> = self.moved.union(&broken).copied().collect();
            assert!(
                self.on_failed.is_subset(&gone),
                "{:?}: streams of node {FAILED} {:?}, moved {:?}, broken {broken:?}",
                self.failure,
                self.on_failed,
                self.moved
            );
        }
        if self.failure == Failure::Cut {
            // And they all waited for the hold time: nothing withdrew.
            assert!(
                self.on_failed.is_subset(&self.stalled),
                "cut: streams of node {FAILED} {:?}, stalled {:?}",
                self.on_failed,
                self.stalled
            );
        }
        let may_break = match expect {
            Expect::NoneBroken => BTreeSet::new(),
            Expect::OnlyMovedBreak => self.moved.union(&self.on_failed).copied().collect(),
            Expect::OwnersKeepTheirs if self.failure == Failure::Drain => BTreeSet::new(),
            Expect::OwnersKeepTheirs => self.on_failed.clone(),
        };
        let unexpected: Vec<_> = self
            .broken
            .iter()
            .filter(|(s, _)| !may_break.contains(s))
            .collect();
        assert!(
            unexpected.is_empty(),
            "{:?}: broken streams {unexpected:?}",
            self.failure
        );
    }
}

/// For each stream, the longest it went without an answer after the
/// failure (`at`, on the stream's own clock), counted from its last answer
/// before it (or from `at`).
fn stalls(outcomes: &[Vec<Outcome>], at: &[Duration]) -> Vec<Duration> {
    outcomes
        .iter()
        .zip(at)
        .map(|(o, &at)| {
            let mut prev = at;
            let mut worst = Duration::ZERO;
            for end in o.iter().map(|o| o.end).filter(|&e| e > at) {
                worst = worst.max(end - prev);
                prev = end;
            }
            worst
        })
        .collect()
}

/// Fresh streams spread over every node; `failure` hits node 1; what it
/// did to them.
fn measure(bed: &mut Bed, failure: Failure) -> Measured {
    bed.wait_next_hops(NODES);
    let hops = bed.net.next_hops(bed.vip.ip());
    for k in 1..=NODES {
        assert!(
            hops.contains(&IpAddr::V4(node_addr(k))),
            "node {k} is a next hop: {hops:?}"
        );
    }
    let cli = bed.net.client_ns();
    // Each phase's streams from source ports of their own: a port an
    // earlier phase used may still have a flow on some node (a broken nat
    // stream's), which would place a new stream on two nodes.
    let first = 40_000 + 5_000 * failure as u32;
    netns::run_in(&cli, || {
        Ok(std::fs::write(
            "/proc/sys/net/ipv4/ip_local_port_range",
            format!("{first} {}", first + 4_999),
        )?)
    })
    .unwrap();
    let streams: Vec<Stream> = (0..STREAMS)
        .map(|s| {
            Stream::start_paced(
                &cli,
                bed.vip,
                200,
                Duration::from_millis(50),
                Duration::from_secs(20),
            )
            .unwrap_or_else(|e| panic!("stream {s}: {e:#}"))
        })
        .collect();
    for (s, stream) in streams.iter().enumerate() {
        stream
            .backend()
            .unwrap_or_else(|e| panic!("stream {s}: {e}"));
    }
    // Which node carries each stream: the one whose flow table holds it.
    let clients: Vec<SocketAddr> = streams.iter().map(Stream::local_addr).collect();
    let held: Vec<BTreeSet<SocketAddr>> = (1..=NODES).map(|k| bed.clients_of(k)).collect();
    let carrier: Vec<usize> = clients
        .iter()
        .map(|c| {
            let on: Vec<usize> = (1..=NODES).filter(|&k| held[k - 1].contains(c)).collect();
            assert_eq!(on.len(), 1, "stream from {c} is on nodes {on:?}");
            on[0]
        })
        .collect();
    let spread: Vec<usize> = (1..=NODES)
        .map(|k| carrier.iter().filter(|&&n| n == k).count())
        .collect();
    assert!(
        spread.iter().all(|&n| n > 0),
        "every node carries streams: {spread:?}"
    );

    let handed_before = bed.handed_to_owner();
    let failed_at = Instant::now();
    let at: Vec<Duration> = streams.iter().map(Stream::elapsed).collect();
    bed.fail(failure);
    bed.wait_next_hops(NODES - 1);
    let converged = failed_at.elapsed();
    assert!(
        !bed.net
            .next_hops(bed.vip.ip())
            .contains(&IpAddr::V4(node_addr(FAILED)))
    );
    // Every stream answers again (or broke), well after the reroute. Where
    // the streams go meanwhile: the surviving nodes' flow tables, sampled
    // throughout (a moved nat stream that broke leaves only an unconfirmed
    // flow, swept within seconds).
    let settle = failed_at.elapsed() + Duration::from_secs(3);
    let waiting = AtomicBool::new(true);
    let moved = std::thread::scope(|scope| {
        let bed = &*bed;
        let (clients, carrier, waiting) = (&clients, &carrier, &waiting);
        let sampler = scope.spawn(move || {
            let mut moved = BTreeSet::new();
            loop {
                let last = !waiting.load(Ordering::Relaxed);
                for k in (1..=NODES).filter(|&k| k != FAILED) {
                    let held = bed.clients_of(k);
                    moved.extend(
                        (0..STREAMS).filter(|&s| carrier[s] != k && held.contains(&clients[s])),
                    );
                }
                if last {
                    return moved;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        for (stream, &at) in streams.iter().zip(&at) {
            stream.wait_for(WAIT, |o| {
                o.iter().any(|o| o.start > at + settle) || o.last().is_some_and(|o| !o.ok())
            });
        }
        waiting.store(false, Ordering::Relaxed);
        sampler.join().expect("the flow table sampler")
    });
    let outcomes: Vec<Vec<Outcome>> = streams.into_iter().map(Stream::stop).collect();
    let handed_to_owner = bed.handed_to_owner() - handed_before;
    let broken = outcomes
        .iter()
        .enumerate()
        .filter_map(|(s, o)| o.iter().find(|o| !o.ok()).map(|o| (s, o.clone())))
        .collect();
    let stalls = stalls(&outcomes, &at);
    Measured {
        failure,
        spread,
        on_failed: (0..STREAMS).filter(|&s| carrier[s] == FAILED).collect(),
        moved,
        broken,
        stalled: (0..STREAMS).filter(|&s| stalls[s] > STALL).collect(),
        longest_stall: stalls.iter().copied().max().unwrap_or_default(),
        converged,
        handed_to_owner,
    }
}

/// One bed for `mode`, through every [`Failure`] of node 1 in turn, with
/// or without flow sync.
fn failovers(mode: Mode, vip: Ipv4Addr, flow_sync: bool, expect: Expect) {
    // One bed at a time: each is 3 daemons, 3 BIRDs and 60 streams.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let mut bed = Bed::start(mode, vip, flow_sync);
    bed.wait_next_hops(NODES);
    explain_agrees(&bed);
    for failure in Failure::ALL {
        let m = measure(&mut bed, failure);
        m.print(mode);
        if failure == Failure::Stop {
            // The polite stop withdrew, then exited cleanly.
            let d = bed.daemon(FAILED);
            let status = d.sigterm().unwrap();
            let log = d.log();
            assert!(status.success(), "node {FAILED} exited {status}:\n{log}");
            assert!(log.contains("bgp: withdrew every VIP"), "{log}");
        }
        m.check(expect);
        if failure != Failure::Cut {
            let back = bed.restore(failure);
            println!(
                "{} {}: node {FAILED} back, the router has its next hop again after {} ms",
                failure.tag(),
                mode.name(),
                back.as_millis()
            );
        }
    }
}

/// `xdplb explain` asked of every running node names the same backend for
/// each of 200 flows (the same config and hash_seed on every node).
fn explain_agrees(bed: &Bed) {
    let vip = bed.vip;
    for port in 50_000..50_200u16 {
        let src = SocketAddr::new(CLIENT_ADDR.into(), port);
        let answers: Vec<_> = (1..=NODES)
            .map(|k| {
                netns::run_in(&bed.net.node_ns(k), || {
                    Ok(Client::new(ADMIN, None).explain(src, vip, Protocol::Tcp))
                })
                .unwrap()
                .unwrap_or_else(|e| panic!("explain on node {k}: {e}"))
                .backend
            })
            .collect();
        assert!(answers[0].is_some(), "{src}: no backend");
        assert!(
            answers.iter().all(|a| *a == answers[0]),
            "{src} -> {vip}: the nodes' explain disagree: {answers:?}"
        );
    }
    println!(
        "HA_EXPLAIN {}: xdplb explain on {NODES} running nodes agrees for 200 of 200 flows",
        bed.mode.name()
    );
}

#[test]
fn dsr_streams_survive_a_drain_a_stop_and_a_failure_of_a_node() {
    failovers(
        Mode::Dsr,
        Ipv4Addr::new(198, 18, 100, 20),
        false,
        Expect::NoneBroken,
    );
}

#[test]
fn tunnel_streams_survive_a_drain_a_stop_and_a_failure_of_a_node() {
    failovers(
        Mode::Tunnel,
        Ipv4Addr::new(198, 18, 100, 40),
        false,
        Expect::NoneBroken,
    );
}

/// nat without flow sync: each stream's SNAT port lives on the node that
/// carries it, so a stream ECMP moves breaks; the figures say how many.
#[test]
fn nat_streams_break_only_where_ecmp_moves_them() {
    failovers(
        Mode::Nat,
        Ipv4Addr::new(198, 18, 100, 10),
        false,
        Expect::OnlyMovedBreak,
    );
}

/// nat with flow sync: moved streams are handed to their owner, so none
/// breaks on a drain, and on a stop or a cut only node 1's own do.
#[test]
fn nat_streams_with_flow_sync_follow_their_owner() {
    failovers(
        Mode::Nat,
        Ipv4Addr::new(198, 18, 100, 12),
        true,
        Expect::OwnersKeepTheirs,
    );
}
