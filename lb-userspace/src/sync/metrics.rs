//! Flow sync's series of `/metrics`: `xdplb_sync_peer_up{peer}`,
//! `xdplb_sync_flows_sent_total` and `xdplb_sync_flows_received_total{peer}`,
//! read at scrape time from the task's status. (The packets handed to an
//! owner are the data plane's `xdplb_dataplane_events_total{event="owner_forward"}`.)

use prometheus::{
    IntCounterVec, IntGaugeVec, Opts,
    core::{Collector, Desc},
    proto::MetricFamily,
};

use super::SharedStatus;
use crate::api_types::SyncStatus;

struct Series {
    up: IntGaugeVec,
    sent: IntCounterVec,
    received: IntCounterVec,
}

impl Series {
    fn new() -> Self {
        let opts = Opts::new;
        Series {
            up: IntGaugeVec::new(
                opts(
                    "xdplb_sync_peer_up",
                    "1 while the flow-sync peer's heartbeats arrive.",
                ),
                &["peer"],
            )
            .expect("valid metric"),
            sent: IntCounterVec::new(
                opts(
                    "xdplb_sync_flows_sent_total",
                    "Nat flows this node announced to its flow-sync peers.",
                ),
                &[],
            )
            .expect("valid metric"),
            received: IntCounterVec::new(
                opts(
                    "xdplb_sync_flows_received_total",
                    "Nat flows a flow-sync peer announced to this node.",
                ),
                &["peer"],
            )
            .expect("valid metric"),
        }
    }
}

/// The series, pure.
pub fn families(status: &SyncStatus) -> Vec<MetricFamily> {
    let s = Series::new();
    s.sent
        .with_label_values(&[] as &[&str])
        .inc_by(status.flows_sent);
    for p in &status.peers {
        let peer = p.address.to_string();
        s.up.with_label_values(&[&peer]).set(i64::from(p.up));
        s.received
            .with_label_values(&[&peer])
            .inc_by(p.flows_received);
    }
    let mut out = s.up.collect();
    out.extend(s.sent.collect());
    out.extend(s.received.collect());
    out
}

pub struct SyncCollector {
    status: SharedStatus,
    descs: Vec<Desc>,
}

impl SyncCollector {
    pub fn new(status: SharedStatus) -> Self {
        let s = Series::new();
        let descs =
            s.up.desc()
                .into_iter()
                .chain(s.sent.desc())
                .chain(s.received.desc())
                .cloned()
                .collect();
        SyncCollector { status, descs }
    }
}

impl Collector for SyncCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let status = self
            .status
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        families(&status)
    }
}

#[cfg(test)]
mod tests {
    use prometheus::{Encoder, TextEncoder};

    use super::*;
    use crate::api_types::SyncPeerStatus;

    #[test]
    fn series_name_each_peer() {
        let status = SyncStatus {
            address: "198.18.2.1".parse().unwrap(),
            port: 6082,
            flows_sent: 12,
            peers: vec![
                SyncPeerStatus {
                    address: "198.18.2.2".parse().unwrap(),
                    up: true,
                    last_heard_ms: Some(100),
                    flows_received: 7,
                },
                SyncPeerStatus {
                    address: "198.18.2.3".parse().unwrap(),
                    up: false,
                    last_heard_ms: None,
                    flows_received: 0,
                },
            ],
        };
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&families(&status), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        for line in [
            "xdplb_sync_peer_up{peer=\"198.18.2.2\"} 1",
            "xdplb_sync_peer_up{peer=\"198.18.2.3\"} 0",
            "xdplb_sync_flows_sent_total 12",
            "xdplb_sync_flows_received_total{peer=\"198.18.2.2\"} 7",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
