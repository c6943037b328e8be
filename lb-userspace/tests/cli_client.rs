//! The client commands of `xdplb` (`status`, `backend state|weight`,
//! `reload`) against a fake admin API on 127.0.0.1 that follows the
//! contract (docs/design.md section 5) with canned data and records requests.

mod cli_support;

use std::{
    net::{SocketAddr, TcpListener},
    process::Output,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use cli_support::{TempFile, assert_exit, assert_fails, stderr, stdout, xdplb};
use serde_json::{Value, json};

#[derive(Clone, Debug)]
struct Request {
    method: String,
    path: String,
    auth: Option<String>,
    body: String,
}

struct FakeState {
    requests: Vec<Request>,
    /// GETs of /api/v1/services so far: counters grow with each.
    reads: u64,
    /// Admin state and weight of web's 198.18.1.12:8080, changed by PUTs.
    state: String,
    weight: u64,
    /// Token required on PUT and POST, if any.
    token: Option<&'static str>,
    reload: (u16, Value),
    /// `ready` or `drain`, changed by PUT /api/v1/node.
    node: String,
}

#[derive(Clone)]
struct Fake {
    addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
}

impl Fake {
    fn start(token: Option<&'static str>) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(FakeState {
            requests: Vec::new(),
            reads: 0,
            state: "drain".into(),
            weight: 100,
            token,
            reload: (
                200,
                json!({
                    "services_added": ["dns"],
                    "services_removed": [],
                    "services_changed": ["web"],
                    "backends_added": [],
                    "backends_removed": ["web/198.18.1.13:8080"],
                }),
            ),
            node: "ready".into(),
        }));
        let shared = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = Router::new().fallback(handle).with_state(shared);
                axum::serve(listener, app).await.unwrap();
            });
        });
        Fake { addr, state }
    }

    fn admin(&self) -> String {
        self.addr.to_string()
    }

    /// Runs `xdplb` with `args` against this fake.
    fn xdplb(&self, args: &[&str]) -> Output {
        xdplb_at(&self.admin(), args)
    }

    fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    fn set_reload(&self, status: u16, body: Value) {
        self.state.lock().unwrap().reload = (status, body);
    }
}

fn backend_12(state: &str, weight: u64, n: u64) -> Value {
    json!({"address": "198.18.1.12:8080", "weight": weight, "state": state,
        "health": "down", "effective": "down", "packets": 40 + n, "bytes": 4000 + 100 * n,
        "flows": 1, "check": {"up": false, "consecutive_ok": 0, "consecutive_fail": 4,
        "last_duration_ms": 500.0, "last_error": "connection refused", "checks": 20}})
}

/// The services after `n` reads: web's first backend gets 50 packets a
/// read, the rest stands still.
fn services(n: u64, state: &str, weight: u64) -> Value {
    json!([
        {"name": "web", "vip": "198.18.100.10:80", "protocol": "tcp", "mode": "nat",
         "hash": "five-tuple", "packets": 1040 + 50 * n, "bytes": 104_000 + 5000 * n,
         "backends": [
            {"address": "198.18.1.11:8080", "weight": 100, "state": "ready", "health": "up",
             "effective": "ready", "packets": 1000 + 50 * n, "bytes": 100_000 + 5000 * n,
             "flows": 3, "check": {"up": true, "consecutive_ok": 5, "consecutive_fail": 0,
             "last_duration_ms": 0.4, "last_error": null, "checks": 12}},
            backend_12(state, weight, 0),
         ]},
        {"name": "dns", "vip": "198.18.100.53:53", "protocol": "udp", "mode": "nat",
         "hash": "source-ip", "packets": 7, "bytes": 700,
         "backends": [
            {"address": "198.18.1.21:53", "weight": 10, "state": "ready", "health": "unchecked",
             "effective": "ready", "packets": 7, "bytes": 700, "flows": 7, "check": null},
         ]},
    ])
}

/// `GET /api/v1/status`: node `node`, one peer up, one VIP announced.
fn node_status(node: &str) -> Value {
    let announced: Vec<&str> = if node == "ready" {
        vec!["198.18.100.10"]
    } else {
        vec![]
    };
    json!({"node": node, "bgp": {"router_id": "198.18.0.1",
        "peers": [{"address": "198.18.0.2", "as": 65000, "state": "Established", "up": true}],
        "announced": announced}})
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

async fn handle(
    State(state): State<Arc<Mutex<FakeState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = state.lock().unwrap();
    let auth = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string());
    s.requests.push(Request {
        method: method.to_string(),
        path: uri.path().to_string(),
        auth: auth.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    if method != Method::GET
        && let Some(token) = s.token
        && auth.as_deref() != Some(&format!("Bearer {token}"))
    {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let path = uri.path();
    match (method.as_str(), path) {
        ("GET", "/api/v1/services") => {
            s.reads += 1;
            axum::Json(services(s.reads, &s.state, s.weight)).into_response()
        }
        ("GET", "/api/v1/status") => axum::Json(node_status(&s.node)).into_response(),
        ("GET", "/api/v1/rollouts") => axum::Json(json!([])).into_response(),
        ("POST", "/api/v1/rollouts") => {
            let req: Value = serde_json::from_slice(&body).unwrap_or_default();
            axum::Json(rollout_of(&req)).into_response()
        }
        ("PUT", "/api/v1/node") => {
            let update: Value = serde_json::from_slice(&body).unwrap_or_default();
            match update["state"].as_str() {
                Some(w @ ("ready" | "drain")) => s.node = w.into(),
                _ => return error(StatusCode::BAD_REQUEST, "body must be {\"state\": ..}"),
            }
            axum::Json(node_status(&s.node)).into_response()
        }
        ("POST", "/api/v1/reload") => {
            let (status, body) = s.reload.clone();
            (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
        }
        ("PUT", _) if path.starts_with("/api/v1/services/") => {
            let rest = &path["/api/v1/services/".len()..];
            let Some((svc, backend)) = rest.split_once("/backends/") else {
                return error(StatusCode::NOT_FOUND, "no such route");
            };
            match svc {
                "web" => {}
                "broken" => {
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "map update failed: E2BIG",
                    );
                }
                _ => return error(StatusCode::NOT_FOUND, &format!("no service named {svc:?}")),
            }
            if backend != "198.18.1.12:8080" {
                return error(
                    StatusCode::NOT_FOUND,
                    &format!("service \"web\" has no backend {backend}"),
                );
            }
            let update: serde_json::Map<String, Value> = match serde_json::from_slice(&body) {
                Ok(u) => u,
                Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
            };
            for (key, value) in update {
                match (key.as_str(), value) {
                    ("state", Value::String(w)) => s.state = w,
                    ("weight", Value::Number(n)) => s.weight = n.as_u64().unwrap(),
                    _ => return error(StatusCode::BAD_REQUEST, &format!("bad field {key}")),
                }
            }
            axum::Json(backend_12(&s.state, s.weight, 0)).into_response()
        }
        _ => error(StatusCode::NOT_FOUND, "no such route"),
    }
}

/// The running rollout the fake answers to a start: the request's service,
/// canaries, steps and every, at its first step.
fn rollout_of(req: &Value) -> Value {
    json!({
        "service": req["service"], "canaries": req["canaries"], "steps": req["steps"],
        "every": req["every"], "abort_if": req["abort_if"], "min_flows": req["min_flows"],
        "state": "running", "step": req["steps"][0], "step_number": 1, "canary_share": 9.9,
        "in_step_ms": 0, "elapsed_ms": 0, "started_unix_ms": 1_700_000_000_000u64,
        "window": {"new_flows": 0, "resets": 0, "unanswered": 0, "handshake_p99_us": null},
        "reason": null,
        "baseline": [{"address": "198.18.1.13:8080", "state": "ready", "weight": 0}]
    })
}

/// Runs `xdplb` with `args` and `--admin admin`.
fn xdplb_at(admin: &str, args: &[&str]) -> Output {
    xdplb(&[args, &["--admin", admin]].concat())
}

/// The updated backend's line and the one request it took: a PUT of
/// web's 198.18.1.12:8080 with `body`, carrying `auth`.
#[track_caller]
fn assert_backend_put(fake: &Fake, out: &Output, line: &str, auth: &str, body: Value) {
    assert_exit(out, 0);
    assert_eq!(stdout(out), line);
    let requests = fake.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let r = &requests[0];
    assert_eq!(r.method, "PUT");
    assert_eq!(r.path, "/api/v1/services/web/backends/198.18.1.12:8080");
    assert_eq!(r.auth.as_deref(), Some(auth));
    assert_eq!(serde_json::from_str::<Value>(&r.body).unwrap(), body);
}

#[test]
fn status_shows_services_backends_health_and_rates() {
    let fake = Fake::start(None);
    let out = fake.xdplb(&["status", "--interval", "200ms"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("web: 198.18.100.10:80 tcp, mode nat, hash five-tuple"),
        "{text}"
    );
    assert!(
        text.contains("dns: 198.18.100.53:53 udp, mode nat, hash source-ip"),
        "{text}"
    );
    let row = |addr: &str| -> Vec<String> {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(addr))
            .unwrap_or_else(|| panic!("no row for {addr}: {text}"));
        line.split_whitespace().map(String::from).collect()
    };
    // BACKEND WEIGHT STATE HEALTH EFFECTIVE FLOWS PKT/S
    let r11 = row("198.18.1.11:8080");
    assert_eq!(r11[1..6], ["100", "ready", "up", "ready", "3"], "{text}");
    let pps: f64 = r11[6].parse().unwrap();
    // 50 packets between two reads 200 ms apart (a slow machine: longer).
    assert!(pps > 10.0 && pps <= 250.0, "{pps} {text}");
    assert_eq!(
        row("198.18.1.12:8080")[1..7],
        ["100", "drain", "down", "down", "1", "0.0"]
    );
    assert_eq!(
        row("198.18.1.21:53")[1..7],
        ["10", "ready", "unchecked", "ready", "7", "0.0"]
    );
    assert!(
        text.starts_with(
            "node: ready, announcing 198.18.100.10\nbgp: router id 198.18.0.1\n  PEER           AS  STATE\n  198.18.0.2  65000  Established\n\nweb: "
        ),
        "the node head first: {text}"
    );
    let requests = fake.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/api/v1/services",
            "/api/v1/services",
            "/api/v1/status",
            "/api/v1/rollouts"
        ]
    );
    assert!(
        requests
            .iter()
            .all(|r| r.method == "GET" && r.auth.is_none())
    );
}

#[test]
fn status_interval_0_reads_once_and_shows_no_rates() {
    let fake = Fake::start(None);
    let out = fake.xdplb(&["status", "--interval", "0"]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains(
            "web: 198.18.100.10:80 tcp, mode nat, hash five-tuple, balance maglev, - pkt/s"
        )
    );
    assert_eq!(
        fake.requests().len(),
        3,
        "one read of the services, one of the node, one of the rollouts"
    );
}

#[test]
fn status_json_is_the_api_answer() {
    let fake = Fake::start(None);
    let out = fake.xdplb(&["status", "--json"]);
    assert_exit(&out, 0);
    let printed: Value = serde_json::from_str(&stdout(&out)).expect("valid JSON");
    assert_eq!(printed, services(1, "drain", 100));
    assert_eq!(fake.requests().len(), 1, "no second read without --rates");
    // ... and it parses as the shared API types.
    let typed: Vec<xdplb::api_types::Service> = serde_json::from_value(printed).unwrap();
    assert_eq!(
        typed[0].backends[1].effective,
        xdplb::api_types::Effective::Down
    );
}

#[test]
fn status_json_rates_adds_per_second_fields() {
    let fake = Fake::start(None);
    let out = fake.xdplb(&["status", "--json", "--rates", "--interval", "100ms"]);
    assert_exit(&out, 0);
    let services: Value = serde_json::from_str(&stdout(&out)).expect("valid JSON");
    assert_eq!(services[0]["packets"], 1140, "the second read's counters");
    let pps = services[0]["backends"][0]["packets_per_second"]
        .as_f64()
        .unwrap();
    assert!(pps > 0.0 && pps <= 500.0, "{pps}");
    assert_eq!(services[1]["backends"][0]["bytes_per_second"], 0.0);
    assert_eq!(fake.requests().len(), 2);
    // --rates means nothing without --json.
    assert_exit(&fake.xdplb(&["status", "--rates"]), 2);
}

#[test]
fn backend_state_puts_the_state_with_the_token_from_token_file() {
    let fake = Fake::start(Some("s3cret"));
    let token = TempFile::new("token", "s3cret\n");
    let out = fake.xdplb(&[
        "backend",
        "state",
        "web",
        "198.18.1.12:8080",
        "ready",
        "--token-file",
        token.arg(),
    ]);
    assert_backend_put(
        &fake,
        &out,
        "web 198.18.1.12:8080: state ready, weight 100, health down, effective down\n",
        "Bearer s3cret",
        json!({"state": "ready"}),
    );
}

#[test]
fn backend_weight_finds_admin_and_token_in_the_config() {
    let fake = Fake::start(Some("from-config"));
    let token = TempFile::new("config-token", "  from-config  \n");
    // Keys the daemon may not take today are fine: only admin.* is read.
    let config = TempFile::new(
        "config.yaml",
        &format!(
            "interfaces: [eth0]\nadmin:\n  listen: {}\n  token_file: {}\nsnat: {{ ipv4: 198.18.1.1 }}\nservices: []\n",
            fake.admin(),
            token.arg()
        ),
    );
    let out = xdplb(&[
        "backend",
        "weight",
        "web",
        "198.18.1.12:8080",
        "50",
        "--config",
        config.arg(),
    ]);
    assert_backend_put(
        &fake,
        &out,
        "web 198.18.1.12:8080: state drain, weight 50, health down, effective down\n",
        "Bearer from-config",
        json!({"weight": 50}),
    );
}

#[test]
fn a_4xx_answer_exits_2_with_the_api_message() {
    let fake = Fake::start(None);
    let out = fake.xdplb(&["backend", "state", "nope", "1.2.3.4:80", "drain"]);
    assert_exit(&out, 2);
    assert_eq!(
        stderr(&out),
        "xdplb: PUT /api/v1/services/nope/backends/1.2.3.4:80: no service named \"nope\" (HTTP 404)\n"
    );
    assert!(stdout(&out).is_empty());
}

#[test]
fn a_401_without_a_token_says_how_to_give_one() {
    let fake = Fake::start(Some("s3cret"));
    let out = fake.xdplb(&["backend", "weight", "web", "198.18.1.12:8080", "0"]);
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("missing or wrong bearer token (HTTP 401)"),
        "{err}"
    );
    assert!(err.contains("--token-file"), "{err}");
    assert!(fake.requests()[0].auth.is_none());
}

#[test]
fn a_5xx_answer_exits_1() {
    let fake = Fake::start(None);
    let out = fake.xdplb(&["backend", "state", "broken", "1.2.3.4:80", "maint"]);
    assert_fails(&out, 1, "map update failed: E2BIG (HTTP 500)");
}

#[test]
fn rollout_start_sends_the_request_with_the_token_and_prints_the_rollout() {
    let fake = Fake::start(Some("s3cret"));
    let token = TempFile::new("token", "s3cret\n");
    let out = fake.xdplb(&[
        "rollout",
        "start",
        "web",
        "198.18.1.13:8080",
        "--steps",
        "10,50,100",
        "--every",
        "1m",
        "--abort-if",
        "rst_ratio>0.1",
        "--token-file",
        token.arg(),
    ]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).starts_with(
            "rollout web: running at step 1/3 (10%), 0.0 s of 1m in it; \
             canaries 198.18.1.13:8080 have 9.9% of the weights\n"
        ),
        "{}",
        stdout(&out)
    );
    let requests = fake.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let r = &requests[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/api/v1/rollouts")
    );
    assert_eq!(r.auth.as_deref(), Some("Bearer s3cret"));
    assert_eq!(
        serde_json::from_str::<Value>(&r.body).unwrap(),
        json!({"service": "web", "canaries": ["198.18.1.13:8080"], "steps": [10, 50, 100],
               "every": "1m", "abort_if": "rst_ratio>0.1", "min_flows": 20})
    );
}

#[test]
fn an_unreachable_daemon_exits_1() {
    // A port that was free a moment ago: nothing listens there.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for args in [
        &["status"][..],
        &["reload"],
        &["backend", "state", "web", "1.2.3.4:80", "drain"],
    ] {
        let out = xdplb_at(&addr.to_string(), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert_eq!(
            stderr(&out),
            format!(
                "xdplb: cannot reach the daemon at {addr}: connection refused (is xdplb run going?)\n"
            )
        );
    }
}

#[test]
fn a_daemon_that_never_answers_times_out_in_5s() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts (the kernel does) and never answers.
    let start = Instant::now();
    let out = xdplb_at(&addr.to_string(), &["status"]);
    let took = start.elapsed();
    drop(listener);
    assert_exit(&out, 1);
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(15),
        "{took:?}"
    );
    assert_eq!(
        stderr(&out),
        format!("xdplb: no answer from the daemon at {addr} within 5s to GET /api/v1/services\n")
    );
}

#[test]
fn node_drain_and_ready_put_the_state_with_the_token() {
    let fake = Fake::start(Some("s3cret"));
    let token = TempFile::new("token", "s3cret\n");
    let out = fake.xdplb(&["node", "drain", "--token-file", token.arg()]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).starts_with("node: drain, announcing nothing\n"),
        "{}",
        stdout(&out)
    );
    let out = fake.xdplb(&["node", "ready", "--token-file", token.arg()]);
    assert_exit(&out, 0);
    assert!(stdout(&out).starts_with("node: ready, announcing 198.18.100.10\n"));
    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    for (r, state) in requests.iter().zip(["drain", "ready"]) {
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("PUT", "/api/v1/node")
        );
        assert_eq!(r.auth.as_deref(), Some("Bearer s3cret"));
        assert_eq!(
            serde_json::from_str::<Value>(&r.body).unwrap(),
            json!({ "state": state })
        );
    }
    // Without the token: the API's 401, exit 2; a bad word: usage, exit 2.
    assert_fails(&fake.xdplb(&["node", "drain"]), 2, "HTTP 401");
    assert_exit(&fake.xdplb(&["node", "sleep"]), 2);
}

#[test]
fn reload_prints_the_summary() {
    let fake = Fake::start(None);
    let out = fake.xdplb(&["reload"]);
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        "services added: dns\nservices changed: web\nbackends removed: web/198.18.1.13:8080\n"
    );
    let r = &fake.requests()[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/api/v1/reload")
    );

    fake.set_reload(
        200,
        json!({"services_added": [], "services_removed": [], "services_changed": [],
               "backends_added": [], "backends_removed": []}),
    );
    let out = fake.xdplb(&["reload"]);
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), "no changes\n")
    );

    fake.set_reload(
        400,
        json!({"error": "/etc/xdplb.yaml: services[0].port: invalid value (line 7)"}),
    );
    let out = fake.xdplb(&["reload"]);
    assert_fails(&out, 2, "services[0].port: invalid value (line 7)");
}

#[test]
fn usage_errors_exit_2_without_a_request() {
    let fake = Fake::start(None);
    for args in [
        &["backend", "state", "web", "1.2.3.4", "drain"][..],
        &["backend", "weight", "web", "1.2.3.4:80", "-1"],
        &["backend", "weight", "web", "1.2.3.4:80", "heavy"],
        &["backend"],
    ] {
        let out = fake.xdplb(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
    let out = fake.xdplb(&["backend", "state", "web", "1.2.3.4:80", "sleepy"]);
    assert_fails(&out, 2, "sleepy");
    assert_exit(&xdplb(&["status", "--admin", "nowhere"]), 2);
    let out = fake.xdplb(&[
        "backend",
        "weight",
        "web",
        "1.2.3.4:80",
        "1",
        "--token-file",
        "/nonexistent/token",
    ]);
    assert_fails(&out, 2, "cannot read token file /nonexistent/token");
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
}

#[test]
fn top_redraws_the_table_with_rates() {
    let fake = Fake::start(None);
    let out = fake.xdplb(&["top", "--interval", "100ms", "--count", "3"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert_eq!(text.matches("\x1b[2J").count(), 3, "three screens: {text}");
    assert_eq!(
        text.matches("web: 198.18.100.10:80 tcp").count(),
        3,
        "{text}"
    );
    assert_eq!(fake.requests().len(), 4, "one read, then one per screen");
}
