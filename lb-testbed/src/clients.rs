//! Real test clients; their sockets are created inside a namespace.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use socket2::{Domain, Socket, Type};

use crate::netns::run_in;

/// A TCP connection opened from namespace `ns`.
pub fn tcp_connect(ns: &str, addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    run_in(ns, || {
        TcpStream::connect_timeout(&addr, timeout)
            .with_context(|| format!("connect to {addr} from {ns}"))
    })
}

/// A TCP connection opened from namespace `ns` and local port `port`
/// (distinct 5-tuples for tests that count flows: the kernel might reuse
/// an ephemeral port whose flow is still in the LB's table).
pub fn tcp_connect_from(
    ns: &str,
    port: u16,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream> {
    run_in(ns, || {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        let any: SocketAddr = if addr.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, port).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, port).into()
        };
        socket.bind(&any.into())?;
        socket
            .connect_timeout(&addr.into(), timeout)
            .with_context(|| format!("connect to {addr} from {ns} port {port}"))?;
        Ok(socket.into())
    })
}

/// Waits until `GET /` on `addr` from `ns` answers (the first connection
/// through a VIP may wait for the daemon to resolve neighbours).
pub fn wait_answering(ns: &str, addr: SocketAddr, timeout: Duration) -> bool {
    crate::servers::wait_until(timeout, || {
        http_get(ns, addr, "/", Duration::from_secs(2)).is_ok()
    })
}

/// An HTTP response read by [`http_request`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Value of the `X-Backend` header (the serving test server's name).
    pub backend: Option<String>,
    pub body: Vec<u8>,
}

/// `GET path` on a fresh connection from `ns` (Connection: close); returns
/// status and body as text.
pub fn http_get(
    ns: &str,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String)> {
    let r = http_request(ns, addr, path, timeout)?;
    Ok((r.status, String::from_utf8_lossy(&r.body).into_owned()))
}

/// `GET path` on a fresh connection from `ns` (Connection: close), with the
/// whole body streamed into memory; `timeout` bounds connect and each read,
/// not the whole transfer. Suits the large `/bytes/N` download.
pub fn http_request(
    ns: &str,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<HttpResponse> {
    http_request_on(tcp_connect(ns, addr, timeout)?, ns, addr, path, timeout)
}

/// [`http_get`] from local port `port` ([`tcp_connect_from`]).
pub fn http_get_from(
    ns: &str,
    port: u16,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String)> {
    let stream = tcp_connect_from(ns, port, addr, timeout)?;
    let r = http_request_on(stream, ns, addr, path, timeout)?;
    Ok((r.status, String::from_utf8_lossy(&r.body).into_owned()))
}

/// `GET path` on `stream` (Connection: close), the whole body read.
fn http_request_on(
    stream: TcpStream,
    ns: &str,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<HttpResponse> {
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let ctx = || format!("GET http://{addr}{path} from {ns}");
    (&stream)
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .with_context(ctx)?;
    read_response(BufReader::with_capacity(1 << 16, stream)).with_context(ctx)
}

pub(crate) fn read_response(mut r: impl BufRead) -> Result<HttpResponse> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = match line.split_whitespace().nth(1).map(str::parse) {
        Some(Ok(s)) if line.starts_with("HTTP/1.") => s,
        _ => bail!("bad status line {line:?}"),
    };
    let (mut backend, mut len) = (None, None);
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            bail!("connection closed inside headers");
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let Some((k, v)) = h.split_once(':') else {
            continue;
        };
        if k.eq_ignore_ascii_case("x-backend") {
            backend = Some(v.trim().to_owned());
        } else if k.eq_ignore_ascii_case("content-length") {
            len = Some(v.trim().parse::<usize>().context("bad Content-Length")?);
        }
    }
    let mut body = Vec::with_capacity(len.unwrap_or(0));
    match len {
        Some(n) => {
            r.take(n as u64).read_to_end(&mut body)?;
            if body.len() != n {
                bail!("body truncated: {} of {n} bytes", body.len());
            }
        }
        None => {
            r.read_to_end(&mut body)?;
        }
    }
    Ok(HttpResponse {
        status,
        backend,
        body,
    })
}

/// Sends one datagram from a fresh socket in `ns` to `target` and returns
/// the reply payload.
pub fn udp_request(
    ns: &str,
    target: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>> {
    udp_request_from(ns, 0, target, payload, timeout)
}

/// [`udp_request`] from source port `port` (0: any free one).
pub fn udp_request_from(
    ns: &str,
    port: u16,
    target: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>> {
    let unspecified: SocketAddr = if target.is_ipv4() {
        format!("0.0.0.0:{port}")
    } else {
        format!("[::]:{port}")
    }
    .parse()?;
    let sock = run_in(ns, || Ok(UdpSocket::bind(unspecified)?))?;
    sock.set_read_timeout(Some(timeout))?;
    sock.connect(target)?;
    sock.send(payload)?;
    let mut buf = vec![0u8; 65536];
    let n = sock
        .recv(&mut buf)
        .with_context(|| format!("no UDP reply from {target} to {ns} within {timeout:?}"))?;
    buf.truncate(n);
    Ok(buf)
}
