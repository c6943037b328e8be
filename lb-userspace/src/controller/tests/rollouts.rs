//! Rollouts through the controller, on the fake clock and counters: the
//! weights each step sets, a breach rolled back, a completion kept, the
//! refusals, and reloads.

use lb_common::BackendCounter;

use super::*;
use crate::api_types::{RolloutRequest, RolloutState};

const CANARY_WEB: &str = "      - { address: 198.18.1.11, port: 8080 }\n\
                          \x20     - { address: 198.18.1.12, port: 8080 }\n\
                          \x20     - { address: 198.18.1.13, port: 8080, weight: 0 }\n";

fn request(steps: &[u32]) -> RolloutRequest {
    RolloutRequest {
        service: "web".into(),
        canaries: vec![addr(B13)],
        steps: Some(steps.to_vec()),
        every: Some("2s".into()),
        ..RolloutRequest::default()
    }
}

fn weights(c: &TestController) -> Vec<u32> {
    ["198.18.1.11:8080", "198.18.1.12:8080", B13]
        .iter()
        .map(|a| backend(c.plan(), "web", a).weight)
        .collect()
}

/// The canary's counters from now on.
fn canary_counts(c: &mut TestController, flows: u64, resets: u64) {
    let id = backend(c.plan(), "web", B13).id;
    c.dataplane.counters.backends.insert(
        id,
        BackendCounter {
            flows,
            resets,
            ..BackendCounter::default()
        },
    );
}

#[test]
fn each_step_sets_the_canary_weight_and_a_breach_restores_the_baseline() {
    let (mut c, _f, now) = start_slow(&yaml(CANARY_WEB, ""));
    let r = c.start_rollout(&request(&[10, 50, 100])).unwrap();
    assert_eq!(
        (r.state, r.step, r.canary_share),
        (RolloutState::Running, 10, 9.9)
    );
    assert_eq!(weights(&c), [100, 100, 22], "22 of 222: 9.9%");
    assert_eq!(
        *c.rollout_checks().borrow(),
        Some(*now.lock().unwrap() + Duration::from_secs(1))
    );
    advance(&now, 2.0);
    c.rollout_check();
    assert_eq!(weights(&c), [100, 100, 200], "50%");
    // 40 new flows, 35 reset: rolled back at once, weights as before.
    canary_counts(&mut c, 40, 35);
    advance(&now, 1.0);
    c.rollout_check();
    let r = c.rollout("web").unwrap();
    assert_eq!(r.state, RolloutState::RolledBack);
    assert_eq!(
        r.reason.as_deref(),
        Some("rst_ratio 0.88 > 0.05 at step 50%, 1.0 s into it, 40 new flows")
    );
    assert_eq!(weights(&c), [100, 100, 0]);
    assert_eq!(r.canary_share, 0.0);
    assert_eq!(*c.rollout_checks().borrow(), None, "nothing runs");
    assert!(c.inputs.overrides.is_empty(), "nothing left behind");
    // Over: nothing to pause or abort; a new one may start.
    let e = c.rollout_action("web", RolloutAction::Abort).unwrap_err();
    assert!(
        e.to_string()
            .contains("is over (rolled_back): nothing to abort"),
        "{e}"
    );
    c.start_rollout(&request(&[10, 100])).unwrap();
}

#[test]
fn a_completed_rollout_keeps_its_weights_as_admin_changes() {
    let (mut c, _f, now) = start_slow(&yaml(CANARY_WEB, ""));
    c.start_rollout(&request(&[50, 100])).unwrap();
    advance(&now, 2.0);
    c.rollout_check();
    assert_eq!(
        weights(&c),
        [0, 0, 100],
        "100%: the others take no new flow"
    );
    advance(&now, 2.0);
    c.rollout_check();
    assert_eq!(c.rollout("web").unwrap().state, RolloutState::Completed);
    assert_eq!(weights(&c), [0, 0, 100]);
    assert_eq!(c.inputs.overrides.len(), 3);
    // No longer owned by a rollout: admin changes go through.
    c.update_backend("web", addr(B13), None, Some(50)).unwrap();
    // A health failure of the canary during a rollout is a breach.
    let (mut c, _f, now) = start_slow(&yaml(CANARY_WEB, ""));
    c.start_rollout(&request(&[50, 100])).unwrap();
    set_health(&mut c, B13, false);
    advance(&now, 1.0);
    c.rollout_check();
    let r = c.rollout("web").unwrap();
    assert_eq!(r.state, RolloutState::RolledBack);
    assert!(
        r.reason
            .unwrap()
            .starts_with("health=down (198.18.1.13:8080)")
    );
}

#[test]
fn refusals_name_the_problem_and_change_nothing() {
    // dns (udp) with a second backend.
    let dns2 = "      - { address: 198.18.1.22, port: 53, weight: 0 }\n";
    let (mut c, _f, _now) = start_slow(&yaml(CANARY_WEB, dns2));
    let refused = |c: &mut TestController, r: RolloutRequest, says: &str| {
        let before = c.dataplane.written.len();
        let e = c.start_rollout(&r).unwrap_err();
        assert!(e.to_string().contains(says), "{e}");
        assert_eq!(c.dataplane.written.len(), before, "nothing written");
    };
    refused(
        &mut c,
        RolloutRequest {
            service: "dns".into(),
            canaries: vec![addr("198.18.1.21:53"), addr("198.18.1.22:53")],
            ..request(&[100])
        },
        "every backend of dns is a canary",
    );
    refused(
        &mut c,
        RolloutRequest {
            canaries: vec![addr("198.18.1.21:53")],
            ..request(&[100])
        },
        "service web has no backend 198.18.1.21:53",
    );
    let dns = |abort_if: Option<&str>| RolloutRequest {
        abort_if: abort_if.map(Into::into),
        service: "dns".into(),
        canaries: vec![addr("198.18.1.22:53")],
        ..request(&[100])
    };
    refused(
        &mut c,
        dns(Some("health=down,rst_ratio>0.1")),
        "rst_ratio>0.1 cannot be judged on dns: resets, answers and handshakes are seen in \
         nat mode over TCP only",
    );
    // Without --abort-if: the defaults udp can judge.
    let r = c.start_rollout(&dns(None)).unwrap();
    assert_eq!(r.abort_if, "health=down");
    c.rollout_action("dns", RolloutAction::Abort).unwrap();
    set_health(&mut c, "198.18.1.11:8080", false);
    set_health(&mut c, "198.18.1.12:8080", false);
    refused(
        &mut c,
        request(&[100]),
        "no backend of web other than the canaries takes new flows",
    );
    set_health(&mut c, "198.18.1.11:8080", true);
    assert!(matches!(
        c.rollout_action("web", RolloutAction::Pause),
        Err(ControlError::NoRollout(_))
    ));
    assert_eq!(c.rollouts().len(), 1, "dns's aborted one only");

    c.start_rollout(&request(&[10, 100])).unwrap();
    refused(
        &mut c,
        request(&[10, 100]),
        "a rollout of web is running already (step 10%)",
    );
    let e = c
        .update_backend("web", addr("198.18.1.11:8080"), None, Some(7))
        .unwrap_err();
    assert!(matches!(e, ControlError::Conflict(_)), "{e}");
    let e = c
        .update_backend("web", addr(B13), Some(BackendState::Drain), None)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("sets its weights and its canaries' state"),
        "{e}"
    );
    // The others' state is the operator's still.
    c.update_backend(
        "web",
        addr("198.18.1.12:8080"),
        Some(BackendState::Drain),
        None,
    )
    .unwrap();
}

#[test]
fn a_reload_keeps_a_rollout_unless_its_canary_is_gone() {
    let (mut c, f, _now) = start_slow(&yaml(CANARY_WEB, ""));
    c.start_rollout(&request(&[10, 100])).unwrap();
    c.rollout_action("web", RolloutAction::Pause).unwrap();
    f.write(&yaml(
        &CANARY_WEB.replacen("8080 }", "8080, weight: 200 }", 2),
        "",
    ));
    c.reload().unwrap();
    let r = c.rollout("web").unwrap();
    assert_eq!((r.state, r.step), (RolloutState::Paused, 10));
    assert_eq!(weights(&c), [200, 200, 44], "10% of the new weights");
    f.write(&yaml("      - { address: 198.18.1.11, port: 8080 }\n", ""));
    c.reload().unwrap();
    let r = c.rollout("web").unwrap();
    assert_eq!(r.state, RolloutState::Aborted);
    assert_eq!(
        r.reason.as_deref(),
        Some("the reload removed canary 198.18.1.13:8080")
    );
}
