//! apt: the host packages vm-test needs, and .debs fetched (not installed)
//! into a cache with `apt-get download`, unpacked with `dpkg -x`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::util::{exec, is_root, output};

/// QEMU, and what rootfs.rs copies or runs on the host: ip, ethtool
/// (guest userland), strip (smaller guest binaries).
const HOST_PACKAGES: &[&str] = &["qemu-system-x86", "iproute2", "ethtool", "binutils"];

fn installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.trim() == "install ok installed")
}

/// `program` as root, or through sudo.
fn privileged(program: &str) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.arg(program);
        c
    }
}

/// Installs whichever of HOST_PACKAGES is missing (checked first: a ready
/// host does nothing).
pub fn ensure_host_packages() -> Result<()> {
    let missing: Vec<&str> = HOST_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask vm-test: installing {}", missing.join(" "));
    exec(privileged("apt-get").arg("update"))?;
    exec(
        privileged("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// A package at one version, as apt would download it now.
#[derive(Debug, Clone)]
pub struct Deb {
    pub package: String,
    pub version: String,
}

/// The candidate of `package`: its version and its `Depends` line (for a
/// meta-package such as linux-image-amd64, the real kernel package).
fn show(package: &str) -> Result<(String, String)> {
    let mut cmd = Command::new("apt-cache");
    cmd.args(["show", "--no-all-versions", package]);
    // No package lists yet (fresh machine): read them once.
    let text = match output(&mut cmd) {
        Some(t) if !t.trim().is_empty() => t,
        _ => {
            exec(privileged("apt-get").arg("update"))?;
            output(&mut cmd).with_context(|| format!("apt does not know package {package}"))?
        }
    };
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    Ok((field("Version:"), field("Depends:")))
}

pub fn candidate(package: &str) -> Result<Deb> {
    let (version, _) = show(package)?;
    if version.is_empty() {
        bail!("apt has no candidate version of {package}");
    }
    Ok(Deb {
        package: package.to_owned(),
        version,
    })
}

/// The first package the candidate of meta-package `meta` depends on whose
/// name starts with `prefix`.
pub fn meta_target(meta: &str, prefix: &str) -> Result<Deb> {
    let (_, depends) = show(meta)?;
    let package = depends
        .split(',')
        .map(|d| d.split_whitespace().next().unwrap_or(""))
        .find(|p| p.starts_with(prefix))
        .with_context(|| format!("{meta} depends on no {prefix}* package (depends: {depends})"))?;
    candidate(package)
}

impl Deb {
    /// Unpacks the package (downloaded first if needed) under `cache` and
    /// returns the directory holding its files. Both the .deb and the
    /// unpacked tree are kept, so a second run downloads nothing.
    pub fn unpacked(&self, cache: &Path) -> Result<PathBuf> {
        let dir = cache.join(format!(
            "{}_{}",
            self.package,
            self.version.replace(':', "%3a")
        ));
        let root = dir.join("root");
        if root.is_dir() {
            return Ok(root);
        }
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let deb = match find_deb(&dir)? {
            Some(deb) => deb,
            None => {
                let mut cmd = Command::new("apt-get");
                cmd.current_dir(&dir)
                    .arg("download")
                    .arg(format!("{}={}", self.package, self.version));
                // As root apt drops to the _apt user, which cannot write here.
                if is_root() {
                    cmd.args(["-o", "APT::Sandbox::User=root"]);
                }
                exec(&mut cmd)?;
                find_deb(&dir)?.context("apt-get download left no .deb")?
            }
        };
        // Unpack beside, then rename: an interrupted run leaves no half tree.
        let partial = dir.join("root.partial");
        let _ = fs::remove_dir_all(&partial);
        exec(Command::new("dpkg").arg("-x").arg(&deb).arg(&partial))?;
        fs::rename(&partial, &root)?;
        Ok(root)
    }
}

fn find_deb(dir: &Path) -> Result<Option<PathBuf>> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "deb") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}
