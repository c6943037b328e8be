//! What the program can do without on an older kernel, probed once at load
//! time (docs/kernels.md). Each is a read-only global of the program the
//! loader sets, which the verifier takes as a constant: the path a kernel
//! lacks is never verified there.

use std::sync::OnceLock;

use aya::{
    EbpfLoader,
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported},
};

/// The kernel's answers (probed once a process).
struct Features {
    /// `bpf_ktime_get_coarse_ns` (5.11); else the flow clock reads
    /// `bpf_ktime_get_ns`, a little dearer.
    coarse_clock: bool,
}

fn features() -> &'static Features {
    static FEATURES: OnceLock<Features> = OnceLock::new();
    FEATURES.get_or_init(|| {
        // A probe that cannot tell (no privilege, a strange error) counts
        // as present: the load itself then says what the kernel refused.
        let has = |helper| is_helper_supported(ProgramType::Xdp, helper).unwrap_or(true);
        let f = Features {
            coarse_clock: has(BpfHelper::BPF_FUNC_ktime_get_coarse_ns),
        };
        if let Some(missing) = f.missing() {
            tracing::info!("on this kernel: {missing}");
        }
        f
    })
}

impl Features {
    /// What this kernel lacks and what the program does instead, in one
    /// line; `None` when it lacks nothing.
    fn missing(&self) -> Option<String> {
        let mut lacks = Vec::new();
        if !self.coarse_clock {
            lacks.push("no bpf_ktime_get_coarse_ns (5.11): the flow clock reads bpf_ktime_get_ns");
        }
        (!lacks.is_empty()).then(|| lacks.join("; "))
    }
}

/// Kernels before 5.11 charge BPF maps to `RLIMIT_MEMLOCK` (64 KiB by
/// default there: not one flow table), later ones to the memory cgroup.
/// There it is raised to unlimited; where the process may not (no
/// `CAP_SYS_RESOURCE`), the daemon says what to do instead.
pub(super) fn raise_memlock() {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};
    if kernel_at_least(5, 11)
        || getrlimit(Resource::RLIMIT_MEMLOCK).is_ok_and(|(soft, _)| soft == RLIM_INFINITY)
    {
        return;
    }
    if let Err(e) = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY) {
        tracing::warn!(
            "{} charges BPF maps to RLIMIT_MEMLOCK, which could not be raised ({e}): \
             large maps will be refused; run with LimitMEMLOCK=infinity (systemd) or \
             ulimit -l unlimited",
            kernel_name()
        );
    }
}

/// Whether the running kernel is `major.minor` or later.
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}

/// Sets the program's globals for this kernel. Not required to exist: an
/// older build of the program (`cargo xtask bench --ab`) may lack one.
pub(super) fn set_globals(loader: &mut EbpfLoader<'_>) {
    // The loader borrows the values until it loads.
    const YES: u8 = 1;
    const NO: u8 = 0;
    let flag = |on: bool| if on { &YES } else { &NO };
    loader.override_global("COARSE_CLOCK", flag(features().coarse_clock), false);
}

/// "Linux RELEASE" of the running kernel, for messages about what it lacks.
pub fn kernel_name() -> String {
    nix::sys::utsname::uname()
        .map(|u| format!("Linux {}", u.release().to_string_lossy()))
        .unwrap_or_else(|_| "this kernel".into())
}
