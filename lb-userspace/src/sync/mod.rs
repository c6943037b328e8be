//! Flow sync across the LB nodes of a tier (docs/ha.md, "nat across
//! nodes"). The program announces each nat flow it creates on
//! `SYNC_EVENTS`; this task sends them to every peer over UDP
//! (`flow_sync.port`), and records the flows the peers send in `OWNERS`
//! (5-tuple -> peer index). With it, a node that gets a packet of a flow
//! a live peer owns hands the frame to that peer (the program's `owner`
//! module). Heartbeats (hello, carrying the sender's MACs, every third of
//! `dead_after`) keep each peer marked alive in `PEERS`; a peer silent for
//! `dead_after`, or that said bye, is marked down and gets nothing more.
//! A peer that comes up is sent every nat flow this node holds.
//!
//! - `wire`: the datagram format.
//! - `metrics`: the `xdplb_sync_*` series.

pub mod metrics;
pub mod wire;

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::maps::{Array, HashMap, MapData, MapError, RingBuf};
use lb_common::{FlowKey, Peer, addr_words, mac_key};
use tokio::{io::unix::AsyncFd, net::UdpSocket};
use tracing::{debug, info, warn};

use crate::{
    api_types::{SyncPeerStatus, SyncStatus},
    config::FlowSync as SyncConfig,
    dataplane::FlowTable,
};

/// The program's flow-sync maps (`Dataplane::sync_maps`).
pub struct Maps {
    pub events: RingBuf<MapData>,
    pub owners: HashMap<MapData, FlowKey, u32>,
    pub peers: Array<MapData, Peer>,
    pub peer_macs: HashMap<MapData, [u8; 8], u32>,
}

/// What the API and the metrics read.
pub type SharedStatus = Arc<RwLock<SyncStatus>>;

/// The bound socket and what the task needs; `run` is the task.
pub struct FlowSync {
    cfg: SyncConfig,
    socket: Arc<UdpSocket>,
    macs: Vec<[u8; 6]>,
    status: SharedStatus,
}

/// Per-peer state of the task.
struct PeerState {
    addr: IpAddr,
    last_heard: Option<Instant>,
    alive: bool,
}

impl FlowSync {
    /// Binds `flow_sync.address`:`port` and reads this node's MACs on
    /// `interfaces` (sent in hellos: frames from them are never handed on).
    pub async fn bind(cfg: &SyncConfig, interfaces: &[String]) -> anyhow::Result<FlowSync> {
        let at = SocketAddr::new(cfg.address, cfg.port);
        let socket = UdpSocket::bind(at).await.with_context(|| {
            format!("flow_sync: binding {at} (is flow_sync.address an address of this host?)")
        })?;
        let macs = own_macs(interfaces)?;
        let status = Arc::new(RwLock::new(SyncStatus {
            address: cfg.address,
            port: cfg.port,
            flows_sent: 0,
            peers: cfg
                .peers
                .iter()
                .map(|&address| SyncPeerStatus {
                    address,
                    up: false,
                    last_heard_ms: None,
                    flows_received: 0,
                })
                .collect(),
        }));
        Ok(FlowSync {
            cfg: cfg.clone(),
            socket: Arc::new(socket),
            macs,
            status,
        })
    }

    pub fn status(&self) -> SharedStatus {
        self.status.clone()
    }

    /// Tells every peer this node stops (they hand it nothing more).
    pub fn goodbye(&self) -> impl Future<Output = ()> + use<> {
        let (socket, peers, port) = (self.socket.clone(), self.cfg.peers.clone(), self.cfg.port);
        async move {
            let bye = wire::bye();
            for p in peers {
                let _ = socket.send_to(&bye, (p, port)).await;
            }
        }
    }

    /// Runs until an error on the socket or the ring.
    pub async fn run(self, mut maps: Maps, flows: FlowTable) -> anyhow::Result<()> {
        let mut peers: Vec<PeerState> = self
            .cfg
            .peers
            .iter()
            .map(|&addr| PeerState {
                addr,
                last_heard: None,
                alive: false,
            })
            .collect();
        // Nothing from an earlier run is trusted: every peer down, no MACs.
        for (i, p) in peers.iter().enumerate() {
            set_peer(&mut maps.peers, i, p)?;
        }
        let stale: Vec<[u8; 8]> = maps.peer_macs.keys().filter_map(Result::ok).collect();
        for k in stale {
            let _ = maps.peer_macs.remove(&k);
        }
        let beat = (self.cfg.dead_after / 3).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(beat);
        // SAFETY: the ring buffer owns its fd and outlives the registration.
        let mut ring = unsafe { AsyncFd::register(maps.events) }.map_err(std::io::Error::from)?;
        let mut buf = vec![0u8; 65536];
        info!(
            "flow sync on {}:{} with {} peers",
            self.cfg.address,
            self.cfg.port,
            peers.len()
        );
        loop {
            tokio::select! {
                ready = ring.readable_mut() => {
                    let mut guard = ready?;
                    let mut keys = Vec::new();
                    let events = guard.get_inner_mut();
                    while let Some(item) = events.next() {
                        if item.len() >= std::mem::size_of::<FlowKey>() {
                            // SAFETY: the program writes whole FlowKeys.
                            keys.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) });
                        }
                    }
                    guard.clear_ready();
                    self.send_flows(&keys, peers.iter().map(|p| p.addr)).await;
                }
                got = self.socket.recv_from(&mut buf) => {
                    let (n, from) = got.context("flow_sync: receiving")?;
                    let Some(i) = peers.iter().position(|p| p.addr == from.ip()) else {
                        debug!("flow sync: ignored a datagram from {from}, not a peer");
                        continue;
                    };
                    let msg = match wire::decode(&buf[..n]) {
                        Ok(m) => m,
                        Err(e) => {
                            warn!("flow sync: a bad datagram from {from}: {e}");
                            continue;
                        }
                    };
                    let was_alive = peers[i].alive;
                    let p = &mut peers[i];
                    match msg {
                        wire::Message::Bye => {
                            p.alive = false;
                            p.last_heard = None;
                            info!("flow sync: peer {} said bye", p.addr);
                            set_peer(&mut maps.peers, i, p)?;
                        }
                        wire::Message::Hello(macs) => {
                            for m in macs {
                                let _ = maps.peer_macs.insert(mac_key(&m), i as u32, 0);
                            }
                            p.last_heard = Some(Instant::now());
                            p.alive = true;
                        }
                        wire::Message::Flows(keys) => {
                            for k in &keys {
                                let _ = maps.owners.insert(k, i as u32, 0);
                            }
                            self.count_received(i, keys.len());
                            p.last_heard = Some(Instant::now());
                            p.alive = true;
                        }
                    }
                    if p.alive && !was_alive {
                        info!("flow sync: peer {} is up", p.addr);
                        set_peer(&mut maps.peers, i, p)?;
                        // It may have missed flows made while it was away.
                        self.send_held_flows(&flows, p.addr).await;
                    }
                }
                _ = tick.tick() => {
                    let hello = wire::hello(&self.macs);
                    for p in &mut peers {
                        if let Err(e) = self.socket.send_to(&hello, (p.addr, self.cfg.port)).await {
                            debug!("flow sync: hello to {}: {e}", p.addr);
                        }
                    }
                    for (i, p) in peers.iter_mut().enumerate() {
                        if p.alive && p.last_heard.is_none_or(|t| t.elapsed() > self.cfg.dead_after) {
                            p.alive = false;
                            warn!(
                                "flow sync: peer {} silent for {:?}: down",
                                p.addr, self.cfg.dead_after
                            );
                            set_peer(&mut maps.peers, i, p)?;
                        }
                    }
                    self.publish(&peers);
                }
            }
        }
    }

    async fn send_flows(&self, keys: &[FlowKey], to: impl Iterator<Item = IpAddr>) {
        if keys.is_empty() {
            return;
        }
        let grams = wire::flows(keys);
        for peer in to {
            for g in &grams {
                if let Err(e) = self.socket.send_to(g, (peer, self.cfg.port)).await {
                    debug!("flow sync: flows to {peer}: {e}");
                    break;
                }
            }
        }
        self.status
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .flows_sent += keys.len() as u64;
    }

    /// Every nat flow (one with a SNAT port) in this node's flow table.
    async fn send_held_flows(&self, flows: &FlowTable, peer: IpAddr) {
        let held: Vec<FlowKey> = match flows.entries() {
            Ok(e) => e
                .into_iter()
                .filter(|(_, f)| f.snat_port != 0)
                .map(|(k, _)| k)
                .collect(),
            Err(e) => {
                warn!("flow sync: reading the flow table for {peer}: {e}");
                return;
            }
        };
        // Only ours: a flow a peer made is not in our flow table.
        if !held.is_empty() {
            info!("flow sync: sending {} held nat flows to {peer}", held.len());
        }
        self.send_flows(&held, std::iter::once(peer)).await;
    }

    fn count_received(&self, peer: usize, n: usize) {
        let mut s = self.status.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = s.peers.get_mut(peer) {
            p.flows_received += n as u64;
        }
    }

    fn publish(&self, peers: &[PeerState]) {
        let mut s = self.status.write().unwrap_or_else(PoisonError::into_inner);
        for (st, p) in s.peers.iter_mut().zip(peers) {
            st.up = p.alive;
            st.last_heard_ms = p.last_heard.map(|t| t.elapsed().as_millis() as u64);
        }
    }
}

/// Writes peer `i`'s entry (its address; alive or not). The program's
/// next-hop cache in it starts empty.
fn set_peer(map: &mut Array<MapData, Peer>, i: usize, p: &PeerState) -> anyhow::Result<()> {
    let (addr, family) = addr_words(p.addr);
    let entry = Peer {
        addr,
        family,
        alive: p.alive as u8,
        ..Peer::default()
    };
    map.set(i as u32, entry, 0)
        .map_err(|e: MapError| anyhow::anyhow!("map PEERS: {e}"))
}

/// The link-layer addresses of `interfaces`, read in this network
/// namespace (not from /sys, which may be another namespace's).
fn own_macs(interfaces: &[String]) -> anyhow::Result<Vec<[u8; 6]>> {
    let mut macs = HashSet::new();
    for ifa in nix::ifaddrs::getifaddrs().context("reading this host's interfaces")? {
        if interfaces.contains(&ifa.interface_name)
            && let Some(mac) = ifa
                .address
                .as_ref()
                .and_then(|a| a.as_link_addr())
                .and_then(|l| l.addr())
        {
            macs.insert(mac);
        }
    }
    Ok(macs.into_iter().collect())
}
