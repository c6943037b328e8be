//! Active health checks of backends, with HAProxy's semantics.
//!
//! The host checks every backend of a service that has a `health_check`,
//! straight to the backend's address (or the check's `port`), not through
//! the VIP. Each checked backend is one tokio task that sleeps between
//! checks, so thousands of backends cost thousands of small tasks on the
//! runtime's threads, not thousands of threads.
//!
//! - A backend starts UP, as in HAProxy: traffic flows at once after a start
//!   or a reload, and a backend already serving is not taken out while its
//!   first `fall` checks run. A dead backend costs at most `fall` intervals
//!   of failed new flows.
//! - `fall` consecutive failed checks take an UP backend DOWN, `rise`
//!   consecutive passes bring a DOWN backend UP. Each change is sent once
//!   as a [`Transition`], logged, and counted in
//!   `xdplb_backend_health_transitions_total`.
//! - Checks run every `interval` (the first one at once, after a random
//!   jitter of up to a quarter of `min(interval, 1s)` so thousands of
//!   backends do not fire together), each bounded by `timeout` (validation
//!   keeps `timeout <= interval`, so checks of a backend never overlap).
//!   Their durations go to `xdplb_backend_check_duration_seconds`.
//!
//! Check types: `tcp` (a connect succeeds), `http` (HTTP/1.1 `GET path`
//! gets `expect_status`, and the first [`HealthCheck::MAX_HTTP_BODY`] bytes
//! of the body contain `expect_body` if set), `udp` (`send` from a fresh
//! connected socket gets a reply, containing `expect` if set; an ICMP port
//! unreachable fails the check at once). tcp and http checks close with a
//! RST, as HAProxy does, so they leave no TIME_WAIT sockets behind.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::runtime::Handle;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::config::{CheckType, HealthCheck};

/// Identifies a checked backend: (service name, backend address:port).
pub type BackendKey = (String, SocketAddr);

/// A backend to check, and how.
#[derive(Debug, Clone)]
pub struct Target {
    pub key: BackendKey,
    pub check: HealthCheck,
}

/// A backend went up or down.
#[derive(Debug, Clone)]
pub struct Transition {
    pub key: BackendKey,
    pub up: bool,
    /// Down: the error of the last check. Up: how many checks passed.
    pub reason: String,
}

/// Health of one checked backend (also `check` in the API's backends).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    pub up: bool,
    /// Passed checks in a row (0 after a failure).
    pub consecutive_ok: u32,
    /// Failed checks in a row (0 after a pass).
    pub consecutive_fail: u32,
    /// How long the last check took (None before the first one).
    pub last_duration_ms: Option<f64>,
    /// Why the last check failed; None if it passed (or none ran yet).
    pub last_error: Option<String>,
    /// Checks run so far.
    pub checks: u64,
}

impl Status {
    /// Before any check: up (see the module documentation).
    fn new() -> Self {
        Status {
            up: true,
            consecutive_ok: 0,
            consecutive_fail: 0,
            last_duration_ms: None,
            last_error: None,
            checks: 0,
        }
    }

    /// Records a check's outcome; returns the transition it causes, as
    /// (up, reason).
    fn record(
        &mut self,
        result: Result<(), String>,
        took: Duration,
        check: &HealthCheck,
    ) -> Option<(bool, String)> {
        self.checks += 1;
        self.last_duration_ms = Some(took.as_secs_f64() * 1000.0);
        match result {
            Ok(()) => {
                self.consecutive_ok = self.consecutive_ok.saturating_add(1);
                self.consecutive_fail = 0;
                self.last_error = None;
                if !self.up && self.consecutive_ok >= check.rise {
                    self.up = true;
                    let n = self.consecutive_ok;
                    return Some((true, format!("{n} consecutive checks passed")));
                }
            }
            Err(e) => {
                self.consecutive_fail = self.consecutive_fail.saturating_add(1);
                self.consecutive_ok = 0;
                self.last_error = Some(e.clone());
                if self.up && self.consecutive_fail >= check.fall {
                    self.up = false;
                    return Some((false, e));
                }
            }
        }
        None
    }
}

/// Check durations: 0.1 ms (loopback) to 5 s (the longest sane timeout).
const DURATION_BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The health checker's Prometheus series.
#[derive(Clone)]
pub struct HealthMetrics {
    transitions: IntCounterVec,
    duration: HistogramVec,
}

impl HealthMetrics {
    /// Creates the series and registers them in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let transitions = IntCounterVec::new(
            Opts::new(
                "xdplb_backend_health_transitions_total",
                "Health-check state changes of a backend, by new state.",
            ),
            &["service", "backend", "to"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "xdplb_backend_check_duration_seconds",
                "Duration of a backend's health checks, passed or failed.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["service", "backend"],
        )?;
        registry.register(Box::new(transitions.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(HealthMetrics {
            transitions,
            duration,
        })
    }

    /// Drops every series of `key`.
    fn remove(&self, key: &BackendKey) {
        let backend = key.1.to_string();
        for to in ["up", "down"] {
            // Err only means the series was never created.
            let _ = self
                .transitions
                .remove_label_values(&[key.0.as_str(), &backend, to]);
        }
        let _ = self
            .duration
            .remove_label_values(&[key.0.as_str(), &backend]);
    }
}

/// What the checker and a key's task share.
struct Shared {
    status: Status,
    /// The generation of the one task allowed to record results; bumped
    /// when the task is replaced or stopped, so that a task being aborted
    /// cannot record, send or count anything after that.
    generation: u64,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // Every update leaves `Shared` consistent: a panic cannot corrupt it.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Entry {
    check: HealthCheck,
    shared: Arc<Mutex<Shared>>,
    task: JoinHandle<()>,
}

impl Entry {
    /// Stops the task (at once: it records nothing more); returns the
    /// generation a new task may use.
    fn retire(&self) -> u64 {
        let generation = {
            let mut shared = lock(&self.shared);
            shared.generation += 1;
            shared.generation
        };
        self.task.abort();
        generation
    }
}

/// Runs the health checks of a set of backends (see the module docs).
pub struct HealthChecker {
    spawner: Spawner,
    entries: HashMap<BackendKey, Entry>,
}

/// What a new task needs from the checker.
struct Spawner {
    events: UnboundedSender<Transition>,
    metrics: HealthMetrics,
    runtime: Handle,
}

impl Spawner {
    fn spawn(
        &self,
        key: &BackendKey,
        check: &HealthCheck,
        shared: &Arc<Mutex<Shared>>,
        generation: u64,
    ) -> JoinHandle<()> {
        let task = Task {
            key: key.clone(),
            check: check.clone(),
            shared: shared.clone(),
            generation,
            events: self.events.clone(),
            metrics: self.metrics.clone(),
        };
        self.runtime.spawn(task.run())
    }
}

impl HealthChecker {
    /// Must be called inside a tokio runtime (its tasks run there, even if
    /// `set_targets` is called from outside). Transitions are sent on
    /// `events`; a closed receiver is not an error.
    pub fn new(events: UnboundedSender<Transition>, metrics: HealthMetrics) -> Self {
        HealthChecker {
            spawner: Spawner {
                events,
                metrics,
                runtime: Handle::current(),
            },
            entries: HashMap::new(),
        }
    }

    /// Replaces the set of checked backends: starts tasks for new keys,
    /// stops removed ones (and drops their metrics series), restarts a key
    /// whose check settings changed (keeping its current status, up or
    /// down, and its counters), leaves unchanged ones running untouched.
    /// If a key appears twice, the last target wins.
    pub fn set_targets(&mut self, targets: Vec<Target>) {
        let wanted: HashMap<BackendKey, HealthCheck> =
            targets.into_iter().map(|t| (t.key, t.check)).collect();
        self.entries.retain(|key, entry| {
            let keep = wanted.contains_key(key);
            if !keep {
                entry.retire();
                self.spawner.metrics.remove(key);
            }
            keep
        });
        for (key, check) in wanted {
            match self.entries.get_mut(&key) {
                Some(entry) if entry.check == check => {}
                Some(entry) => {
                    let generation = entry.retire();
                    entry.task = self.spawner.spawn(&key, &check, &entry.shared, generation);
                    entry.check = check;
                }
                None => {
                    let shared = Arc::new(Mutex::new(Shared {
                        status: Status::new(),
                        generation: 0,
                    }));
                    let task = self.spawner.spawn(&key, &check, &shared, 0);
                    self.entries.insert(
                        key,
                        Entry {
                            check,
                            shared,
                            task,
                        },
                    );
                }
            }
        }
    }

    /// The status of `key`; None if it is not checked.
    pub fn status(&self, key: &BackendKey) -> Option<Status> {
        let entry = self.entries.get(key)?;
        Some(lock(&entry.shared).status.clone())
    }

    /// Whether `key` is up; a backend that is not checked is up.
    pub fn is_up(&self, key: &BackendKey) -> bool {
        self.entries
            .get(key)
            .is_none_or(|entry| lock(&entry.shared).status.up)
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        for entry in self.entries.values() {
            entry.retire();
        }
    }
}

/// One backend's check loop.
struct Task {
    key: BackendKey,
    check: HealthCheck,
    shared: Arc<Mutex<Shared>>,
    generation: u64,
    events: UnboundedSender<Transition>,
    metrics: HealthMetrics,
}

impl Task {
    async fn run(self) {
        let (service, backend) = (self.key.0.as_str(), self.key.1.to_string());
        let addr = SocketAddr::new(
            self.key.1.ip(),
            self.check.port.unwrap_or(self.key.1.port()),
        );
        let first = tokio::time::Instant::now() + jitter(&self.key, self.check.interval);
        let mut ticks = tokio::time::interval_at(first, self.check.interval);
        // A late check (busy runtime) pushes the next ones back rather than
        // firing a burst.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let began = Instant::now();
            let result =
                match tokio::time::timeout(self.check.timeout, probe(&self.check, addr)).await {
                    Ok(result) => result,
                    Err(_) => Err(format!(
                        "{} check timed out after {:?}",
                        self.check.r#type, self.check.timeout
                    )),
                };
            let took = began.elapsed();

            let mut shared = lock(&self.shared);
            if shared.generation != self.generation {
                return; // Replaced or removed while checking.
            }
            self.metrics
                .duration
                .with_label_values(&[service, &backend])
                .observe(took.as_secs_f64());
            let Some((up, reason)) = shared.status.record(result, took, &self.check) else {
                continue;
            };
            let to = if up { "up" } else { "down" };
            if up {
                tracing::info!(service, %backend, %reason, "backend is UP");
            } else {
                let fall = self.check.fall;
                tracing::warn!(service, %backend, %reason, fall, "backend is DOWN");
            }
            self.metrics
                .transitions
                .with_label_values(&[service, &backend, to])
                .inc();
            // Sent under the lock: a retired task sends nothing.
            let _ = self.events.send(Transition {
                key: self.key.clone(),
                up,
                reason,
            });
        }
    }
}

/// Delay before the first check: random, below a quarter of
/// `min(interval, 1s)`.
fn jitter(key: &BackendKey, interval: Duration) -> Duration {
    let spread = interval.min(Duration::from_secs(1)) / 4;
    let nanos = spread.as_nanos() as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(RandomState::new().hash_one(key) % nanos)
}

/// One check of `addr`; Err says why it failed. The caller bounds it with
/// the timeout.
async fn probe(check: &HealthCheck, addr: SocketAddr) -> Result<(), String> {
    match check.r#type {
        CheckType::Tcp => connect(addr).await.map(drop),
        CheckType::Http => http_check(check, addr).await,
        CheckType::Udp => udp_check(check, addr).await,
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("tcp connect to {addr}: {e}"))?;
    // Close with a RST (like HAProxy): no TIME_WAIT per check.
    let _ = stream.set_zero_linger();
    Ok(stream)
}

/// Largest response head (status line and headers) read.
const MAX_HTTP_HEAD: usize = 16 * 1024;

async fn http_check(check: &HealthCheck, addr: SocketAddr) -> Result<(), String> {
    let mut stream = connect(addr).await?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: xdplb-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        check.path()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("http send: {e}"))?;

    let mut buf = Vec::with_capacity(4096);
    let (head, head_len) = loop {
        if let Some(found) = parse_head(&buf)? {
            break found;
        }
        if buf.len() > MAX_HTTP_HEAD {
            return Err(format!(
                "http response headers longer than {MAX_HTTP_HEAD} bytes"
            ));
        }
        if read_more(&mut stream, &mut buf).await? == 0 {
            return Err(if buf.is_empty() {
                "http: connection closed without a response".to_string()
            } else {
                "http: connection closed inside the response headers".to_string()
            });
        }
    };
    let expect = check.expect_status();
    if head.status != expect {
        return Err(format!("http status {}, expected {expect}", head.status));
    }
    let Some(want) = &check.expect_body else {
        return Ok(());
    };

    // Read the body until its end, the read limit, or EOF; search what came.
    let limit = head_len + 2 * HealthCheck::MAX_HTTP_BODY; // Room for chunk framing.
    let body = loop {
        let raw = &buf[head_len..];
        let (body, complete) = match head.framing {
            Framing::Chunked => dechunk(raw)?,
            Framing::Length(n) => (raw[..raw.len().min(n)].to_vec(), raw.len() >= n),
            Framing::Close => (raw.to_vec(), false),
        };
        if complete || body.len() >= HealthCheck::MAX_HTTP_BODY || buf.len() >= limit {
            break body;
        }
        if read_more(&mut stream, &mut buf).await? == 0 {
            break body;
        }
    };
    let body = &body[..body.len().min(HealthCheck::MAX_HTTP_BODY)];
    if !contains(body, want.as_bytes()) {
        return Err(format!(
            "http body ({} bytes read) does not contain {want:?}",
            body.len()
        ));
    }
    Ok(())
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, String> {
    let mut chunk = [0u8; 8192];
    let n = stream
        .read(&mut chunk)
        .await
        .map_err(|e| format!("http receive: {e}"))?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// How the end of an HTTP/1.1 response body is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    /// Until the server closes.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    status: u16,
    framing: Framing,
}

/// Parses a response head from the start of `buf`: None until it is
/// complete, else the head and its length (including the blank line).
fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, String> {
    // Tolerate bare LF line ends, as most clients do.
    let end = [(b"\r\n\r\n".as_slice(), 4), (b"\n\n".as_slice(), 2)]
        .iter()
        .filter_map(|(sep, len)| find(buf, sep).map(|at| at + len))
        .min();
    let Some(head_len) = end else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&buf[..head_len]);
    let mut lines = text.lines();
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.split_whitespace();
    let status = match (words.next(), words.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/") && code.len() == 3 => {
            code.parse::<u16>().ok()
        }
        _ => None,
    }
    .ok_or_else(|| format!("http: malformed status line {status_line:?}"))?;
    let mut framing = Framing::Close;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.trim().eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            framing = Framing::Chunked;
        } else if name.trim().eq_ignore_ascii_case("content-length")
            && framing != Framing::Chunked
            && let Ok(n) = value.parse()
        {
            framing = Framing::Length(n);
        }
    }
    // These never have a body.
    if status < 200 || status == 204 || status == 304 {
        framing = Framing::Length(0);
    }
    Ok(Some((Head { status, framing }, head_len)))
}

/// Decodes as much of a chunked body as `raw` holds (a partial last chunk
/// included); true once the last chunk was seen.
fn dechunk(raw: &[u8]) -> Result<(Vec<u8>, bool), String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    loop {
        let Some(eol) = find(rest, b"\n") else {
            return Ok((out, false));
        };
        let line = String::from_utf8_lossy(&rest[..eol]);
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| format!("http: malformed chunk size {size:?}"))?;
        if size == 0 {
            return Ok((out, true)); // Trailers, if any, do not matter.
        }
        rest = &rest[eol + 1..];
        if rest.len() < size {
            out.extend_from_slice(rest);
            return Ok((out, false));
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size..];
        // The chunk's line end.
        let Some(eol) = find(rest, b"\n") else {
            return Ok((out, false));
        };
        rest = &rest[eol + 1..];
    }
}

async fn udp_check(check: &HealthCheck, addr: SocketAddr) -> Result<(), String> {
    let local: SocketAddr = if addr.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|e| format!("udp socket: {e}"))?;
    // Connected: the kernel reports an ICMP unreachable as ECONNREFUSED.
    socket
        .connect(addr)
        .await
        .map_err(|e| format!("udp connect to {addr}: {e}"))?;
    socket
        .send(check.send().as_bytes())
        .await
        .map_err(|e| format!("udp send to {addr}: {e}"))?;
    let mut reply = vec![0u8; 65536];
    let n = socket.recv(&mut reply).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            format!("udp: {addr} port unreachable (ICMP): {e}")
        } else {
            format!("udp receive from {addr}: {e}")
        }
    })?;
    if let Some(want) = &check.expect
        && !contains(&reply[..n], want.as_bytes())
    {
        return Err(format!("udp reply ({n} bytes) does not contain {want:?}"));
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_is_parsed_once_complete() {
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(parse_head(&resp[..20]).unwrap(), None);
        let (head, len) = parse_head(resp).unwrap().unwrap();
        assert_eq!(
            head,
            Head {
                status: 200,
                framing: Framing::Length(2)
            }
        );
        assert_eq!(&resp[len..], b"ok");
        let (head, _) = parse_head(b"HTTP/1.0 503 Busy\n\n").unwrap().unwrap();
        assert_eq!((head.status, head.framing), (503, Framing::Close));
        let (head, _) = parse_head(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\nContent-Length: 5\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.framing, Framing::Chunked);
        let (head, _) = parse_head(b"HTTP/1.1 204 No Content\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.framing, Framing::Length(0));
        for bad in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"\r\n\r\n",
        ] {
            assert!(
                parse_head(bad)
                    .unwrap_err()
                    .contains("malformed status line")
            );
        }
    }

    #[test]
    fn chunked_bodies_decode() {
        assert_eq!(
            dechunk(b"2\r\nok\r\n5;x=y\r\n, fin\r\n0\r\n\r\n").unwrap(),
            (b"ok, fin".to_vec(), true)
        );
        assert_eq!(dechunk(b"4\r\nhe").unwrap(), (b"he".to_vec(), false));
        assert_eq!(dechunk(b"2\r\nok\r\n").unwrap(), (b"ok".to_vec(), false));
        assert!(dechunk(b"zz\r\n").is_err());
    }

    #[test]
    fn status_follows_rise_and_fall() {
        let check = HealthCheck {
            rise: 2,
            fall: 3,
            ..HealthCheck::default()
        };
        let mut s = Status::new();
        let ms = Duration::from_millis(1);
        let fail = || Err("refused".to_string());
        assert!(s.up);
        assert_eq!(s.record(fail(), ms, &check), None);
        assert_eq!(s.record(fail(), ms, &check), None);
        assert_eq!(s.record(Ok(()), ms, &check), None); // Resets the failures.
        assert_eq!(s.record(fail(), ms, &check), None);
        assert_eq!(s.record(fail(), ms, &check), None);
        assert_eq!(
            s.record(fail(), ms, &check),
            Some((false, "refused".into()))
        );
        assert_eq!((s.up, s.consecutive_fail, s.checks), (false, 3, 6));
        assert_eq!(s.record(fail(), ms, &check), None);
        assert_eq!(s.record(Ok(()), ms, &check), None);
        assert_eq!(s.last_error, None);
        assert_eq!(
            s.record(Ok(()), ms, &check),
            Some((true, "2 consecutive checks passed".into()))
        );
        assert_eq!(s.record(Ok(()), ms, &check), None);
        assert_eq!((s.up, s.consecutive_ok, s.consecutive_fail), (true, 3, 0));
    }

    #[test]
    fn jitter_is_small() {
        let key = ("web".to_string(), SocketAddr::from(([127, 0, 0, 1], 80)));
        for interval in [10, 50, 1000, 60_000] {
            let interval = Duration::from_millis(interval);
            let cap = interval.min(Duration::from_secs(1)) / 4;
            assert!(jitter(&key, interval) < cap);
        }
    }
}
