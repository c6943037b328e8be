//! The bearer token of changes (`admin.token_file`): every `PUT` and
//! `POST` endpoint is wrapped by [`guard`], which checks it before the
//! handler runs and before the body is read. Compared in constant time, so
//! the answer's timing tells nothing about how much of a guess was right
//! (only its length may show: tokens are long and random).

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::Response,
    routing::MethodRouter,
};
use subtle::ConstantTimeEq;

use super::error;

/// `endpoint` with the token required (when one is configured). Only its
/// methods are guarded: a method it does not serve still gets 405.
pub(super) fn guard<S>(endpoint: MethodRouter<S>, token: Option<Arc<str>>) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    endpoint.route_layer(middleware::from_fn_with_state(token, require_token))
}

async fn require_token(
    State(token): State<Option<Arc<str>>>,
    request: Request,
    next: Next,
) -> Response {
    match unauthorized(token.as_deref(), request.headers()) {
        Some(refused) => refused,
        None => next.run(request).await,
    }
}

/// `None` if the call may go ahead (no token configured, or the right
/// one given), else the 401 answer.
pub(super) fn unauthorized(token: Option<&str>, headers: &HeaderMap) -> Option<Response> {
    let token = token?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| bearer(v.as_bytes()));
    let mut answer = match given {
        Some(t) if bool::from(t.ct_eq(token.as_bytes())) => return None,
        Some(_) => error(StatusCode::UNAUTHORIZED, "wrong bearer token"),
        None => error(
            StatusCode::UNAUTHORIZED,
            "this call needs Authorization: Bearer <token from admin.token_file>",
        ),
    };
    // RFC 6750: a 401 names the scheme it wants.
    answer
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(answer)
}

/// The credentials of `Bearer CREDENTIALS` (the scheme in any case, RFC
/// 7235), without surrounding white space.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() < SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    Some(value[SCHEME.len()..].trim_ascii())
}

#[cfg(test)]
mod tests {
    use axum::{Router, body::Body, routing::put};
    use tower::ServiceExt as _;

    use super::*;

    /// A guarded PUT on `/x`: the status of `method` with `authorization`.
    async fn call(method: &str, authorization: Option<&str>) -> StatusCode {
        let app: Router = Router::new().route(
            "/x",
            guard(put(|| async { "changed" }), Some("s3cret".into())),
        );
        let mut req = Request::builder().method(method).uri("/x");
        if let Some(a) = authorization {
            req = req.header(header::AUTHORIZATION, a);
        }
        let answer = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        answer.status()
    }

    #[tokio::test]
    async fn the_guard_lets_through_only_calls_with_the_token() {
        assert_eq!(call("PUT", Some("Bearer s3cret")).await, StatusCode::OK);
        assert_eq!(call("PUT", None).await, StatusCode::UNAUTHORIZED);
        assert_eq!(
            call("PUT", Some("Bearer nope")).await,
            StatusCode::UNAUTHORIZED
        );
        // Methods the endpoint does not serve: 405, token or not.
        assert_eq!(call("DELETE", None).await, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(call("GET", None).await, StatusCode::METHOD_NOT_ALLOWED);
    }

    fn check(token: Option<&str>, authorization: Option<&str>) -> Option<StatusCode> {
        let mut headers = HeaderMap::new();
        if let Some(a) = authorization {
            headers.insert(header::AUTHORIZATION, a.parse().unwrap());
        }
        unauthorized(token, &headers).map(|r| {
            assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
            r.status()
        })
    }

    #[test]
    fn only_the_configured_token_passes() {
        let denied = Some(StatusCode::UNAUTHORIZED);
        // No token configured: every call goes ahead.
        assert_eq!(check(None, None), None);
        assert_eq!(check(None, Some("Bearer anything")), None);

        let t = Some("s3cret");
        assert_eq!(check(t, Some("Bearer s3cret")), None);
        assert_eq!(check(t, Some("bearer  s3cret ")), None);
        for wrong in [
            None,
            Some("Bearer"),
            Some("Bearer "),
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("Bearer S3CRET"),
            Some("Basic s3cret"),
            Some("s3cret"),
        ] {
            assert_eq!(check(t, wrong), denied, "{wrong:?}");
        }
    }
}
