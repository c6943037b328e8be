//! The client side of the CLI (`xdplb status`, `backend`, `reload`): a small
//! blocking client of the daemon's admin API (design.md section 5) and the
//! text the commands print.
//!
//! Plain HTTP with `ureq`, 5 s for a whole request, no proxy (the admin
//! address is this host's or a neighbour's, never through a proxy), no
//! redirects. The bearer token goes on mutating calls only.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::api_types::{
    ApiError, Backend, BackendState, BackendUpdate, Effective, HashMode, Health, Mode, Protocol,
    ReloadSummary, Service,
};

/// `--admin` when neither it nor a config says otherwise.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9100";

/// Limit for one whole request: connect, send, answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Why a client command failed. [`ClientError::exit_code`] maps it to the
/// CLI's exit codes (1 runtime, 2 usage/config or refused by the API).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Bad `--admin`, unreadable config or token file: exit 2.
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the daemon at {admin}: {reason} (is xdplb run going?)")]
    Unreachable { admin: String, reason: String },
    #[error("no answer from the daemon at {admin} within {}s to {request}", TIMEOUT.as_secs())]
    Timeout { admin: String, request: String },
    #[error("{request} to the daemon at {admin} failed: {reason}")]
    Transport {
        admin: String,
        request: String,
        reason: String,
    },
    /// A 4xx (exit 2) or 5xx (exit 1) answer; `message` is the API's.
    #[error("{request}: {message} (HTTP {status}){hint}")]
    Api {
        request: String,
        status: u16,
        message: String,
        hint: &'static str,
    },
    /// Not the JSON the contract says (another version of xdplb?).
    #[error("unexpected answer from the daemon at {admin} to {request}: {detail}")]
    BadAnswer {
        admin: String,
        request: String,
        detail: String,
    },
}

impl ClientError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Usage(_) => 2,
            ClientError::Api { status, .. } if (400..500).contains(status) => 2,
            _ => 1,
        }
    }
}

/// Checks `--admin`: `IP:PORT` (`[v6]:PORT`) or `HOST:PORT`; returns it as
/// it goes in a URL.
pub fn parse_admin(s: &str) -> Result<String, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr.to_string());
    }
    let bad = || format!("{s:?} is not ADDR:PORT (e.g. 127.0.0.1:9100)");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if !host_ok || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(s.to_string())
}

/// Where the daemon is and where its token is: flags first, then the
/// config's `admin` section, then the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub admin: String,
    pub token_file: Option<PathBuf>,
}

/// The part of a config file the client needs. Other keys are ignored and
/// nothing is validated: `status` must work with any file the daemon took,
/// whatever this binary's version thinks of the rest.
#[derive(Deserialize, Default)]
struct ConfigAdmin {
    #[serde(default)]
    admin: Option<AdminSection>,
}

#[derive(Deserialize, Default)]
struct AdminSection {
    #[serde(default)]
    listen: Option<SocketAddr>,
    #[serde(default)]
    token_file: Option<PathBuf>,
}

impl Settings {
    /// `admin` is an already checked `--admin` (see [`parse_admin`]).
    pub fn resolve(
        admin: Option<&str>,
        config: Option<&Path>,
        token_file: Option<&Path>,
    ) -> Result<Settings, ClientError> {
        let section = match config {
            Some(path) => read_admin_section(path)?,
            None => AdminSection::default(),
        };
        let admin = match (admin, section.listen) {
            (Some(a), _) => a.to_string(),
            // A daemon listening on all addresses is reached on loopback.
            (None, Some(mut listen)) => {
                if listen.ip().is_unspecified() {
                    listen.set_ip(match listen {
                        SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                        SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
                    });
                }
                listen.to_string()
            }
            (None, None) => DEFAULT_ADMIN.to_string(),
        };
        let token_file = token_file.map(Path::to_path_buf).or(section.token_file);
        Ok(Settings { admin, token_file })
    }

    /// Reads the token file, if there is one (trimmed). Only commands that
    /// change something need it: `status` works for users who cannot read
    /// the token.
    pub fn token(&self) -> Result<Option<String>, ClientError> {
        self.token_file.as_deref().map(read_token).transpose()
    }
}

fn read_admin_section(path: &Path) -> Result<AdminSection, ClientError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ClientError::Usage(format!("cannot read config {}: {e}", path.display())))?;
    // An empty file is an empty mapping (all defaults).
    if text.trim().is_empty() {
        return Ok(AdminSection::default());
    }
    let parsed: ConfigAdmin = serde_yaml::from_str(&text).map_err(|e| {
        ClientError::Usage(format!(
            "{}: cannot read admin.listen / admin.token_file: {e}",
            path.display()
        ))
    })?;
    Ok(parsed.admin.unwrap_or_default())
}

fn read_token(path: &Path) -> Result<String, ClientError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ClientError::Usage(format!("cannot read token file {}: {e}", path.display()))
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ClientError::Usage(format!(
            "token file {} is empty",
            path.display()
        )));
    }
    if token.chars().any(|c| c.is_control()) {
        return Err(ClientError::Usage(format!(
            "token file {} holds more than one line",
            path.display()
        )));
    }
    Ok(token.to_string())
}

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

    /// `POST /api/v1/reload`: the daemon re-reads its config file.
    pub fn reload(&self) -> Result<ReloadSummary, ClientError> {
        self.json(Method::Post, "/api/v1/reload".into(), None)
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

    fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: String,
        body: Option<Value>,
    ) -> Result<T, ClientError> {
        let (request, text) = self.call(method, path, body)?;
        serde_json::from_str(&text).map_err(|e| ClientError::BadAnswer {
            admin: self.admin.clone(),
            request,
            detail: format!("{e} (is the daemon the same version as this xdplb?)"),
        })
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

/// Percent-encodes one URL path segment (keeps RFC 3986 `pchar`s, so
/// `1.2.3.4:80` stays as it is and `[::1]:80` gets its brackets encoded).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b);
        if keep {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn first_line(text: &str) -> String {
    let line = text.trim().lines().next().unwrap_or("");
    let mut line: String = line.chars().take(200).collect();
    if line.len() < text.trim().len() {
        line.push_str("...");
    }
    line
}

/// `GET /api/v1/services` and when it was answered.
pub struct Sample {
    pub services: Vec<Service>,
    pub at: Instant,
}

impl Client {
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
        let services =
            serde_json::from_value(json.clone()).map_err(|e| ClientError::BadAnswer {
                admin: self.admin.clone(),
                request: "GET /api/v1/services".into(),
                detail: format!("{e} (is the daemon the same version as this xdplb?)"),
            })?;
        Ok((Sample { services, at }, json))
    }
}

/// Per second, between two samples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    pub packets_per_second: f64,
    pub bytes_per_second: f64,
}

/// Rates of the services and backends present in both samples whose
/// counters did not go backwards (a daemon restart resets them).
#[derive(Clone, Debug, Default)]
pub struct Rates {
    services: HashMap<String, Rate>,
    backends: HashMap<(String, SocketAddr), Rate>,
}

impl Rates {
    pub fn between(before: &Sample, after: &Sample) -> Rates {
        let seconds = after.at.duration_since(before.at).as_secs_f64();
        let mut rates = Rates::default();
        if seconds <= 0.0 {
            return rates;
        }
        let rate = |p0: u64, b0: u64, p1: u64, b1: u64| {
            (p1 >= p0 && b1 >= b0).then(|| Rate {
                packets_per_second: (p1 - p0) as f64 / seconds,
                bytes_per_second: (b1 - b0) as f64 / seconds,
            })
        };
        for new in &after.services {
            let Some(old) = before.services.iter().find(|s| s.name == new.name) else {
                continue;
            };
            if let Some(r) = rate(old.packets, old.bytes, new.packets, new.bytes) {
                rates.services.insert(new.name.clone(), r);
            }
            for nb in &new.backends {
                let Some(ob) = old.backends.iter().find(|b| b.address == nb.address) else {
                    continue;
                };
                if let Some(r) = rate(ob.packets, ob.bytes, nb.packets, nb.bytes) {
                    rates.backends.insert((new.name.clone(), nb.address), r);
                }
            }
        }
        rates
    }

    pub fn service(&self, name: &str) -> Option<Rate> {
        self.services.get(name).copied()
    }

    pub fn backend(&self, service: &str, address: SocketAddr) -> Option<Rate> {
        self.backends.get(&(service.to_string(), address)).copied()
    }

    /// Adds `packets_per_second` and `bytes_per_second` to the services and
    /// backends of a `GET /api/v1/services` answer (as JSON), where known.
    pub fn add_to_json(&self, services: &mut Value) {
        let Some(services) = services.as_array_mut() else {
            return;
        };
        for svc in services {
            let Some(name) = svc.get("name").and_then(Value::as_str).map(str::to_string) else {
                continue;
            };
            if let Some(r) = self.service(&name) {
                insert_rate(svc, r);
            }
            let Some(backends) = svc.get_mut("backends").and_then(Value::as_array_mut) else {
                continue;
            };
            for b in backends {
                let address = b
                    .get("address")
                    .and_then(Value::as_str)
                    .and_then(|a| a.parse().ok());
                if let Some(r) = address.and_then(|a| self.backend(&name, a)) {
                    insert_rate(b, r);
                }
            }
        }
    }
}

fn insert_rate(object: &mut Value, rate: Rate) {
    if let Some(object) = object.as_object_mut() {
        object.insert("packets_per_second".into(), rate.packets_per_second.into());
        object.insert("bytes_per_second".into(), rate.bytes_per_second.into());
    }
}

fn format_rate(rate: Option<Rate>) -> String {
    match rate.map(|r| r.packets_per_second) {
        None => "-".into(),
        Some(pps) if pps >= 100.0 => format!("{pps:.0}"),
        Some(pps) => format!("{pps:.1}"),
    }
}

/// The words of the API, as in the YAML.
pub fn state_word(state: BackendState) -> &'static str {
    match state {
        BackendState::Ready => "ready",
        BackendState::Drain => "drain",
        BackendState::Maint => "maint",
    }
}

pub fn health_word(health: Health) -> &'static str {
    match health {
        Health::Up => "up",
        Health::Down => "down",
        Health::Unchecked => "unchecked",
    }
}

pub fn effective_word(effective: Effective) -> &'static str {
    match effective {
        Effective::Ready => "ready",
        Effective::Drain => "drain",
        Effective::Maint => "maint",
        Effective::Down => "down",
    }
}

fn protocol_word(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

fn mode_word(m: Mode) -> &'static str {
    match m {
        Mode::Nat => "nat",
        Mode::Dsr => "dsr",
        Mode::Tunnel => "tunnel",
    }
}

fn hash_word(h: HashMode) -> &'static str {
    match h {
        HashMode::FiveTuple => "five-tuple",
        HashMode::SourceIp => "source-ip",
    }
}

/// `xdplb status`: per service a header line and a table of its backends.
/// Without `rates`, the packets-per-second columns show `-`.
pub fn render_status(services: &[Service], rates: Option<&Rates>) -> String {
    if services.is_empty() {
        return "no services\n".into();
    }
    let mut out = String::new();
    for (i, svc) in services.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "{}: {} {}, mode {}, hash {}, {} pkt/s",
            svc.name,
            svc.vip,
            protocol_word(svc.protocol),
            mode_word(svc.mode),
            hash_word(svc.hash),
            format_rate(rates.and_then(|r| r.service(&svc.name))),
        );
        if svc.backends.is_empty() {
            out.push_str("  (no backends)\n");
            continue;
        }
        let mut rows = vec![
            [
                "BACKEND",
                "WEIGHT",
                "STATE",
                "HEALTH",
                "EFFECTIVE",
                "FLOWS",
                "PKT/S",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for b in &svc.backends {
            rows.push(vec![
                b.address.to_string(),
                b.weight.to_string(),
                state_word(b.state).into(),
                health_word(b.health).into(),
                effective_word(b.effective).into(),
                b.flows.to_string(),
                format_rate(rates.and_then(|r| r.backend(&svc.name, b.address))),
            ]);
        }
        let right = [false, true, false, false, false, true, true];
        table(&mut out, &rows, &right);
    }
    out
}

fn table(out: &mut String, rows: &[Vec<String>], right: &[bool]) {
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str("  ");
            if right[c] {
                let _ = write!(line, "{cell:>w$}", w = widths[c]);
            } else {
                let _ = write!(line, "{cell:<w$}", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// `xdplb backend state|weight`: the updated backend on one line.
pub fn render_backend(service: &str, b: &Backend) -> String {
    format!(
        "{service} {}: state {}, weight {}, health {}, effective {}\n",
        b.address,
        state_word(b.state),
        b.weight,
        health_word(b.health),
        effective_word(b.effective),
    )
}

/// `xdplb reload`: one line per non-empty list, or "no changes".
pub fn render_reload(summary: &ReloadSummary) -> String {
    if summary.is_empty() {
        return "no changes\n".into();
    }
    let mut out = String::new();
    for (what, list) in [
        ("services added", &summary.services_added),
        ("services removed", &summary.services_removed),
        ("services changed", &summary.services_changed),
        ("backends added", &summary.backends_added),
        ("backends removed", &summary.backends_removed),
    ] {
        if !list.is_empty() {
            let _ = writeln!(out, "{what}: {}", list.join(", "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(address: &str, packets: u64) -> Backend {
        Backend {
            address: address.parse().unwrap(),
            weight: 100,
            state: BackendState::Ready,
            health: Health::Unchecked,
            effective: Effective::Ready,
            packets,
            bytes: packets * 100,
            flows: 1,
            check: None,
        }
    }

    fn service(packets: u64) -> Service {
        Service {
            name: "web".into(),
            vip: "198.18.100.10:80".parse().unwrap(),
            protocol: Protocol::Tcp,
            mode: Mode::Nat,
            hash: HashMode::FiveTuple,
            packets,
            bytes: packets * 100,
            backends: vec![backend("198.18.1.11:8080", packets)],
        }
    }

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
    }

    #[test]
    fn admin_addresses() {
        assert_eq!(parse_admin("127.0.0.1:9100").unwrap(), "127.0.0.1:9100");
        assert_eq!(parse_admin("[::1]:9100").unwrap(), "[::1]:9100");
        assert_eq!(parse_admin("lb1.example:9100").unwrap(), "lb1.example:9100");
        for bad in ["127.0.0.1", "::1:9100x", ":9100", "host:99999", "a/b:1"] {
            assert!(parse_admin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rates_between_samples() {
        let t0 = Instant::now();
        let before = Sample {
            services: vec![service(1000)],
            at: t0,
        };
        let after = Sample {
            services: vec![service(3000)],
            at: t0 + Duration::from_secs(2),
        };
        let rates = Rates::between(&before, &after);
        let r = rates.service("web").unwrap();
        assert_eq!(r.packets_per_second, 1000.0);
        assert_eq!(r.bytes_per_second, 100_000.0);
        let addr = "198.18.1.11:8080".parse().unwrap();
        assert_eq!(
            rates.backend("web", addr).unwrap().packets_per_second,
            1000.0
        );
        // Counters reset (daemon restarted): no rate rather than nonsense.
        let rates = Rates::between(
            &after,
            &Sample {
                at: t0 + Duration::from_secs(3),
                ..before
            },
        );
        assert!(rates.service("web").is_none());

        let text = render_status(
            &after.services,
            Some(&Rates::between(
                &Sample {
                    services: vec![service(1000)],
                    at: t0,
                },
                &after,
            )),
        );
        assert!(
            text.starts_with("web: 198.18.100.10:80 tcp, mode nat, hash five-tuple, 1000 pkt/s\n"),
            "{text}"
        );
        assert!(
            text.contains("198.18.1.11:8080     100  ready  unchecked  ready          1   1000"),
            "{text}"
        );
        assert!(render_status(&after.services, None).contains(" -\n"));

        let mut json = serde_json::to_value(&after.services).unwrap();
        Rates::between(
            &Sample {
                services: vec![service(1000)],
                at: t0,
            },
            &after,
        )
        .add_to_json(&mut json);
        assert_eq!(json[0]["packets_per_second"], 1000.0);
        assert_eq!(json[0]["backends"][0]["bytes_per_second"], 100_000.0);
    }

    #[test]
    fn reload_summary_lines() {
        assert_eq!(render_reload(&ReloadSummary::default()), "no changes\n");
        let s = ReloadSummary {
            services_added: vec!["dns".into(), "ntp".into()],
            backends_removed: vec!["web/198.18.1.12:8080".into()],
            ..Default::default()
        };
        assert_eq!(
            render_reload(&s),
            "services added: dns, ntp\nbackends removed: web/198.18.1.12:8080\n"
        );
    }

    #[test]
    fn settings_from_a_config_that_only_the_admin_section_matters_in() {
        let dir = std::env::temp_dir().join(format!("xdplb-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "  s3cret\n").unwrap();
        let config = dir.join("c.yaml");
        std::fs::write(
            &config,
            format!(
                "interfaces: [eth0]\nfuture_key: 1\nadmin:\n  listen: 127.0.0.1:9200\n  token_file: {}\n",
                token.display()
            ),
        )
        .unwrap();
        let s = Settings::resolve(None, Some(&config), None).unwrap();
        assert_eq!(s.admin, "127.0.0.1:9200");
        assert_eq!(s.token().unwrap().as_deref(), Some("s3cret"));
        let s = Settings::resolve(Some("127.0.0.1:1"), None, None).unwrap();
        assert_eq!(
            s,
            Settings {
                admin: "127.0.0.1:1".into(),
                token_file: None
            }
        );
        assert_eq!(s.token().unwrap(), None);
        assert_eq!(
            Settings::resolve(None, None, None).unwrap().admin,
            DEFAULT_ADMIN
        );
        std::fs::write(&token, "\n").unwrap();
        let e = Settings::resolve(None, Some(&config), None)
            .unwrap()
            .token()
            .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("is empty"), "{e}");
        std::fs::write(&config, "admin: { listen: \"0.0.0.0:9300\" }\n").unwrap();
        let s = Settings::resolve(None, Some(&config), None).unwrap();
        assert_eq!(s.admin, "127.0.0.1:9300");
        std::fs::write(&config, "admin: { listen: \"[::]:9300\" }\n").unwrap();
        let s = Settings::resolve(None, Some(&config), None).unwrap();
        assert_eq!(s.admin, "[::1]:9300");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
