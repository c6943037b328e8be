//! The http check: one HTTP/1.1 `GET` on a fresh connection, sent with
//! hyper's client connection (no pool: `Connection: close`, and the socket
//! is reset once the answer is judged).

use std::error::Error;
use std::net::SocketAddr;

use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1;
use hyper::header::{ACCEPT, CONNECTION, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;

use super::probe::{connect, contains};
use crate::config::HealthCheck;

/// Largest response head (status line and headers) read: hyper's read
/// buffer limit (which must be at least 8 KiB).
const MAX_HTTP_HEAD: usize = 16 * 1024;

/// `GET path` on `addr` gets `expect_status`, and `expect_body` (if set)
/// in the first `MAX_HTTP_BODY` bytes of the body.
pub(super) async fn check(check: &HealthCheck, addr: SocketAddr) -> Result<(), String> {
    let request = Request::get(check.path())
        .header(HOST, addr.to_string())
        .header(USER_AGENT, "xdplb-health-check")
        .header(ACCEPT, "*/*")
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("http: request path {:?}: {e}", check.path()))?;
    let stream = connect(addr).await?;
    let (mut sender, connection) = http1::Builder::new()
        // "Host:", not "host:": what servers' logs and captures usually show.
        .title_case_headers(true)
        .max_buf_size(MAX_HTTP_HEAD)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("http: {}", chain(&e)))?;
    // The connection does the I/O. Its errors also reach the exchange (as
    // the response's or the body's), which decides; it may end first (the
    // server closed after a complete answer) while the body is still read.
    let io = async {
        let _ = connection.await;
        std::future::pending::<Result<(), String>>().await
    };
    tokio::select! {
        result = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("http: {}", chain(&e)))?;
            judge(check, response).await
        } => result,
        never = io => never,
    }
}

/// Checks the status, then reads the body only as far as needed to find
/// `expect_body` (at most `MAX_HTTP_BODY` bytes).
async fn judge(check: &HealthCheck, response: hyper::Response<Incoming>) -> Result<(), String> {
    let (status, expect) = (response.status().as_u16(), check.expect_status());
    if status != expect {
        return Err(format!("http status {status}, expected {expect}"));
    }
    let Some(want) = check.expect_body.as_deref() else {
        return Ok(());
    };
    let needle = want.as_bytes();
    if needle.is_empty() {
        return Ok(());
    }
    let mut body = response.into_body();
    let mut seen = Vec::new();
    while seen.len() < HealthCheck::MAX_HTTP_BODY {
        let Some(frame) = body.frame().await else {
            break;
        };
        let frame = frame.map_err(|e| format!("http body: {}", chain(&e)))?;
        let Ok(data) = frame.into_data() else {
            continue; // Trailers.
        };
        // Search only what is new, and the end of the old a match may start in.
        let from = seen.len().saturating_sub(needle.len() - 1);
        let room = HealthCheck::MAX_HTTP_BODY - seen.len();
        seen.extend_from_slice(&data[..data.len().min(room)]);
        if contains(&seen[from..], needle) {
            return Ok(());
        }
    }
    Err(format!(
        "http body ({} bytes read) does not contain {want:?}",
        seen.len()
    ))
}

/// An error and its causes, "outer: inner: ..." (hyper's errors name only
/// their kind and keep the I/O error as the source).
fn chain(e: &dyn Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::config::CheckType;

    /// Serves one connection: reads the request head, writes `response`,
    /// then closes, or with `hold` waits for the client to close. Returns
    /// the request head.
    async fn serve(response: Vec<u8>, hold: bool) -> (SocketAddr, JoinHandle<String>) {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream.write_all(&response).await;
            if hold {
                while let Ok(1..) = stream.read(&mut buf).await {}
            } else {
                let _ = stream.shutdown().await;
            }
            String::from_utf8_lossy(&request).into_owned()
        });
        (addr, task)
    }

    fn http(expect_body: Option<&str>) -> HealthCheck {
        HealthCheck {
            r#type: CheckType::Http,
            expect_body: expect_body.map(str::to_string),
            // Long: no answer here may be judged by the timeout.
            timeout: Duration::from_secs(20),
            ..HealthCheck::default()
        }
    }

    /// Runs `check` against one connection answered with `response`.
    async fn run(check: &HealthCheck, response: impl Into<Vec<u8>>) -> Result<(), String> {
        let (addr, server) = serve(response.into(), false).await;
        let result = super::super::probe::run(check, addr).await;
        server.abort();
        result
    }

    #[tokio::test]
    async fn the_request_is_a_get_with_host_and_close() {
        let (addr, server) = serve(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".into(),
            false,
        )
        .await;
        let check = HealthCheck {
            path: Some("/healthz?deep=1".into()),
            ..http(Some("ok"))
        };
        assert_eq!(super::super::probe::run(&check, addr).await, Ok(()));
        let request = server.await.unwrap();
        assert!(
            request.starts_with("GET /healthz?deep=1 HTTP/1.1\r\n"),
            "{request:?}"
        );
        for header in [
            format!("Host: {addr}"),
            "User-Agent: xdplb-health-check".into(),
            "Accept: */*".into(),
            "Connection: close".into(),
        ] {
            assert!(
                request.contains(&format!("\r\n{header}\r\n")),
                "{request:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_status_must_be_the_expected_one() {
        let busy = "HTTP/1.1 503 Busy\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(
            run(&http(Some("ok")), busy).await,
            Err("http status 503, expected 200".into())
        );
        let check = HealthCheck {
            expect_status: Some(204),
            ..http(None)
        };
        assert_eq!(run(&check, "HTTP/1.1 204 No Content\r\n\r\n").await, Ok(()));
        // Old servers: HTTP/1.0, bare LF line ends, body until close.
        let check = HealthCheck {
            expect_status: Some(503),
            ..http(Some("later"))
        };
        assert_eq!(
            run(&check, "HTTP/1.0 503 Busy\nServer: x\n\ncome back later").await,
            Ok(())
        );
    }

    #[tokio::test]
    async fn the_body_is_searched_in_any_framing() {
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                       5\r\nall o\r\n6;x=y\r\nk here\r\n0\r\n\r\n";
        assert_eq!(run(&http(Some("ok")), chunked).await, Ok(()));
        assert_eq!(
            run(&http(Some("fine")), chunked).await,
            Err("http body (11 bytes read) does not contain \"fine\"".into())
        );
        let sized = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ndegraded";
        assert_eq!(
            run(&http(Some("ok")), sized).await,
            Err("http body (8 bytes read) does not contain \"ok\"".into())
        );
        let close = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nstatus: ok";
        assert_eq!(run(&http(Some("ok")), close).await, Ok(()));
        // Without `expect_body`, the body is not read at all.
        assert_eq!(run(&http(None), sized).await, Ok(()));
    }

    #[tokio::test]
    async fn only_the_first_max_http_body_bytes_are_searched() {
        const MAX: usize = HealthCheck::MAX_HTTP_BODY;
        // A long body, held open: the check must not wait for its end.
        let body = |at: usize| {
            let mut body = vec![b'x'; 4 * MAX];
            body[at..at + 6].copy_from_slice(b"needle");
            let mut response =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            response.extend_from_slice(&body);
            response
        };
        for (at, want) in [
            (MAX - 6, Ok(())),
            (
                MAX - 5,
                Err(format!(
                    "http body ({MAX} bytes read) does not contain \"needle\""
                )),
            ),
        ] {
            let (addr, server) = serve(body(at), true).await;
            assert_eq!(
                super::super::probe::run(&http(Some("needle")), addr).await,
                want,
                "needle at {at}"
            );
            server.abort();
        }
    }

    #[tokio::test]
    async fn broken_answers_fail_with_a_reason() {
        let fails = |result: Result<(), String>, reason: &str| {
            let e = result.expect_err(reason);
            assert!(
                e.starts_with("http") && e.contains(reason),
                "{e:?}, want {reason:?}"
            );
        };
        fails(
            run(&http(None), "SSH-2.0-OpenSSH_9.6\r\n").await,
            "invalid HTTP",
        );
        fails(run(&http(None), "").await, "closed");
        let huge = format!(
            "HTTP/1.1 200 OK\r\nX-Pad: {}\r\n\r\n",
            "x".repeat(2 * MAX_HTTP_HEAD)
        );
        fails(run(&http(None), huge).await, "too large");
        // The body ends early: an error, unless what came already matched.
        let short = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nok";
        fails(run(&http(Some("fine")), short).await, "http body: ");
        assert_eq!(run(&http(Some("ok")), short).await, Ok(()));
    }
}
