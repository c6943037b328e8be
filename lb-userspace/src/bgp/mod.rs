//! VIP announcement over BGP (docs/ha.md): the daemon decides, BIRD 2
//! carries. The controller publishes the VIPs to announce (every usable
//! VIP, none while drained); this task writes them into BIRD's config and
//! has BIRD reconfigure, supervises BIRD (restarting it with backoff when
//! it dies), and reads the sessions' states every second for the API and
//! the metrics. On stop it withdraws every VIP, gives the peers a moment to
//! hear it, then stops BIRD.
//!
//! - `conf`: bird.conf from the config and the set (pure).
//! - `bird`: BIRD as a child process, and `birdc`.
//! - `status`: reading `birdc show protocols`.
//! - `metrics`: the node and BGP series of `/metrics`.

mod bird;
pub mod conf;
pub mod metrics;
pub mod status;

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::{
    sync::{oneshot, watch},
    task::JoinHandle,
};
use tracing::{error, info, warn};

use crate::{
    api_types::{BgpStatus, PeerStatus},
    config::{Bgp as BgpConfig, Config},
};

pub use bird::find;

/// BGP's state as the API and the metrics read it.
pub type SharedStatus = Arc<RwLock<BgpStatus>>;

/// How often the sessions' states are read.
const POLL: Duration = Duration::from_secs(1);
/// How long a stop waits for BIRD to stop exporting the withdrawn routes.
const WITHDRAW_WAIT: Duration = Duration::from_secs(2);
/// After that, a moment for the UPDATEs on the wire to reach the peers
/// (BGP does not acknowledge them) before the sessions close.
const WITHDRAW_GRACE: Duration = Duration::from_millis(300);
/// BIRD restarts wait 1 s, doubling up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Checked and ready to start (`Bgp::prepare`).
pub struct Prepared {
    bgp: BgpConfig,
    router_id: Ipv4Addr,
    bird: bird::Bird,
}

impl Prepared {
    /// Starts BIRD and follows `announce` (once the program is attached).
    pub fn start(self, announce: watch::Receiver<BTreeSet<IpAddr>>) -> Bgp {
        let Prepared {
            bgp,
            router_id,
            bird,
        } = self;
        let status = Arc::new(RwLock::new(BgpStatus {
            router_id: Some(router_id),
            peers: peers_unknown(&bgp),
            announced: Vec::new(),
        }));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(
            Runner {
                bgp,
                router_id,
                bird,
                announce,
                status: status.clone(),
                applied: None,
            }
            .run(stopped),
        );
        Bgp {
            status,
            stop: Some(stop),
            task,
        }
    }
}

/// The running BGP task.
pub struct Bgp {
    status: SharedStatus,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Bgp {
    /// What can fail before anything is attached: BIRD installed,
    /// `run_dir` made, a router id (`config.bgp` must be set).
    pub fn prepare(config: &Config) -> anyhow::Result<Prepared> {
        let bgp = config.bgp.clone().context("no bgp section")?;
        let router_id = match bgp.router_id {
            Some(id) => id,
            None => first_ipv4(&config.interfaces[0]).with_context(|| {
                format!(
                    "bgp.router_id is not set and interface {} has no IPv4 address",
                    config.interfaces[0]
                )
            })?,
        };
        let bird = bird::Bird::new(&config.run_dir)
            .with_context(|| format!("bgp: run_dir {}", config.run_dir.display()))?;
        info!(
            "bgp: router id {router_id}, BIRD under {}",
            config.run_dir.display()
        );
        Ok(Prepared {
            bgp,
            router_id,
            bird,
        })
    }

    pub fn status(&self) -> SharedStatus {
        self.status.clone()
    }

    /// Resolves if the task ever ends by itself (it should not).
    pub async fn ended(&mut self) {
        let _ = (&mut self.task).await;
    }

    /// Withdraws every VIP, waits (bounded) for the peers to hear it, and
    /// stops BIRD.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .is_err()
        {
            warn!("bgp: stopping took over 10 s; leaving");
            self.task.abort();
        }
    }
}

/// The first IPv4 address of interface `name` (the default router id).
fn first_ipv4(name: &str) -> Option<Ipv4Addr> {
    nix::ifaddrs::getifaddrs()
        .ok()?
        .filter(|i| i.interface_name == name)
        .find_map(|i| i.address.and_then(|a| a.as_sockaddr_in().map(|s| s.ip())))
}

fn peers_unknown(bgp: &BgpConfig) -> Vec<PeerStatus> {
    bgp.peers
        .iter()
        .map(|p| PeerStatus {
            address: p.address,
            asn: p.asn,
            state: "unknown".into(),
            up: false,
        })
        .collect()
}

struct Runner {
    bgp: BgpConfig,
    router_id: Ipv4Addr,
    bird: bird::Bird,
    announce: watch::Receiver<BTreeSet<IpAddr>>,
    status: SharedStatus,
    /// The set BIRD was last configured with (None: not since its start).
    applied: Option<BTreeSet<IpAddr>>,
}

impl Runner {
    async fn run(mut self, mut stopped: oneshot::Receiver<()>) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let started = Instant::now();
            match self.start_bird().await {
                Ok(()) => {
                    let exited = tokio::select! {
                        _ = &mut stopped => return self.withdraw_and_stop().await,
                        e = self.follow() => e,
                    };
                    if started.elapsed() > MAX_BACKOFF {
                        backoff = Duration::from_secs(1);
                    }
                    error!(
                        "bgp: BIRD exited ({exited}); restarting in {}",
                        humantime::format_duration(backoff)
                    );
                }
                Err(e) => error!(
                    "bgp: starting BIRD: {e}; trying again in {}",
                    humantime::format_duration(backoff)
                ),
            }
            self.set_status(peers_unknown(&self.bgp), None);
            tokio::select! {
                _ = &mut stopped => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Writes the config of the current set and starts BIRD with it.
    async fn start_bird(&mut self) -> anyhow::Result<()> {
        let want = self.announce.borrow_and_update().clone();
        self.bird
            .write_conf(&conf::render(&self.bgp, self.router_id, &want))?;
        self.bird.start().await?;
        info!("bgp: BIRD started, announcing {}", list(&want));
        self.applied = Some(want);
        self.poll().await;
        Ok(())
    }

    /// Applies every new set and reads the sessions every second until
    /// BIRD exits; returns how it exited.
    async fn follow(&mut self) -> String {
        let mut tick = tokio::time::interval(POLL);
        let mut controller_gone = false;
        loop {
            tokio::select! {
                exited = self.bird.exited() => {
                    return match exited {
                        Ok(s) => s.to_string(),
                        Err(e) => e.to_string(),
                    };
                }
                changed = self.announce.changed(), if !controller_gone => {
                    controller_gone = changed.is_err();
                    self.apply().await;
                }
                _ = tick.tick() => {
                    // A configure that failed is tried again.
                    self.apply().await;
                    self.poll().await;
                }
            }
        }
    }

    /// Has BIRD announce the current set, if it does not already.
    async fn apply(&mut self) {
        let want = self.announce.borrow_and_update().clone();
        if self.applied.as_ref() == Some(&want) {
            return;
        }
        match self.configure(&want).await {
            Ok(()) => info!("bgp: announcing {}", list(&want)),
            Err(e) => error!("bgp: {e} (trying again in a second)"),
        }
    }

    async fn configure(&mut self, want: &BTreeSet<IpAddr>) -> Result<(), String> {
        self.bird
            .write_conf(&conf::render(&self.bgp, self.router_id, want))
            .map_err(|e| format!("writing bird.conf: {e}"))?;
        self.bird.configure().await?;
        self.applied = Some(want.clone());
        self.status
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .announced = want.iter().copied().collect();
        Ok(())
    }

    async fn poll(&mut self) {
        let peers = match self.bird.birdc(&["show", "protocols"]).await {
            Ok(text) => {
                let sessions = status::parse_protocols(&text);
                self.bgp
                    .peers
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let s = sessions.get(&conf::peer_name(i));
                        PeerStatus {
                            address: p.address,
                            asn: p.asn,
                            state: s.map_or("unknown".into(), |s| s.state.clone()),
                            up: s.is_some_and(|s| s.up),
                        }
                    })
                    .collect()
            }
            Err(e) => {
                warn!("bgp: {e}");
                peers_unknown(&self.bgp)
            }
        };
        let applied = self.applied.clone();
        self.set_status(peers, applied.as_ref());
    }

    fn set_status(&self, peers: Vec<PeerStatus>, announced: Option<&BTreeSet<IpAddr>>) {
        let mut s = self.status.write().unwrap_or_else(PoisonError::into_inner);
        s.peers = peers;
        s.announced = announced.map_or(Vec::new(), |a| a.iter().copied().collect());
    }

    /// A clean stop: withdraw everything, wait until BIRD exports nothing
    /// (bounded) and a moment more, then stop BIRD.
    async fn withdraw_and_stop(mut self) {
        let none = BTreeSet::new();
        match self.configure(&none).await {
            Ok(()) => {
                let start = Instant::now();
                while start.elapsed() < WITHDRAW_WAIT && self.exported().await > 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                tokio::time::sleep(WITHDRAW_GRACE).await;
                info!(
                    "bgp: withdrew every VIP ({} ms)",
                    start.elapsed().as_millis()
                );
            }
            Err(e) => error!("bgp: withdrawing before the stop: {e}"),
        }
        self.bird.stop().await;
        info!("bgp: BIRD stopped");
    }

    /// Routes BIRD still exports to any peer.
    async fn exported(&self) -> u64 {
        let mut n = 0;
        for i in 0..self.bgp.peers.len() {
            let name = conf::peer_name(i);
            match self
                .bird
                .birdc(&["show", "route", "export", &name, "count"])
                .await
            {
                Ok(text) => n += status::parse_export_count(&text),
                Err(_) => return 0,
            }
        }
        n
    }
}

fn list(vips: &BTreeSet<IpAddr>) -> String {
    if vips.is_empty() {
        return "nothing".into();
    }
    vips.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
