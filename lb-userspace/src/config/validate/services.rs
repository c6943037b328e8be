//! `services`: names, VIPs, encapsulation, and each service's health
//! check and backends.

use std::collections::HashMap;
use std::time::Duration;

use super::{backends, check_unicast, health_check};
use crate::config::error::invalid;
use crate::config::{ConfigError, Encap, Mode, Service};
use crate::plan::SLOW_START_MIN_STEP;

pub(super) fn check(services: &[Service]) -> Result<(), ConfigError> {
    // (vip, port, protocol) -> index of the service that owns it.
    let mut vips = HashMap::new();
    let mut names = HashMap::new();
    for (i, s) in services.iter().enumerate() {
        let at = |key: &str| format!("services[{i}].{key}");
        check_name(&at("name"), &s.name)?;
        if let Some(j) = names.insert(s.name.as_str(), i) {
            return Err(invalid(
                at("name"),
                format!("duplicate service name {:?} (also services[{j}])", s.name),
            ));
        }
        if s.encap != Encap::Ipip && s.mode != Mode::Tunnel {
            return Err(invalid(at("encap"), "only for mode tunnel"));
        }
        if let Some(hc) = &s.health_check {
            health_check::check(&at("health_check"), hc)?;
        }
        if let Some(d) = s.slow_start {
            check_slow_start(&at("slow_start"), d)?;
        }
        check_unicast(&at("vip"), s.vip)?;
        if let Some(j) = vips.insert((s.vip, s.port, s.protocol), i) {
            return Err(invalid(
                at("vip"),
                format!(
                    "{}:{}/{} is already used by service {:?} (services[{j}])",
                    s.vip, s.port, s.protocol, services[j].name
                ),
            ));
        }
        backends::check(&format!("services[{i}]"), s)?;
    }
    Ok(())
}

/// A service name is a metrics label value and a URL path segment.
fn check_name(path: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(invalid(path, "service name must not be empty"));
    }
    let ok = |b: u8| b.is_ascii_alphanumeric() || b"_.-".contains(&b);
    if !name.bytes().all(ok) || name == "." || name == ".." {
        return Err(invalid(
            path,
            format!(
                "invalid service name {name:?}: use letters, digits, '_', '.' and '-' (it is a metrics label and a URL segment)"
            ),
        ));
    }
    Ok(())
}

/// The longest `slow_start`. Warm-ups (JIT, caches, connection pools) take
/// seconds to minutes; past an hour the ramp's steps (1/20 of it) are three
/// minutes apart, and a longer value is more likely a wrong unit (`30h`
/// for `30m`) that would keep a backend under-used for a day.
pub const MAX_SLOW_START: Duration = Duration::from_secs(3600);

/// 0 turns slow start off; otherwise at least one ramp step, at most
/// `MAX_SLOW_START`.
fn check_slow_start(path: &str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() || (SLOW_START_MIN_STEP..=MAX_SLOW_START).contains(&d) {
        return Ok(());
    }
    Err(invalid(
        path,
        format!(
            "{} is out of range: 0 (off), or {} up to {}",
            humantime::format_duration(d),
            humantime::format_duration(SLOW_START_MIN_STEP),
            humantime::format_duration(MAX_SLOW_START),
        ),
    ))
}
