//! A BIRD 2 of the test bed's own, acting as the router that peers with
//! the LB: started in a namespace with a given config, its files in a
//! directory of its own; killed and cleaned up on drop.

use std::{
    fs,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::netns::{self, find_program, run};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub struct PeerBird {
    child: Child,
    dir: PathBuf,
    birdc: PathBuf,
}

impl PeerBird {
    /// Starts `bird -f` in namespace `ns` with `conf`; waits until its
    /// control socket answers.
    pub fn start(ns: &str, conf: &str) -> Result<PeerBird> {
        let bird = find_program("bird").context("the BGP tests need BIRD 2 (cargo xtask setup)")?;
        let birdc = find_program("birdc")?;
        let dir = std::env::temp_dir().join(format!(
            "xdplb-peer-bird-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("bird.conf"), conf)?;
        let log = fs::File::create(dir.join("bird.log"))?;
        let mut cmd = Command::new(bird);
        cmd.arg("-f")
            .arg("-c")
            .arg(dir.join("bird.conf"))
            .arg("-s")
            .arg(dir.join("bird.ctl"))
            .arg("-P")
            .arg(dir.join("bird.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = netns::spawn_in(ns, &mut cmd)?;
        let mut b = PeerBird { child, dir, birdc };
        for _ in 0..100 {
            if let Some(status) = b.child.try_wait()? {
                bail!("the peer bird exited ({status}):\n{}", b.log());
            }
            if b.birdc(&["show", "status"]).is_ok() {
                return Ok(b);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("the peer bird did not answer:\n{}", b.log())
    }

    /// `birdc -s SOCK ARGS...`: its output.
    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        run(Command::new(&self.birdc)
            .arg("-s")
            .arg(self.dir.join("bird.ctl"))
            .args(args))
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("bird.log")).unwrap_or_default()
    }
}

impl Drop for PeerBird {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The config of a router at `router_id` in AS `asn` that takes IPv4
/// routes from the LB at `neighbor` (AS `neighbor_as`) and puts them into
/// its kernel table (`proto bird`).
pub fn router_conf(router_id: &str, asn: u32, neighbor: &str, neighbor_as: u32) -> String {
    format!(
        "log stderr all;\nrouter id {router_id};\nprotocol device {{}}\n\
         protocol kernel {{ ipv4 {{ import none; export all; }}; }}\n\
         protocol bgp lb {{\n  local as {asn};\n  neighbor {neighbor} as {neighbor_as};\n  \
         hold time 3;\n  connect retry time 1;\n  ipv4 {{ import all; export none; }};\n}}\n"
    )
}
