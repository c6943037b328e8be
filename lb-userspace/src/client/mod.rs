//! The client side of the CLI (`xdplb status`, `backend`, `reload`, `top`,
//! `explain`, `rollout`): a small blocking client of the daemon's admin API
//! (docs/design.md section 5) and the text the commands print.
//!
//! - `settings`: where the daemon is and where its token is ([`Settings`]).
//! - `transport`: the HTTP requests ([`Client`]).
//! - `rates`: packets and bytes per second between two reads ([`Rates`]).
//! - `render`: the tables and lines the commands print (`rollouts`: of
//!   rollouts).

mod rates;
mod render;
mod rollouts;
mod settings;
mod transport;

use std::time::Duration;

pub use rates::{Rate, Rates, Sample, SignalRates};
pub use render::{
    effective_word, health_word, node_word, render_backend, render_node, render_reload,
    render_status, state_word,
};
pub use rollouts::{render_rollout, render_rollout_line};
pub use settings::{DEFAULT_ADMIN, Settings, parse_admin};
pub use transport::Client;

use crate::token::TokenError;

/// Limit for one whole request: connect, send, answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Why a client command failed. [`ClientError::exit_code`] maps it to the
/// CLI's exit codes (1 runtime, 2 usage/config or refused by the API).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Bad `--admin`, unreadable config or token file: exit 2.
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the daemon at {admin}: {reason} (is xdplb run going?)")]
    Unreachable { admin: String, reason: String },
    #[error("no answer from the daemon at {admin} within {}s to {request}", TIMEOUT.as_secs())]
    Timeout { admin: String, request: String },
    #[error("{request} to the daemon at {admin} failed: {reason}")]
    Transport {
        admin: String,
        request: String,
        reason: String,
    },
    /// A 4xx (exit 2) or 5xx (exit 1) answer; `message` is the API's.
    #[error("{request}: {message} (HTTP {status}){hint}")]
    Api {
        request: String,
        status: u16,
        message: String,
        hint: &'static str,
    },
    /// Not the JSON the contract says (another version of xdplb?).
    #[error("unexpected answer from the daemon at {admin} to {request}: {detail}")]
    BadAnswer {
        admin: String,
        request: String,
        detail: String,
    },
}

impl ClientError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Usage(_) => 2,
            ClientError::Api { status, .. } if (400..500).contains(status) => 2,
            _ => 1,
        }
    }
}

impl From<TokenError> for ClientError {
    fn from(e: TokenError) -> ClientError {
        ClientError::Usage(e.to_string())
    }
}

/// Canned API answers for the unit tests of the rates and the rendering.
#[cfg(test)]
mod fixtures {
    use crate::api_types::{
        Backend, BackendState, Balance, Effective, Handshakes, HashMode, Health, Mode, OnFull,
        Protocol, Signals,
    };

    pub use crate::api_types::Service;

    /// Service "web" (198.18.100.10:80) with one backend, 198.18.1.11:8080;
    /// both counted `packets` packets of 100 bytes, the backend's half each
    /// way, and `packets / 100` handshakes of 100 us.
    pub fn service(packets: u64) -> Service {
        Service {
            name: "web".into(),
            vip: "198.18.100.10:80".parse().unwrap(),
            protocol: Protocol::Tcp,
            mode: Mode::Nat,
            hash: HashMode::FiveTuple,
            balance: Balance::Maglev,
            on_full: OnFull::Drop,
            packets,
            bytes: packets * 100,
            backends: vec![Backend {
                address: "198.18.1.11:8080".parse().unwrap(),
                weight: 100,
                state: BackendState::Ready,
                health: Health::Unchecked,
                effective: Effective::Ready,
                packets,
                bytes: packets * 100,
                flows: 1,
                check: None,
                effective_weight: 100.0,
                slow_start: None,
                max_flows: None,
                signals: Signals {
                    active_flows: 2,
                    bytes_sent: packets * 50,
                    bytes_received: Some(packets * 50),
                    resets: Some(3),
                    unanswered: Some(0),
                    handshakes: Some(Handshakes {
                        count: packets / 100,
                        sum_us: packets,
                        buckets: [vec![0; 7], vec![packets / 100], vec![0; 16]].concat(),
                    }),
                    at_max_flows: 0,
                },
            }],
        }
    }
}
