//! `flow_timeouts`: each fits the data plane's u32 seconds.

use std::time::Duration;

use crate::config::error::invalid;
use crate::config::{ConfigError, FlowTimeouts};

pub(super) fn check(timeouts: &FlowTimeouts) -> Result<(), ConfigError> {
    for (key, t) in [
        ("tcp", timeouts.tcp),
        ("tcp_closing", timeouts.tcp_closing),
        ("udp", timeouts.udp),
        ("unconfirmed", timeouts.unconfirmed),
    ] {
        if t < Duration::from_secs(1) || t.as_secs() > u32::MAX as u64 {
            return Err(invalid(
                format!("flow_timeouts.{key}"),
                format!(
                    "{} is out of range: 1s up to 136 years",
                    humantime::format_duration(t)
                ),
            ));
        }
    }
    Ok(())
}
