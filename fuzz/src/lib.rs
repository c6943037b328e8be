//! What the fuzz targets share: the admin API's real router over a
//! controller whose data plane and health checks are fakes, so that every
//! request runs the whole handling (limits, token, routing, path, query and
//! body decoding, the controller's checks and changes) without root or BPF.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
};

use lb_common::{Flow, FlowKey};
use xdplb::{
    api::{self, Shared},
    api_types::NodeState,
    config::Config,
    controller::{Controller, DataplaneOps, HealthSource},
    dataplane::{Adopted, Counters, DataplaneError},
    health::{self, BackendKey, Target},
    ids::Ids,
    plan::Plan,
};

/// The config the API serves: every mode, both families, an all-ports
/// service, a health check and a backend of each state, so that paths,
/// bodies and explain queries have something to find.
pub const CONFIG: &str = include_str!("api.yaml");

/// The token of the guarded calls, when the target configures one.
pub const TOKEN: &str = "s3cret-token";

/// Writes nothing, fails nothing, counts nothing, knows no flow.
pub struct FakeDataplane;

impl DataplaneOps for FakeDataplane {
    fn apply(&mut self, _: &Plan) -> Result<(), DataplaneError> {
        Ok(())
    }

    fn resync(&mut self, _: &Plan) -> Result<(), DataplaneError> {
        Ok(())
    }

    fn counters(&self, _: &[u32], _: &[u32]) -> Result<Counters, DataplaneError> {
        Ok(Counters::default())
    }

    fn flow(&self, _: &FlowKey) -> Result<Option<(Flow, bool)>, DataplaneError> {
        Ok(None)
    }
}

/// Every backend up; those of checked services report a status.
pub struct FakeHealth(Vec<BackendKey>);

impl HealthSource for FakeHealth {
    fn set_targets(&mut self, targets: Vec<Target>) {
        self.0 = targets.into_iter().map(|t| t.key).collect();
    }

    fn is_up(&self, _: &BackendKey) -> bool {
        true
    }

    fn status(&self, key: &BackendKey) -> Option<health::Status> {
        self.0.contains(key).then_some(health::Status {
            up: true,
            consecutive_ok: 2,
            consecutive_fail: 0,
            last_duration_ms: Some(0.5),
            last_error: None,
            checks: 2,
            last_change_ms: None,
            last_change_reason: None,
        })
    }
}

pub type FakeShared = Shared<FakeDataplane, FakeHealth>;

/// `CONFIG` in a file (a reload reads it), written and read once. One file
/// for every process: each replaces it whole with the same text.
fn config() -> &'static (PathBuf, Config) {
    static FILE: OnceLock<(PathBuf, Config)> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = std::env::temp_dir();
        let path = dir.join("xdplb-fuzz-api.yaml");
        let new = dir.join(format!("xdplb-fuzz-api.yaml.{}", std::process::id()));
        std::fs::write(&new, CONFIG).expect("writing the API's config file");
        std::fs::rename(&new, &path).expect("writing the API's config file");
        let config = Config::load(&path).expect("the API's config is valid");
        (path, config)
    })
}

/// A fresh daemon state for each input (a change must not leak into the
/// next input: a crash replays alone).
pub fn shared(token: Option<&str>) -> Arc<FakeShared> {
    let (path, config) = config();
    let ids = Ids::adopt(config, &Adopted::default()).expect("ids");
    let controller = Controller::new(
        path.clone(),
        config.clone(),
        ids,
        FakeDataplane,
        FakeHealth(Vec::new()),
    )
    .expect("a fake data plane takes any plan");
    Arc::new(Shared {
        node: controller.node_watch(),
        controller: Mutex::new(controller),
        registry: prometheus::Registry::new(),
        token: token.map(str::to_owned),
        bgp: None,
        flow_sync: None,
        history: Default::default(),
    })
}

/// What a request may have changed: the plan written and the node state.
pub fn state(shared: &FakeShared) -> (String, NodeState) {
    let c = shared.controller();
    (format!("{:?}", c.plan()), c.node())
}

pub fn router(shared: Arc<FakeShared>) -> axum::Router {
    api::router(shared)
}

/// One runtime for every input (building one per input would dominate).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// The body of an error answer: `{"error": "..."}` and nothing else.
pub fn assert_api_error(status: u16, body: &[u8]) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "a {status} answer is not JSON ({e}): {:?}",
            String::from_utf8_lossy(body)
        )
    });
    let only_error = v.as_object().is_some_and(|o| o.len() == 1) && v["error"].is_string();
    assert!(
        only_error,
        "a {status} answer is not {{\"error\": ...}}: {v}"
    );
}
