//! Partial L4 checksums (the program's `offload.rs`): a sender with TX
//! checksum offload on a virtual device (veth, a VM's tap) hands XDP frames
//! whose checksum the NIC was meant to finish; forwarded, the backend drops
//! them. The program counts them and notes the ingress interface; this
//! task warns once per interface, naming the fix.

use std::{collections::HashSet, time::Duration};

use aya::maps::{HashMap, MapData};
use tracing::warn;

/// The remark of `xdplb trace` for such a frame.
pub const PARTIAL_CSUM_NOTE: &str = "partial L4 checksum (the sender has TX checksum offload on: \
     a veth or tap); the backend will drop it: `ethtool -K SENDER tx off`";

/// How often the program's record is read.
const INTERVAL: Duration = Duration::from_secs(2);

/// Warns once for every interface partial checksums arrive on; runs
/// until the task is dropped.
pub async fn watch(seen: HashMap<MapData, u32, u32>) -> &'static str {
    let mut warned = HashSet::new();
    let mut tick = tokio::time::interval(INTERVAL);
    loop {
        tick.tick().await;
        for ifindex in seen.keys().filter_map(Result::ok) {
            if warned.insert(ifindex) {
                warn!("{}", message(ifindex));
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
