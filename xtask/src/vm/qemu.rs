//! QEMU: whether KVM really works here, and one boot of a guest with its
//! serial console streamed back line by line, killed at a deadline.

use std::{
    fs,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "TCG (software emulation)",
        })
    }
}

/// MACs of the two virtio-net NICs; vm/virtio.sh finds them by these.
const NICS: [&str; 2] = ["52:54:00:78:64:01", "52:54:00:78:64:02"];

pub struct Boot {
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
    pub accel: Accel,
    pub cpus: u32,
    pub memory_mib: u32,
    pub timeout: Duration,
}

/// A line of the guest's console (or of QEMU's stderr, prefixed "qemu: "),
/// with when it arrived since QEMU started.
pub struct Line {
    pub at: Duration,
    pub text: String,
}

pub struct Outcome {
    pub lines: Vec<Line>,
    /// The deadline passed and QEMU was killed.
    pub timed_out: bool,
}

/// /dev/kvm can exist and open yet not run guests (nested virtualization
/// in some VMs: the guest hangs in the BIOS). So boot the kernel for real:
/// without a root filesystem it panics, and -no-reboot ends QEMU, in about
/// a second with KVM; a hang means no KVM.
pub fn kvm_works(vmlinuz: &Path) -> bool {
    let usable = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !usable {
        return false;
    }
    let mut cmd = base(Accel::Kvm, 1, 256);
    cmd.arg("-kernel")
        .arg(vmlinuz)
        .args(["-append", "console=ttyS0 panic=-1"]);
    match run(cmd, Duration::from_secs(10), |_| {}) {
        Ok(out) => !out.timed_out && out.lines.iter().any(|l| l.text.contains("Kernel panic")),
        Err(_) => false,
    }
}

fn base(accel: Accel, cpus: u32, memory_mib: u32) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", "stdio", "-monitor", "none", "-no-reboot"])
        .args(match accel {
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
            // "max": every feature TCG emulates (RDRAND seeds the guest's
            // random pool at once).
            Accel::Tcg => ["-accel", "tcg", "-cpu", "max"],
        })
        .args(["-smp", &cpus.to_string(), "-m", &memory_mib.to_string()]);
    cmd
}

/// Boots the guest and streams its console to `on_line` until QEMU exits
/// (the guest powered off, or panicked) or the timeout.
pub fn boot(b: &Boot, on_line: impl FnMut(&Line)) -> Result<Outcome> {
    let mut cmd = base(b.accel, b.cpus, b.memory_mib);
    cmd.arg("-kernel")
        .arg(&b.vmlinuz)
        .arg("-initrd")
        .arg(&b.initrd)
        // panic=-1 and -no-reboot: a guest that panics ends QEMU at once.
        .args(["-append", "console=ttyS0 panic=-1 quiet"]);
    // Two virtio-net NICs on one QEMU hub: a wire between them for the
    // native-XDP smoke test. No romfile: nothing boots from the network.
    for (i, mac) in NICS.iter().enumerate() {
        cmd.args(["-netdev", &format!("hubport,id=n{i},hubid=0")])
            .args([
                "-device",
                &format!("virtio-net-pci,netdev=n{i},mac={mac},romfile="),
            ]);
    }
    run(cmd, b.timeout, on_line)
}

fn run(mut cmd: Command, timeout: Duration, mut on_line: impl FnMut(&Line)) -> Result<Outcome> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run qemu-system-x86_64")?;
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let out_tx = tx.clone();
    std::thread::spawn(move || forward(stdout, "", out_tx));
    std::thread::spawn(move || forward(stderr, "qemu: ", tx));

    let deadline = start + timeout;
    let mut lines = Vec::new();
    let mut timed_out = false;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(text) => {
                let line = Line {
                    at: start.elapsed(),
                    text,
                };
                on_line(&line);
                lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                let _ = child.kill();
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = child.wait();
    Ok(Outcome { lines, timed_out })
}

/// Sends each line of `from` (console bytes need not be UTF-8; serial
/// lines end in \r\n).
fn forward(from: impl Read, prefix: &str, tx: mpsc::Sender<String>) {
    let mut reader = BufReader::new(from);
    let mut buf = Vec::new();
    while reader.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
        let text = String::from_utf8_lossy(&buf);
        let text = text.trim_end_matches(['\r', '\n']);
        if tx.send(format!("{prefix}{text}")).is_err() {
            return;
        }
        buf.clear();
    }
}
