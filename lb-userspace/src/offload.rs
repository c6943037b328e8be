//! Partial L4 checksums (the program's `offload.rs`): a sender with TX
//! checksum offload on a virtual device (veth, a VM's tap) hands XDP frames
//! whose checksum the NIC was meant to finish; forwarded, the backend drops
//! them. The program counts them and notes the ingress interface; this
//! task warns once per interface, naming the fix. A valid checksum can
//! look partial (one new flow in 65,536: a flood of 655,360 SYNs showed
//! 7), so the warning waits for partial checksums to be a real share of
//! the new flows: with offload on, every new flow from that sender has one.

use std::{
    collections::{HashSet, VecDeque},
    time::Duration,
};

use aya::maps::{HashMap, MapData};
use lb_common::{STAT_FLOW_NEW, STAT_PARTIAL_CSUM};
use tracing::warn;

use crate::dataplane::CounterReader;

/// The remark of `xdplb trace` for such a frame.
pub const PARTIAL_CSUM_NOTE: &str = "partial L4 checksum (the sender has TX checksum offload on: \
     a veth or tap); the backend will drop it: `ethtool -K SENDER tx off`";

/// How often the program's record is read.
const INTERVAL: Duration = Duration::from_secs(2);

/// Over the last `WINDOW` intervals (a minute), partial checksums on at
/// least this many new flows and this share of them (percent) make the
/// warning: a lab's occasional connection is caught, a busy node's one
/// valid checksum in 65,536 is not.
const WINDOW: usize = 30;
const MIN_PARTIAL: u64 = 3;
const MIN_SHARE_PERCENT: u64 = 10;

/// Warns once for every interface partial checksums arrive on; runs
/// until the task is dropped.
pub async fn watch(mut seen: HashMap<MapData, u32, u32>, counters: CounterReader) -> &'static str {
    let mut warned = HashSet::new();
    let mut tick = tokio::time::interval(INTERVAL);
    let mut last = None;
    // (partial, new) flows of the last `WINDOW` intervals.
    let mut window: VecDeque<(u64, u64)> = VecDeque::with_capacity(WINDOW + 1);
    loop {
        tick.tick().await;
        let Ok(c) = counters.read(&[], &[]) else {
            continue;
        };
        let at = |slot: u32| c.global.get(slot as usize).copied().unwrap_or(0);
        let now = (at(STAT_PARTIAL_CSUM), at(STAT_FLOW_NEW));
        // Counters adopted from a pinned run count from before this one.
        let (before_p, before_n) = last.unwrap_or(now);
        last = Some(now);
        window.push_back((
            now.0.saturating_sub(before_p),
            now.1.saturating_sub(before_n),
        ));
        if window.len() > WINDOW {
            window.pop_front();
        }
        let (partial, new) = window
            .iter()
            .fold((0, 0), |(p, n), (dp, dn)| (p + dp, n + dn));
        let ifaces: Vec<u32> = seen.keys().filter_map(Result::ok).collect();
        if partial >= MIN_PARTIAL && partial * 100 >= new * MIN_SHARE_PERCENT {
            for &ifindex in &ifaces {
                if warned.insert(ifindex) {
                    warn!("{}", message(ifindex));
                }
            }
        }
        // An interface noted only for a valid checksum that looked partial
        // is forgotten once the window holds none.
        if partial == 0 {
            for ifindex in ifaces {
                let _ = seen.remove(&ifindex);
            }
        }
    }
}

/// The warning for frames arriving on `ifindex`: its name, and for a veth
/// where the sender is (its peer's index; the peer may live in another
/// namespace).
fn message(ifindex: u32) -> String {
    let name = nix::net::if_::if_indextoname(ifindex)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|_| format!("ifindex {ifindex}"));
    let peer = std::fs::read_to_string(format!("/sys/class/net/{name}/iflink"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|&p| p != ifindex)
        .map(|p| format!(" (its peer, the sender, is ifindex {p}, maybe in another namespace)"))
        .unwrap_or_default();
    format!(
        "frames with a partial L4 checksum arrive on {name}{peer}: the sender has TX checksum \
         offload on (a veth or a VM's tap), and the backends will drop these packets once \
         forwarded. Turn it off on the sending device: `ethtool -K SENDER tx off` \
         (counted as xdplb_dataplane_events_total{{event=\"partial_checksum\"}}; warned once \
         per interface)"
    )
}
