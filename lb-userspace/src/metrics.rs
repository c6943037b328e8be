//! Prometheus exposition, read from the data plane's per-CPU counters at
//! scrape time (so the numbers are never stale and cost nothing between
//! scrapes).

use prometheus::{
    Encoder, IntCounterVec, IntGaugeVec, Opts, TextEncoder, core::Collector, proto::MetricFamily,
};

use crate::{
    dataplane::{Dataplane, DataplaneError},
    plan::Plan,
};

/// Names of the `lb_common::STAT_*` slots, as `event` label values.
const EVENTS: [(u32, &str); 6] = [
    (lb_common::STAT_NEIGH_MISS, "neigh_miss"),
    (lb_common::STAT_SNAT_EXHAUSTED, "snat_exhausted"),
    (lb_common::STAT_NO_BACKEND, "no_backend"),
    (lb_common::STAT_FIB_FAIL, "fib_fail"),
    (lb_common::STAT_FLOW_INSERT_FAIL, "flow_insert_fail"),
    (lb_common::STAT_FIB_CACHED, "fib_cached"),
];

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

/// Renders every series of design.md section 5 in the text format.
pub fn render(dp: &Dataplane, plan: &Plan) -> Result<String, DataplaneError> {
    let service_ids: Vec<u32> = plan.services.iter().map(|s| s.id).collect();
    let backend_ids: Vec<u32> = plan
        .services
        .iter()
        .flat_map(|s| s.backends.iter().map(|b| b.id))
        .collect();
    let c = dp.counters(&service_ids, &backend_ids)?;

    let xdp = counter(
        "xdplb_xdp_packets_total",
        "Packets seen by the XDP program, by CPU and verdict.",
        &["cpu", "action"],
    );
    for (cpu, actions) in c.actions.iter().enumerate() {
        for (action, n) in lb_common::XDP_ACTIONS.iter().zip(actions) {
            xdp.with_label_values(&[&cpu.to_string(), *action])
                .inc_by(*n);
        }
    }
    let events = counter(
        "xdplb_dataplane_events_total",
        "Data-plane events, mostly reasons for dropping a packet.",
        &["event"],
    );
    for (slot, name) in EVENTS {
        events
            .with_label_values(&[name])
            .inc_by(c.global[slot as usize]);
    }

    let svc_packets = counter(
        "xdplb_service_packets_total",
        "Packets of a service, both directions.",
        &["service"],
    );
    let svc_bytes = counter(
        "xdplb_service_bytes_total",
        "Bytes (whole frames) of a service, both directions.",
        &["service"],
    );
    let be_labels = ["service", "backend"];
    let be_packets = counter(
        "xdplb_backend_packets_total",
        "Packets to and from a backend.",
        &be_labels,
    );
    let be_bytes = counter(
        "xdplb_backend_bytes_total",
        "Bytes (whole frames) to and from a backend.",
        &be_labels,
    );
    let be_flows = counter(
        "xdplb_backend_flows_total",
        "New flows assigned to a backend.",
        &be_labels,
    );
    let be_up = gauge(
        "xdplb_backend_up",
        "1 if the backend passes its health check (or has none).",
        &be_labels,
    );
    for svc in &plan.services {
        let sc = c.services[&svc.id];
        svc_packets
            .with_label_values(&[&svc.name])
            .inc_by(sc.packets);
        svc_bytes.with_label_values(&[&svc.name]).inc_by(sc.bytes);
        for b in &svc.backends {
            let bc = c.backends[&b.id];
            let labels = [svc.name.as_str(), &b.addr.to_string()];
            be_packets.with_label_values(&labels).inc_by(bc.packets);
            be_bytes.with_label_values(&labels).inc_by(bc.bytes);
            be_flows.with_label_values(&labels).inc_by(bc.flows);
            be_up.with_label_values(&labels).set(i64::from(b.up));
        }
    }
    let flows = gauge(
        "xdplb_flow_table_entries",
        "Entries in the connection-tracking table.",
        &[],
    );
    flows
        .with_label_values(&[] as &[&str])
        .set(dp.flow_entries()? as i64);

    let families: Vec<MetricFamily> = [
        xdp.collect(),
        events.collect(),
        svc_packets.collect(),
        svc_bytes.collect(),
        be_packets.collect(),
        be_bytes.collect(),
        be_flows.collect(),
        be_up.collect(),
        flows.collect(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&families, &mut out)
        .expect("text encoding into a Vec cannot fail");
    Ok(String::from_utf8(out).expect("prometheus text is UTF-8"))
}
