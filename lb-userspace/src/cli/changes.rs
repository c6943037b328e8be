//! The client commands that change the running daemon (they send the
//! token): `xdplb backend state|weight`, `xdplb node drain|ready` and
//! `xdplb reload`.

use std::net::SocketAddr;

use clap::{Subcommand, builder::PossibleValuesParser, builder::TypedValueParser};
use xdplb::{
    api_types::{BackendState, NodeState},
    client::{self, ClientError},
};

use super::admin::AdminArgs;

#[derive(Subcommand)]
pub enum BackendCommand {
    /// Set a backend's admin state: ready (new flows), drain (keeps its
    /// flows, no new ones), maint (loses its flows too).
    State {
        /// Service name.
        service: String,
        /// Backend, as ADDR:PORT.
        #[arg(value_name = "ADDR:PORT")]
        backend: SocketAddr,
        #[arg(value_parser = PossibleValuesParser::new(["ready", "drain", "maint"])
            .map(|s| match s.as_str() {
                "ready" => BackendState::Ready,
                "drain" => BackendState::Drain,
                _ => BackendState::Maint,
            }))]
        state: BackendState,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Set a backend's weight (0: no new flows, like drain).
    Weight {
        /// Service name.
        service: String,
        /// Backend, as ADDR:PORT.
        #[arg(value_name = "ADDR:PORT")]
        backend: SocketAddr,
        weight: u32,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// `backend state|weight`: prints the backend as the daemon updated it.
pub fn backend(command: &BackendCommand) -> Result<(), ClientError> {
    let (service, backend) = match command {
        BackendCommand::State {
            service,
            backend,
            state,
            admin,
        } => (
            service,
            admin.client(true)?.set_state(service, *backend, *state)?,
        ),
        BackendCommand::Weight {
            service,
            backend,
            weight,
            admin,
        } => (
            service,
            admin.client(true)?.set_weight(service, *backend, *weight)?,
        ),
    };
    print!("{}", client::render_backend(service, &backend));
    Ok(())
}

/// `node drain|ready`: prints the node as the daemon reports it (BGP
/// follows within a moment: `announcing` may still show the old set).
pub fn node(state: NodeState, admin: &AdminArgs) -> Result<(), ClientError> {
    let status = admin.client(true)?.set_node(state)?;
    print!("{}", client::render_node(&status));
    Ok(())
}

/// `reload`: prints what the daemon changed.
pub fn reload(admin: &AdminArgs) -> Result<(), ClientError> {
    let summary = admin.client(true)?.reload()?;
    print!("{}", client::render_reload(&summary));
    Ok(())
}
