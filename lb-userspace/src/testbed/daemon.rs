//! The real `xdplb` daemon, run inside the test bed's LB namespace.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{clients::http_get, netns};

/// A running daemon; stopped with SIGTERM (then SIGKILL) on drop, its config
/// and log files removed.
pub struct Daemon {
    child: Child,
    ns: String,
    admin: SocketAddr,
    config: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Writes `config_yaml` to a file named after `ns`, starts `xdplb run`
    /// in `ns`, and waits until its admin API answers (`admin` must be the
    /// config's `admin.listen`).
    pub fn start(bin: &Path, ns: &str, config_yaml: &str, admin: SocketAddr) -> Result<Daemon> {
        let config = std::env::temp_dir().join(format!("{ns}.yaml"));
        let log = std::env::temp_dir().join(format!("{ns}.log"));
        fs::write(&config, config_yaml).with_context(|| format!("write {}", config.display()))?;
        let log_file = fs::File::create(&log)?;
        let child = netns::command(ns, &bin.to_string_lossy())
            .args(["run", "--config"])
            .arg(&config)
            .env("XDPLB_LOG", "debug")
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let mut d = Daemon {
            child,
            ns: ns.to_owned(),
            admin,
            config,
            log,
        };
        d.wait_ready(Duration::from_secs(30))?;
        Ok(d)
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
        let status = self.terminate()?;
        Ok((status, self.log()))
    }

    fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        // `ip netns exec` execs the daemon, so the child pid is the daemon.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
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
        let _ = self.terminate();
        let _ = fs::remove_file(&self.config);
        let _ = fs::remove_file(&self.log);
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
