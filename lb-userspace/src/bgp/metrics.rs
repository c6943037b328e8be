//! The node's and BGP's series of `/metrics` (docs/design.md section 5):
//! `xdplb_node_drained`, and with `bgp`, `xdplb_bgp_session_up{peer}` and
//! `xdplb_vip_announced{vip}` (every VIP of the plan in force: 1 if BIRD
//! announces it, else 0). Read at scrape time from the shared node state,
//! plan and BGP status, without the controller.

use std::collections::BTreeSet;

use prometheus::{
    IntGaugeVec, Opts,
    core::{Collector, Desc},
    proto::MetricFamily,
};
use tokio::sync::watch;

use super::SharedStatus;
use crate::{
    api_types::{BgpStatus, NodeState},
    controller::SharedPlan,
    plan::Plan,
};

struct Series {
    drained: IntGaugeVec,
    session_up: IntGaugeVec,
    announced: IntGaugeVec,
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

impl Series {
    fn new() -> Self {
        Series {
            drained: gauge(
                "xdplb_node_drained",
                "1 while the node is drained (xdplb node drain): it announces no VIP.",
                &[],
            ),
            session_up: gauge(
                "xdplb_bgp_session_up",
                "1 if the BGP session with the peer is established.",
                &["peer"],
            ),
            announced: gauge(
                "xdplb_vip_announced",
                "1 if the VIP is announced over BGP, 0 if configured but not announced.",
                &["vip"],
            ),
        }
    }
}

/// The series, pure: unit-tested without BIRD.
pub fn families(plan: &Plan, node: NodeState, bgp: Option<&BgpStatus>) -> Vec<MetricFamily> {
    let s = Series::new();
    s.drained
        .with_label_values(&[] as &[&str])
        .set(i64::from(node == NodeState::Drain));
    let mut out = s.drained.collect();
    let Some(bgp) = bgp else {
        return out;
    };
    for p in &bgp.peers {
        s.session_up
            .with_label_values(&[&p.address.to_string()])
            .set(i64::from(p.up));
    }
    let configured: BTreeSet<_> = plan
        .services
        .iter()
        .map(|s| lb_common::words_addr(s.key.addr, s.key.family))
        .chain(bgp.announced.iter().copied())
        .collect();
    for vip in configured {
        s.announced
            .with_label_values(&[&vip.to_string()])
            .set(i64::from(bgp.announced.contains(&vip)));
    }
    out.extend(s.session_up.collect());
    out.extend(s.announced.collect());
    out
}

pub struct NodeCollector {
    plan: SharedPlan,
    node: watch::Receiver<NodeState>,
    bgp: Option<SharedStatus>,
    descs: Vec<Desc>,
}

impl NodeCollector {
    pub fn new(
        plan: SharedPlan,
        node: watch::Receiver<NodeState>,
        bgp: Option<SharedStatus>,
    ) -> Self {
        let s = Series::new();
        let descs = [&s.drained, &s.session_up, &s.announced]
            .iter()
            .flat_map(|c| c.desc().into_iter().cloned())
            .collect();
        NodeCollector {
            plan,
            node,
            bgp,
            descs,
        }
    }
}

impl Collector for NodeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let plan = self.plan.get();
        let node = *self.node.borrow();
        let bgp = self.bgp.as_ref().map(|b| {
            b.read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        });
        families(&plan, node, bgp.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use prometheus::{Encoder, TextEncoder};

    use super::*;
    use crate::{api_types::PeerStatus, config::Config};

    fn text(families: &[MetricFamily]) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(families, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn node_sessions_and_vips() {
        let cfg = Config::from_yaml(
            "interfaces: [eth0]\nsnat: { ipv4: 198.18.1.1 }\nlimits: { maglev_table_size: 251 }\nservices:\n  - { name: a, vip: 198.18.100.10, port: 80, backends: [ { address: 198.18.1.11, port: 80 } ] }\n  - { name: b, vip: 198.18.100.11, port: 80, backends: [ { address: 198.18.1.11, port: 80 } ] }\n",
        )
        .unwrap();
        let plan = crate::plan::from_config(&cfg).unwrap();
        let t = text(&families(&plan, NodeState::Ready, None));
        assert!(t.contains("xdplb_node_drained 0\n"), "{t}");
        assert!(!t.contains("xdplb_bgp"), "no bgp: no BGP series\n{t}");
        let bgp = BgpStatus {
            router_id: None,
            peers: vec![
                PeerStatus {
                    address: "198.18.0.2".parse().unwrap(),
                    asn: 65000,
                    state: "Established".into(),
                    up: true,
                },
                PeerStatus {
                    address: "2001:db8::2".parse().unwrap(),
                    asn: 65000,
                    state: "Active".into(),
                    up: false,
                },
            ],
            announced: vec!["198.18.100.11".parse().unwrap()],
        };
        let t = text(&families(&plan, NodeState::Drain, Some(&bgp)));
        println!("{t}");
        assert!(t.contains("xdplb_node_drained 1\n"));
        assert!(t.contains("xdplb_bgp_session_up{peer=\"198.18.0.2\"} 1\n"));
        assert!(t.contains("xdplb_bgp_session_up{peer=\"2001:db8::2\"} 0\n"));
        assert!(t.contains("xdplb_vip_announced{vip=\"198.18.100.10\"} 0\n"));
        assert!(t.contains("xdplb_vip_announced{vip=\"198.18.100.11\"} 1\n"));
    }
}
