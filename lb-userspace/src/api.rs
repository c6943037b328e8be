//! The admin HTTP server: `/metrics` (Prometheus) and read-only JSON under
//! `/api/v1`.

use std::sync::{Arc, Mutex};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;

use crate::{dataplane::Dataplane, metrics, plan::Plan};

/// What the daemon shares with its API.
pub struct Shared {
    pub dataplane: Mutex<Dataplane>,
    pub plan: Mutex<Plan>,
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(get_metrics))
        .route("/api/v1/services", get(list_services))
        .route("/api/v1/services/{name}", get(get_service))
        .with_state(shared)
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn get_metrics(State(shared): State<Arc<Shared>>) -> Response {
    let dp = shared.dataplane.lock().expect("dataplane lock");
    let plan = shared.plan.lock().expect("plan lock");
    match metrics::render(&dp, &plan) {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Serialize)]
struct ServiceView {
    name: String,
    vip: String,
    protocol: &'static str,
    backends: Vec<BackendView>,
}

#[derive(Serialize)]
struct BackendView {
    address: String,
    weight: u32,
    state: &'static str,
}

fn view(svc: &crate::plan::ServicePlan) -> ServiceView {
    let vip = std::net::SocketAddr::new(
        crate::plan::words_addr(svc.key.addr, svc.key.family),
        u16::from_be(svc.key.port),
    );
    ServiceView {
        name: svc.name.clone(),
        vip: vip.to_string(),
        protocol: if svc.key.proto == lb_common::PROTO_TCP {
            "tcp"
        } else {
            "udp"
        },
        backends: svc
            .backends
            .iter()
            .map(|b| BackendView {
                address: b.addr.to_string(),
                weight: b.weight,
                state: match b.entry.state {
                    lb_common::STATE_READY => "ready",
                    lb_common::STATE_DRAIN => "drain",
                    lb_common::STATE_MAINT => "maint",
                    _ => "down",
                },
            })
            .collect(),
    }
}

async fn list_services(State(shared): State<Arc<Shared>>) -> Response {
    let plan = shared.plan.lock().expect("plan lock");
    Json(plan.services.iter().map(view).collect::<Vec<_>>()).into_response()
}

async fn get_service(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let plan = shared.plan.lock().expect("plan lock");
    match plan.services.iter().find(|s| s.name == name) {
        Some(svc) => Json(view(svc)).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no service named {name:?}")),
    }
}
