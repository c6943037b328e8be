//! The reference test topology (docs/design.md section 6):
//!
//! ```text
//! [client] cli0 198.18.0.2 --- lbc 198.18.0.1 [lb] lbb 198.18.1.1 --- lb [switch: br0] bei --- eth0 198.18.1.(10+i) [backend i]
//! ```
//!
//! Every veth is created directly inside its namespaces, so nothing ever
//! lives in the caller's namespace and deleting the namespaces removes it all.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use anyhow::{Context, Result, ensure};

use crate::{
    daemon::{ADMIN, Daemon},
    fixtures,
    netns::{self, Netns, find_program, ip, run},
};

/// Client address (on `cli0`).
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// LB address on the client side (`lbc`).
pub const LB_CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// LB address on the backend side (`lbb`); also the natural snat address.
pub const LB_BACKEND_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
/// VIP range, routed by the client via the LB.
pub const VIP_NET: &str = "198.18.100.0/24";
/// The IPv6 plan mirrors the IPv4 one: client 2001:db8::2, LB 2001:db8::1
/// and 2001:db8:1::1, backend i 2001:db8:1::(10+i), VIPs 2001:db8:100::/64.
pub const CLIENT_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
pub const LB_CLIENT_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const LB_BACKEND_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
pub const VIP_NET6: &str = "2001:db8:100::/64";
/// Interface names inside the namespaces.
pub const CLIENT_IF: &str = "cli0";
pub const LB_CLIENT_IF: &str = "lbc";
pub const LB_BACKEND_IF: &str = "lbb";
pub const BACKEND_IF: &str = "eth0";

/// IPv6 address of backend `i` (1-based): 2001:db8:1::(10+i), same digits.
pub fn backend_addr6(i: usize) -> Ipv6Addr {
    crate::fib_net::backend6(backend_addr(i).octets()[3])
}

/// Address of backend `i` (1-based): 198.18.1.(10+i).
pub fn backend_addr(i: usize) -> Ipv4Addr {
    assert!((1..=200).contains(&i), "backend index {i} out of 1..=200");
    Ipv4Addr::new(198, 18, 1, 10 + i as u8)
}

/// Backend `i`'s HTTP test server address (`HttpServer` on port 8080),
/// as the daemon's configs of the integration tests name it.
pub fn backend_http(i: usize) -> std::net::SocketAddr {
    (backend_addr(i), 8080).into()
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The namespaces of one run; all are deleted on drop, even on panic.
#[derive(Debug)]
pub struct Topology {
    prefix: String,
    /// Namespaces created so far, in creation order (Drop deletes them in
    /// reverse).
    created: Vec<Netns>,
    n_backends: usize,
    /// XDP_PASS on the LB's veth peers, so that its XDP_TX frames leave
    /// (`veth`); detached on drop.
    _peer_xdp: Option<aya::Ebpf>,
    /// XDP_PASS on the switch's port facing the LB: frames the LB redirects
    /// there are delivered on 5.10 only with it.
    _switch_xdp: Option<aya::Ebpf>,
}

impl Topology {
    /// Builds the topology with `n_backends` backends (1..=200).
    pub fn create(n_backends: usize) -> Result<Topology> {
        ensure!(
            (1..=200).contains(&n_backends),
            "n_backends must be 1..=200"
        );
        let ethtool = find_program("ethtool")
            .context("the test bed needs ethtool (run `cargo xtask setup`)")?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut t = Topology {
            prefix: format!("xdplb-{}-{n}-", std::process::id()),
            created: Vec::new(),
            n_backends,
            _peer_xdp: None,
            _switch_xdp: None,
        };
        // On any error below, dropping `t` removes what exists so far.
        let (cli, lb, sw) = (t.client_ns(), t.lb_ns(), t.switch_ns());
        for ns in [&cli, &lb, &sw] {
            t.add_ns(ns)?;
        }
        veth(&cli, CLIENT_IF, &lb, LB_CLIENT_IF)?;
        veth(&lb, LB_BACKEND_IF, &sw, "lb")?;
        addr(&cli, CLIENT_IF, CLIENT_ADDR)?;
        addr(&lb, LB_CLIENT_IF, LB_CLIENT_ADDR)?;
        addr(&lb, LB_BACKEND_IF, LB_BACKEND_ADDR)?;
        ip(&[
            "-n",
            &cli,
            "route",
            "add",
            VIP_NET,
            "via",
            &LB_CLIENT_ADDR.to_string(),
        ])?;
        addr6(&cli, CLIENT_IF, CLIENT_ADDR6)?;
        addr6(&lb, LB_CLIENT_IF, LB_CLIENT_ADDR6)?;
        addr6(&lb, LB_BACKEND_IF, LB_BACKEND_ADDR6)?;
        let gw6 = LB_CLIENT_ADDR6.to_string();
        ip(&["-n", &cli, "-6", "route", "add", VIP_NET6, "via", &gw6])?;

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
        ])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        ip(&["-n", &sw, "link", "set", "lb", "master", "br0", "up"])?;
        for i in 1..=n_backends {
            let be = t.backend_ns(i);
            let port = format!("be{i}");
            t.add_ns(&be)?;
            veth(&be, BACKEND_IF, &sw, &port)?;
            ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
            addr(&be, BACKEND_IF, backend_addr(i))?;
            let gw = LB_BACKEND_ADDR.to_string();
            ip(&["-n", &be, "route", "add", "default", "via", &gw])?;
            addr6(&be, BACKEND_IF, backend_addr6(i))?;
            let gw6 = LB_BACKEND_ADDR6.to_string();
            ip(&["-n", &be, "-6", "route", "add", "default", "via", &gw6])?;
        }

        // bpf_fib_lookup answers FWD_DISABLED unless forwarding is on.
        netns::run_in(&lb, || {
            for key in [
                "ipv4/ip_forward",
                "ipv4/conf/all/forwarding",
                "ipv4/conf/lbc/forwarding",
                "ipv4/conf/lbb/forwarding",
                "ipv6/conf/all/forwarding",
            ] {
                let path = format!("/proc/sys/net/{key}");
                std::fs::write(&path, "1").with_context(|| format!("write 1 to {path}"))?;
            }
            Ok(())
        })?;
        // Frames XDP-redirected into a veth are only delivered if the peer
        // runs XDP or (5.13 and later) has GRO on: both, for every kernel of
        // the matrix (5.10 needs the program).
        let ethtool = |ns: &str, args: &[&str]| {
            run(netns::command(ns, &ethtool.to_string_lossy()).args(args))
        };
        for (ns, dev) in [(&cli, CLIENT_IF), (&sw, "lb")] {
            ethtool(ns, &["-K", dev, "gro", "on"])?;
        }
        t._peer_xdp = Some(crate::veth::pass_xdp(&cli, &[CLIENT_IF.to_string()])?);
        t._switch_xdp = Some(crate::veth::pass_xdp(&sw, &["lb".to_string()])?);
        // Senders must put full checksums on the wire, as a real NIC's
        // receiver sees them: with TX offload a veth frame carries a partial
        // checksum, which XDP cannot see and a redirect does not complete.
        ethtool(&cli, &["-K", CLIENT_IF, "tx", "off"])?;
        for i in 1..=n_backends {
            ethtool(&t.backend_ns(i), &["-K", BACKEND_IF, "tx", "off"])?;
        }
        Ok(t)
    }

    /// Deletes the LB's backend-side interface (`lbb`; its peer on the
    /// switch goes with it), as an operator or a tool removing a device
    /// does (fault tests; [`Self::create_lb_backend_if`] brings it back).
    pub fn delete_lb_backend_if(&self) -> Result<()> {
        ip(&["-n", &self.lb_ns(), "link", "del", LB_BACKEND_IF])?;
        Ok(())
    }

    /// Creates `lbb` again as [`Self::create`] did: a new device (new index,
    /// new MAC) with the same name and addresses, its peer on the bridge.
    pub fn create_lb_backend_if(&self) -> Result<()> {
        let (lb, sw) = (self.lb_ns(), self.switch_ns());
        veth(&lb, LB_BACKEND_IF, &sw, "lb")?;
        addr(&lb, LB_BACKEND_IF, LB_BACKEND_ADDR)?;
        addr6(&lb, LB_BACKEND_IF, LB_BACKEND_ADDR6)?;
        ip(&["-n", &sw, "link", "set", "lb", "master", "br0", "up"])?;
        let ethtool = find_program("ethtool")?;
        run(netns::command(&sw, &ethtool.to_string_lossy()).args(["-K", "lb", "gro", "on"]))?;
        Ok(())
    }

    fn add_ns(&mut self, ns: &str) -> Result<()> {
        self.created.push(Netns::create(ns)?);
        Ok(())
    }

    /// Starts the daemon `bin` in the LB namespace with `config_yaml`, whose
    /// admin API must listen on [`ADMIN`] (see [`crate::fixtures::daemon_config`]).
    pub fn start_daemon(&self, bin: &Path, config_yaml: &str) -> Result<Daemon> {
        Daemon::start(bin, &self.lb_ns(), config_yaml, ADMIN.parse()?)
    }

    /// [`Self::start_daemon`], once `vip` answers TCP from the client
    /// namespace; panics (with the daemon's log) if it does not within 20 s.
    pub fn start_daemon_serving(&self, bin: &Path, config_yaml: &str, vip: SocketAddr) -> Daemon {
        let daemon = self.start_daemon(bin, config_yaml).expect("daemon starts");
        assert!(
            crate::wait_answering(&self.client_ns(), vip, Duration::from_secs(20)),
            "no answer through {vip}:\n{}",
            daemon.log()
        );
        daemon
    }

    /// A daemon config for this topology (see [`fixtures::daemon_config`]):
    /// the LB's two interfaces and this run's `pin_dir`.
    pub fn daemon_config(&self, settings: &str, services: &[String]) -> String {
        let interfaces = [LB_CLIENT_IF, LB_BACKEND_IF];
        fixtures::daemon_config(&interfaces, &self.pin_dir(), settings, services)
    }

    /// This run's `pin_dir` under /sys/fs/bpf (removed when its Daemon drops).
    pub fn pin_dir(&self) -> String {
        format!("/sys/fs/bpf/{}", self.prefix.trim_end_matches('-'))
    }

    /// Common prefix of every namespace name of this run (`xdplb-PID-N-`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    pub fn client_ns(&self) -> String {
        format!("{}cli", self.prefix)
    }
    pub fn lb_ns(&self) -> String {
        format!("{}lb", self.prefix)
    }
    /// `f` with a client of the daemon's admin API (on [`ADMIN`], no
    /// token), called from the LB namespace.
    pub fn api<T: Send>(&self, f: impl FnOnce(&xdplb::client::Client) -> T + Send) -> T {
        netns::run_in(&self.lb_ns(), || {
            Ok(f(&xdplb::client::Client::new(ADMIN, None)))
        })
        .unwrap()
    }
    /// Holds the bridge `br0` joining `lbb` and the backends.
    pub fn switch_ns(&self) -> String {
        format!("{}sw", self.prefix)
    }
    /// Namespace of backend `i` (1-based).
    pub fn backend_ns(&self, i: usize) -> String {
        assert!((1..=self.n_backends).contains(&i), "no backend {i}");
        format!("{}be{i}", self.prefix)
    }
    pub fn n_backends(&self) -> usize {
        self.n_backends
    }
    /// Every namespace of this run.
    pub fn namespaces(&self) -> Vec<&str> {
        self.created.iter().map(Netns::name).collect()
    }
    pub fn client_addr(&self) -> Ipv4Addr {
        CLIENT_ADDR
    }
    pub fn lb_client_addr(&self) -> Ipv4Addr {
        LB_CLIENT_ADDR
    }
    pub fn lb_backend_addr(&self) -> Ipv4Addr {
        LB_BACKEND_ADDR
    }
    pub fn backend_addr(&self, i: usize) -> Ipv4Addr {
        assert!((1..=self.n_backends).contains(&i), "no backend {i}");
        backend_addr(i)
    }
    pub fn backend_addrs(&self) -> Vec<Ipv4Addr> {
        (1..=self.n_backends).map(backend_addr).collect()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self._peer_xdp.take();
        while self.created.pop().is_some() {}
    }
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

fn addr(ns: &str, dev: &str, a: Ipv4Addr) -> Result<()> {
    ip(&["-n", ns, "addr", "add", &format!("{a}/24"), "dev", dev])?;
    Ok(())
}

/// `nodad`: usable at once, without a second of duplicate detection.
fn addr6(ns: &str, dev: &str, a: Ipv6Addr) -> Result<()> {
    let a = format!("{a}/64");
    ip(&["-n", ns, "-6", "addr", "add", &a, "dev", dev, "nodad"])?;
    Ok(())
}
