//! A veth quirk the beds work around so that they behave like real NICs.
//!
//! A frame an XDP program sends back out of the interface it came in on
//! (XDP_TX: echo replies, rejections, flow sync's hand-off to the owner)
//! waits in the veth peer's ring until that peer's NAPI runs, and veth
//! schedules it after an XDP_TX only if the peer has an XDP program; GRO is
//! not enough. Without one, such a frame is delivered only when other
//! traffic (a redirect) wakes the peer, or never. A real NIC transmits
//! XDP_TX frames at once.

use anyhow::{Context, Result};

use crate::netns;

/// Attaches an XDP_PASS program (the `empty` baseline) to each of `devs`
/// in namespace `ns`; detached when the returned object drops.
pub fn pass_xdp(ns: &str, devs: &[String]) -> Result<aya::Ebpf> {
    netns::run_in(ns, || {
        let mut ebpf = aya::Ebpf::load(xdplb::dataplane::BASELINES)
            .context("loading the baseline programs (is the XDP object built?)")?;
        let prog: &mut aya::programs::Xdp = ebpf
            .program_mut("empty")
            .context("no program empty")?
            .try_into()?;
        prog.load()?;
        for dev in devs {
            prog.attach(dev, aya::programs::XdpMode::Driver)
                .with_context(|| format!("attaching XDP_PASS to {dev} in {ns}"))?;
        }
        Ok(ebpf)
    })
}
