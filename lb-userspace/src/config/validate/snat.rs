//! `snat`: the port range, the source addresses nat and tunnel modes
//! need, and (on the host) no overlap with the kernel's ephemeral ports;
//! `tunnel_source`, the prefixes tunnel mode may take them from instead.

use std::net::IpAddr;

use super::check_unicast;
use crate::config::error::invalid;
use crate::config::{Config, ConfigError, Mode, PortRange, Prefix};

pub(in crate::config) const EPHEMERAL_PORTS: &str = "/proc/sys/net/ipv4/ip_local_port_range";

pub(super) fn check_ports(ports: PortRange) -> Result<(), ConfigError> {
    if ports.min > ports.max {
        return Err(invalid(
            "snat.ports",
            format!("empty range {ports}: min is greater than max"),
        ));
    }
    if ports.min < 1024 {
        return Err(invalid(
            "snat.ports",
            format!("range {ports} starts below 1024 (privileged ports)"),
        ));
    }
    Ok(())
}

/// nat mode needs a source address of the VIP's family; tunnel mode one
/// of each backend's family (the outer header's source).
pub(super) fn check_addresses(config: &Config) -> Result<(), ConfigError> {
    let snat = [
        ("snat.ipv4", config.snat.ipv4.map(IpAddr::V4), true),
        ("snat.ipv6", config.snat.ipv6.map(IpAddr::V6), false),
    ];
    for (key, addr, v4) in snat {
        if let Some(addr) = addr {
            check_unicast(key, addr)?;
            if let Some(s) = config.services.iter().find(|s| s.vip == addr) {
                return Err(invalid(
                    key,
                    format!("{addr} is also the VIP of service {:?}", s.name),
                ));
            }
            continue;
        }
        let family = if v4 { "IPv4" } else { "IPv6" };
        for s in &config.services {
            let need = match s.mode {
                Mode::Nat => s.vip.is_ipv4() == v4,
                Mode::Tunnel => {
                    let prefix = if v4 {
                        config.tunnel_source.ipv4
                    } else {
                        config.tunnel_source.ipv6
                    };
                    prefix.is_none() && s.backends.iter().any(|b| b.address.is_ipv4() == v4)
                }
                Mode::Dsr => false,
            };
            if need {
                let what = if s.mode == Mode::Nat {
                    format!("uses mode nat with an {family} VIP")
                } else {
                    format!("tunnels to {family} backends (the outer source address)")
                };
                return Err(invalid(
                    key,
                    format!("required: service {:?} {what}", s.name),
                ));
            }
        }
    }
    Ok(())
}

/// The snat range must not overlap the kernel's ephemeral ports, or
/// replies to the host's own connections could be taken for NAT flows and
/// vice versa.
pub(super) fn check_ephemeral_ports(snat: PortRange) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(EPHEMERAL_PORTS).map_err(|err| ConfigError::Read {
        path: EPHEMERAL_PORTS.into(),
        err,
    })?;
    check_ephemeral_overlap(snat, &text)
}

/// `proc_text` is the content of `EPHEMERAL_PORTS`.
pub(in crate::config) fn check_ephemeral_overlap(
    snat: PortRange,
    proc_text: &str,
) -> Result<(), ConfigError> {
    let mut nums = proc_text.split_whitespace().map(str::parse::<u16>);
    let (Some(Ok(lo)), Some(Ok(hi))) = (nums.next(), nums.next()) else {
        return Err(invalid(
            "snat.ports",
            format!("cannot parse {EPHEMERAL_PORTS}: {proc_text:?}"),
        ));
    };
    if snat.min <= hi && lo <= snat.max {
        return Err(invalid(
            "snat.ports",
            format!(
                "{snat} overlaps the kernel's ephemeral port range {lo}-{hi} (net.ipv4.ip_local_port_range): \
                 choose a disjoint range or change the sysctl"
            ),
        ));
    }
    Ok(())
}

/// Prefix lengths `tunnel_source` accepts. IPv4: /30 is the longest with
/// two host bits (an all-zeros and all-ones host part are never used, so
/// at least 2 addresses remain); /16 already gives 65534 sources, more
/// than any NIC has queues, and a wider block only burdens the route back.
/// IPv6: the flow hash varies the last 32 bits, so a prefix shorter than
/// /64 adds nothing; /124 keeps 14 sources.
const TUNNEL_V4_LEN: std::ops::RangeInclusive<u8> = 16..=30;
const TUNNEL_V6_LEN: std::ops::RangeInclusive<u8> = 64..=124;

/// `tunnel_source`: of the right family, a network address of a sensible
/// length, unicast, holding no VIP nor backend.
pub(super) fn check_tunnel_source(config: &Config) -> Result<(), ConfigError> {
    let prefixes = [
        ("tunnel_source.ipv4", config.tunnel_source.ipv4, true),
        ("tunnel_source.ipv6", config.tunnel_source.ipv6, false),
    ];
    for (key, prefix, v4) in prefixes {
        let Some(p) = prefix else { continue };
        check_prefix(key, p, v4)?;
        let vip = config.services.iter().find(|s| p.contains(s.vip));
        if let Some(s) = vip {
            return Err(invalid(
                key,
                format!("{p} holds {}, the VIP of service {:?}", s.vip, s.name),
            ));
        }
        for s in &config.services {
            if let Some(b) = s.backends.iter().find(|b| p.contains(b.address)) {
                return Err(invalid(
                    key,
                    format!("{p} holds {}, a backend of service {:?}", b.address, s.name),
                ));
            }
        }
    }
    Ok(())
}

fn check_prefix(key: &str, p: Prefix, v4: bool) -> Result<(), ConfigError> {
    let (family, lens) = if v4 {
        ("IPv4", TUNNEL_V4_LEN)
    } else {
        ("IPv6", TUNNEL_V6_LEN)
    };
    if p.addr.is_ipv4() != v4 {
        return Err(invalid(key, format!("{p} is not an {family} prefix")));
    }
    if !lens.contains(&p.len) {
        return Err(invalid(
            key,
            format!(
                "{p}: prefix length must be /{} to /{}",
                lens.start(),
                lens.end()
            ),
        ));
    }
    if p.has_host_bits() {
        return Err(invalid(
            key,
            format!(
                "{p} has bits set past /{}: give the prefix's first address",
                p.len
            ),
        ));
    }
    check_unicast(key, p.addr)
}
