//! `xdplb decap attach|detach IFACE`: the backend side of tunnel mode. The
//! decapsulating XDP program is attached and its link pinned under
//! `/sys/fs/bpf/xdplb-decap/`, so it stays after the command exits (no
//! daemon runs on backends); detach removes the pin, which detaches it.
//!
//! The pin must be on the host's bpf filesystem: under `ip netns exec`
//! (a private /sys) it would vanish with the command, and the program with
//! it. `ensure_pin_dir` refuses that with the fix (`nsenter --net=...`).
//! Attaching through netlink instead (no link, nothing to pin) would work
//! there, but a netlink-attached program can be replaced or removed by any
//! other XDP tool without notice, and detach could no longer tell the
//! decapsulator from another program: the pinned link is kept.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{
        ProgramError, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
    sys::SyscallError,
};

use crate::{config::XdpModeSetting, dataplane::DECAP};

pub const PIN_DIR: &str = "/sys/fs/bpf/xdplb-decap";
const PROGRAM: &str = "xdplb_decap";

/// The pin of `iface`'s link. Interface names are only unique within a
/// network namespace, so the namespace's inode is part of the name.
fn link_pin(iface: &str) -> PathBuf {
    let netns = fs::read_link("/proc/thread-self/ns/net")
        .map(|l| {
            l.to_string_lossy()
                .trim_start_matches("net:[")
                .trim_end_matches(']')
                .to_owned()
        })
        .unwrap_or_default();
    Path::new(PIN_DIR).join(format!("link-{netns}-{iface}"))
}

/// The decapsulator loaded into the kernel (not attached), taking GUE
/// packets on `gue_port`; its program is `program(&mut ebpf)`.
pub fn load(gue_port: u16) -> Result<Ebpf> {
    if DECAP.is_empty() {
        bail!("this xdplb was built without its XDP programs (AYA_BUILD_SKIP)");
    }
    let mut ebpf = EbpfLoader::new()
        .override_global("GUE_PORT", &gue_port, true)
        .load(DECAP)
        .context("loading the decap object")?;
    program(&mut ebpf)?
        .load()
        .context("loading the decap program (verifier)")?;
    Ok(ebpf)
}

pub fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    Ok(ebpf
        .program_mut(PROGRAM)
        .context("decap program missing")?
        .try_into()?)
}

/// Attaches (or, if attached, replaces in place) the decapsulator on
/// `iface`, taking GUE packets on `gue_port`. Returns how it attached.
/// The pin must land on the host's bpf filesystem (see the module's text).
pub fn attach(iface: &str, gue_port: u16, mode: XdpModeSetting) -> Result<&'static str> {
    crate::dataplane::ensure_pin_dir(Path::new(PIN_DIR))?;
    let mut ebpf = load(gue_port)?;
    let prog = program(&mut ebpf)?;
    let pin = link_pin(iface);
    if let Ok(pinned) = PinnedLink::from_pin(&pin) {
        let link = XdpLink::try_from(FdLink::from(pinned))?;
        match prog.attach_to_link(link) {
            Ok(_) => return Ok("replaced the running decapsulator"),
            // The interface was deleted (and maybe created again) since:
            // its link is defunct, the program gone with the old device.
            Err(ProgramError::SyscallError(SyscallError { io_error, .. }))
                if io_error.raw_os_error() == Some(libc::ENOLINK) =>
            {
                tracing::info!(
                    "the pinned decap link of {iface} is stale (its device is gone); attaching anew"
                );
                fs::remove_file(&pin).with_context(|| format!("removing {}", pin.display()))?;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("replacing the decap program on {iface}"));
            }
        }
    }
    let (id, how) = match mode {
        XdpModeSetting::Native => (prog.attach(iface, XdpMode::Driver)?, "native mode"),
        XdpModeSetting::Generic => (prog.attach(iface, XdpMode::Skb)?, "generic mode"),
        XdpModeSetting::Auto => match prog.attach(iface, XdpMode::Driver) {
            Ok(id) => (id, "native mode"),
            Err(_) => (
                prog.attach(iface, XdpMode::Skb)
                    .with_context(|| format!("attaching to {iface}"))?,
                "generic mode",
            ),
        },
    };
    let link = FdLink::try_from(prog.take_link(id)?)
        .context("the kernel attached without a BPF link: cannot keep it after exit")?;
    link.pin(&pin)
        .with_context(|| format!("pinning {}", pin.display()))?;
    Ok(how)
}

/// Detaches the decapsulator from `iface` (removes its pinned link).
pub fn detach(iface: &str) -> Result<bool> {
    let pin = link_pin(iface);
    match fs::remove_file(&pin) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing {}", pin.display())),
    }
}
