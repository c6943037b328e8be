//! Clients that keep going while a test changes things under them: a
//! stream of short connections (`Load`) and one long-lived keep-alive
//! connection (`Stream`). Both record every outcome with its time.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{clients::http_get, clients::tcp_connect, servers::is_pattern};

/// One request: when it started (since the client started), and the
/// backend that answered or the error.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub at: Duration,
    pub result: Result<String, String>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.result.is_ok()
    }
}

/// Summary helpers over a run's outcomes.
pub trait Outcomes {
    fn failures(&self) -> Vec<&Outcome>;
    /// Requests answered by `backend` at or after `since`.
    fn served_by_since(&self, backend: &str, since: Duration) -> usize;
}

impl Outcomes for [Outcome] {
    fn failures(&self) -> Vec<&Outcome> {
        self.iter().filter(|o| !o.ok()).collect()
    }

    fn served_by_since(&self, backend: &str, since: Duration) -> usize {
        self.iter()
            .filter(|o| o.at >= since && o.result.as_deref() == Ok(backend))
            .count()
    }
}

/// New connections to `target` from `ns`, one every `every`, each a `GET /`
/// answered by the backend's name; runs until stopped.
pub struct Load {
    start: Instant,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<Outcome>>,
}

impl Load {
    pub fn start(ns: &str, target: SocketAddr, every: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let (ns, flag) = (ns.to_owned(), stop.clone());
        let handle = std::thread::spawn(move || {
            let mut out = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let at = start.elapsed();
                let result = http_get(&ns, target, "/", Duration::from_secs(2))
                    .map_err(|e| format!("{e:#}"))
                    .and_then(|(status, body)| match status {
                        200 => Ok(body.trim().to_owned()),
                        s => Err(format!("status {s}")),
                    });
                out.push(Outcome { at, result });
                std::thread::sleep(every);
            }
            out
        });
        Load {
            start,
            stop,
            handle,
        }
    }

    /// Time since the load started (to mark events in its timeline).
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn stop(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("load thread")
    }
}

/// One keep-alive connection, `GET /bytes/N` over and over; every body is
/// checked byte for byte.
pub struct Stream {
    start: Instant,
    stop: Arc<AtomicBool>,
    first: Arc<std::sync::OnceLock<Outcome>>,
    handle: JoinHandle<Vec<Outcome>>,
}

impl Stream {
    pub fn start(ns: &str, target: SocketAddr, chunk: usize) -> Result<Stream> {
        let conn = tcp_connect(ns, target, Duration::from_secs(5))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let (flag, first) = (stop.clone(), Arc::new(std::sync::OnceLock::new()));
        let first_out = first.clone();
        let handle = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut reader = BufReader::with_capacity(1 << 16, conn);
            while !flag.load(Ordering::Relaxed) {
                let at = start.elapsed();
                let result =
                    get_keep_alive(&mut reader, target, chunk).map_err(|e| format!("{e:#}"));
                let failed = result.is_err();
                let outcome = Outcome { at, result };
                let _ = first_out.set(outcome.clone());
                out.push(outcome);
                if failed {
                    break;
                }
            }
            out
        });
        Ok(Stream {
            start,
            stop,
            first,
            handle,
        })
    }

    /// The backend that answered the first request (waits for it).
    pub fn backend(&self) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(o) = self.first.get() {
                return o.result.clone().map_err(anyhow::Error::msg);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!("no answer on the stream within 10s")
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn stop(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("stream thread")
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
