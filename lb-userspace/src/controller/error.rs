//! What the controller refuses, and why, in its own terms: the admin API
//! maps each kind to an HTTP status (`api::error`), SIGHUP logs it.

use std::net::SocketAddr;

use crate::{config::ConfigError, dataplane::DataplaneError};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no service named {0:?}")]
    NoService(String),
    #[error("service {service} has no backend {addr}")]
    NoBackend { service: String, addr: SocketAddr },
    #[error("service {0} has no rollout (start one: xdplb rollout start)")]
    NoRollout(String),
    /// The request clashes with what runs (a rollout owns the weights).
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong (nothing to change, value out of range).
    #[error("{0}")]
    BadRequest(String),
    /// The config file did not load or validate; nothing changed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "{} cannot change on reload; restart xdplb (pinned state keeps flows)",
        .0.join(", ")
    )]
    RestartOnly(Vec<&'static str>),
    /// The config is valid but does not fit what was loaded (no free id).
    #[error("{0}")]
    Capacity(String),
    #[error("data plane: {0}")]
    Dataplane(#[from] DataplaneError),
    /// Applying a change failed, and so did putting the previous state
    /// back: the maps may hold a mix of both until a change applies.
    #[error(
        "data plane: {apply}; restoring the previous config also failed: {rollback} \
         (the maps may hold a mix of both: fix the cause, then reload)"
    )]
    RollbackFailed {
        apply: Box<DataplaneError>,
        rollback: Box<DataplaneError>,
    },
}
