//! Why the program did what it did with a frame. Its own state says most of
//! it: the verdict, the counters that grew (which service and backend, a new
//! flow, which drop reason) and the neighbours it asked the daemon to
//! resolve. Only a PASS is explained from the frame and the config.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
};

use lb_common::{
    MODE_DSR, MODE_NAT, MODE_TUNNEL, NeighEvent, STAT_FIB_FAIL, STAT_NEIGH_MISS, STAT_NO_BACKEND,
    STAT_PARTIAL_CSUM, STAT_REJECT, STAT_REJECT_LIMITED, STAT_SNAT_EXHAUSTED, words_addr,
};

use super::{FibLookup, FibMode, NextHop, Record, Summary, summary};
use crate::{config::Config, dataplane::Counters, plan::Plan};

/// The drop counters, in the order they are reported: slot, name in the
/// record, text.
const DROP_REASONS: [(u32, &str, &str); 5] = [
    (
        STAT_REJECT_LIMITED,
        "reject_limited",
        "no usable backend, not answered: over reject_limit",
    ),
    (STAT_NO_BACKEND, "no_backend", "no usable backend"),
    (STAT_SNAT_EXHAUSTED, "snat_exhausted", "no free SNAT port"),
    (STAT_NEIGH_MISS, "neigh_miss", "next hop not resolved"),
    (STAT_FIB_FAIL, "fib_fail", "no route"),
];

/// The text of a `drop_reason`.
pub(super) fn drop_text(reason: &str) -> &'static str {
    DROP_REASONS
        .iter()
        .find(|(_, name, _)| *name == reason)
        .map_or("dropped, reason not counted", |(_, _, text)| *text)
}

/// What the program left behind after one frame.
pub(super) struct Observed<'a> {
    /// Its return value.
    pub verdict: u32,
    /// The frame as it left it.
    pub output: Summary,
    /// Its counters before and after the frame.
    pub before: &'a Counters,
    pub now: &'a Counters,
    /// The neighbours it asked the daemon to resolve.
    pub events: Vec<NeighEvent>,
}

impl Observed<'_> {
    /// The verdict's name in `lb_common::XDP_ACTIONS` (`drop`, `tx`...).
    fn action(&self) -> Option<&'static str> {
        lb_common::XDP_ACTIONS.get(self.verdict as usize).copied()
    }

    /// Whether the `GLOBAL_STATS` slot counted the frame.
    fn grew(&self, slot: u32) -> bool {
        let at = |c: &Counters| c.global.get(slot as usize).copied().unwrap_or_default();
        at(self.now) > at(self.before)
    }
}

/// A backend, as the plan names it.
struct BackendInfo {
    service: usize,
    addr: SocketAddr,
}

/// What is needed to explain the program's decisions: the plan it was
/// loaded with, the config's SNAT addresses, the interfaces of this host.
pub(super) struct Attribution {
    plan: Plan,
    fib: FibMode,
    service_ids: Vec<u32>,
    /// In order: the first whose counters grew is the frame's backend.
    backend_ids: Vec<u32>,
    backends: HashMap<u32, BackendInfo>,
    /// SNAT addresses of the config (a PASS to one has no NAT entry).
    snat: Vec<IpAddr>,
    /// The interface frames arrive on.
    ingress_name: String,
    ingress_index: u32,
    /// Interface names by MAC (where a redirected frame leaves).
    macs: HashMap<String, String>,
}

impl Attribution {
    pub(super) fn new(cfg: &Config, plan: Plan, fib: FibMode, ingress_index: u32) -> Attribution {
        let service_ids = plan.services.iter().map(|s| s.id).collect();
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
        let snat = (cfg.snat.ipv4.map(IpAddr::V4).into_iter())
            .chain(cfg.snat.ipv6.map(IpAddr::V6))
            .collect();
        Attribution {
            plan,
            fib,
            service_ids,
            backend_ids,
            backends,
            snat,
            ingress_name: iface_name(ingress_index),
            ingress_index,
            macs: if fib == FibMode::Kernel {
                link_macs()
            } else {
                HashMap::new()
            },
        }
    }

    pub(super) fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The services whose counters are read.
    pub(super) fn service_ids(&self) -> &[u32] {
        &self.service_ids
    }

    /// The backends whose counters are read.
    pub(super) fn backend_ids(&self) -> &[u32] {
        &self.backend_ids
    }

    pub(super) fn ingress_name(&self) -> &str {
        &self.ingress_name
    }

    /// Fills `record` from what the program left behind.
    pub(super) fn attribute(&self, record: &mut Record, seen: Observed) {
        let action = seen.action();
        record.verdict = action.map_or_else(
            || format!("UNKNOWN({})", seen.verdict),
            |a| a.to_uppercase(),
        );
        let backend = self.counted(record, &seen);
        if action == Some("drop") {
            record.drop_reason = Some(
                DROP_REASONS
                    .iter()
                    .find(|(slot, _, _)| seen.grew(*slot))
                    .map_or("unknown", |(_, name, _)| *name),
            );
        }
        if action == Some("pass") {
            let (code, text) = self.pass_reason(&record.input);
            record.pass_reason = Some(code);
            record.pass_text = Some(text);
        }
        if seen.grew(STAT_REJECT) {
            // Answered in place, back out of the ingress: no lookup made.
            record.note = Some(
                "no usable backend: answered from the VIP (TCP RST or ICMP port unreachable; \
                 on_empty: reject)"
                    .into(),
            );
            record.egress = Some(self.ingress_name.clone());
        } else {
            self.forwarding(record, &seen, backend);
        }
        if seen.grew(STAT_PARTIAL_CSUM) {
            record.note = Some(crate::offload::PARTIAL_CSUM_NOTE.into());
        }
        record.out = Some(seen.output);
    }

    /// The service and backend that counted the frame, and whether it made
    /// a flow; returns the backend.
    fn counted(&self, record: &mut Record, seen: &Observed) -> Option<&BackendInfo> {
        let (now, before) = (seen.now, seen.before);
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
        let backend = backend.and_then(|id| self.backends.get(&id));
        if let Some(i) = service.or(backend.map(|b| b.service)) {
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
        record.backend = backend.map(|b| b.addr.to_string());
        backend
    }

    /// The forwarding step, if the packet got there: the lookup, where the
    /// frame leaves, or why it could not.
    fn forwarding(&self, record: &mut Record, seen: &Observed, backend: Option<&BackendInfo>) {
        let action = seen.action();
        record.fib = match (self.fib, action) {
            (FibMode::Skip, Some("tx")) => Some("skipped"),
            (FibMode::Kernel, Some("tx" | "redirect")) => Some("ok"),
            (FibMode::Kernel, Some("drop")) if seen.grew(STAT_NEIGH_MISS) => Some("no_neigh"),
            (FibMode::Kernel, Some("drop")) if seen.grew(STAT_FIB_FAIL) => Some("failed"),
            _ => None,
        };
        if record.fib.is_some() {
            // The program looks up the backend (whatever the mode) going
            // forward, the client on the way back.
            let dst = match (record.reply, backend) {
                (false, Some(b)) => Some(b.addr.ip()),
                _ => seen.output.dst,
            };
            record.fib_lookup = dst.map(|dst| FibLookup {
                dst,
                ifindex: self.ingress_index,
                iface: self.ingress_name.clone(),
            });
        }
        match record.fib {
            Some("ok") if action == Some("tx") => record.egress = Some(self.ingress_name.clone()),
            Some("ok") => record.egress = self.macs.get(&seen.output.src_mac).cloned(),
            Some("no_neigh") => {
                record.next_hop = seen.events.first().map(|e| NextHop {
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
