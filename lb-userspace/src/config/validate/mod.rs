//! `Config::validate` and `check_host`: the semantic checks, one file a
//! topic. The first problem found is returned, naming its key path.

mod backends;
mod health_check;
mod interfaces;
mod limits;
mod services;
mod snat;
mod timeouts;

use std::net::IpAddr;

use crate::config::error::invalid;
use crate::config::{Config, ConfigError, Mode};

pub use backends::MAX_WEIGHT;
#[cfg(test)]
pub(super) use snat::{EPHEMERAL_PORTS, check_ephemeral_overlap};

impl Config {
    /// Checks everything that does not need the host (no line: see
    /// `from_yaml`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        interfaces::check(&self.interfaces)?;
        snat::check_ports(self.snat.ports)?;
        timeouts::check(&self.flow_timeouts)?;
        limits::check_sizes(&self.limits)?;
        services::check(&self.services)?;
        snat::check_addresses(self)?;
        limits::check_capacity(self)
    }
}

/// Checks that need the running host (not run by `from_yaml`): the token
/// file, and the kernel's ephemeral ports against the snat range.
pub fn check_host(config: &Config) -> Result<(), ConfigError> {
    if let Some(path) = &config.admin.token_file {
        let token = std::fs::read_to_string(path).map_err(|err| ConfigError::Read {
            path: path.clone(),
            err,
        })?;
        if token.trim().is_empty() {
            return Err(invalid(
                "admin.token_file",
                format!("{} is empty", path.display()),
            ));
        }
    }
    if !config.services.iter().any(|s| s.mode == Mode::Nat) {
        return Ok(());
    }
    snat::check_ephemeral_ports(config.snat.ports)
}

/// VIPs, backends and snat addresses must be reachable unicast addresses.
fn check_unicast(path: &str, ip: IpAddr) -> Result<(), ConfigError> {
    let unusable = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if unusable {
        return Err(invalid(
            path,
            format!("{ip} is not a usable unicast address"),
        ));
    }
    Ok(())
}
