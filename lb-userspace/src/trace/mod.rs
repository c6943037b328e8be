//! `xdplb trace`: runs captured or crafted frames through the real XDP
//! program, offline, and says what it did with each.
//!
//! The program is loaded with the config's map sizes into maps of its own
//! (nothing pinned, nothing attached: a running daemon is not touched),
//! filled by the daemon's own code (`plan`, `Dataplane::apply`), and every
//! frame goes through `BPF_PROG_TEST_RUN` in order, so the program's state
//! carries from one frame to the next exactly as on a NIC: a SYN creates the
//! flow later packets use, a backend's reply finds its NAT entry.
//!
//! What the program decided is read from the program itself: the verdict,
//! the output frame, and its per-CPU counters, read after every frame (which
//! service and backend counted the packet, whether it made a new flow, which
//! drop reason was counted), plus the next hops it asked the daemon to
//! resolve. Only the explanation of a PASS (not for a VIP, a fragment...) is
//! worked out here, from the frame and the config.
//!
//! Forwarding: `bpf_fib_lookup` needs the routes and neighbours of the real
//! balancer host. By default trace loads its program with
//! `lb_common::FLAG_SKIP_FIB` in its own `CONFIG` map: the program then
//! skips the lookup and answers XDP_TX with the MACs untouched, and trace
//! reports the lookup it would have made. The daemon never sets that flag
//! (its plans come from `plan::plan`, which leaves `flags` at 0; a unit test
//! holds it to that). `--fib` leaves the flag off: the lookup is then the
//! real one, in the network namespace trace runs in.

mod capture;
mod summary;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    io::{self, Write},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use aya::{
    maps::{MapData, RingBuf},
    programs::{TestRun, TestRunOptions},
};
use lb_common::{
    FLAG_SKIP_FIB, MODE_DSR, MODE_NAT, MODE_TUNNEL, NeighEvent, STAT_FIB_FAIL, STAT_NEIGH_MISS,
    STAT_NO_BACKEND, STAT_SNAT_EXHAUSTED,
};
use serde::Serialize;

pub use capture::{Capture, CaptureError, Frame};
pub use summary::Summary;

use crate::{
    config::{Config, ConfigError},
    dataplane::{Counters, Dataplane, DataplaneError},
    plan::{self, Plan, words_addr},
};

/// How the forwarding step is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FibMode {
    /// `FLAG_SKIP_FIB`: no lookup, XDP_TX with the MACs untouched; the
    /// lookup the program would make is reported.
    #[default]
    Skip,
    /// The real `bpf_fib_lookup`, in the namespace trace runs in.
    Kernel,
}

/// Where the frames come from.
#[derive(Debug, Clone)]
pub enum Input {
    /// A pcap or pcapng file of Ethernet frames.
    Pcap(PathBuf),
    /// Frames written as hex, in order.
    Hex(Vec<String>),
}

/// What `xdplb trace` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    pub input: Input,
    /// Where to write the output frames (pcap).
    pub out: Option<PathBuf>,
    /// JSON lines instead of text.
    pub json: bool,
    pub fib: FibMode,
    /// The interface frames arrive on (XDP's ingress ifindex); `lo` when
    /// not given.
    pub iface: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("--iface {name}: no such interface in this network namespace")]
    NoIface { name: String },
    #[error("planning the maps: {0}")]
    Plan(String),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("BPF_PROG_TEST_RUN: {0}")]
    TestRun(String),
    #[error("{path}: {err}")]
    Output {
        path: PathBuf,
        #[source]
        err: io::Error,
    },
    #[error("writing the report: {0}")]
    Report(#[source] io::Error),
}

impl TraceError {
    /// 2 for what the user gave (config, capture, hex, interface), 1 for
    /// failures at run time (loading the program, writing files).
    pub fn exit_code(&self) -> u8 {
        match self {
            TraceError::Config(_)
            | TraceError::Capture(_)
            | TraceError::NoIface { .. }
            | TraceError::Plan(_) => 2,
            _ => 1,
        }
    }
}

/// The plan trace loads: the daemon's plan of `cfg`, plus `FLAG_SKIP_FIB`
/// in `FibMode::Skip`.
pub fn trace_plan(cfg: &Config, fib: FibMode) -> Result<Plan, String> {
    let mut plan = plan::from_config(cfg)?;
    if fib == FibMode::Skip {
        plan.globals.flags |= FLAG_SKIP_FIB;
    }
    Ok(plan)
}

/// The FIB lookup the program made, or would have made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FibLookup {
    /// Destination looked up: the backend (forward) or the client (reply).
    pub dst: IpAddr,
    /// Ingress interface of the lookup.
    pub ifindex: u32,
    pub iface: String,
}

/// The neighbour the program asked the daemon to resolve (`no_neigh`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NextHop {
    pub addr: IpAddr,
    pub iface: String,
}

/// What the program did with one frame: one text line or JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    /// Position in the input, from 1 (Wireshark's frame number).
    pub index: usize,
    /// `PASS`, `DROP`, `TX`, `REDIRECT`, `ABORTED`, or `ERROR` when the
    /// kernel refused to run the frame (see `error`).
    pub verdict: String,
    /// Service that counted the packet.
    pub service: Option<String>,
    /// Its backend, `ADDR:PORT`.
    pub backend: Option<String>,
    /// The service's mode: `nat`, `dsr` or `tunnel`.
    pub mode: Option<&'static str>,
    /// The packet created a flow (a backend was selected for it).
    pub new_flow: bool,
    /// A backend's reply, translated back toward the client.
    pub reply: bool,
    /// Why the program passed the frame to the kernel: `not_ip`,
    /// `stacked_vlan`, `malformed`, `fragment`, `not_tcp_udp`,
    /// `no_nat_entry`, `not_a_vip` (or `passed`: none of these).
    pub pass_reason: Option<&'static str>,
    /// The drop counter the packet bumped: `no_backend`, `snat_exhausted`,
    /// `neigh_miss`, `fib_fail` (or `unknown`).
    pub drop_reason: Option<&'static str>,
    /// The forwarding step: `skipped` (FLAG_SKIP_FIB), `ok`, `no_neigh`,
    /// `failed`; null when the packet did not get there.
    pub fib: Option<&'static str>,
    pub fib_lookup: Option<FibLookup>,
    /// Interface the frame leaves by (`fib: ok`).
    pub egress: Option<String>,
    pub next_hop: Option<NextHop>,
    /// A remark for humans (a capture cut by its snap length, a FIB hint).
    pub note: Option<String>,
    /// Why the kernel refused the frame (verdict `ERROR`).
    pub error: Option<String>,
    /// The frame as it came.
    #[serde(rename = "in")]
    pub input: Summary,
    /// The frame as the program left it (its rewrite, the input for PASS);
    /// null for `ERROR`.
    pub out: Option<Summary>,
    /// Text form of `pass_reason`, with details.
    #[serde(skip)]
    pass_text: Option<String>,
}

const VERDICTS: [&str; 5] = ["ABORTED", "DROP", "PASS", "TX", "REDIRECT"];
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

/// Room for what the program may add to a frame (encapsulation).
const OUT_HEADROOM: usize = 1024;

impl Record {
    /// The text line: index, verdict, decision, output summary, FIB step.
    pub fn text(&self) -> String {
        let decision = self.decision();
        let shown = self.out.as_ref().unwrap_or(&self.input);
        let mut line = format!(
            "#{:<3} {:<9} {:<36} {}",
            self.index, self.verdict, decision, shown.text
        );
        if let Some(fib) = self.fib_text() {
            line.push_str("  fib: ");
            line.push_str(&fib);
        }
        if let Some(note) = &self.note {
            line.push_str("  note: ");
            line.push_str(note);
        }
        line.trim_end().to_string()
    }

    fn decision(&self) -> String {
        if let Some(e) = &self.error {
            return format!("(not run: {e})");
        }
        if let Some(p) = &self.pass_text {
            return format!("({p})");
        }
        let Some(service) = &self.service else {
            return match self.drop_reason {
                Some(r) => format!("({})", drop_text(r)),
                None => String::new(),
            };
        };
        let mut d = match (&self.backend, self.reply) {
            (Some(b), true) => format!("{service} <- {b}"),
            (Some(b), false) => format!("{service} -> {b}"),
            (None, _) => service.clone(),
        };
        let mut tags = Vec::new();
        if self.reply {
            tags.push("reply".to_string());
        }
        if self.new_flow {
            tags.push("new flow".into());
        }
        if let Some(m) = self.mode.filter(|m| *m != "nat") {
            tags.push(m.into());
        }
        if let Some(r) = self
            .drop_reason
            .filter(|r| *r != "neigh_miss" && *r != "fib_fail")
        {
            tags.push(drop_text(r).into());
        }
        if !tags.is_empty() {
            d.push_str(&format!(" ({})", tags.join(", ")));
        }
        d
    }

    fn fib_text(&self) -> Option<String> {
        let lookup = self.fib_lookup.as_ref()?;
        Some(match self.fib? {
            "skipped" => format!(
                "skipped (would look up {} from {})",
                lookup.dst, lookup.iface
            ),
            "ok" => {
                let out = self.out.as_ref()?;
                format!(
                    "{} via {}, {} -> {}",
                    lookup.dst,
                    self.egress.as_deref().unwrap_or("?"),
                    out.src_mac,
                    out.dst_mac
                )
            }
            "no_neigh" => match &self.next_hop {
                Some(h) => format!(
                    "no neighbour {} on {} (neigh_miss: dropped until the daemon resolves it)",
                    h.addr, h.iface
                ),
                None => format!("no neighbour for {} (neigh_miss)", lookup.dst),
            },
            _ => format!(
                "no usable route to {} from {} (fib_fail)",
                lookup.dst, lookup.iface
            ),
        })
    }
}

fn drop_text(reason: &str) -> &'static str {
    match reason {
        "no_backend" => "no usable backend",
        "snat_exhausted" => "no free SNAT port",
        "neigh_miss" => "next hop not resolved",
        "fib_fail" => "no route",
        _ => "dropped, reason not counted",
    }
}

/// The drop counters, in the order they are reported.
const DROP_SLOTS: [(u32, &str); 4] = [
    (STAT_NO_BACKEND, "no_backend"),
    (STAT_SNAT_EXHAUSTED, "snat_exhausted"),
    (STAT_NEIGH_MISS, "neigh_miss"),
    (STAT_FIB_FAIL, "fib_fail"),
];

/// A backend, as the plan names it.
struct BackendInfo {
    service: usize,
    addr: SocketAddr,
}

/// The loaded program and what is needed to explain its decisions.
pub struct Tracer {
    dp: Dataplane,
    plan: Plan,
    fib: FibMode,
    service_ids: Vec<u32>,
    backend_ids: Vec<u32>,
    backends: HashMap<u32, BackendInfo>,
    /// SNAT addresses of the config (a PASS to one has no NAT entry).
    snat: Vec<IpAddr>,
    last: Counters,
    neigh: RingBuf<MapData>,
    /// `--iface`: its index, passed to the program as the ingress.
    ingress: Option<u32>,
    ingress_name: String,
    ingress_index: u32,
    /// Interface names by MAC (where a redirected frame leaves).
    macs: HashMap<String, String>,
}

impl Tracer {
    /// Loads the program with `cfg`'s map sizes into maps of its own and
    /// fills them with `cfg`'s plan.
    pub fn new(cfg: &Config, fib: FibMode, iface: Option<&str>) -> Result<Tracer, TraceError> {
        let ingress = iface
            .map(|name| {
                nix::net::if_::if_nametoindex(name).map_err(|_| TraceError::NoIface {
                    name: name.to_string(),
                })
            })
            .transpose()?;
        let plan = trace_plan(cfg, fib).map_err(TraceError::Plan)?;
        // Service and backend tables just big enough for the plan's ids:
        // the rings array is sized by max_services (hundreds of MB at the
        // defaults), and entries past the last id are never read. Ring and
        // flow table sizes stay as configured: they shape the decisions.
        let ids = |it: &mut dyn Iterator<Item = u32>| it.max().map_or(1, |m| m + 1);
        let limits = crate::config::Limits {
            max_services: ids(&mut plan.services.iter().map(|s| s.id)),
            max_backends: ids(&mut plan
                .services
                .iter()
                .flat_map(|s| s.backends.iter().map(|b| b.id))),
            ..cfg.limits.clone()
        };
        let mut dp = Dataplane::load(&limits, None)?;
        dp.apply(&plan)?;
        let neigh = dp.take_neigh_events()?;
        let service_ids: Vec<u32> = plan.services.iter().map(|s| s.id).collect();
        let mut backends = HashMap::new();
        for (i, s) in plan.services.iter().enumerate() {
            for b in &s.backends {
                backends.insert(
                    b.id,
                    BackendInfo {
                        service: i,
                        addr: b.addr,
                    },
                );
            }
        }
        let mut backend_ids: Vec<u32> = backends.keys().copied().collect();
        backend_ids.sort_unstable();
        let last = dp.counters(&service_ids, &backend_ids)?;
        let snat = (cfg.snat.ipv4.map(IpAddr::V4).into_iter())
            .chain(cfg.snat.ipv6.map(IpAddr::V6))
            .collect();
        let ingress_index = ingress.unwrap_or(1);
        Ok(Tracer {
            dp,
            plan,
            fib,
            service_ids,
            backend_ids,
            backends,
            snat,
            last,
            neigh,
            ingress,
            ingress_name: iface_name(ingress_index),
            ingress_index,
            macs: if fib == FibMode::Kernel {
                link_macs()
            } else {
                HashMap::new()
            },
        })
    }

    /// The plan loaded (with `FLAG_SKIP_FIB` in `FibMode::Skip`).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Runs one frame; returns what happened and the output frame.
    pub fn trace(&mut self, index: usize, frame: &Frame) -> Result<(Record, Vec<u8>), TraceError> {
        let input = Summary::of_frame(&frame.data);
        let mut record = Record {
            index,
            verdict: String::new(),
            service: None,
            backend: None,
            mode: None,
            new_flow: false,
            reply: false,
            pass_reason: None,
            drop_reason: None,
            fib: None,
            fib_lookup: None,
            egress: None,
            next_hop: None,
            note: (frame.orig_len as usize > frame.data.len()).then(|| {
                format!(
                    "captured {} of {} bytes: the program ran on what was captured",
                    frame.data.len(),
                    frame.orig_len
                )
            }),
            error: None,
            input,
            out: None,
            pass_text: None,
        };
        // The kernel wants a whole Ethernet header.
        if frame.data.len() < 14 {
            record.verdict = "ERROR".into();
            record.error = Some(format!(
                "a {}-byte frame is shorter than an Ethernet header",
                frame.data.len()
            ));
            return Ok((record, Vec::new()));
        }
        let mut out = vec![0u8; frame.data.len() + OUT_HEADROOM];
        let ctx = self
            .ingress
            .map(|ifindex| xdp_md(ifindex, frame.data.len()));
        let result = self.dp.program().test_run(TestRunOptions {
            data_in: Some(&frame.data),
            data_out: Some(&mut out),
            ctx_in: ctx.as_ref().map(|c| &c[..]),
            ..Default::default()
        });
        let run = match result {
            Ok(r) => r,
            Err(e) => {
                record.verdict = "ERROR".into();
                record.error = Some(format!("the kernel refused to run it: {}", chain(&e)));
                return Ok((record, Vec::new()));
            }
        };
        out.truncate(run.data_size_out as usize);
        let verdict = run.return_value;
        record.verdict = VERDICTS
            .get(verdict as usize)
            .map_or_else(|| format!("UNKNOWN({verdict})"), |v| v.to_string());
        let output = Summary::of_frame(&out);

        let now = self.dp.counters(&self.service_ids, &self.backend_ids)?;
        let before = std::mem::replace(&mut self.last, now);
        let now = &self.last;
        let grew = |slot: u32| {
            now.global.get(slot as usize).copied().unwrap_or_default()
                > before
                    .global
                    .get(slot as usize)
                    .copied()
                    .unwrap_or_default()
        };
        let service = self.plan.services.iter().position(|s| {
            let (a, b) = (now.services.get(&s.id), before.services.get(&s.id));
            a.map(|c| c.packets) > b.map(|c| c.packets)
        });
        let backend = self.backend_ids.iter().copied().find(|id| {
            let (a, b) = (now.backends.get(id), before.backends.get(id));
            a.map(|c| c.packets) > b.map(|c| c.packets)
        });
        if let Some(id) = backend {
            let (a, b) = (now.backends.get(&id), before.backends.get(&id));
            record.new_flow = a.map(|c| c.flows) > b.map(|c| c.flows);
        }
        let mut events = Vec::new();
        while let Some(item) = self.neigh.next() {
            if item.len() >= std::mem::size_of::<NeighEvent>() {
                // SAFETY: the program writes whole `NeighEvent`s (repr(C),
                // integers only); the length was checked.
                events
                    .push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<NeighEvent>()) });
            }
        }

        let backend_info = backend.and_then(|id| self.backends.get(&id));
        let service = service.or(backend_info.map(|b| b.service));
        if let Some(i) = service {
            let s = &self.plan.services[i];
            record.service = Some(s.name.clone());
            record.mode = Some(match s.mode {
                MODE_NAT => "nat",
                MODE_DSR => "dsr",
                MODE_TUNNEL => "tunnel",
                _ => "unknown",
            });
            let vip = words_addr(s.key.addr, s.key.family);
            record.reply = record.input.dst.is_some_and(|d| d != vip);
        }
        record.backend = backend_info.map(|b| b.addr.to_string());

        if verdict == XDP_DROP {
            record.drop_reason = Some(
                DROP_SLOTS
                    .iter()
                    .find(|(slot, _)| grew(*slot))
                    .map_or("unknown", |(_, name)| *name),
            );
        }
        if verdict == XDP_PASS {
            let (code, text) = self.pass_reason(&record.input);
            record.pass_reason = Some(code);
            record.pass_text = Some(text);
        }

        // The forwarding step, if the packet got there.
        record.fib = match (self.fib, verdict) {
            (FibMode::Skip, XDP_TX) => Some("skipped"),
            (FibMode::Kernel, XDP_TX | XDP_REDIRECT) => Some("ok"),
            (FibMode::Kernel, XDP_DROP) if grew(STAT_NEIGH_MISS) => Some("no_neigh"),
            (FibMode::Kernel, XDP_DROP) if grew(STAT_FIB_FAIL) => Some("failed"),
            _ => None,
        };
        if record.fib.is_some() {
            // The program looks up the backend (whatever the mode) going
            // forward, the client on the way back.
            let dst = match (record.reply, backend_info) {
                (false, Some(b)) => Some(b.addr.ip()),
                _ => output.dst,
            };
            record.fib_lookup = dst.map(|dst| FibLookup {
                dst,
                ifindex: self.ingress_index,
                iface: self.ingress_name.clone(),
            });
        }
        match record.fib {
            Some("ok") if verdict == XDP_TX => record.egress = Some(self.ingress_name.clone()),
            Some("ok") => record.egress = self.macs.get(&output.src_mac).cloned(),
            Some("no_neigh") => {
                record.next_hop = events.first().map(|e| NextHop {
                    addr: words_addr(e.addr, e.family),
                    iface: iface_name(e.ifindex),
                })
            }
            Some("failed") => {
                let family = match record.fib_lookup.as_ref().map(|l| l.dst) {
                    Some(IpAddr::V6(_)) => "ipv6",
                    _ => "ipv4",
                };
                let path = format!(
                    "/proc/sys/net/{family}/conf/{}/forwarding",
                    self.ingress_name
                );
                if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "0") {
                    record.note = Some(format!(
                        "forwarding is off on {}: bpf_fib_lookup needs net.{family}.conf.{}.forwarding=1",
                        self.ingress_name, self.ingress_name
                    ));
                }
            }
            _ => {}
        }
        record.out = Some(output);
        Ok((record, out))
    }

    /// Why a frame was passed, worked out from the frame and the config.
    fn pass_reason(&self, s: &Summary) -> (&'static str, String) {
        if s.malformed.is_some() {
            // The summary says what is wrong.
            return ("malformed", "malformed".into());
        }
        if s.stacked_vlans() {
            return ("stacked_vlan", "more than one VLAN tag".into());
        }
        if s.ethertype != "ipv4" && s.ethertype != "ipv6" {
            return ("not_ip", "not IP".into());
        }
        if s.fragment {
            return ("fragment", "IP fragment".into());
        }
        let (Some(dst), Some(dport), Some(proto)) = (s.dst, s.dport, s.proto.as_deref()) else {
            return ("not_tcp_udp", "not TCP or UDP".into());
        };
        if proto != "tcp" && proto != "udp" {
            return ("not_tcp_udp", "not TCP or UDP".into());
        }
        if self.snat.contains(&dst) {
            return (
                "no_nat_entry",
                "to the SNAT address, no NAT entry: host traffic".into(),
            );
        }
        let number = if proto == "tcp" {
            lb_common::PROTO_TCP
        } else {
            lb_common::PROTO_UDP
        };
        let vip = self
            .plan
            .services
            .iter()
            .any(|svc| words_addr(svc.key.addr, svc.key.family) == dst);
        let exact = self.plan.services.iter().any(|svc| {
            words_addr(svc.key.addr, svc.key.family) == dst
                && svc.key.proto == number
                && (svc.key.port == 0 || u16::from_be(svc.key.port) == dport)
        });
        if exact {
            ("passed", "passed by the program".into())
        } else if vip {
            ("not_a_vip", format!("no service on {dst} {proto}/{dport}"))
        } else {
            ("not_a_vip", "not for a VIP".into())
        }
    }
}

/// `struct xdp_md` for a test run arriving on `ifindex`, queue 0.
fn xdp_md(ifindex: u32, len: usize) -> [u8; 24] {
    let fields = [0u32, len as u32, 0, ifindex, 0, 0];
    let mut md = [0u8; 24];
    for (i, f) in fields.iter().enumerate() {
        md[i * 4..i * 4 + 4].copy_from_slice(&f.to_ne_bytes());
    }
    md
}

fn iface_name(ifindex: u32) -> String {
    nix::net::if_::if_indextoname(ifindex)
        .ok()
        .and_then(|n| n.into_string().ok())
        .unwrap_or_else(|| format!("ifindex {ifindex}"))
}

/// Interface names by MAC address, in this namespace.
fn link_macs() -> HashMap<String, String> {
    let mut macs = HashMap::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let mac = a
                .address
                .as_ref()
                .and_then(|s| s.as_link_addr())
                .and_then(|l| l.addr());
            if let Some(mac) = mac.filter(|m| m.iter().any(|b| *b != 0)) {
                macs.entry(summary::mac(mac)).or_insert(a.interface_name);
            }
        }
    }
    macs
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Counts by verdict, for the closing line.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    pub packets: usize,
    pub by_verdict: Vec<(String, usize)>,
}

impl Totals {
    fn add(&mut self, verdict: &str) {
        self.packets += 1;
        match self.by_verdict.iter_mut().find(|(v, _)| v == verdict) {
            Some((_, n)) => *n += 1,
            None => self.by_verdict.push((verdict.to_string(), 1)),
        }
    }
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .by_verdict
            .iter()
            .map(|(v, n)| format!("{n} {v}"))
            .collect();
        write!(
            f,
            "{} packet{}: {}",
            self.packets,
            if self.packets == 1 { "" } else { "s" },
            parts.join(", ")
        )
    }
}

/// Reads the frames of `input`.
pub fn read_input(input: &Input) -> Result<Capture, CaptureError> {
    match input {
        Input::Pcap(path) => capture::read(path),
        Input::Hex(values) => Ok(Capture {
            frames: values
                .iter()
                .map(|v| capture::parse_hex(v))
                .collect::<Result<_, _>>()?,
            nanos: false,
        }),
    }
}

/// `xdplb trace`: reads the config and the frames, runs them, writes one
/// line per frame to `report` (and the output frames to `opts.out`).
pub fn run(opts: &Options, report: &mut dyn Write) -> Result<Totals, TraceError> {
    let cfg = Config::load(&opts.config)?;
    let capture = read_input(&opts.input)?;
    let mut writer = opts
        .out
        .as_deref()
        .map(|path| {
            capture::Writer::create(path, capture.nanos).map_err(|err| output_error(path, err))
        })
        .transpose()?;
    let mut tracer = Tracer::new(&cfg, opts.fib, opts.iface.as_deref())?;
    if !opts.json {
        let fib = match opts.fib {
            FibMode::Skip => "FIB lookup skipped: MACs untouched, --fib for the real one".into(),
            FibMode::Kernel => format!(
                "FIB lookups in this network namespace, from {}",
                tracer.ingress_name
            ),
        };
        let n = capture.frames.len();
        writeln!(
            report,
            "-- {n} frame{} through xdplb ({fib})",
            if n == 1 { "" } else { "s" }
        )
        .map_err(TraceError::Report)?;
    }
    let mut totals = Totals::default();
    for (i, frame) in capture.frames.iter().enumerate() {
        let (record, out) = tracer.trace(i + 1, frame)?;
        totals.add(&record.verdict);
        let line = if opts.json {
            serde_json::to_string(&record).expect("a record serializes")
        } else {
            record.text()
        };
        writeln!(report, "{line}").map_err(TraceError::Report)?;
        if let Some(w) = writer.as_mut() {
            // What leaves: the rewrite (TX, REDIRECT) or, for the kernel,
            // the frame as it came (PASS). Dropped frames leave nothing.
            let data = match record.verdict.as_str() {
                "TX" | "REDIRECT" => Some(out),
                "PASS" => Some(frame.data.clone()),
                _ => None,
            };
            if let Some(data) = data {
                let cut = (frame.orig_len as usize).saturating_sub(frame.data.len());
                let written = Frame {
                    time: frame.time,
                    orig_len: (data.len() + cut) as u32,
                    data,
                };
                w.write(&written).map_err(|err| {
                    output_error(opts.out.as_deref().unwrap_or(Path::new("")), err)
                })?;
            }
        }
    }
    if let Some(w) = writer {
        w.finish()
            .map_err(|err| output_error(opts.out.as_deref().unwrap_or(Path::new("")), err))?;
    }
    if !opts.json {
        writeln!(report, "-- {totals}").map_err(TraceError::Report)?;
    }
    report.flush().map_err(TraceError::Report)?;
    Ok(totals)
}

fn output_error(path: &Path, err: io::Error) -> TraceError {
    TraceError::Output {
        path: path.into(),
        err,
    }
}
