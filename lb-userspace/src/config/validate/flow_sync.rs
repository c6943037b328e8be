//! `flow_sync`: a unicast address, 1 to `MAX_PEERS` distinct peers of its
//! family (not itself), a port, and a sensible dead time.

use std::time::Duration;

use lb_common::MAX_PEERS;

use super::check_unicast;
use crate::config::error::invalid;
use crate::config::{Config, ConfigError};

const DEAD_AFTER: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(300)..=Duration::from_secs(3600);

pub(super) fn check(config: &Config) -> Result<(), ConfigError> {
    let Some(sync) = &config.flow_sync else {
        return Ok(());
    };
    check_unicast("flow_sync.address", sync.address)?;
    if sync.peers.is_empty() {
        return Err(invalid("flow_sync.peers", "at least one peer is needed"));
    }
    if sync.peers.len() > MAX_PEERS as usize {
        return Err(invalid(
            "flow_sync.peers",
            format!("{} peers: at most {MAX_PEERS}", sync.peers.len()),
        ));
    }
    for (i, &peer) in sync.peers.iter().enumerate() {
        let path = format!("flow_sync.peers[{i}]");
        check_unicast(&path, peer)?;
        if peer == sync.address {
            return Err(invalid(
                path,
                format!("{peer} is this node's own flow_sync.address"),
            ));
        }
        if peer.is_ipv4() != sync.address.is_ipv4() {
            return Err(invalid(
                path,
                format!("{peer} is not of the family of flow_sync.address"),
            ));
        }
        if let Some(j) = sync.peers[..i].iter().position(|&q| q == peer) {
            return Err(invalid(
                path,
                format!("duplicate peer {peer} (also peers[{j}])"),
            ));
        }
    }
    if sync.port == 0 {
        return Err(invalid("flow_sync.port", "must be 1-65535"));
    }
    if !DEAD_AFTER.contains(&sync.dead_after) {
        return Err(invalid(
            "flow_sync.dead_after",
            format!(
                "{} is out of range: 300ms to 1h",
                humantime::format_duration(sync.dead_after)
            ),
        ));
    }
    Ok(())
}
