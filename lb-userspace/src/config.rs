//! The YAML configuration (design.md section 3): schema, defaults and
//! validation.
//!
//! Parsing is serde_yaml (+ serde_path_to_error for the key path of schema
//! errors). serde_yaml keeps no spans, so a second pass with saphyr-parser
//! maps every key path to its line: semantic errors (duplicates, ranges...)
//! name their line too, and syntax errors get saphyr's precise message.
//! A config is validated whole before anything is applied.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use lb_common::RING_SLOTS_PER_SERVICE;
use saphyr_parser::{Event, Parser, ScanError};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// NICs the XDP program attaches to.
    pub interfaces: Vec<String>,
    pub xdp_mode: XdpModeSetting,
    pub admin: Admin,
    pub snat: Snat,
    /// Flow-hash and Maglev seed: identical on every LB node => same choices.
    pub hash_seed: u32,
    pub limits: Limits,
    pub services: Vec<Service>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interfaces: Vec::new(),
            xdp_mode: XdpModeSetting::default(),
            admin: Admin::default(),
            snat: Snat::default(),
            hash_seed: 0x5eed,
            limits: Limits::default(),
            services: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeSetting {
    /// Native (driver) mode, falling back to generic (skb) mode.
    #[default]
    Auto,
    Native,
    Generic,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Admin {
    /// HTTP: /metrics, /api/v1/..., / (dashboard).
    pub listen: SocketAddr,
    /// Bearer token for mutating API calls (not supported yet).
    pub token_file: Option<PathBuf>,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: SocketAddr::from(([127, 0, 0, 1], 9100)),
            token_file: None,
        }
    }
}

/// Source address and ports toward backends in nat mode.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Snat {
    pub ipv4: Option<Ipv4Addr>,
    pub ports: PortRange,
}

/// Inclusive port range, written `MIN-MAX` in YAML.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortRange {
    pub min: u16,
    pub max: u16,
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange {
            min: 20000,
            max: 29999,
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parsed = s
            .split_once('-')
            .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
        let (min, max) = parsed.ok_or_else(|| {
            format!("invalid port range {s:?}: expected MIN-MAX, like 20000-29999")
        })?;
        Ok(PortRange { min, max })
    }
}

impl TryFrom<String> for PortRange {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<PortRange> for String {
    fn from(r: PortRange) -> String {
        r.to_string()
    }
}

/// Map sizes, fixed when the XDP program is loaded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_services: u32,
    pub max_backends: u32,
    /// Maglev ring size M (prime).
    pub maglev_table_size: u32,
    pub flow_table_size: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_services: 256,
            max_backends: 4096,
            maglev_table_size: 65537,
            flow_table_size: 1_048_576,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Used as a metrics label value and a URL path segment.
    pub name: String,
    pub vip: IpAddr,
    /// 0 = all ports (not supported yet).
    pub port: u16,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub hash: HashMode,
    /// None = backends are always up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    pub backends: Vec<BackendConfig>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

impl Protocol {
    /// IP protocol number (`lb_common::PROTO_*`).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => lb_common::PROTO_TCP,
            Protocol::Udp => lb_common::PROTO_UDP,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Nat,
    Dsr,
    Tunnel,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HashMode {
    #[default]
    FiveTuple,
    /// Client affinity: every flow of a client goes to the same backend.
    SourceIp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheck {
    pub r#type: CheckType,
    /// HTTP request path.
    pub path: Option<String>,
    pub expect_status: Option<u16>,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive successes to go up, failures to go down.
    pub rise: u32,
    pub fall: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            r#type: CheckType::Tcp,
            path: None,
            expect_status: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 3,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckType {
    Tcp,
    Http,
    Udp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub address: IpAddr,
    pub port: u16,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub state: BackendState,
}

fn default_weight() -> u32 {
    100
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    #[default]
    Ready,
    /// Keeps its flows, gets no new ones.
    Drain,
    /// Loses its flows too.
    Maint,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {err}", .path.display())]
    Read { path: PathBuf, err: std::io::Error },
    /// Any other error, with the file it was found in.
    #[error("{}: {err}", .path.display())]
    InFile {
        path: PathBuf,
        err: Box<ConfigError>,
    },
    #[error("YAML syntax error: {message}{}", Loc(Some(*.line), Some(*.column)))]
    Syntax {
        message: String,
        line: usize,
        column: usize,
    },
    /// Unknown key, wrong type, bad or conflicting value.
    #[error("{path}: {message}{}", Loc(*.line, *.column))]
    Invalid {
        path: String,
        message: String,
        line: Option<usize>,
        column: Option<usize>,
    },
    #[error("{path}: {what} is not supported yet{}", Loc(*.line, None))]
    Unsupported {
        path: String,
        what: String,
        line: Option<usize>,
    },
}

/// " (line L, column C)", or as much of it as is known.
struct Loc(Option<usize>, Option<usize>);

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Loc(Some(l), Some(c)) => write!(f, " (line {l}, column {c})"),
            Loc(Some(l), None) => write!(f, " (line {l})"),
            _ => Ok(()),
        }
    }
}

impl ConfigError {
    /// Line (1-based) of the offending key, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::InFile { err, .. } => err.line(),
            ConfigError::Syntax { line, .. } => Some(*line),
            ConfigError::Invalid { line, .. } | ConfigError::Unsupported { line, .. } => *line,
        }
    }

    fn with_line(mut self, lines: &Lines) -> Self {
        if let ConfigError::Invalid {
            path,
            line: line @ None,
            ..
        }
        | ConfigError::Unsupported {
            path,
            line: line @ None,
            ..
        } = &mut self
        {
            *line = lines.find(path).map(|(l, _)| l);
        }
        self
    }
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.into(),
        message: message.into(),
        line: None,
        column: None,
    }
}

fn unsupported(path: impl Into<String>, what: impl Into<String>) -> ConfigError {
    ConfigError::Unsupported {
        path: path.into(),
        what: what.into(),
        line: None,
    }
}

const MAX_MAGLEV_TABLE_SIZE: u32 = 1_000_003;
/// The ring must give each backend of the largest service at least this many
/// entries on average. Shares are whole entries, so a backend's share is off
/// by up to one entry: 10 entries keeps weights within ~10%, the coarsest
/// that still honours them (Maglev's paper recommends M >= 100 N for 1%).
const MIN_ENTRIES_PER_BACKEND: u32 = 10;
/// Interface names are at most IFNAMSIZ - 1 bytes.
const MAX_IFNAME: usize = 15;
const EPHEMERAL_PORTS: &str = "/proc/sys/net/ipv4/ip_local_port_range";

impl Config {
    /// Parses and validates a whole config.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        let lines = Lines::scan(text);
        let de = serde_yaml::Deserializer::from_str(text);
        let config: Config = match serde_path_to_error::deserialize(de) {
            Ok(config) => config,
            Err(e) => {
                return Err(match lines {
                    // saphyr's message and position are the precise ones.
                    Err(e) => ConfigError::Syntax {
                        message: e.info().to_string(),
                        line: e.marker().line(),
                        column: e.marker().col() + 1,
                    },
                    Ok(lines) => schema_error(e, &lines),
                });
            }
        };
        // serde_yaml accepted it: a saphyr failure only costs line numbers.
        let lines = lines.unwrap_or_default();
        config.validate().map_err(|e| e.with_line(&lines))?;
        Ok(config)
    }

    /// Reads and validates `path`; errors name the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Read {
            path: path.into(),
            err,
        })?;
        Config::from_yaml(&text).map_err(|err| ConfigError::InFile {
            path: path.into(),
            err: Box::new(err),
        })
    }

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
        if self.admin.token_file.is_some() {
            return Err(unsupported(
                "admin.token_file",
                "API authentication (admin.token_file)",
            ));
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
        if let Some(ip) = self.snat.ipv4 {
            check_unicast("snat.ipv4", ip)?;
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
            if s.port == 0 {
                return Err(unsupported(at("port"), "port 0 (a VIP on all ports)"));
            }
            match s.mode {
                Mode::Nat => {}
                Mode::Dsr => return Err(unsupported(at("mode"), "mode dsr")),
                Mode::Tunnel => return Err(unsupported(at("mode"), "mode tunnel")),
            }
            if s.health_check.is_some() {
                return Err(unsupported(at("health_check"), "health checking"));
            }
            let vip = match s.vip {
                IpAddr::V4(v4) => v4,
                IpAddr::V6(v6) => {
                    return Err(unsupported(at("vip"), format!("an IPv6 VIP ({v6})")));
                }
            };
            check_unicast(&at("vip"), vip)?;
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
                if b.address.is_ipv4() != s.vip.is_ipv4() {
                    return Err(unsupported(
                        at("address"),
                        "a backend whose address family differs from its VIP's",
                    ));
                }
                match b.address {
                    IpAddr::V4(v4) => check_unicast(&at("address"), v4)?,
                    IpAddr::V6(_) => {
                        return Err(unsupported(at("address"), "an IPv6 backend address"));
                    }
                }
                if b.port == 0 {
                    return Err(invalid(at("port"), "backend port must be 1-65535"));
                }
                if b.weight > 65535 {
                    return Err(invalid(
                        at("weight"),
                        format!("weight {} is above the maximum 65535", b.weight),
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

        // Every service is nat over IPv4 for now: they all need the address.
        if let Some(i) = self
            .services
            .iter()
            .position(|s| s.mode == Mode::Nat && s.vip.is_ipv4())
        {
            let Some(snat) = self.snat.ipv4 else {
                return Err(invalid(
                    "snat.ipv4",
                    format!(
                        "required: service {:?} uses mode nat with an IPv4 VIP",
                        self.services[i].name
                    ),
                ));
            };
            if let Some(s) = self.services.iter().find(|s| s.vip == IpAddr::V4(snat)) {
                return Err(invalid(
                    "snat.ipv4",
                    format!("{snat} is also the VIP of service {:?}", s.name),
                ));
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
    if !config.services.iter().any(|s| s.mode == Mode::Nat) {
        return Ok(());
    }
    let text = std::fs::read_to_string(EPHEMERAL_PORTS).map_err(|err| ConfigError::Read {
        path: EPHEMERAL_PORTS.into(),
        err,
    })?;
    check_ephemeral_overlap(config.snat.ports, &text)
}

fn check_ephemeral_overlap(snat: PortRange, proc_text: &str) -> Result<(), ConfigError> {
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

fn check_unicast(path: &str, ip: Ipv4Addr) -> Result<(), ConfigError> {
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() {
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

/// A serde error as "path: message (line, column)". serde_yaml's own text
/// is "<its path>: <message> at line L column C"; keep only the message.
fn schema_error(e: serde_path_to_error::Error<serde_yaml::Error>, lines: &Lines) -> ConfigError {
    let mut path = e.path().to_string();
    let inner = e.into_inner();
    let mut message = inner.to_string();
    let mut pos = inner.location().map(|l| (l.line(), l.column()));
    if let Some((l, c)) = pos {
        message = message.replacen(&format!(" at line {l} column {c}"), "", 1);
    }
    if let Some((head, rest)) = message.split_once(": ")
        && !head.contains(' ')
        && path.starts_with(head)
    {
        message = rest.to_string();
    }
    if message.starts_with("duplicate field")
        && let Some((p, l, c)) = &lines.duplicate
    {
        // serde_yaml only knows the enclosing mapping.
        (path, pos) = (p.clone(), Some((*l, *c)));
    } else if let Some(&exact) = lines.keys.get(&path) {
        // The key's own position beats the enclosing node's.
        pos = Some(exact);
    }
    if path == "." {
        path = "(top level)".into();
    }
    ConfigError::Invalid {
        path,
        message,
        line: pos.map(|p| p.0),
        column: pos.map(|p| p.1),
    }
}

/// Position (line, column, both 1-based) of every key path in the first
/// document, like `services[1].backends[0].port`, as serde_path_to_error
/// spells paths; sequence items map to where the item starts.
#[derive(Debug, Default)]
struct Lines {
    keys: HashMap<String, (usize, usize)>,
    /// First key that appears twice in one mapping.
    duplicate: Option<(String, usize, usize)>,
}

struct Frame {
    path: String,
    /// A complex (non-scalar) mapping key, which gets no path of its own.
    is_key: bool,
    kind: Kind,
}

enum Kind {
    /// `key`: the key whose value comes next (None: a key comes next).
    Map {
        key: Option<String>,
        seen: HashSet<String>,
    },
    Seq {
        next: usize,
    },
}

impl Lines {
    fn scan(text: &str) -> Result<Lines, ScanError> {
        let mut lines = Lines::default();
        let mut stack: Vec<Frame> = Vec::new();
        for event in Parser::new_from_str(text) {
            let (event, span) = event?;
            let pos = (span.start.line(), span.start.col() + 1);
            let starts = matches!(event, Event::MappingStart(..) | Event::SequenceStart(..));
            match event {
                Event::DocumentEnd => break,
                Event::MappingEnd | Event::SequenceEnd => {
                    if stack.pop().is_some_and(|f| f.is_key) {
                        if let Some(Frame {
                            kind: Kind::Map { key, .. },
                            ..
                        }) = stack.last_mut()
                        {
                            *key = Some("?".into());
                        }
                    } else {
                        value_done(&mut stack);
                    }
                }
                Event::Scalar(..)
                | Event::Alias(_)
                | Event::MappingStart(..)
                | Event::SequenceStart(..) => {
                    // Where this node goes: a key of its mapping, or a value at `path`.
                    let (path, is_key) = match stack.last_mut() {
                        None => (String::new(), false),
                        Some(Frame {
                            path,
                            kind:
                                Kind::Map {
                                    key: key @ None,
                                    seen,
                                },
                            ..
                        }) => match &event {
                            Event::Scalar(k, ..) => {
                                let p = join(path, k);
                                if !seen.insert(k.to_string()) && lines.duplicate.is_none() {
                                    lines.duplicate = Some((p.clone(), pos.0, pos.1));
                                }
                                lines.keys.entry(p).or_insert(pos);
                                *key = Some(k.to_string());
                                continue;
                            }
                            Event::Alias(_) => {
                                *key = Some("?".into());
                                continue;
                            }
                            _ => (join(path, "?"), true),
                        },
                        Some(Frame {
                            path,
                            kind: Kind::Map { key: Some(k), .. },
                            ..
                        }) => (join(path, k), false),
                        Some(Frame {
                            path,
                            kind: Kind::Seq { next },
                            ..
                        }) => (format!("{path}[{next}]"), false),
                    };
                    lines.keys.entry(path.clone()).or_insert(pos);
                    if starts {
                        let kind = if matches!(event, Event::MappingStart(..)) {
                            Kind::Map {
                                key: None,
                                seen: HashSet::new(),
                            }
                        } else {
                            Kind::Seq { next: 0 }
                        };
                        stack.push(Frame { path, is_key, kind });
                    } else {
                        value_done(&mut stack);
                    }
                }
                _ => {}
            }
        }
        Ok(lines)
    }

    /// Position of `path`, or of its nearest ancestor present in the file.
    fn find(&self, mut path: &str) -> Option<(usize, usize)> {
        loop {
            if let Some(&pos) = self.keys.get(path) {
                return Some(pos);
            }
            path = &path[..path.rfind(['.', '['])?];
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A value just ended: its mapping now expects a key, its sequence the next item.
fn value_done(stack: &mut [Frame]) {
    match stack.last_mut().map(|f| &mut f.kind) {
        Some(Kind::Map { key, .. }) => *key = None,
        Some(Kind::Seq { next }) => *next += 1,
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Strips the common indentation, so YAML can be written inline; line 1
    /// is the first line after the opening quote.
    fn yaml(text: &str) -> String {
        let text = text.strip_prefix('\n').unwrap_or(text);
        let indent = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.len() - l.trim_start().len())
            .min();
        text.lines()
            .map(|l| l.get(indent.unwrap_or(0)..).unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n")
    }

    const BASE: &str = "
        interfaces: [eth0]
        snat: { ipv4: 198.18.1.1 }
        services:
          - name: web
            vip: 198.18.100.10
            port: 80
            backends:
              - { address: 198.18.1.11, port: 8080 }
              - { address: 198.18.1.12, port: 8080 }
    ";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(&yaml(text))
    }

    /// The error's message must contain every one of `parts`.
    #[track_caller]
    fn assert_err(text: &str, parts: &[&str]) {
        let msg = parse(text)
            .expect_err("config should be rejected")
            .to_string();
        println!("{msg}");
        for part in parts {
            assert!(msg.contains(part), "{msg:?} lacks {part:?}");
        }
    }

    /// BASE with `from` replaced by `to` (which must be present).
    fn base_with(from: &str, to: &str) -> String {
        let base = yaml(BASE);
        assert!(base.contains(from), "{from:?}");
        base.replacen(from, to, 1)
    }

    #[test]
    fn shipped_configs_are_valid() {
        let demo = Config::from_yaml(include_str!("../../config/demo.yaml")).unwrap();
        assert_eq!(demo.interfaces, ["lbc", "lbb"]);
        assert_eq!(demo.snat.ipv4, Some(Ipv4Addr::new(198, 18, 1, 1)));
        assert_eq!(demo.limits.flow_table_size, 65536);
        assert_eq!(demo.services.len(), 2);
        assert_eq!(demo.services[0].backends.len(), 3);
        assert_eq!(demo.services[1].protocol, Protocol::Udp);
        assert_eq!(demo.services[1].backends[1].port, 5353);
        let example = Config::from_yaml(include_str!("../../config/example.yaml")).unwrap();
        assert_eq!(example.services[0].backends[2].state, BackendState::Drain);
        assert_eq!(example.services[1].hash, HashMode::SourceIp);
    }

    #[test]
    fn minimal_config_takes_defaults() {
        let c = parse(BASE).unwrap();
        assert_eq!(c.xdp_mode, XdpModeSetting::Auto);
        assert_eq!(c.admin, Admin::default());
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9100");
        assert_eq!(
            c.snat.ports,
            PortRange {
                min: 20000,
                max: 29999
            }
        );
        assert_eq!(c.hash_seed, 0x5eed);
        assert_eq!(c.limits, Limits::default());
        let s = &c.services[0];
        assert_eq!(
            (s.protocol, s.mode, s.hash, s.health_check.is_none()),
            (Protocol::Tcp, Mode::Nat, HashMode::FiveTuple, true)
        );
        assert_eq!(
            (s.backends[0].weight, s.backends[0].state),
            (100, BackendState::Ready)
        );
        assert_eq!(HealthCheck::default().timeout, Duration::from_millis(500));
    }

    #[test]
    fn values_parse() {
        let c = parse(&format!(
            "{}\nxdp_mode: generic\nhash_seed: 0xdead\nlimits: {{ maglev_table_size: 251 }}",
            yaml(&base_with(
                "port: 8080 }\n",
                "port: 8080, weight: 0, state: maint }\n"
            ))
        ))
        .unwrap();
        assert_eq!(c.xdp_mode, XdpModeSetting::Generic);
        assert_eq!(c.hash_seed, 0xdead);
        assert_eq!(c.limits.maglev_table_size, 251);
        assert_eq!(
            (
                c.services[0].backends[0].weight,
                c.services[0].backends[0].state
            ),
            (0, BackendState::Maint)
        );
        // Supported already: source-ip hashing and drain.
        let c = parse(&base_with("port: 80\n", "port: 80\n    hash: source-ip\n")).unwrap();
        assert_eq!(c.services[0].hash, HashMode::SourceIp);
        parse(&base_with("port: 8080 }", "port: 8080, state: drain }")).unwrap();
        // A round trip through YAML gives the same config.
        let text = serde_yaml::to_string(&c).unwrap();
        assert_eq!(Config::from_yaml(&text).unwrap(), c);
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        assert_err(
            "interfaces: [eth0\nservices: []",
            &["YAML syntax error", "line 2"],
        );
        assert_err(
            "interfaces: [eth0]\nservices:\n  - name: a\n   port: 7\n",
            &["YAML syntax error", "line 4"],
        );
    }

    #[test]
    fn unknown_key_names_path_and_line() {
        assert_err(
            &base_with("port: 80\n", "port: 80\n    colour: blue\n"),
            &["services[0].colour", "unknown field `colour`", "line 7"],
        );
        assert_err(
            &format!("{}\nsnats: {{}}", yaml(BASE)),
            &["snats", "unknown field", "line 11"],
        );
        assert_err(
            &base_with("port: 8080 }", "port: 8080, wieght: 5 }"),
            &["services[0].backends[0].wieght", "line 8"],
        );
    }

    #[test]
    fn wrong_type_or_value_names_path_and_line() {
        assert_err(
            &base_with("port: 80", "port: eighty"),
            &["services[0].port", "invalid type", "line 6"],
        );
        assert_err(
            &base_with("port: 80", "port: 70000"),
            &["services[0].port", "expected u16", "line 6"],
        );
        assert_err(
            &base_with("198.18.100.10", "198.18.100"),
            &["services[0].vip", "invalid IP address", "line 5"],
        );
        assert_err(
            &base_with("port: 80", "port: 80\n    mode: magic"),
            &["services[0].mode", "unknown variant `magic`", "line 7"],
        );
        assert_err(
            &base_with("1.1 }", "1.1, ports: 2000 }"),
            &["snat.ports", "invalid port range \"2000\"", "line 2"],
        );
        assert_err(
            &base_with(
                "snat: { ipv4: 198.18.1.1 }",
                "snat:\n  ipv4: 198.18.1.1\n  ports: 30000..40000",
            ),
            &["snat.ports", "expected MIN-MAX", "line 4"],
        );
        assert_err(
            &base_with("name: web\n    ", ""),
            &["services[0]", "missing field `name`", "line 4"],
        );
        assert_err(
            "interfaces: eth0",
            &["interfaces", "invalid type", "line 1"],
        );
    }

    #[test]
    fn duplicate_key_names_its_line() {
        assert_err(
            &base_with("port: 80\n", "port: 80\n    port: 81\n"),
            &["services[0].port", "duplicate field", "line 7"],
        );
    }

    #[test]
    fn interfaces_required_and_unique() {
        assert_err(
            &base_with("[eth0]", "[]"),
            &["interfaces: at least one interface", "line 1"],
        );
        assert_err(
            &base_with("interfaces: [eth0]\n", ""),
            &["interfaces: at least one"],
        );
        assert_err(
            &base_with("[eth0]", "[eth0, eth1, eth0]"),
            &["interfaces[2]", "duplicate interface \"eth0\"", "line 1"],
        );
        assert_err(
            &base_with("[eth0]", "[\"eth 0\"]"),
            &["interfaces[0]", "invalid interface name"],
        );
        assert_err(
            &base_with("[eth0]", "[averyveryverylongname]"),
            &["interfaces[0]", "invalid interface name"],
        );
    }

    fn two_services(second: &str) -> String {
        format!("{}\n  - {second}", yaml(BASE))
    }

    #[test]
    fn service_names() {
        assert_err(
            &base_with("name: web", "name: \"\""),
            &["services[0].name", "must not be empty", "line 4"],
        );
        assert_err(
            &base_with("name: web", "name: web/api"),
            &[
                "services[0].name",
                "invalid service name \"web/api\"",
                "line 4",
            ],
        );
        assert_err(
            &base_with("name: web", "name: \"..\""),
            &["services[0].name", "invalid service name"],
        );
        assert_err(
            &two_services("{ name: web, vip: 198.18.100.11, port: 80, backends: [] }"),
            &[
                "services[1].name",
                "duplicate service name \"web\" (also services[0])",
                "line 11",
            ],
        );
        parse(&two_services(
            "{ name: Web_2.a-b, vip: 198.18.100.11, port: 80, backends: [] }",
        ))
        .unwrap();
    }

    #[test]
    fn duplicate_vip() {
        assert_err(
            &two_services(
                "{ name: web2, vip: 198.18.100.10, port: 80, protocol: tcp, backends: [] }",
            ),
            &[
                "services[1].vip",
                "198.18.100.10:80/tcp is already used by service \"web\"",
                "line 11",
            ],
        );
        // Another port or protocol on the same address is another service.
        parse(&two_services(
            "{ name: web2, vip: 198.18.100.10, port: 81, backends: [] }",
        ))
        .unwrap();
        parse(&two_services(
            "{ name: web2, vip: 198.18.100.10, port: 80, protocol: udp, backends: [] }",
        ))
        .unwrap();
    }

    #[test]
    fn backends() {
        assert_err(
            &base_with("198.18.1.12, port: 8080", "198.18.1.11, port: 8080"),
            &[
                "services[0].backends[1]: duplicate backend 198.18.1.11:8080 (also backends[0])",
                "line 9",
            ],
        );
        parse(&base_with(
            "198.18.1.12, port: 8080",
            "198.18.1.11, port: 8081",
        ))
        .unwrap();
        assert_err(
            &base_with("port: 8080 }", "port: 8080, weight: 65536 }"),
            &["services[0].backends[0].weight", "65535", "line 8"],
        );
        parse(&base_with("port: 8080 }", "port: 8080, weight: 65535 }")).unwrap();
        assert_err(
            &base_with("port: 8080 }", "port: 0 }"),
            &["services[0].backends[0].port", "1-65535", "line 8"],
        );
        assert_err(
            &base_with("198.18.1.11", "0.0.0.0"),
            &[
                "services[0].backends[0].address",
                "not a usable unicast",
                "line 8",
            ],
        );
        assert_err(
            &base_with("198.18.100.10", "224.0.0.1"),
            &["services[0].vip", "not a usable unicast", "line 5"],
        );
    }

    #[test]
    fn snat_ports() {
        let snat = |ports: &str| {
            base_with(
                "{ ipv4: 198.18.1.1 }",
                &format!("{{ ipv4: 198.18.1.1, ports: {ports} }}"),
            )
        };
        assert_err(
            &snat("30000-20000"),
            &["snat.ports", "min is greater than max", "line 2"],
        );
        assert_err(&snat("1000-2000"), &["snat.ports", "below 1024", "line 2"]);
        assert_eq!(
            parse(&snat("1024-1024")).unwrap().snat.ports,
            PortRange {
                min: 1024,
                max: 1024
            }
        );
    }

    #[test]
    fn snat_ipv4_required_for_nat_over_ipv4() {
        assert_err(
            &base_with("snat: { ipv4: 198.18.1.1 }\n", ""),
            &["snat.ipv4: required", "service \"web\" uses mode nat"],
        );
        assert_err(
            &base_with("snat: { ipv4: 198.18.1.1 }", "snat: { ports: 20000-20100 }"),
            &["snat.ipv4: required", "line 2"],
        );
        assert_err(
            &base_with("ipv4: 198.18.1.1", "ipv4: 198.18.100.10"),
            &["snat.ipv4", "also the VIP of service \"web\""],
        );
        // No service: no snat needed.
        parse("interfaces: [eth0]").unwrap();
    }

    fn limits(text: &str) -> String {
        format!("{}\nlimits: {{ {text} }}", yaml(BASE))
    }

    #[test]
    fn limit_checks() {
        assert_err(
            &limits("maglev_table_size: 65536"),
            &["limits.maglev_table_size", "not prime", "line 11"],
        );
        assert_err(
            &limits("maglev_table_size: 1000033"),
            &[
                "limits.maglev_table_size",
                "larger than the maximum 1000003",
            ],
        );
        assert_err(
            &limits("maglev_table_size: 19"),
            &[
                "limits.maglev_table_size",
                "too small for service \"web\" with 2 backends",
            ],
        );
        parse(&limits("maglev_table_size: 23")).unwrap();
        assert_err(
            &limits("flow_table_size: 0"),
            &["limits.flow_table_size", "at least 1"],
        );
        assert_err(
            &limits("max_backends: 1"),
            &["limits.max_backends", "2 backends configured", "line 11"],
        );
        assert_err(
            &two_services("{ name: b, vip: 198.18.100.11, port: 80, backends: [] }").replacen(
                "interfaces",
                "limits: { max_services: 1 }\ninterfaces",
                1,
            ),
            &["limits.max_services", "2 services configured", "line 1"],
        );
        assert_err(
            &limits("max_services: 65536, maglev_table_size: 65537"),
            &["limits:", "exceed the 2^32"],
        );
    }

    #[test]
    fn not_implemented_yet() {
        let cases = [
            (
                base_with(
                    "port: 80\n",
                    "port: 80\n    health_check: { type: http, path: /healthz }\n",
                ),
                "services[0].health_check: health checking is not supported yet (line 7)",
            ),
            (
                base_with("port: 80\n", "port: 80\n    mode: dsr\n"),
                "services[0].mode: mode dsr is not supported yet (line 7)",
            ),
            (
                base_with("port: 80\n", "port: 80\n    mode: tunnel\n"),
                "services[0].mode: mode tunnel is not supported yet (line 7)",
            ),
            (
                base_with("198.18.100.10", "2001:db8::10"),
                "services[0].vip: an IPv6 VIP (2001:db8::10) is not supported yet (line 5)",
            ),
            (
                base_with("198.18.1.12", "\"2001:db8::12\""),
                "services[0].backends[1].address: a backend whose address family differs from its VIP's is not supported yet (line 9)",
            ),
            (
                base_with("port: 80", "port: 0"),
                "services[0].port: port 0 (a VIP on all ports) is not supported yet (line 6)",
            ),
            (
                format!("{}\nadmin: {{ token_file: /etc/xdplb/token }}", yaml(BASE)),
                "admin.token_file: API authentication (admin.token_file) is not supported yet (line 11)",
            ),
        ];
        for (text, expect) in cases {
            assert_err(&text, &[expect]);
        }
    }

    #[test]
    fn load_names_the_file() {
        let missing = Path::new("/nonexistent/xdplb.yaml");
        let msg = Config::load(missing).unwrap_err().to_string();
        assert!(
            msg.starts_with("cannot read /nonexistent/xdplb.yaml: "),
            "{msg}"
        );

        let path =
            std::env::temp_dir().join(format!("xdplb-config-test-{}.yaml", std::process::id()));
        std::fs::write(&path, yaml(&base_with("port: 80", "port: 0"))).unwrap();
        let err = Config::load(&path).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(err.line(), Some(6));
        assert_eq!(
            err.to_string(),
            format!(
                "{}: services[0].port: port 0 (a VIP on all ports) is not supported yet (line 6)",
                path.display()
            )
        );
    }

    #[test]
    fn validate_without_text_names_the_path() {
        let mut c = parse(BASE).unwrap();
        c.services[0].backends[1].weight = 70000;
        let err = c.validate().unwrap_err();
        assert_eq!(err.line(), None);
        assert!(
            err.to_string()
                .starts_with("services[0].backends[1].weight: weight 70000"),
            "{err}"
        );
    }

    #[test]
    fn ephemeral_port_overlap() {
        let snat = PortRange {
            min: 20000,
            max: 29999,
        };
        check_ephemeral_overlap(snat, "32768\t60999\n").unwrap();
        check_ephemeral_overlap(snat, "1024\t19999\n").unwrap();
        let msg = check_ephemeral_overlap(snat, "29999\t60999\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(
                "snat.ports: 20000-29999 overlaps the kernel's ephemeral port range 29999-60999"
            ),
            "{msg}"
        );
        assert!(check_ephemeral_overlap(snat, "10000 20000").is_err());
        assert!(check_ephemeral_overlap(snat, "garbage").is_err());
        // The host's own range: only the outcome depends on the host.
        match check_host(&parse(BASE).unwrap()) {
            Ok(()) => {}
            Err(e) => assert!(
                e.to_string().contains("snat.ports") || e.to_string().contains(EPHEMERAL_PORTS),
                "{e}"
            ),
        }
    }

    #[test]
    fn line_map_follows_paths() {
        let text = yaml(BASE);
        let lines = Lines::scan(&text).unwrap();
        assert_eq!(lines.find("interfaces"), Some((1, 1)));
        assert_eq!(lines.find("interfaces[0]"), Some((1, 14)));
        assert_eq!(lines.find("services[0].port"), Some((6, 5)));
        assert_eq!(lines.find("services[0].backends[1].port"), Some((9, 33)));
        assert_eq!(lines.find("services[0].backends[7]"), Some((7, 5)));
        assert_eq!(lines.find("limits.flow_table_size"), None);
        // Complex keys and aliases do not confuse it.
        let lines = Lines::scan("? [a, b]\n: 1\nx: &v { y: 2 }\nz: *v\nw: 3\n").unwrap();
        assert_eq!(lines.find("w"), Some((5, 1)));
        assert_eq!(lines.find("x.y"), Some((3, 9)));
    }
}
