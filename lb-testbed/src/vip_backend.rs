//! Backends of dsr and tunnel services: they hold the VIPs themselves
//! (`xdplb backend-setup`), and tunnel backends decapsulate with xdplb's
//! program on `eth0` (`xdplb decap attach`).

use std::net::IpAddr;

use anyhow::Result;
use xdplb::{backend_setup, config::XdpModeSetting, decap};

use crate::netns;

/// Makes backend namespace `ns` hold `vips`, and with `decap` attaches the
/// decapsulator to its `eth0` (undo with `detach_decap`).
pub fn setup(ns: &str, vips: &[IpAddr], decap: bool) -> Result<()> {
    netns::run_in(ns, || backend_setup::dsr_setup(vips))?;
    if decap {
        netns::run_in(ns, || {
            decap::attach(
                "eth0",
                xdplb::config::DEFAULT_GUE_PORT,
                XdpModeSetting::Auto,
            )
        })?;
    }
    Ok(())
}

/// Detaches the decapsulator of backend namespace `ns` (pinned links
/// outlive the namespace otherwise); errors are ignored: cleanup.
pub fn detach_decap(ns: &str) {
    let _ = netns::run_in(ns, || decap::detach("eth0"));
}
