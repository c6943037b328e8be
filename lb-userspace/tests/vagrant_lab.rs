//! The Vagrant lab (vagrant/): Debian's vagrant validates the Vagrantfile
//! (with vagrant-libvirt, whose provider settings it then checks too),
//! shellcheck passes the provision scripts, and the scripts build the lab
//! on this machine in network namespaces wired as the lab's machines are
//! (client, lb, two backends; addresses from vagrant/provision/lab.env).
//! Each script runs as in its machine, but in its role's namespace and in
//! a mount namespace of its own whose root file system is read-only (it can
//! write only its own directory under the target dir, /proc/sys of its
//! network namespace and the bpf filesystem), with services as plain
//! processes (no systemd here). Then curl from the client namespace gets
//! pages from both backends through the VIP, balanced by the real xdplb
//! unpacked from the .deb. Needs root, iproute2 and ethtool; the package
//! comes from XDPLB_DEB or `cargo xtask package` (lb_testbed::deb);
//! installs vagrant, shellcheck, curl and nc when missing.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use lb_testbed::{
    deb,
    host_tools::{apt_package, apt_program},
    metric_sum,
    netns::{Netns, find_program, ip, run},
    udp_request,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn vagrant_dir() -> PathBuf {
    repo().join("vagrant")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The lab's plan: the `: "${KEY:=VALUE}"` lines of lab.env.
fn plan() -> BTreeMap<String, String> {
    let env = std::fs::read_to_string(vagrant_dir().join("provision/lab.env")).unwrap();
    let plan: BTreeMap<String, String> = env
        .lines()
        .filter_map(|l| l.strip_prefix(": \"${")?.strip_suffix("}\""))
        .filter_map(|kv| kv.split_once(":="))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert!(plan.len() >= 10, "lab.env: {plan:?}");
    plan
}

/// Debian's vagrant with the libvirt provider plugin (so that `validate`
/// checks the libvirt settings too), installed if missing.
fn vagrant() -> PathBuf {
    let bin = apt_program("vagrant", "vagrant").expect("vagrant installs");
    apt_package("vagrant-libvirt").expect("vagrant-libvirt installs");
    let plugins = Command::new(&bin)
        .args(["plugin", "list"])
        .output()
        .unwrap();
    assert!(
        text(&plugins).contains("vagrant-libvirt"),
        "vagrant-libvirt is not installed: {}",
        text(&plugins)
    );
    bin
}

/// Where vagrant keeps its state (`.vagrant`) for this test process.
fn dot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("vagrant-dot-{}", std::process::id()))
}

/// `vagrant ARGS` in `dir`, its state kept under the target dir.
fn run_vagrant(dir: &Path, args: &[&str]) -> Output {
    let dot = dot_dir();
    Command::new(vagrant())
        .args(args)
        .current_dir(dir)
        .env("VAGRANT_DEFAULT_PROVIDER", "libvirt")
        .env("VAGRANT_DOTFILE_PATH", &dot)
        .env("VAGRANT_CHECKPOINT_DISABLE", "1")
        .output()
        .expect("vagrant runs")
}

#[test]
fn vagrant_validates_the_lab() {
    let version = run_vagrant(&vagrant_dir(), &["--version"]);
    println!("{}", text(&version).trim());
    let out = run_vagrant(&vagrant_dir(), &["validate"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Vagrantfile validated successfully"),
        "{}",
        text(&out)
    );

    let out = run_vagrant(&vagrant_dir(), &["status"]);
    assert!(out.status.success(), "{}", text(&out));
    for machine in ["backend1", "backend2", "lb", "client", "dev"] {
        assert!(
            text(&out)
                .lines()
                .any(|l| l.starts_with(machine) && l.contains("not created")),
            "no machine {machine}:\n{}",
            text(&out)
        );
    }

    // validate is no rubber stamp: a wrong libvirt setting is refused.
    let copy =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("vagrant-typo-{}", std::process::id()));
    std::fs::create_dir_all(copy.join("provision")).unwrap();
    let file = std::fs::read_to_string(vagrant_dir().join("Vagrantfile")).unwrap();
    let typo = file.replacen("lv.nic_model_type", "lv.nic_model_typo", 1);
    assert_ne!(typo, file);
    std::fs::write(copy.join("Vagrantfile"), typo).unwrap();
    std::fs::copy(
        vagrant_dir().join("provision/lab.env"),
        copy.join("provision/lab.env"),
    )
    .unwrap();
    let out = run_vagrant(&copy, &["validate"]);
    std::fs::remove_dir_all(&copy).unwrap();
    let _ = std::fs::remove_dir_all(dot_dir());
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("nic_model_typo"), "{}", text(&out));
}

#[test]
fn the_provision_scripts_pass_shellcheck() {
    let shellcheck = apt_program("shellcheck", "shellcheck").expect("shellcheck installs");
    let dir = vagrant_dir().join("provision");
    let mut scripts: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sh") || n.ends_with(".env"))
        .collect();
    scripts.sort();
    assert!(scripts.len() >= 6, "{scripts:?}");
    // -x follows what they source; every severity, info included.
    let out = Command::new(shellcheck)
        .args(["-x", "--severity=style"])
        .args(&scripts)
        .current_dir(&dir)
        .output()
        .expect("shellcheck runs");
    assert!(
        out.status.success(),
        "shellcheck {scripts:?}:\n{}",
        text(&out)
    );
}

/// The lab's namespaces, the processes the scripts started and their
/// files: all gone on drop, even when the test fails.
struct Lab {
    prefix: String,
    scratch: PathBuf,
    pin_dir: PathBuf,
    /// Dropped last: the processes inside must be stopped first.
    namespaces: Vec<Netns>,
}

impl Lab {
    fn ns(&self, role: &str) -> String {
        format!("{}{role}", self.prefix)
    }

    /// What the lab's Vagrant networks are, as veths: the client and the
    /// LB's front NIC on one link, the LB's back NIC and the backends on a
    /// bridge (in a namespace of its own). Addresses as Vagrant sets them;
    /// routes, forwarding, offloads and services are the scripts' work.
    fn create(plan: &BTreeMap<String, String>) -> Lab {
        let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("vagrant-lab-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).unwrap();
        let mut lab = Lab {
            prefix: format!("xdplab-{}-", std::process::id()),
            scratch,
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/xdplab-{}", std::process::id())),
            namespaces: Vec::new(),
        };
        for role in ["client", "lb", "sw", "backend1", "backend2"] {
            lab.namespaces
                .push(Netns::create(&lab.ns(role)).expect("netns"));
        }
        let (cl, lb, sw) = (lab.ns("client"), lab.ns("lb"), lab.ns("sw"));
        let veth = |a_ns: &str, a: &str, b_ns: &str, b: &str| {
            ip(&[
                "-n", a_ns, "link", "add", a, "type", "veth", "peer", "name", b, "netns", b_ns,
            ])
            .unwrap();
            ip(&["-n", a_ns, "link", "set", a, "up"]).unwrap();
            ip(&["-n", b_ns, "link", "set", b, "up"]).unwrap();
        };
        let addr = |ns: &str, dev: &str, key: &str, prefix: &str| {
            let a = format!("{}/{}", plan[key], plan[prefix]);
            ip(&["-n", ns, "addr", "add", &a, "dev", dev]).unwrap();
        };
        veth(&cl, "eth1", &lb, "eth1");
        addr(&cl, "eth1", "CLIENT_ADDR", "FRONT_PREFIX");
        addr(&lb, "eth1", "LB_FRONT_ADDR", "FRONT_PREFIX");
        ip(&[
            "-n",
            &sw,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
        ])
        .unwrap();
        ip(&["-n", &sw, "link", "set", "br0", "up"]).unwrap();
        veth(&lb, "eth2", &sw, "lb");
        addr(&lb, "eth2", "LB_BACK_ADDR", "BACK_PREFIX");
        ip(&["-n", &sw, "link", "set", "lb", "master", "br0"]).unwrap();
        for (i, role) in ["backend1", "backend2"].iter().enumerate() {
            let port = format!("be{}", i + 1);
            veth(&lab.ns(role), "eth1", &sw, &port);
            ip(&["-n", &sw, "link", "set", &port, "master", "br0"]).unwrap();
            let key = format!("BACKEND{}_ADDR", i + 1);
            addr(&lab.ns(role), "eth1", &key, "BACK_PREFIX");
        }
        // A veth quirk, not the lab's: a frame XDP redirects into a veth
        // reaches its peer only with GRO (or XDP) on there (a virtio-net
        // NIC needs nothing).
        let ethtool = find_program("ethtool").expect("ethtool");
        for (ns, dev) in [(&cl, "eth1"), (&sw, "lb")] {
            run(Command::new("nsenter")
                .arg(format!("--net=/var/run/netns/{ns}"))
                .arg(&ethtool)
                .args(["-K", dev, "gro", "on"]))
            .unwrap();
        }
        lab
    }

    /// Runs `vagrant/provision/SCRIPT` in `role`'s network namespace, as
    /// described at the top, with the lab's `env`; its directory is
    /// scratch/ROLE. Returns what it printed.
    fn provision(&self, role: &str, script: &str, env: &[(&str, String)]) -> String {
        let dir = self.scratch.join(role);
        std::fs::create_dir_all(&dir).unwrap();
        let path = std::env::var("PATH").unwrap_or_default();
        // Only `dir` is writable (bound on itself, so that the read-only
        // remount of / leaves it alone); /tmp is a fresh tmpfs.
        let confine = "set -e; mount --make-rprivate /; mount --bind \"$LAB_DIR\" \"$LAB_DIR\"; \
                       mount -o remount,bind,ro /; mount -t tmpfs lab-tmp /tmp; exec bash \"$0\"";
        let started = Instant::now();
        let out = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.ns(role)))
            .args([
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "bash",
                "-c",
                confine,
            ])
            .arg(vagrant_dir().join("provision").join(script))
            .env("PATH", format!("{path}:/usr/sbin:/sbin"))
            .env("LAB_SERVICES", "process")
            .env("LAB_DIR", &dir)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("the provision script runs");
        let said = text(&out);
        println!(
            "--- {script} in {role} ({:.1?}):\n{said}",
            started.elapsed()
        );
        assert!(
            out.status.success(),
            "{script} failed in {role}:\n{said}\n{}",
            self.logs()
        );
        said
    }

    /// The services' logs (LAB_DIR/ROLE/*.log), for a failure.
    fn logs(&self) -> String {
        let mut all = String::new();
        for entry in walk(&self.scratch, "log") {
            let text = std::fs::read_to_string(&entry).unwrap_or_default();
            all += &format!("--- {}:\n{text}\n", entry.display());
        }
        all
    }
}

/// The files named *.EXT in the roles' directories.
fn walk(scratch: &Path, ext: &str) -> Vec<PathBuf> {
    let Ok(roles) = std::fs::read_dir(scratch) else {
        return Vec::new();
    };
    roles
        .flatten()
        .filter_map(|r| std::fs::read_dir(r.path()).ok())
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect()
}

impl Drop for Lab {
    /// Stops what the scripts started (SIGTERM: xdplb detaches and
    /// removes its pins), then the namespaces and files go.
    fn drop(&mut self) {
        let pids: Vec<i32> = walk(&self.scratch, "pid")
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok()?.trim().parse().ok())
            .collect();
        for pid in &pids {
            unsafe { libc::kill(*pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while pids
            .iter()
            .any(|p| Path::new(&format!("/proc/{p}")).exists())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in &pids {
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

#[test]
fn the_provision_scripts_build_a_lab_that_balances_over_both_backends() {
    for (program, package) in [
        ("curl", "curl"),
        ("nc", "netcat-openbsd"),
        ("ethtool", "ethtool"),
        ("python3", "python3"),
        ("dpkg-deb", "dpkg"),
        ("nsenter", "util-linux"),
    ] {
        apt_program(program, package).unwrap_or_else(|e| panic!("{program}: {e:#}"));
    }
    let plan = plan();
    let deb = deb::path().expect("the .deb (cargo xtask package)");
    let lab = Lab::create(&plan);

    for (i, role) in ["backend1", "backend2"].iter().enumerate() {
        let addr = plan[&format!("BACKEND{}_ADDR", i + 1)].clone();
        lab.provision(
            role,
            "backend.sh",
            &[("BACKEND_ADDR", addr), ("BACKEND_NAME", role.to_string())],
        );
    }
    let lb_dir = lab.scratch.join("lb");
    let said = lab.provision(
        "lb",
        "lb.sh",
        &[
            ("DEB", deb.display().to_string()),
            ("XDPLB_ROOT", lb_dir.join("root").display().to_string()),
            (
                "XDPLB_CONFIG",
                lb_dir.join("xdplb.yaml").display().to_string(),
            ),
            ("PIN_DIR", lab.pin_dir.display().to_string()),
            ("RUN_DIR", lb_dir.join("run").display().to_string()),
            ("XDP_MODE", "native".into()),
        ],
    );
    assert!(said.contains("native XDP"), "{said}");
    let said = lab.provision("client", "client.sh", &[("WAIT", "60".into())]);
    assert!(said.contains("the UDP echo on"), "{said}");

    // The program runs on both of the LB's NICs, in native mode.
    let links = ip(&["-n", &lab.ns("lb"), "-d", "link", "show"]).unwrap();
    assert_eq!(links.matches("prog/xdp").count(), 2, "{links}");

    // curl from the client: both backends answer through the VIP.
    let vip = &plan["VIP"];
    let mut answers = BTreeMap::<String, usize>::new();
    for _ in 0..24 {
        let out = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", lab.ns("client")))
            .args(["curl", "-fsS", "--max-time", "3", &format!("http://{vip}/")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl {vip}: {}\n{}",
            text(&out),
            lab.logs()
        );
        *answers.entry(text(&out).trim().to_owned()).or_default() += 1;
    }
    println!("curl http://{vip}/ x24: {answers:?}");
    let names: BTreeSet<&str> = answers.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from(["backend1", "backend2"]),
        "{}",
        lab.logs()
    );

    // The UDP echo through the VIP too.
    let target = format!("{vip}:53").parse().unwrap();
    let reply = udp_request(&lab.ns("client"), target, b"lab", Duration::from_secs(3)).unwrap();
    assert_eq!(reply, b"lab");

    // What the balancer counted agrees: both backends got packets.
    let metrics = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", lab.ns("lb")))
        .args(["curl", "-fsS", "http://127.0.0.1:9100/metrics"])
        .output()
        .unwrap();
    let metrics = text(&metrics);
    for key in ["BACKEND1_ADDR", "BACKEND2_ADDR"] {
        let backend = format!("{}:{}", plan[key], plan["HTTP_PORT"]);
        let labels = [("service", "web"), ("backend", backend.as_str())];
        let packets = metric_sum(&metrics, "xdplb_backend_packets_total", &labels);
        assert!(
            packets > 0.0,
            "no packets counted for {backend}:\n{metrics}"
        );
    }
}
