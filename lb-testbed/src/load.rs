//! Clients that keep going while a test changes things under them: a
//! stream of short connections (`Load`) and one long-lived keep-alive
//! connection (`Stream`). Both record every request with the times it
//! started and ended, readable while they run.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{clients::http_get, clients::tcp_connect, servers::is_pattern, wait_until};

/// One request: when it started and when it ended (since the client
/// started), and the backend that answered or the error.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub start: Duration,
    pub end: Duration,
    pub result: Result<String, String>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.result.is_ok()
    }

    /// Whether the request was in flight at some time in `from..=to`: a
    /// request that started before an event and ended after it saw it.
    pub fn overlaps(&self, from: Duration, to: Duration) -> bool {
        self.end >= from && self.start <= to
    }
}

/// Summary helpers over a run's outcomes.
pub trait Outcomes {
    fn failures(&self) -> Vec<&Outcome>;
    /// Requests that started at or after `since` and were answered by
    /// `backend`.
    fn served_by_since(&self, backend: &str, since: Duration) -> usize;
    /// Requests that started at or after `since`, whatever their outcome.
    fn started_since(&self, since: Duration) -> usize;
}

impl Outcomes for [Outcome] {
    fn failures(&self) -> Vec<&Outcome> {
        self.iter().filter(|o| !o.ok()).collect()
    }

    fn served_by_since(&self, backend: &str, since: Duration) -> usize {
        self.iter()
            .filter(|o| o.start >= since && o.result.as_deref() == Ok(backend))
            .count()
    }

    fn started_since(&self, since: Duration) -> usize {
        self.iter().filter(|o| o.start >= since).count()
    }
}

/// A client thread making requests until stopped, recording each; `K`
/// says which requests ([`Load`] or [`Stream`]).
pub struct Client<K> {
    start: Instant,
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    handle: JoinHandle<()>,
    kind: K,
}

/// New connections to `target` from `ns`, one every `every`, each a `GET /`
/// answered by the backend's name; runs until stopped.
pub type Load = Client<ShortConnections>;
/// One keep-alive connection, `GET /bytes/N` over and over; every body is
/// checked byte for byte. Ends at the first failure.
pub type Stream = Client<KeepAlive>;
/// The requests of a [`Load`].
pub struct ShortConnections;
/// The requests of a [`Stream`], on the connection from `local`.
pub struct KeepAlive {
    local: SocketAddr,
}

impl<K> Client<K> {
    /// `request` returns the outcome and whether to go on; `pause` is the
    /// time between requests.
    fn spawn(
        kind: K,
        pause: Duration,
        mut request: impl FnMut() -> (Result<String, String>, bool) + Send + 'static,
    ) -> Client<K> {
        let (start, stop) = (Instant::now(), Arc::new(AtomicBool::new(false)));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let (flag, out) = (stop.clone(), outcomes.clone());
        let handle = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let begun = start.elapsed();
                let (result, go_on) = request();
                let o = Outcome {
                    start: begun,
                    end: start.elapsed(),
                    result,
                };
                out.lock().unwrap().push(o);
                if !go_on {
                    break;
                }
                std::thread::sleep(pause);
            }
        });
        Client {
            start,
            stop,
            outcomes,
            handle,
            kind,
        }
    }

    /// Time since the client started (to mark events in its timeline).
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// The outcomes so far.
    pub fn outcomes(&self) -> Vec<Outcome> {
        self.outcomes.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the outcomes so far, or `timeout`
    /// passes; whether it held. For tests that need enough requests after
    /// an event, however slow the machine, rather than a fixed sleep.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&[Outcome]) -> bool) -> bool {
        wait_until(timeout, || done(&self.outcomes.lock().unwrap()))
    }

    /// Whether the client stopped by itself (a [`Stream`] at its first
    /// failure).
    pub fn ended(&self) -> bool {
        self.handle.is_finished()
    }

    /// Stops the client (after the request in flight) and returns every
    /// outcome.
    pub fn stop(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("client thread");
        Arc::into_inner(self.outcomes)
            .expect("the thread is done")
            .into_inner()
            .unwrap()
    }
}

impl Load {
    pub fn start(ns: &str, target: SocketAddr, every: Duration) -> Load {
        let ns = ns.to_owned();
        Client::spawn(ShortConnections, every, move || {
            let result = http_get(&ns, target, "/", Duration::from_secs(2))
                .map_err(|e| format!("{e:#}"))
                .and_then(|(status, body)| match status {
                    200 => Ok(body.trim().to_owned()),
                    s => Err(format!("status {s}")),
                });
            (result, true)
        })
    }
}

impl Stream {
    pub fn start(ns: &str, target: SocketAddr, chunk: usize) -> Result<Stream> {
        Stream::start_paced(ns, target, chunk, Duration::ZERO, Duration::from_secs(5))
    }

    /// A stream with `pause` between requests, whose reads give up after
    /// `read_timeout` (the failover tests: many streams at once, each
    /// riding out a reroute plus TCP's retransmission back-off).
    pub fn start_paced(
        ns: &str,
        target: SocketAddr,
        chunk: usize,
        pause: Duration,
        read_timeout: Duration,
    ) -> Result<Stream> {
        let conn = tcp_connect(ns, target, Duration::from_secs(5))?;
        conn.set_read_timeout(Some(read_timeout))?;
        let local = conn.local_addr()?;
        let mut reader = BufReader::with_capacity(1 << 16, conn);
        Ok(Client::spawn(KeepAlive { local }, pause, move || {
            let result = get_keep_alive(&mut reader, target, chunk).map_err(|e| format!("{e:#}"));
            let go_on = result.is_ok();
            (result, go_on)
        }))
    }

    /// The connection's own address: the source of its flow on an LB.
    pub fn local_addr(&self) -> SocketAddr {
        self.kind.local
    }

    /// The backend that answered the first request (waits for it).
    pub fn backend(&self) -> Result<String> {
        if !self.wait_for(Duration::from_secs(10), |o| !o.is_empty()) {
            bail!("no answer on the stream within 10s");
        }
        self.outcomes()[0]
            .result
            .clone()
            .map_err(anyhow::Error::msg)
    }
}

/// One request on an open keep-alive connection; the serving backend.
fn get_keep_alive(r: &mut BufReader<TcpStream>, target: SocketAddr, len: usize) -> Result<String> {
    let req = format!("GET /bytes/{len} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    r.get_mut().write_all(req.as_bytes()).context("send")?;
    let mut line = String::new();
    r.read_line(&mut line).context("status line")?;
    if !line.starts_with("HTTP/1.1 200") {
        bail!("unexpected status line {line:?}");
    }
    let (mut backend, mut length) = (String::new(), None);
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).context("headers")? == 0 {
            bail!("connection closed inside headers");
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("x-backend") {
                backend = v.trim().to_owned();
            } else if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse::<usize>().ok();
            }
        }
    }
    let n = length.context("no Content-Length")?;
    let mut body = vec![0u8; n];
    r.read_exact(&mut body).context("body")?;
    if !is_pattern(&body) {
        bail!("body corrupted");
    }
    Ok(backend)
}
