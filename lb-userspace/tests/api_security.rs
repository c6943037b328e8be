//! The admin API's defences against the real daemon (docs/security.md):
//! a reachable address needs a token, every change needs the token,
//! bodies and request heads are limited, the daemon keeps only the
//! capabilities it needs (and still reloads and takes changes), and
//! schemathesis, driven by the served OpenAPI document, finds no 5xx and
//! no answer that breaks the document. Needs root and the built XDP
//! program (and, for schemathesis, python3 with venv and PyPI).

mod cli_support;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use cli_support::{TempFile, assert_exit, assert_fails, stderr, stdout, xdplb};
use lb_testbed::backend_http as backend;
use lb_testbed::{
    ADMIN, Daemon, HttpServer, Topology, backend_addr,
    bird::{PeerBird, router_conf},
    fixtures::{backend as backend_yaml, service, with_token_file},
    host_tools, http_get, netns, wait_answering, xdplb_bin,
};
use xdplb::{
    client::Client,
    privileges::{Kept, ThreadCaps},
};

const VIP: &str = "198.18.100.10:80";
const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const TIMEOUT: Duration = Duration::from_secs(5);

/// A token file for this test process (removed on drop).
struct TokenFile(PathBuf);

impl TokenFile {
    fn new(name: &str) -> TokenFile {
        let path =
            std::env::temp_dir().join(format!("xdplb-apisec-{}-{name}.token", std::process::id()));
        std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
        TokenFile(path)
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The daemon with the admin API token-protected, balancing over
/// `backends` (indexes) of `topo`, health-checked.
fn config(topo: &Topology, token: &Path, backends: &[usize]) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|i| backend_yaml(backend_addr(*i), 8080))
        .collect();
    let health = "health_check: { type: tcp, interval: 200ms, timeout: 200ms, rise: 1, fall: 3 }";
    with_token_file(
        &topo.daemon_config(
        "snat: { ipv4: 198.18.1.1, ports: 20000-29999 }\n\
         limits: { max_services: 4, max_backends: 8, maglev_table_size: 65537, flow_table_size: 65536 }",
        &[service(
            "web",
            "198.18.100.10",
            80,
            &["protocol: tcp", health],
            &list,
        )],
    ),
        token,
    )
}

/// Two backends with a server each; the daemon balances over the first.
struct Bed {
    topo: Topology,
    _servers: Vec<HttpServer>,
    daemon: Daemon,
    token: TokenFile,
}

impl Bed {
    fn new(name: &str) -> Bed {
        let topo = Topology::create(2).expect("topology");
        let servers = (1..=2)
            .map(|i| HttpServer::start(&topo.backend_ns(i), backend(i), &format!("backend-{i}")))
            .collect::<Result<Vec<_>, _>>()
            .expect("servers");
        let token = TokenFile::new(name);
        let daemon = topo
            .start_daemon(xdplb_bin!(), &config(&topo, &token.0, &[1]))
            .expect("daemon starts");
        assert!(
            wait_answering(
                &topo.client_ns(),
                VIP.parse().unwrap(),
                Duration::from_secs(20)
            ),
            "no answer through the VIP:\n{}",
            daemon.log()
        );
        Bed {
            topo,
            _servers: servers,
            daemon,
            token,
        }
    }

    /// One raw HTTP/1.1 request to the admin API from the LB namespace.
    fn request(&self, req: &Request) -> Answer {
        let (ns, raw) = (self.topo.lb_ns(), req.bytes());
        netns::run_in(&ns, || send(&raw)).expect("the admin API answers")
    }

    /// `GET path`: status and body.
    fn get(&self, path: &str) -> (u16, String) {
        let a = self.request(&Request::new("GET", path));
        (a.status, a.body)
    }

    /// The API answers, and the VIP (within a moment: a backend just made
    /// ready again waits for its next health check).
    fn healthy(&self) {
        assert_eq!(self.get("/api/v1/status").0, 200, "{}", self.daemon.log());
        self.daemon.metrics().expect("/metrics answers");
        let vip = VIP.parse().unwrap();
        let served = lb_testbed::wait_until(Duration::from_secs(10), || {
            http_get(&self.topo.client_ns(), vip, "/", TIMEOUT).is_ok_and(|(s, _)| s == 200)
        });
        assert!(served, "the VIP answers:\n{}", self.daemon.log());
    }
}

/// A request as the bytes sent: `Content-Length` from the body unless
/// `chunked`.
struct Request {
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    chunked: bool,
}

impl Request {
    fn new(method: &'static str, path: &str) -> Request {
        Request {
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            chunked: false,
        }
    }

    fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn token(self, token: &str) -> Request {
        self.header("Authorization", &format!("Bearer {token}"))
    }

    fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {ADMIN}\r\nConnection: close\r\n",
            self.method, self.path
        );
        for (k, v) in &self.headers {
            head += &format!("{k}: {v}\r\n");
        }
        let mut out = if self.chunked {
            head += "Transfer-Encoding: chunked\r\n\r\n";
            let mut out = head.into_bytes();
            for chunk in self.body.chunks(64 * 1024) {
                out.extend(format!("{:x}\r\n", chunk.len()).bytes());
                out.extend(chunk);
                out.extend(b"\r\n");
            }
            out.extend(b"0\r\n\r\n");
            return out;
        } else {
            head += &format!("Content-Length: {}\r\n\r\n", self.body.len());
            head.into_bytes()
        };
        out.extend(&self.body);
        out
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `raw` (from a thread of its own: the server may answer, and close,
/// before it has read a large request) and reads the answer.
fn send(raw: &[u8]) -> anyhow::Result<Answer> {
    let admin: SocketAddr = ADMIN.parse()?;
    let stream = TcpStream::connect_timeout(&admin, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let raw = raw.to_vec();
    let sender = std::thread::spawn(move || {
        // A refused large body ends in a reset: not this test's concern.
        let _ = writer.write_all(&raw);
    });
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad status line {line:?}"))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let len: Option<usize> = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok());
    let mut body = Vec::new();
    match len {
        Some(n) => {
            body.resize(n, 0);
            r.read_exact(&mut body)?;
        }
        None => {
            r.read_to_end(&mut body)?;
        }
    }
    let _ = sender.join();
    Ok(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

#[test]
fn a_reachable_admin_address_without_a_token_is_refused_by_check_and_run() {
    let config = TempFile::new(
        "open-admin.yaml",
        "interfaces: [eth0]\nadmin: { listen: 0.0.0.0:9100 }\nsnat: { ipv4: 198.18.1.1 }\nservices: []\n",
    );
    for command in ["check", "run"] {
        let out = xdplb(&[command, "--config", config.arg()]);
        assert_fails(&out, 2, "admin.listen");
        let err = stderr(&out);
        for part in ["admin.listen", "line 2", "set admin.token_file"] {
            assert!(err.contains(part), "{command}: {part:?} not in {err}");
        }
    }
    // With a token it is a valid config.
    let token = TokenFile::new("check");
    let config = TempFile::new(
        "token-admin.yaml",
        &format!(
            "interfaces: [eth0]\nadmin: {{ listen: \"[::]:9100\", token_file: {} }}\nsnat: {{ ipv4: 198.18.1.1 }}\nservices: []\n",
            token.0.display()
        ),
    );
    let out = xdplb(&["check", "--config", config.arg()]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("ok"));
}

#[test]
fn changes_need_the_token_bodies_and_heads_are_limited_and_capabilities_dropped() {
    let bed = Bed::new("limits");
    let backend1 = format!("/api/v1/services/web/backends/{}", backend(1));
    let mutating = || {
        [
            Request::new("PUT", &backend1).body(r#"{"weight": 100}"#),
            Request::new("PUT", "/api/v1/node").body(r#"{"state": "ready"}"#),
            Request::new("POST", "/api/v1/reload"),
        ]
    };

    // Every change needs the token; the refusal names the scheme.
    for req in mutating() {
        let what = format!("{} {}", req.method, req.path);
        for wrong in [None, Some("wrong"), Some(&TOKEN[..TOKEN.len() - 1])] {
            let req = match wrong {
                Some(t) => clone(&req).token(t),
                None => clone(&req),
            };
            let a = bed.request(&req);
            assert_eq!(a.status, 401, "{what} with {wrong:?}: {a:?}");
            assert_eq!(a.header("www-authenticate"), Some("Bearer"), "{what}");
            assert!(a.body.starts_with("{\"error\":"), "{what}: {}", a.body);
        }
        let a = bed.request(&clone(&req).token(TOKEN));
        assert_eq!(a.status, 200, "{what}: {a:?}");
    }
    // Reads need none.
    assert_eq!(bed.get("/api/v1/services").0, 200);

    // A 2 MB body is refused before it is read whole, whether its length
    // is announced or it comes in chunks; so is a body of 16 KiB + 1.
    let big = vec![b' '; 2 << 20];
    for req in mutating() {
        let what = format!("{} {}", req.method, req.path);
        for chunked in [false, true] {
            let mut r = clone(&req).token(TOKEN).body(big.clone());
            r.chunked = chunked;
            let a = bed.request(&r);
            assert_eq!(a.status, 413, "{what} chunked {chunked}: {a:?}");
            assert!(a.body.contains("larger than 16384 bytes"), "{}", a.body);
        }
    }
    let just_over = vec![b' '; xdplb::api::MAX_BODY_BYTES + 1];
    let a = bed.request(&clone(&mutating()[1]).body(just_over).token(TOKEN));
    assert_eq!(a.status, 413, "{a:?}");
    // Request heads: 16 KiB and 64 fields at most.
    let a =
        bed.request(&Request::new("GET", "/api/v1/status").header("X-Big", &"a".repeat(32 << 10)));
    assert_eq!(a.status, 431, "{a:?}");
    let mut many = Request::new("GET", "/api/v1/status");
    for i in 0..100 {
        many = many.header(&format!("X-H{i}"), "1");
    }
    assert_eq!(bed.request(&many).status, 431);
    // A head that never ends, and a keep-alive connection left idle after
    // its answer: the daemon hangs up on both (after 10 s).
    let lb = bed.topo.lb_ns();
    let slow = |first: &'static [u8]| {
        let lb = lb.clone();
        std::thread::spawn(move || {
            netns::run_in(&lb, || {
                let mut s = TcpStream::connect_timeout(&ADMIN.parse()?, TIMEOUT)?;
                s.write_all(first)?;
                s.set_read_timeout(Some(Duration::from_secs(20)))?;
                let start = Instant::now();
                let mut buf = Vec::new();
                let _ = s.read_to_end(&mut buf);
                Ok((start.elapsed(), String::from_utf8_lossy(&buf).into_owned()))
            })
            .unwrap()
        })
    };
    let partial = slow(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n");
    let idle = slow(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n\r\n");
    for (what, t) in [("a partial head", partial), ("an idle connection", idle)] {
        let (after, answer) = t.join().unwrap();
        assert!(
            (Duration::from_secs(9)..Duration::from_secs(15)).contains(&after),
            "{what}: closed after {after:?}"
        );
        if what == "an idle connection" {
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }
    }
    bed.healthy();

    // Capabilities: CAP_BPF and CAP_NET_ADMIN on every thread, nothing
    // else in any set (no bgp here: no child needs more).
    let pid = bed.daemon.pid().to_string();
    let threads = ThreadCaps::of_threads(&pid).unwrap();
    assert!(threads.len() > 1, "a threaded daemon: {threads:?}");
    for (tid, caps) in &threads {
        assert_eq!(
            Kept::names(caps.effective),
            ["CAP_NET_ADMIN", "CAP_BPF"],
            "thread {tid}"
        );
        assert_eq!(caps.permitted, caps.effective, "thread {tid}");
        assert_eq!(caps.bounding, caps.effective, "thread {tid}");
        assert_eq!((caps.inheritable, caps.ambient), (0, 0), "thread {tid}");
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let eff = ThreadCaps::parse(&status).unwrap().effective;
    for gone in [
        caps::Capability::CAP_SYS_ADMIN,
        caps::Capability::CAP_DAC_OVERRIDE,
        caps::Capability::CAP_SYS_PTRACE,
        caps::Capability::CAP_SYS_MODULE,
        caps::Capability::CAP_PERFMON,
    ] {
        assert_eq!(eff & gone.bitmask(), 0, "{gone} kept");
    }
    assert!(
        bed.daemon
            .log()
            .contains("capabilities kept: CAP_NET_ADMIN, CAP_BPF"),
        "{}",
        bed.daemon.log()
    );

    // And with them the daemon still does its work: an admin change, a
    // reload through the API (adding backend 2), a SIGHUP reload.
    let a = bed.request(
        &Request::new("PUT", &backend1)
            .token(TOKEN)
            .body(r#"{"state": "drain"}"#),
    );
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.body.contains(r#""state":"drain""#), "{}", a.body);
    std::fs::write(
        bed.daemon.config_path(),
        config(&bed.topo, &bed.token.0, &[1, 2]),
    )
    .unwrap();
    let a = bed.request(&Request::new("POST", "/api/v1/reload").token(TOKEN));
    assert_eq!(a.status, 200, "{a:?}\n{}", bed.daemon.log());
    assert!(
        a.body.contains(&format!("web/{}", backend(2))),
        "{}",
        a.body
    );
    bed.daemon
        .reload(Some(&config(&bed.topo, &bed.token.0, &[2])))
        .unwrap();
    let removed = lb_testbed::wait_until(Duration::from_secs(10), || {
        !bed.get("/api/v1/services/web")
            .1
            .contains(&backend(1).to_string())
    });
    assert!(removed, "SIGHUP reload applied:\n{}", bed.daemon.log());
    // Backend 2 serves the new connections.
    let served = lb_testbed::wait_until(Duration::from_secs(10), || {
        http_get(&bed.topo.client_ns(), VIP.parse().unwrap(), "/", TIMEOUT)
            .is_ok_and(|(s, body)| s == 200 && body.trim() == "backend-2")
    });
    assert!(served, "{}", bed.daemon.log());
    assert!(
        !bed.daemon.log().contains("Operation not permitted"),
        "{}",
        bed.daemon.log()
    );
}

fn clone(r: &Request) -> Request {
    Request {
        method: r.method,
        path: r.path.clone(),
        headers: r.headers.clone(),
        body: r.body.clone(),
        chunked: r.chunked,
    }
}

/// schemathesis in a venv of its own under the target dir, installed from
/// PyPI on first use.
fn schemathesis() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("schemathesis-venv");
    host_tools::pip_tool(&venv, "schemathesis>=4,<5", "schemathesis").expect("schemathesis")
}

#[test]
fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let st = schemathesis();
    let bed = Bed::new("schemathesis");
    let url = format!("http://{ADMIN}/api/v1/openapi.json");
    let mut cmd = Command::new(&st);
    cmd.args(["run", &url])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
        ])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--max-examples", "40", "--seed", "13", "--max-time", "60"])
        // One worker: with two, hypothesis (under schemathesis) describes
        // its filters with ast.parse from two threads at once, and CPython
        // 3.11 sometimes fails it ("AST constructor recursion depth
        // mismatch"): an error of the tool, not of the API.
        .args(["--workers", "1", "--request-timeout", "10"])
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = netns::spawn_in(&bed.topo.lb_ns(), &mut cmd).expect("schemathesis starts");
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    println!("{text}");
    // "N generated, N passed" (or "..., K found K unique failures").
    let summary = text
        .lines()
        .rev()
        .find(|l| l.contains(" generated, "))
        .unwrap_or("(no summary)");
    println!("schemathesis summary: {summary}");
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{text}\ndaemon log:\n{}",
        bed.daemon.log()
    );
    // It drained, reweighted and reloaded at random (and may have started
    // a rollout, which owns the weights): undo that, and the daemon serves
    // as before.
    let a = bed.request(&Request::new("POST", "/api/v1/rollouts/web/abort").token(TOKEN));
    assert!([200, 404, 409].contains(&a.status), "{a:?}");
    let backend1 = format!("/api/v1/services/web/backends/{}", backend(1));
    for (path, body) in [
        (backend1.as_str(), r#"{"state": "ready", "weight": 100}"#),
        ("/api/v1/node", r#"{"state": "ready"}"#),
    ] {
        let a = bed.request(&Request::new("PUT", path).token(TOKEN).body(body));
        assert_eq!(a.status, 200, "{path}: {a:?}");
    }
    bed.healthy();
}

/// The process ids of `parent`'s children whose command is `comm`.
fn children(parent: u32, comm: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((name, rest)) = stat.split_once(" (").and_then(|(_, r)| r.rsplit_once(") "))
        else {
            continue;
        };
        let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        if name == comm && ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn bird_gets_what_it_needs_and_comes_back_after_a_crash() {
    let topo = Topology::create(1).expect("topology");
    let router = PeerBird::start(
        &topo.client_ns(),
        &router_conf("198.18.0.2", 65000, "198.18.0.1", 65001),
    )
    .expect("router bird");
    let run_dir = std::env::temp_dir().join(format!("{}run", topo.prefix()));
    let yaml = topo.daemon_config(
        &format!(
            "snat: {{ ipv4: 198.18.1.1 }}\n\
             limits: {{ max_services: 4, max_backends: 4, maglev_table_size: 251, flow_table_size: 4096 }}\n\
             run_dir: {}\n\
             bgp:\n  local_as: 65001\n  peers: [ {{ address: 198.18.0.2, as: 65000 }} ]\n  hold_time: 3s\n",
            run_dir.display()
        ),
        &[service(
            "web",
            "198.18.100.10",
            80,
            &[],
            &[backend_yaml(backend_addr(1), 8080)],
        )],
    );
    let daemon = topo
        .start_daemon(xdplb_bin!(), &yaml)
        .expect("daemon starts");
    let lb = topo.lb_ns();
    let peer_up = || {
        netns::run_in(&lb, || Ok(Client::new(ADMIN, None).node_status()))
            .unwrap()
            .is_ok_and(|s| s.bgp.is_some_and(|b| b.peers.iter().all(|p| p.up)))
    };
    let bird_of = || {
        let mut pid = Vec::new();
        lb_testbed::wait_until(Duration::from_secs(10), || {
            pid = children(daemon.pid(), "bird");
            pid.len() == 1
        });
        *pid.first().expect("the daemon's BIRD runs")
    };
    let bird_caps = |pid: u32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        Kept::names(ThreadCaps::parse(&status).unwrap().effective)
    };
    let wanted = [
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_BROADCAST",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_BPF",
    ];
    let listening = || {
        let out = netns::command(&lb, "ss").args(["-ltnH"]).output().unwrap();
        stdout(&out).contains(":179 ")
    };

    for round in ["at start", "after BIRD was killed"] {
        assert!(
            lb_testbed::wait_until(Duration::from_secs(30), peer_up),
            "{round}: the session is up:\n{}\n{}",
            daemon.log(),
            router.log()
        );
        let bird = bird_of();
        // A BIRD started after the drop gets the bounding set: its own
        // list, and the daemon's two.
        if round != "at start" {
            assert_eq!(bird_caps(bird), wanted, "{round}");
        }
        assert!(listening(), "{round}: BIRD listens on port 179");
        let pid = nix::unistd::Pid::from_raw(bird as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        assert!(
            lb_testbed::wait_until(Duration::from_secs(10), || children(daemon.pid(), "bird")
                .first()
                .is_some_and(|p| *p != bird)),
            "{round}: the daemon restarts BIRD:\n{}",
            daemon.log()
        );
    }
    // The daemon itself holds none of BIRD's capabilities.
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    assert_eq!(
        Kept::names(ThreadCaps::parse(&status).unwrap().effective),
        ["CAP_NET_ADMIN", "CAP_BPF"]
    );
    drop(daemon);
    let _ = std::fs::remove_dir_all(&run_dir);
}
