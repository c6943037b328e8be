//! The multi-node test bed (docs/ha.md): a tier of LB nodes behind a
//! router doing ECMP over the routes they announce with BGP.
//!
//! ```text
//! [client] cli0 198.18.0.2 --- rcli 198.18.0.1 [router] rup 198.18.2.254 --- [switch: up0] --- lbc 198.18.2.k [node k]
//!                                              [router] rbe 198.18.1.254 --- [switch: be0] --- lbb 198.18.1.k [node k]
//!                                                                            [switch: be0] --- eth0 198.18.1.(10+i) [backend i]
//! ```
//!
//! The router runs BIRD: one eBGP session per node (AS 65000 to the nodes'
//! AS 65001), `merge paths on` in its kernel protocol so the kernel gets
//! one multipath route per VIP with a next hop per announcing node, and
//! a multipath hash over the 5-tuple (policy 3, fields 0x37) so flows
//! spread by their L4 hash. The
//! client has only a default route via the router: it reaches a VIP only
//! while some node announces it. Each node runs the real daemon (started
//! by the test) with its own BIRD, pin_dir, run_dir and admin API. The
//! backends sit on one L2 segment with the nodes' `lbb` and route through
//! the router, so dsr and tunnel replies go straight to the client.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
};

use anyhow::{Context, Result, ensure};

use crate::{
    bird::PeerBird,
    daemon::{ADMIN, Daemon},
    fixtures,
    netns::{self, Netns, find_program, ip, ip_script, run},
    topology::{BACKEND_IF, CLIENT_ADDR, CLIENT_IF, LB_BACKEND_IF, LB_CLIENT_IF, backend_addr},
};

/// The router's addresses: client side, node side, backend side.
pub const ROUTER_CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const ROUTER_UP_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 254);
pub const ROUTER_BACKEND_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 254);
pub const ROUTER_AS: u32 = 65000;
pub const NODE_AS: u32 = 65001;

/// Node `k`'s (1-based) address toward the router: 198.18.2.k, its BGP
/// next hop and router id.
pub fn node_addr(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 2, k as u8)
}

/// Node `k`'s address on the backends' segment: 198.18.1.k (its snat
/// address: the tunnel's outer source).
pub fn node_backend_addr(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1, k as u8)
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The namespaces and the router's BIRD of one run; all removed on drop.
pub struct MultiNode {
    router: Option<PeerBird>,
    /// The XDP_PASS program on the switch ports of the nodes (see
    /// `veth::pass_xdp`); detached on drop.
    _switch_xdp: Option<aya::Ebpf>,
    prefix: String,
    created: Vec<Netns>,
    nodes: usize,
    backends: usize,
}

impl MultiNode {
    /// `nodes` LB nodes (1..=9) and `backends` backends (1..=50), the router's
    /// BIRD started (its sessions come up as the nodes' daemons start).
    pub fn create(nodes: usize, backends: usize) -> Result<MultiNode> {
        ensure!((1..=9).contains(&nodes), "nodes must be 1..=9");
        ensure!((1..=50).contains(&backends), "backends must be 1..=50");
        let ethtool = find_program("ethtool")
            .context("the test bed needs ethtool (run `cargo xtask setup`)")?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut t = MultiNode {
            router: None,
            _switch_xdp: None,
            prefix: format!("xdplb-{}-m{n}-", std::process::id()),
            created: Vec::new(),
            nodes,
            backends,
        };
        let (cli, rt, sw) = (t.client_ns(), t.router_ns(), t.switch_ns());
        for ns in [&cli, &rt, &sw] {
            t.created.push(Netns::create(ns)?);
        }
        // Sysctls first: interfaces created later inherit `default`.
        netns::run_in(&rt, || {
            sysctls(&[
                ("ipv4/ip_forward", "1"),
                ("ipv4/conf/all/forwarding", "1"),
                // dsr replies come back from the VIP on rbe, while the
                // route to the VIP points at rup.
                ("ipv4/conf/all/rp_filter", "0"),
                ("ipv4/conf/default/rp_filter", "0"),
                // Spread by the 5-tuple read from the headers, as a
                // hardware router does. (Policy 1 would reuse the hash a
                // veth carries over from the client's socket, which TCP
                // re-draws on every retransmission timeout: a stalled
                // stream would move to another node before any reroute.)
                ("ipv4/fib_multipath_hash_policy", "3"),
                ("ipv4/fib_multipath_hash_fields", "0x37"),
            ])
        })?;
        veth(&cli, CLIENT_IF, &rt, "rcli")?;
        addr(&cli, CLIENT_IF, CLIENT_ADDR, 24)?;
        addr(&rt, "rcli", ROUTER_CLIENT_ADDR, 24)?;
        ip(&[
            "-n",
            &cli,
            "route",
            "add",
            "default",
            "via",
            &ROUTER_CLIENT_ADDR.to_string(),
        ])?;
        ip_script(
            &sw,
            [
                "link add up0 type bridge stp_state 0",
                "link add be0 type bridge stp_state 0",
                "link set up0 up",
                "link set be0 up",
            ],
        )?;
        port(&rt, "rup", &sw, "rtu", "up0")?;
        port(&rt, "rbe", &sw, "rtb", "be0")?;
        addr(&rt, "rup", ROUTER_UP_ADDR, 24)?;
        addr(&rt, "rbe", ROUTER_BACKEND_ADDR, 24)?;
        for k in 1..=nodes {
            let ns = t.node_ns(k);
            t.created.push(Netns::create(&ns)?);
            netns::run_in(&ns, || {
                sysctls(&[
                    ("ipv4/ip_forward", "1"),
                    ("ipv4/conf/all/forwarding", "1"),
                    ("ipv4/conf/default/forwarding", "1"),
                ])
            })?;
            for (dev, sw_port, bridge) in [
                (LB_CLIENT_IF, format!("n{k}c"), "up0"),
                (LB_BACKEND_IF, format!("n{k}b"), "be0"),
            ] {
                port(&ns, dev, &sw, &sw_port, bridge)?;
                // A real NIC drops unicast frames for other MACs before XDP
                // sees them; a veth does not. Without this, once a node's
                // port goes down the bridge floods the frames for its MAC
                // to the other nodes, whose XDP would take them at once
                // (the failover would look instant).
                ip(&[
                    "-n",
                    &sw,
                    "link",
                    "set",
                    "dev",
                    &sw_port,
                    "type",
                    "bridge_slave",
                    "flood",
                    "off",
                ])?;
            }
            addr(&ns, LB_CLIENT_IF, node_addr(k), 24)?;
            addr(&ns, LB_BACKEND_IF, node_backend_addr(k), 24)?;
            let gw = ROUTER_UP_ADDR.to_string();
            ip(&["-n", &ns, "route", "add", "default", "via", &gw])?;
        }
        for i in 1..=backends {
            let be = t.backend_ns(i);
            t.created.push(Netns::create(&be)?);
            port(&be, BACKEND_IF, &sw, &format!("be{i}"), "be0")?;
            addr(&be, BACKEND_IF, backend_addr(i), 24)?;
            let gw = ROUTER_BACKEND_ADDR.to_string();
            ip(&["-n", &be, "route", "add", "default", "via", &gw])?;
        }

        let ethtool = |ns: &str, args: &[&str]| {
            run(netns::command(ns, &ethtool.to_string_lossy()).args(args))
        };
        // Frames XDP-redirected into a veth are only delivered if the peer
        // runs XDP or has GRO on: the switch ports of the nodes.
        for k in 1..=nodes {
            for dev in [format!("n{k}c"), format!("n{k}b")] {
                ethtool(&sw, &["-K", &dev, "gro", "on"])?;
            }
        }
        let ports: Vec<String> = (1..=nodes)
            .flat_map(|k| [format!("n{k}c"), format!("n{k}b")])
            .collect();
        t._switch_xdp = Some(crate::veth::pass_xdp(&sw, &ports)?);
        // Full checksums on the wire, as a real NIC's receiver sees them
        // (see Topology::create).
        ethtool(&cli, &["-K", CLIENT_IF, "tx", "off"])?;
        for dev in ["rcli", "rup", "rbe"] {
            ethtool(&rt, &["-K", dev, "tx", "off"])?;
        }
        for i in 1..=backends {
            ethtool(&t.backend_ns(i), &["-K", BACKEND_IF, "tx", "off"])?;
        }
        t.router = Some(PeerBird::start(&rt, &t.router_conf())?);
        Ok(t)
    }

    /// The router's BIRD config: a session per node, every route learnt
    /// merged into one multipath kernel route.
    fn router_conf(&self) -> String {
        let mut conf = format!(
            "log stderr all;\nrouter id {ROUTER_CLIENT_ADDR};\nprotocol device {{}}\n\
             protocol kernel {{ merge paths on; ipv4 {{ import none; export all; }}; }}\n"
        );
        for k in 1..=self.nodes {
            conf += &format!(
                "protocol bgp node{k} {{\n  local {ROUTER_UP_ADDR} as {ROUTER_AS};\n  \
                 neighbor {} as {NODE_AS};\n  hold time 3;\n  connect retry time 1;\n  \
                 ipv4 {{ import all; export none; }};\n}}\n",
                node_addr(k)
            );
        }
        conf
    }

    /// The daemon config of node `k`: its interfaces, pin_dir, run_dir, the
    /// admin API on [`ADMIN`], snat on its backend-side address, a BGP
    /// session to the router, then `settings` and `services` (see
    /// [`fixtures::daemon_config`]). Every node gets the same services.
    pub fn node_config(&self, k: usize, settings: &str, services: &[String]) -> String {
        let settings = format!(
            "run_dir: {}\nsnat: {{ ipv4: {} }}\n\
             bgp:\n  local_as: {NODE_AS}\n  peers: [ {{ address: {ROUTER_UP_ADDR}, as: {ROUTER_AS} }} ]\n  hold_time: 3s\n{}",
            self.run_dir(k).display(),
            node_backend_addr(k),
            settings.trim_end()
        );
        fixtures::daemon_config(
            &[LB_CLIENT_IF, LB_BACKEND_IF],
            &self.pin_dir(k),
            &settings,
            services,
        )
    }

    /// The `flow_sync` section of node `k` (for [`Self::node_config`]'s
    /// settings): its address toward the router, every other node a peer.
    pub fn flow_sync_settings(&self, k: usize) -> String {
        let peers: Vec<String> = (1..=self.nodes)
            .filter(|&j| j != k)
            .map(|j| node_addr(j).to_string())
            .collect();
        format!(
            "flow_sync: {{ address: {}, peers: [{}] }}\n",
            node_addr(k),
            peers.join(", ")
        )
    }

    /// Starts the daemon `bin` in node `k` with `yaml` (from [`Self::node_config`]).
    pub fn start_daemon(&self, k: usize, bin: &Path, yaml: &str) -> Result<Daemon> {
        Daemon::start(bin, &self.node_ns(k), yaml, ADMIN.parse()?)
    }

    /// Runs the CLI `bin ARGS... --admin ADMIN` inside node `k`, against
    /// its daemon (`node drain`, as an operator on that node would); its
    /// output.
    pub fn cli(&self, k: usize, bin: &Path, args: &[&str]) -> Result<String> {
        run(netns::command(&self.node_ns(k), &bin.to_string_lossy())
            .args(args)
            .args(["--admin", ADMIN]))
    }

    /// The next hops of the router's kernel route to `vip` learnt over BGP
    /// (empty: no route).
    pub fn next_hops(&self, vip: IpAddr) -> Vec<IpAddr> {
        let Ok(out) = ip(&["-n", &self.router_ns(), "route", "show", &vip.to_string()]) else {
            return Vec::new();
        };
        if !out.contains("proto bird") {
            return Vec::new();
        }
        let words: Vec<&str> = out.split_whitespace().collect();
        words
            .windows(2)
            .filter(|w| w[0] == "via")
            .filter_map(|w| w[1].parse().ok())
            .collect()
    }

    /// A hard failure of node `k`: its links go down at once (no
    /// withdrawal, no BGP notification; the router notices only when the
    /// hold time runs out). The daemon and its BIRD keep running, cut off.
    pub fn cut_node(&self, k: usize) -> Result<()> {
        let ns = self.node_ns(k);
        ip_script(
            &ns,
            [
                format!("link set {LB_CLIENT_IF} down"),
                format!("link set {LB_BACKEND_IF} down"),
            ],
        )
    }

    /// The router's BIRD (`birdc show protocols`, its log).
    pub fn router(&self) -> &PeerBird {
        self.router.as_ref().expect("started in create")
    }

    pub fn nodes(&self) -> usize {
        self.nodes
    }
    pub fn backends(&self) -> usize {
        self.backends
    }
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    pub fn client_ns(&self) -> String {
        format!("{}cli", self.prefix)
    }
    pub fn router_ns(&self) -> String {
        format!("{}rt", self.prefix)
    }
    /// Holds the bridges `up0` (router and nodes) and `be0` (router, nodes
    /// and backends).
    pub fn switch_ns(&self) -> String {
        format!("{}sw", self.prefix)
    }
    /// Namespace of node `k` (1-based).
    pub fn node_ns(&self, k: usize) -> String {
        assert!((1..=self.nodes).contains(&k), "no node {k}");
        format!("{}n{k}", self.prefix)
    }
    /// Namespace of backend `i` (1-based).
    pub fn backend_ns(&self, i: usize) -> String {
        assert!((1..=self.backends).contains(&i), "no backend {i}");
        format!("{}be{i}", self.prefix)
    }
    /// Node `k`'s pin_dir under /sys/fs/bpf (removed when its Daemon drops).
    pub fn pin_dir(&self, k: usize) -> String {
        format!("/sys/fs/bpf/{}n{k}", self.prefix)
    }
    /// Node `k`'s run_dir (BIRD's files), removed on drop.
    pub fn run_dir(&self, k: usize) -> PathBuf {
        std::env::temp_dir().join(format!("{}n{k}-run", self.prefix))
    }
}

impl Drop for MultiNode {
    fn drop(&mut self) {
        self.router.take();
        self._switch_xdp.take();
        while self.created.pop().is_some() {}
        for k in 1..=self.nodes {
            let _ = std::fs::remove_dir_all(self.run_dir(k));
        }
    }
}

fn sysctls(pairs: &[(&str, &str)]) -> Result<()> {
    for (key, value) in pairs {
        let path = format!("/proc/sys/net/{key}");
        std::fs::write(&path, value).with_context(|| format!("write {value} to {path}"))?;
    }
    Ok(())
}

/// A veth pair with `a` in namespace `ns_a` and `b` in `ns_b`, both up.
fn veth(ns_a: &str, a: &str, ns_b: &str, b: &str) -> Result<()> {
    ip(&[
        "-n", ns_a, "link", "add", a, "type", "veth", "peer", "name", b, "netns", ns_b,
    ])?;
    ip(&["-n", ns_a, "link", "set", a, "up"])?;
    ip(&["-n", ns_b, "link", "set", b, "up"])?;
    Ok(())
}

/// A veth from `dev` in `ns` to port `port` of bridge `bridge` in `sw`.
fn port(ns: &str, dev: &str, sw: &str, port: &str, bridge: &str) -> Result<()> {
    veth(ns, dev, sw, port)?;
    ip(&["-n", sw, "link", "set", port, "master", bridge])?;
    Ok(())
}

fn addr(ns: &str, dev: &str, a: Ipv4Addr, len: u8) -> Result<()> {
    ip(&["-n", ns, "addr", "add", &format!("{a}/{len}"), "dev", dev])?;
    Ok(())
}
