//! Running code and commands inside a named network namespace
//! (`/var/run/netns/NAME`, as created by `ip netns add`).

use std::{
    fs::File,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command},
};

use anyhow::{Context, Result, anyhow, bail};
use nix::sched::{CloneFlags, setns};

/// Runs `f` on a fresh thread that has entered namespace `ns` and returns
/// its result. Only that short-lived thread switches namespace, so the
/// caller's namespace never changes; sockets created inside `f` stay bound to
/// `ns` wherever they are used afterwards. A panic in `f` is propagated.
pub fn run_in<T, F>(ns: &str, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> Result<T> + Send,
{
    let path = Path::new("/var/run/netns").join(ns);
    let fd = File::open(&path).with_context(|| format!("open {}", path.display()))?;
    std::thread::scope(|s| {
        let handle = s.spawn(move || {
            setns(&fd, CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("setns into network namespace {ns}"))?;
            drop(fd);
            f()
        });
        handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Spawns `cmd` inside network namespace `ns` only: not through `ip netns
/// exec`, whose private mount of /sys would hide the host's bpf filesystem
/// (pins made there vanish with the process).
pub fn spawn_in(ns: &str, cmd: &mut Command) -> Result<Child> {
    let path = Path::new("/var/run/netns").join(ns);
    let netns = File::open(&path).with_context(|| format!("open namespace {ns}"))?;
    let fd = netns.as_raw_fd();
    // SAFETY: setns is async-signal-safe; fd stays open until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("spawn {} in {ns}", command_line(cmd)))?;
    drop(netns);
    Ok(child)
}

/// `ip netns exec NS PROGRAM`, ready for more arguments.
pub fn command(ns: &str, program: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, program]);
    cmd
}

/// Runs `cmd` to completion; the error names the command line and carries
/// its stderr. Returns stdout.
pub fn run(cmd: &mut Command) -> Result<String> {
    let line = command_line(cmd);
    let out = cmd
        .output()
        .with_context(|| format!("cannot run `{line}`"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip ARGS...`.
pub fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

/// Runs `ip -n NS LINE` for each line (words split on spaces), in order.
pub fn ip_script<S: AsRef<str>>(ns: &str, lines: impl IntoIterator<Item = S>) -> Result<()> {
    for line in lines {
        let args: Vec<&str> = ["-n", ns]
            .into_iter()
            .chain(line.as_ref().split(' '))
            .collect();
        ip(&args)?;
    }
    Ok(())
}

/// The index of interface `dev` in namespace `ns`.
pub fn ifindex(ns: &str, dev: &str) -> Result<u32> {
    let out = ip(&["-n", ns, "-o", "link", "show", dev])?;
    let index = out.split(':').next().unwrap_or_default().trim();
    index
        .parse()
        .with_context(|| format!("ifindex of {dev} in {ns}: {out:?}"))
}

/// `02:00:00:00:00:01`, as `ip` writes MAC addresses.
pub fn mac_text(m: [u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

/// A named network namespace with `lo` up; deleted on drop (the processes
/// still inside keep it alive until they exit).
#[derive(Debug)]
pub struct Netns(String);

impl Netns {
    pub fn create(name: &str) -> Result<Netns> {
        ip(&["netns", "add", name])?;
        let ns = Netns(name.to_owned());
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.0
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.0]) {
            eprintln!("testbed teardown: {e:#}");
        }
    }
}

/// Looks `program` up in PATH and the sbin directories (root's tools may live
/// there even when PATH lacks them).
pub fn find_program(program: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("`{program}` not found in PATH"))
}

fn command_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}
