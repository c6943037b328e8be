//! The controller against a fake data plane and fake health checks: every
//! change path (start, reload, refusals, rollback, admin state and weight,
//! health, resync, explain) without a kernel; rollouts in `rollouts`.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use lb_common::{Flow, FlowKey, NO_BACKEND, STATE_DOWN, STATE_MAINT, STATE_READY};

use super::*;
use crate::{
    config::Protocol,
    dataplane::{Adopted, Counters},
    plan::BackendPlan,
};

/// Remembers what was written; fails the writes it is told to.
#[derive(Default)]
struct FakeDataplane {
    written: Vec<Plan>,
    resyncs: usize,
    /// Each entry is one coming `apply`: true = fail it.
    failures: Vec<bool>,
    flows: HashMap<FlowKey, Flow>,
    /// What `counters` answers.
    counters: Counters,
}

impl FakeDataplane {
    fn last(&self) -> &Plan {
        self.written.last().expect("a plan was written")
    }
}

fn failed_write() -> DataplaneError {
    DataplaneError::Io {
        what: "writing map SERVICES (fake)".into(),
        source: std::io::Error::other("no space left"),
    }
}

impl DataplaneOps for FakeDataplane {
    fn apply(&mut self, plan: &Plan) -> Result<(), DataplaneError> {
        if !self.failures.is_empty() && self.failures.remove(0) {
            return Err(failed_write());
        }
        self.written.push(plan.clone());
        Ok(())
    }

    fn resync(&mut self, plan: &Plan) -> Result<(), DataplaneError> {
        self.resyncs += 1;
        self.apply(plan)
    }

    fn counters(&self, _: &[u32], _: &[u32]) -> Result<Counters, DataplaneError> {
        Ok(self.counters.clone())
    }

    fn flow(&self, key: &FlowKey) -> Result<Option<(Flow, bool)>, DataplaneError> {
        Ok(self.flows.get(key).map(|f| (*f, true)))
    }
}

#[derive(Default)]
struct FakeHealth {
    targets: Vec<BackendKey>,
    down: HashSet<BackendKey>,
}

impl HealthSource for FakeHealth {
    fn set_targets(&mut self, targets: Vec<Target>) {
        self.targets = targets.into_iter().map(|t| t.key).collect();
    }

    fn is_up(&self, key: &BackendKey) -> bool {
        !self.down.contains(key)
    }

    fn status(&self, _: &BackendKey) -> Option<health::Status> {
        None
    }
}

type TestController = Controller<FakeDataplane, FakeHealth>;

const HEAD: &str = "interfaces: [eth0]\nsnat: { ipv4: 198.18.1.1 }\n\
                    limits: { max_services: 4, max_backends: 8, maglev_table_size: 101 }\n";

/// `services:` with service `web` (backends .11 .12 .13, a tcp check)
/// and `dns`, plus `extra` lines at the end.
fn yaml(web_backends: &str, extra: &str) -> String {
    format!(
        "{HEAD}services:\n\
         \x20 - name: web\n    vip: 198.18.100.10\n    port: 80\n\
         \x20   health_check: {{ type: tcp }}\n    backends:\n{web_backends}\
         \x20 - name: dns\n    vip: 198.18.100.53\n    port: 53\n    protocol: udp\n    backends:\n\
         \x20     - {{ address: 198.18.1.21, port: 53 }}\n{extra}"
    )
}

const WEB: &str = "      - { address: 198.18.1.11, port: 8080 }\n\
                   \x20     - { address: 198.18.1.12, port: 8080 }\n\
                   \x20     - { address: 198.18.1.13, port: 8080 }\n";

/// A config file of its own for each test.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(text: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "xdplb-controller-test-{}-{}.yaml",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let f = ConfigFile(path);
        f.write(text);
        f
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.0, text).unwrap();
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn start(text: &str) -> (TestController, ConfigFile) {
    let file = ConfigFile::new(text);
    let cfg = Config::load(&file.0).unwrap();
    let ids = Ids::adopt(&cfg, &Adopted::default()).unwrap();
    let c = Controller::new(
        file.0.clone(),
        cfg,
        ids,
        FakeDataplane::default(),
        FakeHealth::default(),
    )
    .unwrap();
    (c, file)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn backend<'a>(plan: &'a Plan, service: &str, a: &str) -> &'a BackendPlan {
    plan.services
        .iter()
        .find(|s| s.name == service)
        .and_then(|s| s.backends.iter().find(|b| b.addr == addr(a)))
        .unwrap_or_else(|| panic!("{service}/{a} not in the plan"))
}

/// Ring entries owned by backend `a` of `web`.
fn ring_share(plan: &Plan, a: &str) -> usize {
    let id = backend(plan, "web", a).id;
    plan.services[0].ring.iter().filter(|e| *e == id).count()
}

#[test]
fn start_writes_the_whole_config_and_checks_what_it_says() {
    let (mut c, _f) = start(&yaml(WEB, ""));
    let dp = c.dataplane_mut();
    assert_eq!(dp.written.len(), 1);
    let plan = dp.last();
    assert_eq!(plan.services.len(), 2);
    assert_eq!(plan.services[0].backends.len(), 3);
    assert!(plan.services[0].ring.iter().all(|e| e != NO_BACKEND));
    assert_eq!(
        c.health.targets.len(),
        3,
        "web's three backends are checked"
    );
    assert_eq!(c.shared_plan().get().services.len(), 2);
}

#[test]
fn reload_applies_the_difference_and_keeps_ids() {
    let (mut c, f) = start(&yaml(WEB, ""));
    let before = c.plan().clone();
    let web = "      - { address: 198.18.1.11, port: 8080 }\n\
               \x20     - { address: 198.18.1.13, port: 8080 }\n\
               \x20     - { address: 198.18.1.14, port: 8080 }\n";
    f.write(&yaml(
        web,
        "  - name: ssh\n    vip: 198.18.100.22\n    port: 22\n    backends:\n\
         \x20     - { address: 198.18.1.31, port: 22 }\n",
    ));
    let summary = c.reload().unwrap();
    assert_eq!(summary.services_added, ["ssh"]);
    assert_eq!(summary.services_changed, ["web"]);
    assert!(summary.services_removed.is_empty());
    assert_eq!(
        summary.backends_added,
        ["web/198.18.1.14:8080", "ssh/198.18.1.31:22"]
    );
    assert_eq!(summary.backends_removed, ["web/198.18.1.12:8080"]);
    let after = c.dataplane_mut().last().clone();
    assert_eq!(c.dataplane_mut().written.len(), 2);
    for (svc, a) in [
        ("web", "198.18.1.11:8080"),
        ("web", "198.18.1.13:8080"),
        ("dns", "198.18.1.21:53"),
    ] {
        assert_eq!(
            backend(&before, svc, a).id,
            backend(&after, svc, a).id,
            "{svc}/{a} keeps its id"
        );
    }
    assert_eq!(
        before.services[1].id, after.services[1].id,
        "dns keeps its id"
    );
    assert_eq!(c.health.targets.len(), 3, "checks follow the new backends");
    assert!(
        c.health
            .targets
            .iter()
            .any(|k| k.1 == addr("198.18.1.14:8080"))
    );
    assert_eq!(c.config().services.len(), 3);
    assert_eq!(
        c.shared_plan().get().services.len(),
        3,
        "readers see the new plan"
    );
}

/// `Shared::reload`'s two steps: rings built without the lock, written by
/// the locked step if their inputs still match, else built again there.
#[test]
fn a_reload_writes_the_rings_built_ahead_unless_a_status_changed_meanwhile() {
    let (mut c, f) = start(&yaml(WEB, ""));
    let two = "      - { address: 198.18.1.11, port: 8080 }\n\
               \x20     - { address: 198.18.1.13, port: 8080 }\n";
    f.write(&yaml(two, ""));
    let built = c.prepare_reload().unwrap().build();
    let ahead = built.rings.services[0].ring.clone();
    let summary = c.reload_built(built).unwrap();
    assert_eq!(summary.backends_removed, ["web/198.18.1.12:8080"]);
    let written = c.dataplane_mut().last().services[0].ring.clone();
    assert!(
        written.shares(&ahead),
        "web's ring built ahead is the one written"
    );

    // The file changes again; while its rings are built, .13 is drained.
    f.write(&yaml(
        &(two.to_owned() + "      - { address: 198.18.1.14, port: 8080 }\n"),
        "",
    ));
    let built = c.prepare_reload().unwrap().build();
    let ahead = built.rings.services[0].ring.clone();
    c.update_backend(
        "web",
        addr("198.18.1.13:8080"),
        Some(BackendState::Drain),
        None,
    )
    .unwrap();
    c.reload_built(built).unwrap();
    let plan = c.dataplane_mut().last().clone();
    let drained = backend(&plan, "web", "198.18.1.13:8080").id;
    assert!(ahead.contains(drained), "built before the drain");
    assert!(
        !plan.services[0].ring.contains(drained),
        "built again without it"
    );
    assert!(
        plan.services[0]
            .ring
            .contains(backend(&plan, "web", "198.18.1.14:8080").id)
    );

    // A bad file is refused by the first step, and nothing changes.
    f.write("interfaces: [eth0\n");
    assert!(matches!(c.prepare_reload(), Err(ControlError::Config(_))));
    assert_eq!(c.config().services[0].backends.len(), 3);
}

#[test]
fn an_invalid_config_changes_nothing() {
    let (mut c, f) = start(&yaml(WEB, ""));
    f.write(&yaml(
        WEB,
        "  - name: web\n    vip: 198.18.100.11\n    port: 80\n    backends: []\n",
    ));
    let e = c.reload().unwrap_err();
    assert!(matches!(e, ControlError::Config(_)), "{e:?}");
    assert!(e.to_string().contains("web"), "names what is wrong: {e}");
    f.write("interfaces: [eth0\n");
    assert!(matches!(c.reload().unwrap_err(), ControlError::Config(_)));
    assert_eq!(c.dataplane_mut().written.len(), 1, "nothing was written");
    assert_eq!(c.config().services.len(), 2);
}

#[test]
fn restart_only_changes_are_refused() {
    let (mut c, f) = start(&yaml(WEB, ""));
    let text = yaml(WEB, "").replace("max_backends: 8", "max_backends: 16")
        + "admin: { listen: 127.0.0.1:9999 }\n";
    f.write(&text);
    let e = c.reload().unwrap_err();
    match &e {
        ControlError::RestartOnly(what) => assert_eq!(what, &["limits", "admin"]),
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("restart xdplb"), "{e}");
    assert_eq!(c.dataplane_mut().written.len(), 1);
}

#[test]
fn a_reload_that_fails_to_write_is_rolled_back() {
    let (mut c, f) = start(&yaml(WEB, ""));
    let before = c.plan().clone();
    f.write(&yaml("      - { address: 198.18.1.11, port: 8080 }\n", ""));
    c.dataplane_mut().failures = vec![true, false];
    let e = c.reload().unwrap_err();
    assert!(matches!(e, ControlError::Dataplane(_)), "{e:?}");
    assert_eq!(
        c.config().services[0].backends.len(),
        3,
        "the old config is in force"
    );
    let rewritten = c.dataplane_mut().last().clone();
    assert_eq!(
        rewritten.services[0].backends.len(),
        3,
        "the old plan was written back"
    );
    assert_eq!(rewritten.services[0].ring, before.services[0].ring);
    assert_eq!(c.plan().services[0].backends.len(), 3);

    // The next reload of the same file goes through.
    let summary = c.reload().unwrap();
    assert_eq!(summary.backends_removed.len(), 2);
}

#[test]
fn a_failed_rollback_is_reported_not_swallowed() {
    let (mut c, f) = start(&yaml(WEB, ""));
    f.write(&yaml("      - { address: 198.18.1.11, port: 8080 }\n", ""));
    c.dataplane_mut().failures = vec![true, true];
    let e = c.reload().unwrap_err();
    assert!(matches!(e, ControlError::RollbackFailed { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("restoring the previous config also failed"),
        "{text}"
    );
    assert_eq!(c.config().services[0].backends.len(), 3);
}

#[test]
fn admin_state_and_weight_apply_and_survive_unrelated_reloads() {
    let (mut c, f) = start(&yaml(WEB, ""));
    let b12 = addr("198.18.1.12:8080");
    c.update_backend("web", b12, Some(BackendState::Maint), None)
        .unwrap();
    let p = c.dataplane_mut().last().clone();
    assert_eq!(
        backend(&p, "web", "198.18.1.12:8080").entry.state,
        STATE_MAINT
    );
    assert_eq!(
        ring_share(&p, "198.18.1.12:8080"),
        0,
        "maint takes no new flows"
    );

    c.update_backend("web", addr("198.18.1.11:8080"), None, Some(0))
        .unwrap();
    let p = c.dataplane_mut().last().clone();
    assert_eq!(
        ring_share(&p, "198.18.1.11:8080"),
        0,
        "weight 0: out of the ring"
    );
    assert_eq!(
        ring_share(&p, "198.18.1.13:8080"),
        101,
        "the rest goes to .13"
    );
    assert_eq!(
        backend(&p, "web", "198.18.1.11:8080").entry.state,
        STATE_READY
    );

    // A reload that says nothing new about them keeps both changes...
    f.write(&yaml(WEB, "  - name: ssh\n    vip: 198.18.100.22\n    port: 22\n    backends:\n      - { address: 198.18.1.31, port: 22 }\n"));
    c.reload().unwrap();
    let p = c.plan().clone();
    assert_eq!(
        backend(&p, "web", "198.18.1.12:8080").admin,
        BackendState::Maint
    );
    assert_eq!(backend(&p, "web", "198.18.1.11:8080").weight, 0);

    // ...one that changes a backend's config lets the config win for it.
    let web = WEB.replace(
        "198.18.1.12, port: 8080 }",
        "198.18.1.12, port: 8080, weight: 50 }",
    );
    f.write(&yaml(&web, ""));
    c.reload().unwrap();
    let p = c.plan().clone();
    assert_eq!(
        backend(&p, "web", "198.18.1.12:8080").admin,
        BackendState::Ready
    );
    assert_eq!(backend(&p, "web", "198.18.1.12:8080").weight, 50);
    assert_eq!(
        backend(&p, "web", "198.18.1.11:8080").weight,
        0,
        "still overridden"
    );
}

#[test]
fn weights_split_the_ring() {
    let (mut c, _f) = start(&yaml(WEB, ""));
    c.update_backend("web", addr("198.18.1.11:8080"), None, Some(300))
        .unwrap();
    let p = c.plan().clone();
    let (big, small) = (
        ring_share(&p, "198.18.1.11:8080"),
        ring_share(&p, "198.18.1.12:8080"),
    );
    assert!(
        big > 2 * small,
        "weight 300 vs 100: {big} vs {small} of 101"
    );
}

#[test]
fn bad_admin_requests_are_refused_and_change_nothing() {
    let (mut c, _f) = start(&yaml(WEB, ""));
    let b = addr("198.18.1.11:8080");
    assert!(matches!(
        c.update_backend("nope", b, Some(BackendState::Drain), None),
        Err(ControlError::NoService(s)) if s == "nope"
    ));
    assert!(matches!(
        c.update_backend(
            "web",
            addr("198.18.1.99:8080"),
            Some(BackendState::Drain),
            None
        ),
        Err(ControlError::NoBackend { .. })
    ));
    assert!(matches!(
        c.update_backend("web", b, None, None),
        Err(ControlError::BadRequest(_))
    ));
    let e = c
        .update_backend("web", b, None, Some(config::MAX_WEIGHT + 1))
        .unwrap_err();
    assert!(e.to_string().contains("above the maximum"), "{e}");
    assert_eq!(c.dataplane_mut().written.len(), 1);
}

#[test]
fn an_admin_change_that_fails_to_write_is_not_kept() {
    let (mut c, _f) = start(&yaml(WEB, ""));
    let b = addr("198.18.1.11:8080");
    c.dataplane_mut().failures = vec![true, false];
    assert!(matches!(
        c.update_backend("web", b, Some(BackendState::Maint), None),
        Err(ControlError::Dataplane(_))
    ));
    assert!(c.inputs.overrides.is_empty());
    assert_eq!(
        backend(c.plan(), "web", "198.18.1.11:8080").admin,
        BackendState::Ready
    );
    // A later, unrelated change does not bring it back.
    c.update_backend("web", addr("198.18.1.12:8080"), None, Some(7))
        .unwrap();
    assert_eq!(
        backend(c.plan(), "web", "198.18.1.11:8080").admin,
        BackendState::Ready
    );
}

#[test]
fn health_transitions_take_backends_out_and_back() {
    let (mut c, _f) = start(&yaml(WEB, ""));
    let key = ("web".to_owned(), addr("198.18.1.13:8080"));
    c.health.down.insert(key.clone());
    c.on_health(&Transition {
        key: key.clone(),
        up: false,
        reason: "connection refused".into(),
    });
    let p = c.dataplane_mut().last().clone();
    assert_eq!(
        backend(&p, "web", "198.18.1.13:8080").entry.state,
        STATE_DOWN
    );
    assert_eq!(ring_share(&p, "198.18.1.13:8080"), 0);
    assert!(!backend(&p, "web", "198.18.1.13:8080").up);

    c.health.down.clear();
    c.on_health(&Transition {
        key,
        up: true,
        reason: "2 consecutive checks passed".into(),
    });
    let p = c.dataplane_mut().last().clone();
    assert_eq!(
        backend(&p, "web", "198.18.1.13:8080").entry.state,
        STATE_READY
    );
    assert!(ring_share(&p, "198.18.1.13:8080") > 0);
}

#[test]
fn resync_writes_everything_again() {
    let (mut c, _f) = start(&yaml(WEB, ""));
    c.resync().unwrap();
    assert_eq!(c.dataplane_mut().resyncs, 1);
    assert_eq!(c.dataplane_mut().written.len(), 2);
}

#[test]
fn explain_follows_the_flow_table_then_the_ring() {
    let (mut c, _f) = start(&yaml(WEB, ""));
    let (src, dst) = (addr("198.18.0.2:40000"), addr("198.18.100.10:80"));
    let fresh = c.explain(src, dst, Protocol::Tcp).unwrap();
    assert!(!fresh.existing_flow);
    let index = fresh.ring_index.unwrap() as usize;
    let owner = c.plan().services[0].ring.get(index);
    assert_eq!(
        fresh.backend,
        c.plan().services[0]
            .backends
            .iter()
            .find(|b| b.id == owner)
            .map(|b| b.addr)
    );

    // A flow already in the table keeps its backend.
    let other = c.plan().services[0]
        .backends
        .iter()
        .find(|b| b.id != owner)
        .unwrap()
        .clone();
    let (s, family) = lb_common::addr_words(src.ip());
    let key = FlowKey {
        src: s,
        dst: lb_common::addr_words(dst.ip()).0,
        sport: src.port().to_be(),
        dport: dst.port().to_be(),
        proto: Protocol::Tcp.number(),
        family,
        _pad: [0; 2],
    };
    c.dataplane_mut().flows.insert(
        key,
        Flow {
            backend: other.id,
            ..Flow::default()
        },
    );
    let kept = c.explain(src, dst, Protocol::Tcp).unwrap();
    assert!(kept.existing_flow);
    assert_eq!(kept.backend, Some(other.addr));

    let not_vip = c
        .explain(src, addr("198.18.100.99:80"), Protocol::Tcp)
        .unwrap();
    assert_eq!(not_vip.service, None);
    assert!(matches!(
        c.explain(src, addr("[2001:db8::1]:80"), Protocol::Tcp),
        Err(ControlError::BadRequest(_))
    ));
}

#[test]
fn a_panicked_call_does_not_poison_the_controller() {
    let (c, _f) = start(&yaml(WEB, ""));
    let shared = std::sync::Mutex::new(c);
    let panicked = std::thread::scope(|s| {
        s.spawn(|| {
            let _guard = Controller::lock(&shared);
            panic!("a request handler bug");
        })
        .join()
    });
    assert!(panicked.is_err());
    assert!(shared.is_poisoned());
    let mut c = Controller::lock(&shared);
    assert_eq!(
        c.dataplane_mut().resyncs,
        1,
        "the whole plan was written again"
    );
    c.update_backend(
        "web",
        addr("198.18.1.11:8080"),
        Some(BackendState::Drain),
        None,
    )
    .expect("later calls work");
    drop(c);
    assert!(!shared.is_poisoned());
}

fn vips(
    rx: &tokio::sync::watch::Receiver<std::collections::BTreeSet<std::net::IpAddr>>,
) -> Vec<String> {
    rx.borrow().iter().map(|v| v.to_string()).collect()
}

#[test]
fn announcements_follow_usable_backends_and_the_node_state() {
    let (mut c, f) = start(&yaml(WEB, ""));
    let mut rx = c.announcements();
    assert_eq!(vips(&rx), ["198.18.100.10", "198.18.100.53"]);
    assert_eq!(c.node(), NodeState::Ready);

    // web loses its backends one by one: announced until the last goes.
    for (i, b) in ["198.18.1.11:8080", "198.18.1.12:8080", "198.18.1.13:8080"]
        .into_iter()
        .enumerate()
    {
        let key = ("web".to_owned(), addr(b));
        c.health.down.insert(key.clone());
        c.on_health(&Transition {
            key,
            up: false,
            reason: "refused".into(),
        });
        let want: &[&str] = if i < 2 {
            &["198.18.100.10", "198.18.100.53"]
        } else {
            &["198.18.100.53"]
        };
        assert_eq!(vips(&rx), want, "after {b} went down");
    }
    assert!(rx.has_changed().unwrap(), "the BGP task is woken");
    rx.mark_unchanged();

    // Drain withdraws everything; ready brings back what is usable.
    let node = c.node_watch();
    c.set_node(NodeState::Drain);
    assert!(vips(&rx).is_empty());
    assert_eq!(*node.borrow(), NodeState::Drain);
    let key = ("web".to_owned(), addr("198.18.1.12:8080"));
    c.health.down.remove(&key);
    c.on_health(&Transition {
        key,
        up: true,
        reason: "passed".into(),
    });
    assert!(vips(&rx).is_empty(), "a drained node announces nothing");
    c.set_node(NodeState::Ready);
    assert_eq!(vips(&rx), ["198.18.100.10", "198.18.100.53"]);

    // An admin drain of the last ready backend withdraws its VIP; a reload
    // that removes a service withdraws its VIP.
    c.update_backend(
        "web",
        addr("198.18.1.12:8080"),
        Some(BackendState::Drain),
        None,
    )
    .unwrap();
    assert_eq!(vips(&rx), ["198.18.100.53"]);
    f.write(&format!("{HEAD}services:\n  - name: ssh\n    vip: 198.18.100.22\n    port: 22\n    backends:\n      - {{ address: 198.18.1.31, port: 22 }}\n"));
    c.reload().unwrap();
    assert_eq!(vips(&rx), ["198.18.100.22"]);
}

#[test]
fn a_change_that_fails_to_write_announces_nothing_new() {
    let (mut c, _f) = start(&yaml(WEB, ""));
    let mut rx = c.announcements();
    rx.mark_unchanged();
    c.dataplane_mut().failures = vec![true, false];
    for b in ["198.18.1.11:8080", "198.18.1.12:8080", "198.18.1.13:8080"] {
        let _ = c.update_backend("web", addr(b), Some(BackendState::Maint), None);
    }
    // The first change was rolled back: .11 stays ready, web stays usable.
    assert_eq!(vips(&rx), ["198.18.100.10", "198.18.100.53"]);
    assert!(!rx.has_changed().unwrap());
}

// --- slow start ---

/// `yaml` with `slow_start` on `web`.
fn slow_yaml(web_backends: &str, slow_start: &str) -> String {
    yaml(web_backends, "").replacen(
        "    health_check:",
        &format!("    slow_start: {slow_start}\n    health_check:"),
        1,
    )
}

/// A controller whose ramps run on a clock the test moves.
fn start_slow(text: &str) -> (TestController, ConfigFile, Arc<Mutex<Instant>>) {
    let (mut c, f) = start(text);
    let now = Arc::new(Mutex::new(Instant::now()));
    let clock = now.clone();
    c.clock = Box::new(move || *clock.lock().unwrap());
    (c, f, now)
}

fn advance(now: &Mutex<Instant>, secs: f64) {
    *now.lock().unwrap() += std::time::Duration::from_secs_f64(secs);
}

fn set_health(c: &mut TestController, a: &str, up: bool) {
    let key = ("web".to_owned(), addr(a));
    if up {
        c.health.down.remove(&key);
    } else {
        c.health.down.insert(key.clone());
    }
    c.on_health(&Transition {
        key,
        up,
        reason: String::new(),
    });
}

/// Ramp progress of `a` (per mille) in the plan in force; None: full weight.
fn permille(c: &TestController, a: &str) -> Option<u32> {
    backend(c.plan(), "web", a).ramp.map(|r| r.permille)
}

const B13: &str = "198.18.1.13:8080";

#[test]
fn nothing_ramps_at_start_nor_without_slow_start() {
    let (mut c, _f, now) = start_slow(&slow_yaml(WEB, "10s"));
    assert!(
        c.plan().services[0]
            .backends
            .iter()
            .all(|b| b.ramp.is_none())
    );
    assert_eq!(backend(c.plan(), "web", B13).effective_weight(), 100.0);
    assert_eq!(*c.slow_start_steps().borrow(), None, "no step due");

    let (mut plain, _g, _) = start_slow(&yaml(WEB, ""));
    set_health(&mut plain, B13, false);
    set_health(&mut plain, B13, true);
    assert_eq!(
        permille(&plain, B13),
        None,
        "no slow_start: full weight at once"
    );
    assert!(ring_share(plain.plan(), B13) > 25);

    // A step with nothing ramping writes nothing.
    let writes = c.dataplane_mut().written.len();
    advance(&now, 5.0);
    c.slow_start_step();
    assert_eq!(c.dataplane_mut().written.len(), writes);
}

#[test]
fn a_backend_back_up_ramps_in_steps_to_its_full_share() {
    let (mut c, _f, now) = start_slow(&slow_yaml(WEB, "10s"));
    let full = ring_share(c.plan(), B13);
    set_health(&mut c, B13, false);
    assert_eq!(permille(&c, B13), None);
    let dns_ring = c.plan().services[1].ring.clone();

    set_health(&mut c, B13, true);
    assert_eq!(permille(&c, B13), Some(1), "from near 0");
    assert_eq!(ring_share(c.plan(), B13), 0);
    assert_eq!(backend(c.plan(), "web", B13).effective_weight(), 0.1);
    let start = *now.lock().unwrap();
    assert_eq!(
        *c.slow_start_steps().borrow(),
        Some(start + std::time::Duration::from_secs(1)),
        "the next step is due a step (10s / 20, at least 1s) later"
    );
    assert_eq!(
        c.slow_start_remaining(&("web".into(), addr(B13))),
        Some(std::time::Duration::from_secs(10))
    );

    let mut shares = vec![];
    for _ in 0..9 {
        advance(&now, 1.0);
        c.slow_start_step();
        shares.push(ring_share(c.plan(), B13));
    }
    assert_eq!(permille(&c, B13), Some(900));
    assert!(shares.windows(2).all(|w| w[0] <= w[1]), "{shares:?}");
    assert!(
        shares[0] > 0 && shares[0] < full / 3,
        "{shares:?} vs {full}"
    );
    assert!(
        shares[8] > full * 3 / 4 && shares[8] <= full,
        "{shares:?} vs {full}"
    );
    // The other service's ring is the same all along.
    assert_eq!(c.plan().services[1].ring, dns_ring);

    advance(&now, 1.0);
    c.slow_start_step();
    assert_eq!(permille(&c, B13), None, "over: full weight");
    assert_eq!(ring_share(c.plan(), B13), full);
    assert_eq!(*c.slow_start_steps().borrow(), None);
}

#[test]
fn a_step_that_changes_nothing_writes_no_ring() {
    // 30s: steps of 1.5s; a step called early changes no ring.
    let (mut c, _f, now) = start_slow(&slow_yaml(WEB, "30s"));
    set_health(&mut c, B13, false);
    set_health(&mut c, B13, true);
    let ring = c.plan().services[0].ring.clone();
    advance(&now, 1.0);
    c.slow_start_step();
    assert_eq!(permille(&c, B13), Some(1));
    assert_eq!(c.plan().services[0].ring, ring);
    advance(&now, 0.5);
    c.slow_start_step();
    assert_eq!(permille(&c, B13), Some(50));
}

#[test]
fn back_to_ready_or_to_a_weight_ramps_but_a_drain_of_another_does_not() {
    for (away, back) in [
        (
            (Some(BackendState::Drain), None),
            (Some(BackendState::Ready), None),
        ),
        (
            (Some(BackendState::Maint), None),
            (Some(BackendState::Ready), None),
        ),
        ((None, Some(0)), (None, Some(100))),
    ] {
        let (mut c, _f, _now) = start_slow(&slow_yaml(WEB, "10s"));
        let a = addr(B13);
        c.update_backend("web", a, away.0, away.1).unwrap();
        assert_eq!(permille(&c, B13), None);
        c.update_backend("web", a, back.0, back.1).unwrap();
        assert_eq!(permille(&c, B13), Some(1), "{away:?} then {back:?}");
        // Another backend leaving does not ramp the ones that stay.
        c.update_backend(
            "web",
            addr("198.18.1.11:8080"),
            Some(BackendState::Drain),
            None,
        )
        .unwrap();
        assert_eq!(permille(&c, "198.18.1.12:8080"), None);
        assert_eq!(permille(&c, B13), Some(1));
    }
}

#[test]
fn a_weight_change_mid_ramp_ramps_to_the_new_weight() {
    let (mut c, _f, now) = start_slow(&slow_yaml(WEB, "10s"));
    set_health(&mut c, B13, false);
    set_health(&mut c, B13, true);
    advance(&now, 4.0);
    c.slow_start_step();
    assert_eq!(backend(c.plan(), "web", B13).effective_weight(), 40.0);
    c.update_backend("web", addr(B13), None, Some(300)).unwrap();
    assert_eq!(permille(&c, B13), Some(400), "the ramp goes on");
    assert_eq!(backend(c.plan(), "web", B13).effective_weight(), 120.0);
    advance(&now, 6.0);
    c.slow_start_step();
    assert_eq!(backend(c.plan(), "web", B13).effective_weight(), 300.0);
}

#[test]
fn going_down_mid_ramp_stops_it_and_coming_back_starts_over() {
    let (mut c, _f, now) = start_slow(&slow_yaml(WEB, "10s"));
    set_health(&mut c, B13, false);
    set_health(&mut c, B13, true);
    advance(&now, 5.0);
    c.slow_start_step();
    assert_eq!(permille(&c, B13), Some(500));
    set_health(&mut c, B13, false);
    assert_eq!(permille(&c, B13), None);
    assert_eq!(backend(c.plan(), "web", B13).effective_weight(), 0.0);
    assert_eq!(*c.slow_start_steps().borrow(), None, "nothing ramps");
    advance(&now, 1.0);
    set_health(&mut c, B13, true);
    assert_eq!(permille(&c, B13), Some(1), "from near 0 again");
}

#[test]
fn reloads_ramp_added_backends_not_added_services_nor_untouched_ones() {
    let (mut c, f, now) = start_slow(&slow_yaml(WEB, "10s"));
    let four = format!("{WEB}      - {{ address: 198.18.1.14, port: 8080 }}\n");
    let ssh = "  - name: ssh\n    vip: 198.18.100.22\n    port: 22\n    slow_start: 10s\n    backends:\n\
               \x20     - { address: 198.18.1.31, port: 22 }\n      - { address: 198.18.1.32, port: 22 }\n";
    f.write(&format!("{}{ssh}", slow_yaml(&four, "10s")));
    c.reload().unwrap();
    assert_eq!(
        permille(&c, "198.18.1.14:8080"),
        Some(1),
        "an added backend ramps"
    );
    assert_eq!(permille(&c, B13), None);
    assert!(
        c.plan().services[2]
            .backends
            .iter()
            .all(|b| b.ramp.is_none()),
        "an added service starts at full weight"
    );
    // A reload mid-ramp keeps it going; one that turns slow start off ends it.
    advance(&now, 3.0);
    c.reload().unwrap();
    assert_eq!(permille(&c, "198.18.1.14:8080"), Some(300));
    f.write(&format!("{}{ssh}", yaml(&four, "")));
    c.reload().unwrap();
    assert_eq!(permille(&c, "198.18.1.14:8080"), None);

    // Turning slow start on ramps nothing that already takes flows.
    f.write(&format!("{}{ssh}", slow_yaml(&four, "10s")));
    c.reload().unwrap();
    assert!(
        c.plan().services[0]
            .backends
            .iter()
            .all(|b| b.ramp.is_none())
    );
}

#[test]
fn a_restart_adopting_pinned_state_does_not_ramp() {
    // A new controller over the same config (as a restart with pinned maps
    // builds): the first plan is written at full weight.
    let text = slow_yaml(WEB, "10s");
    let (c, _f, _now) = start_slow(&text);
    let adopted = Adopted {
        services: c
            .plan()
            .services
            .iter()
            .map(|s| {
                let meta = lb_common::ServiceMeta {
                    id: s.id,
                    ..Default::default()
                };
                (s.key, meta)
            })
            .collect(),
        backends: c
            .plan()
            .services
            .iter()
            .flat_map(|s| s.backends.iter().map(|b| (b.id, b.entry)))
            .collect(),
    };
    let file = ConfigFile::new(&text);
    let cfg = Config::load(&file.0).unwrap();
    let ids = Ids::adopt(&cfg, &adopted).unwrap();
    let again = Controller::new(
        file.0.clone(),
        cfg,
        ids,
        FakeDataplane::default(),
        FakeHealth::default(),
    )
    .unwrap();
    assert!(
        again.plan().services[0]
            .backends
            .iter()
            .all(|b| b.ramp.is_none())
    );
    assert_eq!(again.plan().services[0].ring, c.plan().services[0].ring);
}

#[test]
fn a_failed_step_is_tried_again_a_second_later() {
    let (mut c, _f, now) = start_slow(&slow_yaml(WEB, "10s"));
    set_health(&mut c, B13, false);
    set_health(&mut c, B13, true);
    advance(&now, 1.0);
    c.dataplane_mut().failures = vec![true];
    c.slow_start_step();
    assert_eq!(permille(&c, B13), Some(1), "the plan in force is kept");
    let retry = *now.lock().unwrap() + std::time::Duration::from_secs(1);
    assert_eq!(*c.slow_start_steps().borrow(), Some(retry));
    advance(&now, 1.0);
    c.slow_start_step();
    assert_eq!(permille(&c, B13), Some(200));
}

mod rollouts;
