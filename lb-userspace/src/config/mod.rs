//! The YAML configuration (docs/design.md section 3): schema, defaults and
//! validation.
//!
//! Parsing is serde_yaml (+ serde_path_to_error for the key path of schema
//! errors, see `yaml_error`). serde_yaml keeps no spans, so when a semantic
//! error (duplicates, ranges...) is found, a pass with saphyr-parser maps
//! its key path to its line. A config is validated whole before anything
//! is applied.

mod error;
mod lines;
mod prefix;
#[cfg(test)]
mod tests;
mod validate;
mod yaml_error;

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

pub use error::ConfigError;
pub use prefix::{Prefix, TunnelSource};
pub use validate::{MAX_WEIGHT, check_host};

use lines::Lines;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// NICs the XDP program attaches to.
    pub interfaces: Vec<String>,
    pub xdp_mode: XdpModeSetting,
    pub admin: Admin,
    pub snat: Snat,
    /// Tunnel mode: prefixes the outer source addresses are drawn from,
    /// per flow; none: `snat.ipv4`/`snat.ipv6`.
    #[serde(skip_serializing_if = "TunnelSource::is_none")]
    pub tunnel_source: TunnelSource,
    /// Flow-hash and Maglev seed: identical on every LB node => same choices.
    pub hash_seed: u32,
    pub limits: Limits,
    /// Where maps and XDP links are pinned (on a bpf filesystem), so that a
    /// restart, even after SIGKILL, adopts the flows. `null`: no pinning.
    pub pin_dir: Option<PathBuf>,
    /// What SIGINT/SIGTERM does to the data plane.
    pub on_exit: OnExit,
    pub flow_timeouts: FlowTimeouts,
    /// UDP destination port of GUE-encapsulated packets (tunnel mode,
    /// `encap: gue`); backends' decapsulators listen on it.
    pub gue_port: u16,
    /// TCP RSTs and ICMP port unreachables (`on_empty: reject`) sent per
    /// second, per CPU; 0 sends none.
    pub reject_limit: u16,
    /// Where the daemon keeps files of its own at run time: the BGP
    /// daemon's config, control socket and pid file.
    pub run_dir: PathBuf,
    /// VIP announcement over BGP (docs/ha.md); none: nothing is announced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bgp: Option<Bgp>,
    /// Flow sync with the other LB nodes (docs/ha.md); none: off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_sync: Option<FlowSync>,
    pub services: Vec<Service>,
}

/// Default `run_dir`.
pub const DEFAULT_RUN_DIR: &str = "/run/xdplb";

/// `bgp`: the daemon runs BIRD 2 and announces each usable VIP to `peers`
/// (docs/ha.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bgp {
    /// 1-4294967294 (4-byte AS numbers).
    pub local_as: u32,
    /// Default: the first IPv4 address of the first interface, at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_id: Option<Ipv4Addr>,
    /// At least one; IPv4 peers get the IPv4 VIPs, IPv6 peers the IPv6 ones.
    pub peers: Vec<BgpPeer>,
    /// BGP hold time: 3 s (BGP's smallest non-zero one) to 65535 s, whole
    /// seconds. A peer that hears nothing for this long drops the session
    /// and the routes learnt over it.
    #[serde(default = "default_hold_time", with = "humantime_serde")]
    pub hold_time: Duration,
}

fn default_hold_time() -> Duration {
    Duration::from_secs(3)
}

/// One BGP neighbour (usually the router in front of the LB nodes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpPeer {
    pub address: IpAddr,
    /// The peer's AS number.
    #[serde(rename = "as")]
    pub asn: u32,
    #[serde(default = "default_bgp_port")]
    pub port: u16,
}

fn default_bgp_port() -> u16 {
    179
}

/// `flow_sync`: the nodes of a tier tell each other which nat flows each
/// created, so that a node that receives a packet of another node's flow
/// (after that node withdrew its VIPs) hands it to the owner (docs/ha.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSync {
    /// This node's address on the segment the nodes share: the sync
    /// datagrams leave from it, and the peers list it.
    pub address: IpAddr,
    /// The other nodes' addresses (same segment, same family), at most 16.
    pub peers: Vec<IpAddr>,
    /// UDP port of the sync datagrams, the same on every node.
    #[serde(default = "default_sync_port")]
    pub port: u16,
    /// A peer silent this long is down: packets are no longer handed to it.
    #[serde(default = "default_dead_after", with = "humantime_serde")]
    pub dead_after: Duration,
}

/// Default `flow_sync.port`.
pub const DEFAULT_SYNC_PORT: u16 = 6082;

fn default_sync_port() -> u16 {
    DEFAULT_SYNC_PORT
}

fn default_dead_after() -> Duration {
    Duration::from_secs(3)
}

/// Default `gue_port`.
pub const DEFAULT_GUE_PORT: u16 = 6080;

/// Default `reject_limit`: the kernel's own ICMP error budget
/// (net.ipv4.icmp_msgs_per_sec).
pub const DEFAULT_REJECT_LIMIT: u16 = 1000;

/// How long a flow may be silent before it is over: its next packet is
/// balanced afresh, and the daemon deletes the entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowTimeouts {
    #[serde(with = "humantime_serde")]
    pub tcp: Duration,
    /// After a FIN or RST went by.
    #[serde(with = "humantime_serde")]
    pub tcp_closing: Duration,
    /// UDP (no connection to follow: idle time only).
    #[serde(with = "humantime_serde")]
    pub udp: Duration,
    /// A flow whose client has not yet proven real (TCP: handshake not
    /// completed; UDP: one datagram so far). Short: its SNAT port is
    /// free again soon after.
    #[serde(with = "humantime_serde")]
    pub unconfirmed: Duration,
}

impl Default for FlowTimeouts {
    fn default() -> Self {
        FlowTimeouts {
            tcp: Duration::from_secs(6 * 3600),
            tcp_closing: Duration::from_secs(10),
            udp: Duration::from_secs(60),
            unconfirmed: Duration::from_secs(5),
        }
    }
}

/// `on_exit`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExit {
    /// Detach the program and remove the pins: nothing is left behind.
    #[default]
    Detach,
    /// Leave the program attached and forwarding, its state pinned, for the
    /// next `xdplb run` to adopt.
    Keep,
}

/// Default `pin_dir`.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/xdplb";

impl Default for Config {
    fn default() -> Self {
        Config {
            interfaces: Vec::new(),
            xdp_mode: XdpModeSetting::default(),
            admin: Admin::default(),
            snat: Snat::default(),
            tunnel_source: TunnelSource::default(),
            hash_seed: 0x5eed,
            pin_dir: Some(PathBuf::from(DEFAULT_PIN_DIR)),
            on_exit: OnExit::default(),
            flow_timeouts: FlowTimeouts::default(),
            gue_port: DEFAULT_GUE_PORT,
            reject_limit: DEFAULT_REJECT_LIMIT,
            run_dir: PathBuf::from(DEFAULT_RUN_DIR),
            bgp: None,
            flow_sync: None,
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
    /// File holding the bearer token of mutating API calls (needed when
    /// `listen` is not a loopback address).
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
    /// Source address toward IPv6 backends in nat mode.
    pub ipv6: Option<Ipv6Addr>,
    pub ports: PortRange,
}

/// Inclusive port range, written `MIN-MAX` in YAML.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
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

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Parsed in the visitor, so that serde_yaml places an error at
        // the value (`try_from` would, at the enclosing mapping).
        struct Text;
        impl Visitor<'_> for Text {
            type Value = PortRange;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port range MIN-MAX")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<PortRange, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(Text)
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
    /// 0 = all ports (its backends then have port 0: packets keep theirs).
    pub port: u16,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub mode: Mode,
    /// Tunnel mode's encapsulation.
    #[serde(default)]
    pub encap: Encap,
    /// Answer ICMP/ICMPv6 echo requests to the VIP (from the balancer).
    #[serde(default)]
    pub icmp_echo: bool,
    #[serde(default)]
    pub hash: HashMode,
    /// What a packet gets while no backend can take a new flow.
    #[serde(default)]
    pub on_empty: OnEmpty,
    /// How a new flow's backend is chosen.
    #[serde(default)]
    pub balance: Balance,
    /// What a new flow gets when every backend it could go to holds its
    /// `max_flows`.
    #[serde(default)]
    pub on_full: OnFull,
    /// None = backends are always up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// HAProxy's `slowstart`: a backend that starts taking new flows again
    /// (back up, added by a reload, back to `ready`) ramps its weight up
    /// over this time. None or 0: off.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub slow_start: Option<Duration>,
    pub backends: Vec<BackendConfig>,
}

impl Service {
    /// The ramp's length, if slow start is on.
    pub fn slow_start(&self) -> Option<Duration> {
        self.slow_start.filter(|d| !d.is_zero())
    }
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

/// `on_empty`: a service whose backends are all down, in maint, drained or
/// at weight 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnEmpty {
    /// Answer as a host without a listener would (TCP RST, ICMP port
    /// unreachable), so clients fail over at once.
    #[default]
    Reject,
    /// Drop: clients wait for their own timeout.
    Drop,
}

/// `balance`: how a new flow's backend is chosen (docs/operations.md,
/// "Least flows and max_flows").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// The flow's hash picks an entry of the Maglev ring: every node picks
    /// the same backend, whatever the load.
    #[default]
    Maglev,
    /// The less loaded (fewer flows for its weight) of two backends the
    /// ring gives the flow: power of two choices, like IPVS `wlc`, HAProxy
    /// `leastconn`, Envoy's least request.
    LeastFlows,
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Balance::Maglev => "maglev",
            Balance::LeastFlows => "least-flows",
        })
    }
}

/// `on_full`: a new flow when every backend it could go to holds its
/// `max_flows`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFull {
    /// Dropped: a TCP client sends its SYN again (after 1 s, 3 s, ...),
    /// which queues it in effect, as HAProxy queues past `maxconn`.
    #[default]
    Drop,
    /// Given to the backend drawn for it all the same: the limit steers
    /// flows while there is room anywhere, and refuses none.
    Admit,
}

/// `encap` (tunnel mode): IP in IP, or GUE (UDP to `gue_port`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encap {
    #[default]
    Ipip,
    Gue,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Nat => "nat",
            Mode::Dsr => "dsr",
            Mode::Tunnel => "tunnel",
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HashMode {
    #[default]
    FiveTuple,
    /// Client affinity: every flow of a client goes to the same backend.
    SourceIp,
}

/// A service's health check (HAProxy semantics, see `crate::health`): every
/// `interval` the host checks each backend, `fall` consecutive failures take
/// it down, `rise` consecutive passes bring it back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheck {
    pub r#type: CheckType,
    /// http: request path, starting with `/` (default `/`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// http: the status the response must have, 100-599 (default 200).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<u16>,
    /// http: a substring the response body must contain (only its first
    /// `MAX_HTTP_BODY` bytes are searched).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect_body: Option<String>,
    /// udp: the payload sent (default `ping`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    /// udp: a substring the reply must contain (default: any reply passes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// Port to check instead of the backend's own (HAProxy's `port`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
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
            expect_body: None,
            send: None,
            expect: None,
            port: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 3,
        }
    }
}

impl HealthCheck {
    /// Largest part of an http response body searched for `expect_body`.
    pub const MAX_HTTP_BODY: usize = 64 * 1024;
    /// Largest `send` payload: one UDP datagram over IPv4.
    pub const MAX_UDP_PAYLOAD: usize = 65507;

    /// http: the request path, `/` when not set.
    pub fn path(&self) -> &str {
        self.path.as_deref().unwrap_or("/")
    }

    /// http: the expected status, 200 when not set.
    pub fn expect_status(&self) -> u16 {
        self.expect_status.unwrap_or(200)
    }

    /// udp: the payload, `ping` when not set.
    pub fn send(&self) -> &str {
        self.send.as_deref().unwrap_or("ping")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckType {
    /// A TCP connect succeeds.
    Tcp,
    /// `GET path` gets `expect_status` (and `expect_body`).
    Http,
    /// `send` gets a reply (containing `expect`).
    Udp,
}

impl fmt::Display for CheckType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckType::Tcp => "tcp",
            CheckType::Http => "http",
            CheckType::Udp => "udp",
        })
    }
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
    /// HAProxy's `maxconn`: it takes no new flows while it holds this many
    /// (`on_full` says what they get then). None: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_flows: Option<u32>,
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

impl Config {
    /// Parses and validates a whole config.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        let de = serde_yaml::Deserializer::from_str(text);
        let config: Config =
            serde_path_to_error::deserialize(de).map_err(|e| yaml_error::read_error(text, e))?;
        config.validate().map_err(|e| {
            // serde_yaml accepted the text: a saphyr failure only costs the line.
            e.with_line(&Lines::scan(text).unwrap_or_default())
        })?;
        Ok(config)
    }

    /// The services whose VIP answers ICMP echo requests, the first one of
    /// each VIP: each such VIP has one more `SERVICES` entry (port 0,
    /// protocol ICMP or ICMPv6) beside its services' (`plan::plan`).
    pub fn echo_services(&self) -> impl Iterator<Item = &Service> {
        let mut seen = HashSet::new();
        self.services
            .iter()
            .filter(move |s| s.icmp_echo && seen.insert(s.vip))
    }

    /// Reads and validates `path`; errors name the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Read {
            path: path.into(),
            err,
        })?;
        // Truncated (or caught while rewritten in place): say so, rather
        // than which key is missing.
        if text.trim().is_empty() {
            return Err(ConfigError::Read {
                path: path.into(),
                err: std::io::Error::other("the file is empty"),
            });
        }
        Config::from_yaml(&text).map_err(|err| ConfigError::InFile {
            path: path.into(),
            err: Box::new(err),
        })
    }
}
