//! The admin HTTP server (docs/design.md section 5): `/` (dashboard),
//! `/metrics`, and JSON under `/api/v1` (`api_types`), described by the
//! OpenAPI document `openapi.json` (served at `/api/v1/openapi.json`).
//! Errors are JSON `{"error": ...}` with a 4xx code (5xx when the data
//! plane fails). With `admin.token_file`, mutating calls need
//! `Authorization: Bearer TOKEN` (`auth`). Bodies are limited to
//! [`MAX_BODY_BYTES`], request heads and connections by `serve`
//! (docs/security.md).

mod auth;
mod probes;
mod rollouts;
mod serve;
#[cfg(test)]
mod tests;
mod views;

pub use probes::Attachments;
pub use serve::{serve, serve_connection};

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{
        DefaultBodyLimit, Path, Query, State,
        rejection::{BytesRejection, PathRejection, QueryRejection},
    },
    handler::Handler,
    http::{Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{MethodFilter, MethodRouter, on},
};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::sync::watch;

use crate::{
    api_types::{ApiError, BackendUpdate, NodeState, NodeStatus, NodeUpdate, ReloadSummary},
    bgp,
    controller::{ControlError, Controller, DataplaneOps, HealthSource},
    dataplane::Dataplane,
    health::HealthChecker,
    history::History,
    neigh, sync,
};

/// The largest request body taken (the largest valid one is under 100
/// bytes); a larger one is answered 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The OpenAPI 3 document of every endpoint (kept by hand; the unit tests
/// hold it to [`endpoints`] and to the JSON types).
pub const OPENAPI: &str = include_str!("openapi.json");

/// What the daemon shares with its API. The controller drives the
/// kernel's data plane and the real health checks in the daemon; the API
/// serves any (fakes in the fuzz targets, see fuzz/).
pub struct Shared<D = Dataplane, H = HealthChecker> {
    pub controller: Mutex<Controller<D, H>>,
    /// Every metric: the data plane's collector and the health checks'.
    pub registry: Registry,
    /// Bearer token required on mutating calls, if configured.
    pub token: Option<String>,
    /// The node state (the controller's), read without its lock.
    pub node: watch::Receiver<NodeState>,
    /// What BGP reports, with a `bgp` section.
    pub bgp: Option<bgp::SharedStatus>,
    /// Flow sync's view, with a `flow_sync` section.
    pub flow_sync: Option<sync::SharedStatus>,
    /// The recent past, for the dashboard (filled by the daemon's sampler).
    pub history: History,
    /// Where the program is attached (`GET /readyz`).
    pub attachments: Attachments,
}

impl<D: DataplaneOps, H: HealthSource> Shared<D, H> {
    /// The controller (`Controller::lock`: a panicked call does not poison it).
    pub fn controller(&self) -> MutexGuard<'_, Controller<D, H>> {
        Controller::lock(&self.controller)
    }

    /// A reload (SIGHUP or the API); then the kernel is asked to resolve
    /// every backend's neighbour, so a new backend's first packets find
    /// its MAC (as at start). The new rings are built before the
    /// controller is locked for the write: API calls, health changes and
    /// ramps wait only for the write.
    pub fn reload(&self) -> Result<ReloadSummary, ControlError> {
        let ahead = self.controller().prepare_reload()?;
        let built = ahead.build();
        let mut c = self.controller();
        let summary = c.reload_built(built)?;
        if !summary.backends_added.is_empty() {
            for b in c.plan().services.iter().flat_map(|s| &s.backends) {
                neigh::resolve(b.addr.ip());
            }
        }
        Ok(summary)
    }

    /// `GET /api/v1/status`: the node state and BGP's view.
    pub fn node_status(&self) -> NodeStatus {
        NodeStatus {
            node: *self.node.borrow(),
            bgp: self.bgp.as_ref().map(|b| {
                b.read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
            }),
            flow_sync: self.flow_sync.as_ref().map(|s| {
                s.read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
            }),
        }
    }
}

/// The data plane a [`Shared`] controller drives, as the handlers need it
/// (moved to blocking tasks).
pub trait Plane: DataplaneOps + Send + 'static {}
impl<D: DataplaneOps + Send + 'static> Plane for D {}

/// The health checks a [`Shared`] controller follows (likewise).
pub trait Checks: HealthSource + Send + 'static {}
impl<H: HealthSource + Send + 'static> Checks for H {}

type Endpoint<D, H> = (Method, &'static str, MethodRouter<Arc<Shared<D, H>>>);

/// Every endpoint: method, path (as written in `openapi.json`), handler.
fn endpoints<D: Plane, H: Checks>() -> Vec<Endpoint<D, H>> {
    vec![
        endpoint(Method::GET, "/", dashboard),
        endpoint(Method::GET, "/metrics", get_metrics::<D, H>),
        endpoint(Method::GET, "/livez", probes::livez::<D, H>),
        endpoint(Method::GET, "/readyz", probes::readyz::<D, H>),
        endpoint(Method::GET, "/api/v1/openapi.json", get_openapi),
        endpoint(Method::GET, "/api/v1/services", list_services::<D, H>),
        endpoint(Method::GET, "/api/v1/services/{name}", get_service::<D, H>),
        endpoint(
            Method::PUT,
            "/api/v1/services/{name}/backends/{addr}",
            put_backend::<D, H>,
        ),
        endpoint(Method::POST, "/api/v1/reload", post_reload::<D, H>),
        endpoint(Method::GET, "/api/v1/status", get_status::<D, H>),
        endpoint(Method::PUT, "/api/v1/node", put_node::<D, H>),
        endpoint(Method::GET, "/api/v1/explain", get_explain::<D, H>),
        endpoint(Method::GET, "/api/v1/history", get_history::<D, H>),
        endpoint(Method::GET, "/api/v1/rollouts", rollouts::list::<D, H>),
        endpoint(Method::POST, "/api/v1/rollouts", rollouts::start::<D, H>),
        endpoint(
            Method::GET,
            "/api/v1/rollouts/{service}",
            rollouts::get::<D, H>,
        ),
        endpoint(
            Method::POST,
            "/api/v1/rollouts/{service}/pause",
            rollouts::pause::<D, H>,
        ),
        endpoint(
            Method::POST,
            "/api/v1/rollouts/{service}/resume",
            rollouts::resume::<D, H>,
        ),
        endpoint(
            Method::POST,
            "/api/v1/rollouts/{service}/abort",
            rollouts::abort::<D, H>,
        ),
    ]
}

fn endpoint<S, F, T>(
    method: Method,
    path: &'static str,
    handler: F,
) -> (Method, &'static str, MethodRouter<S>)
where
    S: Clone + Send + Sync + 'static,
    F: Handler<T, S>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("a method axum routes");
    (method, path, on(filter, handler))
}

pub fn router<D: Plane, H: Checks>(shared: Arc<Shared<D, H>>) -> Router {
    let token: Option<Arc<str>> = shared.token.as_deref().map(Arc::from);
    endpoints()
        .into_iter()
        .fold(Router::new(), |r, (method, path, handler)| {
            // Reads need no token; every change does (when configured).
            let handler = if method == Method::GET {
                handler
            } else {
                auth::guard(handler, token.clone())
            };
            r.route(path, handler)
        })
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ApiError {
            error: message.into(),
        }),
    )
        .into_response()
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        let status = match &self {
            ControlError::NoService(_)
            | ControlError::NoBackend { .. }
            | ControlError::NoRollout(_) => StatusCode::NOT_FOUND,
            ControlError::Conflict(_) => StatusCode::CONFLICT,
            ControlError::BadRequest(_)
            | ControlError::Config(_)
            | ControlError::RestartOnly(_)
            | ControlError::Capacity(_) => StatusCode::BAD_REQUEST,
            ControlError::Dataplane(_) | ControlError::RollbackFailed { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        error(status, self.to_string())
    }
}

/// The JSON answer of a controller call, or its error answer.
fn json<T: serde::Serialize>(result: Result<T, Response>) -> Response {
    match result {
        Ok(body) => Json(body).into_response(),
        Err(r) => r,
    }
}

/// Runs `f` on the controller off the async workers (writing a ring is a
/// large syscall). A panic in `f` answers 500 and leaves the daemon up.
async fn with_controller<D: Plane, H: Checks, T: Send + 'static>(
    shared: &Arc<Shared<D, H>>,
    f: impl FnOnce(&mut Controller<D, H>) -> Result<T, ControlError> + Send + 'static,
) -> Result<T, Response> {
    let shared = shared.clone();
    match tokio::task::spawn_blocking(move || f(&mut shared.controller())).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.into_response()),
        Err(e) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: the request failed ({e}); the daemon goes on"),
        )),
    }
}

/// The answer to a request body too large (413) or cut off.
fn body_refused(e: BytesRejection) -> Response {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        error(
            status,
            format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
        )
    } else {
        error(status, e.body_text())
    }
}

/// The JSON body of a change, or the answer refusing it: 413 (too
/// large), 400 naming what it must be (`expected`). (The error is the
/// answer, handed back at once: its size does not matter.)
#[allow(clippy::result_large_err)]
fn parse_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    expected: &str,
) -> Result<T, Response> {
    let body = body.map_err(body_refused)?;
    serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("body must be {expected}: {e}"),
        )
    })
}

async fn not_found(uri: axum::http::Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint: {} (every endpoint: GET /api/v1/openapi.json)",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// The live dashboard: one static page (no external assets) that reads
/// `/api/v1/history` once, then polls it and the other JSON endpoints.
async fn dashboard() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("dashboard.html"),
    )
        .into_response()
}

/// This API's OpenAPI document.
async fn get_openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Every metric, gathered without the controller (`metrics`).
async fn get_metrics<D: Plane, H: Checks>(State(shared): State<Arc<Shared<D, H>>>) -> Response {
    let text = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&shared.registry.gather(), &mut out)
            .map(|()| out)
    })
    .await;
    match text {
        Ok(Ok(text)) => (
            [(header::CONTENT_TYPE, TextEncoder::new().format_type())],
            text,
        )
            .into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn list_services<D: Plane, H: Checks>(State(shared): State<Arc<Shared<D, H>>>) -> Response {
    json(with_controller(&shared, |c| views::services(c)).await)
}

async fn get_service<D: Plane, H: Checks>(
    State(shared): State<Arc<Shared<D, H>>>,
    name: Result<Path<String>, PathRejection>,
) -> Response {
    let name = match name {
        Ok(Path(name)) => name,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    json(
        with_controller(&shared, move |c| {
            views::services(c)?
                .into_iter()
                .find(|s| s.name == name)
                .ok_or(ControlError::NoService(name))
        })
        .await,
    )
}

async fn put_backend<D: Plane, H: Checks>(
    State(shared): State<Arc<Shared<D, H>>>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (name, addr) = match path {
        Ok(Path(p)) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{addr:?} is not a backend address (ADDR:PORT)"),
        );
    };
    let update: BackendUpdate = match parse_body(
        body,
        "{\"state\": \"ready|drain|maint\"} and/or {\"weight\": N}",
    ) {
        Ok(u) => u,
        Err(r) => return r,
    };
    json(
        with_controller(&shared, move |c| {
            c.update_backend(&name, addr, update.state, update.weight)?;
            views::backend_of(c, &(name, addr))
        })
        .await,
    )
}

async fn get_status<D: Plane, H: Checks>(State(shared): State<Arc<Shared<D, H>>>) -> Response {
    Json(shared.node_status()).into_response()
}

async fn put_node<D: Plane, H: Checks>(
    State(shared): State<Arc<Shared<D, H>>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let update: NodeUpdate = match parse_body(body, "{\"state\": \"ready|drain\"}") {
        Ok(u) => u,
        Err(r) => return r,
    };
    let s = shared.clone();
    match with_controller(&shared, move |c| {
        c.set_node(update.state);
        Ok(())
    })
    .await
    {
        Ok(()) => Json(s.node_status()).into_response(),
        Err(r) => r,
    }
}

/// Takes no body; one sent is read (within the limit) and ignored.
async fn post_reload<D: Plane, H: Checks>(
    State(shared): State<Arc<Shared<D, H>>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(e) = body {
        return body_refused(e);
    }
    let s = shared.clone();
    let reloaded = tokio::task::spawn_blocking(move || s.reload()).await;
    match reloaded {
        Ok(result) => json(result.map_err(IntoResponse::into_response)),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {e}"),
        ),
    }
}

#[derive(serde::Deserialize)]
struct ExplainQuery {
    src: String,
    dst: String,
    #[serde(default)]
    proto: crate::config::Protocol,
}

async fn get_explain<D: Plane, H: Checks>(
    State(shared): State<Arc<Shared<D, H>>>,
    query: Result<Query<ExplainQuery>, QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "query must be ?src=ADDR:PORT&dst=ADDR:PORT&proto=tcp|udp: {}",
                    e.body_text()
                ),
            );
        }
    };
    let (Ok(src), Ok(dst)) = (q.src.parse::<SocketAddr>(), q.dst.parse::<SocketAddr>()) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("src {:?} and dst {:?} must be ADDR:PORT", q.src, q.dst),
        );
    };
    json(with_controller(&shared, move |c| c.explain(src, dst, q.proto)).await)
}

#[derive(serde::Deserialize)]
struct HistoryQuery {
    since: Option<u64>,
}

/// The kept samples (those ending after `since`, Unix ms), without the
/// controller.
async fn get_history<D: Plane, H: Checks>(
    State(shared): State<Arc<Shared<D, H>>>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Response {
    match query {
        Ok(Query(q)) => Json(shared.history.view(q.since)).into_response(),
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            format!("query must be empty or ?since=UNIX_MS: {}", e.body_text()),
        ),
    }
}
