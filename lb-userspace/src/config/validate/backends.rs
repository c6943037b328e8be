//! A service's `backends`: address family, address, port, weight,
//! `max_flows`, and no backend twice.

use std::collections::HashMap;

use super::check_unicast;
use crate::config::error::invalid;
use crate::config::{ConfigError, Mode, Service};

/// Largest backend weight (config and API).
pub const MAX_WEIGHT: u32 = 65535;

/// `service` is the key path of `s`.
pub(super) fn check(service: &str, s: &Service) -> Result<(), ConfigError> {
    let mut seen = HashMap::new();
    for (k, b) in s.backends.iter().enumerate() {
        let at = |key: &str| format!("{service}.backends[{k}].{key}");
        // Only a tunnel can carry one family inside the other.
        if b.address.is_ipv4() != s.vip.is_ipv4() && s.mode != Mode::Tunnel {
            return Err(invalid(
                at("address"),
                format!(
                    "{} is not of the VIP's address family: mode {} does not translate between IPv4 and IPv6",
                    b.address, s.mode
                ),
            ));
        }
        check_unicast(&at("address"), b.address)?;
        // An all-ports service forwards each packet to its own port.
        if (s.port == 0) != (b.port == 0) {
            let message = if s.port == 0 {
                "must be 0 in an all-ports service (port 0): packets keep their port"
            } else {
                "backend port must be 1-65535 (0 only in an all-ports service)"
            };
            return Err(invalid(at("port"), message));
        }
        if s.mode != Mode::Nat && b.port != s.port {
            return Err(invalid(
                at("port"),
                format!(
                    "{} differs from the service port {}: in mode {} the packet reaches the backend unchanged",
                    b.port, s.port, s.mode
                ),
            ));
        }
        if b.weight > MAX_WEIGHT {
            return Err(invalid(
                at("weight"),
                format!("weight {} is above the maximum {MAX_WEIGHT}", b.weight),
            ));
        }
        if b.max_flows == Some(0) {
            return Err(invalid(
                at("max_flows"),
                "max_flows must be at least 1 (leave it out for no limit)",
            ));
        }
        if let Some(j) = seen.insert((b.address, b.port), k) {
            return Err(invalid(
                format!("{service}.backends[{k}]"),
                format!(
                    "duplicate backend {}:{} (also backends[{j}])",
                    b.address, b.port
                ),
            ));
        }
    }
    Ok(())
}
