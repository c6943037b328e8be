//! Admin API requests, structured (`arbitrary`): a method, one of the
//! endpoints with path and query parameters (names and addresses of the
//! config, or any text), an Authorization header, and a body (the JSON of
//! a backend or node change with any field values, any bytes, or one
//! around the body limit), through the real router with a token configured
//! or not.
//!
//! Holds: no 5xx (the fake data plane never fails); every error answer is
//! `{"error": ...}`; without the right token no change is made and no
//! change is answered 2xx; no body above `MAX_BODY_BYTES` is taken; every
//! 2xx answer of `/api/v1` is JSON.

#![no_main]

use std::net::SocketAddr;

use arbitrary::Arbitrary;
use axum::{
    body::Body,
    http::{HeaderValue, Method, Request, header},
};
use libfuzzer_sys::fuzz_target;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde_json::{Value, json};
use tower::ServiceExt as _;
use xdplb::{
    api::MAX_BODY_BYTES,
    api_types::{Backend, BackendState},
};
use xdplb_fuzz::{TOKEN, assert_api_error, router, runtime, shared, state};

#[derive(Arbitrary, Debug)]
struct Input {
    /// The daemon has `admin.token_file`.
    token: bool,
    method: Verb,
    target: Target,
    auth: Auth,
    json_content_type: bool,
    body: BodyKind,
}

#[derive(Arbitrary, Debug)]
enum Verb {
    Get,
    Head,
    Put,
    Post,
    Delete,
    Patch,
    Options,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Target {
    Dashboard,
    Metrics,
    OpenApi,
    Services,
    /// A service of the config.
    KnownService(u8),
    Service(Text),
    /// A backend of the config (ADDR:PORT in a client's spelling).
    KnownBackend(u8),
    Backend(Text, Text),
    Reload,
    Status,
    Node,
    Explain {
        src: Option<Text>,
        dst: Option<Text>,
        proto: Option<Text>,
        extra: Option<(Text, Text)>,
    },
    /// Any path and query, as written.
    Raw(String),
}

/// A path segment or query value.
#[derive(Arbitrary, Debug)]
enum Text {
    /// One of `KNOWN`.
    Known(u8),
    /// Any text, percent-encoded as a client does.
    Encoded(String),
    /// Any text, as is (the URI may not parse: then the input is skipped).
    Verbatim(String),
}

/// The backends of `fuzz/src/api.yaml`.
const BACKENDS: &[(&str, &str)] = &[
    ("web", "198.18.1.11:8080"),
    ("web", "198.18.1.12:8080"),
    ("web", "198.18.1.13:8080"),
    ("dns", "198.18.1.21:53"),
    ("web6", "[2001:db8::11]:8443"),
    ("all-ports", "198.18.1.31:0"),
    ("tunnel.mixed", "198.18.1.41:443"),
    ("tunnel.mixed", "[2001:db8::41]:443"),
];

/// Names and addresses of `fuzz/src/api.yaml`, and near misses.
const KNOWN: &[&str] = &[
    "web",
    "dns",
    "web6",
    "all-ports",
    "tunnel.mixed",
    "198.18.1.11:8080",
    "198.18.1.12:8080",
    "198.18.1.13:8080",
    "198.18.1.21:53",
    "[2001:db8::11]:8443",
    "198.18.1.31:0",
    "198.18.1.41:443",
    "[2001:db8::41]:443",
    "198.18.100.10:80",
    "198.18.100.53:53",
    "[2001:db8::100]:443",
    "198.18.100.20:0",
    "198.18.100.20:9999",
    "198.18.100.30:443",
    "198.18.0.9:40000",
    "[2001:db8::9]:1234",
    "[::ffff:198.18.100.10]:80",
    "198.18.1.11",
    "198.18.1.11:99999",
    "tcp",
    "udp",
    "icmp",
    "",
    ".",
    "..",
    "%",
    "%2F",
    "%00",
];

#[derive(Arbitrary, Debug)]
enum Auth {
    None,
    Right,
    /// The scheme in another case, spaces around the token.
    RightLoose,
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum BodyKind {
    Empty,
    Raw(Vec<u8>),
    Backend {
        state: Option<Word>,
        weight: Option<Number>,
        extra: bool,
    },
    Node {
        state: Option<Word>,
        extra: bool,
    },
    /// `{"state":"drain"}` padded with spaces to the limit plus `delta`.
    AtTheLimit {
        delta: i8,
    },
}

#[derive(Arbitrary, Debug)]
enum Word {
    Ready,
    Drain,
    Maint,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Number {
    U32(u32),
    I64(i64),
    F64(f64),
    Text(String),
}

/// What a path segment or query value must have encoded.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b']')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'&')
    .add(b'=')
    .add(b'+');

impl Text {
    fn write(&self) -> String {
        match self {
            Text::Known(i) => {
                utf8_percent_encode(KNOWN[*i as usize % KNOWN.len()], SEGMENT).to_string()
            }
            Text::Encoded(s) => utf8_percent_encode(s, SEGMENT).to_string(),
            Text::Verbatim(s) => s.clone(),
        }
    }
}

impl Target {
    fn uri(&self) -> String {
        match self {
            Target::Dashboard => "/".into(),
            Target::Metrics => "/metrics".into(),
            Target::OpenApi => "/api/v1/openapi.json".into(),
            Target::Services => "/api/v1/services".into(),
            Target::KnownService(i) => {
                let (name, _) = BACKENDS[*i as usize % BACKENDS.len()];
                format!("/api/v1/services/{name}")
            }
            Target::Service(name) => format!("/api/v1/services/{}", name.write()),
            Target::KnownBackend(i) => {
                let (name, addr) = BACKENDS[*i as usize % BACKENDS.len()];
                let addr = utf8_percent_encode(addr, SEGMENT);
                format!("/api/v1/services/{name}/backends/{addr}")
            }
            Target::Backend(name, addr) => format!(
                "/api/v1/services/{}/backends/{}",
                name.write(),
                addr.write()
            ),
            Target::Reload => "/api/v1/reload".into(),
            Target::Status => "/api/v1/status".into(),
            Target::Node => "/api/v1/node".into(),
            Target::Explain {
                src,
                dst,
                proto,
                extra,
            } => {
                let mut query = Vec::new();
                for (key, value) in [("src", src), ("dst", dst), ("proto", proto)] {
                    if let Some(v) = value {
                        query.push(format!("{key}={}", v.write()));
                    }
                }
                if let Some((k, v)) = extra {
                    query.push(format!("{}={}", k.write(), v.write()));
                }
                format!("/api/v1/explain?{}", query.join("&"))
            }
            Target::Raw(s) => s.clone(),
        }
    }
}

impl Word {
    fn json(&self) -> Value {
        match self {
            Word::Ready => "ready".into(),
            Word::Drain => "drain".into(),
            Word::Maint => "maint".into(),
            Word::Other(s) => s.as_str().into(),
        }
    }
}

impl Number {
    fn json(&self) -> Value {
        match self {
            Number::U32(n) => json!(n),
            Number::I64(n) => json!(n),
            Number::F64(n) => json!(n),
            Number::Text(s) => json!(s),
        }
    }
}

impl BodyKind {
    fn bytes(&self) -> Vec<u8> {
        let object = |fields: Vec<(&str, Option<Value>)>, extra: bool| {
            let mut o: serde_json::Map<String, Value> = fields
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_owned(), v?)))
                .collect();
            if extra {
                o.insert("extra".into(), json!(1));
            }
            serde_json::to_vec(&o).expect("JSON")
        };
        match self {
            BodyKind::Empty => Vec::new(),
            BodyKind::Raw(b) => b.clone(),
            BodyKind::Backend {
                state,
                weight,
                extra,
            } => object(
                vec![
                    ("state", state.as_ref().map(Word::json)),
                    ("weight", weight.as_ref().map(Number::json)),
                ],
                *extra,
            ),
            BodyKind::Node { state, extra } => {
                object(vec![("state", state.as_ref().map(Word::json))], *extra)
            }
            BodyKind::AtTheLimit { delta } => {
                let mut b = br#"{"state":"drain"}"#.to_vec();
                let len = (MAX_BODY_BYTES as isize + *delta as isize) as usize;
                b.resize(len.max(b.len()), b' ');
                b
            }
        }
    }
}

/// The right token, as RFC 6750 reads the header: scheme in any case.
fn carries_token(value: &[u8]) -> bool {
    value.len() > 7
        && value[..7].eq_ignore_ascii_case(b"bearer ")
        && value[7..].trim_ascii() == TOKEN.as_bytes()
}

fuzz_target!(|input: Input| {
    let method = match &input.method {
        Verb::Get => Method::GET,
        Verb::Head => Method::HEAD,
        Verb::Put => Method::PUT,
        Verb::Post => Method::POST,
        Verb::Delete => Method::DELETE,
        Verb::Patch => Method::PATCH,
        Verb::Options => Method::OPTIONS,
        Verb::Other(m) => match Method::from_bytes(m.as_bytes()) {
            Ok(m) => m,
            Err(_) => return,
        },
    };
    let mut request = Request::builder()
        .method(method.clone())
        .uri(input.target.uri());
    let authorization = match &input.auth {
        Auth::None => None,
        Auth::Right => Some(format!("Bearer {TOKEN}").into_bytes()),
        Auth::RightLoose => Some(format!("bEaReR  {TOKEN} ").into_bytes()),
        Auth::Raw(b) => Some(b.clone()),
    };
    let mut authorized = !input.token;
    if let Some(value) = authorization {
        let Ok(value) = HeaderValue::from_bytes(&value) else {
            return;
        };
        authorized |= carries_token(value.as_bytes());
        request = request.header(header::AUTHORIZATION, value);
    }
    if input.json_content_type {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let body = input.body.bytes();
    let body_len = body.len();
    let Ok(request) = request.body(Body::from(body)) else {
        return;
    };
    let path = request.uri().path().to_owned();

    let shared = shared(input.token.then_some(TOKEN));
    let before = state(&shared);
    let (status, content_type, answer) = runtime().block_on(async {
        let response = router(shared.clone())
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        let answer = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("an answer's body reads");
        (status, content_type, answer)
    });
    let changed = state(&shared) != before;

    assert!(!status.is_server_error(), "{status}: {answer:?}");
    let reads = method == Method::GET || method == Method::HEAD;
    if !authorized {
        assert!(!changed, "changed without the token: {status}");
        assert!(
            reads || !status.is_success(),
            "a change answered {status} without the token"
        );
    }
    if body_len > MAX_BODY_BYTES && !reads {
        assert!(!status.is_success(), "a {body_len}-byte body was taken");
    }
    if method == Method::HEAD {
        return;
    }
    if status.is_client_error() {
        assert_eq!(
            content_type.as_ref().map(|v| v.as_bytes()),
            Some(&b"application/json"[..]),
            "{status} on {path}"
        );
        assert_api_error(status.as_u16(), &answer);
    } else if status.is_success() && path.starts_with("/api/v1/") {
        serde_json::from_slice::<Value>(&answer)
            .unwrap_or_else(|e| panic!("{status} on {path} is not JSON ({e})"));
    }
    if let (Target::KnownBackend(i), true) = (&input.target, status.is_success())
        && method == Method::PUT
    {
        assert_change_answered(
            BACKENDS[*i as usize % BACKENDS.len()].1,
            &input.body,
            &answer,
        );
    }
});

/// A backend change that succeeded answers with the backend as changed.
fn assert_change_answered(addr: &str, body: &BodyKind, answer: &[u8]) {
    let b: Backend = serde_json::from_slice(answer).expect("a backend");
    assert_eq!(b.address, addr.parse::<SocketAddr>().unwrap());
    let BodyKind::Backend { state, weight, .. } = body else {
        return;
    };
    let state = match state {
        Some(Word::Ready) => Some(BackendState::Ready),
        Some(Word::Drain) => Some(BackendState::Drain),
        Some(Word::Maint) => Some(BackendState::Maint),
        _ => None,
    };
    if let Some(s) = state {
        assert_eq!(b.state, s);
    }
    let weight = match weight {
        Some(Number::U32(n)) => Some(i64::from(*n)),
        Some(Number::I64(n)) => Some(*n),
        _ => None,
    };
    if let Some(w) = weight {
        assert_eq!(i64::from(b.weight), w);
    }
}
