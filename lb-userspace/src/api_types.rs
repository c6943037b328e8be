//! The JSON bodies of the admin API (docs/design.md section 5), shared by the
//! server (`api`) and the CLI's client (`client`).
//!
//! Addresses are `SocketAddr`s: serde writes them as `"198.18.1.11:8080"`
//! (`"[2001:db8::1]:80"` for IPv6), the backend label of the metrics too.
//! Words (protocol, mode, hash, state) reuse the config's enums, so they are
//! spelled as in the YAML.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

pub use crate::config::{BackendState, Balance, HashMode, Mode, OnFull, Protocol};

/// `GET /api/v1/services` (an array of these), `GET /api/v1/services/{name}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    /// VIP and port.
    pub vip: SocketAddr,
    pub protocol: Protocol,
    pub mode: Mode,
    pub hash: HashMode,
    #[serde(default)]
    pub balance: Balance,
    #[serde(default)]
    pub on_full: OnFull,
    /// Counters since the daemon started (all backends and misses).
    pub packets: u64,
    pub bytes: u64,
    pub backends: Vec<Backend>,
}

/// One backend of a [`Service`]; also the answer to a `PUT` of a backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Backend {
    pub address: SocketAddr,
    pub weight: u32,
    /// The admin state: from the config or a `PUT`.
    pub state: BackendState,
    pub health: Health,
    /// What the data plane does with it: the admin state, or `down` when
    /// health checks say so.
    pub effective: Effective,
    pub packets: u64,
    pub bytes: u64,
    /// New flows given to this backend.
    pub flows: u64,
    /// None: the service has no health check.
    pub check: Option<CheckStatus>,
    /// The weight new flows see: 0 while it takes none (drain, maint,
    /// down), less than `weight` while slow start ramps it up.
    #[serde(default)]
    pub effective_weight: f64,
    /// While slow start ramps its weight up (null otherwise).
    #[serde(default)]
    pub slow_start: Option<SlowStart>,
    /// Its limit of flows (null: none).
    #[serde(default)]
    pub max_flows: Option<u32>,
    /// The golden signals (docs/operations.md).
    #[serde(flatten)]
    pub signals: Signals,
}

/// A backend's slow-start ramp in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlowStart {
    /// Share of its weight reached: 0 to 99.
    pub percent: u32,
    /// Until it takes its full weight.
    pub remaining_ms: u64,
}

/// A backend's golden signals from the data plane. Those only nat mode
/// sees (the backend's side of the conversation) are None in dsr and
/// tunnel modes, and those of TCP handshakes None for UDP services.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Signals {
    /// The flows it holds, as the data plane balances by them
    /// (`lb_common::BackendLoad::flows`): counted exactly by the expiry
    /// sweep (every 5 s: confirmed, no FIN or RST seen, not expired), plus
    /// the new flows since, minus those seen closing since.
    pub active_flows: u64,
    /// Bytes (whole frames) sent to it: the client side.
    pub bytes_sent: u64,
    /// Bytes it sent back.
    pub bytes_received: Option<u64>,
    /// TCP resets it sent.
    pub resets: Option<u64>,
    /// TCP connection attempts it never answered (no SYN-ACK before the
    /// unconfirmed flow expired).
    pub unanswered: Option<u64>,
    /// Its TCP handshake latencies.
    pub handshakes: Option<Handshakes>,
    /// New flows drawn for it while it held its `max_flows` (sent to
    /// another backend, dropped, or admitted: `on_full`).
    pub at_max_flows: u64,
}

/// A latency histogram in powers of two of microseconds
/// (`lb_common::Handshakes`): `buckets[i]` counts handshakes of at most
/// 2^i us (and more than the bucket before), the last one everything
/// longer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handshakes {
    /// Handshakes timed.
    pub count: u64,
    /// Their total, microseconds.
    pub sum_us: u64,
    pub buckets: Vec<u64>,
}

impl Handshakes {
    /// The `q` quantile (0..=1), in microseconds: the upper bound of the
    /// bucket it falls in (None without handshakes, or in the last,
    /// unbounded bucket).
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return (i + 1 < self.buckets.len()).then(|| 1u64 << i);
            }
        }
        None
    }

    /// The handshakes counted in `self` but not yet in `earlier` (a later
    /// and an earlier read); None if a counter went back (a restart).
    pub fn since(&self, earlier: &Handshakes) -> Option<Handshakes> {
        if self.buckets.len() != earlier.buckets.len() {
            return None;
        }
        let buckets = self
            .buckets
            .iter()
            .zip(&earlier.buckets)
            .map(|(a, b)| a.checked_sub(*b))
            .collect::<Option<Vec<u64>>>()?;
        Some(Handshakes {
            count: self.count.checked_sub(earlier.count)?,
            sum_us: self.sum_us.checked_sub(earlier.sum_us)?,
            buckets,
        })
    }
}

impl Signals {
    /// From the data plane's counters of one backend; `nat`: the service
    /// is in nat mode, `tcp`: its protocol is TCP.
    pub fn new(
        c: &lb_common::BackendCounter,
        load: &lb_common::BackendLoad,
        h: &lb_common::Handshakes,
        nat: bool,
        tcp: bool,
    ) -> Signals {
        let nat_tcp = nat && tcp;
        Signals {
            active_flows: load.flows(),
            bytes_sent: c.bytes.saturating_sub(c.reply_bytes),
            bytes_received: nat.then_some(c.reply_bytes),
            resets: nat_tcp.then_some(c.resets),
            unanswered: nat_tcp.then_some(load.unanswered),
            handshakes: nat_tcp.then(|| Handshakes {
                count: h.buckets.iter().sum(),
                sum_us: h.sum_us,
                buckets: h.buckets.to_vec(),
            }),
            at_max_flows: c.full,
        }
    }
}

/// What the health checks say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Up,
    Down,
    /// The service has no health check: the backend counts as up.
    Unchecked,
}

/// The state the data plane applies: admin state and health combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effective {
    Ready,
    Drain,
    Maint,
    /// Failed its health checks: treated like `maint`.
    Down,
}

/// The health checker's view of one backend.
pub use crate::health::Status as CheckStatus;

/// Body of `PUT /api/v1/services/{name}/backends/{addr:port}`: one or both
/// fields (absent fields are not sent).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<BackendState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// Answer to `POST /api/v1/reload`: names of services, `"svc/addr:port"` of
/// backends.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReloadSummary {
    pub services_added: Vec<String>,
    pub services_removed: Vec<String>,
    pub services_changed: Vec<String>,
    pub backends_added: Vec<String>,
    pub backends_removed: Vec<String>,
}

impl ReloadSummary {
    pub fn is_empty(&self) -> bool {
        self.services_added.is_empty()
            && self.services_removed.is_empty()
            && self.services_changed.is_empty()
            && self.backends_added.is_empty()
            && self.backends_removed.is_empty()
    }
}

/// Answer to `GET /api/v1/explain?src=ADDR:PORT&dst=ADDR:PORT&proto=tcp|udp`:
/// what the data plane does with a packet of that flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// The service whose VIP it is, if any.
    pub service: Option<String>,
    /// The backend it goes to (None: not balanced, or no usable backend).
    pub backend: Option<SocketAddr>,
    /// The flow is in the flow table (its packets keep that backend).
    pub existing_flow: bool,
    /// For a new flow: the flow hash and the Maglev ring entry it picks.
    pub hash: Option<u32>,
    pub ring_index: Option<u32>,
    /// In words.
    pub reason: String,
}

/// This node's part in announcing VIPs (docs/ha.md): `ready` announces
/// every usable VIP over BGP, `drain` none (the node keeps forwarding what
/// still reaches it). Starts `ready` at every start: not kept across
/// restarts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    #[default]
    Ready,
    Drain,
}

/// Body of `PUT /api/v1/node`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeUpdate {
    pub state: NodeState,
}

/// Answer to `GET /api/v1/status` and `PUT /api/v1/node`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: NodeState,
    /// None: no `bgp` in the config.
    pub bgp: Option<BgpStatus>,
    /// None: no `flow_sync` in the config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_sync: Option<SyncStatus>,
}

/// Flow sync's view (docs/ha.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    pub address: IpAddr,
    pub port: u16,
    /// Nat flows this node announced to its peers (one count per flow).
    pub flows_sent: u64,
    pub peers: Vec<SyncPeerStatus>,
}

/// One flow-sync peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncPeerStatus {
    pub address: IpAddr,
    /// Its heartbeats arrive: packets of its flows are handed to it.
    pub up: bool,
    /// Milliseconds since it was last heard from; none: never (or bye).
    pub last_heard_ms: Option<u64>,
    /// Flows it announced.
    pub flows_received: u64,
}

/// What the BGP daemon reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpStatus {
    pub router_id: Option<Ipv4Addr>,
    pub peers: Vec<PeerStatus>,
    /// The VIPs the BGP daemon exports to its peers (as of its last
    /// configuration), in order.
    pub announced: Vec<IpAddr>,
}

/// One configured peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub address: IpAddr,
    #[serde(rename = "as")]
    pub asn: u32,
    /// BGP's word: `Established` when up, else `Idle`, `Connect`,
    /// `Active`, `OpenSent`, `OpenConfirm`, or `down` / `unknown` when BIRD
    /// does not say (not running yet).
    pub state: String,
    /// The session is established.
    pub up: bool,
}

/// Body of every 4xx/5xx answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

/// Answer to `GET /api/v1/history[?since=UNIX_MS]`: the daemon's recent
/// past (`history`), sampled every `step_ms` and kept `keep_s` seconds,
/// for the dashboard. Every series has one value per entry of `times`;
/// null where it had none (a service not configured then, the first
/// sample after a counter went back).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// The node the daemon runs on, and the interfaces it is attached to.
    pub hostname: String,
    pub interfaces: Vec<String>,
    pub step_ms: u64,
    pub keep_s: u64,
    /// The end of each sample, Unix time in milliseconds, oldest first.
    pub times: Vec<u64>,
    /// Flows in the flow table (as of the last expiry sweep).
    pub active_flows: Vec<Option<f64>>,
    /// New flows per second.
    pub new_flows: Vec<Option<f64>>,
    /// Packets per second by XDP verdict (`aborted`, `drop`, `pass`,
    /// `tx`, `redirect`).
    pub actions: Vec<HistorySeries>,
    /// Data-plane events per second by name (the `event` label of
    /// `xdplb_dataplane_events_total`: drops by reason and more).
    pub events: Vec<HistorySeries>,
    pub services: Vec<ServiceHistory>,
    /// Capped (`history::MAX_BACKENDS`): the first backends of the plan.
    pub backends: Vec<BackendHistory>,
}

/// One named rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistorySeries {
    pub name: String,
    pub per_second: Vec<Option<f64>>,
}

/// A service's rates (both directions).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceHistory {
    pub name: String,
    /// Packets per second.
    pub packets: Vec<Option<f64>>,
    /// Bits per second (whole frames).
    pub bits: Vec<Option<f64>>,
}

/// A backend's rates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendHistory {
    pub service: String,
    pub address: SocketAddr,
    pub packets: Vec<Option<f64>>,
    pub bits: Vec<Option<f64>>,
    /// New flows given to it per second.
    pub flows: Vec<Option<f64>>,
}

/// Body of `POST /api/v1/rollouts`: start a canary rollout (`xdplb rollout
/// start`). Absent fields take their defaults (docs/operations.md,
/// "Canary rollouts").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    pub service: String,
    /// The new backends, already in the service (typically at weight 0).
    pub canaries: Vec<SocketAddr>,
    /// The canaries' percent of new flows at each step: increasing, 1 to
    /// 100, the last 100 [1, 5, 25, 50, 100].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<u32>>,
    /// How long each step is held ("30s").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// Conditions that roll the canaries back, comma-separated
    /// ("health=down,rst_ratio>0.05,unanswered_ratio>0.05").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_if: Option<String>,
    /// New flows a step's window needs before ratios are judged [20].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_flows: Option<u64>,
}

/// Where a rollout is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    Running,
    Paused,
    /// Reached 100% and held it: the canaries keep the new flows.
    Completed,
    /// A condition was breached: the weights went back.
    RolledBack,
    /// Stopped by the operator or a reload: the weights went back.
    Aborted,
}

impl RolloutState {
    pub const ALL: [RolloutState; 5] = [
        RolloutState::Running,
        RolloutState::Paused,
        RolloutState::Completed,
        RolloutState::RolledBack,
        RolloutState::Aborted,
    ];

    /// As in the JSON and the metrics' `state` label.
    pub fn word(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Completed => "completed",
            RolloutState::RolledBack => "rolled_back",
            RolloutState::Aborted => "aborted",
        }
    }
}

/// `GET /api/v1/rollouts` (an array), `GET /api/v1/rollouts/{service}`,
/// and the answer to every rollout change: the running or paused rollout
/// of a service, else its last one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub service: String,
    pub canaries: Vec<SocketAddr>,
    pub steps: Vec<u32>,
    pub every: String,
    pub abort_if: String,
    pub min_flows: u64,
    pub state: RolloutState,
    /// The canaries' percent at the current step (at the end: the step
    /// it ended at).
    pub step: u32,
    /// Which step that is, from 1.
    pub step_number: usize,
    /// The canaries' share of the service's weights now, percent (after a
    /// roll back, what it is back to).
    pub canary_share: f64,
    /// Time held in the current step (paused time not counted).
    pub in_step_ms: u64,
    /// Since the start (until the end, once over).
    pub elapsed_ms: u64,
    pub started_unix_ms: u64,
    /// What the canaries did in the current step so far.
    pub window: RolloutWindow,
    /// Why it was rolled back or aborted.
    pub reason: Option<String>,
    /// Each backend of the service as it was at the start: what a roll
    /// back or an abort restores.
    pub baseline: Vec<RolloutBaseline>,
}

/// The canaries' signals in the current step (None: the service's mode
/// does not see them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutWindow {
    pub new_flows: u64,
    pub resets: Option<u64>,
    pub unanswered: Option<u64>,
    /// Upper bound of the 99th percentile's bucket.
    pub handshake_p99_us: Option<u64>,
}

/// A backend as it was when a rollout started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutBaseline {
    pub address: SocketAddr,
    pub state: BackendState,
    pub weight: u32,
}
