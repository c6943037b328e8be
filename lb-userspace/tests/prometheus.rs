//! Prometheus and Grafana for real (docs/operations.md, "Prometheus and
//! Grafana"): Debian's `prometheus` scrapes the real daemon every second
//! while a client sends UDP requests at a known rate through a nat VIP; the
//! rates Prometheus computes (every XDP packet, per service, per backend,
//! bits, new flows) match what was sent; `promtool check metrics` passes on
//! `/metrics`. Then a TCP nat service gets what its golden signals and
//! limits measure (a backend filled to its `max_flows` by connections held
//! open, one that refuses, one whose SYNs are dropped, HTTP requests), and
//! every PromQL expression of the Grafana dashboard
//! (deploy/grafana/xdplb.json), its variables substituted, returns data;
//! those of its golden-signals row, a positive value.
//! Needs root, the built XDP program, BIRD 2 and nftables; installs
//! Debian's prometheus (with promtool) when missing, and fails if it cannot.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    io::{ErrorKind, Write},
    net::{SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use lb_testbed::{
    ADMIN, Daemon, HttpServer, Topology, UdpEchoServer, backend_addr, backend_http,
    bird::{PeerBird, router_conf},
    fixtures::{backend as backend_yaml, service},
    host_tools, http_get, http_get_from, metric_sum, netns, tcp_connect_from, udp_request,
    wait_until, xdplb_bin,
};
use serde_json::Value;

const SERVICE: &str = "dns";
const VIP: &str = "198.18.100.10:53";
const BACKEND_PORT: u16 = 5353;
const BACKENDS: usize = 2;
/// Requests a second: each is one datagram in and one reply out, both
/// through the XDP program (client side, then backend side).
const RATE: f64 = 200.0;
/// Requests per client socket: a new source port (a new flow) every 4th
/// request, so new flows/s are known too (RATE / 4).
const PER_FLOW: u64 = 4;
/// First client source port; each flow takes the next, so no 5-tuple is
/// ever reused while the LB still holds its flow.
const FIRST_PORT: u16 = 40000;
const PAYLOAD: usize = 64;
/// Ethernet + IPv4 + UDP headers: a frame is this plus its payload (the
/// counters count whole frames, as XDP sees them).
const HEADERS: u64 = 14 + 20 + 8;
/// The rate window of the checked queries.
const WINDOW: u64 = 20;
/// Most other packets a second the XDP program sees besides the requests
/// and replies: a health-check reply per backend a second, BIRD's
/// keepalives and their ACKs (hold time 3 s), ARP. They are all XDP_PASS.
const BACKGROUND_PPS: f64 = 8.0;
/// Relative tolerance of every rate check. The expectation counts what the
/// client sent inside the query's window, so the only differences left are
/// the window's edges: `rate()` spans the first to the last scrape inside
/// the window (19 of its 20 s), and a scrape's timestamp is when it began,
/// not when the daemon read its counters. With steady traffic these are
/// about 1% (measured: totals exact, per backend within 0.9%, as Maglev's
/// share of each second's new flows varies); 5% leaves room for a loaded machine's pauses in the
/// client (it catches up, so the average holds), and still fails on any
/// real miscount (a direction not counted is 50%, a lost backend 100%).
const TOLERANCE: f64 = 0.05;
/// The dashboard's `$__rate_interval`, for its expressions.
const RATE_INTERVAL: &str = "15s";

/// The TCP nat service whose golden signals and limits the dashboard's
/// last row shows.
const WEB: &str = "web";
const WEB_VIP: &str = "198.18.100.11:80";
/// `max_flows` of `web`'s first backend, which connections held open fill.
const LIMIT: u32 = 2;
/// Connect (and read) timeout of the web client: far above a handshake
/// through the test bed, short because about a third of the attempts go to
/// the backend that never answers (its own quarter, and some of those
/// drawn for the full backend).
const ATTEMPT: Duration = Duration::from_millis(250);
/// Short HTTP requests through the web VIP, at least, once the limited
/// backend is full.
const WEB_REQUESTS: usize = 40;
/// First client port of the web connections (one port each, so no flow's
/// 5-tuple is reused while the LB may still hold it).
const WEB_FIRST_PORT: u16 = 50000;
/// Row of the dashboard whose expressions must each give a positive value
/// (the test makes every signal in it happen), not only data.
const LIVE_ROW: &str = "Golden signals and limits";

/// `web`'s backends: two HTTP servers, the first limited to LIMIT flows.
fn web_full() -> SocketAddr {
    backend_http(1)
}
fn web_open() -> SocketAddr {
    backend_http(2)
}
/// A port of backend 1 where nothing listens: its kernel answers each SYN
/// with a RST.
fn web_refusing() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(backend_addr(1), 8081))
}
/// A port of backend 2 whose SYNs nftables drops: never answered.
fn web_silent() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(backend_addr(2), 8082))
}

fn backend(i: usize) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(backend_addr(i), BACKEND_PORT))
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Runs a command; its output, or a panic naming it with its output.
#[track_caller]
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} could not run: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{text}",
        out.status
    );
    text
}

fn on_path(program: &str) -> bool {
    netns::find_program(program).is_ok()
}

/// Debian's prometheus (it brings promtool), installed when missing
/// (`host_tools` keeps the package from starting its service). The
/// package enables that service for the next boot: it is disabled, so
/// only this test's own prometheus ever runs.
fn ensure_prometheus() {
    let installed = !on_path("prometheus");
    host_tools::apt_program("prometheus", "prometheus").expect("Debian's prometheus");
    host_tools::apt_program("promtool", "prometheus").expect("promtool");
    if installed && on_path("systemctl") {
        // Works offline (symlinks) as well as with systemd running.
        run(Command::new("systemctl").args(["disable", "prometheus.service"]));
        if Path::new("/run/systemd/system").exists() {
            run(Command::new("systemctl").args(["stop", "prometheus.service"]));
        }
    }
}

/// A directory removed on drop, even when the test fails.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// This test's own prometheus, in the LB namespace (beside the daemon's
/// admin API), its data under a temp dir; killed on drop.
struct Prometheus {
    child: Child,
    ns: String,
    url: String,
    dir: TempDir,
}

impl Prometheus {
    fn start(ns: &str, dir: PathBuf, target: &str) -> Prometheus {
        std::fs::create_dir_all(&dir).unwrap();
        let dir = TempDir(dir);
        // A free port in the namespace (nothing else binds there meanwhile).
        let port = netns::run_in(ns, || {
            Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
        })
        .unwrap();
        let listen = format!("127.0.0.1:{port}");
        let config = dir.0.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: xdplb\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        run(Command::new("promtool")
            .arg("check")
            .arg("config")
            .arg(&config));
        let log = std::fs::File::create(dir.0.join("prometheus.log")).unwrap();
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = netns::spawn_in(ns, &mut cmd).expect("prometheus starts");
        let mut p = Prometheus {
            child,
            ns: ns.to_owned(),
            url: format!("http://{listen}"),
            dir,
        };
        let ready = wait_until(Duration::from_secs(30), || {
            p.get("/-/ready", &[]).is_ok_and(|(s, _)| s == 200)
        });
        let exited = p.child.try_wait().unwrap();
        assert!(ready, "prometheus not ready ({exited:?}):\n{}", p.log());
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("prometheus.log")).unwrap_or_default()
    }

    /// `GET path?query` from inside the namespace: status and body.
    fn get(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<(u16, String)> {
        let url = format!("{}{path}", self.url);
        netns::run_in(&self.ns, || {
            let mut req = ureq::get(&url)
                .config()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(10)))
                .build();
            for (k, v) in query {
                req = req.query(*k, *v);
            }
            let mut resp = req.call()?;
            let status = resp.status().as_u16();
            Ok((status, resp.body_mut().read_to_string()?))
        })
    }

    /// The instant vector `expr` at time `at` (unix seconds): each series'
    /// labels and value. Panics on any error Prometheus reports.
    #[track_caller]
    fn query(&self, expr: &str, at: f64) -> Vec<(BTreeMap<String, String>, f64)> {
        let (status, body) = self
            .get(
                "/api/v1/query",
                &[("query", expr), ("time", &format!("{at:.3}"))],
            )
            .unwrap_or_else(|e| panic!("query {expr}: {e:#}"));
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert!(
            status == 200 && v["status"] == "success",
            "query {expr}: {status} {body}"
        );
        let data = &v["data"];
        match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let labels = serde_json::from_value(s["metric"].clone()).unwrap();
                    (labels, sample(&s["value"]))
                })
                .collect(),
            Some("scalar") => vec![(BTreeMap::new(), sample(&data["result"]))],
            other => panic!("query {expr}: result type {other:?}: {body}"),
        }
    }

    /// The one value of `expr` at `at`.
    #[track_caller]
    fn value(&self, expr: &str, at: f64) -> f64 {
        let r = self.query(expr, at);
        assert_eq!(r.len(), 1, "{expr}: one series expected, got {r:?}");
        r[0].1
    }

    /// `expr`'s values at `at` by the value of `label`.
    #[track_caller]
    fn by(&self, expr: &str, label: &str, at: f64) -> BTreeMap<String, f64> {
        self.query(expr, at)
            .into_iter()
            .map(|(l, v)| (l.get(label).cloned().unwrap_or_default(), v))
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `[time, "value"]` of the query API.
fn sample(v: &Value) -> f64 {
    v[1].as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a sample: {v}"))
}

/// One request of the client: when it was sent (unix seconds), whether it
/// opened a new flow, the frame sizes (request, reply) and the backend
/// that answered (None: no reply).
#[derive(Clone, Debug)]
struct Sent {
    at: f64,
    new_flow: bool,
    backend: Option<String>,
    reply_len: usize,
}

/// The client: RATE requests a second from the client namespace, each
/// from the current flow's socket, paced against a fixed schedule (a late
/// request is sent at once, so the average rate holds).
struct Sender {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Sent>>>,
    handle: JoinHandle<()>,
}

impl Sender {
    fn start(ns: &str, target: SocketAddr) -> Sender {
        let (stop, log) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(Mutex::new(Vec::new())),
        );
        let (flag, out, ns) = (stop.clone(), log.clone(), ns.to_owned());
        let handle = std::thread::spawn(move || {
            let start = Instant::now();
            let mut sock: Option<UdpSocket> = None;
            let mut buf = [0u8; 2048];
            for i in 0u64.. {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let due = start + Duration::from_secs_f64(i as f64 / RATE);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let new_flow = i % PER_FLOW == 0;
                if new_flow {
                    let port = FIRST_PORT + (i / PER_FLOW) as u16;
                    let s = netns::run_in(&ns, || Ok(UdpSocket::bind(("0.0.0.0", port))?))
                        .expect("bind the client socket");
                    s.connect(target).unwrap();
                    s.set_read_timeout(Some(Duration::from_millis(500)))
                        .unwrap();
                    sock = Some(s);
                }
                let s = sock.as_ref().unwrap();
                let at = now();
                s.send(&[b'x'; PAYLOAD]).unwrap();
                let (backend, reply_len) = match s.recv(&mut buf) {
                    Ok(n) => {
                        let text = String::from_utf8_lossy(&buf[..n]);
                        (text.split_once(':').map(|(b, _)| b.to_owned()), n)
                    }
                    Err(_) => (None, 0),
                };
                out.lock().unwrap().push(Sent {
                    at,
                    new_flow,
                    backend,
                    reply_len,
                });
            }
        });
        Sender { stop, log, handle }
    }

    fn sent(&self) -> Vec<Sent> {
        self.log.lock().unwrap().clone()
    }

    fn stop(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("sender thread");
        Arc::into_inner(self.log).unwrap().into_inner().unwrap()
    }
}

/// What the client sent in the window `(to - WINDOW, to]`, as rates a second.
#[derive(Debug, Default)]
struct Expected {
    requests: f64,
    unanswered: f64,
    /// Service packets: every request, every reply.
    packets: f64,
    bytes: f64,
    /// By backend name (`be1`...): packets (both ways) and new flows.
    backend_packets: BTreeMap<String, f64>,
    backend_flows: BTreeMap<String, f64>,
}

fn expected(sent: &[Sent], to: f64) -> Expected {
    let w = WINDOW as f64;
    let mut e = Expected::default();
    for s in sent.iter().filter(|s| s.at > to - w && s.at <= to) {
        let request = HEADERS + PAYLOAD as u64;
        e.requests += 1.0 / w;
        e.packets += 1.0 / w;
        e.bytes += request as f64 / w;
        match &s.backend {
            Some(b) => {
                e.packets += 1.0 / w;
                e.bytes += (HEADERS + s.reply_len as u64) as f64 / w;
                *e.backend_packets.entry(b.clone()).or_default() += 2.0 / w;
                if s.new_flow {
                    *e.backend_flows.entry(b.clone()).or_default() += 1.0 / w;
                }
            }
            None => e.unanswered += 1.0 / w,
        }
    }
    e
}

/// Rate checks: each printed, the failed ones kept (all are seen before
/// the test fails).
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    /// `measured` within TOLERANCE (plus `slack`, an absolute allowance)
    /// of `expected`.
    fn check(&mut self, what: &str, measured: f64, expected: f64, slack: f64) {
        let diff = measured - expected;
        let line = format!(
            "{what}: Prometheus {measured:.1}/s, sent {expected:.1}/s ({:+.2}%; tolerance {}% + {slack}/s)",
            100.0 * diff / expected,
            TOLERANCE * 100.0
        );
        println!("{line}");
        if diff.abs() > TOLERANCE * expected + slack {
            self.0.push(line);
        }
    }
}

/// The daemon's config: one UDP nat service over the backends, health
/// checked; `web`, a TCP nat service without health checks (so that its
/// refusing and silent backends stay in use); BGP to a peer BIRD in the
/// client namespace and flow sync toward a peer that never answers, so
/// that their series exist too. Unconfirmed flows expire after 1 s, so
/// that unanswered attempts are counted within a sweep or two.
fn config(topo: &Topology, run_dir: &Path) -> String {
    let backends: Vec<String> = (1..=BACKENDS)
        .map(|i| backend_yaml(backend_addr(i), BACKEND_PORT))
        .collect();
    let health = "health_check: { type: udp, interval: 1s, timeout: 500ms, rise: 1, fall: 3 }";
    let (vip, port) = VIP.split_once(':').unwrap();
    let web_backends: Vec<String> = [web_full(), web_open(), web_refusing(), web_silent()]
        .iter()
        .map(|b| {
            let limit = if *b == web_full() {
                format!(", max_flows: {LIMIT}")
            } else {
                String::new()
            };
            format!("{{ address: \"{}\", port: {}{limit} }}", b.ip(), b.port())
        })
        .collect();
    let (web_vip, web_port) = WEB_VIP.split_once(':').unwrap();
    topo.daemon_config(
        &format!(
            "snat: {{ ipv4: 198.18.1.1, ports: 20000-29999 }}\n\
             limits: {{ max_services: 4, max_backends: 8, maglev_table_size: 251, flow_table_size: 65536 }}\n\
             flow_timeouts: {{ unconfirmed: 1s }}\n\
             run_dir: {}\n\
             bgp:\n  local_as: 65001\n  peers: [ {{ address: 198.18.0.2, as: 65000 }} ]\n  hold_time: 3s\n\
             flow_sync: {{ address: 198.18.0.1, peers: [198.18.0.3] }}\n",
            run_dir.display()
        ),
        &[
            service(
                SERVICE,
                vip,
                port.parse().unwrap(),
                &["protocol: udp", health],
                &backends,
            ),
            service(
                WEB,
                web_vip,
                web_port.parse().unwrap(),
                &["protocol: tcp"],
                &web_backends,
            ),
        ],
    )
}

/// `web`'s HTTP servers, and nftables dropping the silent backend's SYNs
/// (the rules go with the backend's namespace).
fn start_web(topo: &Topology) -> [HttpServer; 2] {
    let ns = topo.backend_ns(2);
    let port = web_silent().port();
    for rule in [
        "add table inet xdplb_test".to_owned(),
        "add chain inet xdplb_test input { type filter hook input priority 0 ; }".to_owned(),
        format!("add rule inet xdplb_test input tcp dport {port} drop"),
    ] {
        netns::run(netns::command(&ns, "nft").args(rule.split(' '))).expect("nft");
    }
    [(1, web_full()), (2, web_open())]
        .map(|(i, addr)| HttpServer::start(&topo.backend_ns(i), addr, &format!("web{i}")).unwrap())
}

/// A series of `web`'s backend `b` in the daemon's `/metrics` (0 when
/// missing).
fn web_metric(daemon: &Daemon, name: &str, b: SocketAddr) -> f64 {
    let text = daemon.metrics().unwrap_or_default();
    metric_sum(
        &text,
        name,
        &[("service", WEB), ("backend", &b.to_string())],
    )
}

/// What became of the web client's short requests.
#[derive(Debug, Default)]
struct WebOutcomes {
    answered: usize,
    refused: usize,
    timed_out: usize,
}

/// Gives `web` every signal of the dashboard's last row: connections held
/// open fill the limited backend (returned: they must stay open), then
/// short HTTP requests from new ports (handshakes timed, bytes both ways;
/// those drawn for the full backend go elsewhere; some refused by the
/// refusing backend, some never answered by the silent one) go on until
/// the daemon has counted an unanswered attempt.
fn drive_web(topo: &Topology, daemon: &Daemon) -> Vec<TcpStream> {
    let (ns, vip): (String, SocketAddr) = (topo.client_ns(), WEB_VIP.parse().unwrap());
    let mut ports = WEB_FIRST_PORT..;
    let mut held = Vec::new();
    let full = wait_until(Duration::from_secs(20), || {
        if let Ok(s) = tcp_connect_from(&ns, ports.next().unwrap(), vip, ATTEMPT) {
            held.push(s);
        }
        web_metric(daemon, "xdplb_backend_active_flows", web_full()) >= f64::from(LIMIT)
    });
    assert!(
        full,
        "{} connections held, the limited backend not full:\n{}",
        held.len(),
        daemon.metrics().unwrap_or_default()
    );
    let mut got = WebOutcomes::default();
    let counted = wait_until(Duration::from_secs(30), || {
        let port = ports.next().unwrap();
        match http_get_from(&ns, port, vip, "/", ATTEMPT) {
            Ok((200, _)) => got.answered += 1,
            Ok((status, body)) => panic!("from port {port}: {status} {body}"),
            Err(e) if refused(&e) => got.refused += 1,
            Err(_) => got.timed_out += 1,
        }
        let unanswered = web_metric(daemon, "xdplb_backend_unanswered_total", web_silent());
        got.answered + got.refused + got.timed_out >= WEB_REQUESTS && unanswered > 0.0
    });
    println!(
        "web: {} connections held open, then short requests: {got:?}",
        held.len()
    );
    assert!(
        counted,
        "no unanswered attempt counted: {got:?}\n{}",
        daemon.metrics().unwrap_or_default()
    );
    assert!(
        got.answered > 0 && got.refused > 0 && got.timed_out > 0,
        "{got:?}"
    );
    held
}

/// A connection refused: the backend's RST, passed back by the balancer.
fn refused(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == ErrorKind::ConnectionRefused)
    })
}

/// `promtool check metrics` on the daemon's `/metrics`: no problem found.
fn promtool_check_metrics(daemon: &Daemon) {
    let text = daemon.metrics().expect("/metrics answers");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics ({}):\n{said}\non:\n{text}",
        out.status
    );
    println!(
        "promtool check metrics: no problem in {} lines",
        text.lines().count()
    );
}

#[test]
fn prometheus_sees_the_traffic_sent_and_every_dashboard_query_returns_data() {
    ensure_prometheus();
    let topo = Topology::create(BACKENDS).expect("topology");
    let servers: Vec<UdpEchoServer> = (1..=BACKENDS)
        .map(|i| UdpEchoServer::start(&topo.backend_ns(i), backend(i), &format!("be{i}")).unwrap())
        .collect();
    let backend_label: BTreeMap<String, String> = (1..=BACKENDS)
        .map(|i| (format!("be{i}"), backend(i).to_string()))
        .collect();
    let _web_servers = start_web(&topo);
    let _router = PeerBird::start(
        &topo.client_ns(),
        &router_conf("198.18.0.2", 65000, "198.18.0.1", 65001),
    )
    .expect("router bird");
    let run_dir = TempDir(std::env::temp_dir().join(format!("{}run", topo.prefix())));
    let daemon = topo
        .start_daemon(xdplb_bin!(), &config(&topo, &run_dir.0))
        .expect("daemon starts");
    let vip: SocketAddr = VIP.parse().unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || {
            udp_request(&topo.client_ns(), vip, b"hello", Duration::from_millis(300)).is_ok()
        }),
        "no answer through the VIP:\n{}",
        daemon.log()
    );
    let web_vip: SocketAddr = WEB_VIP.parse().unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || {
            http_get(&topo.client_ns(), web_vip, "/", Duration::from_secs(1))
                .is_ok_and(|(status, _)| status == 200)
        }),
        "no answer through the web VIP:\n{}",
        daemon.log()
    );
    promtool_check_metrics(&daemon);

    let prom = Prometheus::start(
        &topo.lb_ns(),
        std::env::temp_dir().join(format!("{}prometheus", topo.prefix())),
        ADMIN,
    );
    // rate() extrapolates at most half a scrape interval past the first
    // sample of its window: scraping must cover the whole window.
    assert!(
        wait_until(Duration::from_secs(30), || !prom
            .query(r#"up{job="xdplb"} == 1"#, now())
            .is_empty()),
        "prometheus never scraped the daemon:\n{}",
        prom.log()
    );
    let sender = Sender::start(&topo.client_ns(), vip);
    // The window, and a few scrapes more, of steady traffic.
    std::thread::sleep(Duration::from_secs(WINDOW + 4));
    let at = now() - 2.0;
    let sent = sender.sent();
    let first = sent.first().expect("the client sent").at;
    assert!(
        first < at - WINDOW as f64,
        "the window starts after the traffic"
    );
    let e = expected(&sent, at);
    println!("the client, in the {WINDOW} s before the query: {e:#?}");
    assert!(
        e.unanswered <= 0.01 * e.requests,
        "requests unanswered: {e:?}\n{}",
        daemon.log()
    );
    assert!(
        e.requests >= 0.9 * RATE,
        "the client fell behind: {} requests/s",
        e.requests
    );
    let up = prom.query(r#"up{job="xdplb"}"#, at);
    assert!(
        up.len() == 1 && up[0].1 == 1.0,
        "the scrape target is up: {up:?}\n{}",
        prom.log()
    );
    let instance = up[0].0["instance"].clone();

    let w = format!("[{WINDOW}s]");
    let mut checks = Checks::default();
    // Every packet the program saw: requests and replies, and a few others
    // (health-check replies, BGP, ARP: all passed to the kernel).
    checks.check(
        "sum(rate(xdplb_xdp_packets_total))",
        prom.value(&format!("sum(rate(xdplb_xdp_packets_total{w}))"), at),
        e.packets,
        BACKGROUND_PPS,
    );
    // Without those: only the requests and replies, each redirected.
    checks.check(
        "forwarded (action tx or redirect)",
        prom.value(
            &format!(r#"sum(rate(xdplb_xdp_packets_total{{action=~"tx|redirect"}}{w}))"#),
            at,
        ),
        e.packets,
        0.0,
    );
    let svc = format!(r#"{{service="{SERVICE}"}}"#);
    checks.check(
        "rate(xdplb_service_packets_total)",
        prom.value(&format!("rate(xdplb_service_packets_total{svc}{w})"), at),
        e.packets,
        0.0,
    );
    checks.check(
        "8 * rate(xdplb_service_bytes_total) (bits/s)",
        8.0 * prom.value(&format!("rate(xdplb_service_bytes_total{svc}{w})"), at),
        8.0 * e.bytes,
        0.0,
    );
    let packets = prom.by(
        &format!("rate(xdplb_backend_packets_total{svc}{w})"),
        "backend",
        at,
    );
    let flows = prom.by(
        &format!("rate(xdplb_backend_flows_total{svc}{w})"),
        "backend",
        at,
    );
    assert_eq!(packets.len(), BACKENDS, "{packets:?}");
    for (name, label) in &backend_label {
        let sent_packets = e.backend_packets.get(name).copied().unwrap_or(0.0);
        let sent_flows = e.backend_flows.get(name).copied().unwrap_or(0.0);
        assert!(
            sent_packets > 0.2 * e.packets,
            "Maglev spreads the flows: {e:?}"
        );
        // A flow is counted when its first request arrives: one more or
        // fewer at each edge of the window is 0.05/s each.
        checks.check(
            &format!("rate(xdplb_backend_packets_total) {label}"),
            packets[label],
            sent_packets,
            0.0,
        );
        checks.check(
            &format!("rate(xdplb_backend_flows_total) {label}"),
            flows[label],
            sent_flows,
            0.1,
        );
    }

    assert!(
        checks.0.is_empty(),
        "rates off:\n{}\nthe daemon's counters now:\n{}",
        checks.0.join("\n"),
        daemon.metrics().unwrap_or_default()
    );

    // Then web's signals (after the window above: its packets are not
    // among those counted there), the UDP traffic going on.
    let held = drive_web(&topo, &daemon);
    // Prometheus has scraped the last counter to move, and a scrape more.
    let web = format!(r#"{{service="{WEB}"}}"#);
    assert!(
        wait_until(Duration::from_secs(10), || !prom
            .query(&format!("xdplb_backend_unanswered_total{web} > 0"), now())
            .is_empty()),
        "prometheus never saw the unanswered attempts"
    );
    std::thread::sleep(Duration::from_secs(2));
    let at = now() - 1.0;
    let limits = prom.by(&format!("xdplb_backend_max_flows{web}"), "backend", at);
    assert_eq!(
        limits,
        [(web_full().to_string(), f64::from(LIMIT))].into(),
        "only the limited backend has xdplb_backend_max_flows"
    );
    let fill = prom.value(
        &format!(
            "xdplb_backend_active_flows{web} / on(instance, service, backend) xdplb_backend_max_flows"
        ),
        at,
    );
    assert_eq!(fill, 1.0, "the limited backend is full");

    let services = [SERVICE, WEB].map(str::to_owned).into();
    let backends = backend_label
        .values()
        .cloned()
        .chain([web_full(), web_open(), web_refusing(), web_silent()].map(|b| b.to_string()))
        .collect();
    check_dashboard(&prom, at, &instance, &services, &backends);
    promtool_check_metrics(&daemon);
    drop(held);
    let total = sender.stop();
    println!(
        "sent {} requests in {:.1} s; backends answered {:?}",
        total.len(),
        total.last().unwrap().at - first,
        servers.iter().map(|s| s.requests()).collect::<Vec<_>>()
    );
}

/// The dashboard's datasource reference, on every panel and target.
fn datasource_ref() -> Value {
    serde_json::json!({ "type": "prometheus", "uid": "${DS_PROMETHEUS}" })
}

/// deploy/grafana/xdplb.json is a well-formed Grafana dashboard, and each
/// PromQL expression in it (panel targets and variable queries), its
/// variables substituted, returns data from the real Prometheus; in
/// LIVE_ROW, some series with a positive value. `services` and `backends`
/// are the labels the daemon's series carry.
fn check_dashboard(
    prom: &Prometheus,
    at: f64,
    instance: &str,
    services: &BTreeSet<String>,
    backends: &BTreeSet<String>,
) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/xdplb.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard");
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    for key in ["uid", "title"] {
        assert!(
            dash[key].as_str().is_some_and(|s| !s.is_empty()),
            "no {key}"
        );
    }
    assert!(
        dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion"
    );

    // Variables: the data source, then queries of label values.
    let vars = dash["templating"]["list"].as_array().expect("templating");
    let ds = vars
        .iter()
        .find(|v| v["name"] == "DS_PROMETHEUS")
        .expect("a DS_PROMETHEUS variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let values: BTreeMap<&str, String> = [
        ("instance", instance.to_owned()),
        // Multi-value: "All" is the match-all regex (a TCP service's
        // signals and a UDP service's rates are both on the dashboard).
        ("service", ".*".to_owned()),
        ("backend", ".*".to_owned()),
        ("__rate_interval", RATE_INTERVAL.to_owned()),
    ]
    .into();
    let subst = |expr: &str| {
        let mut out = expr.to_owned();
        // Longest names first: `$service` must not eat `$services`.
        let mut names: Vec<_> = values.keys().collect();
        names.sort_by_key(|n| std::cmp::Reverse(n.len()));
        for name in names {
            out = out
                .replace(&format!("${{{name}}}"), &values[name])
                .replace(&format!("${name}"), &values[name]);
        }
        assert!(!out.contains('$'), "an unknown variable in {expr}");
        out
    };
    let mut defined = HashSet::new();
    for v in vars.iter().filter(|v| v["type"] == "query") {
        let name = v["name"].as_str().unwrap();
        defined.insert(name);
        assert!(values.contains_key(name), "the test knows variable {name}");
        assert_eq!(v["datasource"], datasource_ref(), "variable {name}");
        let q = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap();
        // label_values(SELECTOR, LABEL) is the label's values over the
        // selector's series: `count by (LABEL) (SELECTOR)`.
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {name}: {q}"));
        let (selector, label) = inner.rsplit_once(',').unwrap();
        let got: BTreeSet<String> = prom
            .by(
                &subst(&format!("count by ({label}) ({selector})")),
                label.trim(),
                at,
            )
            .into_keys()
            .collect();
        let want: BTreeSet<String> = match name {
            "instance" => [instance.to_owned()].into(),
            "service" => services.clone(),
            _ => backends.clone(),
        };
        assert_eq!(got, want, "variable {name}: {q}");
        println!("variable {name}: {got:?}");
    }
    assert_eq!(defined.len(), 3, "variables instance, service, backend");

    // Panels: ids, places on the grid, data source, targets.
    let panels = dash["panels"].as_array().expect("panels");
    let (mut ids, mut cells, mut exprs) = (HashSet::new(), HashSet::new(), Vec::new());
    let mut row = "";
    for p in panels {
        let title = p["title"].as_str().expect("a panel title");
        assert!(
            ids.insert(p["id"].as_u64().expect("a panel id")),
            "{title}: id"
        );
        let pos = &p["gridPos"];
        let [h, w, x, y] = ["h", "w", "x", "y"].map(|k| {
            pos[k]
                .as_u64()
                .unwrap_or_else(|| panic!("{title}: gridPos.{k}"))
        });
        assert!(h > 0 && w > 0 && x + w <= 24, "{title}: gridPos {pos}");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{title} overlaps another panel");
            }
        }
        if p["type"] == "row" {
            row = title;
            continue;
        }
        assert_eq!(p["datasource"], datasource_ref(), "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no target");
        for t in targets {
            assert_eq!(t["datasource"], datasource_ref(), "{title}");
            assert!(t["refId"].is_string(), "{title}: refId");
            exprs.push((title, row == LIVE_ROW, t["expr"].as_str().expect("expr")));
        }
    }
    assert!(
        exprs.iter().any(|(_, live, _)| *live),
        "no panel in the row {LIVE_ROW}"
    );
    for (title, live, expr) in &exprs {
        let q = subst(expr);
        let r = prom.query(&q, at);
        assert!(!r.is_empty(), "{title}: no data for {q}\n(from {expr})");
        let top = r.iter().map(|(_, v)| *v).fold(f64::NAN, f64::max);
        assert!(
            !live || top > 0.0,
            "{title}: no positive value for {q}: {r:?}"
        );
        println!("{title}: {} series, largest {top}: {q}", r.len());
    }
    println!(
        "dashboard: {} panels, {} expressions, each with data",
        panels.len(),
        exprs.len()
    );
}
