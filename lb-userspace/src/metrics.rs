//! The data plane's Prometheus series (docs/design.md section 5): a
//! `Collector` registered once in the daemon's registry beside the health
//! checks' metrics, so `/metrics` is one `gather` and one text encoder. It
//! reads the per-CPU counters at scrape time (never stale, no cost between
//! scrapes) on its own map fds, labelled from the plan in force, without
//! the controller: a scrape never waits for a reload, nor a reload for a
//! scrape. The flow-table size is the count of the last expiry sweep, so a
//! scrape does not copy the table.
//!
//! Per backend, the golden signals (docs/operations.md, "Golden
//! signals"): new flows, active flows and bytes sent in every mode; in nat
//! mode, the only one whose replies pass the balancer, also bytes
//! received, resets and, for TCP, unanswered attempts and the handshake
//! latency histogram. Series a mode cannot measure are left out rather
//! than shown as 0.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use prometheus::{
    GaugeVec, IntCounterVec, IntGaugeVec, Opts,
    core::{Collector, Desc},
    proto::{self, MetricFamily},
};

use crate::{
    config::BackendState,
    controller::SharedPlan,
    dataplane::{CounterReader, Counters},
    plan::Plan,
};

/// Names of the `lb_common::STAT_*` slots, as `event` label values (and
/// in the dashboard's history).
pub(crate) const EVENTS: [(u32, &str); 16] = [
    (lb_common::STAT_NEIGH_MISS, "neigh_miss"),
    (lb_common::STAT_SNAT_EXHAUSTED, "snat_exhausted"),
    (lb_common::STAT_NO_BACKEND, "no_backend"),
    (lb_common::STAT_FIB_FAIL, "fib_fail"),
    (lb_common::STAT_FLOW_INSERT_FAIL, "flow_insert_fail"),
    (lb_common::STAT_FIB_CACHED, "fib_cached"),
    (lb_common::STAT_OWNER_FORWARD, "owner_forward"),
    (lb_common::STAT_SYNC_LOST, "sync_lost"),
    (lb_common::STAT_REJECT, "reject"),
    (lb_common::STAT_REJECT_LIMITED, "reject_limited"),
    (lb_common::STAT_PARTIAL_CSUM, "partial_checksum"),
    (lb_common::STAT_FLOW_NEW, "flow_new"),
    (lb_common::STAT_FLOW_CONFIRMED, "flow_confirmed"),
    (lb_common::STAT_FULL_REDIRECT, "full_redirect"),
    (lb_common::STAT_FULL_DROP, "full_drop"),
    (lb_common::STAT_FULL_ADMIT, "full_admit"),
];

const BACKEND: [&str; 2] = ["service", "backend"];

/// Every admin state, as `state` label values of `xdplb_backend_state`.
const STATES: [(BackendState, &str); 3] = [
    (BackendState::Ready, "ready"),
    (BackendState::Drain, "drain"),
    (BackendState::Maint, "maint"),
];

/// The series, empty: filled afresh at every scrape, so a service or
/// backend that left the config leaves the output too.
struct Series {
    xdp: IntCounterVec,
    events: IntCounterVec,
    svc_packets: IntCounterVec,
    svc_bytes: IntCounterVec,
    be_packets: IntCounterVec,
    be_bytes: IntCounterVec,
    be_flows: IntCounterVec,
    be_up: IntGaugeVec,
    be_state: IntGaugeVec,
    be_weight: IntGaugeVec,
    be_effective_weight: GaugeVec,
    flows: IntGaugeVec,
    be_active: IntGaugeVec,
    be_sent: IntCounterVec,
    be_received: IntCounterVec,
    be_resets: IntCounterVec,
    be_unanswered: IntCounterVec,
    be_full: IntCounterVec,
    be_max_flows: IntGaugeVec,
}

const HANDSHAKE: &str = "xdplb_backend_handshake_seconds";
const HANDSHAKE_HELP: &str =
    "TCP handshake latency of a backend (nat mode): from the SYN forwarded to the SYN-ACK seen.";

fn handshake_desc() -> Desc {
    Desc::new(
        HANDSHAKE.into(),
        HANDSHAKE_HELP.into(),
        BACKEND.iter().map(|l| l.to_string()).collect(),
        Default::default(),
    )
    .expect("valid metric definition")
}

/// The upper bound of `Handshakes` bucket `i`, seconds (the last: +Inf).
fn handshake_le(i: usize) -> f64 {
    if i + 1 < lb_common::HANDSHAKE_BUCKETS {
        (1u64 << i) as f64 / 1e6
    } else {
        f64::INFINITY
    }
}

/// One backend's histogram, as Prometheus wants it (cumulative buckets).
fn handshake_metric(labels: [&str; 2], h: &lb_common::Handshakes) -> proto::Metric {
    let mut pairs = Vec::new();
    for (name, value) in BACKEND.iter().zip(labels) {
        let mut p = proto::LabelPair::default();
        p.set_name(name.to_string());
        p.set_value(value.to_string());
        pairs.push(p);
    }
    // In name order, as the library's own series have them.
    pairs.sort_by(|a, b| a.name().cmp(b.name()));
    let mut cumulative = 0;
    let buckets = h
        .buckets
        .iter()
        .enumerate()
        // +Inf is implied by the count.
        .take(lb_common::HANDSHAKE_BUCKETS - 1)
        .map(|(i, n)| {
            cumulative += n;
            let mut b = proto::Bucket::default();
            b.set_upper_bound(handshake_le(i));
            b.set_cumulative_count(cumulative);
            b
        })
        .collect();
    let mut hist = proto::Histogram::default();
    hist.set_bucket(buckets);
    hist.set_sample_count(h.buckets.iter().sum());
    hist.set_sample_sum(h.sum_us as f64 / 1e6);
    let mut m = proto::Metric::from_label(pairs);
    m.set_histogram(hist);
    m
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

impl Series {
    fn new() -> Self {
        Series {
            xdp: counter(
                "xdplb_xdp_packets_total",
                "Packets seen by the XDP program, by CPU and verdict.",
                &["cpu", "action"],
            ),
            events: counter(
                "xdplb_dataplane_events_total",
                "Data-plane events, mostly reasons for dropping a packet.",
                &["event"],
            ),
            svc_packets: counter(
                "xdplb_service_packets_total",
                "Packets of a service, both directions.",
                &["service"],
            ),
            svc_bytes: counter(
                "xdplb_service_bytes_total",
                "Bytes (whole frames) of a service, both directions.",
                &["service"],
            ),
            be_packets: counter(
                "xdplb_backend_packets_total",
                "Packets to and from a backend.",
                &BACKEND,
            ),
            be_bytes: counter(
                "xdplb_backend_bytes_total",
                "Bytes (whole frames) to and from a backend.",
                &BACKEND,
            ),
            be_flows: counter(
                "xdplb_backend_flows_total",
                "New flows assigned to a backend.",
                &BACKEND,
            ),
            be_up: gauge(
                "xdplb_backend_up",
                "1 if the backend passes its health check (or has none).",
                &BACKEND,
            ),
            // A state set (one series per state, 1 for the one in force):
            // a panel or alert selects `state="drain"` without knowing
            // a numeric code.
            be_state: gauge(
                "xdplb_backend_state",
                "1 for the backend's admin state in force (ready, drain or maint), 0 for the others.",
                &["service", "backend", "state"],
            ),
            be_weight: gauge(
                "xdplb_backend_weight",
                "The backend's weight in force (config, or set at run time).",
                &BACKEND,
            ),
            be_effective_weight: GaugeVec::new(
                Opts::new(
                    "xdplb_backend_effective_weight",
                    "The weight new flows see: 0 while the backend takes none, less than its weight while slow start ramps it.",
                ),
                &BACKEND,
            )
            .expect("valid metric definition"),
            flows: gauge(
                "xdplb_flow_table_entries",
                "Entries in the connection-tracking table, as of the last expiry sweep (every 5 s).",
                &[],
            ),
            be_active: gauge(
                "xdplb_backend_active_flows",
                "Open flows of a backend (confirmed, no FIN or RST seen, not expired), as of the last expiry sweep (every 5 s).",
                &BACKEND,
            ),
            be_sent: counter(
                "xdplb_backend_sent_bytes_total",
                "Bytes (whole frames) sent to a backend: the client side.",
                &BACKEND,
            ),
            be_received: counter(
                "xdplb_backend_received_bytes_total",
                "Bytes (whole frames) a backend sent back (nat mode).",
                &BACKEND,
            ),
            be_resets: counter(
                "xdplb_backend_resets_total",
                "TCP resets a backend sent (nat mode).",
                &BACKEND,
            ),
            be_unanswered: counter(
                "xdplb_backend_unanswered_total",
                "TCP connection attempts a backend never answered: no SYN-ACK before the unconfirmed flow expired (nat mode).",
                &BACKEND,
            ),
            be_full: counter(
                "xdplb_backend_full_total",
                "New flows drawn for a backend while it held its max_flows (sent elsewhere, dropped or admitted: see xdplb_dataplane_events_total full_*).",
                &BACKEND,
            ),
            be_max_flows: gauge(
                "xdplb_backend_max_flows",
                "A backend's max_flows limit (only backends with one).",
                &BACKEND,
            ),
        }
    }

    fn collectors(&self) -> [&dyn Collector; 19] {
        [
            &self.xdp,
            &self.events,
            &self.svc_packets,
            &self.svc_bytes,
            &self.be_packets,
            &self.be_bytes,
            &self.be_flows,
            &self.be_up,
            &self.be_state,
            &self.be_weight,
            &self.be_effective_weight,
            &self.flows,
            &self.be_active,
            &self.be_sent,
            &self.be_received,
            &self.be_resets,
            &self.be_unanswered,
            &self.be_full,
            &self.be_max_flows,
        ]
    }
}

/// Every data-plane series from one counters snapshot: pure, so the
/// output is unit-tested without a kernel.
pub fn families(plan: &Plan, c: &Counters, flow_entries: u64) -> Vec<MetricFamily> {
    let s = Series::new();
    let mut handshakes = MetricFamily::default();
    handshakes.set_name(HANDSHAKE.into());
    handshakes.set_help(HANDSHAKE_HELP.into());
    handshakes.set_field_type(proto::MetricType::HISTOGRAM);
    let mut handshake_metrics = Vec::new();
    for (cpu, actions) in c.actions.iter().enumerate() {
        for (action, n) in lb_common::XDP_ACTIONS.iter().zip(actions) {
            s.xdp
                .with_label_values(&[&cpu.to_string(), *action])
                .inc_by(*n);
        }
    }
    for (slot, name) in EVENTS {
        let n = c.global.get(slot as usize).copied().unwrap_or(0);
        s.events.with_label_values(&[name]).inc_by(n);
    }
    for svc in &plan.services {
        let sc = c.services.get(&svc.id).copied().unwrap_or_default();
        s.svc_packets
            .with_label_values(&[&svc.name])
            .inc_by(sc.packets);
        s.svc_bytes.with_label_values(&[&svc.name]).inc_by(sc.bytes);
        for b in &svc.backends {
            let bc = c.backends.get(&b.id).copied().unwrap_or_default();
            let labels = [svc.name.as_str(), &b.addr.to_string()];
            s.be_packets.with_label_values(&labels).inc_by(bc.packets);
            s.be_bytes.with_label_values(&labels).inc_by(bc.bytes);
            s.be_flows.with_label_values(&labels).inc_by(bc.flows);
            s.be_up.with_label_values(&labels).set(i64::from(b.up));
            for (state, name) in STATES {
                s.be_state
                    .with_label_values(&[labels[0], labels[1], name])
                    .set(i64::from(b.admin == state));
            }
            s.be_weight
                .with_label_values(&labels)
                .set(i64::from(b.weight));
            s.be_effective_weight
                .with_label_values(&labels)
                .set(b.effective_weight());
            let load = c.loads.get(&b.id).copied().unwrap_or_default();
            s.be_active
                .with_label_values(&labels)
                .set(i64::try_from(load.flows()).unwrap_or(i64::MAX));
            s.be_sent
                .with_label_values(&labels)
                .inc_by(bc.bytes.saturating_sub(bc.reply_bytes));
            s.be_full.with_label_values(&labels).inc_by(bc.full);
            if b.entry.max_flows != 0 {
                s.be_max_flows
                    .with_label_values(&labels)
                    .set(i64::from(b.entry.max_flows));
            }
            if svc.mode != lb_common::MODE_NAT {
                continue;
            }
            s.be_received
                .with_label_values(&labels)
                .inc_by(bc.reply_bytes);
            s.be_resets.with_label_values(&labels).inc_by(bc.resets);
            if svc.key.proto != lb_common::PROTO_TCP {
                continue;
            }
            s.be_unanswered
                .with_label_values(&labels)
                .inc_by(load.unanswered);
            let h = c.handshakes.get(&b.id).copied().unwrap_or_default();
            handshake_metrics.push(handshake_metric([labels[0], labels[1]], &h));
        }
    }
    s.flows
        .with_label_values(&[] as &[&str])
        .set(i64::try_from(flow_entries).unwrap_or(i64::MAX));
    // A family with no series (nat-only ones with only dsr services) is
    // left out: the text encoder refuses it.
    let mut out: Vec<MetricFamily> = s
        .collectors()
        .iter()
        .flat_map(|c| c.collect())
        .filter(|f| !f.get_metric().is_empty())
        .collect();
    if !handshake_metrics.is_empty() {
        handshakes.set_metric(handshake_metrics);
        out.push(handshakes);
    }
    out
}

/// The data plane as a prometheus `Collector`.
pub struct DataplaneCollector {
    plan: SharedPlan,
    counters: CounterReader,
    flow_entries: Arc<AtomicU64>,
    descs: Vec<Desc>,
}

impl DataplaneCollector {
    pub fn new(plan: SharedPlan, counters: CounterReader, flow_entries: Arc<AtomicU64>) -> Self {
        let mut descs: Vec<Desc> = Series::new()
            .collectors()
            .iter()
            .flat_map(|c| c.desc().into_iter().cloned())
            .collect();
        descs.push(handshake_desc());
        DataplaneCollector {
            plan,
            counters,
            flow_entries,
            descs,
        }
    }
}

impl Collector for DataplaneCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let plan = self.plan.get();
        let (sids, bids) = plan.ids();
        match self.counters.read(&sids, &bids) {
            Ok(c) => families(&plan, &c, self.flow_entries.load(Ordering::Relaxed)),
            Err(e) => {
                // A scrape has no error channel of its own: the series go
                // missing (Prometheus marks them stale) and the log says why.
                tracing::warn!("reading the data plane's counters for /metrics: {e}");
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use lb_common::{BackendCounter, BackendLoad, Counter, Handshakes};
    use prometheus::{Encoder, TextEncoder};

    use super::*;
    use crate::config::Config;

    /// `families` as Prometheus text.
    fn render(families: &[MetricFamily]) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(families, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_series_is_rendered_from_one_snapshot() {
        let cfg = Config::from_yaml(
            "interfaces: [eth0]\nsnat: { ipv4: 198.18.1.1, ipv6: 2001:db8:1::1 }\n\
             limits: { maglev_table_size: 101 }\nservices:\n\
             \x20 - name: web\n    vip: 198.18.100.10\n    port: 80\n    backends:\n\
             \x20     - { address: 198.18.1.11, port: 8080 }\n\
             \x20 - name: web6\n    vip: 2001:db8:100::10\n    port: 80\n    backends:\n\
             \x20     - { address: 2001:db8:1::12, port: 8080 }\n",
        )
        .unwrap();
        let plan = crate::plan::from_config(&cfg).unwrap();
        let svc = &plan.services[0];
        let mut c = Counters {
            actions: vec![[1, 2, 3, 4, 5], [10, 20, 30, 40, 50]],
            global: vec![0; lb_common::GLOBAL_STATS_LEN as usize],
            ..Counters::default()
        };
        c.global[lb_common::STAT_NEIGH_MISS as usize] = 7;
        c.services.insert(
            svc.id,
            Counter {
                packets: 100,
                bytes: 6400,
            },
        );
        c.backends.insert(
            svc.backends[0].id,
            BackendCounter {
                packets: 60,
                bytes: 3840,
                flows: 3,
                reply_bytes: 840,
                resets: 2,
                full: 7,
            },
        );
        c.loads.insert(
            svc.backends[0].id,
            BackendLoad {
                active: 5,
                recent: 2,
                unanswered: 4,
                closed: 2,
            },
        );
        let mut h = Handshakes::default();
        h.buckets[7] = 2; // up to 128 us
        h.buckets[10] = 1; // up to 1.024 ms
        h.buckets[lb_common::HANDSHAKE_BUCKETS - 1] = 1; // beyond 4.2 s
        h.sum_us = 5_000_600;
        c.handshakes.insert(svc.backends[0].id, h);
        let text = render(&families(&plan, &c, 42));
        for line in [
            "xdplb_xdp_packets_total{action=\"tx\",cpu=\"1\"} 40",
            "xdplb_dataplane_events_total{event=\"neigh_miss\"} 7",
            "xdplb_service_packets_total{service=\"web\"} 100",
            "xdplb_service_bytes_total{service=\"web\"} 6400",
            "xdplb_backend_packets_total{backend=\"198.18.1.11:8080\",service=\"web\"} 60",
            "xdplb_backend_flows_total{backend=\"198.18.1.11:8080\",service=\"web\"} 3",
            "xdplb_service_packets_total{service=\"web6\"} 0",
            "xdplb_backend_packets_total{backend=\"[2001:db8:1::12]:8080\",service=\"web6\"} 0",
            "xdplb_backend_up{backend=\"[2001:db8:1::12]:8080\",service=\"web6\"} 1",
            "xdplb_backend_state{backend=\"198.18.1.11:8080\",service=\"web\",state=\"ready\"} 1",
            "xdplb_backend_state{backend=\"198.18.1.11:8080\",service=\"web\",state=\"drain\"} 0",
            "xdplb_backend_weight{backend=\"198.18.1.11:8080\",service=\"web\"} 100",
            "xdplb_backend_effective_weight{backend=\"198.18.1.11:8080\",service=\"web\"} 100",
            "xdplb_flow_table_entries 42",
            "xdplb_backend_active_flows{backend=\"198.18.1.11:8080\",service=\"web\"} 5",
            "xdplb_backend_sent_bytes_total{backend=\"198.18.1.11:8080\",service=\"web\"} 3000",
            "xdplb_backend_received_bytes_total{backend=\"198.18.1.11:8080\",service=\"web\"} 840",
            "xdplb_backend_resets_total{backend=\"198.18.1.11:8080\",service=\"web\"} 2",
            "xdplb_backend_unanswered_total{backend=\"198.18.1.11:8080\",service=\"web\"} 4",
            "xdplb_backend_full_total{backend=\"198.18.1.11:8080\",service=\"web\"} 7",
            "xdplb_backend_handshake_seconds_bucket{backend=\"198.18.1.11:8080\",service=\"web\",le=\"0.000064\"} 0",
            "xdplb_backend_handshake_seconds_bucket{backend=\"198.18.1.11:8080\",service=\"web\",le=\"0.000128\"} 2",
            "xdplb_backend_handshake_seconds_bucket{backend=\"198.18.1.11:8080\",service=\"web\",le=\"0.001024\"} 3",
            "xdplb_backend_handshake_seconds_bucket{backend=\"198.18.1.11:8080\",service=\"web\",le=\"4.194304\"} 3",
            "xdplb_backend_handshake_seconds_bucket{backend=\"198.18.1.11:8080\",service=\"web\",le=\"+Inf\"} 4",
            "xdplb_backend_handshake_seconds_sum{backend=\"198.18.1.11:8080\",service=\"web\"} 5.0006",
            "xdplb_backend_handshake_seconds_count{backend=\"198.18.1.11:8080\",service=\"web\"} 4",
            "xdplb_backend_handshake_seconds_count{backend=\"[2001:db8:1::12]:8080\",service=\"web6\"} 0",
            "xdplb_backend_active_flows{backend=\"[2001:db8:1::12]:8080\",service=\"web6\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn dsr_and_tunnel_backends_show_only_what_the_balancer_sees() {
        let cfg = Config::from_yaml(
            "interfaces: [eth0]\nlimits: { maglev_table_size: 101 }\nservices:\n\
             \x20 - name: d\n    vip: 198.18.100.20\n    port: 80\n    mode: dsr\n    backends:\n\
             \x20     - { address: 198.18.1.11, port: 80 }\n",
        )
        .unwrap();
        let plan = crate::plan::from_config(&cfg).unwrap();
        let c = Counters {
            actions: vec![[0; 5]],
            global: vec![0; lb_common::GLOBAL_STATS_LEN as usize],
            ..Counters::default()
        };
        let text = render(&families(&plan, &c, 0));
        for present in [
            "xdplb_backend_active_flows{",
            "xdplb_backend_sent_bytes_total{",
        ] {
            assert!(text.contains(present), "{present} missing:\n{text}");
        }
        for absent in [
            "xdplb_backend_received_bytes_total{",
            "xdplb_backend_resets_total{",
            "xdplb_backend_unanswered_total{",
            "xdplb_backend_handshake_seconds",
        ] {
            assert!(!text.contains(absent), "{absent} in dsr mode:\n{text}");
        }
    }
}
