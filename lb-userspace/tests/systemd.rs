//! The systemd unit (deploy/systemd/xdplb.service), checked with the real
//! tools: `systemd-analyze verify` on it, and its ExecStart run the way
//! systemd would run it, as a user other than root holding exactly the
//! unit's capabilities (`setpriv`), serving real traffic in the test
//! topology. Each of those capabilities taken away alone stops the start:
//! the set is minimal. Needs root and the built XDP program.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    fs,
    net::SocketAddr,
    os::unix::fs::chown,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use lb_testbed::backend_http as backend;
use lb_testbed::{
    ADMIN, Daemon, HttpServer, Topology, backend_addr,
    bird::{PeerBird, router_conf},
    fixtures::{backend as backend_yaml, service},
    http_get_from, netns, wait_answering, wait_until, xdplb_bin,
};
use xdplb::privileges::{Kept, ThreadCaps};

/// Not root, not a user of this machine: the stand-in for the package's
/// `xdplb` system user (the unit's User=), which the test must not create.
const UID: u32 = 64_123;

fn unit_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/xdplb.service")
}

/// The unit's `[Service]` settings: key -> every value given (in order).
fn service_section(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut in_service = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service
            && !line.starts_with('#')
            && let Some((k, v)) = line.split_once('=')
        {
            out.entry(k.trim().into())
                .or_default()
                .push(v.trim().into());
        }
    }
    out
}

/// The unit's capabilities, e.g. `["CAP_BPF", ...]`, checked to be both
/// the ambient and the bounding set.
fn unit_capabilities(service: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let set = |key: &str| {
        let mut caps: Vec<String> = service[key]
            .iter()
            .flat_map(|v| v.split_whitespace())
            .map(String::from)
            .collect();
        caps.sort();
        caps
    };
    let ambient = set("AmbientCapabilities");
    assert_eq!(ambient, set("CapabilityBoundingSet"), "ambient = bounding");
    ambient
}

/// `setpriv` taking this process to `UID` with exactly `caps` (CAP_* names)
/// as ambient, inheritable and bounding set, then the unit's ExecStart up
/// to the config path, with `bin` (the binary under test) for /usr/bin/xdplb.
fn command_line(exec_start: &str, caps: &[String], bin: &Path) -> Vec<OsString> {
    let list = caps
        .iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect::<Vec<_>>()
        .join(",");
    let mut argv: Vec<OsString> = [
        "setpriv".to_string(),
        format!("--reuid={UID}"),
        format!("--regid={UID}"),
        "--clear-groups".into(),
        "--no-new-privs".into(),
        format!("--inh-caps=-all,{list}"),
        format!("--ambient-caps=-all,{list}"),
        format!("--bounding-set=-all,{list}"),
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    let words: Vec<&str> = exec_start.split_whitespace().collect();
    assert_eq!(
        words,
        ["/usr/bin/xdplb", "run", "--config", "/etc/xdplb/xdplb.yaml"],
        "ExecStart as this test knows it"
    );
    argv.push(bin.into());
    argv.extend(words[1..3].iter().map(OsString::from));
    argv
}

/// The capabilities of the drop-in the unit's header gives for `bgp`
/// (`#   AmbientCapabilities=...` in its comment).
fn bgp_drop_in_capabilities(unit: &str) -> Vec<String> {
    unit.lines()
        .find_map(|l| l.strip_prefix("#   AmbientCapabilities="))
        .expect("the unit's comment shows the bgp drop-in")
        .split_whitespace()
        .map(String::from)
        .collect()
}

struct Bed {
    topo: Topology,
    _servers: Vec<HttpServer>,
    yaml: String,
    bin: UserBinary,
}

/// The binary under test, copied where `UID` can run it (the build's may
/// sit under a home directory other users cannot enter, as /root is);
/// removed on drop.
struct UserBinary(PathBuf);

impl UserBinary {
    fn new(name: &str) -> UserBinary {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("{name}bin"));
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.join("xdplb");
        fs::copy(xdplb_bin!(), &bin).unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        UserBinary(dir)
    }

    fn path(&self) -> PathBuf {
        self.0.join("xdplb")
    }
}

impl Drop for UserBinary {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

impl Bed {
    fn new() -> Bed {
        Bed::with("")
    }

    /// `extra` goes into the config's top level.
    fn with(extra: &str) -> Bed {
        let topo = Topology::create(2).expect("topology");
        let servers = (1..=2)
            .map(|i| {
                HttpServer::start(&topo.backend_ns(i), backend(i), &format!("backend-{i}")).unwrap()
            })
            .collect();
        let backends: Vec<String> = (1..=2)
            .map(|i| backend_yaml(backend_addr(i), 8080))
            .collect();
        let yaml = topo.daemon_config(
            &format!(
                "snat: {{ ipv4: 198.18.1.1, ports: 20000-29999 }}\n\
                 limits: {{ max_services: 4, max_backends: 8, maglev_table_size: 1021, flow_table_size: 4096 }}\n\
                 {extra}"
            ),
            &[service("web", "198.18.100.10", 80, &["protocol: tcp"], &backends)],
        );
        // What the unit's ExecStartPre does for /sys/fs/bpf/xdplb: the pin
        // directory belongs to the service's user.
        let pins = topo.pin_dir();
        fs::create_dir_all(&pins).unwrap();
        chown(&pins, Some(UID), Some(UID)).unwrap();
        Bed {
            bin: UserBinary::new(topo.prefix()),
            topo,
            _servers: servers,
            yaml,
        }
    }

    fn start(&self, command: Vec<OsString>) -> anyhow::Result<Daemon> {
        Daemon::start_command(
            command,
            &self.topo.lb_ns(),
            &self.yaml,
            ADMIN.parse().unwrap(),
        )
    }
}

#[test]
fn the_units_exec_start_serves_traffic_as_a_user_with_only_the_units_capabilities() {
    let service = service_section(&fs::read_to_string(unit_path()).unwrap());
    assert_eq!(service["User"], ["xdplb"]);
    assert_eq!(service["Type"], ["notify"]);
    let caps = unit_capabilities(&service);
    assert_eq!(caps, ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"]);
    let bed = Bed::new();
    // systemd's side of Type=notify and WatchdogSec=: the socket it passes
    // in NOTIFY_SOCKET, and the watchdog interval in WATCHDOG_USEC.
    let notify = Notify::bind();
    let mut command: Vec<OsString> = vec![
        "env".into(),
        format!("NOTIFY_SOCKET={}", notify.path.display()).into(),
        "WATCHDOG_USEC=1000000".into(),
    ];
    command.extend(command_line(
        &service["ExecStart"][0],
        &caps,
        &bed.bin.path(),
    ));
    let daemon = bed
        .start(command)
        .expect("the daemon starts as a user with the unit's capabilities");
    let ready = notify.wait_for("READY=1");
    assert!(
        ready.contains("STATUS=1 services, 2 backends; admin on http://127.0.0.1:9100"),
        "{ready}"
    );
    notify.wait_for("WATCHDOG=1");
    notify.wait_for("WATCHDOG=1");

    // Every thread runs as that user, with CAP_BPF and CAP_NET_ADMIN only
    // (CAP_PERFMON was for loading) and nothing for children.
    let status = fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid.split_whitespace().nth(1),
        Some(UID.to_string().as_str()),
        "{uid}"
    );
    let want = ["CAP_NET_ADMIN", "CAP_BPF"];
    for (tid, c) in ThreadCaps::of_threads(&daemon.pid().to_string()).unwrap() {
        assert_eq!(Kept::names(c.effective), want, "thread {tid}");
        assert_eq!(Kept::names(c.permitted), want, "thread {tid}");
        assert_eq!((c.inheritable, c.ambient), (0, 0), "thread {tid}");
    }

    // Real traffic through it: both backends answer through the VIP.
    let vip: SocketAddr = "198.18.100.10:80".parse().unwrap();
    assert!(
        wait_answering(&bed.topo.client_ns(), vip, Duration::from_secs(20)),
        "no answer through the VIP:\n{}",
        daemon.log()
    );
    let mut served = BTreeMap::<String, usize>::new();
    for port in 0..200u16 {
        let (status, body) = http_get_from(
            &bed.topo.client_ns(),
            40_000 + port,
            vip,
            "/",
            Duration::from_secs(5),
        )
        .unwrap_or_else(|e| panic!("request {port} failed: {e:#}\n{}", daemon.log()));
        assert_eq!(status, 200);
        *served.entry(body.trim().to_string()).or_default() += 1;
    }
    assert_eq!(served.len(), 2, "both backends serve: {served:?}");

    // ExecReload (SIGHUP) re-reads the file as that user, framed for systemd.
    daemon.reload(None).unwrap();
    assert!(notify.wait_for("RELOADING=1").contains("MONOTONIC_USEC="));
    notify.wait_for("READY=1");
    assert!(
        daemon.log().contains("SIGHUP: reloaded"),
        "{}",
        daemon.log()
    );

    daemon.send_sigterm();
    notify.wait_for("STOPPING=1");
    let (exit, log) = daemon.stop().unwrap();
    assert!(exit.success(), "{exit}:\n{log}");
    assert!(
        !log.contains('\u{1b}'),
        "no colour codes in a log file:\n{log}"
    );
}

#[test]
fn without_any_one_of_the_units_capabilities_the_daemon_does_not_start() {
    let service = service_section(&fs::read_to_string(unit_path()).unwrap());
    let caps = unit_capabilities(&service);
    let bed = Bed::new();
    for missing in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let err = match bed.start(command_line(
            &service["ExecStart"][0],
            &fewer,
            &bed.bin.path(),
        )) {
            Ok(d) => panic!("started without {missing}:\n{}", d.log()),
            Err(e) => format!("{e:#}"),
        };
        eprintln!(
            "without {missing}: {}",
            err.lines().last().unwrap_or_default()
        );
        // It names what is missing, before the kernel's bare EPERM.
        assert!(
            err.contains(&format!("this process lacks {missing} (")),
            "without {missing}: {err}"
        );
        // And the kernel does refuse: `xdplb trace` (which loads the same
        // program with its maps and has no such check) fails the same way.
        let trace = trace_as_user(&bed, &fewer);
        assert!(!trace.status.success(), "trace without {missing} ran");
        let stderr = String::from_utf8_lossy(&trace.stderr);
        assert!(
            [
                "Operation not permitted",
                "prohibited for !root",
                "failed to create map"
            ]
            .iter()
            .any(|refusal| stderr.contains(refusal)),
            "trace without {missing}: {stderr}"
        );
    }
    let all = trace_as_user(&bed, &caps);
    assert!(
        all.status.success(),
        "trace with the unit's capabilities: {}",
        String::from_utf8_lossy(&all.stderr)
    );
}

/// The notify socket systemd would give the service, writable by `UID`.
struct Notify {
    path: PathBuf,
    socket: std::os::unix::net::UnixDatagram,
}

impl Notify {
    fn bind() -> Notify {
        let path = std::env::temp_dir().join(format!("xdplb-notify-{}", std::process::id()));
        let _ = fs::remove_file(&path);
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Notify { path, socket }
    }

    /// The next message holding line `line` (earlier ones are skipped).
    #[track_caller]
    fn wait_for(&self, line: &str) -> String {
        let mut buf = [0u8; 4096];
        loop {
            let n = self
                .socket
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no {line} from the daemon: {e}"));
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            if message.lines().any(|l| l == line) {
                return message;
            }
        }
    }
}

impl Drop for Notify {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// `xdplb trace` of one frame with the test's config, as `UID` with `caps`.
fn trace_as_user(bed: &Bed, caps: &[String]) -> std::process::Output {
    let config = std::env::temp_dir().join(format!("{}trace.yaml", bed.topo.prefix()));
    fs::write(&config, &bed.yaml).unwrap();
    let argv = command_line(
        "/usr/bin/xdplb run --config /etc/xdplb/xdplb.yaml",
        caps,
        &bed.bin.path(),
    );
    // setpriv's options, then the binary: `trace` in place of `run`.
    let (setpriv, rest) = argv.split_first().unwrap();
    let options = &rest[..rest.len() - 3];
    let out = Command::new(setpriv)
        .args(options)
        .arg(bed.bin.path())
        .args(["trace", "--config"])
        .arg(&config)
        .args(["--hex", &"00".repeat(60)])
        .output()
        .unwrap();
    let _ = fs::remove_file(&config);
    out
}

/// With `bgp`, BIRD runs as the daemon's child: as a user other than root,
/// with the capabilities of the drop-in the unit's header shows, it gets
/// them (ambient) and establishes its session; the router learns the VIP.
#[test]
fn with_bgp_and_the_drop_in_bird_runs_as_the_services_child_and_announces() {
    let unit = fs::read_to_string(unit_path()).unwrap();
    let mut caps = unit_capabilities(&service_section(&unit));
    let bird_caps = bgp_drop_in_capabilities(&unit);
    caps.extend(bird_caps.iter().cloned());
    let run_dir = std::env::temp_dir().join(format!("xdplb-unit-bgp-{}", std::process::id()));
    fs::create_dir_all(&run_dir).unwrap();
    chown(&run_dir, Some(UID), Some(UID)).unwrap();
    let bed = Bed::with(&format!(
        "run_dir: {}\nbgp:\n  local_as: 65001\n  peers: [ {{ address: 198.18.0.2, as: 65000 }} ]\n  hold_time: 3s\n",
        run_dir.display()
    ));
    let client = bed.topo.client_ns();
    netns::ip(&["-n", &client, "route", "del", "198.18.100.0/24"]).unwrap();
    let router = PeerBird::start(
        &client,
        &router_conf("198.18.0.2", 65000, "198.18.0.1", 65001),
    )
    .expect("router bird");
    let daemon = bed
        .start(command_line(
            &service_section(&unit)["ExecStart"][0],
            &caps,
            &bed.bin.path(),
        ))
        .expect("the daemon starts with the bgp drop-in's capabilities");
    let learnt = wait_until(Duration::from_secs(30), || {
        netns::ip(&["-n", &client, "route", "show", "198.18.100.10/32"])
            .is_ok_and(|r| r.contains("proto bird"))
    });
    // Children of any of the daemon's threads (BIRD is spawned from one).
    let children: Vec<String> = fs::read_dir(format!("/proc/{}/task", daemon.pid()))
        .unwrap()
        .filter_map(|t| fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|c| c.split_whitespace().map(String::from).collect::<Vec<_>>())
        .collect();
    let bird_status = children
        .iter()
        .find_map(|pid| {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            status.starts_with("Name:\tbird").then_some(status)
        })
        .unwrap_or_default();
    let _ = fs::remove_dir_all(&run_dir);
    assert!(
        learnt,
        "the router never learnt the VIP:\n{}\nrouter: {}",
        daemon.log(),
        router.log()
    );
    let bird = ThreadCaps::parse(&bird_status).expect("BIRD runs as the daemon's child");
    // BIRD's own four (sysdep/linux/syspriv.h), CAP_NET_ADMIN among them.
    assert_eq!(
        Kept::names(bird.effective),
        [
            "CAP_NET_BIND_SERVICE",
            "CAP_NET_BROADCAST",
            "CAP_NET_ADMIN",
            "CAP_NET_RAW"
        ]
    );
    let uid = bird_status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid.split_whitespace().nth(1),
        Some(UID.to_string().as_str())
    );
}

/// `systemd-analyze verify` on the unit, with the binary under test for
/// /usr/bin/xdplb and its man pages where `man` finds them (the package
/// installs both; tests/package.rs verifies the installed unit as it is).
#[test]
fn systemd_analyze_verifies_the_unit() {
    let dir = std::env::temp_dir().join(format!("xdplb-unit-{}", std::process::id()));
    let man = dir.join("man/man1");
    fs::create_dir_all(&man).unwrap();
    let pages = Command::new(xdplb_bin!())
        .args(["manpage", "--dir"])
        .arg(&man)
        .status()
        .unwrap();
    assert!(pages.success());
    let text = fs::read_to_string(unit_path())
        .unwrap()
        .replace("/usr/bin/xdplb", xdplb_bin!().to_str().unwrap());
    let unit = dir.join("xdplb.service");
    fs::write(&unit, text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .env("MANPATH", dir.join("man"))
        .output()
        .expect("systemd-analyze (package systemd)");
    let _ = fs::remove_dir_all(&dir);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
