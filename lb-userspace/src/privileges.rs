//! After setup (program loaded and attached, sockets bound) the daemon
//! keeps only the capabilities its running work needs (docs/security.md):
//!
//! - `CAP_BPF`: every bpf(2) call on the maps it holds (reloads, admin
//!   changes, counters, the flow expiry, flow sync): kernels before 6.5
//!   check it on each call when `kernel.unprivileged_bpf_disabled` is set,
//!   as Debian 12's 6.1 does.
//! - `CAP_NET_ADMIN`: XDP links and netlink (attaching again, also to an
//!   interface deleted and created again while it runs, `link_watch`;
//!   detaching on exit).
//!
//! With `bgp`, BIRD (a child, started and restarted by the daemon) gets
//! what BIRD itself keeps when it drops privileges: `CAP_NET_BIND_SERVICE`
//! (port 179), `CAP_NET_ADMIN`, `CAP_NET_RAW`, `CAP_NET_BROADCAST`. Run as
//! root, these stay in the bounding set only, which is what a root child
//! gets at exec; the daemon's own sets do not hold them. Run as another
//! user (the systemd unit: user xdplb with ambient capabilities), a child
//! gets only ambient capabilities: those of BIRD's the daemon was given
//! stay permitted, inheritable and ambient, never effective.
//!
//! Starting needs one more: `CAP_PERFMON`, without which the verifier
//! refuses the program's pointer arithmetic on packets ("prohibited for
//! !root"). Loaded, the program needs it no more, so it goes too.
//!
//! Everything else goes, from every set: `CAP_SYS_ADMIN`,
//! `CAP_DAC_OVERRIDE`, `CAP_SYS_PTRACE`, `CAP_SYS_MODULE`, ... Root's files
//! (the config, the pins) stay readable and writable: they are its own.
//!
//! Capabilities belong to each thread, and the tokio runtime's threads
//! already run: like glibc's setuid(), the drop is applied on every thread
//! by a signal whose handler makes the same two syscalls, then checked in
//! /proc/self/task/*/status until every thread (also one started meanwhile)
//! shows it.

use std::{
    fs, io,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use caps::Capability;

use crate::config::Config;

/// What the daemon keeps for itself.
const OWN: &[Capability] = &[Capability::CAP_BPF, Capability::CAP_NET_ADMIN];

/// What BIRD may get at exec, with `bgp` (its own list: sysdep/linux/syspriv.h).
const BIRD: &[Capability] = &[
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_NET_ADMIN,
    Capability::CAP_NET_RAW,
    Capability::CAP_NET_BROADCAST,
];

/// How long every thread has to apply the drop.
const DEADLINE: Duration = Duration::from_secs(5);

/// What the drop leaves, as bit masks (bit n = capability n).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kept {
    /// Effective (and permitted).
    pub own: u64,
    /// The bounding set: what a root child can get at exec.
    pub bounding: u64,
    /// Permitted, inheritable and ambient (beside `own`, effective only in
    /// the child): what a child of a daemon not running as root gets at
    /// exec. `drop_to` leaves it empty as root.
    pub ambient: u64,
}

impl Kept {
    /// The names of `mask`'s capabilities, in bit order.
    pub fn names(mask: u64) -> Vec<String> {
        let mut caps: Vec<Capability> = caps::all()
            .into_iter()
            .filter(|c| mask & c.bitmask() != 0)
            .collect();
        caps.sort_by_key(Capability::index);
        caps.iter().map(ToString::to_string).collect()
    }
}

fn running_as_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

impl Kept {
    /// What a child (BIRD) gets at most at exec: a root child what the
    /// bounding set allows, another user's only what is ambient.
    pub fn for_children(&self) -> u64 {
        if running_as_root() {
            self.bounding
        } else {
            self.ambient
        }
    }
}

/// What starting needs: see the module's text.
pub const TO_START: &[Capability] = &[
    Capability::CAP_BPF,
    Capability::CAP_PERFMON,
    Capability::CAP_NET_ADMIN,
];

/// Refuses a start that would fail on a missing capability, naming it
/// (the kernel's own refusal is a bare EPERM, or a verifier message about
/// pointer arithmetic). CAP_SYS_ADMIN stands in for CAP_BPF and
/// CAP_PERFMON, as in the kernel.
pub fn check_can_start() -> Result<(), String> {
    let effective = caps::read(None, caps::CapSet::Effective)
        .map_err(|e| format!("reading this process's capabilities: {e}"))?;
    let sys_admin = effective.contains(&Capability::CAP_SYS_ADMIN);
    let missing: Vec<String> = TO_START
        .iter()
        .filter(|c| !effective.contains(c))
        .filter(|c| !(sys_admin && **c != Capability::CAP_NET_ADMIN))
        .map(ToString::to_string)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "xdplb run needs {}; this process lacks {} (run it as root, or as the \
         systemd unit deploy/systemd/xdplb.service does: AmbientCapabilities=CAP_BPF \
         CAP_PERFMON CAP_NET_ADMIN)",
        TO_START
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        missing.join(", ")
    ))
}

/// What the daemon running `cfg` needs: see the module's text.
pub fn needed(cfg: &Config) -> Kept {
    let mask = |caps: &[Capability]| caps.iter().fold(0, |m, c| m | c.bitmask());
    let own = mask(OWN);
    let children = if cfg.bgp.is_some() { mask(BIRD) } else { 0 };
    Kept {
        own,
        bounding: own | children,
        ambient: children,
    }
}

/// One thread's capability sets, as /proc/PID/task/TID/status shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadCaps {
    pub inheritable: u64,
    pub permitted: u64,
    pub effective: u64,
    pub bounding: u64,
    pub ambient: u64,
}

impl ThreadCaps {
    /// Parses the `Cap*:` lines of a status file.
    pub fn parse(status: &str) -> Option<ThreadCaps> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        };
        Some(ThreadCaps {
            inheritable: field("CapInh")?,
            permitted: field("CapPrm")?,
            effective: field("CapEff")?,
            bounding: field("CapBnd")?,
            ambient: field("CapAmb")?,
        })
    }

    /// Every thread of process `pid` (threads that end meanwhile are left
    /// out), with its id.
    pub fn of_threads(pid: &str) -> io::Result<Vec<(String, ThreadCaps)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(format!("/proc/{pid}/task"))? {
            let tid = entry?.file_name().to_string_lossy().into_owned();
            let Ok(text) = fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")) else {
                continue;
            };
            if let Some(caps) = ThreadCaps::parse(&text) {
                out.push((tid, caps));
            }
        }
        Ok(out)
    }
}

// What the signal handler applies (set before any signal is sent).
static OWN_MASK: AtomicU64 = AtomicU64::new(0);
static BOUNDING_DROP: AtomicU64 = AtomicU64::new(0);
static DROP_BOUNDING: AtomicBool = AtomicBool::new(false);
static AMBIENT_MASK: AtomicU64 = AtomicU64::new(0);

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// The drop on the calling thread: the bounding set first (that needs
/// CAP_SETPCAP, which the capset then drops), then effective = own,
/// permitted = own + ambient, inheritable = ambient (the kernel clears
/// every other ambient capability), and the ambient ones raised. Only
/// atomics and raw syscalls: async-signal-safe. True if capset succeeded.
fn apply_on_this_thread() -> bool {
    let own = OWN_MASK.load(Ordering::SeqCst);
    let ambient = AMBIENT_MASK.load(Ordering::SeqCst);
    if DROP_BOUNDING.load(Ordering::SeqCst) {
        let drop = BOUNDING_DROP.load(Ordering::SeqCst);
        for cap in 0..64 {
            if drop & (1 << cap) != 0 {
                // SAFETY: a plain syscall on this thread.
                unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            }
        }
    }
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let permitted = own | ambient;
    let data = [
        CapData {
            effective: own as u32,
            permitted: permitted as u32,
            inheritable: ambient as u32,
        },
        CapData {
            effective: (own >> 32) as u32,
            permitted: (permitted >> 32) as u32,
            inheritable: (ambient >> 32) as u32,
        },
    ];
    // SAFETY: header and data are the layout capset(2) reads for version 3.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return false;
    }
    for cap in 0..64 {
        if ambient & (1 << cap) != 0 {
            // SAFETY: a plain syscall on this thread.
            unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong,
                    0,
                    0,
                )
            };
        }
    }
    true
}

extern "C" fn on_signal(_: libc::c_int) {
    // SAFETY: errno is this thread's; the interrupted code gets it back.
    let errno = unsafe { *libc::__errno_location() };
    apply_on_this_thread();
    unsafe { *libc::__errno_location() = errno };
}

/// The signal that carries the drop to the other threads.
fn signal() -> libc::c_int {
    libc::SIGRTMIN() + 4
}

/// Drops, on every thread of this process, every capability `needed` does
/// not name; returns what is left. Without CAP_SETPCAP (already restricted
/// by a supervisor, or not root) the bounding set is left as it is.
pub fn drop_to(needed: Kept) -> io::Result<Kept> {
    let me = std::process::id().to_string();
    let before = ThreadCaps::of_threads("self")?
        .into_iter()
        .find(|(tid, _)| *tid == me)
        .map(|(_, c)| c)
        .ok_or_else(|| io::Error::other("no /proc/self/task entry for the main thread"))?;
    let setpcap = before.effective & Capability::CAP_SETPCAP.bitmask() != 0;
    // Started with CAP_SYS_ADMIN but not CAP_BPF (a supervisor's old-style
    // list): the kernel takes CAP_SYS_ADMIN for bpf(2), so it stays.
    let (bpf, sys_admin) = (
        Capability::CAP_BPF.bitmask(),
        Capability::CAP_SYS_ADMIN.bitmask(),
    );
    let mut own = needed.own & before.permitted;
    if needed.own & bpf != 0 && own & bpf == 0 {
        own |= before.permitted & sys_admin;
    }
    let root = running_as_root();
    let want = Kept {
        own,
        bounding: if setpcap {
            (needed.bounding | own) & before.bounding
        } else {
            before.bounding
        },
        ambient: if root {
            0
        } else {
            needed.ambient & before.permitted
        },
    };
    OWN_MASK.store(want.own, Ordering::SeqCst);
    AMBIENT_MASK.store(want.ambient, Ordering::SeqCst);
    BOUNDING_DROP.store(before.bounding & !want.bounding, Ordering::SeqCst);
    DROP_BOUNDING.store(setpcap, Ordering::SeqCst);

    // SAFETY: the handler only makes async-signal-safe calls; SA_RESTART
    // lets most interrupted syscalls go on.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(signal(), &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    if !apply_on_this_thread() {
        return Err(io::Error::last_os_error());
    }
    let done = |c: &ThreadCaps| {
        c.effective == want.own
            && c.permitted == want.own | want.ambient
            && c.inheritable == want.ambient
            && c.ambient == want.ambient
            && c.bounding == want.bounding
    };
    let start = Instant::now();
    loop {
        let pending: Vec<String> = ThreadCaps::of_threads("self")?
            .into_iter()
            .filter(|(_, c)| !done(c))
            .map(|(tid, _)| tid)
            .collect();
        if pending.is_empty() {
            return Ok(want);
        }
        if start.elapsed() > DEADLINE {
            return Err(io::Error::other(format!(
                "threads {} still hold capabilities after {DEADLINE:?}",
                pending.join(", ")
            )));
        }
        for tid in pending {
            if let Ok(tid) = tid.parse::<libc::c_int>() {
                // SAFETY: a signal to a thread of this process, whose
                // handler is installed above.
                unsafe {
                    libc::syscall(
                        libc::SYS_tgkill,
                        libc::getpid(),
                        tid,
                        signal() as libc::c_long,
                    )
                };
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemon_keeps_bpf_and_net_admin_and_bird_its_own() {
        let base = "interfaces: [eth0]\nsnat: { ipv4: 198.18.1.1 }\nservices: []\n";
        let plain = needed(&Config::from_yaml(base).unwrap());
        assert_eq!(Kept::names(plain.own), ["CAP_NET_ADMIN", "CAP_BPF"]);
        assert_eq!((plain.bounding, plain.ambient), (plain.own, 0));
        let bgp = format!(
            "{base}bgp: {{ local_as: 65001, router_id: 198.18.0.1, peers: [{{ address: 198.18.0.2, as: 65000 }}] }}\n"
        );
        let with_bird = needed(&Config::from_yaml(&bgp).unwrap());
        assert_eq!(with_bird.own, plain.own);
        assert_eq!(
            with_bird.ambient,
            with_bird.bounding & !plain.own | Capability::CAP_NET_ADMIN.bitmask()
        );
        assert_eq!(
            Kept::names(with_bird.bounding),
            [
                "CAP_NET_BIND_SERVICE",
                "CAP_NET_BROADCAST",
                "CAP_NET_ADMIN",
                "CAP_NET_RAW",
                "CAP_BPF"
            ]
        );
    }

    #[test]
    fn status_lines_parse() {
        let status = "Name:\txdplb\nCapInh:\t0000000000000000\nCapPrm:\t0000008000001000\n\
                      CapEff:\t0000008000001000\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n";
        let caps = ThreadCaps::parse(status).unwrap();
        assert_eq!(caps.effective, (1 << 39) | (1 << 12));
        assert_eq!(caps.bounding, (1 << 41) - 1);
        assert_eq!(ThreadCaps::parse("Name:\tx\n"), None);
        let me = ThreadCaps::of_threads("self").unwrap();
        assert!(!me.is_empty());
    }
}
