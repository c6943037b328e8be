//! `limits`: map sizes that the program can be loaded with, and a config
//! that fits in them.

use lb_common::RING_SLOTS_PER_SERVICE;

use crate::config::error::invalid;
use crate::config::{Config, ConfigError, Limits};

const MAX_MAGLEV_TABLE_SIZE: u32 = 1_000_003;
/// The ring must give each backend of the largest service at least this many
/// entries on average. Shares are whole entries, so a backend's share is off
/// by up to one entry: 10 entries keeps weights within ~10%, the coarsest
/// that still honours them (Maglev's paper recommends M >= 100 N for 1%).
const MIN_ENTRIES_PER_BACKEND: u32 = 10;

/// The sizes alone.
pub(super) fn check_sizes(limits: &Limits) -> Result<(), ConfigError> {
    for (key, value) in [
        ("max_services", limits.max_services),
        ("max_backends", limits.max_backends),
        ("flow_table_size", limits.flow_table_size),
    ] {
        if value == 0 {
            return Err(invalid(format!("limits.{key}"), "must be at least 1"));
        }
    }
    let m = limits.maglev_table_size;
    if !is_prime(m) {
        return Err(invalid(
            "limits.maglev_table_size",
            format!("{m} is not prime (Maglev needs a prime table size, e.g. 65537)"),
        ));
    }
    if m > MAX_MAGLEV_TABLE_SIZE {
        return Err(invalid(
            "limits.maglev_table_size",
            format!("{m} is larger than the maximum {MAX_MAGLEV_TABLE_SIZE}"),
        ));
    }
    // All rings live in one BPF array indexed by u32.
    if RING_SLOTS_PER_SERVICE as u64 * limits.max_services as u64 * m as u64 > u32::MAX as u64 {
        return Err(invalid(
            "limits",
            format!(
                "{RING_SLOTS_PER_SERVICE} x max_services ({}) x maglev_table_size ({m}) ring entries exceed the 2^32 a BPF map can hold",
                limits.max_services
            ),
        ));
    }
    Ok(())
}

/// The config against the sizes: the services and backends that index the
/// maps (see `plan::plan`), and a ring large enough for the largest service.
pub(super) fn check_capacity(config: &Config) -> Result<(), ConfigError> {
    let limits = &config.limits;
    // One entry per service (SERVICES has as many more for the echo
    // entries of VIPs with icmp_echo: at most one per service).
    let services = config.services.len();
    if services as u64 > limits.max_services as u64 {
        return Err(invalid(
            "limits.max_services",
            format!(
                "{services} services configured, above max_services {}",
                limits.max_services
            ),
        ));
    }
    // One entry per backend of each service (backends are distinct within
    // a service; one shared by two services is two entries).
    let backends: usize = config.services.iter().map(|s| s.backends.len()).sum();
    if backends as u64 > limits.max_backends as u64 {
        return Err(invalid(
            "limits.max_backends",
            format!(
                "{backends} backends configured in all, above max_backends {}",
                limits.max_backends
            ),
        ));
    }
    let m = limits.maglev_table_size;
    if let Some(s) = config.services.iter().max_by_key(|s| s.backends.len())
        && (m as u64) < MIN_ENTRIES_PER_BACKEND as u64 * s.backends.len() as u64
    {
        return Err(invalid(
            "limits.maglev_table_size",
            format!(
                "{m} is too small for service {:?} with {} backends: use a prime of at least {MIN_ENTRIES_PER_BACKEND} x backends",
                s.name,
                s.backends.len()
            ),
        ));
    }
    Ok(())
}

fn is_prime(n: u32) -> bool {
    let n = n as u64;
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}
