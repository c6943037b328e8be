//! Fault injection (issue 13): the real daemon in the reference topology
//! while things break under it, real servers and clients running
//! throughout. Each fault's outcome is the one docs/operations.md states
//! ("Faults and what xdplb does"). Needs root, the built XDP program,
//! nsenter and unshare (util-linux) and nft (nftables).

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use lb_common::{ServiceKey, ServiceMeta};
use lb_testbed::backend_http as backend;
use lb_testbed::{
    ADMIN, Daemon, HttpServer, Load, Outcome, Outcomes, Stream, Topology, backend_addr,
    fixtures::{backend as backend_yaml, service},
    http_get, metric_sum, netns, wait_answering, wait_until, xdplb_bin,
};
use xdplb::{
    api_types::{Effective, Health},
    client::Client,
};

const VIP: &str = "198.18.100.10:80";
/// How long a test waits for what must happen: far more than a working
/// daemon needs; the tests count events rather than sleep.
const PATIENCE: Duration = Duration::from_secs(20);
const ZERO: Duration = Duration::ZERO;
/// Health checks where a test needs them: every 100 ms, down after 3
/// failures (the detection window docs/operations.md gives).
const HEALTH: &str =
    "health_check: { type: tcp, interval: 100ms, timeout: 100ms, rise: 2, fall: 3 }";

fn vip() -> SocketAddr {
    VIP.parse().unwrap()
}

fn name(i: usize) -> String {
    format!("backend-{i}")
}

/// Service `web` on [`VIP`] over `backends` (indexes) with `keys`, plus
/// `extra` services (VIPs 198.18.100.11.., same backends), and `settings`.
fn config(
    topo: &Topology,
    backends: &[usize],
    keys: &[&str],
    extra: usize,
    settings: &str,
) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|i| backend_yaml(backend_addr(*i), 8080))
        .collect();
    let mut services = vec![service(
        "web",
        "198.18.100.10",
        80,
        &[&["protocol: tcp"], keys].concat(),
        &list,
    )];
    for k in 0..extra {
        services.push(service(
            &format!("extra{k}"),
            format!("198.18.100.{}", 11 + k),
            80,
            &["protocol: tcp"],
            &list,
        ));
    }
    topo.daemon_config(
        &format!(
            "snat: {{ ipv4: 198.18.1.1, ports: 20000-29999 }}\n\
             limits: {{ max_services: 64, max_backends: 256, maglev_table_size: 65537, flow_table_size: 65536 }}\n\
             {settings}"
        ),
        &services,
    )
}

struct Bed {
    topo: Topology,
    servers: Vec<Option<HttpServer>>,
    daemon: Daemon,
}

impl Bed {
    /// `n` backend namespaces with a server each, and the daemon.
    fn new(n: usize, yaml: impl FnOnce(&Topology) -> String) -> Bed {
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
        assert!(
            wait_answering(&bed.client_ns(), vip(), PATIENCE),
            "no answer through the VIP:\n{}",
            bed.daemon.log()
        );
        bed
    }

    fn client_ns(&self) -> String {
        self.topo.client_ns()
    }

    fn lb_ns(&self) -> String {
        self.topo.lb_ns()
    }

    /// An API call from inside the LB namespace.
    fn api<T: Send>(&self, f: impl FnOnce(&Client) -> T + Send) -> T {
        netns::run_in(&self.lb_ns(), || Ok(f(&Client::new(ADMIN, None)))).unwrap()
    }

    fn health(&self, i: usize) -> (Health, Effective) {
        let services = self.api(|c| c.services()).unwrap();
        services[0]
            .backends
            .iter()
            .find(|b| b.address == backend(i))
            .map(|b| (b.health, b.effective))
            .expect("backend listed")
    }

    /// Waits until the daemon's log holds `needle` `times` times.
    #[track_caller]
    fn wait_log(&self, needle: &str, times: usize) {
        assert!(
            wait_until(PATIENCE, || self.daemon.log().matches(needle).count()
                >= times),
            "the daemon never logged {needle:?} ({times}x):\n{}",
            self.daemon.log()
        );
    }

    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_sum(&self.daemon.metrics().unwrap(), name, labels)
    }
}

fn start_server(topo: &Topology, i: usize) -> HttpServer {
    HttpServer::start(&topo.backend_ns(i), backend(i), &name(i)).unwrap()
}

/// Whether `dev` in `ns` has an XDP program.
fn xdp_on(ns: &str, dev: &str) -> bool {
    netns::ip(&["-n", ns, "link", "show", "dev", dev])
        .unwrap()
        .contains("prog/xdp")
}

/// Files and pin dirs a test makes outside the daemon's own; removed on
/// drop, even after a failed assertion.
struct Scratch(Vec<PathBuf>);

impl Scratch {
    fn file(&mut self, path: PathBuf, text: &str) -> PathBuf {
        fs::write(&path, text).unwrap();
        self.0.push(path.clone());
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = fs::remove_file(p).or_else(|_| fs::remove_dir_all(p));
        }
    }
}

/// Runs `cmd` (a command that must end by itself: a refused start) to its
/// end; its status and output. Killed after PATIENCE.
fn run_to_end(cmd: &mut Command, out: &Path) -> (ExitStatus, String) {
    let log = fs::File::create(out).unwrap();
    let mut child = cmd
        .env("XDPLB_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > PATIENCE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} still runs after {PATIENCE:?}:\n{}",
                fs::read_to_string(out).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, fs::read_to_string(out).unwrap_or_default())
}

/// `xdplb ARGS` in network namespace `ns` only (the host's mount
/// namespace), as the docs say to run it.
fn nsenter(ns: &str) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{ns}")).arg(xdplb_bin!());
    cmd
}

/// Every failure overlaps one of `windows` (times on the client's clock).
#[track_caller]
fn failures_only_in(outcomes: &[Outcome], windows: &[(Duration, Duration)]) {
    for f in outcomes.failures() {
        assert!(
            windows.iter().any(|(from, to)| f.overlaps(*from, *to)),
            "a failure outside the fault windows {windows:?}: {f:?}"
        );
    }
}

#[test]
fn an_interface_deleted_and_created_again_gets_the_program_again_and_link_down_is_ridden_out() {
    let bed = Bed::new(2, |t| config(t, &[1, 2], &[], 0, ""));
    let lb = bed.lb_ns();
    let load = Load::start(&bed.client_ns(), vip(), Duration::from_millis(10));
    assert!(load.wait_for(PATIENCE, |o| o.len() >= 20));
    let probe = |path: &str| http_get(&lb, ADMIN.parse().unwrap(), path, PATIENCE).unwrap();
    assert_eq!(probe("/readyz"), (200, "ready\n".into()));
    assert_eq!(probe("/livez"), (200, "ok\n".into()));

    // The backend-side interface is deleted: the program goes with it, and
    // the daemon is not ready (its readiness probe says where it is missing).
    let deleted_at = load.elapsed();
    bed.topo.delete_lb_backend_if().unwrap();
    bed.wait_log("lbb (ifindex", 1);
    assert!(
        bed.daemon
            .log()
            .contains("was deleted, and the XDP program with it")
    );
    assert_eq!(probe("/readyz"), (503, "not attached to lbb\n".into()));
    assert_eq!(probe("/livez").0, 200);
    // ... and created again: a new device, which gets the program.
    bed.topo.create_lb_backend_if().unwrap();
    bed.wait_log("lbb is back", 1);
    let back_at = load.elapsed();
    assert!(xdp_on(&lb, "lbb"), "the program is on the new lbb");
    assert_eq!(probe("/readyz"), (200, "ready\n".into()));
    let pin = Path::new(&bed.topo.pin_dir()).join("link-lbb");
    assert!(pin.exists(), "the new link is pinned (a restart keeps it)");
    assert!(
        load.wait_for(PATIENCE, |o| o.started_since(back_at) >= 30
            && (1..=2).all(|i| o.served_by_since(&name(i), back_at) > 0)),
        "traffic through the new lbb:\n{}",
        bed.daemon.log()
    );
    let first_ok = load
        .outcomes()
        .iter()
        .find(|o| o.start >= back_at && o.ok())
        .map(|o| o.end - back_at);

    // The client-side link goes down and up: the program stays attached.
    let down_at = load.elapsed();
    netns::ip(&["-n", &lb, "link", "set", "lbc", "down"]).unwrap();
    bed.wait_log("lbc: link down", 1);
    assert!(
        xdp_on(&lb, "lbc"),
        "the program stays on a link that is down"
    );
    netns::ip(&["-n", &lb, "link", "set", "lbc", "up"]).unwrap();
    bed.wait_log("lbc: link up", 1);
    let up_at = load.elapsed();
    assert!(
        load.wait_for(PATIENCE, |o| o.started_since(up_at) >= 30
            && o.iter().filter(|o| o.start >= up_at).all(Outcome::ok)),
        "traffic after link up: {:?}",
        load.outcomes().failures().last()
    );
    let outcomes = load.stop();
    println!(
        "{} requests, {} failed; first answer {first_ok:?} after the re-attach",
        outcomes.len(),
        outcomes.failures().len()
    );
    // Requests fail while the interface is gone or down (and one in flight
    // then may run on to its 2 s timeout), never after.
    let grace = Duration::from_secs(3);
    failures_only_in(
        &outcomes,
        &[(deleted_at, back_at + grace), (down_at, up_at + grace)],
    );
    let log = bed.daemon.log();
    assert_eq!(log.matches("was deleted, and").count(), 1, "{log}");
    assert_eq!(log.matches("re-attached in").count(), 1, "{log}");
}

#[test]
fn pins_need_the_hosts_bpf_filesystem_and_a_refusal_names_the_fix() {
    let topo = Topology::create(1).expect("topology");
    let (lb, be) = (topo.lb_ns(), topo.backend_ns(1));
    let mut scratch = Scratch(Vec::new());
    let tmp = std::env::temp_dir();
    let services = [service("web", "198.18.100.10", 80, &[], &[])];
    let settings = "snat: { ipv4: 198.18.1.1 }";
    let out = tmp.join(format!("{}pins.out", topo.prefix()));
    scratch.0.push(out.clone());
    let no_program = || {
        for dev in ["lbc", "lbb"] {
            assert!(!xdp_on(&lb, dev), "{dev} has a program");
        }
    };

    // pin_dir on another filesystem: a clear error, nothing made.
    let elsewhere = tmp.join(format!("{}not-bpffs", topo.prefix()));
    let yaml = topo
        .daemon_config(settings, &services)
        .replace(&topo.pin_dir(), &elsewhere.to_string_lossy());
    let cfg = scratch.file(tmp.join(format!("{}elsewhere.yaml", topo.prefix())), &yaml);
    let (status, text) = run_to_end(nsenter(&lb).args(["run", "--config"]).arg(&cfg), &out);
    assert!(!status.success(), "{text}");
    assert!(text.contains("is not on a bpf filesystem"), "{text}");
    assert!(text.contains(&*elsewhere.to_string_lossy()), "{text}");
    assert!(!elsewhere.exists());
    no_program();

    // `ip netns exec`: a /sys of its own, pins that would vanish. Refused,
    // naming the namespace in the fix.
    let fix = format!("nsenter --net=/run/netns/{lb} xdplb");
    let cfg = scratch.file(
        tmp.join(format!("{}netns-exec.yaml", topo.prefix())),
        &topo.daemon_config(settings, &services),
    );
    let (status, text) = run_to_end(
        netns::command(&lb, &xdplb_bin!().to_string_lossy())
            .args(["run", "--config"])
            .arg(&cfg),
        &out,
    );
    assert!(!status.success(), "{text}");
    assert!(text.contains("mount namespace of its own"), "{text}");
    assert!(text.contains(&fix), "{text}");
    assert!(
        !Path::new(&topo.pin_dir()).exists(),
        "no pin dir on the host"
    );
    no_program();

    // The decapsulator likewise; through nsenter it attaches and stays.
    let (status, text) = run_to_end(
        netns::command(&be, &xdplb_bin!().to_string_lossy()).args(["decap", "attach", "eth0"]),
        &out,
    );
    assert!(!status.success(), "{text}");
    assert!(
        text.contains(&format!("nsenter --net=/run/netns/{be} xdplb")),
        "{text}"
    );
    assert!(!xdp_on(&be, "eth0"));
    let decap = |args: &[&str]| run_to_end(nsenter(&be).arg("decap").args(args), &out);
    let (status, text) = decap(&["attach", "eth0"]);
    assert!(status.success(), "{text}");
    assert!(
        xdp_on(&be, "eth0"),
        "attached, and still there after the command"
    );
    // Its device deleted and created again: the pinned link is stale, and
    // attaching again replaces it.
    netns::ip(&["-n", &be, "link", "del", "eth0"]).unwrap();
    netns::ip(&[
        "-n", &be, "link", "add", "eth0", "type", "veth", "peer", "name", "be1x",
    ])
    .unwrap();
    let (status, text) = decap(&["attach", "eth0"]);
    assert!(status.success(), "{text}");
    assert!(xdp_on(&be, "eth0"), "{text}");
    let (status, text) = decap(&["detach", "eth0"]);
    assert!(status.success(), "{text}");
    assert!(!xdp_on(&be, "eth0"));

    // A container (a PID namespace of its own) without the host's bpffs:
    // one it mounted would go with it. Refused too.
    let (status, text) = run_to_end(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--pid", "--fork"])
            .args([
                "sh",
                "-c",
                "mount -t tmpfs none /sys/fs/bpf && exec \"$@\"",
                "sh",
            ])
            .arg("nsenter")
            .arg(format!("--net=/run/netns/{be}"))
            .arg(xdplb_bin!())
            .args(["decap", "attach", "eth0"]),
        &out,
    );
    assert!(!status.success(), "{text}");
    assert!(text.contains("runs in a container"), "{text}");
    assert!(text.contains("-v /sys/fs/bpf:/sys/fs/bpf"), "{text}");
    assert!(!xdp_on(&be, "eth0"));
}

#[test]
fn a_config_deleted_or_truncated_is_refused_by_name_and_nothing_changes() {
    let bed = Bed::new(2, |t| config(t, &[1, 2], &[], 0, ""));
    let path = bed.daemon.config_path().to_owned();
    let good = fs::read_to_string(&path).unwrap();
    let before = bed.api(|c| c.services()).unwrap();
    let load = Load::start(&bed.client_ns(), vip(), Duration::from_millis(10));
    assert!(load.wait_for(PATIENCE, |o| o.len() >= 20));

    // Each broken file, through SIGHUP and through the API.
    let cut = good.find("vip: \"198.18.100.10\"").unwrap() + 10;
    let broken: [(&str, Option<&str>, &str); 3] = [
        ("deleted", None, "No such file or directory"),
        ("emptied", Some(""), "the file is empty"),
        (
            "cut inside a value",
            Some(&good[..cut]),
            "YAML syntax error",
        ),
    ];
    for (n, (what, text, says)) in broken.iter().enumerate() {
        match text {
            None => fs::remove_file(&path).unwrap(),
            Some(t) => fs::write(&path, t).unwrap(),
        }
        bed.daemon.reload(None).unwrap();
        bed.wait_log("SIGHUP: reload refused, nothing changed", n + 1);
        let line = bed
            .daemon
            .log()
            .lines()
            .rfind(|l| l.contains("reload refused"))
            .unwrap()
            .to_owned();
        assert!(line.contains(&*path.to_string_lossy()), "{what}: {line}");
        assert!(line.contains(says), "{what}: {line}");
        let err = bed.api(|c| c.reload()).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{what}: a 4xx answer: {err}");
        let err = err.to_string();
        assert!(
            err.contains(&*path.to_string_lossy()) && err.contains(says),
            "{what}: {err}"
        );
    }
    fs::write(&path, &good).unwrap();

    let after = bed.api(|c| c.services()).unwrap();
    let shape = |s: &[xdplb::api_types::Service]| {
        s.iter()
            .map(|s| {
                let b: Vec<_> = s
                    .backends
                    .iter()
                    .map(|b| (b.address, b.effective))
                    .collect();
                (s.name.clone(), s.vip, b)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(shape(&before), shape(&after));
    let at = load.elapsed();
    assert!(load.wait_for(PATIENCE, |o| o.started_since(at) >= 20));
    let outcomes = load.stop();
    assert!(outcomes.failures().is_empty(), "{:?}", outcomes.failures());
}

/// The services the pinned SERVICES map holds (two entries per service
/// with an ICMP echo entry; these have none).
fn pinned_services(pin_dir: &str) -> usize {
    let map = MapData::from_pin(Path::new(pin_dir).join("SERVICES"))
        .and_then(Map::from_map_data)
        .unwrap();
    let services = BpfHashMap::<_, ServiceKey, ServiceMeta>::try_from(&map).unwrap();
    services.keys().count()
}

#[test]
fn sigkill_in_the_middle_of_a_reload_loses_nothing_and_the_restart_completes_it() {
    let mut bed = Bed::new(3, |t| config(t, &[1, 2, 3], &[], 0, ""));
    let stream = Stream::start(&bed.client_ns(), vip(), 64 * 1024).unwrap();
    let held = stream.backend().unwrap();
    let load = Load::start(&bed.client_ns(), vip(), Duration::from_millis(10));
    assert!(load.wait_for(PATIENCE, |o| o.len() >= 20));

    // Each reload adds 15 services (a Maglev ring of 65537 entries each),
    // and the daemon is killed: before it writes anything, once the first
    // new service is in the maps, once half of them are.
    let dir = bed.topo.pin_dir();
    for (round, written) in [0usize, 1, 8].into_iter().enumerate() {
        let services = 1 + 15 * (round + 1);
        let yaml = config(&bed.topo, &[1, 2, 3], &[], services - 1, "");
        let before = pinned_services(&dir);
        bed.daemon.reload(Some(&yaml)).unwrap();
        let start = Instant::now();
        while pinned_services(&dir) < before + written && start.elapsed() < PATIENCE {
            std::thread::sleep(Duration::from_micros(200));
        }
        bed.daemon.kill().unwrap();
        let at_kill = pinned_services(&dir);
        println!(
            "killed with {at_kill} of {services} services written (before the reload: {before})"
        );
        if written > 0 {
            assert!(
                before < at_kill && at_kill < services,
                "killed in the middle: {at_kill} of {services}"
            );
        }
        let at = (load.elapsed(), stream.elapsed());
        bed.daemon.restart().unwrap();
        // The restart applies the file whole.
        let listed = bed.api(|c| c.services()).unwrap();
        assert_eq!(listed.len(), services, "after round {round}");
        assert_eq!(pinned_services(&dir), services, "after round {round}");
        assert!(
            load.wait_for(PATIENCE, |o| o.started_since(at.0) >= 20)
                && stream.wait_for(PATIENCE, |o| o.started_since(at.1) >= 3
                    || o.last().is_some_and(|o| !o.ok())),
            "traffic after round {round}"
        );
    }
    // A new service of the last reload answers.
    assert!(wait_answering(
        &bed.client_ns(),
        "198.18.100.40:80".parse().unwrap(),
        PATIENCE
    ));
    let streamed = stream.stop();
    let outcomes = load.stop();
    println!(
        "stream: {} requests; new connections: {} ({} failed)",
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
    assert_eq!(bed.daemon.log().matches("adopting pinned maps").count(), 3);
}

#[test]
fn a_blackholing_backend_and_a_refusing_one_are_both_down_within_the_detection_window() {
    let mut bed = Bed::new(3, |t| config(t, &[1, 2, 3], &[HEALTH], 0, ""));
    let load = Load::start(&bed.client_ns(), vip(), Duration::from_millis(5));
    assert!(load.wait_for(PATIENCE, |o| {
        (1..=3).all(|i| o.served_by_since(&name(i), ZERO) > 0)
    }));
    // fall x interval, plus the timeout for a silent backend: 400 ms; the
    // rest is slack for a slow machine.
    let window = Duration::from_millis(3 * 100 + 100);
    let slack = Duration::from_secs(1);

    // backend-1 refuses: its server is gone, the kernel answers RST.
    let refused_at = load.elapsed();
    let t = Instant::now();
    bed.servers[0] = None;
    assert!(wait_until(PATIENCE, || bed.health(1)
        == (Health::Down, Effective::Down)));
    let refused_took = t.elapsed();
    let refused_seen = load.elapsed();

    // backend-2 blackholes: its SYNs are dropped, nothing answers.
    let be2 = bed.topo.backend_ns(2);
    let nft = |rule: &str| {
        netns::run(netns::command(&be2, "nft").args(rule.split(' '))).unwrap();
    };
    nft("add table inet fault");
    nft("add chain inet fault input { type filter hook input priority 0 ; }");
    let blackholed_at = load.elapsed();
    let t = Instant::now();
    nft("add rule inet fault input tcp dport 8080 drop");
    assert!(wait_until(PATIENCE, || bed.health(2)
        == (Health::Down, Effective::Down)));
    let blackholed_took = t.elapsed();
    let blackholed_seen = load.elapsed();

    let after = load.elapsed();
    assert!(load.wait_for(PATIENCE, |o| o.started_since(after) >= 50));
    let outcomes = load.stop();
    let in_window = |from: Duration, to: Duration| {
        let o: Vec<&Outcome> = outcomes.iter().filter(|o| o.overlaps(from, to)).collect();
        let failed = o.iter().filter(|o| !o.ok()).count();
        let slow = o
            .iter()
            .filter(|o| o.ok() && o.end - o.start > Duration::from_millis(900))
            .count();
        (o.len(), failed, slow)
    };
    println!(
        "refusing: down after {refused_took:?}, requests (all, failed, slow) {:?}; \
         blackholing: down after {blackholed_took:?}, {:?}",
        in_window(refused_at, refused_seen),
        in_window(blackholed_at, blackholed_seen),
    );
    assert!(refused_took < window + slack, "{refused_took:?}");
    assert!(blackholed_took < window + slack, "{blackholed_took:?}");
    // A refusing backend fails its new connections at once (RST); a
    // blackholing one stalls them until the SYN's retransmission, 1 s
    // later, which goes to another backend once it is down: slow, not
    // failed. A connection it had already accepted breaks when it is
    // marked down (its flow moves on, and the new backend resets it).
    failures_only_in(
        &outcomes,
        &[(refused_at, refused_seen), (blackholed_at, blackholed_seen)],
    );
    for f in outcomes.failures() {
        if f.overlaps(blackholed_at, blackholed_seen) {
            let e = f.result.as_ref().unwrap_err();
            assert!(
                e.contains("reset"),
                "only accepted connections break: {f:?}"
            );
        }
    }
    assert!(
        outcomes
            .iter()
            .filter(|o| o.start > blackholed_seen)
            .all(|o| o.result.as_deref() == Ok("backend-3")),
        "after both are down, backend-3 takes everything"
    );
}

#[test]
fn a_next_hops_neighbour_entry_removed_or_failed_is_resolved_again() {
    // No health checks: nothing but the data plane needs the neighbours.
    let bed = Bed::new(2, |t| config(t, &[1, 2], &[], 0, ""));
    let lb = bed.lb_ns();
    let stream = Stream::start(&bed.client_ns(), vip(), 64 * 1024).unwrap();
    let held = stream.backend().unwrap();
    let load = Load::start(&bed.client_ns(), vip(), Duration::from_millis(10));
    assert!(load.wait_for(PATIENCE, |o| o.len() >= 20));
    let misses = || bed.metric("xdplb_dataplane_events_total", &[("event", "neigh_miss")]);
    let traffic_since = |round: &str| {
        let at = (load.elapsed(), stream.elapsed());
        assert!(
            load.wait_for(PATIENCE, |o| o.started_since(at.0) >= 20)
                && stream.wait_for(PATIENCE, |o| o.started_since(at.1) >= 3
                    || o.last().is_some_and(|o| !o.ok())),
            "traffic after {round}"
        );
    };

    // Deleted (the backends' and the client's): the daemon hears of it
    // and has the backends resolved again at once; the client's is asked
    // for by the program when a reply meets the gap.
    for round in 0..3 {
        netns::ip(&["-n", &lb, "neigh", "flush", "dev", "lbb"]).unwrap();
        let _ = netns::ip(&["-n", &lb, "neigh", "del", "198.18.0.2", "dev", "lbc"]);
        traffic_since(&format!("flush {round}"));
    }
    let after_flushes = misses();
    // Failed (unusable, not deleted): the program meets it, drops the
    // packet, counts it and asks the daemon to resolve it.
    for i in 1..=2 {
        let addr = backend_addr(i).to_string();
        netns::ip(&[
            "-n", &lb, "neigh", "replace", &addr, "dev", "lbb", "nud", "failed",
        ])
        .unwrap();
    }
    // (The next-hop cache bridges the second its answer was made in.)
    assert!(
        wait_until(PATIENCE, || misses() > after_flushes),
        "the program met the failed entries"
    );
    traffic_since("failed entries");
    let outcomes = load.stop();
    let streamed = stream.stop();
    let slow = outcomes
        .iter()
        .filter(|o| o.end - o.start > Duration::from_millis(900))
        .count();
    println!(
        "{} requests ({slow} slow, {} failed), {} on the stream; neigh_miss {after_flushes} after the flushes, {} after the failed entries",
        outcomes.len(),
        outcomes.failures().len(),
        streamed.len(),
        misses()
    );
    let log = bed.daemon.log();
    let neighbour_lines: Vec<&str> = log.lines().filter(|l| l.contains("neigh")).collect();
    assert!(
        outcomes.failures().is_empty(),
        "{:?}\n{}",
        outcomes.failures(),
        neighbour_lines.join("\n")
    );
    assert!(
        streamed
            .iter()
            .all(|o| o.result.as_deref() == Ok(held.as_str())),
        "{:?}\n{}",
        streamed.failures(),
        neighbour_lines.join("\n")
    );
    assert!(
        log.contains("neighbour 198.18.1.11 deleted; resolving it again"),
        "{log}"
    );
}

#[test]
fn map_limits_the_kernel_refuses_name_the_setting_and_leave_nothing_behind() {
    let topo = Topology::create(1).expect("topology");
    let lb = topo.lb_ns();
    let _server = start_server(&topo, 1);
    let mut scratch = Scratch(Vec::new());
    let tmp = std::env::temp_dir();
    let out = tmp.join(format!("{}limits.out", topo.prefix()));
    scratch.0.push(out.clone());
    scratch.0.push(PathBuf::from(topo.pin_dir()));
    let good = config(&topo, &[1], &[], 0, "on_exit: detach");
    // Above the 2^31 entries the kernel takes for a hash map.
    let huge = good.replace("flow_table_size: 65536", "flow_table_size: 4000000000");
    let cfg = scratch.file(tmp.join(format!("{}huge.yaml", topo.prefix())), &huge);
    let refused = |what: &str| {
        let (status, text) = run_to_end(nsenter(&lb).args(["run", "--config"]).arg(&cfg), &out);
        assert_eq!(status.code(), Some(2), "{what}: {text}");
        assert!(text.contains("limits.flow_table_size"), "{what}: {text}");
        // The first map the kernel refuses: a flow table (4000000000
        // entries) or an unconfirmed one (a quarter of it).
        assert!(
            text.contains("4000000000 entries") || text.contains("1000000000 entries"),
            "{what}: {text}"
        );
        text
    };

    // A first start: nothing attached, nothing pinned.
    refused("first start");
    assert!(!xdp_on(&lb, "lbc") && !xdp_on(&lb, "lbb"));
    assert!(!Path::new(&topo.pin_dir()).exists(), "no pin dir left");

    // After a daemon that was killed (its program forwards on, its state
    // pinned): the refused start leaves that as it was, and the next good
    // start adopts it.
    let mut daemon = topo.start_daemon(xdplb_bin!(), &good).unwrap();
    let stream = Stream::start(&topo.client_ns(), vip(), 64 * 1024).unwrap();
    let held = stream.backend().unwrap();
    daemon.kill().unwrap();
    let pins = || {
        let mut names: Vec<String> = fs::read_dir(topo.pin_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let pinned = pins();
    refused("after a killed daemon");
    assert_eq!(pins(), pinned, "the earlier run's pins, as they were");
    assert!(xdp_on(&lb, "lbc") && xdp_on(&lb, "lbb"));
    let at = stream.elapsed();
    assert!(stream.wait_for(PATIENCE, |o| o.started_since(at) >= 3
        || o.last().is_some_and(|o| !o.ok())));
    daemon.restart().unwrap();
    let at = stream.elapsed();
    assert!(stream.wait_for(PATIENCE, |o| o.started_since(at) >= 3
        || o.last().is_some_and(|o| !o.ok())));
    let streamed = stream.stop();
    assert!(
        streamed
            .iter()
            .all(|o| o.result.as_deref() == Ok(held.as_str())),
        "{:?}",
        streamed.failures()
    );
    assert_eq!(
        daemon.log().matches("adopting pinned maps").count(),
        1,
        "{}",
        daemon.log()
    );
}
