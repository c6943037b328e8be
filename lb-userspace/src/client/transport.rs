//! The HTTP requests to the admin API: plain HTTP with `ureq`, 5 s for a
//! whole request, no proxy (the admin address is this host's or a
//! neighbour's, never through a proxy), no redirects. The bearer token goes
//! on mutating calls only.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::rates::Sample;
use super::{ClientError, TIMEOUT};
use crate::api_types::{
    ApiError, Backend, BackendState, BackendUpdate, NodeState, NodeStatus, NodeUpdate,
    ReloadSummary, Rollout, RolloutRequest, Service,
};

/// A blocking client of one daemon's admin API.
pub struct Client {
    agent: ureq::Agent,
    admin: String,
    token: Option<String>,
}

enum Method {
    Get,
    Put,
    Post,
}

impl Client {
    /// `admin`: `ADDR:PORT` of the daemon. `token`: sent as
    /// `Authorization: Bearer` on mutating calls.
    pub fn new(admin: &str, token: Option<String>) -> Client {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .proxy(None)
            .max_redirects(0)
            .user_agent(concat!("xdplb/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Client {
            agent,
            admin: admin.to_string(),
            token,
        }
    }

    pub fn admin(&self) -> &str {
        &self.admin
    }

    /// `GET /api/v1/services`.
    pub fn services(&self) -> Result<Vec<Service>, ClientError> {
        self.json(Method::Get, "/api/v1/services".into(), None)
    }

    /// `GET /api/v1/services` as the daemon wrote it (fields this version
    /// does not know included).
    pub fn services_json(&self) -> Result<Value, ClientError> {
        self.json(Method::Get, "/api/v1/services".into(), None)
    }

    /// `GET /api/v1/services/{name}`.
    pub fn service(&self, name: &str) -> Result<Service, ClientError> {
        let path = format!("/api/v1/services/{}", segment(name));
        self.json(Method::Get, path, None)
    }

    /// `PUT .../backends/{addr}` with `{"state": ..}`; the updated backend.
    pub fn set_state(
        &self,
        service: &str,
        backend: SocketAddr,
        state: BackendState,
    ) -> Result<Backend, ClientError> {
        let update = BackendUpdate {
            state: Some(state),
            weight: None,
        };
        self.update_backend(service, backend, &update)
    }

    /// `PUT .../backends/{addr}` with `{"weight": ..}`; the updated backend.
    pub fn set_weight(
        &self,
        service: &str,
        backend: SocketAddr,
        weight: u32,
    ) -> Result<Backend, ClientError> {
        let update = BackendUpdate {
            state: None,
            weight: Some(weight),
        };
        self.update_backend(service, backend, &update)
    }

    /// `PUT /api/v1/services/{name}/backends/{addr:port}`.
    pub fn update_backend(
        &self,
        service: &str,
        backend: SocketAddr,
        update: &BackendUpdate,
    ) -> Result<Backend, ClientError> {
        let path = format!(
            "/api/v1/services/{}/backends/{}",
            segment(service),
            segment(&backend.to_string())
        );
        let body = serde_json::to_value(update).expect("a BackendUpdate serializes");
        self.json(Method::Put, path, Some(body))
    }

    /// `GET /api/v1/status`: the node state and BGP.
    pub fn node_status(&self) -> Result<NodeStatus, ClientError> {
        self.json(Method::Get, "/api/v1/status".into(), None)
    }

    /// `PUT /api/v1/node`: drain (withdraw every VIP) or ready.
    pub fn set_node(&self, state: NodeState) -> Result<NodeStatus, ClientError> {
        let body = serde_json::to_value(NodeUpdate { state }).expect("a NodeUpdate serializes");
        self.json(Method::Put, "/api/v1/node".into(), Some(body))
    }

    /// `POST /api/v1/reload`: the daemon re-reads its config file.
    pub fn reload(&self) -> Result<ReloadSummary, ClientError> {
        self.json(Method::Post, "/api/v1/reload".into(), None)
    }

    /// `GET /api/v1/rollouts`.
    pub fn rollouts(&self) -> Result<Vec<Rollout>, ClientError> {
        self.json(Method::Get, "/api/v1/rollouts".into(), None)
    }

    /// `GET /api/v1/rollouts/{service}`.
    pub fn rollout(&self, service: &str) -> Result<Rollout, ClientError> {
        let path = format!("/api/v1/rollouts/{}", segment(service));
        self.json(Method::Get, path, None)
    }

    /// `POST /api/v1/rollouts`: starts a rollout.
    pub fn start_rollout(&self, request: &RolloutRequest) -> Result<Rollout, ClientError> {
        let body = serde_json::to_value(request).expect("a RolloutRequest serializes");
        self.json(Method::Post, "/api/v1/rollouts".into(), Some(body))
    }

    /// `POST /api/v1/rollouts/{service}/{action}` (pause, resume, abort).
    pub fn rollout_action(&self, service: &str, action: &str) -> Result<Rollout, ClientError> {
        let path = format!("/api/v1/rollouts/{}/{action}", segment(service));
        self.json(Method::Post, path, None)
    }

    /// `GET /api/v1/explain`: where a packet of this flow goes.
    pub fn explain(
        &self,
        src: SocketAddr,
        dst: SocketAddr,
        protocol: crate::config::Protocol,
    ) -> Result<crate::api_types::Explanation, ClientError> {
        let path = format!(
            "/api/v1/explain?src={}&dst={}&proto={protocol}",
            segment(&src.to_string()),
            segment(&dst.to_string())
        );
        self.json(Method::Get, path, None)
    }

    /// `GET /metrics`: Prometheus text.
    pub fn metrics(&self) -> Result<String, ClientError> {
        self.call(Method::Get, "/metrics".into(), None)
            .map(|(_, text)| text)
    }

    /// `GET /api/v1/services` and when it was answered (for [`Rates`](super::Rates)).
    pub fn sample(&self) -> Result<Sample, ClientError> {
        let services = self.services()?;
        Ok(Sample {
            services,
            at: Instant::now(),
        })
    }

    /// A sample and the JSON it was read from, as the daemon wrote it.
    pub fn sample_with_json(&self) -> Result<(Sample, Value), ClientError> {
        let json = self.services_json()?;
        let at = Instant::now();
        let services = serde_json::from_value(json.clone())
            .map_err(|e| self.not_the_contract("GET /api/v1/services".into(), e))?;
        Ok((Sample { services, at }, json))
    }

    fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: String,
        body: Option<Value>,
    ) -> Result<T, ClientError> {
        let (request, text) = self.call(method, path, body)?;
        serde_json::from_str(&text).map_err(|e| self.not_the_contract(request, e))
    }

    /// An answer that does not parse as the API's types.
    fn not_the_contract(&self, request: String, e: serde_json::Error) -> ClientError {
        ClientError::BadAnswer {
            admin: self.admin.clone(),
            request,
            detail: format!("{e} (is the daemon the same version as this xdplb?)"),
        }
    }

    /// Sends one request; returns its description ("GET /path") and the
    /// body of a 2xx answer.
    fn call(
        &self,
        method: Method,
        path: String,
        body: Option<Value>,
    ) -> Result<(String, String), ClientError> {
        let url = format!("http://{}{path}", self.admin);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let (request, result) = match method {
            Method::Get => (format!("GET {path}"), self.agent.get(&url).call()),
            Method::Put | Method::Post => {
                let (name, mut req) = match method {
                    Method::Put => ("PUT", self.agent.put(&url)),
                    _ => ("POST", self.agent.post(&url)),
                };
                if let Some(auth) = &auth {
                    req = req.header("Authorization", auth);
                }
                let result = match &body {
                    Some(body) => req.send_json(body),
                    None => req.send_empty(),
                };
                (format!("{name} {path}"), result)
            }
        };
        let mut response = result.map_err(|e| self.transport_error(&request, e))?;
        let status = response.status();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| self.transport_error(&request, e))?;
        if status.is_success() {
            return Ok((request, text));
        }
        if status.is_client_error() || status.is_server_error() {
            let message = match serde_json::from_str::<ApiError>(&text) {
                Ok(e) => e.error,
                Err(_) if text.trim().is_empty() => {
                    status.canonical_reason().unwrap_or("error").to_string()
                }
                Err(_) => first_line(&text),
            };
            let hint = match status.as_u16() {
                401 | 403 if self.token.is_none() => {
                    " (no token sent: give --token-file or admin.token_file in --config)"
                }
                _ => "",
            };
            return Err(ClientError::Api {
                request,
                status: status.as_u16(),
                message,
                hint,
            });
        }
        Err(ClientError::BadAnswer {
            admin: self.admin.clone(),
            request,
            detail: format!("HTTP {status}"),
        })
    }

    fn transport_error(&self, request: &str, e: ureq::Error) -> ClientError {
        let admin = self.admin.clone();
        let request = request.to_string();
        let unreachable = |reason: &str| ClientError::Unreachable {
            admin: self.admin.clone(),
            reason: reason.to_string(),
        };
        match e {
            ureq::Error::Timeout(_) => ClientError::Timeout { admin, request },
            ureq::Error::HostNotFound => unreachable("host not found"),
            ureq::Error::ConnectionFailed => unreachable("connection failed"),
            ureq::Error::Io(e) => match e.kind() {
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                    ClientError::Timeout { admin, request }
                }
                io::ErrorKind::ConnectionRefused => unreachable("connection refused"),
                io::ErrorKind::HostUnreachable => unreachable("host unreachable"),
                io::ErrorKind::NetworkUnreachable => unreachable("network unreachable"),
                io::ErrorKind::AddrNotAvailable => unreachable("address not available"),
                _ => ClientError::Transport {
                    admin,
                    request,
                    reason: e.to_string(),
                },
            },
            e => ClientError::Transport {
                admin,
                request,
                reason: e.to_string(),
            },
        }
    }
}

/// What a URL path segment keeps as it is: RFC 3986 `pchar`s (unreserved,
/// sub-delims, `:` and `@`), so `1.2.3.4:80` stays as it is and `[::1]:80`
/// gets its brackets encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// Percent-encodes one URL path segment.
fn segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

fn first_line(text: &str) -> String {
    let line = text.trim().lines().next().unwrap_or("");
    let mut line: String = line.chars().take(200).collect();
    if line.len() < text.trim().len() {
        line.push_str("...");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_json_round_trips() {
        let json = r#"{"name": "web", "vip": "198.18.100.10:80", "protocol": "tcp",
            "mode": "nat", "hash": "five-tuple", "packets": 123, "bytes": 4567,
            "backends": [{"address": "198.18.1.11:8080", "weight": 100,
              "state": "ready", "health": "up", "effective": "ready",
              "packets": 10, "bytes": 900, "flows": 3,
              "check": {"up": true, "consecutive_ok": 5, "consecutive_fail": 0,
                "last_duration_ms": 0.4, "last_error": null, "checks": 12}},
              {"address": "198.18.1.12:8080", "weight": 0, "state": "maint",
              "health": "unchecked", "effective": "maint", "packets": 0,
              "bytes": 0, "flows": 0, "check": null}]}"#;
        let svc: Service = serde_json::from_str(json).unwrap();
        assert_eq!(svc.backends[0].check.as_ref().unwrap().checks, 12);
        assert_eq!(svc.backends[1].state, BackendState::Maint);
        let again: Service = serde_json::from_value(serde_json::to_value(&svc).unwrap()).unwrap();
        assert_eq!(again, svc);
        let v = serde_json::to_value(&svc).unwrap();
        assert_eq!(v["hash"], "five-tuple");
        assert!(v["backends"][1]["check"].is_null());
    }

    #[test]
    fn backend_update_sends_only_what_is_set() {
        let u = BackendUpdate {
            state: Some(BackendState::Drain),
            weight: None,
        };
        assert_eq!(serde_json::to_string(&u).unwrap(), r#"{"state":"drain"}"#);
        let u = BackendUpdate {
            state: None,
            weight: Some(50),
        };
        assert_eq!(serde_json::to_string(&u).unwrap(), r#"{"weight":50}"#);
        assert!(serde_json::from_str::<BackendUpdate>(r#"{"sate":"drain"}"#).is_err());
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(segment("web"), "web");
        assert_eq!(segment("1.2.3.4:80"), "1.2.3.4:80");
        assert_eq!(segment("[::1]:80"), "%5B::1%5D:80");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
        assert_eq!(segment("50%?#é"), "50%25%3F%23%C3%A9");
    }
}
