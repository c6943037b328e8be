//! `/api/v1/rollouts`: canary rollouts (`controller::rollouts`). Starting,
//! pausing, resuming and aborting are changes (token, when configured).

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{Path, State, rejection::BytesRejection, rejection::PathRejection},
    http::StatusCode,
    response::Response,
};

use super::{Checks, Plane, Shared, body_refused, error, json, parse_body, with_controller};
use crate::{api_types::RolloutRequest, controller::RolloutAction};

pub(super) async fn list<D: Plane, H: Checks>(State(shared): State<Arc<Shared<D, H>>>) -> Response {
    json(with_controller(&shared, |c| Ok(c.rollouts())).await)
}

pub(super) async fn get<D: Plane, H: Checks>(
    State(shared): State<Arc<Shared<D, H>>>,
    service: Result<Path<String>, PathRejection>,
) -> Response {
    match service {
        Ok(Path(service)) => json(with_controller(&shared, move |c| c.rollout(&service)).await),
        Err(e) => error(StatusCode::BAD_REQUEST, e.body_text()),
    }
}

pub(super) async fn start<D: Plane, H: Checks>(
    State(shared): State<Arc<Shared<D, H>>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request: RolloutRequest = match parse_body(
        body,
        "{\"service\": NAME, \"canaries\": [\"ADDR:PORT\", ...]} with optional \"steps\", \
         \"every\", \"abort_if\", \"min_flows\"",
    ) {
        Ok(r) => r,
        Err(r) => return r,
    };
    json(with_controller(&shared, move |c| c.start_rollout(&request)).await)
}

async fn act<D: Plane, H: Checks>(
    shared: Arc<Shared<D, H>>,
    service: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
    action: RolloutAction,
) -> Response {
    if let Err(e) = body {
        return body_refused(e);
    }
    match service {
        Ok(Path(service)) => {
            json(with_controller(&shared, move |c| c.rollout_action(&service, action)).await)
        }
        Err(e) => error(StatusCode::BAD_REQUEST, e.body_text()),
    }
}

/// Takes no body (one sent is read within the limit and ignored).
pub(super) async fn pause<D: Plane, H: Checks>(
    State(shared): State<Arc<Shared<D, H>>>,
    service: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    act(shared, service, body, RolloutAction::Pause).await
}

pub(super) async fn resume<D: Plane, H: Checks>(
    State(shared): State<Arc<Shared<D, H>>>,
    service: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    act(shared, service, body, RolloutAction::Resume).await
}

pub(super) async fn abort<D: Plane, H: Checks>(
    State(shared): State<Arc<Shared<D, H>>>,
    service: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    act(shared, service, body, RolloutAction::Abort).await
}
