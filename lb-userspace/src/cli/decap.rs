//! `xdplb decap attach|detach`: the backend side of tunnel mode.

use std::process::ExitCode;

use clap::Subcommand;
use xdplb::config::{DEFAULT_GUE_PORT, XdpModeSetting};

#[derive(Subcommand)]
pub enum DecapCommand {
    /// Attach (or replace) the decapsulator on IFACE.
    Attach {
        iface: String,
        /// UDP port of GUE packets (the balancer's `gue_port`).
        #[arg(long, default_value_t = DEFAULT_GUE_PORT)]
        gue_port: u16,
        /// XDP mode: auto (native, else generic), native or generic.
        #[arg(long, default_value = "auto", value_parser = parse_xdp_mode)]
        mode: XdpModeSetting,
    },
    /// Detach it from IFACE.
    Detach { iface: String },
}

fn parse_xdp_mode(s: &str) -> Result<XdpModeSetting, String> {
    match s {
        "auto" => Ok(XdpModeSetting::Auto),
        "native" => Ok(XdpModeSetting::Native),
        "generic" => Ok(XdpModeSetting::Generic),
        _ => Err(format!("{s:?}: expected auto, native or generic")),
    }
}

pub fn decap(command: DecapCommand) -> ExitCode {
    let done = match command {
        DecapCommand::Attach {
            iface,
            gue_port,
            mode,
        } => xdplb::decap::attach(&iface, gue_port, mode)
            .map(|how| format!("decapsulator attached to {iface} in {how} (GUE port {gue_port})")),
        DecapCommand::Detach { iface } => xdplb::decap::detach(&iface).map(|was| {
            if was {
                format!("decapsulator detached from {iface}")
            } else {
                format!("no decapsulator on {iface}")
            }
        }),
    };
    super::print_lines(done.map(|line| vec![line]))
}
