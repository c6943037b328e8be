//! The packets-per-second test bed: three namespaces, two veth pairs.
//!
//! ```text
//! [gen] G 198.18.0.2 --- C 198.18.0.1 [lb] B 198.18.1.1 --- S [sink]
//!   generator (CPU 0)      program under test on C      XDP_DROP on S
//! ```
//!
//! The backends 198.18.1.11.. are static neighbours behind `S`: every frame
//! sent toward them reaches the sink's XDP_DROP, which counts it. Interface
//! names carry the process id, so the NAPI threads (`napi/NAME-ID`) are ours.
//!
//! Every veth has [`QUEUES`] RX and TX queues. A veth puts a frame sent by
//! XDP (`ndo_xdp_xmit`: the generator's live frames, a redirect) on the
//! peer's RX queue numbered after the sending CPU (`smp_processor_id() %
//! real_num_rx_queues`), so a generator on CPU 0 fills only queue 0 and one
//! on each CPU fills both: the CPU scaling rows.

use std::net::Ipv4Addr;

use anyhow::{Context, Result, bail};
use aya::{Ebpf, programs::Xdp};
use lb_testbed::{
    fib_net::{CLIENT, CLIENT_MAC as GEN_MAC, LBB_MAC, LBC_MAC},
    fixtures::{WEB_VIP, backend, daemon_config, service},
    frames::{Tcp, tcp},
    netns::{self, Netns, mac_text},
};

use super::Variant;
use crate::common;

pub const SINK_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 0xfe];
/// The one service's VIP.
pub const VIP: Ipv4Addr = WEB_VIP;
/// Enough SNAT room for every flow in nat mode: 4 x 31744 ports.
pub const BACKENDS: [Ipv4Addr; 4] = [
    Ipv4Addr::new(198, 18, 1, 11),
    Ipv4Addr::new(198, 18, 1, 12),
    Ipv4Addr::new(198, 18, 1, 13),
    Ipv4Addr::new(198, 18, 1, 14),
];

/// The generator's template: 64 bytes, TCP ACK with 10 bytes of payload
/// (the generator changes only the source port and checksum).
pub fn frame() -> Vec<u8> {
    tcp(CLIENT, 1024, VIP, 80, Tcp::Ack, &[0u8; 10])
}

/// RX and TX queues of every veth (a veth with XDP needs at least as many
/// RX queues as its peer has TX queues).
pub const QUEUES: usize = 2;

/// A NAPI thread of the bed, where it was pinned.
#[derive(Clone, Copy, Debug)]
pub struct NapiThread {
    pub pid: i32,
    pub cpu: usize,
    /// `Some(queue)`: the balancer's interface `C`; `None`: a sink's.
    pub lb_queue: Option<usize>,
}

pub struct PpsNet {
    pub gen_ns: String,
    pub lb_ns: String,
    pub sink_ns: String,
    pub gen_if: String,
    pub lbc: String,
    pub lbb: String,
    pub sink: String,
    _created: Vec<Netns>,
}

/// Frames received and forwarded so far.
pub struct Counts {
    /// Received by `C`, per RX queue.
    pub rx: Vec<u64>,
    pub fwd: u64,
}

impl PpsNet {
    pub fn create() -> Result<PpsNet> {
        let id = std::process::id();
        let ns = |n: &str| format!("xdplb-pps-{id}-{n}");
        let dev = |n: &str| format!("p{}{n}", id % 1_000_000);
        let (gen_ns, lb_ns, sink_ns) = (ns("gen"), ns("lb"), ns("sink"));
        let created = [&gen_ns, &lb_ns, &sink_ns]
            .map(|n| Netns::create(n))
            .into_iter()
            .collect::<Result<_>>()?;
        let net = PpsNet {
            gen_ns,
            lb_ns,
            sink_ns,
            gen_if: dev("g"),
            lbc: dev("c"),
            lbb: dev("b"),
            sink: dev("s"),
            _created: created,
        };
        let (g, c, b, s) = (&net.gen_if, &net.lbc, &net.lbb, &net.sink);
        let (gn, ln, sn) = (&net.gen_ns, &net.lb_ns, &net.sink_ns);
        let q = format!("numtxqueues {QUEUES} numrxqueues {QUEUES}");
        let mut script: Vec<(String, String)> = vec![
            (
                gn.clone(),
                format!("link add {g} {q} type veth peer name {c} netns {ln} {q}"),
            ),
            (
                ln.clone(),
                format!("link add {b} {q} type veth peer name {s} netns {sn} {q}"),
            ),
            (
                gn.clone(),
                format!("link set {g} address {}", mac_text(GEN_MAC)),
            ),
            (
                ln.clone(),
                format!("link set {c} address {}", mac_text(LBC_MAC)),
            ),
            (
                ln.clone(),
                format!("link set {b} address {}", mac_text(LBB_MAC)),
            ),
            (
                sn.clone(),
                format!("link set {s} address {}", mac_text(SINK_MAC)),
            ),
            (gn.clone(), format!("link set {g} up")),
            (ln.clone(), format!("link set {c} up")),
            (ln.clone(), format!("link set {b} up")),
            (sn.clone(), format!("link set {s} up")),
            (gn.clone(), format!("addr add {CLIENT}/24 dev {g}")),
            (ln.clone(), format!("addr add 198.18.0.1/24 dev {c}")),
            (ln.clone(), format!("addr add 198.18.1.1/24 dev {b}")),
            (
                ln.clone(),
                format!(
                    "neigh replace {CLIENT} lladdr {} dev {c} nud permanent",
                    mac_text(GEN_MAC)
                ),
            ),
        ];
        for be in BACKENDS {
            script.push((
                ln.clone(),
                format!(
                    "neigh replace {be} lladdr {} dev {b} nud permanent",
                    mac_text(SINK_MAC)
                ),
            ));
        }
        for (n, line) in &script {
            netns::ip_script(n, [line])?;
        }
        common::sh_in(
            ln,
            &format!(
                "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.forwarding=1 \
                 net.ipv4.conf.{c}.forwarding=1 net.ipv4.conf.{b}.forwarding=1"
            ),
        )?;
        // GRO gives `C` a NAPI instance even without XDP (the nftables run),
        // and the senders put full checksums on the wire.
        common::sh_in(ln, &format!("ethtool -K {c} gro on"))?;
        common::sh_in(gn, &format!("ethtool -K {g} tx off"))?;
        Ok(net)
    }

    /// XDP_DROP on the sink, and on the generator's interface (where
    /// MAC-swap's XDP_TX frames land; a veth delivers XDP frames only to a
    /// peer that runs XDP).
    pub fn attach_sinks(&self, ebpf: &mut Ebpf) -> Result<()> {
        let p: &mut Xdp = ebpf
            .program_mut("drop_all")
            .context("drop_all")?
            .try_into()?;
        for (ns, dev) in [(&self.sink_ns, &self.sink), (&self.gen_ns, &self.gen_if)] {
            netns::run_in(ns, || {
                p.attach(dev, aya::programs::XdpMode::Driver)
                    .with_context(|| format!("attach the sink to {dev}"))?;
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Threaded NAPI on every interface, pinned, all SCHED_FIFO: the NAPI
    /// thread of `C`'s RX queue `q` to `lb_cpus[q]`, the sinks' queue `q`
    /// to `sink_cpus[q]` (each list repeats if shorter). With the sinks on
    /// the generator's CPU they take from it what they need to keep up
    /// (they must never be the bottleneck), and no stray process slows the
    /// balancer. Called after each attach (an XDP attach may create the
    /// NAPI anew); returns the threads as pinned.
    pub fn threaded_napi(&self, lb_cpus: &[usize], sink_cpus: &[usize]) -> Result<Vec<NapiThread>> {
        for (ns, dev) in [
            (&self.lb_ns, &self.lbc),
            (&self.sink_ns, &self.sink),
            (&self.gen_ns, &self.gen_if),
        ] {
            common::sh_in(ns, &format!("echo 1 > /sys/class/net/{dev}/threaded"))?;
        }
        let mut pinned = Vec::new();
        for (dev, cpus, lb) in [
            (&self.lbc, lb_cpus, true),
            (&self.sink, sink_cpus, false),
            (&self.gen_if, sink_cpus, false),
        ] {
            let threads = queue_threads(dev);
            if threads.is_empty() {
                bail!("no NAPI thread for {dev}");
            }
            for (q, pid) in threads.into_iter().enumerate() {
                let cpu = cpus[q % cpus.len()];
                common::pin(Some(pid), cpu)?;
                common::realtime(pid, 50)?;
                pinned.push(NapiThread {
                    pid,
                    cpu,
                    lb_queue: lb.then_some(q),
                });
            }
        }
        Ok(pinned)
    }

    /// Frames received by `C`'s NAPI (whatever the program did with them)
    /// and frames that reached a sink.
    pub fn counters(&self, v: Variant) -> Result<Counts> {
        if std::env::var_os("PPS_DEBUG").is_some() {
            for (ns, dev) in [(&self.gen_ns, &self.gen_if), (&self.lb_ns, &self.lbb)] {
                let s = common::ethtool_stats(ns, dev)?;
                eprintln!("{dev}: {s:?}");
            }
        }
        let rx = rx_packets(&self.lb_ns, &self.lbc)?;
        let fwd = match v {
            Variant::Drop => 0,
            Variant::MacSwap => rx_packets(&self.gen_ns, &self.gen_if)?.iter().sum(),
            _ => rx_packets(&self.sink_ns, &self.sink)?.iter().sum(),
        };
        Ok(Counts { rx, fwd })
    }

    /// The daemon's config: one TCP service, four backends behind the sink.
    pub fn daemon_config(&self, mode: &str) -> String {
        let backends: Vec<String> = BACKENDS.iter().map(|b| backend(*b, 80)).collect();
        daemon_config(
            &[&self.lbc, &self.lbb],
            &format!("/sys/fs/bpf/{}", self.lb_ns),
            "xdp_mode: native\n\
             snat: { ipv4: 198.18.1.1, ports: 1024-32767 }\n\
             limits: { max_services: 4, max_backends: 16, maglev_table_size: 65537, flow_table_size: 1048576 }",
            &[service(
                "web",
                VIP,
                80,
                &["protocol: tcp", &format!("mode: {mode}")],
                &backends,
            )],
        )
    }
}

/// The NAPI threads (`napi/DEV-ID`) of `dev`, in RX queue order: a veth
/// adds its queues' NAPI instances in order, and they take ascending ids.
fn queue_threads(dev: &str) -> Vec<i32> {
    let mut threads: Vec<(u64, i32)> = common::kthreads(&format!("napi/{dev}-"))
        .into_iter()
        .filter_map(|(pid, name)| Some((name.rsplit_once('-')?.1.parse().ok()?, pid)))
        .collect();
    threads.sort_unstable();
    threads.into_iter().map(|(_, pid)| pid).collect()
}

/// Packets the veth's NAPI handled on `dev` (XDP or not), per RX queue: the
/// driver's `rx_queue_N_xdp_packets` counters.
fn rx_packets(ns: &str, dev: &str) -> Result<Vec<u64>> {
    let stats = common::ethtool_stats(ns, dev)?;
    if std::env::var_os("PPS_DEBUG").is_some() {
        eprintln!("{dev}: {stats:?}");
    }
    Ok((0..QUEUES)
        .map(|q| {
            stats
                .get(&format!("rx_queue_{q}_xdp_packets"))
                .copied()
                .unwrap_or(0)
        })
        .collect())
}
