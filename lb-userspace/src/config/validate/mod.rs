//! `Config::validate` and `check_host`: the semantic checks, one file a
//! topic. The first problem found is returned, naming its key path.

mod admin;
mod backends;
mod bgp;
mod flow_sync;
mod health_check;
mod interfaces;
mod limits;
mod services;
mod snat;
mod timeouts;

use std::net::IpAddr;

use crate::config::error::invalid;
use crate::config::{Config, ConfigError, Mode};
use crate::token::{TokenError, read_token_file};

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
        snat::check_tunnel_source(self)?;
        limits::check_capacity(self)?;
        bgp::check(self)?;
        flow_sync::check(self)?;
        admin::check(&self.admin)
    }
}

/// Checks that need the running host (not run by `from_yaml`): the token
/// file, and the kernel's ephemeral ports against the snat range.
pub fn check_host(config: &Config) -> Result<(), ConfigError> {
    if let Some(path) = &config.admin.token_file {
        read_token_file(path).map_err(|e| match e {
            TokenError::Read { path, source } => ConfigError::Read { path, err: source },
            other => invalid("admin.token_file", other.to_string()),
        })?;
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
