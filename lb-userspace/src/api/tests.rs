//! The OpenAPI document against the router and the JSON types: every
//! endpoint the router serves is described (and nothing else), and values
//! of every type in `api_types` conform to their schemas (a small checker
//! of the JSON Schema subset the document uses).

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{Value, json};

use super::{OPENAPI, endpoints};
use crate::api_types::*;
use crate::{dataplane::Dataplane, health::HealthChecker};

fn document() -> Value {
    serde_json::from_str(OPENAPI).expect("openapi.json parses")
}

#[test]
fn the_document_lists_every_route_the_router_serves() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let methods = ["get", "put", "post", "delete", "patch", "head", "options"];
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            methods
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = endpoints::<Dataplane, HealthChecker>()
        .into_iter()
        .map(|(method, path, _)| (method.to_string(), path.to_owned()))
        .collect();
    assert_eq!(documented, served);

    // Changes name the token and the limit; every answer has a 200.
    for (method, path) in &served {
        let op = &doc["paths"][path][method.to_lowercase()];
        assert!(op["responses"]["200"].is_object(), "{method} {path}");
        let mutating = method != "GET";
        assert_eq!(op["security"].is_array(), mutating, "{method} {path}");
        if mutating {
            assert!(op["responses"]["401"].is_object(), "{method} {path}");
            assert!(op["responses"]["413"].is_object(), "{method} {path}");
        }
    }
    // Every reference resolves.
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        assert!(!resolve(&doc, &r).is_null(), "{r} does not resolve");
    }
}

#[test]
fn every_json_type_conforms_to_its_schema() {
    let doc = document();
    let check = Some(CheckStatus {
        up: false,
        consecutive_ok: 0,
        consecutive_fail: 3,
        last_duration_ms: Some(0.25),
        last_error: Some("connection refused".into()),
        checks: 9,
        last_change_ms: Some(1_700_000_000_000),
        last_change_reason: Some("connection refused".into()),
    });
    let backend = |check: Option<CheckStatus>| Backend {
        address: "[2001:db8::1]:80".parse().unwrap(),
        weight: 100,
        state: BackendState::Drain,
        health: Health::Down,
        effective: Effective::Down,
        packets: u64::MAX,
        bytes: 1,
        flows: 2,
        // Nat mode's signals with a check, the others' without.
        signals: Signals {
            active_flows: 3,
            bytes_sent: 1,
            bytes_received: check.is_some().then_some(0),
            resets: check.is_some().then_some(4),
            unanswered: check.is_some().then_some(5),
            handshakes: check.is_some().then(|| Handshakes {
                count: 1,
                sum_us: 90,
                buckets: vec![0, 0, 0, 0, 0, 0, 0, 1],
            }),
            at_max_flows: 6,
        },
        check,
        effective_weight: 37.5,
        slow_start: Some(SlowStart {
            percent: 37,
            remaining_ms: 6_250,
        }),
        max_flows: Some(1000),
    };
    let service = Service {
        name: "web".into(),
        vip: "198.18.100.10:80".parse().unwrap(),
        protocol: Protocol::Udp,
        mode: Mode::Tunnel,
        hash: HashMode::SourceIp,
        balance: Balance::LeastFlows,
        on_full: OnFull::Admit,
        packets: 1,
        bytes: 2,
        backends: vec![
            backend(check),
            Backend {
                effective_weight: 0.0,
                slow_start: None,
                max_flows: None,
                ..backend(None)
            },
        ],
    };
    let full = NodeStatus {
        node: NodeState::Drain,
        bgp: Some(BgpStatus {
            router_id: Some("198.18.0.1".parse().unwrap()),
            peers: vec![PeerStatus {
                address: "2001:db8::2".parse().unwrap(),
                asn: 4_200_000_000,
                state: "Established".into(),
                up: true,
            }],
            announced: vec!["198.18.100.10".parse().unwrap()],
        }),
        flow_sync: Some(SyncStatus {
            address: "198.18.0.1".parse().unwrap(),
            port: 7400,
            flows_sent: 5,
            peers: vec![
                SyncPeerStatus {
                    address: "198.18.0.2".parse().unwrap(),
                    up: true,
                    last_heard_ms: Some(12),
                    flows_received: 3,
                },
                SyncPeerStatus {
                    address: "198.18.0.3".parse().unwrap(),
                    up: false,
                    last_heard_ms: None,
                    flows_received: 0,
                },
            ],
        }),
    };
    let bare = NodeStatus {
        node: NodeState::Ready,
        bgp: Some(BgpStatus::default()),
        flow_sync: None,
    };
    let none = NodeStatus {
        bgp: None,
        ..bare.clone()
    };
    let reload = ReloadSummary {
        backends_added: vec!["web/198.18.1.11:8080".into()],
        ..ReloadSummary::default()
    };
    let explained = Explanation {
        service: Some("web".into()),
        backend: Some("198.18.1.11:8080".parse().unwrap()),
        existing_flow: false,
        hash: Some(u32::MAX),
        ring_index: Some(7),
        reason: "a new flow".into(),
    };
    let unexplained = Explanation {
        service: None,
        backend: None,
        existing_flow: false,
        hash: None,
        ring_index: None,
        reason: "not a VIP".into(),
    };
    let history = History {
        hostname: "lb1".into(),
        interfaces: vec!["eth0".into()],
        step_ms: 2000,
        keep_s: 900,
        times: vec![1_700_000_000_000, 1_700_000_002_000],
        active_flows: vec![Some(3.0), Some(4.0)],
        new_flows: vec![None, Some(0.5)],
        actions: vec![HistorySeries {
            name: "tx".into(),
            per_second: vec![Some(10.0), None],
        }],
        events: vec![HistorySeries {
            name: "no_backend".into(),
            per_second: vec![Some(0.0), Some(1.5)],
        }],
        services: vec![ServiceHistory {
            name: "web".into(),
            packets: vec![Some(1.0), None],
            bits: vec![Some(8.0), None],
        }],
        backends: vec![BackendHistory {
            service: "web".into(),
            address: "[2001:db8::1]:80".parse().unwrap(),
            packets: vec![None, Some(1.0)],
            bits: vec![None, Some(8.0)],
            flows: vec![None, Some(0.5)],
        }],
    };
    let rollout = Rollout {
        service: "web".into(),
        canaries: vec!["198.18.1.13:8080".parse().unwrap()],
        steps: vec![1, 50, 100],
        every: "30s".into(),
        abort_if: "health=down,rst_ratio>0.05".into(),
        min_flows: 20,
        state: RolloutState::RolledBack,
        step: 1,
        step_number: 1,
        canary_share: 0.0,
        in_step_ms: 1200,
        elapsed_ms: 1200,
        started_unix_ms: 1_700_000_000_000,
        window: RolloutWindow {
            new_flows: 42,
            resets: Some(35),
            unanswered: Some(0),
            handshake_p99_us: None,
        },
        reason: Some("rst_ratio 0.83 > 0.05".into()),
        baseline: vec![RolloutBaseline {
            address: "198.18.1.13:8080".parse().unwrap(),
            state: BackendState::Ready,
            weight: 0,
        }],
    };
    let dsr_rollout = Rollout {
        state: RolloutState::Running,
        window: RolloutWindow::default(),
        reason: None,
        ..rollout.clone()
    };
    let cases: Vec<(&str, Value)> = vec![
        ("Rollout", to(&rollout)),
        ("Rollout", to(&dsr_rollout)),
        (
            "RolloutRequest",
            to(&RolloutRequest {
                service: "web".into(),
                canaries: rollout.canaries.clone(),
                ..RolloutRequest::default()
            }),
        ),
        (
            "RolloutRequest",
            to(&RolloutRequest {
                service: "web".into(),
                canaries: rollout.canaries.clone(),
                steps: Some(vec![10, 100]),
                every: Some("2s".into()),
                abort_if: Some("rst_ratio>0.1".into()),
                min_flows: Some(5),
            }),
        ),
        ("History", to(&history)),
        // What a daemon serves before its first sample.
        (
            "History",
            to(&crate::history::History::default().view(None)),
        ),
        ("Service", to(&service)),
        ("Backend", to(&service.backends[1])),
        ("NodeStatus", to(&full)),
        ("NodeStatus", to(&bare)),
        ("NodeStatus", to(&none)),
        ("ReloadSummary", to(&reload)),
        ("Explanation", to(&explained)),
        ("Explanation", to(&unexplained)),
        ("Error", to(&ApiError { error: "x".into() })),
        (
            "NodeUpdate",
            to(&NodeUpdate {
                state: NodeState::Drain,
            }),
        ),
        (
            "BackendUpdate",
            to(&BackendUpdate {
                state: Some(BackendState::Maint),
                weight: Some(65535),
            }),
        ),
        (
            "BackendUpdate",
            to(&BackendUpdate {
                state: None,
                weight: Some(0),
            }),
        ),
    ];
    for (name, value) in &cases {
        let schema = json!({ "$ref": format!("#/components/schemas/{name}") });
        if let Err(e) = conforms(&doc, &schema, value) {
            panic!("{name} {value}: {e}");
        }
    }

    // The checker itself refuses what it should: a key the schema does not
    // know, a missing one, a wrong enum word, a null where none may be.
    let refused = [
        ("Error", json!({ "error": "x", "more": 1 })),
        ("Error", json!({})),
        ("NodeUpdate", json!({ "state": "maint" })),
        ("BackendUpdate", json!({})),
        ("BackendUpdate", json!({ "weight": 65536 })),
        ("Explanation", json!({ "existing_flow": null })),
        ("RolloutRequest", json!({ "service": "web" })),
        ("RolloutState", json!("rolled-back")),
    ];
    for (name, value) in refused {
        let schema = json!({ "$ref": format!("#/components/schemas/{name}") });
        assert!(conforms(&doc, &schema, &value).is_err(), "{name} {value}");
    }
}

fn to(v: &impl Serialize) -> Value {
    serde_json::to_value(v).unwrap()
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

fn resolve<'a>(doc: &'a Value, r: &str) -> &'a Value {
    let pointer = r.strip_prefix('#').expect("a local reference");
    doc.pointer(pointer).unwrap_or(&Value::Null)
}

/// `value` against `schema`: the keywords openapi.json uses ($ref, oneOf,
/// type, enum, required, properties, additionalProperties, minProperties,
/// items, minimum, maximum). Anything else in a schema is an error, so the
/// document cannot outgrow the checker unnoticed.
fn conforms(doc: &Value, schema: &Value, value: &Value) -> Result<(), String> {
    let s = schema.as_object().ok_or("a schema is an object")?;
    if let Some(r) = s.get("$ref") {
        return conforms(doc, resolve(doc, r.as_str().unwrap()), value);
    }
    if let Some(Value::Array(any)) = s.get("oneOf") {
        let fits = any
            .iter()
            .filter(|alt| conforms(doc, alt, value).is_ok())
            .count();
        return if fits == 1 {
            Ok(())
        } else {
            Err(format!(
                "{value} fits {fits} of {}",
                Value::Array(any.clone())
            ))
        };
    }
    let known = [
        "type",
        "enum",
        "required",
        "properties",
        "additionalProperties",
        "minProperties",
        "items",
        "minimum",
        "maximum",
        "description",
        "format",
        "default",
    ];
    if let Some(k) = s.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!("the checker does not know keyword {k}"));
    }
    let ty = s.get("type").and_then(Value::as_str).unwrap_or("");
    let fits_type = match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_u64() || value.is_i64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        other => return Err(format!("unknown type {other:?}")),
    };
    if !fits_type {
        return Err(format!("{value} is not of type {ty}"));
    }
    if let Some(Value::Array(words)) = s.get("enum")
        && !words.contains(value)
    {
        return Err(format!(
            "{value} is not one of {}",
            Value::Array(words.clone())
        ));
    }
    if let Some(n) = value.as_f64() {
        let below = s
            .get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n < m);
        let above = s
            .get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n > m);
        if below || above {
            return Err(format!("{value} is out of range"));
        }
    }
    if let (Some(items), Value::Array(a)) = (s.get("items"), value) {
        for v in a {
            conforms(doc, items, v)?;
        }
    }
    if let Value::Object(m) = value {
        let props = s.get("properties").and_then(Value::as_object);
        for key in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !m.contains_key(key.as_str().unwrap()) {
                return Err(format!("{value} lacks {key}"));
            }
        }
        let min = s.get("minProperties").and_then(Value::as_u64).unwrap_or(0);
        if (m.len() as u64) < min {
            return Err(format!("{value} has fewer than {min} keys"));
        }
        for (k, v) in m {
            match props.and_then(|p| p.get(k)) {
                Some(p) => conforms(doc, p, v).map_err(|e| format!("{k}: {e}"))?,
                None if s.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("key {k} is not in the schema"));
                }
                None => {}
            }
        }
    }
    Ok(())
}
