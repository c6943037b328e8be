//! Real test servers bound inside a namespace, served by background threads
//! and stopped on drop.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::netns::run_in;

/// Byte `i` of the deterministic `/bytes/N` body.
pub fn pattern_byte(i: usize) -> u8 {
    (i % 251) as u8
}

/// Whether `body` is exactly the `/bytes/N` pattern (N = `body.len()`).
pub fn is_pattern(body: &[u8]) -> bool {
    body.iter().enumerate().all(|(i, &b)| b == pattern_byte(i))
}

struct HttpShared {
    name: String,
    stop: AtomicBool,
    healthy: AtomicBool,
    requests: AtomicU64,
    /// Open connections, so drop can shut them down (keep-alive clients
    /// would otherwise keep their threads blocked in read).
    conns: Mutex<Vec<(u64, TcpStream)>>,
    next_id: AtomicU64,
}

/// Minimal HTTP/1.1 server, a thread per connection. Every GET answers with
/// `NAME\n` and header `X-Backend: NAME`; `GET /bytes/N` sends N pattern bytes;
/// `GET /healthz` answers 200, or 503 after `set_healthy(false)`.
pub struct HttpServer {
    addr: SocketAddr,
    /// A dup of the listening socket, to wake the accept thread on drop.
    listener: TcpListener,
    shared: Arc<HttpShared>,
    accept: Option<JoinHandle<()>>,
}

impl HttpServer {
    pub fn start(ns: &str, addr: SocketAddr, name: &str) -> Result<HttpServer> {
        let listener = run_in(ns, || {
            TcpListener::bind(addr).with_context(|| format!("bind {addr} in {ns}"))
        })?;
        let shared = Arc::new(HttpShared {
            name: name.to_owned(),
            stop: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
            requests: AtomicU64::new(0),
            conns: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
        });
        let (addr, dup) = (listener.local_addr()?, listener.try_clone()?);
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name(format!("http-{name}"))
            .spawn(move || accept_loop(listener, s))?;
        Ok(HttpServer {
            addr,
            listener: dup,
            shared,
            accept: Some(accept),
        })
    }

    /// The bound address (with the real port if 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }
    /// Makes `/healthz` answer 200 (true) or 503 (false).
    pub fn set_healthy(&self, healthy: bool) {
        self.shared.healthy.store(healthy, Ordering::Relaxed);
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // shutdown() on a listening socket wakes a blocked accept() on Linux.
        // SAFETY: plain syscall on a socket fd we own.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        for (_, c) in self.shared.conns.lock().unwrap().iter() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: TcpListener, s: Arc<HttpShared>) {
    for stream in listener.incoming() {
        if s.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else {
            // e.g. EMFILE: back off instead of spinning.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let id = s.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(c) = stream.try_clone() {
            s.conns.lock().unwrap().push((id, c));
        }
        let s2 = s.clone();
        let spawned = std::thread::Builder::new().spawn(move || {
            let _ = serve_conn(stream, &s2);
            s2.conns.lock().unwrap().retain(|(i, _)| *i != id);
        });
        if spawned.is_err() {
            s.conns.lock().unwrap().retain(|(i, _)| *i != id);
        }
    }
}

fn serve_conn(stream: TcpStream, s: &HttpShared) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, path, version) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or("/").to_owned(),
            parts.next().unwrap_or("HTTP/1.0"),
        );
        let is_get = method == "GET";
        let mut keep_alive = version == "HTTP/1.1";
        let mut body_len = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let Some((k, v)) = h.split_once(':') else {
                continue;
            };
            let v = v.trim();
            if k.eq_ignore_ascii_case("connection") {
                keep_alive = v.eq_ignore_ascii_case("keep-alive")
                    || (keep_alive && !v.eq_ignore_ascii_case("close"));
            } else if k.eq_ignore_ascii_case("content-length") {
                body_len = v.parse().unwrap_or(0);
            }
        }
        // Discard a request body, if any.
        std::io::copy(
            &mut (&mut reader).take(body_len as u64),
            &mut std::io::sink(),
        )?;
        s.requests.fetch_add(1, Ordering::Relaxed);

        let (status, body): (&str, Body) = match path.as_str() {
            _ if !is_get => (
                "405 Method Not Allowed",
                Body::Text("method not allowed\n".into()),
            ),
            "/healthz" if s.healthy.load(Ordering::Relaxed) => {
                ("200 OK", Body::Text("ok\n".into()))
            }
            "/healthz" => ("503 Service Unavailable", Body::Text("unhealthy\n".into())),
            p => match p.strip_prefix("/bytes/").map(str::parse::<usize>) {
                Some(Ok(n)) => ("200 OK", Body::Pattern(n)),
                Some(Err(_)) => ("400 Bad Request", Body::Text("bad length\n".into())),
                None => ("200 OK", Body::Text(format!("{}\n", s.name))),
            },
        };
        let conn = if keep_alive { "keep-alive" } else { "close" };
        write!(
            out,
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             X-Backend: {}\r\nConnection: {conn}\r\n\r\n",
            body.len(),
            s.name
        )?;
        body.write_to(&mut out)?;
        out.flush()?;
        if !keep_alive || s.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
    }
}

enum Body {
    Text(String),
    Pattern(usize),
}

impl Body {
    fn len(&self) -> usize {
        match self {
            Body::Text(t) => t.len(),
            Body::Pattern(n) => *n,
        }
    }
    fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        match self {
            Body::Text(t) => out.write_all(t.as_bytes()),
            Body::Pattern(n) => {
                // 251 is prime and divides the chunk length, so every chunk
                // starts at pattern offset 0.
                let chunk: Vec<u8> = (0..251 * 256).map(pattern_byte).collect();
                let mut left = *n;
                while left > 0 {
                    let k = left.min(chunk.len());
                    out.write_all(&chunk[..k])?;
                    left -= k;
                }
                Ok(())
            }
        }
    }
}

/// UDP echo: answers each datagram with `NAME:PAYLOAD`.
pub struct UdpEchoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEchoServer {
    pub fn start(ns: &str, addr: SocketAddr, name: &str) -> Result<UdpEchoServer> {
        let sock = run_in(ns, || {
            UdpSocket::bind(addr).with_context(|| format!("bind udp {addr} in {ns}"))
        })?;
        // Drop cannot wake a blocked recv, so poll the stop flag.
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = sock.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let (st, rq, prefix) = (stop.clone(), requests.clone(), format!("{name}:"));
        let thread = std::thread::Builder::new()
            .name(format!("udp-{name}"))
            .spawn(move || {
                let mut buf = vec![0u8; 65536];
                let mut reply = prefix.clone().into_bytes();
                while !st.load(Ordering::Relaxed) {
                    let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                        continue;
                    };
                    reply.truncate(prefix.len());
                    reply.extend_from_slice(&buf[..n]);
                    rq.fetch_add(1, Ordering::Relaxed);
                    let _ = sock.send_to(&reply, peer);
                }
            })?;
        Ok(UdpEchoServer {
            addr,
            stop,
            requests,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// Datagrams answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for UdpEchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits until `f` returns true or `timeout` passes; for tests that wait on
/// a server counter.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}
