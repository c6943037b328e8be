//! Map keys, values and constants.

use core::net::IpAddr;

use crate::addr::addr_words;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_ICMPV6: u8 = 58;

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// A service's forwarding mode (`ServiceMeta::mode`).
pub const MODE_NAT: u8 = 0;
pub const MODE_DSR: u8 = 1;
pub const MODE_TUNNEL: u8 = 2;
/// A `SERVICES` entry (port 0, protocol ICMP or ICMPv6) marking a VIP that
/// answers echo requests.
pub const MODE_ECHO: u8 = 3;

/// Which flow fields pick the backend (`ServiceMeta::hash`).
pub const HASH_FIVE_TUPLE: u8 = 0;
pub const HASH_SOURCE_IP: u8 = 1;

/// Backend states (`Backend::state`). Existing flows keep a `READY` or
/// `DRAIN` backend; `MAINT` and `DOWN` backends lose them to re-selection.
pub const STATE_READY: u8 = 0;
pub const STATE_DRAIN: u8 = 1;
pub const STATE_MAINT: u8 = 2;
pub const STATE_DOWN: u8 = 3;

/// Ring entry of a service with no usable backend: its packets are dropped.
pub const NO_BACKEND: u32 = u32::MAX;

/// Each service owns two ring slots (`2 * id` and `2 * id + 1`): userspace
/// writes the idle one, then flips `ServiceMeta::ring` to it.
pub const RING_SLOTS_PER_SERVICE: u32 = 2;

/// How many SNAT ports a new flow tries before it gives up (collisions).
pub const SNAT_PORT_TRIES: u32 = 16;

/// `SERVICES` key: where clients send (VIP, port, protocol).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    pub addr: [u32; 4],
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

impl ServiceKey {
    /// The key of `vip`:`port` (host order) for protocol `proto`.
    pub fn new(vip: IpAddr, port: u16, proto: u8) -> ServiceKey {
        let (addr, family) = addr_words(vip);
        ServiceKey {
            addr,
            port: port.to_be(),
            proto,
            family,
        }
    }
}

/// `SERVICES` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceMeta {
    /// Index into the per-service counters.
    pub id: u32,
    /// Active ring slot: entries `ring * M .. ring * M + M` of `RINGS`.
    pub ring: u32,
    pub mode: u8,
    pub hash: u8,
    /// Tunnel mode: `ENCAP_*`.
    pub encap: u8,
    /// `SVC_*` bits.
    pub flags: u8,
}

/// `ServiceMeta::flags`: with no usable backend, answer (TCP RST, ICMP port
/// unreachable) rather than drop (`on_empty: reject`).
pub const SVC_REJECT: u8 = 1;
/// `ServiceMeta::flags`: a new flow goes to the less loaded (fewer flows
/// for its weight) of two backends drawn from the ring (`balance:
/// least-flows`), not to the one its hash picks (`balance: maglev`).
pub const SVC_LEAST_FLOWS: u8 = 2;
/// `ServiceMeta::flags`: some backend has a `max_flows` limit, so a new
/// flow whose drawn backends are all full looks for room among the
/// service's backends (`SERVICE_BACKENDS`).
pub const SVC_LIMITED: u8 = 4;
/// `ServiceMeta::flags`: when every backend is full, a new flow still goes
/// to the one drawn (`on_full: admit`) rather than being dropped.
pub const SVC_ADMIT_FULL: u8 = 8;

/// How many of a service's backends a new flow looks at for room when the
/// backends drawn for it are at their `max_flows` (`SERVICE_BACKENDS`). A
/// power of two: the program wraps around the list with a mask.
pub const OVERFLOW_SCAN: usize = 32;

/// `SERVICE_BACKENDS` value, by service id: the backends a new flow looks
/// at for room when those drawn for it are full (the service's first
/// `OVERFLOW_SCAN` backends, any state: the program checks each; unused
/// slots hold `NO_BACKEND`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceBackends {
    pub ids: [u32; OVERFLOW_SCAN],
}

impl Default for ServiceBackends {
    fn default() -> Self {
        ServiceBackends {
            ids: [NO_BACKEND; OVERFLOW_SCAN],
        }
    }
}

/// Tunnel encapsulations (`ServiceMeta::encap`): IP in IP (IPIP, IP6IP6,
/// IPv4 in IPv6, IPv6 in IPv4), or GUE variant 1 (the inner IP packet right
/// after an outer UDP header to `Globals::gue_port`).
pub const ENCAP_IPIP: u8 = 0;
pub const ENCAP_GUE: u8 = 1;

/// `BACKENDS` value, indexed by backend id. A backend listed in two
/// services has two ids, so its counters stay per service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    pub addr: [u32; 4],
    pub port: u16,
    pub family: u8,
    pub state: u8,
    /// Owning service id.
    pub service: u32,
    /// Its weight as the service's ring was built with it (0 when it takes
    /// no new flows), for `balance: least-flows`.
    pub weight: u32,
    /// New flows stop once it holds this many (`BackendLoad::flows`); 0:
    /// no limit.
    pub max_flows: u32,
}

/// Connection-table key, as the packet arrives (client side for `FLOWS`,
/// backend side for `NAT_REV`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

/// `FLOWS` value: the backend a client flow is pinned to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    pub backend: u32,
    /// Source port toward the backend (nat mode; else 0), network order.
    pub snat_port: u16,
    /// Destination port toward the backend, network order (the packet's
    /// own for an all-ports service).
    pub backend_port: u16,
    /// Last packet, in seconds of the kernel's monotonic clock.
    pub last_seen: u32,
    /// 1 once a TCP FIN or RST went by: the flow expires sooner.
    pub closing: u8,
    pub _pad: [u8; 3],
    /// An unconfirmed nat flow (`PENDING`) once its backend answered: for
    /// TCP the acknowledgment number that confirms it (the backend's
    /// initial sequence number + 1, which a spoofed client never saw), for
    /// UDP 1. 0: no answer yet.
    pub confirm: u32,
    /// When the flow was created (its SYN forwarded), in microseconds of
    /// the kernel's monotonic clock (`bpf_ktime_get_ns` / 1000, wrapping
    /// every 71 minutes): the start of the handshake the reply program
    /// times (`Handshakes`).
    pub born_us: u32,
}

/// A cached `bpf_fib_lookup` answer: per backend and CPU toward backends
/// (`BACKEND_HOPS`), per flow toward clients (`NatRev::hop`). The lookup
/// costs more than the rest of an established flow's work, and its answer
/// is the same for every packet to that destination. Trusted during the
/// second it was made in (so route and neighbour changes apply within a
/// second), for packets that arrive on the same interface and are no longer
/// than one the lookup's MTU check passed; otherwise the lookup runs again.
/// A `NatRev` entry is written in place: a packet racing a refresh on
/// another CPU could read half-old MACs only if the route changed in that
/// second.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    /// Egress interface; 0: nothing cached.
    pub ifindex: u32,
    /// Ingress interface of the lookup.
    pub ingress: u32,
    /// Second of the kernel's monotonic clock the lookup was made in.
    pub stamp: u32,
    /// Longest IP packet (bytes) the lookup's MTU check passed.
    pub max_len: u16,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub _pad: [u8; 2],
}

impl Flow {
    /// Seconds of silence after which the flow is over and its next packet
    /// starts a new one (the daemon also deletes such entries).
    #[inline(always)]
    pub fn timeout(&self, proto: u8, g: &Globals) -> u32 {
        if proto != PROTO_TCP {
            g.udp_timeout
        } else if self.closing != 0 {
            g.tcp_closing_timeout
        } else {
            g.tcp_timeout
        }
    }

    #[inline(always)]
    pub fn expired(&self, proto: u8, g: &Globals, now: u32) -> bool {
        now.wrapping_sub(self.last_seen) > self.timeout(proto, g)
    }

    /// An unconfirmed flow (`PENDING`) idle past `Globals::pending_timeout`
    /// is over: a TCP handshake not completed, a UDP exchange of one
    /// datagram (and its answers). Short, so that its SNAT port comes back
    /// soon.
    #[inline(always)]
    pub fn pending_expired(&self, g: &Globals, now: u32) -> bool {
        now.wrapping_sub(self.last_seen) > g.pending_timeout
    }
}

/// Entries of the unconfirmed-flow tables (`PENDING`, `PENDING_REV`) for a
/// `flow_table_size`: a quarter of it (at least 256, at most all of it).
/// A flood churns these; confirmed flows live in `FLOWS` and `NAT_REV`.
pub const fn pending_table_size(flow_table_size: u32) -> u32 {
    let quarter = flow_table_size / 4;
    let floor = if flow_table_size < 256 {
        flow_table_size
    } else {
        256
    };
    if quarter < floor { floor } else { quarter }
}

/// The `NAT_REV` key of a nat-mode flow: the 5-tuple of the backend's
/// replies, backend address:port -> SNAT address:port.
#[inline(always)]
pub fn nat_rev_key(client: &FlowKey, backend: &[u32; 4], flow: &Flow, snat: [u32; 4]) -> FlowKey {
    FlowKey {
        src: *backend,
        dst: snat,
        sport: flow.backend_port,
        dport: flow.snat_port,
        proto: client.proto,
        family: client.family,
        _pad: [0; 2],
    }
}

/// `NAT_REV` value: how to turn a backend's reply back into VIP -> client.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatRev {
    pub client: [u32; 4],
    pub vip: [u32; 4],
    pub client_port: u16,
    pub vip_port: u16,
    pub backend: u32,
    pub service: u32,
    /// Where the replies leave toward the client.
    pub hop: NextHop,
}

/// `CONFIG[0]`: settings that apply to every packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Globals {
    /// SNAT source address toward IPv4 backends (network order).
    pub snat_v4: u32,
    /// SNAT port range, host order, inclusive.
    pub snat_port_min: u16,
    pub snat_port_max: u16,
    pub hash_seed: u32,
    /// Maglev ring size M (entries per ring slot).
    pub ring_size: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// SNAT source address toward IPv6 backends (all zero: none).
    pub snat_v6: [u32; 4],
    /// Flow idle timeouts, seconds: UDP, TCP, TCP after FIN/RST.
    pub udp_timeout: u32,
    pub tcp_timeout: u32,
    pub tcp_closing_timeout: u32,
    /// Idle timeout of an unconfirmed flow (`PENDING`), seconds.
    pub pending_timeout: u32,
    /// GUE destination port, network order.
    pub gue_port: u16,
    /// Rejections (`SVC_REJECT`) sent per second, per CPU; more are dropped.
    pub reject_limit: u16,
    /// `tunnel_source.ipv4`: the prefix tunnel packets toward IPv4 backends
    /// leave from (network order), and its host bits (host order; 0: no
    /// prefix, the source is `snat_v4`).
    pub tunnel_v4: u32,
    pub tunnel_v4_host: u32,
    /// `tunnel_source.ipv6`: the same toward IPv6 backends; only the last
    /// word varies, `tunnel_v6_host` are its host bits (host order).
    pub tunnel_v6: [u32; 4],
    pub tunnel_v6_host: u32,
}

impl Globals {
    /// The SNAT address of `family`.
    #[inline(always)]
    pub fn snat(&self, family: u8) -> [u32; 4] {
        if family == FAMILY_V4 {
            [self.snat_v4, 0, 0, 0]
        } else {
            self.snat_v6
        }
    }

    /// The outer source address of a tunnel packet toward a `family`
    /// backend, for a flow of hash `h`: an address of the `tunnel_source`
    /// prefix picked by the hash (so that a backend NIC's RSS spreads the
    /// flows over its queues), or the SNAT address without one. Never the
    /// prefix's all-zeros or all-ones host part.
    #[inline(always)]
    pub fn tunnel_source(&self, family: u8, h: u32) -> [u32; 4] {
        if family == FAMILY_V4 {
            if self.tunnel_v4_host == 0 {
                return [self.snat_v4, 0, 0, 0];
            }
            [
                self.tunnel_v4 | host_part(h, self.tunnel_v4_host).to_be(),
                0,
                0,
                0,
            ]
        } else {
            if self.tunnel_v6_host == 0 {
                return self.snat_v6;
            }
            let mut a = self.tunnel_v6;
            a[3] |= host_part(h, self.tunnel_v6_host).to_be();
            a
        }
    }
}

/// `h`'s bits under `mask` (at least 2 bits), neither all zeros nor all ones.
#[inline(always)]
fn host_part(h: u32, mask: u32) -> u32 {
    let x = h & mask;
    if x == 0 {
        1
    } else if x == mask {
        mask ^ 1
    } else {
        x
    }
}

/// The IPv6 flow label (20 bits, never 0: "unlabelled") of a tunnel
/// packet of a flow of hash `h`: one per flow, as RFC 6438 asks of
/// tunnel endpoints, for the backend's RSS and ECMP on the way.
#[inline(always)]
pub fn tunnel_flow_label(h: u32) -> u32 {
    let l = (h ^ (h >> 20)) & 0xf_ffff;
    if l == 0 { 1 } else { l }
}

/// `Globals::flags`: skip `bpf_fib_lookup` and answer XDP_TX with the MACs
/// untouched. Only `xdplb trace` sets it, on a program of its own: it shows
/// the rewrite on a host without the routes and neighbours of the real one.
pub const FLAG_SKIP_FIB: u32 = 1;
/// `Globals::flags`: some service listens on all ports (port 0), so a miss
/// on the exact port is retried with port 0.
pub const FLAG_ALL_PORTS: u32 = 2;
/// `Globals::flags`: flow sync is on (`flow_sync`, docs/ha.md): new nat
/// flows are announced on `SYNC_EVENTS`, and a packet of a flow another
/// node owns (`OWNERS`) is handed to that node.
pub const FLAG_FLOW_SYNC: u32 = 4;

/// Most flow-sync peers (`PEERS` entries).
pub const MAX_PEERS: u32 = 16;

/// `PEERS` value: another LB node of the tier, by its index in
/// `flow_sync.peers`. Written by the daemon; `hop` is the program's cache.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    /// The peer's flow-sync address: frames are sent to its link-layer
    /// address toward this one.
    pub addr: [u32; 4],
    pub family: u8,
    /// 1 while its heartbeats arrive: only then are frames handed to it.
    pub alive: u8,
    pub _pad: [u8; 2],
    pub hop: NextHop,
}

/// `PEER_MACS` key: a link-layer address of a peer, zero-padded to 8 bytes.
/// A frame from one of these is never handed on again (no loops).
#[inline(always)]
pub fn mac_key(mac: &[u8; 6]) -> [u8; 8] {
    [mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0]
}

/// Per-service counters (`SERVICE_STATS`, per CPU), both directions.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Per-backend counters (`BACKEND_STATS`, per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendCounter {
    /// Packets and bytes (whole frames), both directions.
    pub packets: u64,
    pub bytes: u64,
    /// New flows assigned to this backend.
    pub flows: u64,
    /// Of `bytes`, those of the backend's replies (nat mode: the only mode
    /// whose replies pass the balancer); the rest went to the backend.
    pub reply_bytes: u64,
    /// TCP resets the backend sent (nat mode).
    pub resets: u64,
    /// New flows drawn for it that went elsewhere (or were dropped, or
    /// admitted anyway: `on_full`) because it held its `max_flows`.
    pub full: u64,
}

/// `BACKEND_LOAD` value, by backend id: how many flows a backend holds,
/// for the program (least-flows balancing, `max_flows`) and the metrics.
///
/// The flow tables are LRU maps whose evictions are silent, so a count the
/// program kept up and down itself would drift (an evicted flow is never
/// counted down). Instead the daemon's expiry sweep, which walks `FLOWS`
/// anyway (every 5 s), counts them exactly and writes `active`; between
/// two sweeps the program adds its new flows to `recent` and the flows it
/// sees closing (a TCP FIN or RST, either way) to `closed`, which the
/// sweep sets back to 0. So `flows()` is never negative, is exact at each
/// sweep, and between sweeps follows new and closing TCP flows at once
/// (idle ones, and UDP flows, leave at the next sweep). The program's adds
/// are atomic (XADD); still, two CPUs seeing a flow's two FINs at once may
/// both count it closed, and a flow created while the sweep runs may be
/// missed, until the next sweep.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendLoad {
    /// Confirmed flows open as of the daemon's last sweep: not expired, no
    /// TCP FIN or RST seen (either direction in nat mode, the client's in
    /// dsr and tunnel modes).
    pub active: u64,
    /// New flows (confirmed or not) given to it since that sweep.
    pub recent: u64,
    /// TCP connection attempts (nat mode) it never answered: unconfirmed
    /// flows that expired with no SYN-ACK seen (`Flow::confirm` still 0),
    /// counted by the sweep that deletes them. Only the daemon writes it.
    pub unanswered: u64,
    /// Flows seen closing since that sweep.
    pub closed: u64,
}

impl BackendLoad {
    /// The flows it holds, as best known now (see the type's doc).
    #[inline(always)]
    pub fn flows(&self) -> u64 {
        self.active
            .saturating_add(self.recent)
            .saturating_sub(self.closed)
    }

    /// Whether a backend holding these flows is at `max_flows` (0: never).
    #[inline(always)]
    pub fn full(&self, max_flows: u32) -> bool {
        max_flows != 0 && self.flows() >= max_flows as u64
    }
}

/// Whether backend `a` (holding `flows_a` flows, weight `weight_a`) is
/// less loaded than `b` for its weight: `flows_a / weight_a < flows_b /
/// weight_b`, compared without division (ties keep `b`). A weight of 0
/// takes no new flows, so it is never less loaded.
#[inline(always)]
pub fn less_loaded(flows_a: u64, weight_a: u32, flows_b: u64, weight_b: u32) -> bool {
    if weight_a == 0 {
        return false;
    }
    if weight_b == 0 {
        return true;
    }
    // Flows fit in 32 bits in practice (the flow table is smaller); the
    // products cannot overflow then, and saturate otherwise.
    (flows_a.min(u32::MAX as u64) * weight_b as u64)
        < (flows_b.min(u32::MAX as u64) * weight_a as u64)
}

/// Buckets of a `Handshakes` histogram.
pub const HANDSHAKE_BUCKETS: usize = 24;

/// `BACKEND_HANDSHAKE` value (per CPU, by backend id): the backend's TCP
/// handshake latency in nat mode, from its flow's first SYN forwarded to
/// the first SYN-ACK seen (a SYN the client retransmitted counts from the
/// first), as a log2 histogram. Bucket `i` counts latencies of at most
/// 2^i microseconds (and more than the bucket before), the last bucket
/// everything longer than 2^(HANDSHAKE_BUCKETS - 2) us (4.2 s).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshakes {
    pub buckets: [u64; HANDSHAKE_BUCKETS],
    /// The latencies' sum, microseconds.
    pub sum_us: u64,
}

impl Default for Handshakes {
    fn default() -> Self {
        Handshakes {
            buckets: [0; HANDSHAKE_BUCKETS],
            sum_us: 0,
        }
    }
}

/// The `Handshakes` bucket of a latency of `us` microseconds: the number
/// of bits of `us - 1` (so 2^i lands in bucket i), at most the last one.
/// Straight-line shifts: the program has no count-leading-zeros.
#[inline(always)]
pub fn handshake_bucket(us: u32) -> usize {
    let mut v = us.saturating_sub(1);
    let mut n = 0;
    if v >= 1 << 16 {
        n += 16;
        v >>= 16;
    }
    if v >= 1 << 8 {
        n += 8;
        v >>= 8;
    }
    if v >= 1 << 4 {
        n += 4;
        v >>= 4;
    }
    if v >= 1 << 2 {
        n += 2;
        v >>= 2;
    }
    if v >= 1 << 1 {
        n += 1;
        v >>= 1;
    }
    let bits = n + v as usize;
    if bits < HANDSHAKE_BUCKETS {
        bits
    } else {
        HANDSHAKE_BUCKETS - 1
    }
}

/// `GLOBAL_STATS` slots (per CPU). Slots 0..=4 count the XDP actions by
/// their kernel value (ABORTED, DROP, PASS, TX, REDIRECT).
pub const XDP_ACTIONS: [&str; 5] = ["aborted", "drop", "pass", "tx", "redirect"];
/// Rewritten packets dropped because the next hop's MAC is not known yet.
pub const STAT_NEIGH_MISS: u32 = 5;
/// New flows dropped because no SNAT port was free after the tries.
pub const STAT_SNAT_EXHAUSTED: u32 = 6;
/// Packets to a service with no usable backend.
pub const STAT_NO_BACKEND: u32 = 7;
/// Rewritten packets dropped because the FIB had no usable route.
pub const STAT_FIB_FAIL: u32 = 8;
/// Flows whose flow-table insert failed (they still forward).
pub const STAT_FLOW_INSERT_FAIL: u32 = 9;
/// Rewritten packets forwarded on their flow's cached FIB answer.
pub const STAT_FIB_CACHED: u32 = 10;
/// Packets of a flow another node owns, handed to that node (flow sync).
pub const STAT_OWNER_FORWARD: u32 = 11;
/// New nat flows the sync ring had no room for (not announced to peers).
pub const STAT_SYNC_LOST: u32 = 12;
/// Packets to a service with no usable backend answered with a TCP RST or
/// an ICMP port unreachable (`on_empty: reject`).
pub const STAT_REJECT: u32 = 13;
/// Of those, dropped unanswered: over `Globals::reject_limit`.
pub const STAT_REJECT_LIMITED: u32 = 14;
/// New flows whose first packet carried a partial L4 checksum (a sender
/// with TX checksum offload on a veth or a VM's tap: only the pseudo-header
/// is summed). Forwarded as they are, the receiver drops them.
pub const STAT_PARTIAL_CSUM: u32 = 15;
/// Interfaces `PARTIAL_CSUM` remembers (the daemon warns once for each).
pub const PARTIAL_CSUM_IFACES: u32 = 64;
/// New flows (each starts unconfirmed, in `PENDING`).
pub const STAT_FLOW_NEW: u32 = 16;
/// Unconfirmed flows confirmed (moved to `FLOWS`): TCP by the client's ACK
/// of the backend's SYN-ACK (nat) or its second packet (dsr, tunnel), UDP
/// by a second packet (in nat after the backend answered). A flood shows
/// as `flow_new` far above `flow_confirmed`.
pub const STAT_FLOW_CONFIRMED: u32 = 17;
/// New flows whose drawn backend was at its `max_flows` and that went to
/// another backend with room.
pub const STAT_FULL_REDIRECT: u32 = 18;
/// New flows dropped because every backend looked at was at its
/// `max_flows` (`on_full: drop`).
pub const STAT_FULL_DROP: u32 = 19;
/// New flows given to a full backend all the same (`on_full: admit`).
pub const STAT_FULL_ADMIT: u32 = 20;
pub const GLOBAL_STATS_LEN: u32 = 24;

/// Event sent to the daemon (`NEIGH_EVENTS` ring buffer) when a next hop
/// needs resolving.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NeighEvent {
    pub addr: [u32; 4],
    pub ifindex: u32,
    pub family: u8,
    pub _pad: [u8; 3],
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all are repr(C), integers only, with explicit padding.
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for ServiceMeta {}
    unsafe impl aya::Pod for Backend {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for Flow {}
    unsafe impl aya::Pod for NextHop {}
    unsafe impl aya::Pod for NatRev {}
    unsafe impl aya::Pod for Globals {}
    unsafe impl aya::Pod for Counter {}
    unsafe impl aya::Pod for BackendCounter {}
    unsafe impl aya::Pod for BackendLoad {}
    unsafe impl aya::Pod for ServiceBackends {}
    unsafe impl aya::Pod for Handshakes {}
    unsafe impl aya::Pod for NeighEvent {}
    unsafe impl aya::Pod for Peer {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_sources_are_in_the_prefix_never_its_first_or_last() {
        let g = Globals {
            snat_v4: u32::from_be_bytes([198, 18, 1, 1]).to_be(),
            snat_v6: [7, 0, 0, 1],
            ..Globals::default()
        };
        // No prefix: the SNAT address, whatever the flow.
        assert_eq!(g.tunnel_source(FAMILY_V4, 12345), [g.snat_v4, 0, 0, 0]);
        assert_eq!(g.tunnel_source(FAMILY_V6, 12345), g.snat_v6);
        // 198.18.2.0/30: the host parts 1 and 2 only.
        let g = Globals {
            tunnel_v4: u32::from_be_bytes([198, 18, 2, 0]).to_be(),
            tunnel_v4_host: 3,
            tunnel_v6: [7, 0, 0, 0],
            tunnel_v6_host: u32::MAX,
            ..g
        };
        let mut seen = [false; 4];
        for h in 0..64u32 {
            let a = u32::from_be(g.tunnel_source(FAMILY_V4, h)[0]).to_be_bytes();
            assert_eq!(a[..3], [198, 18, 2]);
            seen[a[3] as usize] = true;
        }
        assert_eq!(seen, [false, true, true, false]);
        let a = g.tunnel_source(FAMILY_V6, 0x0102_0304);
        assert_eq!(a, [7, 0, 0, 0x0102_0304u32.to_be()]);
        assert_eq!(g.tunnel_source(FAMILY_V6, 0)[3], 1u32.to_be());
    }

    #[test]
    fn flow_labels_have_20_bits_and_are_never_0() {
        assert_eq!(tunnel_flow_label(0), 1);
        for h in [1, 0xfff0_0000, u32::MAX, 0x1234_5678] {
            let l = tunnel_flow_label(h);
            assert!(l != 0 && l <= 0xf_ffff, "{h:#x}: {l:#x}");
        }
    }

    #[test]
    fn handshake_buckets_are_powers_of_two_of_microseconds() {
        for (us, bucket) in [
            (0, 0),
            (1, 0),
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 3),
            (1024, 10),
            (1025, 11),
            (1 << 22, 22),
            ((1 << 22) + 1, 23),
            (u32::MAX, 23),
        ] {
            assert_eq!(handshake_bucket(us), bucket, "{us} us");
        }
        for i in 0..HANDSHAKE_BUCKETS - 1 {
            assert_eq!(handshake_bucket(1 << i), i);
        }
    }

    #[test]
    fn load_is_never_negative_and_saturates() {
        let l = BackendLoad {
            active: u64::MAX,
            recent: 5,
            ..BackendLoad::default()
        };
        assert_eq!(l.flows(), u64::MAX);
        assert_eq!(BackendLoad::default().flows(), 0);
        // Closed since the sweep: flows counted in `active` or `recent`.
        let l = BackendLoad {
            active: 3,
            recent: 2,
            closed: 4,
            unanswered: 0,
        };
        assert_eq!(l.flows(), 1);
        let l = BackendLoad {
            closed: 2,
            ..BackendLoad::default()
        };
        assert_eq!(l.flows(), 0, "a flow counted by an earlier sweep closing");
    }

    #[test]
    fn full_only_with_a_limit() {
        let l = BackendLoad {
            active: 10,
            ..BackendLoad::default()
        };
        assert!(!l.full(0));
        assert!(!l.full(11));
        assert!(l.full(10));
        assert!(l.full(9));
    }

    #[test]
    fn less_loaded_compares_flows_per_weight() {
        assert!(less_loaded(1, 1, 2, 1));
        assert!(!less_loaded(2, 1, 2, 1), "a tie keeps the other");
        // 10 flows at weight 100 is lighter than 1 at weight 1.
        assert!(less_loaded(10, 100, 1, 1));
        assert!(!less_loaded(0, 0, 5, 1), "weight 0 takes no new flows");
        assert!(less_loaded(5, 1, 0, 0));
        assert!(less_loaded(u64::MAX - 1, u32::MAX, u64::MAX, 1));
    }
}
