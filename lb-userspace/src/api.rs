//! The admin HTTP server (design.md section 5): `/` (dashboard), `/metrics`,
//! and JSON under `/api/v1` (`api_types`). Errors are JSON `{"error": ...}` with a 4xx
//! code. With `admin.token_file`, mutating calls need
//! `Authorization: Bearer TOKEN`.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use prometheus::{Encoder, Registry, TextEncoder};

use crate::{
    api_types::{ApiError, BackendUpdate},
    controller::{Controller, Refused},
};

/// What the daemon shares with its API.
pub struct Shared {
    pub controller: Mutex<Controller>,
    /// Daemon-side metrics (health checks), rendered after the data plane's.
    pub registry: Registry,
    /// Bearer token required on mutating calls, if configured.
    pub token: Option<String>,
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(get_metrics))
        .route("/api/v1/services", get(list_services))
        .route("/api/v1/services/{name}", get(get_service))
        .route("/api/v1/services/{name}/backends/{addr}", put(put_backend))
        .route("/api/v1/reload", post(post_reload))
        .route("/api/v1/explain", get(get_explain))
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

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.body())).into_response()
    }
}

/// Runs `f` on the controller off the async workers: writing a ring is
/// tens of thousands of syscalls.
async fn with_controller<T: Send + 'static>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&mut Controller) -> T + Send + 'static,
) -> T {
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || f(&mut shared.controller.lock().expect("controller lock")))
        .await
        .expect("controller task panicked")
}

/// `None` if the call may go ahead, else the 401 answer.
fn unauthorized(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let token = shared.token.as_ref()?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if t.trim() == token => None,
        Some(_) => Some(error(StatusCode::UNAUTHORIZED, "wrong bearer token")),
        None => Some(error(
            StatusCode::UNAUTHORIZED,
            "this call needs Authorization: Bearer <token from admin.token_file>",
        )),
    }
}

/// The live dashboard: one static page that polls the JSON API.
async fn dashboard() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("dashboard.html"),
    )
        .into_response()
}

async fn get_metrics(State(shared): State<Arc<Shared>>) -> Response {
    let s = shared.clone();
    let text = with_controller(&shared, move |c| {
        let mut text = c.metrics().map_err(|e| e.to_string())?;
        let mut extra = Vec::new();
        TextEncoder::new()
            .encode(&s.registry.gather(), &mut extra)
            .map_err(|e| e.to_string())?;
        text.push_str(&String::from_utf8_lossy(&extra));
        Ok::<_, String>(text)
    })
    .await;
    match text {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn list_services(State(shared): State<Arc<Shared>>) -> Response {
    match with_controller(&shared, |c| c.services_view()).await {
        Ok(services) => Json(services).into_response(),
        Err(r) => r.into_response(),
    }
}

async fn get_service(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let wanted = name.clone();
    let services = with_controller(&shared, |c| c.services_view()).await;
    match services.map(|s| s.into_iter().find(|s| s.name == wanted)) {
        Ok(Some(svc)) => Json(svc).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no service named {name:?}")),
        Err(r) => r.into_response(),
    }
}

async fn put_backend(
    State(shared): State<Arc<Shared>>,
    Path((name, addr)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = unauthorized(&shared, &headers) {
        return r;
    }
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{addr:?} is not a backend address (ADDR:PORT)"),
        );
    };
    let update: BackendUpdate = match serde_json::from_slice(&body) {
        Ok(u) => u,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "body must be {{\"state\": \"ready|drain|maint\"}} and/or {{\"weight\": N}}: {e}"
                ),
            );
        }
    };
    match with_controller(&shared, move |c| {
        c.update_backend(&name, addr, update.state, update.weight)
    })
    .await
    {
        Ok(b) => Json(b).into_response(),
        Err(r) => r.into_response(),
    }
}

async fn post_reload(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&shared, &headers) {
        return r;
    }
    match with_controller(&shared, |c| c.reload()).await {
        Ok(summary) => Json(summary).into_response(),
        Err(r) => r.into_response(),
    }
}

#[derive(serde::Deserialize)]
struct ExplainQuery {
    src: String,
    dst: String,
    #[serde(default)]
    proto: crate::config::Protocol,
}

async fn get_explain(
    State(shared): State<Arc<Shared>>,
    query: Result<axum::extract::Query<ExplainQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(axum::extract::Query(q)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "query must be ?src=ADDR:PORT&dst=ADDR:PORT&proto=tcp|udp",
        );
    };
    let (Ok(src), Ok(dst)) = (q.src.parse::<SocketAddr>(), q.dst.parse::<SocketAddr>()) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("src {:?} and dst {:?} must be ADDR:PORT", q.src, q.dst),
        );
    };
    match with_controller(&shared, move |c| c.explain(src, dst, q.proto)).await {
        Ok(e) => Json(e).into_response(),
        Err(r) => r.into_response(),
    }
}
