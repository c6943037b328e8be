//! `cargo xtask vm-test`: the test suite inside QEMU guests running
//! Debian's own kernels (Debian 11's 5.10, 6.1, 6.12), the way aya tests
//! itself: fetch each kernel package through apt (cached in
//! target/vm-cache), build one busybox initramfs with the test
//! executables, boot it (KVM if it really works, else TCG), let vm/init.sh
//! run the tests, and read the verdicts from the serial console. Exits non-zero if any test fails on any kernel.
//! Needs no root itself (only to install missing host packages).

use std::{
    fs,
    io::Write,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    util::{built_executables, cargo, root},
    vm::{
        apt,
        cpio::Archive,
        kernel::{self, Kernel},
        qemu::{self, Accel},
        report::{self, KernelReport, Status},
        rootfs::{self, Payload},
    },
};

/// The layers, in the order the guest runs them: load first (does the
/// verifier accept the program), then BPF_PROG_TEST_RUN (packet,
/// flow_sync, consistency, trace; least_flows has both kinds),
/// then namespaces with real servers (testbed alone, then with the
/// daemon), then native XDP on virtio-net. `load` and `virtio` are
/// vm/*.sh; the others are lb-userspace test targets. Left out, as they
/// do not depend on the kernel: health, cli, cli_client.
pub const DEFAULT_PLAN: &[&str] = &[
    "load",
    "packet",
    "flow_sync",
    "consistency",
    "trace",
    "least_flows",
    "testbed",
    "nat",
    "modes",
    "operations",
    "virtio",
];
const SCRIPTS: &[&str] = &["load", "virtio"];

pub struct Options {
    /// Kernel labels (5.10, 6.1, 6.12) or "all".
    pub kernels: Vec<String>,
    /// Tests to run; empty: DEFAULT_PLAN.
    pub only: Vec<String>,
    pub accel: Option<Accel>,
    pub cpus: u32,
    pub memory_mib: u32,
    pub timeout: Duration,
    /// Echo the whole guest console, not just the markers.
    pub verbose: bool,
    /// Passed to every test executable (e.g. a filter); --test-threads=1
    /// unless they set --test-threads.
    pub test_args: Vec<String>,
}

pub fn run(opts: &Options) -> Result<()> {
    let specs = select_kernels(&opts.kernels)?;
    let plan: Vec<String> = if opts.only.is_empty() {
        DEFAULT_PLAN.iter().map(|s| s.to_string()).collect()
    } else {
        opts.only.clone()
    };
    apt::ensure_host_packages()?;
    let cache = root().join("target/vm-cache");
    let work = root().join("target/vm-test");
    fs::create_dir_all(&work)?;

    let busybox = apt::Apt::host()
        .candidate("busybox-static")?
        .unpacked(&cache)?
        .join("bin/busybox");
    let payload = build(&plan)?;
    // One test at a time unless told otherwise: under emulation, parallel
    // tests (each loading the program: ~10 s of verifier under TCG) starve
    // each other and miss the integration tests' time windows (daemon ready
    // within 30 s, failover detection), while the total hardly changes.
    let mut test_args = opts.test_args.clone();
    if !test_args.iter().any(|a| a.starts_with("--test-threads")) {
        test_args.insert(0, "--test-threads=1".to_owned());
    }
    let common = rootfs::common(&busybox, &payload, &plan, &test_args, &work)?;
    let kernels = specs
        .iter()
        .map(|s| Kernel::fetch(s, &cache))
        .collect::<Result<Vec<_>>>()?;
    let accel = match opts.accel {
        Some(a) => a,
        None if qemu::kvm_works(&kernels[0].vmlinuz()) => Accel::Kvm,
        None => Accel::Tcg,
    };
    eprintln!(
        "xtask vm-test: {accel}, {} vCPUs, {} MiB; tests: {}",
        opts.cpus,
        opts.memory_mib,
        plan.join(" ")
    );

    let mut reports = Vec::new();
    for k in &kernels {
        let mut r = run_kernel(k, &common, &busybox, &plan, accel, opts, "")?;
        // A guest kernel panic is the emulator's or the guest kernel's
        // failure, not a test's (TCG once executed a stale int3 of the
        // kernel's live patching of its XDP dispatcher): the tests from the
        // one it died in run once more in a new guest, and the report says so.
        if let Some(rest) = r.rerun_after_panic(&plan) {
            eprintln!(
                "xtask vm-test: the {} guest's kernel panicked in `{}` (console-{}.log): \
                 booting a new guest for {}",
                k.label,
                rest[0],
                k.label,
                rest.join(" ")
            );
            let again = rootfs::common(&busybox, &payload, &rest, &test_args, &work)?;
            let retry = run_kernel(k, &again, &busybox, &rest, accel, opts, "-retry")?;
            r.merge_retry(retry);
        }
        reports.push(r);
    }
    println!(
        "\nvm-test: {accel}, {} vCPUs, {} MiB\n{}",
        opts.cpus,
        opts.memory_mib,
        report::table(&reports)
    );
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.label.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("vm-test failed on kernel {}", failed.join(", "));
    }
    Ok(())
}

fn select_kernels(wanted: &[String]) -> Result<Vec<&'static kernel::Spec>> {
    let labels: Vec<&str> = kernel::SPECS.iter().map(|s| s.label).collect();
    if wanted.is_empty() || wanted.iter().any(|w| w == "all") {
        return Ok(kernel::SPECS.iter().collect());
    }
    wanted
        .iter()
        .map(|w| {
            kernel::SPECS
                .iter()
                .find(|s| s.label == w)
                .with_context(|| format!("unknown kernel {w} (known: {}, all)", labels.join(", ")))
        })
        .collect()
}

/// Builds the daemon and the test executables the plan names (with the
/// XDP program, as `cargo xtask test` does) and finds them from cargo's
/// JSON messages.
fn build(plan: &[String]) -> Result<Payload> {
    crate::setup::run()?;
    let mut cmd = cargo();
    cmd.args(["test", "--no-run", "-p", "lb-userspace"])
        .env_remove("AYA_BUILD_SKIP");
    let mut tests = Vec::new();
    let mut xdplb = None;
    for b in built_executables(&mut cmd, "the tests")? {
        match (b.kind.as_str(), b.test) {
            ("test", true) => tests.push((b.name, b.path)),
            ("bin", false) if b.name == "xdplb" => xdplb = Some(b.path),
            _ => {}
        }
    }
    let known: Vec<String> = tests.iter().map(|(n, _)| n.clone()).collect();
    for name in plan {
        if !SCRIPTS.contains(&name.as_str()) && !known.contains(name) {
            bail!(
                "unknown test {name} (known: {} {})",
                SCRIPTS.join(" "),
                known.join(" ")
            );
        }
    }
    tests.retain(|(n, _)| plan.contains(n));
    Ok(Payload {
        tests,
        xdplb: xdplb.context("cargo built no xdplb binary")?,
    })
}

fn run_kernel(
    k: &Kernel,
    common: &Archive,
    busybox: &Path,
    plan: &[String],
    accel: Accel,
    opts: &Options,
    log_suffix: &str,
) -> Result<KernelReport> {
    let work = root().join("target/vm-test");
    let modules = k.modules(kernel::MODULES, busybox)?;
    let initrd = work.join(format!("initramfs-{}.cpio", k.label));
    fs::write(&initrd, rootfs::with_modules(common, &modules))?;
    eprintln!(
        "xtask vm-test: kernel {} ({} {}), modules: {}",
        k.label,
        k.deb.package,
        k.deb.version,
        modules
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );

    let log_path = work.join(format!("console-{}{log_suffix}.log", k.label));
    let mut log = fs::File::create(&log_path)?;
    let started = Instant::now();
    let boot = qemu::Boot {
        vmlinuz: k.vmlinuz(),
        initrd,
        accel,
        cpus: opts.cpus,
        memory_mib: opts.memory_mib,
        timeout: opts.timeout,
    };
    let outcome = qemu::boot(&boot, |l| {
        let _ = writeln!(log, "[{:7.1}] {}", l.at.as_secs_f64(), l.text);
        if opts.verbose || l.text.contains("VMTEST ") {
            eprintln!("[{} +{}] {}", k.label, report::secs(l.at), l.text);
        }
    })?;
    let (boot_time, tests, done) = report::parse(plan, &outcome.lines);
    let r = KernelReport {
        label: k.label.to_owned(),
        release: k.release.clone(),
        boot: boot_time,
        total: started.elapsed(),
        tests,
        done,
        timed_out: outcome.timed_out,
        panicked: outcome
            .lines
            .iter()
            .any(|l| l.text.contains("Kernel panic - not syncing")),
        retried: None,
    };
    print_failures(&r, &outcome.lines, &log_path, opts.timeout);
    Ok(r)
}

/// The console lines of every failed test (the end of them: a test's own
/// output is long), or the end of the console if the guest hung or died.
fn print_failures(r: &KernelReport, lines: &[qemu::Line], log: &Path, timeout: Duration) {
    const TAIL: usize = 150;
    let show = |what: &str, range: std::ops::Range<usize>| {
        let from = range.start.max(range.end.saturating_sub(TAIL));
        eprintln!("----- {what} (kernel {}) -----", r.label);
        for l in &lines[from..range.end] {
            eprintln!("{}", l.text);
        }
        eprintln!("----- end; whole console: {} -----", log.display());
    };
    for t in r.tests.iter().filter(|t| t.status == Status::Fail) {
        show(&format!("{} FAILED", t.name), t.lines.clone());
    }
    if !r.done {
        let why = if r.timed_out {
            format!("guest killed after {}", report::secs(timeout))
        } else {
            "guest stopped before the end (panic?)".to_owned()
        };
        show(&why, 0..lines.len());
    }
}
