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
//!
//! A start that fails (a map the kernel refuses, an interface it cannot
//! attach to) leaves the pin dir as it found it: nothing half-attached,
//! and an earlier run's state still there for the next start.

use std::{
    collections::{BTreeMap, BTreeSet},
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
    Backend, BackendCounter, BackendLoad, Counter, Flow, FlowKey, GLOBAL_STATS_LEN, Globals,
    Handshakes, MAX_PEERS, NatRev, NextHop, Peer, RING_SLOTS_PER_SERVICE, ServiceBackends,
    ServiceKey, ServiceMeta,
};
use tracing::{info, warn};

pub use super::bpffs::ensure_pin_dir;
use crate::config::Limits;

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "pin_dir {0} is not on a bpf filesystem (mount one there: `mount -t bpf bpf DIR`, or set pin_dir: null)"
    )]
    NotBpffs(PathBuf),
    #[error(
        "{}: this process runs in a mount namespace of its own without the host's bpf filesystem \
         (`ip netns exec` makes one, with a /sys of its own): pins made there vanish when it exits, \
         detaching the XDP program and losing its state. Enter only the network namespace instead: \
         `nsenter --net=/run/netns/{netns} xdplb ...` rather than `ip netns exec {netns} xdplb ...`",
        .dir.display()
    )]
    PrivateMount { dir: PathBuf, netns: String },
    #[error(
        "{}: no bpf filesystem is mounted there and this process runs in a container (a PID \
         namespace of its own): one mounted here would be the container's, and its pins would \
         vanish with it, detaching the XDP program and losing its state. Mount the host's \
         /sys/fs/bpf into the container (docker/podman: -v /sys/fs/bpf:/sys/fs/bpf)",
        .0.display()
    )]
    NoHostBpffs(PathBuf),
}

pub(super) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> PinError {
    let what = what.into();
    move |source| PinError::Io { what, source }
}

/// The shape a map must have for its pinned copy to be reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapSpec {
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    /// The `limits` setting it is sized from at load time (None: fixed in
    /// the object).
    pub setting: Option<&'static str>,
}

fn spec<K, V>(max_entries: u32, setting: Option<&'static str>) -> MapSpec {
    MapSpec {
        key_size: size_of::<K>() as u32,
        value_size: size_of::<V>() as u32,
        max_entries,
        setting,
    }
}

const SERVICES: Option<&str> = Some("limits.max_services");
const BACKENDS: Option<&str> = Some("limits.max_backends");
const FLOWS: Option<&str> = Some("limits.flow_table_size");
const FIXED: Option<&str> = None;

/// Every map the daemon sizes or pins, with its expected shape.
pub fn map_sizes(l: &Limits) -> BTreeMap<&'static str, MapSpec> {
    let rings = l
        .max_services
        .saturating_mul(RING_SLOTS_PER_SERVICE)
        .saturating_mul(l.maglev_table_size);
    let pending = lb_common::pending_table_size(l.flow_table_size);
    BTreeMap::from([
        ("CONFIG", spec::<u32, Globals>(1, FIXED)),
        // One entry per service, and at most one more per service for the
        // echo entry of its VIP (icmp_echo).
        (
            "SERVICES",
            spec::<ServiceKey, ServiceMeta>(l.max_services.saturating_mul(2), SERVICES),
        ),
        (
            "SERVICE_STATS",
            spec::<u32, Counter>(l.max_services, SERVICES),
        ),
        (
            "RINGS",
            spec::<u32, u32>(
                rings,
                Some("limits.max_services x limits.maglev_table_size"),
            ),
        ),
        ("BACKENDS", spec::<u32, Backend>(l.max_backends, BACKENDS)),
        (
            "SERVICE_BACKENDS",
            spec::<u32, ServiceBackends>(l.max_services, SERVICES),
        ),
        (
            "BACKEND_STATS",
            spec::<u32, BackendCounter>(l.max_backends, BACKENDS),
        ),
        (
            "BACKEND_LOAD",
            spec::<u32, BackendLoad>(l.max_backends, BACKENDS),
        ),
        (
            "BACKEND_HANDSHAKE",
            spec::<u32, Handshakes>(l.max_backends, BACKENDS),
        ),
        (
            "BACKEND_HOPS",
            spec::<u32, NextHop>(l.max_backends, BACKENDS),
        ),
        ("FLOWS", spec::<FlowKey, Flow>(l.flow_table_size, FLOWS)),
        ("NAT_REV", spec::<FlowKey, NatRev>(l.flow_table_size, FLOWS)),
        ("PENDING", spec::<FlowKey, Flow>(pending, FLOWS)),
        ("PENDING_REV", spec::<FlowKey, NatRev>(pending, FLOWS)),
        ("GLOBAL_STATS", spec::<u32, u64>(GLOBAL_STATS_LEN, FIXED)),
        // Flow sync (docs/ha.md): an owner per flow at most.
        ("OWNERS", spec::<FlowKey, u32>(l.flow_table_size, FLOWS)),
        ("PEERS", spec::<u32, Peer>(MAX_PEERS, FIXED)),
        ("PEER_MACS", spec::<[u8; 8], u32>(4 * MAX_PEERS, FIXED)),
    ])
}

pub struct Pins {
    dir: PathBuf,
    /// This run's jump table pin.
    jump: PathBuf,
    /// What was there before this run, so that a start that fails leaves
    /// it as it was (`undo`): whether this run made `dir`,
    made_dir: bool,
    /// the map pins of an earlier run this run adopts,
    adopted: BTreeSet<&'static str>,
    /// and those of another shape, renamed `previous-NAME` until this run
    /// is set up (`commit`).
    set_aside: Vec<&'static str>,
    /// Every map this run pins.
    maps: Vec<&'static str>,
}

const JUMP_PREFIX: &str = "jump-";
/// (bpffs refuses dots in names.)
const ASIDE_PREFIX: &str = "previous-";

impl Pins {
    /// Makes sure `dir` exists on the host's bpf filesystem
    /// (`ensure_pin_dir`), and sets aside pinned maps whose shape differs
    /// from `sizes` (all of them: a half-adopted state would be worse than
    /// a fresh one).
    pub fn prepare(dir: &Path, sizes: &BTreeMap<&'static str, MapSpec>) -> Result<Pins, PinError> {
        let made_dir = !dir.exists();
        ensure_pin_dir(dir)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut pins = Pins {
            dir: dir.to_owned(),
            jump: dir.join(format!("{JUMP_PREFIX}{}-{nanos}", std::process::id())),
            made_dir,
            adopted: BTreeSet::new(),
            set_aside: Vec::new(),
            maps: sizes.keys().copied().collect(),
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
                    setting: want.setting,
                };
                (got != *want).then(|| format!("{name} {got:?} (now {want:?})"))
            })
            .collect();
        let pinned: Vec<&'static str> = pins
            .maps
            .iter()
            .copied()
            .filter(|n| pins.map_path(n).exists())
            .collect();
        if !mismatch.is_empty() {
            warn!(
                "pinned maps in {} have another shape (limits changed?): {}; starting with empty tables",
                dir.display(),
                mismatch.join(", ")
            );
            for name in pinned {
                let aside = pins.aside_path(name);
                remove_if_exists(&aside)?;
                fs::rename(pins.map_path(name), &aside).map_err(io_err(format!(
                    "renaming the pin of {name} to {}",
                    aside.display()
                )))?;
                pins.set_aside.push(name);
            }
        } else if !pinned.is_empty() {
            info!("adopting pinned maps in {}", dir.display());
            pins.adopted = pinned.into_iter().collect();
        }
        Ok(pins)
    }

    fn aside_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{ASIDE_PREFIX}{name}"))
    }

    /// This run is set up (its program attached): an earlier run's maps of
    /// another shape are dropped.
    pub fn commit(&mut self) {
        for name in std::mem::take(&mut self.set_aside) {
            if let Err(e) = remove_if_exists(&self.aside_path(name)) {
                warn!("{e}");
            }
        }
    }

    /// A start that failed, before any earlier run's link took this run's
    /// program: removes what it pinned (maps it created, its jump table,
    /// the links in `made_links`, `dir` if it made it) and puts back what
    /// it set aside, so the pin dir is as it found it.
    pub fn undo(&self, made_links: &[String]) {
        let remove = |path: &Path| {
            if let Err(e) = remove_if_exists(path) {
                warn!("undoing a failed start: {e}");
            }
        };
        for iface in made_links {
            remove(&self.link_path(iface));
        }
        for name in self.maps.iter().filter(|n| !self.adopted.contains(*n)) {
            remove(&self.map_path(name));
        }
        remove(&self.jump);
        for name in &self.set_aside {
            if let Err(e) = fs::rename(self.aside_path(name), self.map_path(name)) {
                warn!("undoing a failed start: putting back the pin of {name}: {e}");
            }
        }
        if self.made_dir {
            let _ = fs::remove_dir(&self.dir);
        }
        info!(
            "the failed start left {} as it found it (nothing of it attached or pinned)",
            self.dir.display()
        );
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

fn remove_if_exists(path: &Path) -> Result<(), PinError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("removing {}", path.display()))(e)),
    }
}
