//! Guest kernels: Debian's own linux-image packages (what users run), and
//! the modules the tests need from the same package, with their
//! dependencies, in load order and decompressed (busybox insmod cannot
//! read the .ko.xz of Debian's 6.12).

use std::{
    collections::{BTreeMap, HashSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use object::{Object, ObjectSection};

use super::apt::{self, Apt, Deb, Suite};

/// A kernel of the matrix: a Debian meta-package that follows the newest
/// build of that series, from the host's sources or from `suite`.
pub struct Spec {
    pub label: &'static str,
    meta: &'static str,
    prefix: &'static str,
    suite: Option<&'static Suite>,
}

pub const SPECS: &[Spec] = &[
    // Debian 11's LTS kernel (and many fleets' 5.10).
    Spec {
        label: "5.10",
        meta: "linux-image-amd64",
        prefix: "linux-image-5.10.",
        suite: Some(&apt::BULLSEYE),
    },
    // Debian 12's own kernel (and the Vagrant box's).
    Spec {
        label: "6.1",
        meta: "linux-image-amd64",
        prefix: "linux-image-6.1.",
        suite: None,
    },
    // The newer kernel Debian 12 also ships (as Debian 13 runs).
    Spec {
        label: "6.12",
        meta: "linux-image-6.12-amd64",
        prefix: "linux-image-6.12.",
        suite: None,
    },
];

/// Modules the tests load: veth, bridge (topology), ipip (tunnel mode),
/// virtio-net (the virtio smoke test). Dependencies are found, not listed.
pub const MODULES: &[&str] = &["virtio_pci", "virtio_net", "veth", "bridge", "ipip"];

pub struct Kernel {
    pub label: &'static str,
    pub deb: Deb,
    /// The unpacked package.
    root: PathBuf,
    /// `uname -r`, the directory under lib/modules.
    pub release: String,
}

pub struct Module {
    pub name: String,
    pub data: Vec<u8>,
}

impl Kernel {
    /// Resolves the spec's package through apt and unpacks it (cached).
    pub fn fetch(spec: &Spec, cache: &Path) -> Result<Kernel> {
        let apt = match spec.suite {
            Some(suite) => Apt::suite(suite, cache)?,
            None => Apt::host(),
        };
        let deb = apt.meta_target(spec.meta, spec.prefix)?;
        let root = deb.unpacked(cache)?;
        let modules = root.join("lib/modules");
        let release = fs::read_dir(&modules)
            .with_context(|| format!("{} has no lib/modules", deb.package))?
            .next()
            .context("lib/modules is empty")??
            .file_name()
            .to_string_lossy()
            .into_owned();
        Ok(Kernel {
            label: spec.label,
            deb,
            root,
            release,
        })
    }

    pub fn vmlinuz(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{}", self.release))
    }

    fn module_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }

    /// `wanted` and everything they depend on, dependencies first; modules
    /// built into this kernel are skipped. `busybox` decompresses .ko.xz.
    pub fn modules(&self, wanted: &[&str], busybox: &Path) -> Result<Vec<Module>> {
        let dir = self.module_dir();
        let mut files = BTreeMap::new();
        index(&dir.join("kernel"), &mut files)?;
        let builtin: HashSet<String> = fs::read_to_string(dir.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| module_name(Path::new(l)))
            .collect();
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for name in wanted {
            let mut ctx = Resolve {
                files: &files,
                builtin: &builtin,
                busybox,
                seen: &mut seen,
                out: &mut out,
            };
            ctx.visit(&normalize(name))
                .with_context(|| format!("module {name} of {}", self.release))?;
        }
        Ok(out)
    }
}

struct Resolve<'a> {
    files: &'a BTreeMap<String, PathBuf>,
    builtin: &'a HashSet<String>,
    busybox: &'a Path,
    seen: &'a mut HashSet<String>,
    out: &'a mut Vec<Module>,
}

impl Resolve<'_> {
    /// Depth first: a module goes out after its dependencies.
    fn visit(&mut self, name: &str) -> Result<()> {
        if self.builtin.contains(name) || !self.seen.insert(name.to_owned()) {
            return Ok(());
        }
        let path = self
            .files
            .get(name)
            .with_context(|| format!("no module {name} in the package (and it is not built in)"))?;
        let data = read_module(path, self.busybox)?;
        for dep in depends(&data).with_context(|| format!("reading {}", path.display()))? {
            self.visit(&dep)?;
        }
        self.out.push(Module {
            name: name.to_owned(),
            data,
        });
        Ok(())
    }
}

/// Module names use `_` where file names may use `-`.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// `.../veth.ko` or `.../veth.ko.xz` -> `veth`.
fn module_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let stem = file.split_once(".ko")?.0;
    Some(normalize(stem))
}

fn index(dir: &Path, files: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            index(&path, files)?;
        } else if let Some(name) = module_name(&path) {
            files.insert(name, path);
        }
    }
    Ok(())
}

fn read_module(path: &Path, busybox: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    if name.ends_with(".ko") {
        return fs::read(path).with_context(|| format!("read {name}"));
    }
    if !name.ends_with(".ko.xz") {
        bail!("{name}: unsupported module compression (only .ko and .ko.xz)");
    }
    let out = Command::new(busybox)
        .args(["xz", "-dc"])
        .arg(path)
        .output()
        .with_context(|| format!("run {} xz", busybox.display()))?;
    if !out.status.success() {
        bail!(
            "decompressing {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

/// The `depends=` entry of the module's .modinfo section (what depmod reads).
fn depends(ko: &[u8]) -> Result<Vec<String>> {
    let file = object::File::parse(ko)?;
    let modinfo = file
        .section_by_name(".modinfo")
        .context("no .modinfo section")?
        .data()?;
    Ok(modinfo
        .split(|b| *b == 0)
        .filter_map(|entry| entry.strip_prefix(b"depends="))
        .flat_map(|list| {
            String::from_utf8_lossy(list)
                .split(',')
                .map(normalize)
                .collect::<Vec<_>>()
        })
        .filter(|d| !d.is_empty())
        .collect())
}
