//! BIRD 2 as the daemon's child: started in the foreground with its own
//! config, control socket and pid file under `run_dir`, driven with
//! `birdc -s SOCK`.

use std::{
    io,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use tokio::process::{Child, Command};

/// A `birdc` call that takes longer than this has failed.
const BIRDC_TIMEOUT: Duration = Duration::from_secs(5);

/// `program` in PATH or an sbin directory (Debian puts bird in /usr/sbin).
pub fn find(program: &str) -> io::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("`{program}` not found: bgp needs BIRD 2 (Debian package bird2)"),
            )
        })
}

pub struct Bird {
    bird: PathBuf,
    birdc: PathBuf,
    conf: PathBuf,
    sock: PathBuf,
    pid: PathBuf,
    child: Option<Child>,
}

impl Bird {
    /// Finds the binaries and makes `run_dir`.
    pub fn new(run_dir: &Path) -> io::Result<Bird> {
        std::fs::create_dir_all(run_dir)?;
        Ok(Bird {
            bird: find("bird")?,
            birdc: find("birdc")?,
            conf: run_dir.join("bird.conf"),
            sock: run_dir.join("bird.ctl"),
            pid: run_dir.join("bird.pid"),
            child: None,
        })
    }

    /// Replaces the config file whole (write, then rename): BIRD never
    /// reads half a file.
    pub fn write_conf(&self, text: &str) -> io::Result<()> {
        let tmp = self.conf.with_extension("conf.new");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.conf)
    }

    /// Starts `bird -f` with the config written last, and waits until its
    /// control socket answers.
    ///
    /// BIRD gets SIGTERM when the thread that started it ends
    /// (PR_SET_PDEATHSIG): a tokio worker, alive as long as the daemon.
    /// So when the daemon dies, even by SIGKILL, BIRD closes its sessions
    /// and the peers withdraw our routes at once (docs/ha.md).
    pub async fn start(&mut self) -> io::Result<()> {
        let mut cmd = std::process::Command::new(&self.bird);
        cmd.arg("-f")
            .arg("-c")
            .arg(&self.conf)
            .arg("-s")
            .arg(&self.sock)
            .arg("-P")
            .arg(&self.pid)
            .stdin(Stdio::null());
        // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = Command::from(cmd).kill_on_drop(true).spawn()?;
        for _ in 0..100 {
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!("bird exited at start ({status})")));
            }
            if self.birdc(&["show", "status"]).await.is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill().await;
        Err(io::Error::other(
            "bird's control socket did not answer within 5 s",
        ))
    }

    /// Waits until BIRD exits (forever when it is not running).
    pub async fn exited(&mut self) -> io::Result<ExitStatus> {
        match &mut self.child {
            Some(child) => {
                let status = child.wait().await;
                self.child = None;
                status
            }
            None => std::future::pending().await,
        }
    }

    /// `birdc -s SOCK ARGS...`: its output, or why it failed.
    pub async fn birdc(&self, args: &[&str]) -> Result<String, String> {
        let run = Command::new(&self.birdc)
            .arg("-s")
            .arg(&self.sock)
            .args(args)
            .stdin(Stdio::null())
            .output();
        let out = match tokio::time::timeout(BIRDC_TIMEOUT, run).await {
            Err(_) => return Err(format!("birdc {}: no answer within 5 s", args.join(" "))),
            Ok(Err(e)) => return Err(format!("birdc {}: {e}", args.join(" "))),
            Ok(Ok(out)) => out,
        };
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(format!(
                "birdc {}: {} {}",
                args.join(" "),
                text.trim(),
                err.trim()
            ));
        }
        Ok(text)
    }

    /// `birdc configure`: BIRD reads the config file again and applies the
    /// difference without resetting sessions.
    pub async fn configure(&self) -> Result<(), String> {
        let out = self.birdc(&["configure"]).await?;
        if out.contains("Reconfigured") || out.contains("Reconfiguration in progress") {
            Ok(())
        } else {
            Err(format!("birdc configure: {}", out.trim()))
        }
    }

    /// `birdc down` (BIRD closes its sessions with a Cease notification),
    /// then SIGKILL if it is still there after 2 s.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = self.birdc(&["down"]).await;
        if tokio::time::timeout(Duration::from_secs(2), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
        let _ = std::fs::remove_file(&self.pid);
    }
}
