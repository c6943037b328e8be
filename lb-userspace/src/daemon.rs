//! `xdplb run`: load, fill the maps, attach, serve the admin API, and
//! detach cleanly on SIGINT/SIGTERM.

use std::{path::Path, sync::Arc, sync::Mutex};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::{
    api::{self, Shared},
    config::{self, Config},
    dataplane::Dataplane,
    host, neigh, plan,
};

pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let cfg = Config::load(config_path)?;
    config::check_host(&cfg)?;
    let plan = plan::plan(&cfg);

    let mut dp = Dataplane::load(&cfg.limits).context("loading the XDP program")?;
    // Maps first, attach last: the first packet already sees the whole config.
    dp.apply(&plan).context("filling the data-plane maps")?;
    for iface in &cfg.interfaces {
        if host::enable_ipv4_forwarding(iface)
            .with_context(|| format!("enabling IPv4 forwarding on {iface}"))?
        {
            info!("enabled net.ipv4.conf.{iface}.forwarding (bpf_fib_lookup needs it)");
        }
    }
    for b in plan.services.iter().flat_map(|s| &s.backends) {
        neigh::resolve(b.addr.ip());
    }
    let events = dp.take_neigh_events()?;
    for iface in &cfg.interfaces {
        let mode = dp.attach(iface, cfg.xdp_mode)?;
        info!("attached to {iface} in {mode} mode");
    }
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
        dataplane: Mutex::new(dp),
        plan: Mutex::new(plan),
    });
    let listener = tokio::net::TcpListener::bind(cfg.admin.listen)
        .await
        .with_context(|| format!("admin.listen {}", cfg.admin.listen))?;
    let api_task = tokio::spawn(axum::serve(listener, api::router(shared.clone())).into_future());
    let neigh_task = tokio::spawn(neigh::watch(events));

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: detaching"),
        _ = int.recv() => info!("SIGINT: detaching"),
        r = neigh_task => warn!("neighbour watcher stopped: {r:?}"),
    }
    api_task.abort();
    // Dropping the program detaches it from every interface.
    match Arc::try_unwrap(shared) {
        Ok(shared) => drop(shared),
        Err(_) => warn!("API still holds the data plane; it detaches at exit"),
    }
    info!("detached, exiting");
    Ok(())
}
