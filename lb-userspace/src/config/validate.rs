//! `Config::validate` and `check_host`: the semantic checks.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use lb_common::RING_SLOTS_PER_SERVICE;

use super::error::invalid;
use super::{CheckType, Config, ConfigError, Encap, HealthCheck, Mode, PortRange};

const MAX_MAGLEV_TABLE_SIZE: u32 = 1_000_003;
/// Largest backend weight (config and API).
pub const MAX_WEIGHT: u32 = 65535;
/// Shortest health-check interval.
const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(10);
/// The ring must give each backend of the largest service at least this many
/// entries on average. Shares are whole entries, so a backend's share is off
/// by up to one entry: 10 entries keeps weights within ~10%, the coarsest
/// that still honours them (Maglev's paper recommends M >= 100 N for 1%).
const MIN_ENTRIES_PER_BACKEND: u32 = 10;
/// Interface names are at most IFNAMSIZ - 1 bytes.
const MAX_IFNAME: usize = 15;
pub(super) const EPHEMERAL_PORTS: &str = "/proc/sys/net/ipv4/ip_local_port_range";

impl Config {
    /// Checks everything that does not need the host; the first problem
    /// found is returned, naming its key path (no line: see `from_yaml`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.interfaces.is_empty() {
            return Err(invalid("interfaces", "at least one interface is required"));
        }
        for (i, name) in self.interfaces.iter().enumerate() {
            let bad = |c: char| c == '/' || c == ':' || c.is_whitespace();
            if name.is_empty()
                || name.len() > MAX_IFNAME
                || name.contains(bad)
                || name == "."
                || name == ".."
            {
                return Err(invalid(
                    format!("interfaces[{i}]"),
                    format!(
                        "invalid interface name {name:?}: 1-{MAX_IFNAME} characters, no '/', ':' or spaces"
                    ),
                ));
            }
            if let Some(j) = self.interfaces[..i].iter().position(|n| n == name) {
                return Err(invalid(
                    format!("interfaces[{i}]"),
                    format!("duplicate interface {name:?} (also interfaces[{j}])"),
                ));
            }
        }
        let ports = self.snat.ports;
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
        for (key, t) in [
            ("tcp", self.flow_timeouts.tcp),
            ("tcp_closing", self.flow_timeouts.tcp_closing),
            ("udp", self.flow_timeouts.udp),
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

        let limits = &self.limits;
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

        // (vip, port, protocol) -> index of the service that owns it.
        let mut vips = HashMap::new();
        let mut names = HashMap::new();
        for (i, s) in self.services.iter().enumerate() {
            let at = |key: &str| format!("services[{i}].{key}");
            check_service_name(&at("name"), &s.name)?;
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
                check_health_check(&at("health_check"), hc)?;
            }
            check_unicast(&at("vip"), s.vip)?;
            if let Some(j) = vips.insert((s.vip, s.port, s.protocol), i) {
                return Err(invalid(
                    at("vip"),
                    format!(
                        "{}:{}/{} is already used by service {:?} (services[{j}])",
                        s.vip, s.port, s.protocol, self.services[j].name
                    ),
                ));
            }

            let mut seen = HashMap::new();
            for (k, b) in s.backends.iter().enumerate() {
                let at = |key: &str| format!("services[{i}].backends[{k}].{key}");
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
                if let Some(j) = seen.insert((b.address, b.port), k) {
                    return Err(invalid(
                        format!("services[{i}].backends[{k}]"),
                        format!(
                            "duplicate backend {}:{} (also backends[{j}])",
                            b.address, b.port
                        ),
                    ));
                }
            }
        }

        // nat mode needs a source address of the VIP's family; tunnel mode
        // one of each backend's family (the outer header's source).
        let snat = [
            ("snat.ipv4", self.snat.ipv4.map(IpAddr::V4), true),
            ("snat.ipv6", self.snat.ipv6.map(IpAddr::V6), false),
        ];
        for (key, addr, v4) in snat {
            if let Some(addr) = addr {
                check_unicast(key, addr)?;
                if let Some(s) = self.services.iter().find(|s| s.vip == addr) {
                    return Err(invalid(
                        key,
                        format!("{addr} is also the VIP of service {:?}", s.name),
                    ));
                }
                continue;
            }
            let family = if v4 { "IPv4" } else { "IPv6" };
            for s in &self.services {
                let need = match s.mode {
                    Mode::Nat => s.vip.is_ipv4() == v4,
                    Mode::Tunnel => s.backends.iter().any(|b| b.address.is_ipv4() == v4),
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

        if self.services.len() as u64 > limits.max_services as u64 {
            return Err(invalid(
                "limits.max_services",
                format!(
                    "{} services configured, above max_services {}",
                    self.services.len(),
                    limits.max_services
                ),
            ));
        }
        let total: usize = self.services.iter().map(|s| s.backends.len()).sum();
        if total as u64 > limits.max_backends as u64 {
            return Err(invalid(
                "limits.max_backends",
                format!(
                    "{total} backends configured in all, above max_backends {}",
                    limits.max_backends
                ),
            ));
        }
        if let Some(s) = self.services.iter().max_by_key(|s| s.backends.len())
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
}

/// Checks that need the running host (not run by `from_yaml`): the snat
/// port range must not overlap the kernel's ephemeral ports, or replies to
/// the host's own connections could be taken for NAT flows and vice versa.
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
    let text = std::fs::read_to_string(EPHEMERAL_PORTS).map_err(|err| ConfigError::Read {
        path: EPHEMERAL_PORTS.into(),
        err,
    })?;
    check_ephemeral_overlap(config.snat.ports, &text)
}

pub(super) fn check_ephemeral_overlap(snat: PortRange, proc_text: &str) -> Result<(), ConfigError> {
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

/// `at` is the key path of the `health_check` mapping.
fn check_health_check(at: &str, hc: &HealthCheck) -> Result<(), ConfigError> {
    let key = |k: &str| format!("{at}.{k}");
    // A key of another check type would be silently ignored: reject it.
    for (name, set, only) in [
        ("path", hc.path.is_some(), CheckType::Http),
        ("expect_status", hc.expect_status.is_some(), CheckType::Http),
        ("expect_body", hc.expect_body.is_some(), CheckType::Http),
        ("send", hc.send.is_some(), CheckType::Udp),
        ("expect", hc.expect.is_some(), CheckType::Udp),
    ] {
        if set && hc.r#type != only {
            return Err(invalid(
                key(name),
                format!("only valid with type {only}, not with type {}", hc.r#type),
            ));
        }
    }
    if let Some(path) = &hc.path {
        if !path.starts_with('/') {
            return Err(invalid(
                key("path"),
                format!("request path {path:?} must start with '/'"),
            ));
        }
        if path.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                key("path"),
                format!("request path {path:?} must not contain spaces or control characters"),
            ));
        }
    }
    if let Some(status) = hc.expect_status
        && !(100..=599).contains(&status)
    {
        return Err(invalid(
            key("expect_status"),
            format!("HTTP status {status} is not in 100-599"),
        ));
    }
    if let Some(body) = &hc.expect_body
        && body.len() > HealthCheck::MAX_HTTP_BODY
    {
        return Err(invalid(
            key("expect_body"),
            format!(
                "{} bytes, longer than the {} bytes of the body that are searched",
                body.len(),
                HealthCheck::MAX_HTTP_BODY
            ),
        ));
    }
    if let Some(send) = &hc.send
        && send.len() > HealthCheck::MAX_UDP_PAYLOAD
    {
        return Err(invalid(
            key("send"),
            format!(
                "{} bytes, larger than a UDP datagram ({} bytes)",
                send.len(),
                HealthCheck::MAX_UDP_PAYLOAD
            ),
        ));
    }
    if hc.port == Some(0) {
        return Err(invalid(key("port"), "check port must be 1-65535"));
    }
    if hc.interval < MIN_CHECK_INTERVAL {
        return Err(invalid(
            key("interval"),
            format!(
                "{:?} is below the minimum {MIN_CHECK_INTERVAL:?}",
                hc.interval
            ),
        ));
    }
    if hc.timeout.is_zero() {
        return Err(invalid(key("timeout"), "must be greater than 0"));
    }
    if hc.timeout > hc.interval {
        return Err(invalid(
            key("timeout"),
            format!(
                "{:?} is longer than the interval ({:?})",
                hc.timeout, hc.interval
            ),
        ));
    }
    for (name, n) in [("rise", hc.rise), ("fall", hc.fall)] {
        if n == 0 {
            return Err(invalid(key(name), "must be at least 1"));
        }
    }
    Ok(())
}

fn check_service_name(path: &str, name: &str) -> Result<(), ConfigError> {
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

fn is_prime(n: u32) -> bool {
    let n = n as u64;
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}
