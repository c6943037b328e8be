//! Pinned state, so that a restart (even after SIGKILL) drops no flow:
//! every map but the neighbour ring buffer is pinned in the pin directory,
//! and so is each interface's XDP link (`link-IFACE`), which keeps the
//! program attached while no daemon runs. The next run reuses maps whose
//! shape matches and swaps its program into the pinned links.
//!
//! The jump table (`JUMP`, the programs `xdplb` tail-calls) is pinned too
//! (a program array loses its entries when no file holds it), but once per
//! run (`jump-PID-NANOS`): an entry program must only ever tail-call the
//! stages it was built with (they share its hand-off scratch map), so a
//! new run brings its own table and frees the old ones only once its
//! program runs on every link.

use std::{
    collections::BTreeMap,
    fs, io,
    mem::size_of,
    path::{Path, PathBuf},
};

use aya::{
    maps::MapInfo,
    programs::{
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use lb_common::{
    Backend, BackendCounter, Counter, Flow, FlowKey, GLOBAL_STATS_LEN, Globals, MAX_PEERS, NatRev,
    NextHop, Peer, RING_SLOTS_PER_SERVICE, ServiceKey, ServiceMeta,
};
use tracing::{info, warn};

use crate::config::Limits;

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const BPF_FS_ROOT: &str = "/sys/fs/bpf";

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("pin_dir {0} is not on a bpf filesystem (mount one there, or set pin_dir: null)")]
    NotBpffs(PathBuf),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> PinError {
    let what = what.into();
    move |source| PinError::Io { what, source }
}

/// The shape a map must have for its pinned copy to be reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapSpec {
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    /// Sized from the config at load time (else fixed in the object).
    pub configurable: bool,
}

fn spec<K, V>(max_entries: u32, configurable: bool) -> MapSpec {
    MapSpec {
        key_size: size_of::<K>() as u32,
        value_size: size_of::<V>() as u32,
        max_entries,
        configurable,
    }
}

/// Every map the daemon sizes or pins, with its expected shape.
pub fn map_sizes(l: &Limits) -> BTreeMap<&'static str, MapSpec> {
    let rings = l
        .max_services
        .saturating_mul(RING_SLOTS_PER_SERVICE)
        .saturating_mul(l.maglev_table_size);
    let pending = lb_common::pending_table_size(l.flow_table_size);
    BTreeMap::from([
        ("CONFIG", spec::<u32, Globals>(1, false)),
        // One entry per service, and at most one more per service for the
        // echo entry of its VIP (icmp_echo).
        (
            "SERVICES",
            spec::<ServiceKey, ServiceMeta>(l.max_services.saturating_mul(2), true),
        ),
        ("SERVICE_STATS", spec::<u32, Counter>(l.max_services, true)),
        ("RINGS", spec::<u32, u32>(rings, true)),
        ("BACKENDS", spec::<u32, Backend>(l.max_backends, true)),
        (
            "BACKEND_STATS",
            spec::<u32, BackendCounter>(l.max_backends, true),
        ),
        ("BACKEND_HOPS", spec::<u32, NextHop>(l.max_backends, true)),
        ("FLOWS", spec::<FlowKey, Flow>(l.flow_table_size, true)),
        ("NAT_REV", spec::<FlowKey, NatRev>(l.flow_table_size, true)),
        ("PENDING", spec::<FlowKey, Flow>(pending, true)),
        ("PENDING_REV", spec::<FlowKey, NatRev>(pending, true)),
        ("GLOBAL_STATS", spec::<u32, u64>(GLOBAL_STATS_LEN, false)),
        // Flow sync (docs/ha.md): an owner per flow at most.
        ("OWNERS", spec::<FlowKey, u32>(l.flow_table_size, true)),
        ("PEERS", spec::<u32, Peer>(MAX_PEERS, false)),
        ("PEER_MACS", spec::<[u8; 8], u32>(4 * MAX_PEERS, false)),
    ])
}

pub struct Pins {
    dir: PathBuf,
    /// This run's jump table pin.
    jump: PathBuf,
}

const JUMP_PREFIX: &str = "jump-";

impl Pins {
    /// Makes sure `dir` exists on a bpf filesystem (mounting one at
    /// /sys/fs/bpf if that is where it belongs and nothing is mounted), and
    /// removes pinned maps whose shape differs from `sizes` (all of them:
    /// a half-adopted state would be worse than a fresh one).
    pub fn prepare(dir: &Path, sizes: &BTreeMap<&'static str, MapSpec>) -> Result<Pins, PinError> {
        ensure_pin_dir(dir)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let pins = Pins {
            dir: dir.to_owned(),
            jump: dir.join(format!("{JUMP_PREFIX}{}-{nanos}", std::process::id())),
        };
        let mismatch: Vec<String> = sizes
            .iter()
            .filter_map(|(name, want)| {
                let path = pins.map_path(name);
                let info = MapInfo::from_pin(&path).ok()?;
                let got = MapSpec {
                    key_size: info.key_size(),
                    value_size: info.value_size(),
                    max_entries: info.max_entries(),
                    configurable: want.configurable,
                };
                (got != *want).then(|| format!("{name} {got:?} (now {want:?})"))
            })
            .collect();
        if !mismatch.is_empty() {
            warn!(
                "pinned maps in {} have another shape (limits changed?): {}; starting with empty tables",
                dir.display(),
                mismatch.join(", ")
            );
            for name in sizes.keys() {
                remove_if_exists(&pins.map_path(name))?;
            }
        } else if sizes.keys().any(|n| pins.map_path(n).exists()) {
            info!("adopting pinned maps in {}", dir.display());
        }
        Ok(pins)
    }

    pub fn map_path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Where this run pins its jump table.
    pub fn jump_path(&self) -> &Path {
        &self.jump
    }

    /// Unpins the jump tables of earlier runs (and of versions that pinned
    /// it as plain `JUMP`): their programs are detached by now.
    pub fn remove_old_jumps(&self) -> Result<(), PinError> {
        for entry in
            fs::read_dir(&self.dir).map_err(io_err(format!("reading {}", self.dir.display())))?
        {
            let entry = entry.map_err(io_err("reading the pin dir"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_jump = name == "JUMP" || name.starts_with(JUMP_PREFIX);
            if is_jump && entry.path() != self.jump {
                remove_if_exists(&entry.path())?;
            }
        }
        Ok(())
    }

    fn link_path(&self, iface: &str) -> PathBuf {
        self.dir.join(format!("link-{iface}"))
    }

    /// The link an earlier run pinned on `iface`, if any (the pin stays).
    pub fn take_link(&self, iface: &str) -> Option<XdpLink> {
        let path = self.link_path(iface);
        let pinned = PinnedLink::from_pin(&path).ok()?;
        match XdpLink::try_from(FdLink::from(pinned)) {
            Ok(link) => Some(link),
            Err(e) => {
                warn!("{} is not an XDP link ({e}); ignoring it", path.display());
                None
            }
        }
    }

    /// Removes `iface`'s link pin (a stale one that could not be reused).
    pub fn forget_link(&self, iface: &str) -> Result<(), PinError> {
        remove_if_exists(&self.link_path(iface))
    }

    /// Pins a freshly attached link; the returned fd keeps it until exit.
    pub fn pin_link(&self, iface: &str, link: XdpLink) -> Result<Option<FdLink>, PinError> {
        let fd_link = match FdLink::try_from(link) {
            Ok(l) => l,
            Err(e) => {
                warn!("cannot pin the XDP link of {iface} ({e}): a restart will detach it");
                return Ok(None);
            }
        };
        let path = self.link_path(iface);
        remove_if_exists(&path)?;
        let pinned = fd_link.pin(&path).map_err(|e| PinError::Io {
            what: format!("pinning {}", path.display()),
            source: io::Error::other(e.to_string()),
        })?;
        Ok(Some(FdLink::from(pinned)))
    }

    /// Unpins (so detaches, once no fd holds them) links of interfaces not
    /// in `keep`; returns their names.
    pub fn unpin_links_except(&self, keep: &[String]) -> Result<Vec<String>, PinError> {
        let mut gone = Vec::new();
        for entry in
            fs::read_dir(&self.dir).map_err(io_err(format!("reading {}", self.dir.display())))?
        {
            let entry = entry.map_err(io_err("reading the pin dir"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(iface) = name.strip_prefix("link-")
                && !keep.iter().any(|k| k == iface)
            {
                remove_if_exists(&entry.path())?;
                gone.push(iface.to_owned());
            }
        }
        Ok(gone)
    }

    /// Removes every pin and the directory.
    pub fn remove_all(&self) -> Result<(), PinError> {
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                remove_if_exists(&entry.path())?;
            }
        }
        match fs::remove_dir(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(format!("removing {}", self.dir.display()))(e)),
        }
    }
}

/// Makes sure `dir` exists on a bpf filesystem.
pub fn ensure_pin_dir(dir: &Path) -> Result<(), PinError> {
    ensure_bpffs(dir)?;
    fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))
}

fn remove_if_exists(path: &Path) -> Result<(), PinError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("removing {}", path.display()))(e)),
    }
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
}

/// Pins need a bpf filesystem. Many hosts do not mount one at /sys/fs/bpf
/// until something needs it; mount it then, like other BPF tools do.
fn ensure_bpffs(dir: &Path) -> Result<(), PinError> {
    let existing = dir
        .ancestors()
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"));
    if is_bpffs(existing) {
        return Ok(());
    }
    let root = Path::new(BPF_FS_ROOT);
    if dir.starts_with(root) && existing == root {
        nix::mount::mount(
            Some("bpf"),
            root,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| io_err(format!("mounting a bpf filesystem at {BPF_FS_ROOT}"))(e.into()))?;
        info!("mounted a bpf filesystem at {BPF_FS_ROOT} for pinning");
        return Ok(());
    }
    Err(PinError::NotBpffs(dir.to_owned()))
}
