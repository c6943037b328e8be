//! `bgp` and `run_dir`: AS numbers, the router id, the peers, the hold
//! time (BIRD takes whole seconds, 3 to 65535), and an absolute run dir.

use std::time::Duration;

use super::check_unicast;
use crate::config::error::invalid;
use crate::config::{Bgp, Config, ConfigError};

/// 0 and 4294967295 are reserved (RFC 7607, RFC 7300).
const AS_RANGE: std::ops::RangeInclusive<u32> = 1..=4_294_967_294;

fn check_as(path: &str, asn: u32) -> Result<(), ConfigError> {
    if !AS_RANGE.contains(&asn) {
        return Err(invalid(
            path,
            format!("AS number {asn} is reserved: use 1-4294967294"),
        ));
    }
    Ok(())
}

pub(super) fn check(config: &Config) -> Result<(), ConfigError> {
    if !config.run_dir.is_absolute() {
        return Err(invalid(
            "run_dir",
            format!("{} is not an absolute path", config.run_dir.display()),
        ));
    }
    let Some(bgp) = &config.bgp else {
        return Ok(());
    };
    check_bgp(bgp)
}

fn check_bgp(bgp: &Bgp) -> Result<(), ConfigError> {
    check_as("bgp.local_as", bgp.local_as)?;
    if let Some(id) = bgp.router_id
        && (id.is_unspecified() || id.is_broadcast())
    {
        return Err(invalid(
            "bgp.router_id",
            format!("{id} cannot be a router id"),
        ));
    }
    let hold = bgp.hold_time;
    if hold < Duration::from_secs(3)
        || hold > Duration::from_secs(65535)
        || hold.subsec_nanos() != 0
    {
        return Err(invalid(
            "bgp.hold_time",
            format!(
                "{} is out of range: whole seconds, 3s to 65535s",
                humantime::format_duration(hold)
            ),
        ));
    }
    if bgp.peers.is_empty() {
        return Err(invalid("bgp.peers", "at least one peer is needed"));
    }
    for (i, p) in bgp.peers.iter().enumerate() {
        let path = format!("bgp.peers[{i}]");
        check_unicast(&format!("{path}.address"), p.address)?;
        check_as(&format!("{path}.as"), p.asn)?;
        if p.port == 0 {
            return Err(invalid(format!("{path}.port"), "must be 1-65535"));
        }
        if let Some(j) = bgp.peers[..i].iter().position(|q| q.address == p.address) {
            return Err(invalid(
                format!("{path}.address"),
                format!("duplicate peer {} (also peers[{j}])", p.address),
            ));
        }
    }
    Ok(())
}
