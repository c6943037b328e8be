//! `xdplb run`: load (adopting pinned state), fill the maps, attach, then
//! serve the admin API, health checks, neighbour requests and SIGHUP
//! reloads until SIGINT/SIGTERM, which detach or keep the program as
//! `on_exit` says.

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use prometheus::Registry;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tracing::{debug, error, info, warn};

use crate::{
    api::{self, Shared},
    config::{self, Config, OnExit},
    controller::Controller,
    dataplane::Dataplane,
    health::{HealthChecker, HealthMetrics},
    host, neigh,
};

/// How often flows idle past their timeout are deleted.
const FLOW_GC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let cfg = Config::load(config_path)?;
    config::check_host(&cfg)?;
    let token = read_token(&cfg)?;

    let mut dp =
        Dataplane::load(&cfg.limits, cfg.pin_dir.as_deref()).context("loading the XDP program")?;
    for iface in &cfg.interfaces {
        if host::enable_ipv4_forwarding(iface)
            .with_context(|| format!("enabling IPv4 forwarding on {iface}"))?
        {
            info!("enabled net.ipv4.conf.{iface}.forwarding (bpf_fib_lookup needs it)");
        }
    }
    let events = dp.take_neigh_events()?;
    let registry = Registry::new();
    let (health_tx, mut health_rx) = mpsc::unbounded_channel();
    let health = HealthChecker::new(health_tx, HealthMetrics::new(&registry)?);
    // Maps first, attach last: the first packet already sees the whole config.
    let mut controller = Controller::new(config_path.to_owned(), cfg.clone(), dp, health)
        .context("filling the data-plane maps")?;
    for b in controller.plan().services.iter().flat_map(|s| &s.backends) {
        neigh::resolve(b.addr.ip());
    }
    for iface in &cfg.interfaces {
        let how = controller.dataplane_mut().attach(iface, cfg.xdp_mode)?;
        info!("attached to {iface} in {how}");
    }
    for iface in controller.dataplane_mut().detach_others(&cfg.interfaces)? {
        info!("detached from {iface} (no longer configured)");
    }
    let plan = controller.plan();
    info!(
        "{} services, {} backends; admin on http://{}",
        plan.services.len(),
        plan.services
            .iter()
            .map(|s| s.backends.len())
            .sum::<usize>(),
        cfg.admin.listen
    );

    let shared = Arc::new(Shared {
        controller: Mutex::new(controller),
        registry,
        token,
    });
    let listener = tokio::net::TcpListener::bind(cfg.admin.listen)
        .await
        .with_context(|| format!("admin.listen {}", cfg.admin.listen))?;
    let api_task = tokio::spawn(axum::serve(listener, api::router(shared.clone())).into_future());
    let neigh_task = tokio::spawn(async move {
        if let Err(e) = neigh::watch(events).await {
            error!("neighbour watcher stopped: {e}");
        }
    });
    let health_shared = shared.clone();
    let health_task = tokio::spawn(async move {
        while let Some(t) = health_rx.recv().await {
            let s = health_shared.clone();
            let _ = tokio::task::spawn_blocking(move || {
                s.controller.lock().expect("controller lock").on_health(&t)
            })
            .await;
        }
    });

    let gc_shared = shared.clone();
    let gc_task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLOW_GC_INTERVAL);
        loop {
            tick.tick().await;
            let s = gc_shared.clone();
            let done = tokio::task::spawn_blocking(move || {
                s.controller
                    .lock()
                    .expect("controller lock")
                    .dataplane_mut()
                    .expire_flows()
            })
            .await;
            match done {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => debug!("deleted {n} expired flows"),
                Ok(Err(e)) => warn!("expiring flows: {e}"),
                Err(e) => warn!("flow expiry task: {e}"),
            }
        }
    });

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM"); break }
            _ = int.recv() => { info!("SIGINT"); break }
            _ = hup.recv() => {
                let s = shared.clone();
                let result = tokio::task::spawn_blocking(move || {
                    s.controller.lock().expect("controller lock").reload()
                })
                .await?;
                match result {
                    Ok(summary) => info!("SIGHUP: reloaded: {summary:?}"),
                    Err(e) => error!("SIGHUP: reload refused, nothing changed: {}", e.message),
                }
            }
        }
    }
    api_task.abort();
    health_task.abort();
    gc_task.abort();
    neigh_task.abort();
    let mut controller = shared.controller.lock().expect("controller lock");
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
    Ok(())
}

fn read_token(cfg: &Config) -> anyhow::Result<Option<String>> {
    let Some(path) = &cfg.admin.token_file else {
        return Ok(None);
    };
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("admin.token_file {}", path.display()))?;
    let token = token.trim().to_owned();
    anyhow::ensure!(
        !token.is_empty(),
        "admin.token_file {} is empty",
        path.display()
    );
    Ok(Some(token))
}
