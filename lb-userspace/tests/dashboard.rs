//! The built-in dashboard (`GET /`) in a real browser: Debian's headless
//! Chromium, driven over WebDriver (chromedriver, fantoccini), against the
//! real daemon in the test topology with traffic running. The graphs have
//! data points (drawn from the history the daemon keeps: a page loaded
//! again has them at once), the table lists every backend with its state
//! and health, a drain click without the token is refused (the page says
//! so; the state is unchanged), with it succeeds (checked with
//! `GET /api/v1/services`), and so does a weight change; a backend whose
//! checks fail shows as down with the reason, and the drops that follow
//! show among the events; a rollout shows in its panel, running then
//! aborted. Saves a screenshot to `<target>/dashboard.png`.
//! Installs chromium and chromium-driver with apt-get when missing, and
//! fails (never skips) if that fails. Needs root and the built XDP program.

use std::{
    net::SocketAddr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client as Browser, ClientBuilder, Locator, elements::Element};
use lb_testbed::backend_http as backend;
use lb_testbed::{
    ADMIN, HttpServer, Load, Topology, backend_addr,
    fixtures::{backend as backend_yaml, service, with_token_file},
    host_tools, netns, wait_answering, xdplb_bin,
};
use serde_json::{Value, json};
use xdplb::{
    api_types::{BackendState, Health, RolloutRequest, Service},
    client::Client,
};

const VIP: &str = "198.18.100.10:80";
const TOKEN: &str = "dashboard-token-0123456789abcdef";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// chromedriver's port, inside the LB namespace (its own network stack).
const DRIVER_PORT: u16 = 9515;
/// Long enough for a few history samples (one every 2 s) on a busy machine.
const WAIT: Duration = Duration::from_secs(40);

/// Debian's chromium and chromedriver, installed if missing.
fn ensure_chromium() {
    host_tools::apt_program(CHROMIUM, "chromium").expect("Debian's chromium");
    host_tools::apt_program(CHROMEDRIVER, "chromium-driver").expect("Debian's chromedriver");
}

/// chromedriver in the LB namespace, in a process group of its own: the
/// browsers it starts are killed with it on drop (even after a failure).
struct Driver(Child);

impl Driver {
    fn start(ns: &str) -> Driver {
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={DRIVER_PORT}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        Driver(netns::spawn_in(ns, &mut cmd).expect("chromedriver starts"))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // SAFETY: a signal to the process group this test started.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// A token file for this test process (removed on drop).
struct TokenFile(PathBuf);

impl TokenFile {
    fn new() -> TokenFile {
        let path = std::env::temp_dir().join(format!("xdplb-dash-{}.token", std::process::id()));
        std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
        TokenFile(path)
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The daemon's config: one service over both backends, http-checked,
/// changes token-protected.
fn config(topo: &Topology, token: &Path) -> String {
    let list = [1, 2].map(|i| backend_yaml(backend_addr(i), 8080));
    let health = "health_check: { type: http, path: /healthz, interval: 200ms, timeout: 200ms, rise: 1, fall: 2 }";
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

/// `GET /api/v1/services`, from the API itself (not the page).
async fn services() -> Vec<Service> {
    tokio::task::spawn_blocking(|| Client::new(ADMIN, None).services())
        .await
        .unwrap()
        .expect("GET /api/v1/services")
}

async fn backend_of(addr: SocketAddr) -> xdplb::api_types::Backend {
    services()
        .await
        .into_iter()
        .flat_map(|s| s.backends)
        .find(|b| b.address == addr)
        .expect("the backend is listed")
}

/// Waits until `f` gives Some (polling the page), or panics with `what`.
async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn attr(b: &Browser, css: &str, name: &str) -> Option<String> {
    let e = b.find(Locator::Css(css)).await.ok()?;
    e.attr(name).await.ok().flatten()
}

async fn points(b: &Browser, id: &str) -> u64 {
    attr(b, &format!("#{id}"), "data-points")
        .await
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

fn row(addr: SocketAddr) -> String {
    format!(r#"tr[data-service="web"][data-backend="{addr}"]"#)
}

async fn button(b: &Browser, addr: SocketAddr, action: &str) -> Element {
    let css = format!(r#"{} button[data-action="{action}"]"#, row(addr));
    b.find(Locator::Css(&css)).await.expect("the button")
}

async fn notice(b: &Browser) -> (String, String) {
    let n = b.find(Locator::Css("#notice")).await.expect("#notice");
    let kind = n.attr("data-kind").await.unwrap().unwrap_or_default();
    (kind, n.text().await.unwrap())
}

async fn cell(b: &Browser, addr: SocketAddr, class: &str) -> String {
    let css = format!("{} td.{class}", row(addr));
    match b.find(Locator::Css(&css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The text of the row of web's rollout, once it says `word`.
async fn rollout_row(b: &Browser, word: &str) -> String {
    wait_for(&format!("the rollout {word} on the page"), || async {
        let row = b
            .find(Locator::Css(r#"tr[data-rollout="web"]"#))
            .await
            .ok()?;
        let t = row.text().await.ok()?;
        t.contains(word).then_some(t)
    })
    .await
}

/// Where the screenshot goes: the target dir of this build.
fn screenshot_path() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target>/tmp.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target dir")
        .join("dashboard.png")
}

/// Every check, in one browser session.
async fn drive(servers: &[HttpServer]) {
    let caps = json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,1700"],
        }
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let url = format!("http://127.0.0.1:{DRIVER_PORT}");
    let b = wait_for("chromedriver to take a session", || async {
        match ClientBuilder::new(connector.clone())
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("chromedriver: {e}");
                None
            }
        }
    })
    .await;
    let page = format!("http://{ADMIN}/");
    b.goto(&page).await.expect("the dashboard loads");
    assert_eq!(b.title().await.unwrap(), "xdplb");

    // The graphs have data points, drawn from the daemon's history.
    for id in ["g-packets", "g-bits", "g-flows", "g-new"] {
        wait_for(&format!("data points in #{id}"), || async {
            (points(&b, id).await >= 2).then_some(())
        })
        .await;
    }
    let before = wait_for("a few samples", || async {
        let p = points(&b, "g-packets").await;
        (p >= 6).then_some(p)
    })
    .await;
    // Loaded again, the page shows the past at once: the daemon kept it.
    b.refresh().await.unwrap();
    let again = wait_for("the graph after a reload", || async {
        let p = points(&b, "g-packets").await;
        (p > 0).then_some(p)
    })
    .await;
    assert!(
        again >= before,
        "a page loaded again starts from the daemon's history: {again} < {before} points"
    );
    let host = b
        .find(Locator::Id("host"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        host.starts_with("on ") && host.len() > 3,
        "hostname: {host:?}"
    );
    let ifaces = b
        .find(Locator::Id("ifaces"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(ifaces.starts_with("interfaces: "), "{ifaces:?}");

    // Every backend, with its state, health and a graph of its own.
    for i in [1, 2] {
        let addr = backend(i);
        let state = wait_for(&format!("the row of {addr}"), || async {
            attr(&b, &row(addr), "data-state").await
        })
        .await;
        assert_eq!(state, "ready", "{addr}");
        assert_eq!(cell(&b, addr, "health").await, "up");
        assert!(
            cell(&b, addr, "reason").await.contains("checks began"),
            "{addr}: the last change is the start of the checks"
        );
        wait_for(&format!("the graph of {addr}"), || async {
            let css = format!("{} svg.spark", row(addr));
            let p = attr(&b, &css, "data-points").await?.parse::<u64>().ok()?;
            (p > 0).then_some(())
        })
        .await;
    }
    let rows = b.find_all(Locator::Css("tr[data-backend]")).await.unwrap();
    assert_eq!(rows.len(), 2, "one row per backend");

    // A rollout shows in its panel while it runs, and after its end.
    let rollout = |action: Option<&'static str>| {
        tokio::task::spawn_blocking(move || {
            let c = Client::new(ADMIN, Some(TOKEN.into()));
            match action {
                None => c.start_rollout(&RolloutRequest {
                    service: "web".into(),
                    canaries: vec![backend(2)],
                    steps: Some(vec![10, 100]),
                    every: Some("60s".into()),
                    ..RolloutRequest::default()
                }),
                Some(a) => c.rollout_action("web", a),
            }
        })
    };
    rollout(None).await.unwrap().expect("the rollout starts");
    let text = rollout_row(&b, "running").await;
    assert!(
        text.contains(&backend(2).to_string()) && text.contains("10% (1/2)"),
        "{text}"
    );
    rollout(Some("abort"))
        .await
        .unwrap()
        .expect("the rollout aborts");
    let text = rollout_row(&b, "aborted").await;
    assert!(text.contains("aborted by the operator"), "{text}");

    // Drain without the token: refused, shown, nothing changed.
    let be1 = backend(1);
    button(&b, be1, "drain").await.click().await.unwrap();
    let (kind, text) = wait_for("the refusal", || async {
        let n = notice(&b).await;
        (!n.0.is_empty()).then_some(n)
    })
    .await;
    assert_eq!(kind, "error", "{text}");
    assert!(text.contains("401"), "the page shows the refusal: {text}");
    assert_eq!(backend_of(be1).await.state, BackendState::Ready);
    assert_eq!(attr(&b, &row(be1), "data-state").await.unwrap(), "ready");

    // With the token: drained, through the API.
    b.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    b.find(Locator::Id("token-save"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    button(&b, be1, "drain").await.click().await.unwrap();
    let text = wait_for("the drain to be done", || async {
        let (kind, text) = notice(&b).await;
        (kind == "ok").then_some(text)
    })
    .await;
    assert!(text.contains("drain"), "{text}");
    assert_eq!(backend_of(be1).await.state, BackendState::Drain);
    wait_for("the row to say drain", || async {
        (attr(&b, &row(be1), "data-state").await.as_deref() == Some("drain")).then_some(())
    })
    .await;

    // A weight change, likewise.
    let be2 = backend(2);
    let weight = b
        .find(Locator::Css(&format!("{} input.weight", row(be2))))
        .await
        .unwrap();
    weight.clear().await.unwrap();
    weight.send_keys("40").await.unwrap();
    button(&b, be2, "weight").await.click().await.unwrap();
    wait_for("the weight to be set", || async {
        let (kind, text) = notice(&b).await;
        (kind == "ok" && text.contains("weight 40")).then_some(())
    })
    .await;
    assert_eq!(backend_of(be2).await.weight, 40);

    // Backend 2 fails its checks: down, with the reason; with backend 1
    // drained, new flows have no backend and are dropped, by reason.
    servers[1].set_healthy(false);
    wait_for("backend 2 down on the page", || async {
        (cell(&b, be2, "health").await == "down").then_some(())
    })
    .await;
    assert_eq!(backend_of(be2).await.health, Health::Down);
    let reason = cell(&b, be2, "reason").await;
    assert!(
        reason.contains("503"),
        "the reason of the change: {reason:?}"
    );
    wait_for("no_backend drops among the events", || async {
        b.find(Locator::Css(r#"tr[data-event="event/no_backend"]"#))
            .await
            .ok()
    })
    .await;
    // One more sample, so the graphs show the change.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let png = b.screenshot().await.expect("a screenshot");
    let path = screenshot_path();
    std::fs::write(&path, &png).expect("writing the screenshot");
    eprintln!("screenshot: {}", path.display());
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    b.close().await.unwrap();
}

#[test]
fn the_dashboard_works_in_a_real_browser() {
    ensure_chromium();
    let topo = Topology::create(2).expect("topology");
    let servers: Vec<HttpServer> = [1, 2]
        .iter()
        .map(|&i| HttpServer::start(&topo.backend_ns(i), backend(i), &format!("backend-{i}")))
        .collect::<Result<_, _>>()
        .expect("servers");
    let token = TokenFile::new();
    let daemon = topo
        .start_daemon(xdplb_bin!(), &config(&topo, &token.0))
        .expect("daemon starts");
    let vip: SocketAddr = VIP.parse().unwrap();
    assert!(
        wait_answering(&topo.client_ns(), vip, Duration::from_secs(20)),
        "no answer through the VIP:\n{}",
        daemon.log()
    );
    let load = Load::start(&topo.client_ns(), vip, Duration::from_millis(20));
    let lb = topo.lb_ns();
    let _driver = Driver::start(&lb);
    netns::run_in(&lb, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(drive(&servers));
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", daemon.log()));
    let served = load.stop().iter().filter(|o| o.ok()).count();
    assert!(served > 0, "the traffic went through");
}
