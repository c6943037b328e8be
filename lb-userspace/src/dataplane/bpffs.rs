//! Where pins can live: a bpf filesystem that outlives this process.
//!
//! A pin keeps its object (map, link, hence the attached program) only as
//! long as the bpf filesystem holding it is mounted somewhere. The host's
//! is; one mounted inside a mount namespace of its own goes with the last
//! process in it. `ip netns exec` makes exactly that (it remounts /sys for
//! the network namespace, hiding the host's /sys/fs/bpf), and so does a
//! container without the host's bpffs: pins made there vanish silently
//! when the process exits, detaching `xdplb decap` and losing the daemon's
//! state on restart. Such a start is refused with the fix instead.
//!
//! The host's mount namespace is told by the one kernel threads run in
//! (kthreadd, PID 2, whose namespaces root may read even where PID 1's are
//! hidden), else PID 1's. In a PID namespace of its own (a container)
//! neither is the host's, so nothing can be compared: a bpffs already
//! mounted there is trusted (the usual bind mount of the host's), but none
//! is mounted by xdplb.

use std::{fs, os::unix::fs::MetadataExt, path::Path};

use tracing::info;

use super::pins::{PinError, io_err};

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const BPF_FS_ROOT: &str = "/sys/fs/bpf";
/// The initial PID namespace's inode number (fixed since Linux 3.8).
const INIT_PID_NS_INO: u64 = 0xEFFF_FFFC;

/// Makes sure `dir` exists on a bpf filesystem whose pins outlive this
/// process: the host's. Mounts one at /sys/fs/bpf if that is where `dir`
/// belongs, nothing is mounted there and this is the host's mount
/// namespace (many hosts mount it only once something needs it, as bpftool
/// and systemd do).
pub fn ensure_pin_dir(dir: &Path) -> Result<(), PinError> {
    let existing = dir
        .ancestors()
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"));
    if is_bpffs(existing) {
        check_hosts(dir, existing)?;
    } else {
        mount_bpffs(dir, existing)?;
    }
    fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
}

fn mount_bpffs(dir: &Path, existing: &Path) -> Result<(), PinError> {
    let root = Path::new(BPF_FS_ROOT);
    if !(dir.starts_with(root) && existing == root) {
        return Err(PinError::NotBpffs(dir.to_owned()));
    }
    match host_mount_ns() {
        Some(true) => {}
        Some(false) => return Err(private_mount(dir)),
        None => return Err(PinError::NoHostBpffs(dir.to_owned())),
    }
    nix::mount::mount(
        Some("bpf"),
        root,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| io_err(format!("mounting a bpf filesystem at {BPF_FS_ROOT}"))(e.into()))?;
    info!("mounted a bpf filesystem at {BPF_FS_ROOT} for pinning");
    Ok(())
}

/// A bpffs is mounted at `existing`: in a mount namespace of its own (a
/// systemd unit's sandbox, `unshare -m`) it must be the host's, propagated
/// or bind-mounted, which PID 1 then sees at the same path.
fn check_hosts(dir: &Path, existing: &Path) -> Result<(), PinError> {
    if host_mount_ns() != Some(false) {
        return Ok(());
    }
    let at_init = Path::new("/proc/1/root").join(existing.strip_prefix("/").unwrap_or(existing));
    // PID 1's view hidden: nothing to compare, trust the mount.
    let Ok(hosts) = fs::metadata(&at_init) else {
        return Ok(());
    };
    match fs::metadata(existing) {
        Ok(ours) if ours.dev() != hosts.dev() => Err(private_mount(dir)),
        _ => Ok(()),
    }
}

fn private_mount(dir: &Path) -> PinError {
    PinError::PrivateMount {
        dir: dir.to_owned(),
        netns: netns_name().unwrap_or_else(|| "NS".into()),
    }
}

/// Whether this process runs in the host's mount namespace (see the
/// module's text); None when that cannot be told.
fn host_mount_ns() -> Option<bool> {
    let own = fs::read_link("/proc/self/ns/mnt").ok()?;
    let pid_ns = fs::metadata("/proc/self/ns/pid").ok()?.ino();
    if pid_ns != INIT_PID_NS_INO {
        return None;
    }
    let kthreadd =
        fs::read_to_string("/proc/2/comm").is_ok_and(|comm| comm.trim_end() == "kthreadd");
    let references = if kthreadd {
        &["/proc/2/ns/mnt", "/proc/1/ns/mnt"][..]
    } else {
        &["/proc/1/ns/mnt"][..]
    };
    references
        .iter()
        .find_map(|r| fs::read_link(r).ok())
        .map(|host| host == own)
}

/// The name under /run/netns of this process's network namespace, if it
/// has one (for the fix in the error).
fn netns_name() -> Option<String> {
    let own = fs::metadata("/proc/self/ns/net").ok()?;
    fs::read_dir("/run/netns")
        .ok()?
        .flatten()
        .find(|e| {
            fs::metadata(e.path()).is_ok_and(|m| m.dev() == own.dev() && m.ino() == own.ino())
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_told_apart_from_a_private_mount_namespace() {
        // The tests run in the host's namespaces (as root, like the
        // integration tests): the check must not refuse them.
        if fs::read_link("/proc/self/ns/mnt").is_err() {
            return;
        }
        assert_ne!(host_mount_ns(), Some(false));
    }
}
