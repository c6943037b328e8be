//! Health checks against real servers on 127.0.0.1 (ephemeral ports): tcp,
//! http and udp checks going down and up, `set_targets` and the metrics.
//!
//! The same tests run in slow guests (QEMU without KVM, 5-10x slower), so
//! no assertion depends on how fast anything is: checks run every 50 ms,
//! but their timeout is long (every failure caused here is immediate: a
//! refused connect, an ICMP unreachable, a wrong answer), so a stalled
//! check is never counted as a failure; expected events are awaited with a
//! generous deadline, never a fixed sleep; fixed sleeps only assert that
//! nothing happens.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, UdpSocket};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::task::JoinHandle;
use xdplb::config::{CheckType, HealthCheck};
use xdplb::health::{BackendKey, HealthChecker, HealthMetrics, Status, Target, Transition};

/// Longest wait for anything expected (it only bounds a failing test).
const WAIT: Duration = Duration::from_secs(30);

/// Check timeout: far longer than any check here takes, even in a slow
/// guest, and than the interval (which validation would refuse, but the
/// checker does not need: a backend's checks run one after the other).
const TIMEOUT: Duration = Duration::from_secs(2);

fn check(r#type: CheckType) -> HealthCheck {
    HealthCheck {
        r#type,
        interval: Duration::from_millis(50),
        timeout: TIMEOUT,
        rise: 2,
        fall: 3,
        ..HealthCheck::default()
    }
}

struct Harness {
    checker: HealthChecker,
    events: UnboundedReceiver<Transition>,
    registry: Registry,
}

impl Harness {
    fn new() -> Self {
        let registry = Registry::new();
        let metrics = HealthMetrics::new(&registry).unwrap();
        let (tx, events) = unbounded_channel();
        Harness {
            checker: HealthChecker::new(tx, metrics),
            events,
            registry,
        }
    }

    fn status(&self, key: &BackendKey) -> Status {
        self.checker.status(key).expect("key is checked")
    }

    /// The next transition (of any key), within `WAIT`.
    async fn next(&mut self) -> Transition {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("a transition within the wait")
            .expect("channel open")
    }

    /// Asserts that no transition comes for `quiet`.
    async fn none_for(&mut self, quiet: Duration) {
        if let Ok(t) = tokio::time::timeout(quiet, self.events.recv()).await {
            panic!("unexpected transition {t:?}");
        }
    }

    /// Waits until `key` has run `n` more checks than now.
    async fn checks(&self, key: &BackendKey, n: u64) {
        let target = self.status(key).checks + n;
        wait_until(|| self.status(key).checks >= target).await;
    }
}

async fn wait_until(mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("condition within the wait");
}

fn key(service: &str, addr: SocketAddr) -> BackendKey {
    (service.to_string(), addr)
}

/// A TCP listener on `addr` (port 0: any) that accepts and drops
/// connections; the task owns the socket: aborting it closes the port.
async fn tcp_server(addr: SocketAddr) -> (SocketAddr, JoinHandle<()>) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    let listener = socket.listen(128).unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                drop(stream);
            }
        }
    });
    (addr, task)
}

/// Stops a server task and waits until its socket is closed.
async fn stop(task: JoinHandle<()>) {
    task.abort();
    let _ = task.await;
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A port on 127.0.0.1 with nothing listening (TCP or UDP).
async fn closed_port() -> SocketAddr {
    let (addr, task) = tcp_server(local(0)).await;
    stop(task).await;
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_check_goes_down_and_up() {
    let mut h = Harness::new();
    let (addr, server) = tcp_server(local(0)).await;
    let k = key("web", addr);
    let c = check(CheckType::Tcp);
    h.checker.set_targets(vec![Target {
        key: k.clone(),
        check: c.clone(),
    }]);
    // Up from the start, and stays up.
    assert!(h.checker.is_up(&k));
    h.checks(&k, 5).await;
    let s = h.status(&k);
    assert!(
        s.up && s.consecutive_ok >= 5 && s.consecutive_fail == 0,
        "{s:?}"
    );
    assert!(
        s.last_duration_ms.is_some() && s.last_error.is_none(),
        "{s:?}"
    );

    stop(server).await;
    let t = h.next().await;
    assert_eq!((t.key.clone(), t.up), (k.clone(), false), "{t:?}");
    assert!(t.reason.contains("refused"), "{t:?}");
    let s = h.status(&k);
    assert!(
        !s.up && s.consecutive_fail >= c.fall && s.consecutive_ok == 0,
        "{s:?}"
    );
    assert!(
        s.last_error.as_deref().unwrap().contains("refused"),
        "{s:?}"
    );
    assert!(!h.checker.is_up(&k));
    // One transition only, while it stays down.
    h.none_for(Duration::from_millis(300)).await;

    let (_, server) = tcp_server(addr).await;
    let t = h.next().await;
    assert_eq!((t.key.clone(), t.up), (k.clone(), true), "{t:?}");
    let s = h.status(&k);
    assert!(s.up && s.consecutive_ok >= c.rise, "{s:?}");
    assert!(h.checker.is_up(&k));
    h.none_for(Duration::from_millis(300)).await;
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_port_overrides_the_backend_port() {
    let mut h = Harness::new();
    let (addr, server) = tcp_server(local(0)).await;
    // The backend's own port is closed; the check port is open. fall 1:
    // one check of the wrong port would take it down (and with the long
    // timeout, only a refused connect can fail a check).
    let k = key("web", closed_port().await);
    h.checker.set_targets(vec![Target {
        key: k.clone(),
        check: HealthCheck {
            port: Some(addr.port()),
            fall: 1,
            ..check(CheckType::Tcp)
        },
    }]);
    h.checks(&k, 4).await;
    let s = h.status(&k);
    assert!(s.up && s.consecutive_ok >= 4, "{s:?}");
    h.none_for(Duration::from_millis(100)).await;
    stop(server).await;
    assert!(!h.next().await.up);
}

/// What the test HTTP server answers, and what it was asked.
#[derive(Default)]
struct HttpState {
    status: AtomicU16,
    body: Mutex<String>,
    last_request: Mutex<String>,
}

/// A minimal HTTP/1.1 server: reads a request head, answers with the
/// current status and body (Content-Length), closes.
async fn http_server(state: Arc<HttpState>) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind(local(0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                *state.last_request.lock().unwrap() = String::from_utf8_lossy(&req).into();
                let body = state.body.lock().unwrap().clone();
                let resp = format!(
                    "HTTP/1.1 {} Whatever\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    state.status.load(Ordering::Relaxed),
                    body.len()
                );
                let _ = stream.write_all(resp.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_follows_status_and_body() {
    let mut h = Harness::new();
    let state = Arc::new(HttpState::default());
    state.status.store(200, Ordering::Relaxed);
    *state.body.lock().unwrap() = "all ok here".into();
    let (addr, server) = http_server(state.clone()).await;
    let k = key("api", addr);
    let c = HealthCheck {
        path: Some("/healthz?deep=1".into()),
        expect_body: Some("ok".into()),
        ..check(CheckType::Http)
    };
    h.checker.set_targets(vec![Target {
        key: k.clone(),
        check: c,
    }]);
    h.checks(&k, 4).await;
    assert!(h.status(&k).up);
    let req = state.last_request.lock().unwrap().clone();
    assert!(
        req.starts_with("GET /healthz?deep=1 HTTP/1.1\r\n"),
        "{req:?}"
    );
    assert!(req.contains(&format!("\r\nHost: {addr}\r\n")), "{req:?}");
    assert!(req.contains("\r\nConnection: close\r\n"), "{req:?}");

    // Wrong status: down.
    state.status.store(503, Ordering::Relaxed);
    let t = h.next().await;
    assert!(!t.up, "{t:?}");
    assert!(t.reason.contains("status 503, expected 200"), "{t:?}");
    // Back to 200: up.
    state.status.store(200, Ordering::Relaxed);
    assert!(h.next().await.up);
    assert!(h.status(&k).up);
    // Right status, body without "ok": down.
    *state.body.lock().unwrap() = "degraded".into();
    let t = h.next().await;
    assert!(!t.up, "{t:?}");
    assert!(t.reason.contains("does not contain \"ok\""), "{t:?}");
    // Body back: up.
    *state.body.lock().unwrap() = "ok".into();
    assert!(h.next().await.up);
    h.none_for(Duration::from_millis(300)).await;
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_expects_the_configured_status() {
    let mut h = Harness::new();
    let state = Arc::new(HttpState::default());
    state.status.store(204, Ordering::Relaxed);
    let (addr, server) = http_server(state.clone()).await;
    let k = key("api", addr);
    let c = HealthCheck {
        expect_status: Some(204),
        fall: 1,
        ..check(CheckType::Http)
    };
    h.checker.set_targets(vec![Target {
        key: k.clone(),
        check: c,
    }]);
    h.checks(&k, 3).await;
    let s = h.status(&k);
    assert!(s.up && s.consecutive_ok >= 3, "{s:?}");
    assert!(
        state
            .last_request
            .lock()
            .unwrap()
            .starts_with("GET / HTTP/1.1\r\n")
    );
    state.status.store(200, Ordering::Relaxed);
    let t = h.next().await;
    assert!(
        !t.up && t.reason.contains("status 200, expected 204"),
        "{t:?}"
    );
    stop(server).await;
}

/// A UDP server answering "pong: " + the request.
async fn udp_echo(addr: SocketAddr) -> (SocketAddr, JoinHandle<()>) {
    let socket = UdpSocket::bind(addr).await.unwrap();
    let addr = socket.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            if let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let mut reply = b"pong: ".to_vec();
                reply.extend_from_slice(&buf[..n]);
                let _ = socket.send_to(&reply, from).await;
            }
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_check_goes_down_and_up() {
    let mut h = Harness::new();
    let (addr, server) = udp_echo(local(0)).await;
    let k = key("dns", addr);
    let c = HealthCheck {
        send: Some("hello".into()),
        expect: Some("pong: hello".into()),
        ..check(CheckType::Udp)
    };
    h.checker.set_targets(vec![Target {
        key: k.clone(),
        check: c.clone(),
    }]);
    h.checks(&k, 4).await;
    let s = h.status(&k);
    assert!(s.up && s.consecutive_ok >= 4, "{s:?}");

    // Stopped: ICMP port unreachable (or a timeout).
    stop(server).await;
    let t = h.next().await;
    assert!(!t.up, "{t:?}");
    assert!(
        t.reason.contains("unreachable") || t.reason.contains("timed out"),
        "{t:?}"
    );
    assert!(h.status(&k).consecutive_fail >= c.fall);

    let (_, server) = udp_echo(addr).await;
    assert!(h.next().await.up);
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_reply_must_contain_expect() {
    let mut h = Harness::new();
    let (addr, server) = udp_echo(local(0)).await;
    let k = key("dns", addr);
    // The default payload "ping" gets "pong: ping": any reply would pass,
    // "PONG" is not in it.
    h.checker.set_targets(vec![Target {
        key: k.clone(),
        check: HealthCheck {
            expect: Some("PONG".into()),
            fall: 2,
            ..check(CheckType::Udp)
        },
    }]);
    let t = h.next().await;
    assert!(
        !t.up && t.reason.contains("does not contain \"PONG\""),
        "{t:?}"
    );
    // Without `expect`, the same reply passes.
    h.checker.set_targets(vec![Target {
        key: k.clone(),
        check: check(CheckType::Udp),
    }]);
    assert!(h.next().await.up);
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_targets_adds_removes_and_restarts() {
    let mut h = Harness::new();
    let (live_addr, live_server) = tcp_server(local(0)).await;
    let dead_addr = closed_port().await;
    let live = key("web", live_addr);
    let dead = key("web", dead_addr);
    let c = HealthCheck {
        fall: 2,
        ..check(CheckType::Tcp)
    };
    let targets = |dead_check: Option<HealthCheck>| {
        let mut t = vec![Target {
            key: live.clone(),
            check: c.clone(),
        }];
        if let Some(check) = dead_check {
            t.push(Target {
                key: dead.clone(),
                check,
            });
        }
        t
    };
    h.checker.set_targets(targets(Some(c.clone())));
    let t = h.next().await;
    assert_eq!((t.key, t.up), (dead.clone(), false));
    assert!(h.checker.is_up(&live));

    // Changed interval: restarted, still down, failures keep counting.
    h.checks(&live, 1).await;
    let before = h.status(&dead);
    let live_before = h.status(&live).checks;
    let slower = HealthCheck {
        interval: Duration::from_millis(60),
        ..c.clone()
    };
    h.checker.set_targets(targets(Some(slower.clone())));
    let s = h.status(&dead);
    assert!(!s.up && s.checks >= before.checks, "{s:?}");
    h.checks(&dead, 3).await;
    let s = h.status(&dead);
    assert!(
        !s.up && s.consecutive_fail >= before.consecutive_fail + 3,
        "{s:?}"
    );
    // The unchanged key kept its counters and runs on.
    assert!(h.status(&live).checks >= live_before);
    h.checks(&live, 1).await;
    h.none_for(Duration::from_millis(200)).await;

    // The same settings again: nothing changes.
    h.checker.set_targets(targets(Some(slower.clone())));
    assert!(!h.checker.is_up(&dead));

    // Removed: no status, counts as up, and no more transitions even when
    // its port opens (its task would bring it up).
    h.checker.set_targets(targets(None));
    assert!(h.checker.status(&dead).is_none());
    assert!(h.checker.is_up(&dead));
    let (_, revived) = tcp_server(dead_addr).await;
    h.none_for(Duration::from_millis(500)).await;
    // Its series are gone; the live one's stay.
    let text = metrics_text(&h.registry);
    assert!(!text.contains(&format!("\"{dead_addr}\"")), "{text}");
    assert!(text.contains(&format!("\"{live_addr}\"")), "{text}");

    // Added again: a fresh start, up.
    h.checker.set_targets(targets(Some(c.clone())));
    let s = h.status(&dead);
    assert!(s.up && s.consecutive_fail == 0, "{s:?}");
    h.checks(&dead, 3).await;
    assert!(h.checker.is_up(&dead));
    h.none_for(Duration::from_millis(200)).await;

    // Removing everything (and dropping the checker) stops every task.
    h.checker.set_targets(Vec::new());
    assert!(h.checker.status(&live).is_none());
    stop(live_server).await;
    stop(revived).await;
    h.none_for(Duration::from_millis(300)).await;
}

fn metrics_text(registry: &Registry) -> String {
    use prometheus::Encoder;
    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .unwrap();
    String::from_utf8(out).unwrap()
}

/// The value of the transitions counter for (service, backend, to).
fn transitions(registry: &Registry, service: &str, backend: &str, to: &str) -> Option<f64> {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == "xdplb_backend_health_transitions_total")
        .flat_map(|f| f.get_metric())
        .find(|m| {
            let label = |name: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_string())
            };
            label("service").as_deref() == Some(service)
                && label("backend").as_deref() == Some(backend)
                && label("to").as_deref() == Some(to)
        })
        .map(|m| m.get_counter().get_value())
}

/// (sample count, sample sum) of the check-duration histogram.
fn durations(registry: &Registry, service: &str, backend: &str) -> Option<(u64, f64)> {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == "xdplb_backend_check_duration_seconds")
        .flat_map(|f| f.get_metric())
        .find(|m| {
            let labels: Vec<_> = m
                .get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect();
            labels.contains(&("service".into(), service.into()))
                && labels.contains(&("backend".into(), backend.into()))
        })
        .map(|m| {
            let h = m.get_histogram();
            (h.get_sample_count(), h.get_sample_sum())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_transitions_and_durations() {
    let mut h = Harness::new();
    let (addr, server) = tcp_server(local(0)).await;
    let k = key("web", addr);
    let backend = addr.to_string();
    h.checker.set_targets(vec![Target {
        key: k.clone(),
        check: check(CheckType::Tcp),
    }]);
    h.checks(&k, 2).await;
    let (count, sum) = durations(&h.registry, "web", &backend).unwrap();
    assert!(count >= 2 && sum > 0.0, "{count} {sum}");
    assert_eq!(transitions(&h.registry, "web", &backend, "down"), None);

    stop(server).await;
    assert!(!h.next().await.up);
    assert_eq!(transitions(&h.registry, "web", &backend, "down"), Some(1.0));
    assert_eq!(transitions(&h.registry, "web", &backend, "up"), None);
    let (count2, _) = durations(&h.registry, "web", &backend).unwrap();
    assert!(count2 >= count + 3, "{count2}");

    let (_, server) = tcp_server(addr).await;
    assert!(h.next().await.up);
    assert_eq!(transitions(&h.registry, "web", &backend, "up"), Some(1.0));
    assert_eq!(transitions(&h.registry, "web", &backend, "down"), Some(1.0));
    let text = metrics_text(&h.registry);
    assert!(
        text.contains("# TYPE xdplb_backend_check_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "xdplb_backend_check_duration_seconds_bucket{{backend=\"{backend}\",service=\"web\",le=\"0.0001\"}}"
        )),
        "{text}"
    );
    assert!(
        text.contains("# TYPE xdplb_backend_health_transitions_total counter"),
        "{text}"
    );

    // A second checker cannot register the same series twice.
    assert!(HealthMetrics::new(&h.registry).is_err());
    stop(server).await;
}

/// Thousands of backends on a single-threaded runtime: one task each.
#[tokio::test(flavor = "current_thread")]
async fn thousands_of_backends_on_one_thread() {
    let mut h = Harness::new();
    let dead = closed_port().await;
    let n = 2000;
    let c = HealthCheck {
        fall: 1,
        ..check(CheckType::Tcp)
    };
    h.checker.set_targets(
        (0..n)
            .map(|i| Target {
                key: key(&format!("svc-{i}"), dead),
                check: c.clone(),
            })
            .collect(),
    );
    let mut down = std::collections::HashSet::new();
    while down.len() < n {
        let t = h.next().await;
        assert!(!t.up, "{t:?}");
        assert!(down.insert(t.key.0), "one transition per backend");
    }
    assert!((0..n).all(|i| !h.checker.is_up(&key(&format!("svc-{i}"), dead))));
    drop(h.checker);
    // Dropping the checker stops its tasks: the channel closes.
    tokio::time::timeout(WAIT, async { while h.events.recv().await.is_some() {} })
        .await
        .expect("channel closed");
}

#[tokio::test]
async fn status_serializes_to_json() {
    let mut h = Harness::new();
    let (addr, server) = tcp_server(local(0)).await;
    let k = key("web", addr);
    h.checker.set_targets(vec![Target {
        key: k.clone(),
        check: check(CheckType::Tcp),
    }]);
    h.checks(&k, 1).await;
    let json = serde_json::to_value(h.status(&k)).unwrap();
    assert_eq!(json["up"], true);
    assert_eq!(json["consecutive_fail"], 0);
    assert!(json["last_duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(json["last_error"].is_null());
    assert!(json["checks"].as_u64().unwrap() >= 1);
    // Unknown keys: not checked, up.
    let other = key("web", local(1));
    assert!(h.checker.status(&other).is_none() && h.checker.is_up(&other));
    stop(server).await;
}
