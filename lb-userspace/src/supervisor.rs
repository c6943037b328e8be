//! Telling systemd (or any supervisor speaking its notify protocol) where
//! the daemon is: `Type=notify` in deploy/systemd/xdplb.service waits for
//! READY=1, which is sent once the program is attached and the admin API
//! listens; a reload is framed by RELOADING=1 / READY=1 and a stop starts
//! with STOPPING=1. With `WatchdogSec=`, a task pings the watchdog only
//! while the controller answers, so a daemon stuck on its lock is
//! restarted. Without NOTIFY_SOCKET (run by hand, in tests) every call is
//! a no-op.

use std::sync::Arc;

use sd_notify::NotifyState;
use tracing::warn;

use crate::api::Shared;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!("telling systemd ({states:?}): {e}");
    }
}

/// Set up and serving; `status` is what `systemctl status` shows.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload begins (systemd needs the monotonic time with it).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(e) => warn!("reading the monotonic clock for systemd: {e}"),
    }
}

/// The stop begins.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// Pings the watchdog at half its interval while the controller's lock can
/// be taken; never ends (nothing to do without a watchdog).
pub async fn watchdog(shared: Arc<Shared>) -> &'static str {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval(interval / 2);
    loop {
        tick.tick().await;
        let s = shared.clone();
        // The lock is taken on a blocking thread: a stuck controller stops
        // the pings, not the runtime.
        let answered = tokio::time::timeout(
            interval / 2,
            tokio::task::spawn_blocking(move || drop(s.controller())),
        )
        .await;
        if matches!(answered, Ok(Ok(()))) {
            send(&[NotifyState::Watchdog]);
        } else {
            warn!(
                "the controller did not answer within {:?}: not pinging the watchdog",
                interval / 2
            );
        }
    }
}
