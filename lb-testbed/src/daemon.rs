//! The real `xdplb` daemon, run inside the test bed's LB namespace.

use std::{
    ffi::OsString,
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::maps::{HashMap, Map, MapData};
use lb_common::{Flow, FlowKey, words_addr};

use crate::{clients::http_get, netns};
use xdplb::config::Config;

/// The admin API address of every test config: each daemon listens inside
/// its own LB namespace, so they never clash.
pub const ADMIN: &str = "127.0.0.1:9100";

/// A running daemon; stopped with SIGTERM (then SIGKILL) on drop, its config
/// and log files removed.
pub struct Daemon {
    child: Child,
    /// The command line up to the config file's path.
    command: Vec<OsString>,
    ns: String,
    admin: SocketAddr,
    config: PathBuf,
    log: PathBuf,
    /// Removed on drop: a killed daemon leaves its pins (and so its
    /// program and maps) behind.
    pin_dir: Option<PathBuf>,
}

/// Starts `COMMAND CONFIG` (`xdplb run --config CONFIG`) inside network
/// namespace `ns` only: not through `ip netns exec`, whose private mount of
/// /sys would hide the host's bpf filesystem and lose the pins with the
/// process.
fn spawn_in(command: &[OsString], ns: &str, config: &Path, log: &Path) -> Result<Child> {
    let log_file = fs::OpenOptions::new().create(true).append(true).open(log)?;
    let (program, args) = command.split_first().context("an empty command line")?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .arg(config)
        .env("XDPLB_LOG", "debug,aya=info,aya_obj=info")
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .stdin(Stdio::null());
    netns::spawn_in(ns, &mut cmd)
}

impl Daemon {
    /// Writes `config_yaml` to a file named after `ns`, starts `xdplb run`
    /// in `ns`, and waits until its admin API answers (`admin` must be the
    /// config's `admin.listen`).
    pub fn start(bin: &Path, ns: &str, config_yaml: &str, admin: SocketAddr) -> Result<Daemon> {
        let command = vec![bin.into(), "run".into(), "--config".into()];
        Daemon::start_command(command, ns, config_yaml, admin)
    }

    /// As [`Self::start`], with `command` (the command line up to the
    /// config file's path) in place of `xdplb run --config`: a unit file's
    /// ExecStart under `setpriv`, say.
    pub fn start_command(
        command: Vec<OsString>,
        ns: &str,
        config_yaml: &str,
        admin: SocketAddr,
    ) -> Result<Daemon> {
        let config = std::env::temp_dir().join(format!("{ns}.yaml"));
        let log = std::env::temp_dir().join(format!("{ns}.log"));
        fs::write(&config, config_yaml).with_context(|| format!("write {}", config.display()))?;
        let pin_dir = Config::from_yaml(config_yaml)
            .context("the test's config")?
            .pin_dir;
        let mut d = Daemon {
            child: spawn_in(&command, ns, &config, &log)?,
            command,
            ns: ns.to_owned(),
            admin,
            config,
            log,
            pin_dir,
        };
        d.wait_ready(Duration::from_secs(30))?;
        Ok(d)
    }

    /// Starts the daemon again with the same config (after `kill`), as an
    /// operator would: it adopts the pinned state.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_none() {
            bail!("restart: the daemon is still running");
        }
        self.child = spawn_in(&self.command, &self.ns, &self.config, &self.log)?;
        self.wait_ready(Duration::from_secs(30))
    }

    /// SIGKILL: the daemon gets no chance to clean up.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGHUP: reload the config file (rewritten first if `yaml` is given).
    pub fn reload(&self, yaml: Option<&str>) -> Result<()> {
        if let Some(text) = yaml {
            fs::write(&self.config, text)?;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP)?;
        Ok(())
    }

    /// SIGTERM without waiting (a test that watches the stop happen; then
    /// [`Self::sigterm`] waits for the exit).
    pub fn send_sigterm(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }

    /// The (client, VIP) addresses of every entry of the daemon's flow
    /// tables, read from its pinned `FLOWS` and `PENDING` maps: the connections this node
    /// carries (or carried lately). Needs a pin_dir.
    pub fn flows(&self) -> Result<Vec<(SocketAddr, SocketAddr)>> {
        let dir = self.pin_dir.as_ref().context("the daemon has no pin_dir")?;
        let at = |words: [u32; 4], port: u16, family: u8| {
            SocketAddr::new(words_addr(words, family), u16::from_be(port))
        };
        let mut flows = Vec::new();
        // Confirmed and unconfirmed flows alike.
        for name in ["FLOWS", "PENDING"] {
            let path = dir.join(name);
            let map = MapData::from_pin(&path)
                .and_then(Map::from_map_data)
                .with_context(|| format!("open {}", path.display()))?;
            let table = HashMap::<_, FlowKey, Flow>::try_from(&map)?;
            for k in table.keys() {
                let k = k?;
                flows.push((at(k.src, k.sport, k.family), at(k.dst, k.dport, k.family)));
            }
        }
        Ok(flows)
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The config file the daemon reads (for reload tests).
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "xdplb exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            if self.metrics().is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("xdplb not ready after {timeout:?}:\n{}", self.log())
    }

    /// The daemon's output so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /metrics` from inside the namespace.
    pub fn metrics(&self) -> Result<String> {
        let (status, body) = http_get(&self.ns, self.admin, "/metrics", Duration::from_secs(5))?;
        if status != 200 {
            bail!("/metrics answered {status}: {body}");
        }
        Ok(body)
    }

    /// Stops the daemon with SIGTERM and returns its exit status and log.
    pub fn stop(mut self) -> Result<(std::process::ExitStatus, String)> {
        let status = self.sigterm()?;
        Ok((status, self.log()))
    }

    /// SIGTERM (SIGKILL after 10 s); waits for the exit.
    pub fn sigterm(&mut self) -> Result<std::process::ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        self.send_sigterm();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill()?;
        Ok(self.child.wait()?)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.sigterm();
        let _ = fs::remove_file(&self.config);
        let _ = fs::remove_file(&self.log);
        if let Some(dir) = &self.pin_dir {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// One sample of Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses the samples of Prometheus text format (what xdplb emits: no
/// escaped quotes or commas inside label values).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k.to_owned(), v.trim_matches('"').to_owned()))
                })
                .collect();
            Some(Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// Sum of the samples of `name` that carry all of `labels` (with every
/// label given, the one series' value).
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    parse_metrics(text)
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|s| s.value)
        .sum()
}
