//! The admin API's bytes on the wire: the input is what a client sends on
//! one connection (any number of requests, pipelined, cut anywhere),
//! served in memory by `api::serve_connection` (the daemon's HTTP/1.1
//! server with its limits on heads and header counts) and the real router,
//! with a token configured.
//!
//! Holds: no panic, no hang; every answer is well-formed HTTP/1.1 and none
//! is a 5xx; a change answered 2xx carried the token.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use xdplb::api::serve_connection;
use xdplb_fuzz::{TOKEN, router, runtime, shared, state};

fuzz_target!(|data: &[u8]| {
    let shared = shared(Some(TOKEN));
    let before = state(&shared);
    let answers = runtime().block_on(async {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let served = tokio::spawn(serve_connection(server, router(shared.clone())));
        let (mut rx, mut tx) = tokio::io::split(&mut client);
        let send = async {
            // The server may close first (a refused head): that is fine.
            let _ = tx.write_all(data).await;
            let _ = tx.shutdown().await;
        };
        let mut answers = Vec::new();
        let receive = rx.read_to_end(&mut answers);
        let (_, received) = tokio::join!(send, receive);
        received.expect("reading the answers");
        // An error here is the client's fault (a bad request): hyper said so.
        let _ = served.await.expect("the connection task does not panic");
        answers
    });
    let carried_token = data.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes());
    if !carried_token {
        assert_eq!(state(&shared), before, "a change without the token");
    }
    let mut rest = &answers[..];
    while !rest.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let head = match response.parse(rest) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!(
                "not an HTTP answer ({other:?}): {:?}",
                String::from_utf8_lossy(rest)
            ),
        };
        let status = response.code.expect("a status");
        assert!(
            status < 500,
            "{status}: {:?}",
            String::from_utf8_lossy(rest)
        );
        let length = response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok());
        // Answers to HEAD have a length but no body; anything else has one.
        let Some(length) = length else { break };
        let next = &rest[head..];
        rest = if next.len() >= length && !next.starts_with(b"HTTP/1.1 ") {
            &next[length..]
        } else {
            next
        };
    }
});
