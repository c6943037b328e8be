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
/// Raised to unlimited where the process may; where it may not (a service
/// manager's own limit, no `CAP_SYS_RESOURCE`), a map the limit refuses
/// fails to load with EPERM, as before.
pub(super) fn raise_memlock() {
    use nix::sys::resource::{RLIM_INFINITY, Resource, setrlimit};
    if let Err(e) = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY) {
        tracing::debug!("RLIMIT_MEMLOCK left as it is ({e})");
    }
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
