//! The XDP program's lifecycle: load it with map sizes from the config
//! (adopting pinned state from an earlier run), attach it to interfaces,
//! write plans into its maps (`apply`), read its counters.

mod apply;
mod batch;
mod bpffs;
mod counters;
pub mod features;
mod gc;
mod handles;
mod pins;
mod ring_map;

use std::{collections::HashMap as StdHashMap, path::Path};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError, RingBuf},
    programs::{ProgramError, Xdp, XdpMode, links::FdLink},
};
use lb_common::{Backend, FlowKey, ServiceKey, ServiceMeta};

pub use counters::{CounterReader, Counters};
pub use gc::{FlowTable, monotonic_secs};
pub use pins::{PinError, ensure_pin_dir};

use crate::{
    config::{Limits, XdpModeSetting},
    host::{self, Family},
    plan::Plan,
};

/// The XDP object built by build.rs (empty when built with AYA_BUILD_SKIP).
pub static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdplb"));
/// The tunnel-mode decapsulator, program `xdplb_decap` (`decap` module).
pub static DECAP: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/decap"));
/// Reference programs `empty`, `drop_all`, `macswap` for benchmarks.
pub static BASELINES: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/baselines"));

const PROGRAM_NAME: &str = "xdplb";
/// The programs `xdplb` tail-calls, by their `JUMP` slot (as in the
/// program's main.rs).
const STAGES: [(&str, u32); 5] = [
    ("xdplb_icmp", 0),
    ("xdplb_balance", 1),
    ("xdplb_reply", 2),
    ("xdplb_owner", 3),
    ("xdplb_reject", 4),
];

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("this xdplb was built without its XDP program (AYA_BUILD_SKIP); rebuild without it")]
    NotBuilt,
    #[error("loading the XDP object: {0}")]
    Load(#[from] EbpfError),
    #[error("loading the XDP program into the kernel: {0}")]
    Program(#[source] ProgramError),
    #[error(
        "the kernel ({kernel}) refused program {program}: {summary} \
         (the verifier's whole log is logged at debug level: XDPLB_LOG=debug)"
    )]
    Verifier {
        program: &'static str,
        kernel: String,
        summary: String,
    },
    #[error("attaching XDP to {iface} ({mode}): {source}")]
    Attach {
        iface: String,
        mode: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error(
        "{setting}: the kernel refused to create map {map} with {entries} entries ({why}); lower {setting}"
    )]
    MapRefused {
        setting: &'static str,
        map: String,
        entries: u32,
        why: String,
    },
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("map {0} is missing from the XDP object")]
    MissingMap(&'static str),
    #[error("program {0} is missing from the XDP object")]
    MissingProgram(&'static str),
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, DataplaneError>;

fn map_err(map: &'static str) -> impl Fn(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, source }
}

pub struct Dataplane {
    ebpf: Ebpf,
    ring_size: u32,
    /// What the maps hold, as last written (or adopted): `apply` writes
    /// only differences.
    shadow: Shadow,
    /// Where maps and links are pinned, if anywhere.
    pins: Option<pins::Pins>,
    /// Links this process created and pinned, by interface; closing them
    /// leaves the pins.
    links: StdHashMap<String, FdLink>,
    /// Interfaces this process attached to anew (not in an earlier run's
    /// link), and whether it took over any earlier run's link: what a
    /// failed start undoes (see `Drop`).
    made_links: Vec<String>,
    replaced: bool,
    /// Set up (`set_up`): from then on, dropping this leaves everything.
    started: bool,
    counters: CounterReader,
    flows: FlowTable,
    /// Interfaces attached by this process.
    attached: Vec<String>,
    /// IPv6 forwarding is on where attached: the plan has IPv6 services.
    ipv6_forwarding: bool,
    /// `RINGS` mapped, when it is mappable (`ring_map`).
    rings: Option<ring_map::RingMem>,
}

/// What the controller needs of a data plane: write a plan, read counters,
/// look up a flow. `Dataplane` is the kernel's; the controller's tests use
/// a fake.
pub trait DataplaneOps {
    /// Writes `plan`, changes only (see `Dataplane::apply`).
    fn apply(&mut self, plan: &Plan) -> Result<()>;
    /// Writes `plan` whole, trusting nothing remembered of earlier writes
    /// (after a write was interrupted).
    fn resync(&mut self, plan: &Plan) -> Result<()>;
    fn counters(&self, service_ids: &[u32], backend_ids: &[u32]) -> Result<Counters>;
    /// The flow of `key` and whether it is confirmed (`Dataplane::flow`).
    fn flow(&self, key: &FlowKey) -> Result<Option<(lb_common::Flow, bool)>>;
}

impl DataplaneOps for Dataplane {
    fn apply(&mut self, plan: &Plan) -> Result<()> {
        Dataplane::apply(self, plan)
    }

    fn resync(&mut self, plan: &Plan) -> Result<()> {
        self.shadow = Shadow::default();
        self.read_shadow()?;
        Dataplane::apply(self, plan)
    }

    fn counters(&self, service_ids: &[u32], backend_ids: &[u32]) -> Result<Counters> {
        Dataplane::counters(self, service_ids, backend_ids)
    }

    fn flow(&self, key: &FlowKey) -> Result<Option<(lb_common::Flow, bool)>> {
        Dataplane::flow(self, key)
    }
}

#[derive(Default)]
struct Shadow {
    services: StdHashMap<ServiceKey, ServiceMeta>,
    backends: StdHashMap<u32, Backend>,
    /// The ring last written for each service id (shared with the plan
    /// that had it: no copy).
    rings: StdHashMap<u32, crate::plan::Ring>,
    /// `SERVICE_BACKENDS` entries written, by service id.
    overflow: StdHashMap<u32, lb_common::ServiceBackends>,
    globals: Option<lb_common::Globals>,
}

/// Map entries found in pinned maps from an earlier run.
#[derive(Debug, Default, Clone)]
pub struct Adopted {
    pub services: Vec<(ServiceKey, ServiceMeta)>,
    pub backends: Vec<(u32, Backend)>,
}

/// How an interface got the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    Native,
    Generic,
    /// A pinned link from an earlier run now runs this program (swapped
    /// atomically: no packet saw no program).
    Replaced,
}

impl std::fmt::Display for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Attached::Native => "native mode",
            Attached::Generic => "generic mode",
            Attached::Replaced => "place of the previous program (pinned link)",
        })
    }
}

impl Dataplane {
    /// Loads the program (the verifier runs here) with map sizes from
    /// `limits`. With `pin_dir`, maps are pinned there, and maps already
    /// pinned by an earlier run with the same sizes are reused, state and
    /// all; pins of other sizes are replaced (logged).
    pub fn load(limits: &Limits, pin_dir: Option<&Path>) -> Result<Self> {
        Self::load_object(PROGRAM, limits, pin_dir)
    }

    /// [`Dataplane::load`] with another build of the program (`object`, an
    /// ELF file's bytes), whose maps must have this build's layout: the
    /// benchmarks compare two builds side by side this way.
    pub fn load_object(object: &[u8], limits: &Limits, pin_dir: Option<&Path>) -> Result<Self> {
        if object.is_empty() {
            return Err(DataplaneError::NotBuilt);
        }
        let sizes = pins::map_sizes(limits);
        let pins = pin_dir
            .map(|dir| pins::Pins::prepare(dir, &sizes))
            .transpose()?;
        let loaded = load_object(object, &sizes, pins.as_ref())
            .and_then(|ebpf| Ok((CounterReader::open(&ebpf)?, FlowTable::open(&ebpf)?, ebpf)));
        let rings = loaded.as_ref().ok().and_then(|(_, _, ebpf)| {
            let Some(aya::maps::Map::Array(data)) = ebpf.map("RINGS") else {
                return None;
            };
            ring_map::RingMem::open(data, sizes["RINGS"].max_entries)
        });
        let (counters, flows, ebpf) = match loaded {
            Ok(l) => l,
            // Not built yet: nothing drops (see `Drop`) to undo the pins.
            Err(e) => {
                if let Some(p) = &pins {
                    p.undo(&[]);
                }
                return Err(e);
            }
        };
        let mut dp = Self {
            counters,
            flows,
            ebpf,
            ring_size: limits.maglev_table_size,
            shadow: Shadow::default(),
            pins,
            links: StdHashMap::new(),
            made_links: Vec::new(),
            replaced: false,
            started: false,
            attached: Vec::new(),
            ipv6_forwarding: false,
            rings,
        };
        dp.read_shadow()?;
        Ok(dp)
    }

    /// The daemon is set up: from now on the pins stay when this is
    /// dropped (until then, a failed start undoes what it pinned).
    pub fn set_up(&mut self) {
        self.started = true;
        if let Some(p) = &mut self.pins {
            p.commit();
        }
    }

    /// What the (pinned) maps held when this process loaded them.
    pub fn adopted(&self) -> Adopted {
        Adopted {
            services: self.shadow.services.iter().map(|(k, v)| (*k, *v)).collect(),
            backends: self.shadow.backends.iter().map(|(k, v)| (*k, *v)).collect(),
        }
    }

    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program(PROGRAM_NAME)
            .expect("program present after load")
            .try_into()
            .expect("program is XDP")
    }

    /// Attaches to `iface`. A link pinned there by an earlier run is
    /// switched to this program atomically; otherwise `Auto` tries native
    /// first, then generic. With a pin dir the new link is pinned, so the
    /// program keeps running if this process dies.
    pub fn attach(&mut self, iface: &str, mode: XdpModeSetting) -> Result<Attached> {
        forward(iface, Family::V4)?;
        if self.ipv6_forwarding {
            forward(iface, Family::V6)?;
        }
        if !self.attached.iter().any(|a| a == iface) {
            self.attached.push(iface.to_owned());
        }
        self.attach_program(iface, mode)
    }

    /// `iface` was deleted and created again: a new device (new index,
    /// forwarding off, no program). Its old link went defunct with the old
    /// device; it is dropped, pin and all, and the program attached anew.
    pub fn reattach(&mut self, iface: &str, mode: XdpModeSetting) -> Result<Attached> {
        self.links.remove(iface);
        if let Some(p) = &self.pins {
            p.forget_link(iface)?;
        }
        self.attach(iface, mode)
    }

    /// Turns IPv6 forwarding on where attached once a plan has IPv6
    /// services (and for interfaces attached later). Only then: it also
    /// makes an interface ignore router advertisements (unless accept_ra
    /// is 2).
    fn forward_ipv6_if(&mut self, plan: &Plan) -> Result<()> {
        let ipv6 = plan.services.iter().any(|s| {
            s.key.family == lb_common::FAMILY_V6
                || s.backends
                    .iter()
                    .any(|b| b.entry.family == lb_common::FAMILY_V6)
        });
        if ipv6 && !self.ipv6_forwarding {
            for iface in &self.attached {
                forward(iface, Family::V6)?;
            }
            self.ipv6_forwarding = true;
        }
        Ok(())
    }

    fn attach_program(&mut self, iface: &str, mode: XdpModeSetting) -> Result<Attached> {
        if let Some(pins) = &self.pins
            && let Some(link) = pins.take_link(iface)
        {
            match program_mut(&mut self.ebpf)?.attach_to_link(link) {
                Ok(_) => {
                    self.replaced = true;
                    return Ok(Attached::Replaced);
                }
                // For instance the interface went away and came back.
                Err(e) => {
                    tracing::warn!("cannot reuse the pinned link of {iface} ({e}); attaching anew");
                    pins.forget_link(iface)?;
                }
            }
        }
        let prog = program_mut(&mut self.ebpf)?;
        let mut try_mode = |m: XdpMode, attached: Attached, name: &'static str| {
            prog.attach(iface, m)
                .map(|id| (id, attached))
                .map_err(|source| DataplaneError::Attach {
                    iface: iface.to_string(),
                    mode: name,
                    source,
                })
        };
        let (id, attached) = match mode {
            XdpModeSetting::Native => try_mode(XdpMode::Driver, Attached::Native, "native")?,
            XdpModeSetting::Generic => try_mode(XdpMode::Skb, Attached::Generic, "generic")?,
            XdpModeSetting::Auto => try_mode(XdpMode::Driver, Attached::Native, "native")
                .or_else(|_| try_mode(XdpMode::Skb, Attached::Generic, "generic"))?,
        };
        if let Some(pins) = &self.pins {
            let link = program_mut(&mut self.ebpf)?
                .take_link(id)
                .map_err(DataplaneError::Program)?;
            if let Some(fd) = pins.pin_link(iface, link)? {
                self.links.insert(iface.to_owned(), fd);
            }
            self.made_links.push(iface.to_owned());
        }
        Ok(attached)
    }

    /// Detaches the program from interfaces that have a pinned link but
    /// are not in `keep` (an earlier run's interfaces, since removed).
    /// Also frees the jump tables of earlier runs' programs, which no
    /// link runs any more once every interface is attached.
    pub fn detach_others(&mut self, keep: &[String]) -> Result<Vec<String>> {
        match &self.pins {
            Some(p) => {
                let gone = p.unpin_links_except(keep)?;
                p.remove_old_jumps()?;
                Ok(gone)
            }
            None => Ok(Vec::new()),
        }
    }

    /// Removes every pin (maps and links): once this process exits, the
    /// program is detached and its state freed.
    pub fn unpin_all(&mut self) -> Result<()> {
        if let Some(p) = &self.pins {
            p.remove_all()?;
        }
        Ok(())
    }

    /// Reads the counters of the given service and backend ids.
    pub fn counters(&self, service_ids: &[u32], backend_ids: &[u32]) -> Result<Counters> {
        self.counters.read(service_ids, backend_ids)
    }

    /// A counter reader of its own, for use beside this data plane (metrics).
    pub fn counter_reader(&self) -> Result<CounterReader> {
        CounterReader::open(&self.ebpf)
    }

    /// A flow table handle of its own, for use beside this data plane (the
    /// expiry sweep).
    pub fn flow_table(&self) -> Result<FlowTable> {
        FlowTable::open(&self.ebpf)
    }

    /// Entries in the flow table (read in batches: ~250 syscalls for a
    /// million flows).
    pub fn flow_entries(&self) -> Result<u64> {
        Ok(self.flows.entries()?.len() as u64)
    }

    /// Deletes flows idle past their timeout (`FlowTable::expire`).
    pub fn expire_flows(&mut self) -> Result<u64> {
        self.flows.expire()
    }

    /// The flow table's entry for `key`, if any: confirmed (`FLOWS`) or
    /// not yet (`PENDING`, then `.1` is false).
    pub fn flow(&self, key: &FlowKey) -> Result<Option<(lb_common::Flow, bool)>> {
        for (name, confirmed) in [("FLOWS", true), ("PENDING", false)] {
            let flows: HashMap<_, FlowKey, lb_common::Flow> = self.typed_ref(name)?;
            match flows.get(key, 0) {
                Ok(f) => return Ok(Some((f, confirmed))),
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(name)(e)),
            }
        }
        Ok(None)
    }

    /// The flow-sync maps (`sync`): the ring of flows this node created,
    /// and handles on the owners, peers and peer MACs.
    pub fn sync_maps(&mut self) -> Result<crate::sync::Maps> {
        let map = self
            .ebpf
            .take_map("SYNC_EVENTS")
            .ok_or(DataplaneError::MissingMap("SYNC_EVENTS"))?;
        Ok(crate::sync::Maps {
            events: RingBuf::try_from(map).map_err(map_err("SYNC_EVENTS"))?,
            owners: handles::open(&self.ebpf, "OWNERS")?,
            peers: handles::open(&self.ebpf, "PEERS")?,
            peer_macs: handles::open(&self.ebpf, "PEER_MACS")?,
        })
    }

    /// The ring buffer on which the program asks for neighbour resolution.
    pub fn take_neigh_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map("NEIGH_EVENTS")
            .ok_or(DataplaneError::MissingMap("NEIGH_EVENTS"))?;
        RingBuf::try_from(map).map_err(map_err("NEIGH_EVENTS"))
    }

    /// The program's record of interfaces partial checksums arrived on
    /// (`crate::offload`); taken out of the object, for its task.
    pub fn take_partial_csum(&mut self) -> Result<aya::maps::HashMap<MapData, u32, u32>> {
        let map = self
            .ebpf
            .take_map("PARTIAL_CSUM")
            .ok_or(DataplaneError::MissingMap("PARTIAL_CSUM"))?;
        aya::maps::HashMap::try_from(map).map_err(map_err("PARTIAL_CSUM"))
    }

    /// Fills the shadow from the maps (non-empty only when they were pinned
    /// by an earlier run).
    fn read_shadow(&mut self) -> Result<()> {
        let services: HashMap<_, ServiceKey, ServiceMeta> = self.typed_ref("SERVICES")?;
        let adopted: Vec<(ServiceKey, ServiceMeta)> =
            services.iter().filter_map(|r| r.ok()).collect();
        let backends: Array<_, Backend> = self.typed_ref("BACKENDS")?;
        let used: Vec<(u32, Backend)> = (0..backends.len())
            .filter_map(|i| Some((i, backends.get(&i, 0).ok()?)))
            .filter(|(_, b)| b.family != 0)
            .collect();
        self.shadow.services = adopted.into_iter().collect();
        self.shadow.backends = used.into_iter().collect();
        Ok(())
    }

    fn typed<'a, T>(&'a mut self, name: &'static str) -> Result<T>
    where
        T: TryFrom<&'a mut aya::maps::Map, Error = MapError>,
    {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(DataplaneError::MissingMap(name))?;
        T::try_from(map).map_err(map_err(name))
    }

    fn typed_ref<'a, T>(&'a self, name: &'static str) -> Result<T>
    where
        T: TryFrom<&'a aya::maps::Map, Error = MapError>,
    {
        let map = self
            .ebpf
            .map(name)
            .ok_or(DataplaneError::MissingMap(name))?;
        T::try_from(map).map_err(map_err(name))
    }
}

impl Drop for Dataplane {
    /// A start that fails before `set_up` leaves nothing behind: no
    /// program on an interface, no pin. Unless an earlier run's link
    /// already runs this program: it keeps it, and the state with it.
    fn drop(&mut self) {
        if self.started {
            return;
        }
        let Some(pins) = &mut self.pins else {
            return;
        };
        if self.replaced {
            pins.commit();
            return;
        }
        // Unpinned and closed, each link detaches.
        self.links.clear();
        pins.undo(&self.made_links);
    }
}

/// The object loaded with `sizes` (pinned in `pins`), its programs
/// verified and linked.
fn load_object(
    object: &[u8],
    sizes: &std::collections::BTreeMap<&'static str, pins::MapSpec>,
    pins: Option<&pins::Pins>,
) -> Result<Ebpf> {
    features::raise_memlock();
    let mut loader = EbpfLoader::new();
    features::set_globals(&mut loader);
    for (name, spec) in sizes {
        if spec.setting.is_some() {
            loader.map_max_entries(name, spec.max_entries);
        }
    }
    if let Some(p) = pins {
        for name in sizes.keys() {
            loader.map_pin_path(name, p.map_path(name));
        }
        loader.map_pin_path("JUMP", p.jump_path());
    }
    let mut ebpf = loader.load(object).map_err(|e| map_refused(sizes, e))?;
    let entry = program_mut(&mut ebpf)?;
    entry.load().map_err(|e| refused(PROGRAM_NAME, e))?;
    log_verified(PROGRAM_NAME, entry);
    link_stages(&mut ebpf)?;
    Ok(ebpf)
}

/// A map the kernel would not create at the size the config asks for is
/// the config's doing: the error names the setting.
fn map_refused(
    sizes: &std::collections::BTreeMap<&'static str, pins::MapSpec>,
    e: EbpfError,
) -> DataplaneError {
    if let EbpfError::MapError(MapError::CreateError { name, io_error }) = &e
        && let Some(spec) = sizes.get(name.as_str())
        && let Some(setting) = spec.setting
    {
        let why = match io_error.raw_os_error() {
            Some(libc::E2BIG) => "more than it allows".to_owned(),
            Some(libc::ENOMEM) => "not enough memory for it".to_owned(),
            _ => io_error.to_string(),
        };
        return DataplaneError::MapRefused {
            setting,
            map: name.clone(),
            entries: spec.max_entries,
            why,
        };
    }
    DataplaneError::Load(e)
}

/// Loads the programs `xdplb` tail-calls and puts them in its jump table
/// (this run's own: see `Pins::new_jump_path`).
fn link_stages(ebpf: &mut Ebpf) -> Result<()> {
    let mut fds = Vec::new();
    for (name, slot) in STAGES {
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .ok_or(DataplaneError::MissingProgram(name))?
            .try_into()
            .map_err(DataplaneError::Program)?;
        prog.load().map_err(|e| refused(name, e))?;
        log_verified(name, prog);
        let fd = prog
            .fd()
            .map_err(DataplaneError::Program)?
            .try_clone()
            .map_err(|e| DataplaneError::Io {
                what: format!("duplicating the fd of {name}"),
                source: e,
            })?;
        fds.push((slot, fd));
    }
    let map = ebpf
        .map_mut("JUMP")
        .ok_or(DataplaneError::MissingMap("JUMP"))?;
    let mut jump = aya::maps::ProgramArray::try_from(map).map_err(map_err("JUMP"))?;
    for (slot, fd) in fds {
        jump.set(slot, &fd, 0).map_err(map_err("JUMP"))?;
    }
    Ok(())
}

/// How much work the verifier did: the number to watch against its limit
/// of 1M processed instructions (docs/kernels.md).
fn log_verified(name: &str, prog: &Xdp) {
    if let Some(n) = prog
        .info()
        .ok()
        .and_then(|i| i.verified_instruction_count())
    {
        tracing::debug!("program {name}: the verifier processed {n} instructions");
    }
}

/// A verifier rejection in one line (the whole log goes to the debug log:
/// it runs to thousands of lines).
fn refused(program: &'static str, e: ProgramError) -> DataplaneError {
    let ProgramError::LoadError {
        io_error,
        verifier_log,
    } = &e
    else {
        return DataplaneError::Program(e);
    };
    let log = format!("{verifier_log}");
    tracing::debug!("verifier log of {program}:\n{log}");
    DataplaneError::Verifier {
        program,
        kernel: features::kernel_name(),
        summary: format!("{} ({io_error})", verifier_summary(&log)),
    }
}

/// The verifier's reason: its last line that is neither an instruction
/// nor a statistic.
fn verifier_summary(log: &str) -> String {
    let statistic = [
        "verification time",
        "stack depth",
        "processed ",
        "max_states",
    ];
    log.lines()
        .map(str::trim)
        .rev()
        .find(|l| {
            !l.is_empty()
                && !l.starts_with(|c: char| c.is_ascii_digit() || c == ';' || c == '[')
                && !statistic.iter().any(|s| l.starts_with(s))
                && !l.starts_with(':')
        })
        .unwrap_or("rejected without a reason in its log")
        .to_owned()
}

/// `bpf_fib_lookup` answers FWD_DISABLED unless forwarding is on for the
/// ingress interface, per family.
fn forward(iface: &str, family: Family) -> Result<()> {
    let changed = host::enable_forwarding(iface, family).map_err(|source| DataplaneError::Io {
        what: format!("enabling {family:?} forwarding on {iface}"),
        source,
    })?;
    if changed {
        let v = match family {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        };
        tracing::info!("enabled net.{v}.conf.{iface}.forwarding (bpf_fib_lookup needs it)");
    }
    Ok(())
}

fn program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    let prog = ebpf
        .program_mut(PROGRAM_NAME)
        .ok_or(DataplaneError::MissingProgram(PROGRAM_NAME))?;
    prog.try_into().map_err(DataplaneError::Program)
}

#[cfg(test)]
mod tests {
    use super::verifier_summary;

    #[test]
    fn the_verifier_reason_is_picked_from_its_log() {
        let log = "0: R1=ctx(off=0,imm=0) R10=fp0\n\
                   ; let port = ((min + h % span) as u16).to_be();\n\
                   2059: (9f) r1 %= r2 ; R1_w=scalar()\n\
                   BPF program is too large. Processed 1000001 insn\n\
                   verification time 20807654 usec\n\
                   stack depth 464+0+0\n\
                   processed 1000001 insns (limit 1000000) max_states_per_insn 31\n";
        assert_eq!(
            verifier_summary(log),
            "BPF program is too large. Processed 1000001 insn"
        );
        let log = "109: (71) r5 = *(u8 *)(r5 +0)\ninvalid access to packet, off=0 size=1, R5(id=6,off=0,r=0)\nR5 offset is outside of the packet\nprocessed 139 insns\n";
        assert_eq!(verifier_summary(log), "R5 offset is outside of the packet");
    }
}
