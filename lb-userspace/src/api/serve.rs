//! The admin API's HTTP server: HTTP/1.1 on the bound listener, with the
//! limits `axum::serve` does not set. A request whose head (request line
//! and headers) exceeds [`MAX_HEADER_BYTES`] or [`MAX_HEADERS`] is answered
//! 431 and its connection closed; a client that does not finish a head
//! within [`HEADER_READ_TIMEOUT`] (also an idle keep-alive connection) is
//! disconnected; at most [`MAX_CONNECTIONS`] are served at once (more wait
//! in the listen backlog). Bodies are limited by the router
//! ([`super::MAX_BODY_BYTES`]).

use std::{io, sync::Arc, time::Duration};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::Semaphore,
};
use tracing::{debug, warn};

/// Request line and headers, in bytes (hyper's default is ~400 KB).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Header fields in one request (hyper's default is 100).
pub const MAX_HEADERS: usize = 64;
/// A request head must arrive within this (slow clients hold no slot).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;

/// Serves `router` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, router: Router) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // The client went away before we took the connection.
            Err(e) if is_connection_error(&e) => continue,
            // Out of file descriptors, for instance: wait, as axum::serve.
            Err(e) => {
                warn!("admin API: accept: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let router = router.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, router).await {
                debug!("admin API connection: {e}");
            }
            drop(slot);
        });
    }
}

/// Serves one connection with the limits above, until the client closes
/// it or a limit does (the fuzz target `api_http` drives it in memory).
pub async fn serve_connection<S>(stream: S, router: Router) -> Result<(), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_headers(MAX_HEADERS)
        .max_header_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router))
        .await
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
