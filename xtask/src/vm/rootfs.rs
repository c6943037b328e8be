//! The guest's userland: one initramfs holding busybox (shell, mount,
//! httpd, wget), the host's own `ip` and `ethtool` (busybox's `ip` has no
//! `netns`), the test executables and the daemon (debug info stripped), the
//! shared libraries all of these need (found with ldd), the guest scripts
//! of vm/, and per kernel its modules.
//!
//! Why not a debootstrap'ed disk: the tests need only glibc and two tools,
//! so copying them from the host is a few seconds and ~100 MB of RAM, with
//! no mirror, no disk image, no block or filesystem drivers, and the guest
//! runs exactly the binaries the host built and Debian 12's iproute2; the
//! initramfs boots in seconds under TCG (aya's own VM tests do the same).

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use super::{cpio::Archive, kernel::Module};
use crate::util::exec;

const INIT: &str = include_str!("../../../vm/init.sh");
const LOAD: &str = include_str!("../../../vm/load.sh");
const VIRTIO: &str = include_str!("../../../vm/virtio.sh");

/// Host tools the tests run, copied to /usr/local/sbin (first in the
/// guest's PATH, ahead of busybox's applets of the same name).
const HOST_TOOLS: &[&str] = &["ip", "ethtool"];

/// What the host built for the guest.
pub struct Payload {
    /// Test executables by name (cargo test targets), run as /vm/tests/NAME.
    pub tests: Vec<(String, PathBuf)>,
    /// The daemon, kept at its host path: the integration tests were
    /// compiled with it (env!("CARGO_BIN_EXE_xdplb")).
    pub xdplb: PathBuf,
}

/// Everything but the kernel modules. `plan` lists the tests init.sh runs,
/// in order; `test_args` go to every test executable. `work` holds the
/// stripped copies.
pub fn common(
    busybox: &Path,
    payload: &Payload,
    plan: &[String],
    test_args: &[String],
    work: &Path,
) -> Result<Archive> {
    let mut a = Archive::default();
    for dir in ["/proc", "/sys", "/dev", "/run", "/tmp", "/root", "/var"] {
        a.dir(dir);
    }
    a.file("/init", 0o755, INIT.as_bytes());
    a.file("/bin/busybox", 0o755, &read(busybox)?);
    a.file("/etc/hosts", 0o644, b"127.0.0.1 localhost\n");
    a.file("/etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n");
    a.file("/vm/load.sh", 0o755, LOAD.as_bytes());
    a.file("/vm/virtio.sh", 0o755, VIRTIO.as_bytes());
    a.file("/vm/plan", 0o644, lines(plan).as_bytes());
    a.file("/vm/test-args", 0o644, test_args.join(" ").as_bytes());
    let xdplb = payload.xdplb.to_str().context("non-UTF-8 path")?;
    // init.sh mounts over these.
    if ["/proc/", "/sys/", "/dev/", "/run/"]
        .iter()
        .any(|d| xdplb.starts_with(d))
    {
        bail!("{xdplb}: the guest mounts over this directory; use another target dir");
    }
    a.file("/vm/env", 0o644, env(xdplb).as_bytes());

    let mut elfs = Vec::new();
    for tool in HOST_TOOLS {
        let path = host_program(tool)?;
        a.file(&format!("/usr/local/sbin/{tool}"), 0o755, &read(&path)?);
        elfs.push(path);
    }
    let bin = work.join("bin");
    fs::create_dir_all(&bin)?;
    for (name, exe) in &payload.tests {
        a.file(
            &format!("/vm/tests/{name}"),
            0o755,
            &read(&stripped(exe, &bin.join(name))?)?,
        );
        elfs.push(exe.clone());
    }
    a.file(
        xdplb,
        0o755,
        &read(&stripped(&payload.xdplb, &bin.join("xdplb"))?)?,
    );
    elfs.push(payload.xdplb.clone());
    for lib in shared_libs(&elfs)? {
        let path = lib.to_str().context("non-UTF-8 library path")?;
        // read() follows symlinks: the guest gets the file under the name
        // the loader asks for.
        a.file(path, 0o755, &read(&lib)?);
    }
    Ok(a)
}

/// The archive for one kernel: `common` plus its modules and their order.
pub fn with_modules(common: &Archive, modules: &[Module]) -> Vec<u8> {
    let mut a = common.clone();
    for m in modules {
        a.file(&format!("/vm/modules/{}.ko", m.name), 0o644, &m.data);
    }
    let names: Vec<String> = modules.iter().map(|m| m.name.clone()).collect();
    a.file("/vm/modules.list", 0o644, lines(&names).as_bytes());
    a.finish()
}

/// Sourced by the guest scripts: the daemon's path, and functions that run
/// the host's tools, because busybox sh runs its own applet of the same
/// name before anything in PATH (the Rust tests go through PATH). The
/// host's XDPLB_LOG goes along (`XDPLB_LOG=debug` shows a rejecting
/// verifier's whole log on the guest's console).
fn env(xdplb: &str) -> String {
    let mut env = format!("XDPLB={xdplb}\nexport XDPLB\n");
    if let Ok(level) = std::env::var("XDPLB_LOG") {
        env += &format!("XDPLB_LOG='{level}'\nexport XDPLB_LOG\n");
    }
    for tool in HOST_TOOLS {
        env += &format!("{tool}() {{ /usr/local/sbin/{tool} \"$@\"; }}\n");
    }
    env
}

fn lines(items: &[String]) -> String {
    items.iter().map(|s| format!("{s}\n")).collect()
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("read {}", path.display()))
}

/// `program` in PATH or the sbin directories (a user's PATH may lack them).
fn host_program(program: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("`{program}` not found on the host (apt-get install it)"))
}

/// A copy of `exe` without debug info: test binaries shrink from ~100 MB to
/// ~15 MB, and the initramfs lives in the guest's RAM. Panic locations do
/// not need debug info.
fn stripped(exe: &Path, out: &Path) -> Result<PathBuf> {
    let _ = fs::remove_file(out);
    exec(
        Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(out)
            .arg(exe),
    )?;
    Ok(out.to_owned())
}

/// The shared libraries (and the dynamic loader) the executables need, as
/// ldd resolves them on this host.
fn shared_libs(elfs: &[PathBuf]) -> Result<BTreeSet<PathBuf>> {
    let mut libs = BTreeSet::new();
    for elf in elfs {
        let out = Command::new("ldd")
            .arg(elf)
            .output()
            .context("cannot run ldd")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!("ldd {} failed: {text}", elf.display());
        }
        for line in text.lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)",
            // "/lib64/ld-linux-x86-64.so.2 (0x...)", "linux-vdso.so.1 (0x...)".
            let target = line.split_once("=>").map_or(line, |(_, t)| t).trim();
            if target.starts_with("not found") {
                bail!("{}: {line}", elf.display());
            }
            if let Some(path) = target.split_whitespace().next()
                && path.starts_with('/')
            {
                libs.insert(PathBuf::from(path));
            }
        }
    }
    Ok(libs)
}
