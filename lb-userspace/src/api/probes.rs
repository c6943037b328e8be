//! Health endpoints for supervisors (Kubernetes probes, load checks):
//! `GET /livez` answers 200 while the controller answers (its lock taken
//! within [`LIVE_WITHIN`]): a daemon stuck on it gets 503 and is restarted.
//! `GET /readyz` answers 200 while the program is attached to every
//! configured interface; 503 naming those it is not on (an interface
//! deleted and not back yet, or whose re-attach failed). Both are plain
//! text, need no token, and cost no map read.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};

use super::{Checks, Plane, Shared};

/// How long the controller may take to answer a liveness probe.
pub const LIVE_WITHIN: Duration = Duration::from_secs(2);

/// Whether the program is attached to each configured interface (kept by
/// the daemon as it attaches and as interfaces come and go).
#[derive(Clone, Default)]
pub struct Attachments(Arc<Mutex<BTreeMap<String, bool>>>);

impl Attachments {
    pub fn set(&self, iface: &str, attached: bool) {
        self.lock().insert(iface.to_owned(), attached);
    }

    /// The configured interfaces without the program.
    pub fn missing(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, attached)| !**attached)
            .map(|(iface, _)| iface.clone())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, bool>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(super) async fn livez<D: Plane, H: Checks>(
    State(shared): State<Arc<Shared<D, H>>>,
) -> Response {
    let s = shared.clone();
    let answered = tokio::time::timeout(
        LIVE_WITHIN,
        tokio::task::spawn_blocking(move || drop(s.controller())),
    )
    .await;
    match answered {
        Ok(Ok(())) => (StatusCode::OK, "ok\n").into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the controller did not answer within {LIVE_WITHIN:?}\n"),
        )
            .into_response(),
    }
}

pub(super) async fn readyz<D: Plane, H: Checks>(
    State(shared): State<Arc<Shared<D, H>>>,
) -> Response {
    match shared.attachments.missing() {
        missing if missing.is_empty() => (StatusCode::OK, "ready\n").into_response(),
        missing => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not attached to {}\n", missing.join(", ")),
        )
            .into_response(),
    }
}
