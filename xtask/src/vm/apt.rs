//! apt: the host packages vm-test needs, and .debs fetched (not installed)
//! into a cache with `apt-get download`, unpacked with `dpkg -x`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
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

/// Where apt looks: the host's own sources, or a Debian release the host
/// does not run, read through a private configuration (its own sources
/// list and package lists under the cache) so the host's apt sources stay
/// as they are. The host's debian-archive-keyring signs both.
#[derive(Debug, Clone, Default)]
pub struct Apt {
    /// `-o` options for apt-get and apt-cache.
    options: Vec<String>,
}

/// A Debian release by its archive lines (one-line sources.list format).
pub struct Suite {
    pub name: &'static str,
    pub sources: &'static [&'static str],
}

/// Debian 11 with its point and security updates: the newest 5.10 build.
pub const BULLSEYE: Suite = Suite {
    name: "bullseye",
    sources: &[
        "deb http://deb.debian.org/debian bullseye main",
        "deb http://deb.debian.org/debian bullseye-updates main",
        "deb http://deb.debian.org/debian-security bullseye-security main",
    ],
};

const LISTS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

impl Apt {
    /// The host's sources and package lists.
    pub fn host() -> Apt {
        Apt::default()
    }

    /// `suite` alone, configured under `cache/apt-<name>` (package lists
    /// read once, then kept like the packages).
    pub fn suite(suite: &Suite, cache: &Path) -> Result<Apt> {
        let dir = cache.join(format!("apt-{}", suite.name));
        let lists = dir.join("lists");
        let parts = dir.join("sources.list.d");
        for d in [lists.join("partial"), parts.clone(), dir.join("cache")] {
            fs::create_dir_all(&d).with_context(|| format!("create {}", d.display()))?;
        }
        let sources = dir.join("sources.list");
        let text: String = suite
            .sources
            .iter()
            .map(|l| {
                let (deb, rest) = l.split_once(' ').unwrap_or((l, ""));
                format!("{deb} [signed-by={KEYRING}] {rest}\n")
            })
            .collect();
        fs::write(&sources, text).with_context(|| format!("write {}", sources.display()))?;
        // No installed packages: the host's own (a bookworm kernel) must
        // not shadow the suite's candidates.
        let status = dir.join("status");
        if !status.exists() {
            fs::write(&status, "")?;
        }
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let options = vec![
            format!("Dir::Etc::sourcelist={}", path(&sources)),
            format!("Dir::Etc::sourceparts={}", path(&parts)),
            format!("Dir::State::lists={}", path(&lists)),
            format!("Dir::State::status={}", path(&status)),
            format!("Dir::Cache={}", path(&dir.join("cache"))),
        ];
        let apt = Apt { options };
        // Read again after a week: the security archive keeps only its
        // newest kernel build, so old lists would name one it no longer has.
        // (apt dates the lists as the archive does: a stamp of our own.)
        let stamp = dir.join("updated");
        let fresh = fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < LISTS_MAX_AGE);
        if !fresh {
            eprintln!("xtask vm-test: reading the package lists of {}", suite.name);
            exec(apt.command("apt-get").arg("update"))?;
            fs::write(&stamp, "")?;
        }
        Ok(apt)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        for o in &self.options {
            cmd.args(["-o", o]);
        }
        // As root apt drops to the _apt user, which cannot write the cache.
        if is_root() {
            cmd.args(["-o", "APT::Sandbox::User=root"]);
        }
        cmd
    }

    fn is_host(&self) -> bool {
        self.options.is_empty()
    }

    /// The candidate of `package`: its version and its `Depends` line (for
    /// a meta-package such as linux-image-amd64, the real kernel package).
    fn show(&self, package: &str) -> Result<(String, String)> {
        let mut cmd = self.command("apt-cache");
        cmd.args(["show", "--no-all-versions", package]);
        // No package lists yet (fresh machine): read them once.
        let text = match output(&mut cmd) {
            Some(t) if !t.trim().is_empty() => t,
            _ if self.is_host() => {
                exec(privileged("apt-get").arg("update"))?;
                output(&mut cmd).with_context(|| format!("apt does not know package {package}"))?
            }
            _ => bail!("apt does not know package {package}"),
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        Ok((field("Version:"), field("Depends:")))
    }

    pub fn candidate(&self, package: &str) -> Result<Deb> {
        let (version, _) = self.show(package)?;
        if version.is_empty() {
            bail!("apt has no candidate version of {package}");
        }
        Ok(Deb {
            package: package.to_owned(),
            version,
            apt: self.clone(),
        })
    }

    /// The first package the candidate of meta-package `meta` depends on
    /// whose name starts with `prefix`.
    pub fn meta_target(&self, meta: &str, prefix: &str) -> Result<Deb> {
        let (_, depends) = self.show(meta)?;
        let package = depends
            .split(',')
            .map(|d| d.split_whitespace().next().unwrap_or(""))
            .find(|p| p.starts_with(prefix))
            .with_context(|| {
                format!("{meta} depends on no {prefix}* package (depends: {depends})")
            })?;
        self.candidate(package)
    }
}

/// A package at one version, as apt would download it now.
#[derive(Debug, Clone)]
pub struct Deb {
    pub package: String,
    pub version: String,
    apt: Apt,
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
                let mut cmd = self.apt.command("apt-get");
                cmd.current_dir(&dir)
                    .arg("download")
                    .arg(format!("{}={}", self.package, self.version));
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
