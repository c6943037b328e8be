//! `xdplb run`: load (adopting pinned state), fill the maps, attach, then
//! serve the admin API, health checks, neighbour requests, flow expiry,
//! interface changes (an interface deleted and created again gets the
//! program again) and SIGHUP reloads until SIGINT/SIGTERM, which detach or
//! keep the program as `on_exit` says. A start that fails before it is set
//! up leaves nothing attached or pinned (`Dataplane`'s drop). With `bgp`,
//! BIRD starts once the program is attached (a VIP is announced only while
//! this node forwards), and a stop withdraws every VIP before anything
//! else. The API server and every background task are watched: one that
//! ends stops the daemon with an error (a supervisor restarts it; with a
//! pin dir, traffic never notices).

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, bail};
use prometheus::Registry;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
    task::JoinSet,
};
use tracing::{debug, error, info, warn};

use crate::{
    api::{self, Attachments, Shared},
    bgp::{Bgp, metrics::NodeCollector},
    config::{self, Config, OnExit, XdpModeSetting},
    controller::{Controller, SharedPlan, run_when_due},
    dataplane::{Dataplane, FlowTable},
    health::{HealthChecker, HealthMetrics},
    history::{self, History},
    ids::Ids,
    link_watch::{Change, LinkState, LinkWatch},
    metrics::DataplaneCollector,
    neigh, offload, privileges,
    rollout::metrics::RolloutMetrics,
    supervisor,
    sync::{FlowSync, metrics::SyncCollector},
    token::read_token_file,
};

/// How often flows idle past their timeout are deleted (and counted).
const FLOW_GC_INTERVAL: Duration = Duration::from_secs(5);
/// Unconfirmed flows are swept more often: their SNAT ports are wanted
/// back soon (a client making a new UDP flow per request can take
/// thousands a second).
const UNCONFIRMED_GC_INTERVAL: Duration = Duration::from_secs(1);

pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    rings_memory_returned();
    // First of all: a SIGHUP (`systemctl reload` right after READY=1, a
    // script) or SIGTERM that comes while the daemon sets up waits for the
    // loop below, instead of killing it with the default action.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let cfg = Config::load(config_path)?;
    config::check_host(&cfg)?;
    privileges::check_can_start().map_err(anyhow::Error::msg)?;
    let token = cfg
        .admin
        .token_file
        .as_deref()
        .map(read_token_file)
        .transpose()
        .context("admin.token_file")?;

    // Checked before anything is loaded; BIRD starts once attached.
    let bgp = cfg.bgp.as_ref().map(|_| Bgp::prepare(&cfg)).transpose()?;
    let flow_sync = match &cfg.flow_sync {
        Some(s) => Some(FlowSync::bind(s, &cfg.interfaces).await?),
        None => None,
    };

    let mut dp =
        Dataplane::load(&cfg.limits, cfg.pin_dir.as_deref()).context("loading the XDP program")?;
    let events = dp.take_neigh_events()?;
    let partial_csum = dp.take_partial_csum()?;
    let adopted = dp.adopted();
    if !adopted.services.is_empty() {
        info!(
            "adopted {} services and {} backends from pinned maps",
            adopted.services.len(),
            adopted.backends.len()
        );
    }
    let ids = Ids::adopt(&cfg, &adopted).map_err(anyhow::Error::msg)?;
    let counters = dp.counter_reader()?;
    let partial_csum_counters = dp.counter_reader()?;
    let history_counters = dp.counter_reader()?;
    let flows = dp.flow_table()?;
    let sync_maps = match &flow_sync {
        Some(_) => Some((dp.sync_maps()?, dp.flow_table()?)),
        None => None,
    };

    let registry = Registry::new();
    let (health_tx, mut health_rx) = mpsc::unbounded_channel();
    let health = HealthChecker::new(health_tx, HealthMetrics::new(&registry)?);
    // Maps first, attach last: the first packet already sees the whole config.
    let mut controller = Controller::new(config_path.to_owned(), cfg.clone(), ids, dp, health)
        .context("filling the data-plane maps")?;
    controller.set_rollout_metrics(RolloutMetrics::new(&registry)?);
    registry.register(Box::new(DataplaneCollector::new(
        controller.shared_plan(),
        counters,
        flows.swept_entries(),
    )))?;
    for b in controller.plan().services.iter().flat_map(|s| &s.backends) {
        neigh::resolve(b.addr.ip());
    }
    // Before attaching: no interface change after it is missed.
    let links = LinkWatch::open(&cfg.interfaces).context("subscribing to link events")?;
    let attachments = Attachments::default();
    for iface in &cfg.interfaces {
        let how = controller.dataplane_mut().attach(iface, cfg.xdp_mode)?;
        attachments.set(iface, true);
        info!("attached to {iface} in {how}");
    }
    for iface in controller.dataplane_mut().detach_others(&cfg.interfaces)? {
        info!("detached from {iface} (no longer configured)");
    }
    let listener = tokio::net::TcpListener::bind(cfg.admin.listen)
        .await
        .with_context(|| format!("admin.listen {}", cfg.admin.listen))?;
    // Set up: from here on only what the running daemon needs (BIRD, which
    // starts next, gets only what `needed` gives children).
    let kept = privileges::drop_to(privileges::needed(&cfg))
        .context("dropping the capabilities the daemon no longer needs")?;
    info!(
        "capabilities kept: {}; children (BIRD) get at most: {}",
        privileges::Kept::names(kept.own).join(", "),
        match privileges::Kept::names(kept.for_children()).join(", ") {
            names if names.is_empty() => "none".to_string(),
            names => names,
        }
    );
    // Attached: from now on a VIP may be announced.
    let mut bgp = bgp.map(|b| b.start(controller.announcements()));
    registry.register(Box::new(NodeCollector::new(
        controller.shared_plan(),
        controller.node_watch(),
        bgp.as_ref().map(Bgp::status),
    )))?;
    if let Some(s) = &flow_sync {
        registry.register(Box::new(SyncCollector::new(s.status())))?;
    }
    info!("{}", serving(&controller, &cfg));

    let shared = Arc::new(Shared {
        node: controller.node_watch(),
        bgp: bgp.as_ref().map(Bgp::status),
        flow_sync: flow_sync.as_ref().map(FlowSync::status),
        history: History::new(cfg.interfaces.clone()),
        attachments,
        controller: Mutex::new(controller),
        registry,
        token,
    });
    shared.controller().dataplane_mut().set_up();

    // Each task returns its name if it ever ends.
    let mut tasks = JoinSet::new();
    let router = api::router(shared.clone());
    tasks.spawn(async move {
        api::serve(listener, router).await;
        "the admin API server"
    });
    tasks.spawn(async move {
        if let Err(e) = neigh::watch(events).await {
            error!("neighbour watcher: {e}");
        }
        "the neighbour watcher"
    });
    let health_shared = shared.clone();
    tasks.spawn(async move {
        while let Some(t) = health_rx.recv().await {
            let s = health_shared.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || s.controller().on_health(&t)).await
            {
                error!("applying a health transition: {e}");
            }
        }
        "the health-check listener"
    });
    let ramps = shared.controller().slow_start_steps();
    let ramp_shared = shared.clone();
    tasks.spawn(run_when_due(
        ramps,
        move || ramp_shared.controller().slow_start_step(),
        "the slow-start ramps",
    ));
    let checks = shared.controller().rollout_checks();
    let rollout_shared = shared.clone();
    tasks.spawn(run_when_due(
        checks,
        move || rollout_shared.controller().rollout_check(),
        "the rollout checks",
    ));
    let plan = shared.controller().shared_plan();
    tasks.spawn(history::sample(
        shared.history.clone(),
        plan.clone(),
        history_counters,
        flows.swept_entries(),
    ));
    tasks.spawn(expire_flows(flows));
    tasks.spawn(offload::watch(partial_csum, partial_csum_counters));
    tasks.spawn(follow_links(links, shared.clone(), plan, cfg.xdp_mode));
    let goodbye = flow_sync.as_ref().map(FlowSync::goodbye);
    if let (Some(sync), Some((maps, table))) = (flow_sync, sync_maps) {
        tasks.spawn(async move {
            if let Err(e) = sync.run(maps, table).await {
                error!("flow sync: {e:#}");
            }
            "the flow sync"
        });
    }

    tasks.spawn(supervisor::watchdog(shared.clone()));
    supervisor::ready(&serving(&shared.controller(), &cfg));

    let failed = loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM"); break None }
            _ = int.recv() => { info!("SIGINT"); break None }
            _ = hup.recv() => {
                let s = shared.clone();
                supervisor::reloading();
                match tokio::task::spawn_blocking(move || s.reload()).await {
                    Ok(Ok(summary)) => info!("SIGHUP: reloaded: {summary:?}"),
                    Ok(Err(e)) => error!("SIGHUP: reload refused, nothing changed: {e}"),
                    Err(e) => error!("SIGHUP: the reload failed ({e}); nothing changed"),
                }
                supervisor::ready(&serving(&shared.controller(), &cfg));
            }
            Some(ended) = tasks.join_next() => {
                let what = match ended {
                    Ok(name) => format!("{name} stopped"),
                    Err(e) => format!("a daemon task failed: {e}"),
                };
                error!("{what}: exiting");
                break Some(what);
            }
            _ = async { bgp.as_mut().expect("guarded").ended().await }, if bgp.is_some() => {
                error!("the BGP task stopped: exiting");
                bgp = None;
                break Some("the BGP task stopped".into());
            }
        }
    };
    supervisor::stopping();
    // Withdraw first: peers send no new traffic here while the program
    // still forwards what is on its way.
    if let Some(bgp) = bgp.take() {
        bgp.stop().await;
    }
    // Then the peers: they hand this node nothing more.
    if let Some(bye) = goodbye {
        bye.await;
    }
    tasks.abort_all();
    let mut controller = shared.controller();
    match cfg.on_exit {
        OnExit::Detach => {
            controller.dataplane_mut().unpin_all()?;
            info!("detached, exiting");
        }
        OnExit::Keep => info!(
            "exiting; the program stays attached with its state pinned in {} (on_exit: keep)",
            cfg.pin_dir
                .as_deref()
                .map_or("(nowhere: pin_dir is null)".into(), |p| p
                    .display()
                    .to_string())
        ),
    }
    if let Some(what) = failed {
        bail!("{what}");
    }
    Ok(())
}

/// A Maglev ring (2 bytes an entry, `plan::Ring`: just over 128 KiB at
/// the default size) is allocated by each reload that changes it and freed
/// by the next. glibc serves such blocks from mmap, returned to the system
/// when freed, only until the first is freed: then it raises its threshold
/// above them, and later rings come from heaps (the ring builders' threads'
/// own) that keep the memory. A fixed threshold keeps RSS at what the plan
/// in force holds.
fn rings_memory_returned() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// One line on what runs: the log's and `systemctl status`'s.
fn serving(controller: &Controller, cfg: &Config) -> String {
    let plan = controller.plan();
    format!(
        "{} services, {} backends; admin on http://{}",
        plan.services.len(),
        plan.services
            .iter()
            .map(|s| s.backends.len())
            .sum::<usize>(),
        cfg.admin.listen
    )
}

/// Follows the configured interfaces (`LinkWatch`): one deleted and
/// created again gets the program again; one line for each change. A
/// neighbour entry deleted on one (that was usable, or a backend's) is
/// resolved again at once; those flushed with a link are asked for by the
/// program itself (`neigh`) once it meets them and a route is back.
async fn follow_links(
    mut links: LinkWatch,
    shared: Arc<Shared>,
    plan: SharedPlan,
    mode: XdpModeSetting,
) -> &'static str {
    loop {
        let change = match links.next().await {
            Ok(c) => c,
            Err(e) => {
                error!("following link events: {e}");
                return "the interface watcher";
            }
        };
        match change {
            Change::Gone { iface, index } => {
                shared.attachments.set(&iface, false);
                warn!(
                    "{iface} (ifindex {index}) was deleted, and the XDP program with it: \
                     nothing passes through it until an interface of that name is back"
                )
            }
            Change::Back { iface, seen } => {
                let s = shared.clone();
                let name = iface.clone();
                let attached = tokio::task::spawn_blocking(move || {
                    s.controller().dataplane_mut().reattach(&name, mode)
                })
                .await;
                shared
                    .attachments
                    .set(&iface, matches!(attached, Ok(Ok(_))));
                match attached {
                    Ok(Ok(how)) => info!(
                        "{iface} is back (ifindex {}, link {:?}): re-attached in {how}",
                        seen.index, seen.state
                    ),
                    Ok(Err(e)) => error!(
                        "{iface} is back (ifindex {}) but attaching to it failed: {e}; \
                         nothing is balanced through it",
                        seen.index
                    ),
                    Err(e) => error!("re-attaching to {iface}: {e}"),
                }
            }
            Change::State { iface, state } => match state {
                LinkState::Up => info!("{iface}: link up"),
                LinkState::Down => warn!(
                    "{iface}: link down (the program stays attached; nothing passes through it until it is up)"
                ),
                LinkState::NoCarrier => warn!(
                    "{iface}: no carrier (the program stays attached; nothing passes through it until the other end is up)"
                ),
            },
            Change::NeighbourGone {
                iface,
                addr,
                was_valid,
            } => {
                let backend = || {
                    plan.get()
                        .services
                        .iter()
                        .flat_map(|s| &s.backends)
                        .any(|b| b.addr.ip() == addr)
                };
                if was_valid || backend() {
                    match neigh::try_resolve(addr) {
                        Ok(()) => debug!("{iface}: neighbour {addr} deleted; resolving it again"),
                        Err(e) => {
                            debug!("{iface}: neighbour {addr} deleted; not resolvable now: {e}")
                        }
                    }
                }
            }
        }
    }
}

/// Every `FLOW_GC_INTERVAL`: deletes expired flows and counts the rest,
/// on the flow table's own handle (never waits for the controller); in
/// between, every `UNCONFIRMED_GC_INTERVAL`, expired unconfirmed ones.
async fn expire_flows(mut table: FlowTable) -> &'static str {
    let mut tick = tokio::time::interval(UNCONFIRMED_GC_INTERVAL);
    let every = (FLOW_GC_INTERVAL.as_secs() / UNCONFIRMED_GC_INTERVAL.as_secs()).max(1);
    for round in 0u64.. {
        tick.tick().await;
        let all = round % every == 0;
        let swept = tokio::task::spawn_blocking(move || {
            let done = if all {
                table.expire()
            } else {
                table.expire_unconfirmed()
            };
            (table, done)
        })
        .await;
        match swept {
            Ok((t, done)) => {
                table = t;
                match done {
                    Ok(0) => {}
                    Ok(n) => debug!("deleted {n} expired flows"),
                    Err(e) => warn!("expiring flows: {e}"),
                }
            }
            Err(e) => {
                error!("flow expiry: {e}");
                return "the flow expiry sweep";
            }
        }
    }
    unreachable!("the rounds do not end")
}
